mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::sync::Arc;
use std::thread;

use bytes::Bytes;
use common::{block_on, body, config, flatten, ids, segment_files};
use warren_store::{Store, StoreError, SyncMode};

#[test]
fn handles_are_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Store>();
    send_sync::<warren_store::MetaStore>();
    send::<warren_store::WaitDurable>();
}

#[test]
fn published_body_reads_back_after_durability() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert!(rec.queues.is_empty());
    assert_eq!(rec.next_msg_id, 1);
    let mut locs = Vec::new();
    let mut last = 0;
    for id in 1..=100u64 {
        let (lsn, loc) = store.publish(id, &[1], body(id)).unwrap();
        assert!(lsn > last);
        last = lsn;
        locs.push((id, loc));
    }
    block_on(store.wait_durable(last)).unwrap();
    assert!(store.durable_lsn() >= last);
    for (id, loc) in &locs {
        assert_eq!(store.read(loc).unwrap(), body(*id));
        assert_eq!(loc.len as usize, body(*id).len());
    }
    // A large body goes through the vectored-write path.
    let big = Bytes::from(vec![0xab; 300_000]);
    let (lsn, loc) = store.publish(1000, &[1, 2], big.clone()).unwrap();
    store.wait_durable_blocking(lsn).unwrap();
    assert_eq!(store.read(&loc).unwrap(), big);
    store.close().unwrap();
}

#[test]
fn a_damaged_body_is_refused_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let (_, a) = store.publish(1, &[1], body(1)).unwrap();
    let (lsn, b) = store
        .publish(2, &[1], Bytes::from_static(b"hello world"))
        .unwrap();
    store.wait_durable_blocking(lsn).unwrap();
    let seg = segment_files(dir.path()).pop().unwrap();
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"J", b.offset).unwrap();
    assert_eq!(store.read(&a).unwrap(), body(1));
    assert!(matches!(store.read(&b), Err(StoreError::Corrupt { .. })));
    store.close().unwrap();
}

#[test]
fn close_then_reopen_recovers_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let mut locs = std::collections::HashMap::new();
    for id in 1..=50u64 {
        let (_, loc) = store.publish(id, &[7, 8], body(id)).unwrap();
        locs.insert(id, loc);
    }
    store.ack(7, &[1, 2, 3]).unwrap();
    store.ack(8, &[1, 2]).unwrap();
    store.mark_delivered(8, &[3, 4]).unwrap();
    store.mark_delivered(8, &[4]).unwrap();
    store.close().unwrap();

    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert!(rec.from_checkpoint);
    assert_eq!(rec.replayed_records, 0);
    assert!(rec.truncated.is_none());
    assert_eq!(rec.next_msg_id, 51);
    assert_eq!(ids(&rec, 7), (4..=50).collect::<Vec<_>>());
    assert_eq!(ids(&rec, 8), (3..=50).collect::<Vec<_>>());
    let q8 = &rec.queues[&8];
    assert!(q8[0].delivered && q8[0].delivery_count == 1); // msg 3
    assert_eq!(q8[1].delivery_count, 2); // msg 4
    assert!(!q8[2].delivered);
    assert!(rec.queues[&7].iter().all(|m| !m.delivered));
    for m in &rec.queues[&8] {
        assert_eq!(m.location, locs[&m.msg_id]);
        assert_eq!(store.read(&m.location).unwrap(), body(m.msg_id));
    }
    store.close().unwrap();
}

#[test]
fn crash_without_checkpoint_replays_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    for id in 1..=30u64 {
        store.publish(id, &[1], body(id)).unwrap();
    }
    store.ack(1, &[5, 6]).unwrap();
    let lsn = store.mark_delivered(1, &[7]).unwrap();
    store.wait_durable_blocking(lsn).unwrap();
    let after_crash = store.clone();
    store.crash_for_test();
    assert!(matches!(
        after_crash.publish(99, &[1], body(99)),
        Err(StoreError::Closed)
    ));
    drop(after_crash);

    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert!(!rec.from_checkpoint);
    assert_eq!(rec.replayed_records, 32);
    let expected: Vec<u64> = (1..=30).filter(|i| *i != 5 && *i != 6).collect();
    assert_eq!(ids(&rec, 1), expected);
    let m7 = rec.queues[&1].iter().find(|m| m.msg_id == 7).unwrap();
    assert!(m7.delivered);
    for m in &rec.queues[&1] {
        assert_eq!(store.read(&m.location).unwrap(), body(m.msg_id));
    }
    // Appends continue after the recovered tail.
    let (lsn, loc) = store.publish(31, &[1], body(31)).unwrap();
    store.wait_durable_blocking(lsn).unwrap();
    assert_eq!(store.read(&loc).unwrap(), body(31));
    store.crash_for_test();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert_eq!(ids(&rec, 1).last(), Some(&31));
    store.close().unwrap();
}

#[test]
fn fanout_message_lives_until_settled_for_every_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    store.publish(1, &[10, 11, 12], body(1)).unwrap();
    store.publish(2, &[10], body(2)).unwrap();
    store.ack(10, &[1, 2]).unwrap();
    store.ack(11, &[1]).unwrap();
    store.ack(11, &[1]).unwrap(); // duplicate ack: no effect
    store.ack(99, &[1]).unwrap(); // queue it was never stored for: no effect
    store.crash_for_test();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert_eq!(flatten(&rec), vec![(12, 1, 0)]);
    assert_eq!(store.stats().live_messages, 1);
    store.ack(12, &[1]).unwrap();
    store.close().unwrap();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert!(rec.queues.is_empty());
    assert_eq!(rec.next_msg_id, 3);
    store.close().unwrap();
}

#[test]
fn drop_queue_settles_only_that_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    for id in 1..=20u64 {
        let queues: &[u64] = if id % 2 == 0 { &[1, 2] } else { &[1] };
        store.publish(id, queues, body(id)).unwrap();
    }
    store.drop_queue(1).unwrap();
    store.drop_queue(3).unwrap(); // unknown queue
    store.publish(21, &[1], body(21)).unwrap();
    store.crash_for_test();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert_eq!(ids(&rec, 1), vec![21]);
    assert_eq!(ids(&rec, 2), (2..=20).step_by(2).collect::<Vec<_>>());
    store.close().unwrap();
}

#[test]
fn invalid_arguments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    assert!(matches!(
        store.publish(1, &[], body(1)),
        Err(StoreError::Invalid(_))
    ));
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
    store.publish(1, &[1], body(1)).unwrap();
    store.close().unwrap();
    assert!(matches!(
        lingering.publish(2, &[1], body(2)),
        Err(StoreError::Closed)
    ));
    let (again, rec) = Store::open(config(dir.path())).unwrap();
    assert_eq!(ids(&rec, 1), vec![1]);
    again.close().unwrap();
    drop(lingering);
}

/// Publishes 1..=n to queue 1, crashes (no checkpoint), and returns the last segment file.
fn log_with(dir: &std::path::Path, n: u64) -> std::path::PathBuf {
    let (store, _) = Store::open(config(dir)).unwrap();
    let mut last = 0;
    for id in 1..=n {
        last = store.publish(id, &[1], body(id)).unwrap().0;
    }
    store.wait_durable_blocking(last).unwrap();
    store.crash_for_test();
    segment_files(dir).pop().unwrap()
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
    let t = rec.truncated.expect("truncation reported");
    assert!(t.reason.contains("torn"), "{}", t.reason);
    assert!(t.segments_deleted.is_empty());
    assert_eq!(t.bytes_discarded, len - 5 - t.offset);
    assert_eq!(fs::metadata(&seg).unwrap().len(), t.offset);
    // The store keeps working after the cut, and the next restart is clean.
    let (lsn, _) = store.publish(11, &[1], body(11)).unwrap();
    store.wait_durable_blocking(lsn).unwrap();
    store.close().unwrap();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert!(rec.truncated.is_none());
    let mut want: Vec<u64> = (1..=9).collect();
    want.push(11);
    assert_eq!(ids(&rec, 1), want);
    for m in &rec.queues[&1] {
        assert_eq!(store.read(&m.location).unwrap(), body(m.msg_id));
    }
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
    let t = rec.truncated.unwrap();
    assert_eq!(t.offset, len);
    assert_eq!(t.bytes_discarded, 37);
    assert_eq!(fs::metadata(&seg).unwrap().len(), len);
    store.close().unwrap();
}

#[test]
fn zero_filled_tail_is_truncated() {
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
    assert_eq!(rec.truncated.unwrap().offset, len);
    store.close().unwrap();
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
    let t = rec.truncated.unwrap();
    assert!(t.reason.contains("CRC"), "{}", t.reason);
    store.close().unwrap();
}

#[test]
fn damage_in_an_earlier_segment_deletes_the_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_size = 512;
    let (store, _) = Store::open(cfg.clone()).unwrap();
    let mut last = 0;
    for id in 1..=60u64 {
        last = store.publish(id, &[1], body(id)).unwrap().0;
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
    assert_eq!(survivors, (1..=survivors.len() as u64).collect::<Vec<_>>());
    assert_eq!(segment_files(dir.path()).len(), 2);
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
    assert_eq!(rec.truncated.unwrap().offset, 0);
    assert!(!next.exists());
    let (lsn, loc) = store.publish(6, &[1], body(6)).unwrap();
    store.wait_durable_blocking(lsn).unwrap();
    assert_eq!(store.read(&loc).unwrap(), body(6));
    store.close().unwrap();
}

#[test]
fn dead_segments_are_deleted_after_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_size = 1024;
    let (store, _) = Store::open(cfg.clone()).unwrap();
    let mut last = 0;
    for id in 1..=200u64 {
        last = store.publish(id, &[1], body(id)).unwrap().0;
    }
    store.wait_durable_blocking(last).unwrap();
    let segs_before = segment_files(dir.path()).len();
    assert!(segs_before > 10);
    // Settle all but the last message: every segment but the last holds only dead records.
    store.ack(1, &(1..200).collect::<Vec<_>>()).unwrap();
    store.checkpoint().unwrap();
    let segs_after = segment_files(dir.path()).len();
    assert!(
        segs_after <= 2,
        "{segs_after} segments left of {segs_before}"
    );
    assert!(store.stats().segments_deleted as usize >= segs_before - 2);
    store.close().unwrap();
    let (store, rec) = Store::open(cfg).unwrap();
    assert_eq!(ids(&rec, 1), vec![200]);
    let m = rec.queues[&1][0];
    assert_eq!(store.read(&m.location).unwrap(), body(200));
    store.close().unwrap();
}

#[test]
fn compaction_moves_live_messages_and_frees_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_size = 4096;
    let (store, _) = Store::open(cfg.clone()).unwrap();
    let mut locs = std::collections::HashMap::new();
    for id in 1..=400u64 {
        let (_, loc) = store.publish(id, &[1, 2], body(id)).unwrap();
        locs.insert(id, loc);
    }
    // Keep one message in ten, delivered once from queue 2.
    let keep: Vec<u64> = (1..=400).filter(|i| i % 10 == 0).collect();
    let gone: Vec<u64> = (1..=400).filter(|i| i % 10 != 0).collect();
    store.ack(1, &gone).unwrap();
    store.ack(2, &gone).unwrap();
    let lsn = store.mark_delivered(2, &keep).unwrap();
    store.wait_durable_blocking(lsn).unwrap();
    let segs_before = segment_files(dir.path()).len();

    let moved = store.compact().unwrap();
    assert!(!moved.is_empty());
    for r in &moved {
        assert_eq!(locs[&r.msg_id], r.old);
        assert_ne!(r.old.segment, r.new.segment);
        assert_eq!(store.read(&r.new).unwrap(), body(r.msg_id));
        locs.insert(r.msg_id, r.new);
    }
    let segs_after = segment_files(dir.path()).len();
    assert!(
        segs_after < segs_before,
        "{segs_after} segments after compaction, {segs_before} before"
    );
    // The segment that was active during the first pass may now qualify too; passes converge.
    let mut rounds = 0;
    loop {
        let more = store.compact().unwrap();
        if more.is_empty() {
            break;
        }
        for r in &more {
            assert_eq!(locs[&r.msg_id], r.old);
            locs.insert(r.msg_id, r.new);
        }
        rounds += 1;
        assert!(rounds < 5, "compaction does not converge");
    }
    store.close().unwrap();

    let (store, rec) = Store::open(cfg).unwrap();
    assert_eq!(ids(&rec, 1), keep);
    assert_eq!(ids(&rec, 2), keep);
    for m in &rec.queues[&2] {
        assert_eq!(m.location, locs[&m.msg_id]);
        assert_eq!(m.delivery_count, 1);
        assert_eq!(store.read(&m.location).unwrap(), body(m.msg_id));
    }
    store.close().unwrap();
}

#[test]
fn compaction_copies_survive_a_crash_before_the_checkpoint() {
    // Relocate records replayed from the log (no checkpoint after them) give the same state.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_size = 2048;
    let (store, _) = Store::open(cfg.clone()).unwrap();
    for id in 1..=200u64 {
        store.publish(id, &[1], body(id)).unwrap();
    }
    let gone: Vec<u64> = (1..=200).filter(|i| i % 7 != 0).collect();
    store.ack(1, &gone).unwrap();
    let moved = store.compact().unwrap();
    assert!(!moved.is_empty());
    // Settle a relocated message after the move, then crash: the log tail holds both.
    let victim = moved[0].msg_id;
    let lsn = store.ack(1, &[victim]).unwrap();
    store.wait_durable_blocking(lsn).unwrap();
    store.crash_for_test();
    let (store, rec) = Store::open(cfg).unwrap();
    let want: Vec<u64> = (1..=200).filter(|i| i % 7 == 0 && *i != victim).collect();
    assert_eq!(ids(&rec, 1), want);
    for m in &rec.queues[&1] {
        assert_eq!(store.read(&m.location).unwrap(), body(m.msg_id));
    }
    store.close().unwrap();
}

#[test]
fn page_cache_mode_round_trips_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.sync = SyncMode::PageCache;
    let (store, _) = Store::open(cfg.clone()).unwrap();
    let mut last = 0;
    for id in 1..=500u64 {
        last = store.publish(id, &[3], body(id)).unwrap().0;
    }
    block_on(store.wait_durable(last)).unwrap();
    let s = store.stats();
    assert_eq!(s.fsyncs, 0, "page-cache mode must not fsync appends");
    store.ack(3, &[1]).unwrap();
    store.crash_for_test();
    let (store, rec) = Store::open(cfg).unwrap();
    // The process "crashed", not the machine: everything written is there.
    assert_eq!(ids(&rec, 3), (2..=500).collect::<Vec<_>>());
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
                for i in 0..per_thread {
                    let id = t * per_thread + i + 1;
                    let (lsn, _) = store.publish(id, &[t], body(id)).unwrap();
                    // Each publisher waits for its confirm, as an AMQP client would.
                    store.wait_durable_blocking(lsn).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
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
        rec.queues.values().map(Vec::len).sum::<usize>() as u64,
        threads * per_thread
    );
    store.close().unwrap();
}

#[test]
fn back_pressure_blocks_but_completes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_queued_bytes = 4096;
    let (store, _) = Store::open(cfg).unwrap();
    let store = Arc::new(store);
    let payload = Bytes::from(vec![1u8; 3000]);
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let store = store.clone();
            let payload = payload.clone();
            thread::spawn(move || {
                let mut last = 0;
                for i in 0..100u64 {
                    last = store
                        .publish(t * 1000 + i, &[t], payload.clone())
                        .unwrap()
                        .0;
                }
                store.wait_durable_blocking(last).unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(store.stats().records, 400);
}

#[test]
fn waiters_get_closed_when_the_store_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let (lsn, _) = store.publish(1, &[1], body(1)).unwrap();
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
    for id in 1..=10u64 {
        store.publish(id, &[1], body(id)).unwrap();
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
    store.close().unwrap();
}

#[test]
fn corrupt_checkpoint_falls_back_to_full_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    for id in 1..=10u64 {
        store.publish(id, &[1], body(id)).unwrap();
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
    store.close().unwrap();
}

#[test]
fn a_record_larger_than_a_segment_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_size = 4096;
    let (store, _) = Store::open(cfg.clone()).unwrap();
    let big = Bytes::from((0..20_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    let (_, a) = store.publish(1, &[1], body(1)).unwrap();
    let (_, b) = store.publish(2, &[1], big.clone()).unwrap();
    let (lsn, c) = store.publish(3, &[1], body(3)).unwrap();
    store.wait_durable_blocking(lsn).unwrap();
    assert_eq!((a.segment, b.segment, c.segment), (1, 2, 3));
    assert_eq!(segment_files(dir.path()).len(), 3);
    store.crash_for_test();
    let (store, rec) = Store::open(cfg).unwrap();
    assert_eq!(ids(&rec, 1), vec![1, 2, 3]);
    assert_eq!(store.read(&rec.queues[&1][1].location).unwrap(), big);
    store.close().unwrap();
}

#[test]
fn the_byte_trigger_checkpoints_a_busy_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.checkpoint_bytes = 64 << 10;
    let (store, _) = Store::open(cfg.clone()).unwrap();
    let payload = Bytes::from(vec![3u8; 1000]);
    for id in 1..=300u64 {
        let last = store.publish(id, &[1], payload.clone()).unwrap().0;
        if id % 30 == 0 {
            store.wait_durable_blocking(last).unwrap();
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
    assert_eq!(ids(&rec, 1).len(), 300);
    store.close().unwrap();
}
