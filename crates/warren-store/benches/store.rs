//! Micro-benchmarks of the store's CPU cost: appends and reads in page-cache mode (no fsync, so
//! the disk does not dominate), and recovery. See `docs/microbenchmarks.md`;
//! `bench/instructions.sh` counts their instructions (the writer and checkpoint threads'
//! included: callgrind counts every thread).

#[path = "../../../bench/harness.rs"]
mod harness;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use harness::{black_box, Bench};
use tempfile::TempDir;
use warren_store::{Lsn, Store, StoreConfig, SyncMode};

/// Page-cache mode, and no checkpoint unless asked for (close, or right after a recovery that
/// replayed records), so that no timer decides how much work a run does.
fn config(dir: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.sync = SyncMode::PageCache;
    c.checkpoint_interval = Duration::from_secs(24 * 3600);
    c.checkpoint_bytes = u64::MAX;
    c
}

fn open(dir: &Path) -> Store {
    Store::open(config(dir)).expect("open store").0
}

struct Publishing {
    _dir: TempDir,
    store: Store,
    payload: Bytes,
    last: Lsn,
}

fn publishing(size: usize) -> Publishing {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    Publishing {
        store,
        _dir: dir,
        payload: Bytes::from(vec![0x42u8; size]),
        last: 0,
    }
}

/// Waits for the writer to have written everything (its CPU counts), then stops it without a
/// checkpoint, whose cost would grow with the number of messages published.
fn finish_publishing(p: Publishing) {
    if p.last != 0 {
        p.store.wait_durable_blocking(p.last).expect("durable");
    }
    p.store.crash_for_test();
}

/// Writes `messages` 16-byte messages for queue 1 and stops the store, cleanly (a checkpoint
/// covers the log) or as a crash would (recovery replays the whole log).
fn fixture(messages: usize, clean: bool) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let payload = Bytes::from_static(&[0x42u8; 16]);
    let mut last = 0;
    for _ in 0..messages {
        last = store.publish(&[1], payload.clone()).expect("publish").lsn;
    }
    store.wait_durable_blocking(last).expect("durable");
    if clean {
        store.close().expect("close");
    } else {
        store.crash_for_test();
    }
    dir
}

/// A fresh copy of `from` (recovery rewrites the checkpoint, so each run needs its own).
fn copy_dir(from: &Path) -> TempDir {
    let to = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("fixture entry");
        if entry.file_type().expect("file type").is_file() {
            std::fs::copy(entry.path(), to.path().join(entry.file_name())).expect("copy");
        }
    }
    to
}

fn main() {
    let mut b = Bench::from_args("store");

    for (name, size) in [("publish_16b", 16), ("publish_1k", 1024)] {
        b.case_with_finish(
            name,
            200_000,
            || publishing(size),
            |p, _| {
                p.last = p
                    .store
                    .publish(&[1], p.payload.clone())
                    .expect("publish")
                    .lsn;
            },
            finish_publishing,
        );
    }

    // An index lookup, one pread and a CRC check per read, over 1024 messages written
    // beforehand.
    b.case(
        "read_16b",
        200_000,
        || {
            let p = publishing(16);
            let ids: Vec<u64> = (0..1024)
                .map(|_| p.store.publish(&[1], p.payload.clone()).expect("publish"))
                .map(|published| {
                    p.store
                        .wait_durable_blocking(published.lsn)
                        .expect("durable");
                    published.msg_id
                })
                .collect();
            (p, ids)
        },
        |(p, ids), i| {
            let id = ids[i as usize % ids.len()];
            black_box(p.store.read(id).expect("read"));
        },
    );

    // A restart: open (recovery), then stop as a crash would. The copy of the fixture's files
    // is part of each iteration; it is a few syscalls, next to replaying 100k records.
    let messages = b.size(100_000, 1_000);
    for (name, clean) in [
        ("recover_100k_log", false),
        ("recover_100k_checkpoint", true),
    ] {
        b.case(
            name,
            5,
            || fixture(messages, clean),
            |fixture, _| {
                let dir = copy_dir(fixture.path());
                let (store, recovery) = Store::open(config(dir.path())).expect("recover");
                assert_eq!(recovery.queues.get(&1).map(|q| q.len()), Some(messages));
                assert_eq!(recovery.from_checkpoint, clean);
                store.crash_for_test();
            },
        );
    }

    b.done();
}
