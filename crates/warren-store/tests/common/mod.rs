//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Duration;

use bytes::Bytes;
use warren_store::{Recovery, Store, StoreConfig, StoreError};

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives a future on the current thread: proves `WaitDurable` needs no particular executor.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

/// A config with no timed checkpoints, so tests decide when they happen.
pub fn config(dir: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.checkpoint_interval = Duration::from_secs(3600);
    c
}

/// The body stored for `id`: recognisable and of varying length.
pub fn body(id: u64) -> Bytes {
    let len = (id % 97) as usize + 1;
    Bytes::from(
        (0..len)
            .map(|i| (id as u8).wrapping_add(i as u8))
            .collect::<Vec<u8>>(),
    )
}

pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seg-") && n.ends_with(".log"))
        })
        .collect();
    v.sort();
    v
}

/// `(queue, msg_id, delivered)` triples, sorted, for comparisons.
pub fn flatten(r: &Recovery) -> Vec<(u64, u64, u32)> {
    let mut v: Vec<(u64, u64, u32)> = r
        .queues
        .iter()
        .flat_map(|(&q, ms)| ms.iter().map(move |m| (q, m.msg_id, m.delivery_count)))
        .collect();
    v.sort_unstable();
    v
}

/// Ids of a queue in recovered (publish) order.
pub fn ids(r: &Recovery, queue: u64) -> Vec<u64> {
    r.queues
        .get(&queue)
        .map(|v| v.iter().map(|m| m.msg_id).collect())
        .unwrap_or_default()
}

/// Every message `r` reports live reads back by id as `expected[id]` (an id missing from
/// `expected` fails the test: recovery invented it).
pub fn assert_bodies(store: &Store, r: &Recovery, expected: &HashMap<u64, Bytes>) {
    for (&q, ms) in &r.queues {
        for m in ms.iter() {
            let want = expected
                .get(&m.msg_id)
                .unwrap_or_else(|| panic!("queue {q}: unexpected message {}", m.msg_id));
            assert_eq!(
                &store.read(m.msg_id).unwrap(),
                want,
                "queue {q}: body of {}",
                m.msg_id
            );
        }
    }
}

/// `read(msg_id)` says the message is not live.
pub fn assert_not_found(store: &Store, msg_id: u64) {
    match store.read(msg_id) {
        Err(StoreError::NotFound { msg_id: got }) => assert_eq!(got, msg_id),
        other => panic!("read({msg_id}): expected NotFound, got {other:?}"),
    }
}
