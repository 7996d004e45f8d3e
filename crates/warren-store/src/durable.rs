//! The durable position and the ways to wait for it, from async code in any executor (a small
//! future driven by std [`Waker`]s) or from a plain thread (a condvar).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::{Condvar, Mutex};

use crate::error::{Result, StoreError};
use crate::Lsn;

#[derive(Debug, Clone)]
enum End {
    Closed,
    Failed(String),
}

impl End {
    fn error(&self) -> StoreError {
        match self {
            End::Closed => StoreError::Closed,
            End::Failed(m) => StoreError::WriterFailed(m.clone()),
        }
    }
}

#[derive(Default)]
struct Waiters {
    /// Keyed by (lsn, waiter id) so that one `split_off` finds everything that became durable.
    map: BTreeMap<(Lsn, u64), Waker>,
    next_id: u64,
    end: Option<End>,
}

/// Shared between the writer (which advances it) and every waiter.
#[derive(Default)]
pub(crate) struct DurableShared {
    durable: AtomicU64,
    waiters: Mutex<Waiters>,
    cond: Condvar,
}

impl DurableShared {
    pub fn new(durable: Lsn) -> Self {
        let s = DurableShared::default();
        s.durable.store(durable, Ordering::Release);
        s
    }

    pub fn durable(&self) -> Lsn {
        self.durable.load(Ordering::Acquire)
    }

    /// Called by the writer once everything up to `lsn` is durable (or written, in page-cache
    /// mode).
    pub fn advance(&self, lsn: Lsn) {
        let ready = {
            let mut w = self.waiters.lock();
            self.durable.fetch_max(lsn, Ordering::AcqRel);
            let rest = w.map.split_off(&(lsn.saturating_add(1), 0));
            std::mem::replace(&mut w.map, rest)
        };
        self.cond.notify_all();
        for (_, waker) in ready {
            waker.wake();
        }
    }

    /// Ends the store: every waiter for an LSN not yet durable gets `Closed` (or the failure).
    pub fn finish(&self, failure: Option<String>) {
        let all = {
            let mut w = self.waiters.lock();
            if w.end.is_none() {
                w.end = Some(match failure {
                    Some(m) => End::Failed(m),
                    None => End::Closed,
                });
            }
            std::mem::take(&mut w.map)
        };
        self.cond.notify_all();
        for (_, waker) in all {
            waker.wake();
        }
    }

    /// The failure that stopped the writer, if any.
    pub fn failure(&self) -> Option<StoreError> {
        match &self.waiters.lock().end {
            Some(e @ End::Failed(_)) => Some(e.error()),
            _ => None,
        }
    }

    /// Blocks the calling thread until `lsn` is durable.
    pub fn wait_blocking(&self, lsn: Lsn) -> Result<()> {
        let mut w = self.waiters.lock();
        loop {
            if self.durable() >= lsn {
                return Ok(());
            }
            if let Some(end) = &w.end {
                return Err(end.error());
            }
            self.cond.wait(&mut w);
        }
    }
}

/// A future that resolves once an LSN is durable. Works in any executor: it registers the
/// task's [`Waker`] with the store and the writer thread wakes it after the fsync.
#[must_use = "futures do nothing unless polled"]
pub struct WaitDurable {
    shared: Arc<DurableShared>,
    lsn: Lsn,
    key: Option<(Lsn, u64)>,
}

impl WaitDurable {
    pub(crate) fn new(shared: Arc<DurableShared>, lsn: Lsn) -> Self {
        WaitDurable {
            shared,
            lsn,
            key: None,
        }
    }
}

impl Future for WaitDurable {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.shared.durable() >= this.lsn {
            return Poll::Ready(Ok(()));
        }
        let mut w = this.shared.waiters.lock();
        if this.shared.durable() >= this.lsn {
            if let Some(k) = this.key.take() {
                w.map.remove(&k);
            }
            return Poll::Ready(Ok(()));
        }
        if let Some(end) = &w.end {
            return Poll::Ready(Err(end.error()));
        }
        let key = match this.key {
            Some(k) => k,
            None => {
                let k = (this.lsn, w.next_id);
                w.next_id += 1;
                this.key = Some(k);
                k
            }
        };
        match w.map.get_mut(&key) {
            Some(existing) if existing.will_wake(cx.waker()) => {}
            _ => {
                w.map.insert(key, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for WaitDurable {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.shared.waiters.lock().map.remove(&k);
        }
    }
}
