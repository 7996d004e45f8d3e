//! SIGKILL while publishing: a child process (this test binary, re-run on an ignored test)
//! publishes with fsync, settles some messages, compacts and checkpoints, and prints every id
//! once it is durable. The parent kills it with `kill -9` at a random moment, reopens the store
//! and checks that every acknowledged message is there, every settled one is gone, and every
//! body reads back intact. Several rounds reuse the same directory, so recovery of a recovered
//! store is exercised too.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::body;
use rand::Rng;
use warren_store::{Store, StoreConfig};

const CHILD_DIR: &str = "WARREN_STORE_KILL9_DIR";
const QUEUE: u64 = 1;

/// The child settles three messages in four, so segments become mostly dead and compaction
/// and segment deletion run while it is killed.
fn settles(id: u64) -> bool {
    id % 4 != 0
}

fn child_config(dir: &str) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.segment_size = 64 << 10;
    c.checkpoint_interval = Duration::from_millis(40);
    c
}

/// The child: runs until killed (or for 30 s at most, should the parent die).
#[test]
#[ignore = "child process of sigkill_while_publishing_loses_no_acknowledged_message"]
fn kill9_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let (store, rec) = Store::open(child_config(&dir)).expect("open");
    println!("OPEN {}", rec.next_msg_id);
    let next = Arc::new(AtomicU64::new(rec.next_msg_id));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut threads = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        let next = next.clone();
        threads.push(std::thread::spawn(move || {
            while Instant::now() < deadline {
                let id = next.fetch_add(1, Ordering::Relaxed);
                let (lsn, _) = store.publish(id, &[QUEUE], body(id)).expect("publish");
                store.wait_durable_blocking(lsn).expect("durable");
                println!("P {id}");
                if settles(id) {
                    let lsn = store.ack(QUEUE, &[id]).expect("ack");
                    store.wait_durable_blocking(lsn).expect("durable ack");
                    println!("A {id}");
                }
            }
        }));
    }
    let compactor = store.clone();
    threads.push(std::thread::spawn(move || {
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(30));
            let moved = compactor.compact().expect("compact");
            if !moved.is_empty() {
                println!("C {}", moved.len());
            }
        }
    }));
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn sigkill_while_publishing_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap().to_owned();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    let mut published: HashSet<u64> = HashSet::new();
    let mut settled: HashSet<u64> = HashSet::new();
    let mut relocated = 0u64;
    for round in 0..5 {
        let mut child = Command::new(&exe)
            .args([
                "kill9_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, &dir_s)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait until the child publishes, then let it run a random while before the kill.
        let mut lines = Vec::new();
        let start = Instant::now();
        while !lines.iter().any(|l: &String| l.starts_with("P ")) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "child never published"
            );
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
                lines.push(l);
            }
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        for l in &lines {
            if let Some(id) = l.strip_prefix("P ") {
                published.insert(id.parse().unwrap());
            } else if let Some(id) = l.strip_prefix("A ") {
                settled.insert(id.parse().unwrap());
            } else if let Some(n) = l.strip_prefix("C ") {
                relocated += n.parse::<u64>().unwrap();
            }
        }

        let (store, rec) = Store::open(child_config(&dir_s)).unwrap();
        if let Some(t) = &rec.truncated {
            eprintln!("round {round}: truncated {t:?}");
        }
        let live: Vec<_> = rec.queues.get(&QUEUE).cloned().unwrap_or_default();
        let live_ids: HashSet<u64> = live.iter().map(|m| m.msg_id).collect();
        for id in &published {
            if settled.contains(id) {
                assert!(
                    !live_ids.contains(id),
                    "round {round}: settled {id} came back"
                );
            } else if settles(*id) {
                // Its ack may have been durable before the kill but not yet printed.
            } else {
                assert!(
                    live_ids.contains(id),
                    "round {round}: acknowledged {id} lost"
                );
            }
        }
        for m in &live {
            assert_eq!(
                store.read(&m.location).unwrap(),
                body(m.msg_id),
                "round {round}: body of {} corrupt",
                m.msg_id
            );
        }
        assert!(rec.next_msg_id > published.iter().copied().max().unwrap_or(0));
        eprintln!(
            "round {round}: {} acknowledged so far, {} settled, {} live after restart, \
             {relocated} relocated by compaction, {} segments",
            published.len(),
            settled.len(),
            live.len(),
            common::segment_files(dir.path()).len()
        );
        store.close().unwrap();
    }
}
