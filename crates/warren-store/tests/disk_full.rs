//! A full disk: the store holds what it accepted, refuses new messages, confirms nothing
//! that is not on disk, and recovers by itself once space returns (issue #12, fault 2).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use warren_store::sim::SimFs;
use warren_store::{Store, StoreConfig, StoreError};

fn config(fs: &SimFs) -> StoreConfig {
    let mut c = StoreConfig::new("/warren/store");
    c.fs = Arc::new(fs.clone());
    c.segment_size = 64 << 10;
    c.retry_interval = Duration::from_millis(10);
    // Appends run ahead of the writer by up to this much before they wait for it: small, so
    // that `fill` is refused once the writer has met the full disk, however late the writer
    // thread gets to run (with the default 16 MiB, a publisher that outran it could queue all
    // 10,000 messages first).
    c.max_queued_bytes = 1 << 20;
    c
}

fn body(n: u64) -> Bytes {
    Bytes::from(vec![(n % 251) as u8; 1000])
}

/// Publishes until the store refuses; returns what it accepted, as (msg id, LSN).
fn fill(store: &Store) -> Vec<(u64, u64)> {
    let mut accepted = Vec::new();
    for n in 0..10_000u64 {
        match store.publish(&[1], body(n)) {
            Ok(p) => accepted.push((p.msg_id, p.lsn)),
            Err(StoreError::NoSpace) => return accepted,
            Err(e) => panic!("publish {n}: {e}"),
        }
    }
    panic!("a 200 KB disk took 10 MB");
}

#[test]
fn a_full_disk_suspends_the_store_until_space_returns() {
    let fs = SimFs::new();
    let (store, _) = Store::open(config(&fs)).unwrap();
    let first = store.publish(&[1], body(0)).unwrap();
    store.wait_durable_blocking(first.lsn).unwrap();
    fs.set_capacity(Some(fs.used() + 200_000));
    let accepted = fill(&store);
    assert!(accepted.len() > 100, "{} accepted", accepted.len());
    let stats = store.stats();
    assert!(stats.suspended && stats.disk_full == 1, "{stats:?}");
    let (last_id, last_lsn) = *accepted.last().unwrap();
    // What did not fit is neither confirmed nor failed: it waits for space.
    assert!(store.durable_lsn() < last_lsn);
    std::thread::sleep(Duration::from_millis(50));
    assert!(store.durable_lsn() < last_lsn, "confirmed without a disk");
    // Acks still go in (behind what is held), so a consumer is not stopped by a full disk.
    let ack = store.ack(1, &[first.msg_id]).unwrap();
    assert!(matches!(
        store.publish(&[1], body(1)),
        Err(StoreError::NoSpace)
    ));

    fs.set_capacity(None);
    let started = Instant::now();
    store.wait_durable_blocking(ack).unwrap();
    // The writer reopens the store right after the write that made the ack durable.
    while store.stats().suspended && started.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(!store.stats().suspended);
    let after = store.publish(&[1], body(7)).unwrap();
    store.wait_durable_blocking(after.lsn).unwrap();
    assert_eq!(
        store.read(last_id).unwrap(),
        body(accepted.len() as u64 - 1)
    );
    store.close().unwrap();

    // Every accepted message is on disk, the acked one is gone.
    let (again, rec) = Store::open(config(&fs)).unwrap();
    let q = &rec.queues[&1];
    assert_eq!(q.len(), accepted.len() + 1);
    assert!(!q.ids.contains(first.msg_id));
    for (id, _) in &accepted {
        assert!(q.ids.contains(*id), "message {id} lost");
    }
    assert!(q.ids.contains(after.msg_id));
    again.close().unwrap();
}

#[test]
fn closing_while_the_disk_is_full_ends_the_waits_instead_of_hanging() {
    let fs = SimFs::new();
    let (store, _) = Store::open(config(&fs)).unwrap();
    fs.set_capacity(Some(fs.used() + 50_000));
    let accepted = fill(&store);
    let (_, last_lsn) = *accepted.last().unwrap();
    let waiter = {
        let store = store.clone();
        std::thread::spawn(move || store.wait_durable_blocking(last_lsn))
    };
    let started = Instant::now();
    assert!(
        store.close().is_err(),
        "close reports what it could not write"
    );
    assert!(waiter.join().unwrap().is_err());
    assert!(started.elapsed() < Duration::from_secs(2));
    // What reached the disk before it filled is intact.
    fs.set_capacity(None);
    let (again, rec) = Store::open(config(&fs)).unwrap();
    assert!(rec.truncated.is_none(), "{:?}", rec.truncated);
    let durable = rec.queues.get(&1).map_or(0, |q| q.len());
    assert!(durable < accepted.len());
    again.close().unwrap();
}
