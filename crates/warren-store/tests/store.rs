mod common;

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::sync::Arc;
use std::thread;

use bytes::Bytes;
use common::{
    assert_bodies, assert_not_found, block_on, body, config, flatten, ids, segment_files,
};
use warren_store::{RecoveredMessage, Store, StoreError, SyncMode};

#[test]
fn handles_are_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Store>();
    send_sync::<warren_store::MetaStore>();
    send::<warren_store::WaitDurable>();
}

/// The messages of `queue`, in recovered (publish) order.
fn messages(r: &warren_store::Recovery, queue: u64) -> Vec<RecoveredMessage> {
    r.queues
        .get(&queue)
        .map(|q| q.iter().collect())
        .unwrap_or_default()
}

#[test]
fn published_body_reads_back_after_durability() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert!(rec.queues.is_empty());
    let mut last = 0;
    for n in 1..=100u64 {
        let p = store.publish(&[1], body(n)).unwrap();
        // A fresh store numbers its messages from 1, one per publish.
        assert_eq!(p.msg_id, n);
        assert!(p.lsn > last);
        last = p.lsn;
    }
    block_on(store.wait_durable(last)).unwrap();
    assert!(store.durable_lsn() >= last);
    for id in 1..=100u64 {
        assert_eq!(store.read(id).unwrap(), body(id));
    }
    // A large body goes through the vectored-write path.
    let big = Bytes::from(vec![0xab; 300_000]);
    let p = store.publish(&[1, 2], big.clone()).unwrap();
    assert_eq!(p.msg_id, 101);
    store.wait_durable_blocking(p.lsn).unwrap();
    assert_eq!(store.read(p.msg_id).unwrap(), big);
    store.close().unwrap();
}

#[test]
fn a_just_published_message_reads_back_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let mut expected = HashMap::new();
    for n in 0..300u64 {
        let b = if n % 50 == 0 {
            Bytes::from(vec![n as u8; 70_000])
        } else {
            body(n * 3 + 1)
        };
        let p = store.publish(&[1 + n % 3], b.clone()).unwrap();
        // No wait_durable: the read waits for the writer if it has to.
        assert_eq!(store.read(p.msg_id).unwrap(), b, "message {}", p.msg_id);
        expected.insert(p.msg_id, b);
    }
    for (id, b) in &expected {
        assert_eq!(&store.read(*id).unwrap(), b);
    }
    // Also from other threads, racing the writer.
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || {
                for i in 0..200u64 {
                    let b = body(t * 1000 + i);
                    let p = store.publish(&[10 + t], b.clone()).unwrap();
                    assert_eq!(store.read(p.msg_id).unwrap(), b);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    store.close().unwrap();
}

#[test]
fn ids_follow_log_order_and_continue_after_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_size = 1024;
    let (store, _) = Store::open(cfg.clone()).unwrap();
    assert_eq!(store.publish(&[1], body(1)).unwrap().msg_id, 1);
    // A fanout message is one message: one id, whatever the number of queues.
    assert_eq!(store.publish(&[1, 2, 3], body(2)).unwrap().msg_id, 2);
    // Acks, deliveries and drops take no ids.
    store.ack(1, &[1]).unwrap();
    store.mark_delivered(2, &[2]).unwrap();
    store.drop_queue(3).unwrap();
    assert_eq!(store.publish(&[2], body(3)).unwrap().msg_id, 3);
    store.close().unwrap();

    // Clean restart (checkpoint).
    let (store, rec) = Store::open(cfg.clone()).unwrap();
    assert!(rec.from_checkpoint);
    assert_eq!(store.publish(&[1], body(4)).unwrap().msg_id, 4);
    let lsn = store.publish(&[1], body(5)).unwrap().lsn;
    store.wait_durable_blocking(lsn).unwrap();
    store.crash_for_test();

    // Crash (checkpoint + tail).
    let (store, rec) = Store::open(cfg.clone()).unwrap();
    assert!(rec.from_checkpoint);
    assert_eq!(ids(&rec, 1), vec![2, 4, 5]);
    assert_eq!(ids(&rec, 2), vec![2, 3]);
    let p = store.publish(&[1], body(6)).unwrap();
    assert_eq!(p.msg_id, 6);
    store.wait_durable_blocking(p.lsn).unwrap();
    // Settle everything, over several segments, and let a checkpoint delete them: the ids
    // still continue after the largest one ever published, not after the largest live one.
    let mut last = 0;
    for n in 7..=60u64 {
        let p = store.publish(&[1], body(n)).unwrap();
        assert_eq!(p.msg_id, n);
        last = p.lsn;
    }
    store.wait_durable_blocking(last).unwrap();
    store.ack(1, &(1..=60).collect::<Vec<_>>()).unwrap();
    let lsn = store.ack(2, &[2, 3]).unwrap();
    store.wait_durable_blocking(lsn).unwrap();
    store.checkpoint().unwrap();
    assert!(store.stats().segments_deleted > 0);
    store.crash_for_test();
    let (store, rec) = Store::open(cfg.clone()).unwrap();
    assert!(rec.queues.is_empty());
    assert_eq!(store.publish(&[1], body(61)).unwrap().msg_id, 61);
    store.close().unwrap();
    let (store, rec) = Store::open(cfg).unwrap();
    assert_eq!(ids(&rec, 1), vec![61]);
    assert_eq!(store.publish(&[1], body(62)).unwrap().msg_id, 62);
    store.close().unwrap();
}

#[test]
fn reading_an_id_that_is_not_live_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_size = 1024;
    let (store, _) = Store::open(cfg.clone()).unwrap();
    // Nothing published yet.
    assert_not_found(&store, 0);
    assert_not_found(&store, 1);
    let a = store.publish(&[1, 2], body(1)).unwrap().msg_id;
    let b = store.publish(&[1], body(2)).unwrap().msg_id;
    let c = store.publish(&[3], body(3)).unwrap().msg_id;
    assert_not_found(&store, 0);
    assert_not_found(&store, c + 1);
    assert_not_found(&store, u64::MAX);
    // Settled for one of its queues only: still live.
    store.ack(1, &[a]).unwrap();
    assert_eq!(store.read(a).unwrap(), body(1));
    // Settled for every queue: gone.
    let lsn = store.ack(1, &[b]).unwrap();
    store.wait_durable_blocking(lsn).unwrap();
    assert_not_found(&store, b);
    let lsn = store.drop_queue(3).unwrap();
    store.wait_durable_blocking(lsn).unwrap();
    assert_not_found(&store, c);
    assert_eq!(store.read(a).unwrap(), body(1));
    store.close().unwrap();

    let (store, rec) = Store::open(cfg.clone()).unwrap();
    assert_eq!(flatten(&rec), vec![(2, a, 0)]);
    assert_eq!(store.read(a).unwrap(), body(1));
    for id in [0, b, c, c + 1] {
        assert_not_found(&store, id);
    }
    // Dead messages in deleted segments are not found either.
    let mut last = 0;
    let mut dead = Vec::new();
    for n in 0..40u64 {
        let p = store.publish(&[1], body(n)).unwrap();
        dead.push(p.msg_id);
        last = p.lsn;
    }
    store.wait_durable_blocking(last).unwrap();
    store.ack(1, &dead).unwrap();
    store.checkpoint().unwrap();
    assert!(store.stats().segments_deleted > 0);
    for &id in &dead {
        assert_not_found(&store, id);
    }
    assert_eq!(store.read(a).unwrap(), body(1));
    store.crash_for_test();
    let (store, _) = Store::open(cfg).unwrap();
    for &id in &dead {
        assert_not_found(&store, id);
    }
    assert_eq!(store.read(a).unwrap(), body(1));
    store.close().unwrap();
}

#[test]
fn a_damaged_body_is_refused_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let a = store.publish(&[1], body(1)).unwrap();
    let b = store
        .publish(&[1], Bytes::from_static(b"hello world"))
        .unwrap();
    store.wait_durable_blocking(b.lsn).unwrap();
    let seg = segment_files(dir.path()).pop().unwrap();
    let data = fs::read(&seg).unwrap();
    let at = data
        .windows(11)
        .position(|w| w == b"hello world")
        .expect("body in the segment") as u64;
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"J", at).unwrap();
    assert_eq!(store.read(a.msg_id).unwrap(), body(1));
    assert!(matches!(
        store.read(b.msg_id),
        Err(StoreError::Corrupt { .. })
    ));
    store.close().unwrap();
}

#[test]
fn close_then_reopen_recovers_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let mut bodies = HashMap::new();
    let mut id = Vec::new();
    for n in 0..50u64 {
        let b = body(n * 5 + 2);
        let p = store.publish(&[7, 8], b.clone()).unwrap();
        bodies.insert(p.msg_id, b);
        id.push(p.msg_id);
    }
    store.ack(7, &id[0..3]).unwrap();
    store.ack(8, &id[0..2]).unwrap();
    store.mark_delivered(8, &[id[2], id[3]]).unwrap();
    store.mark_delivered(8, &[id[3]]).unwrap();
    store.close().unwrap();

    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert!(rec.from_checkpoint);
    assert_eq!(rec.replayed_records, 0);
    assert!(rec.truncated.is_none());
    assert_eq!(ids(&rec, 7), id[3..].to_vec());
    assert_eq!(ids(&rec, 8), id[2..].to_vec());
    let q8 = messages(&rec, 8);
    assert_eq!(q8[0].msg_id, id[2]);
    assert!(q8[0].delivered && q8[0].delivery_count == 1);
    assert_eq!(q8[1].msg_id, id[3]);
    assert_eq!(q8[1].delivery_count, 2);
    assert!(!q8[2].delivered);
    assert_eq!(q8[2].delivery_count, 0);
    assert_eq!(rec.queues[&8].delivered.len(), 2);
    assert!(rec.queues[&7].iter().all(|m| !m.delivered));
    assert!(rec.queues[&7].delivered.is_empty());
    assert_eq!(rec.queues[&7].len(), 47);
    assert!(rec.queues[&8].ids.contains(id[2]) && !rec.queues[&8].ids.contains(id[1]));
    assert_bodies(&store, &rec, &bodies);
    // New ids continue after the recovered ones.
    assert_eq!(store.publish(&[7], body(0)).unwrap().msg_id, id[49] + 1);
    store.close().unwrap();
}

#[test]
fn crash_without_checkpoint_replays_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let mut bodies = HashMap::new();
    let mut id = Vec::new();
    for n in 0..30u64 {
        let p = store.publish(&[1], body(n + 40)).unwrap();
        bodies.insert(p.msg_id, body(n + 40));
        id.push(p.msg_id);
    }
    store.ack(1, &[id[4], id[5]]).unwrap();
    let lsn = store.mark_delivered(1, &[id[6]]).unwrap();
    store.wait_durable_blocking(lsn).unwrap();
    let after_crash = store.clone();
    store.crash_for_test();
    assert!(matches!(
        after_crash.publish(&[1], body(99)),
        Err(StoreError::Closed)
    ));
    drop(after_crash);

    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert!(!rec.from_checkpoint);
    assert_eq!(rec.replayed_records, 32);
    let expected: Vec<u64> = id
        .iter()
        .copied()
        .filter(|i| *i != id[4] && *i != id[5])
        .collect();
    assert_eq!(ids(&rec, 1), expected);
    let m7 = rec.queues[&1].iter().find(|m| m.msg_id == id[6]).unwrap();
    assert!(m7.delivered);
    assert_eq!(m7.delivery_count, 1);
    assert_bodies(&store, &rec, &bodies);
    // Appends continue after the recovered tail, with the next id.
    let p = store.publish(&[1], body(31)).unwrap();
    assert_eq!(p.msg_id, id[29] + 1);
    store.wait_durable_blocking(p.lsn).unwrap();
    assert_eq!(store.read(p.msg_id).unwrap(), body(31));
    store.crash_for_test();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert_eq!(ids(&rec, 1).last(), Some(&p.msg_id));
    assert_eq!(store.read(p.msg_id).unwrap(), body(31));
    store.close().unwrap();
}

#[test]
fn fanout_message_lives_until_settled_for_every_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let m1 = store.publish(&[10, 11, 12], body(1)).unwrap().msg_id;
    let m2 = store.publish(&[10], body(2)).unwrap().msg_id;
    store.ack(10, &[m1, m2]).unwrap();
    store.ack(11, &[m1]).unwrap();
    store.ack(11, &[m1]).unwrap(); // duplicate ack: no effect
    store.ack(99, &[m1]).unwrap(); // queue it was never stored for: no effect
    assert_eq!(store.read(m1).unwrap(), body(1));
    store.crash_for_test();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert_eq!(flatten(&rec), vec![(12, m1, 0)]);
    assert_eq!(store.stats().live_messages, 1);
    assert_eq!(store.read(m1).unwrap(), body(1));
    assert_not_found(&store, m2);
    store.ack(12, &[m1]).unwrap();
    store.close().unwrap();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert!(rec.queues.is_empty());
    assert_not_found(&store, m1);
    // Nothing is live, yet ids do not start over.
    assert_eq!(store.publish(&[10], body(3)).unwrap().msg_id, m2 + 1);
    store.close().unwrap();
}

#[test]
fn drop_queue_settles_only_that_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let mut in_2 = Vec::new();
    for n in 1..=20u64 {
        let queues: &[u64] = if n % 2 == 0 { &[1, 2] } else { &[1] };
        let id = store.publish(queues, body(n)).unwrap().msg_id;
        if n % 2 == 0 {
            in_2.push(id);
        }
    }
    store.drop_queue(1).unwrap();
    store.drop_queue(3).unwrap(); // unknown queue
    let last = store.publish(&[1], body(21)).unwrap().msg_id;
    store.crash_for_test();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert_eq!(ids(&rec, 1), vec![last]);
    assert_eq!(ids(&rec, 2), in_2);
    assert_eq!(store.read(last).unwrap(), body(21));
    for &id in &in_2 {
        assert_eq!(store.read(id).unwrap(), body(id));
    }
    store.close().unwrap();
}

#[test]
fn invalid_arguments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    assert!(matches!(
        store.publish(&[], body(1)),
        Err(StoreError::Invalid(_))
    ));
    // A refused publish takes no id.
    assert_eq!(store.publish(&[1], body(1)).unwrap().msg_id, 1);
    // A second store on the same directory would corrupt it.
    assert!(Store::open(config(dir.path())).is_err());
    store.close().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    store.close().unwrap();
}

#[test]
fn close_releases_the_directory_while_clones_linger() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let lingering = store.clone();
    let id = store.publish(&[1], body(1)).unwrap().msg_id;
    store.close().unwrap();
    assert!(matches!(
        lingering.publish(&[1], body(2)),
        Err(StoreError::Closed)
    ));
    let (again, rec) = Store::open(config(dir.path())).unwrap();
    assert_eq!(ids(&rec, 1), vec![id]);
    assert_eq!(again.read(id).unwrap(), body(1));
    again.close().unwrap();
    drop(lingering);
}

/// Publishes n messages to queue 1 (ids 1..=n, body(id)), crashes (no checkpoint), and
/// returns the last segment file.
const SEGMENT_HEADER: usize = 24;

fn log_with(dir: &std::path::Path, n: u64) -> std::path::PathBuf {
    let (store, _) = Store::open(config(dir)).unwrap();
    let mut last = 0;
    for id in 1..=n {
        let p = store.publish(&[1], body(id)).unwrap();
        assert_eq!(p.msg_id, id);
        last = p.lsn;
    }
    store.wait_durable_blocking(last).unwrap();
    store.crash_for_test();
    segment_files(dir).pop().unwrap()
}

/// `body(id)` for each id.
fn bodies_of(ids: impl IntoIterator<Item = u64>) -> HashMap<u64, Bytes> {
    ids.into_iter().map(|id| (id, body(id))).collect()
}

#[test]
fn torn_tail_mid_record_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let seg = log_with(dir.path(), 10);
    let len = fs::metadata(&seg).unwrap().len();
    // Cut the last record (body(10) is 11 bytes, so the record is > 5 bytes long) in half.
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert_eq!(ids(&rec, 1), (1..=9).collect::<Vec<_>>());
    let t = rec.truncated.as_ref().expect("truncation reported");
    assert!(t.reason.contains("torn"), "{}", t.reason);
    assert!(t.segments_deleted.is_empty());
    assert_eq!(t.bytes_discarded, len - 5 - t.offset);
    assert_eq!(fs::metadata(&seg).unwrap().len(), t.offset);
    assert_bodies(&store, &rec, &bodies_of(1..=9));
    // The cut message is gone.
    assert_not_found(&store, 10);
    // The store keeps working after the cut, and the next restart is clean.
    let p = store.publish(&[1], body(11)).unwrap();
    assert!(p.msg_id > 9, "{}", p.msg_id);
    store.wait_durable_blocking(p.lsn).unwrap();
    store.close().unwrap();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert!(rec.truncated.is_none());
    let mut want_ids: Vec<u64> = (1..=9).collect();
    want_ids.push(p.msg_id);
    assert_eq!(ids(&rec, 1), want_ids);
    let mut want = bodies_of(1..=9);
    want.insert(p.msg_id, body(11));
    assert_bodies(&store, &rec, &want);
    store.close().unwrap();
}

#[test]
fn garbage_after_the_last_record_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let seg = log_with(dir.path(), 10);
    let len = fs::metadata(&seg).unwrap().len();
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0x5a; 37]).unwrap();
    drop(f);
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert_eq!(ids(&rec, 1), (1..=10).collect::<Vec<_>>());
    let t = rec.truncated.as_ref().unwrap();
    assert_eq!(t.offset, len);
    assert_eq!(t.bytes_discarded, 37);
    assert_eq!(fs::metadata(&seg).unwrap().len(), len);
    assert_bodies(&store, &rec, &bodies_of(1..=10));
    assert_eq!(store.publish(&[1], body(11)).unwrap().msg_id, 11);
    store.close().unwrap();
}

#[test]
fn zero_filled_tail_ends_the_log_and_is_cut() {
    // Zeros after the last record are what a prepared segment holds: the normal end of the
    // log, not damage. The file is cut there so appends continue right after the records.
    let dir = tempfile::tempdir().unwrap();
    let seg = log_with(dir.path(), 4);
    let len = fs::metadata(&seg).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len + 4096)
        .unwrap();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert_eq!(ids(&rec, 1), vec![1, 2, 3, 4]);
    assert!(rec.truncated.is_none(), "{:?}", rec.truncated);
    assert_eq!(fs::metadata(&seg).unwrap().len(), len);
    assert_bodies(&store, &rec, &bodies_of(1..=4));
    let p = store.publish(&[1], body(5)).unwrap();
    store.wait_durable_blocking(p.lsn).unwrap();
    store.close().unwrap();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert_eq!(ids(&rec, 1), vec![1, 2, 3, 4, 5]);
    assert_bodies(&store, &rec, &bodies_of(1..=5));
    store.close().unwrap();
}

#[test]
fn stale_records_after_a_zeroed_gap_are_never_replayed() {
    // A prepared segment where an unfinished batch reached the disk only in part: its first
    // page still zeros, a later page written. Recovery ends the log at the zeros and cuts the
    // rest, so that records appended after a restart can never run into the stale ones.
    let dir = tempfile::tempdir().unwrap();
    let seg = log_with(dir.path(), 4);
    let len = fs::metadata(&seg).unwrap().len();
    let mut data = fs::read(&seg).unwrap();
    let stale = data[SEGMENT_HEADER..].to_vec();
    data.resize(len as usize + 100, 0);
    data.extend_from_slice(&stale);
    fs::write(&seg, &data).unwrap();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert_eq!(ids(&rec, 1), vec![1, 2, 3, 4]);
    assert!(rec.truncated.is_none(), "{:?}", rec.truncated);
    assert_eq!(fs::metadata(&seg).unwrap().len(), len);
    store.close().unwrap();
}

#[test]
fn dead_segments_are_recycled_as_prepared_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_size = 64 << 10;
    let (store, _) = Store::open(cfg.clone()).unwrap();
    let publish = |n: u64| {
        let p = store
            .publish(&[1], Bytes::from(vec![n as u8; 1000]))
            .unwrap();
        store.wait_durable_blocking(p.lsn).unwrap();
        p.msg_id
    };
    // Several segments' worth, all acked: once a checkpoint covers them they are dead, and
    // one of them becomes the spare.
    let acked: Vec<u64> = (0..300).map(publish).collect();
    store
        .wait_durable_blocking(store.ack(1, &acked).unwrap())
        .unwrap();
    store.checkpoint().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !dir.path().join("seg-next").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no spare was prepared"
        );
        thread::sleep(std::time::Duration::from_millis(5));
    }
    // The next segments: the first comes from the spare (a whole segment's size, zeros
    // after its records).
    let kept: Vec<u64> = (0..200).map(publish).collect();
    let full = segment_files(dir.path())
        .iter()
        .filter(|p| fs::metadata(p).unwrap().len() == 64 << 10)
        .count();
    assert!(full > 0, "no prepared segment was used");
    store.crash_for_test();
    let (store, rec) = Store::open(cfg.clone()).unwrap();
    assert!(rec.truncated.is_none(), "{:?}", rec.truncated);
    assert_eq!(ids(&rec, 1), kept);
    for (n, id) in kept.iter().enumerate() {
        assert_eq!(store.read(*id).unwrap(), Bytes::from(vec![n as u8; 1000]));
    }
    // No spare is left behind by a clean close.
    store.close().unwrap();
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("seg-next")),
        "{names:?}"
    );
}

#[test]
fn flipped_byte_in_the_last_record_cuts_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let seg = log_with(dir.path(), 10);
    let mut data = fs::read(&seg).unwrap();
    let n = data.len();
    data[n - 3] ^= 0x01; // inside body(10)
    fs::write(&seg, &data).unwrap();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert_eq!(ids(&rec, 1), (1..=9).collect::<Vec<_>>());
    let t = rec.truncated.as_ref().unwrap();
    assert!(t.reason.contains("CRC"), "{}", t.reason);
    assert_bodies(&store, &rec, &bodies_of(1..=9));
    assert_not_found(&store, 10);
    store.close().unwrap();
}

#[test]
fn damage_in_an_earlier_segment_deletes_the_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_size = 512;
    let (store, _) = Store::open(cfg.clone()).unwrap();
    let mut last = 0;
    for n in 1..=60u64 {
        let p = store.publish(&[1], body(n)).unwrap();
        assert_eq!(p.msg_id, n);
        last = p.lsn;
    }
    store.wait_durable_blocking(last).unwrap();
    store.crash_for_test();
    let segs = segment_files(dir.path());
    assert!(segs.len() >= 4, "{segs:?}");
    // Corrupt the first record of the second segment.
    let mut data = fs::read(&segs[1]).unwrap();
    data[24 + 9] ^= 0xff;
    fs::write(&segs[1], &data).unwrap();
    let (store, rec) = Store::open(cfg).unwrap();
    let t = rec.truncated.clone().unwrap();
    assert_eq!(t.offset, 24);
    assert_eq!(t.segments_deleted.len(), segs.len() - 2);
    let survivors = ids(&rec, 1);
    assert!(!survivors.is_empty() && survivors.len() < 20);
    let n = survivors.len() as u64;
    assert_eq!(survivors, (1..=n).collect::<Vec<_>>());
    assert_eq!(segment_files(dir.path()).len(), 2);
    assert_bodies(&store, &rec, &bodies_of(1..=n));
    for id in n + 1..=60 {
        assert_not_found(&store, id);
    }
    // New ids follow the surviving ones.
    let p = store.publish(&[1], body(0)).unwrap();
    assert!(p.msg_id > n, "{}", p.msg_id);
    assert_eq!(store.read(p.msg_id).unwrap(), body(0));
    store.close().unwrap();
}

#[test]
fn torn_segment_header_after_rollover_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let seg = log_with(dir.path(), 5);
    let name = seg.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(name, "seg-00000000000000000001.log");
    // A crash right after creating the next segment, before its header was complete.
    let next = dir.path().join("seg-00000000000000000006.log");
    fs::write(&next, b"WARREN").unwrap();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert_eq!(ids(&rec, 1), vec![1, 2, 3, 4, 5]);
    assert_eq!(rec.truncated.as_ref().unwrap().offset, 0);
    assert!(!next.exists());
    assert_bodies(&store, &rec, &bodies_of(1..=5));
    let p = store.publish(&[1], body(6)).unwrap();
    assert_eq!(p.msg_id, 6);
    store.wait_durable_blocking(p.lsn).unwrap();
    assert_eq!(store.read(p.msg_id).unwrap(), body(6));
    store.close().unwrap();
}

#[test]
fn dead_segments_are_deleted_after_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_size = 1024;
    let (store, _) = Store::open(cfg.clone()).unwrap();
    let mut last = 0;
    let mut id = Vec::new();
    for n in 1..=200u64 {
        let p = store.publish(&[1], body(n)).unwrap();
        id.push(p.msg_id);
        last = p.lsn;
    }
    store.wait_durable_blocking(last).unwrap();
    let segs_before = segment_files(dir.path()).len();
    assert!(segs_before > 10);
    // Settle all but the last message: every segment but the last holds only dead records.
    store.ack(1, &id[..199]).unwrap();
    store.checkpoint().unwrap();
    let segs_after = segment_files(dir.path()).len();
    assert!(
        segs_after <= 2,
        "{segs_after} segments left of {segs_before}"
    );
    assert!(store.stats().segments_deleted as usize >= segs_before - 2);
    assert_eq!(store.read(id[199]).unwrap(), body(200));
    assert_not_found(&store, id[0]);
    store.close().unwrap();
    let (store, rec) = Store::open(cfg).unwrap();
    assert_eq!(ids(&rec, 1), vec![id[199]]);
    assert_eq!(store.read(id[199]).unwrap(), body(200));
    store.close().unwrap();
}

/// Compacts until nothing more qualifies, checking each move: to another segment, and the
/// body still reads back by id (owners need not know about the move).
fn compact_fully(store: &Store, live: &HashMap<u64, Bytes>) -> usize {
    let mut total = 0;
    for round in 0.. {
        assert!(round < 6, "compaction does not converge");
        let moved = store.compact().unwrap();
        if moved.is_empty() {
            break;
        }
        let mut seen = HashSet::new();
        for r in &moved {
            assert!(
                seen.insert(r.msg_id),
                "{} moved twice in one pass",
                r.msg_id
            );
            assert_ne!(r.old.segment, r.new.segment);
            if let Some(b) = live.get(&r.msg_id) {
                assert_eq!(&store.read(r.msg_id).unwrap(), b);
            }
        }
        total += moved.len();
    }
    total
}

/// Every id in `live` reads back as its body, every id in `dead` is not found.
fn assert_reads(store: &Store, live: &HashMap<u64, Bytes>, dead: &[u64]) {
    for (id, b) in live {
        assert_eq!(&store.read(*id).unwrap(), b, "message {id}");
    }
    for &id in dead {
        assert_not_found(store, id);
    }
}

#[test]
fn compaction_moves_live_messages_and_frees_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_size = 4096;
    let (store, _) = Store::open(cfg.clone()).unwrap();
    let mut all = Vec::new();
    let mut bodies = HashMap::new();
    for n in 1..=400u64 {
        let b = body(n * 11);
        let p = store.publish(&[1, 2], b.clone()).unwrap();
        all.push(p.msg_id);
        bodies.insert(p.msg_id, b);
    }
    // Keep one message in ten, delivered once from queue 2.
    let keep: Vec<u64> = all.iter().copied().step_by(10).collect();
    let gone: Vec<u64> = all.iter().copied().filter(|i| !keep.contains(i)).collect();
    store.ack(1, &gone).unwrap();
    store.ack(2, &gone).unwrap();
    let lsn = store.mark_delivered(2, &keep).unwrap();
    store.wait_durable_blocking(lsn).unwrap();
    let segs_before = segment_files(dir.path()).len();
    let mut live: HashMap<u64, Bytes> = keep.iter().map(|id| (*id, bodies[id].clone())).collect();

    let moved = store.compact().unwrap();
    assert!(!moved.is_empty());
    for r in &moved {
        assert!(live.contains_key(&r.msg_id), "dead {} moved", r.msg_id);
        assert_ne!(r.old.segment, r.new.segment);
        assert_eq!(store.read(r.msg_id).unwrap(), bodies[&r.msg_id]);
    }
    // Every live message reads back by id after the move, moved or not; dead ones do not.
    assert_reads(&store, &live, &gone);
    let segs_after = segment_files(dir.path()).len();
    assert!(
        segs_after < segs_before,
        "{segs_after} segments after compaction, {segs_before} before"
    );
    // The segment that was active during the first pass may now qualify too; passes converge.
    compact_fully(&store, &live);
    assert_reads(&store, &live, &gone);
    store.close().unwrap();

    // From here on, any segment with dead records in it qualifies for compaction.
    cfg.compact_threshold = 0.9;
    let (store, rec) = Store::open(cfg.clone()).unwrap();
    assert!(rec.from_checkpoint);
    assert_eq!(ids(&rec, 1), keep);
    assert_eq!(ids(&rec, 2), keep);
    for m in rec.queues[&2].iter() {
        assert_eq!(m.delivery_count, 1);
    }
    assert!(rec.queues[&1].iter().all(|m| m.delivery_count == 0));
    assert_bodies(&store, &rec, &live);
    assert_reads(&store, &live, &gone);

    // Compact again after the restart: bodies moved once (now outside their segment's dense
    // run) move again, and survive a crash that replays the tail after the checkpoint.
    let mut filler = Vec::new();
    for n in 0..300u64 {
        filler.push(store.publish(&[3], body(n)).unwrap().msg_id);
    }
    assert!(filler[0] > all[399]);
    store.ack(3, &filler).unwrap();
    let half: Vec<u64> = keep.iter().copied().step_by(2).collect();
    store.ack(1, &half).unwrap();
    let lsn = store.ack(2, &half).unwrap();
    store.wait_durable_blocking(lsn).unwrap();
    for id in &half {
        live.remove(id);
    }
    let mut dead = gone.clone();
    dead.extend(&half);
    dead.extend(&filler);
    assert!(compact_fully(&store, &live) > 0);
    assert_reads(&store, &live, &dead);
    let rest: Vec<u64> = keep.iter().copied().filter(|i| !half.contains(i)).collect();
    let lsn = store.mark_delivered(2, &rest[..3]).unwrap();
    store.wait_durable_blocking(lsn).unwrap();
    store.crash_for_test();
    let (store, rec) = Store::open(cfg).unwrap();
    assert!(rec.from_checkpoint);
    assert_eq!(ids(&rec, 1), rest);
    assert_eq!(ids(&rec, 2), rest);
    for m in rec.queues[&2].iter() {
        let want = if rest[..3].contains(&m.msg_id) { 2 } else { 1 };
        assert_eq!(m.delivery_count, want, "message {}", m.msg_id);
    }
    assert_bodies(&store, &rec, &live);
    assert_reads(&store, &live, &dead);
    store.close().unwrap();
}

#[test]
fn compaction_copies_survive_a_crash_before_the_checkpoint() {
    // Relocate records replayed from the log (no checkpoint after them) give the same state.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_size = 2048;
    let (store, _) = Store::open(cfg.clone()).unwrap();
    let mut all = Vec::new();
    for n in 1..=200u64 {
        all.push((store.publish(&[1], body(n + 3)).unwrap().msg_id, n));
    }
    let gone: Vec<u64> = all
        .iter()
        .filter(|(_, n)| n % 7 != 0)
        .map(|(id, _)| *id)
        .collect();
    store.ack(1, &gone).unwrap();
    let moved = store.compact().unwrap();
    assert!(!moved.is_empty());
    let mut live: HashMap<u64, Bytes> = all
        .iter()
        .filter(|(_, n)| n % 7 == 0)
        .map(|&(id, n)| (id, body(n + 3)))
        .collect();
    assert_reads(&store, &live, &gone);
    // Settle a relocated message after the move, then crash: the log tail holds both.
    let victim = moved[0].msg_id;
    assert!(live.contains_key(&victim));
    let lsn = store.ack(1, &[victim]).unwrap();
    store.wait_durable_blocking(lsn).unwrap();
    assert_not_found(&store, victim);
    live.remove(&victim);
    store.crash_for_test();
    let (store, rec) = Store::open(cfg).unwrap();
    let want: Vec<u64> = all
        .iter()
        .filter(|(id, n)| n % 7 == 0 && *id != victim)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(ids(&rec, 1), want);
    assert_bodies(&store, &rec, &live);
    let mut dead = gone;
    dead.push(victim);
    assert_reads(&store, &live, &dead);
    store.close().unwrap();
}

/// Checks a recovered queue-1 backlog: exactly `expected` in order, with `delivered` counts,
/// every body readable by id, and nothing left of queue 2.
fn check_backlog(
    store: &Store,
    rec: &warren_store::Recovery,
    expected: &[u64],
    bodies: &HashMap<u64, Bytes>,
    delivered: &HashMap<u64, u32>,
    settled: &[u64],
) {
    assert!(rec.truncated.is_none());
    assert_eq!(ids(rec, 1), expected);
    assert!(!rec.queues.contains_key(&2), "queue 2 was settled entirely");
    let q1 = &rec.queues[&1];
    assert_eq!(q1.len(), expected.len());
    for m in q1.iter() {
        let want = delivered.get(&m.msg_id).copied().unwrap_or(0);
        assert_eq!(m.delivery_count, want, "message {}", m.msg_id);
        assert_eq!(m.delivered, want > 0);
        assert_eq!(store.read(m.msg_id).unwrap(), bodies[&m.msg_id]);
    }
    for &id in settled {
        assert_not_found(store, id);
    }
}

/// Publishes alternately to queues 1 and 2, remembering ids and bodies.
#[derive(Default)]
struct Interleaved {
    bodies: HashMap<u64, Bytes>,
    q1: Vec<u64>,
    q2: Vec<u64>,
    last: u64,
}

impl Interleaved {
    fn publish(&mut self, store: &Store, n: u64) -> u64 {
        let queue = 1 + n % 2;
        // Bodies of 200 to 296 bytes: a segment of live relocated copies is mostly body, so
        // compaction, once done, leaves nothing below the threshold.
        let seed = n * 13 + queue;
        let b: Bytes = std::iter::repeat_n(body(seed), 3)
            .flatten()
            .chain(std::iter::repeat_n(seed as u8, 200))
            .take(200 + (seed % 97) as usize)
            .collect::<Vec<u8>>()
            .into();
        let p = store.publish(&[queue], b.clone()).unwrap();
        self.bodies.insert(p.msg_id, b);
        if queue == 1 {
            self.q1.push(p.msg_id);
        } else {
            self.q2.push(p.msg_id);
        }
        self.last = p.lsn;
        p.msg_id
    }

    fn live(&self) -> HashMap<u64, Bytes> {
        self.q1
            .iter()
            .map(|id| (*id, self.bodies[id].clone()))
            .collect()
    }
}

#[test]
fn an_interleaved_backlog_survives_restarts_from_log_and_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_size = 4096;
    // Half-dead segments qualify, so that compaction moves part of the backlog.
    cfg.compact_threshold = 0.6;
    let (store, _) = Store::open(cfg.clone()).unwrap();
    let mut t = Interleaved::default();
    for n in 0..600u64 {
        // Queue 1 and queue 2 alternate: every segment holds both.
        assert_eq!(t.publish(&store, n), n + 1);
    }
    store.wait_durable_blocking(t.last).unwrap();
    assert!(segment_files(dir.path()).len() > 4);
    // Queue 2 is consumed entirely, in two batches; queue 1 is a backlog, partly delivered.
    store.ack(2, &t.q2[..100]).unwrap();
    store.ack(2, &t.q2[100..]).unwrap();
    let mut delivered: HashMap<u64, u32> = HashMap::new();
    store.mark_delivered(1, &t.q1[..20]).unwrap();
    let lsn = store.mark_delivered(1, &t.q1[5..10]).unwrap();
    for (i, &id) in t.q1[..20].iter().enumerate() {
        delivered.insert(id, if (5..10).contains(&i) { 2 } else { 1 });
    }
    store.wait_durable_blocking(lsn).unwrap();
    check_backlog_live(&store, &t.q1, &t.bodies, &t.q2);
    store.crash_for_test();

    // 1. Full replay of the log (no checkpoint was ever written).
    assert!(!dir.path().join("checkpoint").exists());
    let (store, rec) = Store::open(cfg.clone()).unwrap();
    assert!(!rec.from_checkpoint);
    assert_eq!(rec.replayed_records, 600 + 4);
    check_backlog(&store, &rec, &t.q1, &t.bodies, &delivered, &t.q2);
    // Ids go on after the largest one, even though it belonged to the settled queue.
    assert_eq!(*t.q2.last().unwrap(), 600);
    assert_eq!(t.publish(&store, 600), 601);
    store.close().unwrap();

    // 2. From the checkpoint written at close.
    let (store, rec) = Store::open(cfg.clone()).unwrap();
    assert!(rec.from_checkpoint);
    assert_eq!(rec.replayed_records, 0);
    check_backlog(&store, &rec, &t.q1, &t.bodies, &delivered, &t.q2);

    // 3. More interleaved traffic after the checkpoint, then a crash: checkpoint + tail.
    let before = t.q2.len();
    for n in 601..700u64 {
        t.publish(&store, n);
    }
    let lsn = store.ack(2, &t.q2[before..]).unwrap();
    store.wait_durable_blocking(lsn).unwrap();
    store.crash_for_test();
    let (store, rec) = Store::open(cfg.clone()).unwrap();
    assert!(rec.from_checkpoint);
    assert!(rec.replayed_records > 0);
    check_backlog(&store, &rec, &t.q1, &t.bodies, &delivered, &t.q2);

    // 4. Compaction moves the backlog out of its half-dead segments; reads by id still work,
    // and so do restarts from the checkpoint and from checkpoint + tail.
    assert!(compact_fully(&store, &t.live()) > 0);
    check_backlog_live(&store, &t.q1, &t.bodies, &t.q2);
    store.close().unwrap();
    let (store, rec) = Store::open(cfg.clone()).unwrap();
    assert!(rec.from_checkpoint);
    check_backlog(&store, &rec, &t.q1, &t.bodies, &delivered, &t.q2);
    let before = t.q2.len();
    for n in 700..760u64 {
        t.publish(&store, n);
    }
    let lsn = store.ack(2, &t.q2[before..]).unwrap();
    store.wait_durable_blocking(lsn).unwrap();
    store.crash_for_test();
    let (store, rec) = Store::open(cfg).unwrap();
    check_backlog(&store, &rec, &t.q1, &t.bodies, &delivered, &t.q2);
    store.close().unwrap();
}

/// The running store reads every backlog body by id, and no settled one.
fn check_backlog_live(store: &Store, q1: &[u64], bodies: &HashMap<u64, Bytes>, settled: &[u64]) {
    for id in q1 {
        assert_eq!(store.read(*id).unwrap(), bodies[id], "message {id}");
    }
    for &id in settled {
        assert_not_found(store, id);
    }
}

#[test]
fn page_cache_mode_round_trips_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.sync = SyncMode::PageCache;
    let (store, _) = Store::open(cfg.clone()).unwrap();
    let mut last = 0;
    let mut id = Vec::new();
    for n in 1..=500u64 {
        let p = store.publish(&[3], body(n)).unwrap();
        id.push(p.msg_id);
        last = p.lsn;
    }
    block_on(store.wait_durable(last)).unwrap();
    let s = store.stats();
    assert_eq!(s.fsyncs, 0, "page-cache mode must not fsync appends");
    store.ack(3, &[id[0]]).unwrap();
    store.crash_for_test();
    let (store, rec) = Store::open(cfg).unwrap();
    // The process "crashed", not the machine: everything written is there.
    assert_eq!(ids(&rec, 3), id[1..].to_vec());
    let bodies: HashMap<u64, Bytes> = id.iter().zip(1u64..).map(|(&i, n)| (i, body(n))).collect();
    assert_bodies(&store, &rec, &bodies);
    store.close().unwrap();
}

#[test]
fn group_commit_uses_far_fewer_fsyncs_than_records() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let threads = 16u64;
    let per_thread = 200u64;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                for i in 0..per_thread {
                    let p = store.publish(&[t], body(t * per_thread + i)).unwrap();
                    // Each publisher waits for its confirm, as an AMQP client would.
                    store.wait_durable_blocking(p.lsn).unwrap();
                    got.push((p.msg_id, t * per_thread + i));
                }
                got
            })
        })
        .collect();
    let mut per_queue = HashMap::new();
    let mut bodies = HashMap::new();
    for (t, h) in handles.into_iter().enumerate() {
        let got = h.join().unwrap();
        // One publisher's messages get increasing ids.
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
        for &(id, seed) in &got {
            assert!(
                bodies.insert(id, body(seed)).is_none(),
                "id {id} given twice"
            );
        }
        per_queue.insert(t as u64, got.iter().map(|g| g.0).collect::<Vec<u64>>());
    }
    // Concurrent publishers share one sequence: 1..=n, no gaps.
    let mut all: Vec<u64> = bodies.keys().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=threads * per_thread).collect::<Vec<_>>());
    let s = store.stats();
    assert_eq!(s.records, threads * per_thread);
    eprintln!(
        "group commit: {} records, {} fsyncs, {:.3} fsyncs/record",
        s.records,
        s.fsyncs,
        s.fsyncs as f64 / s.records as f64
    );
    assert!(
        s.fsyncs * 3 <= s.records,
        "{} fsyncs for {} records",
        s.fsyncs,
        s.records
    );
    store.close().unwrap();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert_eq!(
        rec.queues.values().map(|q| q.len()).sum::<usize>() as u64,
        threads * per_thread
    );
    for (q, want) in &per_queue {
        assert_eq!(&ids(&rec, *q), want);
    }
    assert_bodies(&store, &rec, &bodies);
    store.close().unwrap();
}

#[test]
fn back_pressure_blocks_but_completes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_queued_bytes = 4096;
    let (store, _) = Store::open(cfg).unwrap();
    let store = Arc::new(store);
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || {
                let payload = Bytes::from(vec![t as u8; 3000]);
                let mut last = 0;
                let mut got = Vec::new();
                for _ in 0..100u64 {
                    let p = store.publish(&[t], payload.clone()).unwrap();
                    last = p.lsn;
                    got.push(p.msg_id);
                }
                store.wait_durable_blocking(last).unwrap();
                for &id in &got {
                    assert_eq!(store.read(id).unwrap(), payload);
                }
                got
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for h in handles {
        for id in h.join().unwrap() {
            assert!(seen.insert(id), "id {id} given twice");
        }
    }
    assert_eq!(seen.len(), 400);
    assert_eq!(store.stats().records, 400);
}

#[test]
fn waiters_get_closed_when_the_store_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let lsn = store.publish(&[1], body(1)).unwrap().lsn;
    let fut = store.wait_durable(lsn + 1000);
    let s2 = store.clone();
    store.close().unwrap();
    assert!(matches!(block_on(fut), Err(StoreError::Closed)));
    assert!(block_on(s2.wait_durable(lsn)).is_ok());
    assert!(matches!(s2.checkpoint(), Err(StoreError::Closed)));
}

#[test]
fn periodic_checkpoints_happen_without_being_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.checkpoint_interval = std::time::Duration::from_millis(50);
    let (store, _) = Store::open(cfg.clone()).unwrap();
    for n in 1..=10u64 {
        assert_eq!(store.publish(&[1], body(n)).unwrap().msg_id, n);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while store.stats().checkpoints == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint written"
        );
        thread::sleep(std::time::Duration::from_millis(10));
    }
    store.crash_for_test();
    let (store, rec) = Store::open(cfg).unwrap();
    assert!(rec.from_checkpoint);
    assert_eq!(ids(&rec, 1), (1..=10).collect::<Vec<_>>());
    assert_bodies(&store, &rec, &bodies_of(1..=10));
    store.close().unwrap();
}

#[test]
fn corrupt_checkpoint_falls_back_to_full_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    for n in 1..=10u64 {
        assert_eq!(store.publish(&[1], body(n)).unwrap().msg_id, n);
    }
    store.ack(1, &[2]).unwrap();
    store.close().unwrap();
    let cp = dir.path().join("checkpoint");
    let mut data = fs::read(&cp).unwrap();
    let n = data.len();
    data[n - 1] ^= 0xff;
    fs::write(&cp, &data).unwrap();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert!(!rec.from_checkpoint);
    assert_eq!(ids(&rec, 1), vec![1, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert_bodies(&store, &rec, &bodies_of(1..=10));
    assert_not_found(&store, 2);
    assert_eq!(store.publish(&[1], body(11)).unwrap().msg_id, 11);
    store.close().unwrap();
}

#[test]
fn a_record_larger_than_a_segment_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_size = 4096;
    let (store, _) = Store::open(cfg.clone()).unwrap();
    let big = Bytes::from((0..20_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    let a = store.publish(&[1], body(1)).unwrap();
    let b = store.publish(&[1], big.clone()).unwrap();
    let c = store.publish(&[1], body(3)).unwrap();
    store.wait_durable_blocking(c.lsn).unwrap();
    // Segments are named by their first LSN: each record starts one.
    assert_eq!((a.lsn, b.lsn, c.lsn), (1, 2, 3));
    let names: Vec<String> = segment_files(dir.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "seg-00000000000000000001.log",
            "seg-00000000000000000002.log",
            "seg-00000000000000000003.log"
        ]
    );
    assert_eq!(store.read(b.msg_id).unwrap(), big);
    store.crash_for_test();
    let (store, rec) = Store::open(cfg).unwrap();
    assert_eq!(ids(&rec, 1), vec![a.msg_id, b.msg_id, c.msg_id]);
    assert_eq!(store.read(b.msg_id).unwrap(), big);
    assert_eq!(store.read(a.msg_id).unwrap(), body(1));
    assert_eq!(store.read(c.msg_id).unwrap(), body(3));
    store.close().unwrap();
}

#[test]
fn the_byte_trigger_checkpoints_a_busy_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.checkpoint_bytes = 64 << 10;
    let (store, _) = Store::open(cfg.clone()).unwrap();
    let payload = Bytes::from(vec![3u8; 1000]);
    for n in 1..=300u64 {
        let p = store.publish(&[1], payload.clone()).unwrap();
        assert_eq!(p.msg_id, n);
        if n % 30 == 0 {
            store.wait_durable_blocking(p.lsn).unwrap();
        }
    }
    // Checkpoints are written by another thread: give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while store.stats().checkpoints < 2 {
        assert!(std::time::Instant::now() < deadline, "{:?}", store.stats());
        thread::sleep(std::time::Duration::from_millis(5));
    }
    store.crash_for_test();
    let (store, rec) = Store::open(cfg).unwrap();
    assert!(rec.from_checkpoint);
    assert!(rec.replayed_records < 300, "{}", rec.replayed_records);
    assert_eq!(ids(&rec, 1), (1..=300).collect::<Vec<_>>());
    assert_eq!(store.read(1).unwrap(), payload);
    assert_eq!(store.read(300).unwrap(), payload);
    store.close().unwrap();
}

#[test]
fn background_compaction_is_transparent_to_readers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_size = 4096;
    cfg.compact_interval = Some(std::time::Duration::from_millis(20));
    let (store, _) = Store::open(cfg.clone()).unwrap();
    let mut live = HashMap::new();
    let mut dead = Vec::new();
    let mut last = 0;
    for n in 0..400u64 {
        let p = store.publish(&[1], body(n)).unwrap();
        last = p.lsn;
        if n % 10 == 0 {
            live.insert(p.msg_id, body(n));
        } else {
            dead.push(p.msg_id);
        }
    }
    store.ack(1, &dead).unwrap();
    store.wait_durable_blocking(last).unwrap();
    let segs_before = segment_files(dir.path()).len();
    // Readers keep reading by id while the compactor moves bodies under them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while segment_files(dir.path()).len() * 2 > segs_before {
        assert!(
            std::time::Instant::now() < deadline,
            "no background compaction"
        );
        assert_reads(&store, &live, &[]);
        thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_reads(&store, &live, &dead);
    store.close().unwrap();
    let (store, rec) = Store::open(cfg.clone()).unwrap();
    let mut want: Vec<u64> = live.keys().copied().collect();
    want.sort_unstable();
    assert_eq!(ids(&rec, 1), want);
    assert_bodies(&store, &rec, &live);
    // Dropping the last handle without close stops the compactor too.
    drop(store);
    let (store, rec) = Store::open(cfg).unwrap();
    assert_eq!(ids(&rec, 1), want);
    store.close().unwrap();
}

#[test]
fn reading_many_gives_what_reading_one_by_one_gives() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // Several segments, so that one batch spans them.
    cfg.segment_size = 64 << 10;
    let (store, _) = Store::open(cfg).unwrap();
    let mut ids = Vec::new();
    let mut last = 0;
    for n in 0..600u64 {
        // Bodies of varied sizes, some far apart (a big one between), acks interleaved.
        let b = if n % 97 == 0 {
            Bytes::from(vec![n as u8; 20_000])
        } else {
            body(n)
        };
        let p = store.publish(&[1], b).unwrap();
        ids.push(p.msg_id);
        if n % 10 == 9 {
            store.ack(1, &[ids[ids.len() - 5]]).unwrap();
        }
        last = p.lsn;
    }
    store.wait_durable_blocking(last).unwrap();
    // A damaged body: refused in the batch as on its own, the others unharmed.
    let victim = Bytes::from_static(b"a body to damage");
    let v = store.publish(&[1], victim.clone()).unwrap();
    store.wait_durable_blocking(v.lsn).unwrap();
    let seg = segment_files(dir.path()).pop().unwrap();
    let data = fs::read(&seg).unwrap();
    let at = data
        .windows(victim.len())
        .position(|w| w == &victim[..])
        .unwrap() as u64;
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"X", at).unwrap();
    ids.push(v.msg_id);
    // Out of order, with repeats and ids that are not live (acked, never published).
    let mut asked: Vec<u64> = ids.iter().rev().copied().collect();
    asked.extend([ids[3], ids[3], 0, u64::MAX, ids[4]]);
    let many = store.read_many(&asked);
    assert_eq!(many.len(), asked.len());
    for (id, got) in asked.iter().zip(many) {
        match (store.read(*id), got) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "message {id}"),
            (Err(StoreError::NotFound { .. }), Err(StoreError::NotFound { .. })) => {}
            (Err(StoreError::Corrupt { .. }), Err(StoreError::Corrupt { .. })) => {
                assert_eq!(*id, v.msg_id)
            }
            (a, b) => panic!("message {id}: one by one {a:?}, in a batch {b:?}"),
        }
    }
    store.close().unwrap();
}

#[test]
fn page_out_copies_are_written_without_an_fsync_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let synced = store.stats().fsyncs;
    let mut last = 0;
    for n in 0..200u64 {
        last = store.publish_volatile(&[9], body(n)).unwrap().lsn;
    }
    // Reported durable once written (nobody waits for them), readable, and no fsync ran.
    store.wait_durable_blocking(last).unwrap();
    assert_eq!(store.stats().fsyncs, synced);
    assert_eq!(store.read(200).unwrap(), body(199));
    // A message someone waits for is synced, and its fsync covers the copies before it.
    let p = store.publish(&[1], body(1000)).unwrap();
    store.wait_durable_blocking(p.lsn).unwrap();
    assert!(store.stats().fsyncs > synced);
    // A checkpoint never covers log that is not on disk: after more copies, it syncs first.
    for n in 0..10u64 {
        store.publish_volatile(&[9], body(n)).unwrap();
    }
    let before = store.stats().fsyncs;
    store.checkpoint().unwrap();
    assert!(store.stats().fsyncs > before);
    store.close().unwrap();
}

/// A body the writer assembles from pieces, as the broker's messages are.
struct Pieces {
    head: Vec<u8>,
    tail: Bytes,
}

impl warren_store::Payload for Pieces {
    fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }
    fn write_head(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.head);
    }
    fn tail(&self) -> &[u8] {
        &self.tail
    }
}

#[test]
fn payload_bodies_are_stored_as_their_head_then_their_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let mut expect = Vec::new();
    let mut last = 0;
    // Tails below and above the size the writer copies (16 KiB) and the size above which the
    // frame CRC is combined rather than recomputed (4 KiB); empty heads and tails too.
    for (n, (head_len, tail_len)) in [(3, 10), (0, 5), (7, 0), (200, 5000), (5, 70_000), (0, 0)]
        .into_iter()
        .enumerate()
    {
        let head: Vec<u8> = (0..head_len).map(|i| (i * 7 + n) as u8).collect();
        let tail = Bytes::from(
            (0..tail_len)
                .map(|i| (i * 13 + n) as u8)
                .collect::<Vec<u8>>(),
        );
        let whole: Vec<u8> = head.iter().chain(tail.iter()).copied().collect();
        let payload: Arc<dyn warren_store::Payload> = Arc::new(Pieces { head, tail });
        let p = store.publish(&[1, 2], payload).unwrap();
        // Plain bytes in between, so that both kinds share batches.
        let plain = body(n as u64);
        let q = store.publish(&[1], plain.clone()).unwrap();
        expect.push((p.msg_id, Bytes::from(whole)));
        expect.push((q.msg_id, plain));
        last = q.lsn;
    }
    store.wait_durable_blocking(last).unwrap();
    for (id, b) in &expect {
        assert_eq!(&store.read(*id).unwrap(), b, "message {id}");
    }
    store.close().unwrap();
    // Recovery replays the records and checks every CRC the writer computed.
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert!(rec.truncated.is_none());
    for (id, b) in &expect {
        assert_eq!(&store.read(*id).unwrap(), b, "message {id} after a restart");
    }
}

#[test]
fn a_segment_from_a_newer_format_is_refused_not_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let seg = log_with(dir.path(), 3);
    let mut data = fs::read(&seg).unwrap();
    // Version 99, with a valid header CRC: a file a newer Warren wrote.
    data[8..12].copy_from_slice(&99u32.to_le_bytes());
    let crc = crc32c::crc32c(&data[0..20]);
    data[20..24].copy_from_slice(&crc.to_le_bytes());
    fs::write(&seg, &data).unwrap();
    match Store::open(config(dir.path())) {
        Err(StoreError::Incompatible { version: 99, .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a newer segment was opened"),
    }
    // Nothing was cut or deleted.
    assert_eq!(fs::read(&seg).unwrap(), data);
}
