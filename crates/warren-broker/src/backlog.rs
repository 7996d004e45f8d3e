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
//!
//! A priority queue is one [`Backlog`] per priority level ([`Levels`]): each level pages on its
//! own, so the order within a level and the memory bound both hold as they do for one backlog.

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

/// No deadline: the message does not expire.
pub const NEVER: u64 = u64::MAX;

/// A message waiting in a queue. `seq` is its position in publish order; a requeued message
/// goes back to where its `seq` says, as RabbitMQ does.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub seq: u64,
    pub message: Arc<Message>,
    pub redelivered: bool,
    /// Set when the message is in the log for this queue.
    pub log: Option<LogRef>,
    /// When it expires in this queue (ms since the Unix epoch), or [`NEVER`].
    pub expires_at: u64,
    /// How many times it was delivered from this queue and came back (quorum queues'
    /// `x-delivery-count`).
    pub delivery_count: u32,
}

/// A ready message whose body is only in the log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PagedMessage {
    pub seq: u64,
    pub log: LogRef,
    pub location: Location,
    pub redelivered: bool,
    pub expires_at: u64,
    pub delivery_count: u32,
    /// Body bytes (for `x-max-length-bytes`).
    pub body_len: u32,
    /// Recovered after a restart: its own `expiration` is not yet known (it is applied, from
    /// the time it is read back, once the body is in memory).
    pub restored: bool,
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
    counts: Counts,
}

/// What a backlog counts over all its messages, in memory or paged.
#[derive(Default)]
struct Counts {
    /// Messages that have a deadline.
    deadlines: usize,
    /// Body bytes.
    body_bytes: u64,
}

impl Counts {
    fn add(&mut self, expires_at: u64, body_len: u64) {
        self.deadlines += usize::from(expires_at != NEVER);
        self.body_bytes += body_len;
    }

    fn sub(&mut self, expires_at: u64, body_len: u64) {
        self.deadlines -= usize::from(expires_at != NEVER);
        self.body_bytes -= body_len;
    }
}

impl Backlog {
    pub fn new(pager: Option<Pager>) -> Self {
        Backlog {
            ready: VecDeque::new(),
            paged: VecDeque::new(),
            ready_bytes: 0,
            pager,
            counts: Counts::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.ready.len() + self.paged.len()
    }

    /// Appends a newly published message, paging it if memory is spent.
    pub fn push(&mut self, m: QueuedMessage) {
        self.counts.add(m.expires_at, m.message.body.len() as u64);
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
        let (log, location) = match m.log {
            // A persistent message of a durable queue is in the log already: keep only where.
            // (Without its position it stays in memory: a page copy would not survive a crash.)
            Some(log) => (log, *m.message.stored_at.get()?),
            None => {
                let p = &pager.persistence;
                let id = p.next_message_id();
                match p
                    .store
                    .publish(id, &[pager.page_queue], encode_message(&m.message))
                {
                    Ok((_, location)) => (
                        LogRef {
                            queue: pager.page_queue,
                            id,
                        },
                        location,
                    ),
                    Err(e) => {
                        warn!(error = %e, "cannot write a message to the log to page it out");
                        return None;
                    }
                }
            }
        };
        Some(PagedMessage {
            seq: m.seq,
            log,
            location,
            redelivered: m.redelivered,
            expires_at: m.expires_at,
            delivery_count: m.delivery_count,
            body_len: m.message.body.len() as u32,
            restored: false,
        })
    }

    /// Whether the in-memory part is more than half full or anything is paged: the sign that
    /// publishers are outrunning this queue's consumers.
    pub fn under_pressure(&self) -> bool {
        !self.paged.is_empty()
            || self
                .pager
                .as_ref()
                .is_some_and(|p| self.ready_bytes > p.budget / 2)
    }

    /// Puts back a message recovered from the log, leaving its body there.
    pub fn restore(&mut self, paged: PagedMessage) {
        self.counts.add(paged.expires_at, u64::from(paged.body_len));
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
                self.counts.sub(pm.expires_at, u64::from(pm.body_len));
                continue;
            };
            if message.persistent {
                let _ = message.stored_at.set(pm.location);
            }
            let mut expires_at = pm.expires_at;
            if let (true, Some(ttl)) = (pm.restored, message.expiration) {
                // Durability: the time it was published is not kept, so its own TTL counts
                // from now: later than it should, never earlier.
                expires_at = expires_at.min(crate::clock::now_ms().saturating_add(ttl));
            }
            // The paged size of a recovered message was an estimate; count what is known now.
            self.counts.sub(pm.expires_at, u64::from(pm.body_len));
            self.counts.add(expires_at, message.body.len() as u64);
            let m = QueuedMessage {
                seq: pm.seq,
                message: Arc::new(message),
                redelivered: pm.redelivered,
                log: Some(pm.log),
                expires_at,
                delivery_count: pm.delivery_count,
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
        self.counts.sub(m.expires_at, m.message.body.len() as u64);
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
        self.counts.add(m.expires_at, m.message.body.len() as u64);
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
        self.counts = Counts::default();
        (n, logs)
    }
}

/// A queue's ready messages: one [`Backlog`] per priority level (one level for a queue
/// without priorities). The next message is the oldest of the highest non-empty level.
pub(crate) struct Levels {
    levels: Vec<Backlog>,
}

impl Levels {
    /// `count` levels (1 for a plain queue, `x-max-priority + 1` for a priority queue), each
    /// with its share of the memory budget.
    pub fn new(count: usize, pager: impl Fn(usize) -> Option<Pager>) -> Self {
        let count = count.max(1);
        Levels {
            levels: (0..count).map(|_| Backlog::new(pager(count))).collect(),
        }
    }

    /// The level a message of `priority` goes to (RabbitMQ caps it at the highest).
    pub fn level_of(&self, priority: u8) -> usize {
        usize::from(priority).min(self.levels.len() - 1)
    }

    pub fn len(&self) -> usize {
        self.levels.iter().map(Backlog::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.iter().all(|l| l.len() == 0)
    }

    /// Body bytes of all ready messages.
    pub fn body_bytes(&self) -> u64 {
        self.levels.iter().map(|l| l.counts.body_bytes).sum()
    }

    /// Whether any level is under pressure (see [`Backlog::under_pressure`]).
    pub fn under_pressure(&self) -> bool {
        self.levels.iter().any(Backlog::under_pressure)
    }

    /// Whether any ready message has a deadline.
    pub fn has_deadlines(&self) -> bool {
        self.levels.iter().any(|l| l.counts.deadlines > 0)
    }

    fn top(&self) -> Option<usize> {
        self.levels.iter().rposition(|l| l.len() > 0)
    }

    pub fn push(&mut self, m: QueuedMessage) {
        let level = self.level_of(m.message.priority);
        self.levels[level].push(m);
    }

    pub fn restore(&mut self, level: usize, paged: PagedMessage) {
        let level = level.min(self.levels.len() - 1);
        self.levels[level].restore(paged);
    }

    pub fn front(&mut self) -> Option<&QueuedMessage> {
        // A level whose paged messages cannot be read back empties; try the next one.
        loop {
            let top = self.top()?;
            if self.levels[top].front().is_some() {
                return self.levels[top].front();
            }
        }
    }

    pub fn pop_front(&mut self) -> Option<QueuedMessage> {
        // A level whose paged messages cannot be read back empties; try the next one.
        while let Some(top) = self.top() {
            if let Some(m) = self.levels[top].pop_front() {
                return Some(m);
            }
        }
        None
    }

    pub fn requeue(&mut self, m: QueuedMessage) {
        let level = self.level_of(m.message.priority);
        self.levels[level].requeue(m);
    }

    pub fn clear(&mut self) -> (usize, Vec<LogRef>) {
        let mut n = 0;
        let mut logs = Vec::new();
        for l in &mut self.levels {
            let (k, mut refs) = l.clear();
            n += k;
            logs.append(&mut refs);
        }
        (n, logs)
    }
}
