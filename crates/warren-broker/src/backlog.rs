//! A queue's ready messages, with a bounded part in memory and the rest in the log.
//!
//! The head of the queue (what will be delivered next) is kept in memory up to a byte budget;
//! past it, messages are "paged": only their log position stays in memory and the body is
//! read back when the head drains. A persistent message on a durable queue is in the log
//! already; any other message is written there when paged (without waiting for fsync, and
//! under a private queue id that recovery discards), so a long backlog costs disk, not RAM.
//!
//! Invariant: every paged message is newer (higher `seq`) than every message in memory, so
//! the queue's order is `ready` then `paged`. Requeued messages are older than anything paged
//! and go back into `ready`.

use std::collections::VecDeque;
use std::sync::Arc;

use tracing::warn;
use warren_store::Location;

use crate::message::Message;
use crate::persistence::{decode_message, encode_message, Persistence};

/// Where a message is in the log, for one queue: settling it means acking this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRef {
    pub queue: u64,
    pub id: u64,
}

/// A message waiting in a queue. `seq` is its position in publish order; a requeued message
/// goes back to where its `seq` says, as RabbitMQ does.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub seq: u64,
    pub message: Arc<Message>,
    pub redelivered: bool,
    /// Set when the message is in the log for this queue.
    pub log: Option<LogRef>,
}

/// A ready message whose body is only in the log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PagedMessage {
    pub seq: u64,
    pub log: LogRef,
    pub location: Location,
    pub redelivered: bool,
}

/// Memory a message in `ready` accounts for: its bytes plus the bookkeeping around them.
fn cost(m: &QueuedMessage) -> usize {
    m.message.size() + 128
}

/// How a backlog pages: through which log, under which private id, within which budget.
pub(crate) struct Pager {
    pub persistence: Arc<Persistence>,
    /// The id transient copies are logged under; never recorded as a queue, so recovery
    /// drops whatever is left under it.
    pub page_queue: u64,
    /// Bytes of ready messages kept in memory before paging starts.
    pub budget: usize,
}

/// Most messages read back from the log in one go (bounds the time the queue lock is held).
const REFILL_BATCH: usize = 1024;

pub(crate) struct Backlog {
    ready: VecDeque<QueuedMessage>,
    paged: VecDeque<PagedMessage>,
    ready_bytes: usize,
    pager: Option<Pager>,
}

impl Backlog {
    pub fn new(pager: Option<Pager>) -> Self {
        Backlog {
            ready: VecDeque::new(),
            paged: VecDeque::new(),
            ready_bytes: 0,
            pager,
        }
    }

    pub fn len(&self) -> usize {
        self.ready.len() + self.paged.len()
    }

    /// Appends a newly published message, paging it if memory is spent.
    pub fn push(&mut self, m: QueuedMessage) {
        let over = self
            .pager
            .as_ref()
            .is_some_and(|p| !self.paged.is_empty() || self.ready_bytes + cost(&m) > p.budget);
        if over {
            match self.page_out(&m) {
                Some(paged) => {
                    self.paged.push_back(paged);
                    return;
                }
                None => {
                    // The log refused the write: keep the message in memory rather than lose
                    // it; the memory alarm is the backstop. Order is kept only if nothing is
                    // paged yet, so a failed page-out behind paged messages waits for them.
                    if !self.paged.is_empty() {
                        warn!("cannot page a message out; it is kept in memory out of order");
                    }
                }
            }
        }
        self.ready_bytes += cost(&m);
        self.ready.push_back(m);
    }

    fn page_out(&self, m: &QueuedMessage) -> Option<PagedMessage> {
        let pager = self.pager.as_ref()?;
        if let Some(log) = m.log {
            // A persistent message of a durable queue is in the log already: keep only where.
            // (Without its position it stays in memory: a page copy would not survive a crash.)
            let location = *m.message.stored_at.get()?;
            return Some(PagedMessage {
                seq: m.seq,
                log,
                location,
                redelivered: m.redelivered,
            });
        }
        let p = &pager.persistence;
        let id = p.next_message_id();
        match p
            .store
            .publish(id, &[pager.page_queue], encode_message(&m.message))
        {
            Ok((_, location)) => Some(PagedMessage {
                seq: m.seq,
                log: LogRef {
                    queue: pager.page_queue,
                    id,
                },
                location,
                redelivered: m.redelivered,
            }),
            Err(e) => {
                warn!(error = %e, "cannot write a message to the log to page it out");
                None
            }
        }
    }

    /// Puts back a message recovered from the log, leaving its body there.
    pub fn restore(&mut self, paged: PagedMessage) {
        self.paged.push_back(paged);
    }

    /// Reads paged messages back while memory allows.
    fn refill(&mut self) {
        let Some(pager) = &self.pager else {
            return;
        };
        let mut n = 0;
        while self.ready_bytes < pager.budget / 2 && n < REFILL_BATCH {
            let Some(pm) = self.paged.pop_front() else {
                break;
            };
            n += 1;
            let p = &pager.persistence;
            let message = match p.store.read(&pm.location) {
                Ok(payload) => decode_message(pm.log.id, payload),
                Err(e) => {
                    warn!(error = %e, "cannot read a paged message back; dropping it");
                    None
                }
            };
            let Some(message) = message else {
                p.settle(pm.log.queue, &[pm.log.id]);
                continue;
            };
            if message.persistent {
                let _ = message.stored_at.set(pm.location);
            }
            let m = QueuedMessage {
                seq: pm.seq,
                message: Arc::new(message),
                redelivered: pm.redelivered,
                log: Some(pm.log),
            };
            self.ready_bytes += cost(&m);
            self.ready.push_back(m);
        }
    }

    /// The next message to deliver (reading from the log if needed).
    pub fn front(&mut self) -> Option<&QueuedMessage> {
        if self.ready.is_empty() {
            self.refill();
        }
        self.ready.front()
    }

    pub fn pop_front(&mut self) -> Option<QueuedMessage> {
        if self.ready.is_empty() {
            self.refill();
        }
        let m = self.ready.pop_front()?;
        self.ready_bytes = self.ready_bytes.saturating_sub(cost(&m));
        if self.paged.front().is_some()
            && self
                .pager
                .as_ref()
                .is_some_and(|p| self.ready_bytes < p.budget / 4)
        {
            self.refill();
        }
        Some(m)
    }

    /// Puts a requeued message back at its original position (by `seq`).
    pub fn requeue(&mut self, m: QueuedMessage) {
        self.ready_bytes += cost(&m);
        let pos = self.ready.partition_point(|r| r.seq < m.seq);
        self.ready.insert(pos, m);
    }

    /// Empties the backlog, returning how many messages it held and their log entries (to be
    /// settled).
    pub fn clear(&mut self) -> (usize, Vec<LogRef>) {
        let n = self.len();
        let mut logs: Vec<LogRef> = self.ready.drain(..).filter_map(|m| m.log).collect();
        logs.extend(self.paged.drain(..).map(|p| p.log));
        self.ready_bytes = 0;
        (n, logs)
    }
}
