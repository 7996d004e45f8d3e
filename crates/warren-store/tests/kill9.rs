//! SIGKILL while publishing: a child process (this test binary, re-run on an ignored test)
//! publishes with fsync, settles some messages, compacts and checkpoints, and prints every id
//! once it is durable. The parent kills it with `kill -9` at a random moment, reopens the store
//! and checks that every acknowledged message is there, every settled one is gone, and every
//! body reads back intact. Several rounds reuse the same directory, so recovery of a recovered
//! store is exercised too.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
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

/// The body of a child's message: its seed (which the child chooses, before the store gives
/// the message its id), then `body(seed)`. Self-describing, so that the parent can check
/// every live body, even one whose `P` line the kill swallowed.
fn seeded_body(seed: u64) -> Bytes {
    let mut v = seed.to_le_bytes().to_vec();
    v.extend_from_slice(&body(seed));
    Bytes::from(v)
}

/// The seed of a body written by [`seeded_body`], if it is one.
fn seed_of(b: &[u8]) -> Option<u64> {
    let seed = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    (b[8..] == body(seed)[..]).then_some(seed)
}

/// The child: runs until killed (or for 30 s at most, should the parent die).
#[test]
#[ignore = "child process of sigkill_while_publishing_loses_no_acknowledged_message"]
fn kill9_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let (store, rec) = Store::open(child_config(&dir)).expect("open");
    println!("OPEN {}", rec.queues.get(&QUEUE).map_or(0, |q| q.len()));
    // Seeds unique across rounds: this process's id in the high bits.
    let next_seed = Arc::new(AtomicU64::new(u64::from(std::process::id()) << 32));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut threads = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        let next_seed = next_seed.clone();
        threads.push(std::thread::spawn(move || {
            while Instant::now() < deadline {
                let seed = next_seed.fetch_add(1, Ordering::Relaxed);
                let p = store.publish(&[QUEUE], seeded_body(seed)).expect("publish");
                store.wait_durable_blocking(p.lsn).expect("durable");
                println!("P {} {seed}", p.msg_id);
                if settles(p.msg_id) {
                    let lsn = store.ack(QUEUE, &[p.msg_id]).expect("ack");
                    store.wait_durable_blocking(lsn).expect("durable ack");
                    println!("A {}", p.msg_id);
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
    // Acknowledged (durable) message id -> the seed of its body.
    let mut published: HashMap<u64, u64> = HashMap::new();
    let mut settled: HashSet<u64> = HashSet::new();
    // Largest id seen so far: acknowledged, or live after a restart. A later round's
    // messages must get larger ids (ids continue after the largest ever published).
    let mut max_seen = 0u64;
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
        let mut round_ids = Vec::new();
        for l in &lines {
            if let Some(rest) = l.strip_prefix("P ") {
                let (id, seed) = rest.split_once(' ').unwrap();
                let (id, seed): (u64, u64) = (id.parse().unwrap(), seed.parse().unwrap());
                assert!(
                    published.insert(id, seed).is_none(),
                    "round {round}: id {id} given twice"
                );
                round_ids.push(id);
            } else if let Some(id) = l.strip_prefix("A ") {
                settled.insert(id.parse().unwrap());
            } else if let Some(n) = l.strip_prefix("C ") {
                relocated += n.parse::<u64>().unwrap();
            }
        }

        if let Some(&min) = round_ids.iter().min() {
            assert!(
                min > max_seen,
                "round {round}: id {min} given again (ids up to {max_seen} were in use)"
            );
        }
        max_seen = max_seen.max(round_ids.iter().copied().max().unwrap_or(0));

        let (store, rec) = Store::open(child_config(&dir_s)).unwrap();
        if let Some(t) = &rec.truncated {
            eprintln!("round {round}: truncated {t:?}");
        }
        let live: Vec<u64> = rec
            .queues
            .get(&QUEUE)
            .map(|q| q.iter().map(|m| m.msg_id).collect())
            .unwrap_or_default();
        let live_ids: HashSet<u64> = live.iter().copied().collect();
        assert!(live.windows(2).all(|w| w[0] < w[1]), "round {round}: order");
        for id in published.keys() {
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
        let mut seeds = HashSet::new();
        for &id in &live {
            let b = store
                .read(id)
                .unwrap_or_else(|e| panic!("round {round}: read {id}: {e}"));
            let seed = seed_of(&b).unwrap_or_else(|| panic!("round {round}: body of {id} corrupt"));
            // A message whose `P` line was printed has the body published under that id; one
            // published but killed before printing is at least a whole body of its own.
            if let Some(&want) = published.get(&id) {
                assert_eq!(seed, want, "round {round}: {id} has another message's body");
            }
            assert!(
                seeds.insert(seed),
                "round {round}: body {seed} under two ids"
            );
        }
        max_seen = max_seen.max(live.last().copied().unwrap_or(0));
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
