//! A full disk under a real broker (issue #12, fault 2): persistent publishes fill a small
//! tmpfs; the broker refuses what it cannot store (506, never a confirm), keeps what it
//! accepted, and once space is freed takes persistent messages again without a restart.
//!
//! Mounting a tmpfs needs root (as the CI machine runs); elsewhere the test says it skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::BasicProperties;

/// A tmpfs of a given size, unmounted on drop.
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn mount(megabytes: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().to_owned();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { _dir: dir, path })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn available(path: &Path) -> u64 {
    let s = rustix::fs::statvfs(path).expect("statvfs");
    s.f_bavail * s.f_frsize
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Publishes `n` persistent messages with confirms and waits for them; returns how many were
/// acked before the first failure, and the reply code of that failure.
async fn publish_confirmed(
    broker: &TestBroker,
    n: usize,
    body: &[u8],
) -> (lapin::Connection, usize, Option<u16>) {
    let (conn, ch) = broker.channel().await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .expect("confirm.select");
    let mut pending = Vec::new();
    let mut failure = None;
    for _ in 0..n {
        match within(ch.basic_publish(
            "",
            "full",
            BasicPublishOptions::default(),
            body,
            persistent(),
        ))
        .await
        {
            Ok(c) => pending.push(c),
            Err(e) => {
                failure = reply_code(&e);
                break;
            }
        }
    }
    let mut acked = 0;
    for c in pending {
        match tokio::time::timeout(Duration::from_secs(10), c).await {
            Ok(Ok(c)) if c.is_ack() => acked += 1,
            Ok(Ok(_)) => break,
            Ok(Err(e)) => {
                failure = failure.or(reply_code(&e));
                break;
            }
            Err(_) => panic!("a confirm neither came nor failed in 10 s"),
        }
    }
    if failure.is_none() && !conn.status().connected() {
        failure = Some(0);
    }
    (conn, acked, failure)
}

#[tokio::test]
async fn a_full_disk_refuses_publishes_and_the_broker_recovers_when_space_returns() {
    let Some(fs) = Tmpfs::mount(64) else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let data = fs.path.join("data");
    let broker = TestBroker::start_durable(&data).await;
    {
        let (_c, ch) = broker.channel().await;
        within(ch.queue_declare(
            "full",
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            Default::default(),
        ))
        .await
        .expect("declare");
    }
    // Leave about 6 MB: a 64 KiB publisher fills it in a moment.
    let filler = fs.path.join("filler");
    let room = available(&fs.path).saturating_sub(6 << 20);
    std::fs::write(&filler, vec![0u8; room as usize]).expect("fill the disk");
    let body = vec![7u8; 64 << 10];
    let (_full, acked_before, failure) = publish_confirmed(&broker, 400, &body).await;
    assert!(acked_before < 400, "400 x 64 KiB confirmed on a 6 MB disk");
    assert_eq!(
        failure,
        Some(506),
        "a publish the disk cannot take is refused with RESOURCE_ERROR"
    );

    // Space returns: within its retry interval (1 s) the store writes what it held and takes
    // new messages again, with no restart.
    std::fs::remove_file(&filler).expect("free the disk");
    let started = Instant::now();
    loop {
        let (_c, acked, _) = publish_confirmed(&broker, 1, &body).await;
        if acked == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still refused 5 s after space returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "persistent publishes accepted again {:?} after space returned",
        started.elapsed()
    );
    let (_ok, acked_after, failure) = publish_confirmed(&broker, 50, &body).await;
    assert_eq!(
        (acked_after, failure),
        (50, None),
        "persistent publishes after space returned"
    );

    // Every confirmed message is on disk.
    let broker = broker.restart().await;
    let (_c, ch) = broker.channel().await;
    let (ready, _) = queue_counts(&ch, "full").await;
    assert!(
        ready as usize > acked_before + acked_after,
        "{ready} recovered, {acked_before} + {acked_after} confirmed"
    );
    broker.shutdown().await;
}
