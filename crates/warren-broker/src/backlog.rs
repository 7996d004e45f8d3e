//! A queue's ready messages, with a bounded part in memory and the rest in the log.
//!
//! The head of the queue (what will be delivered next) is kept in memory up to a byte budget;
//! past it, messages are "paged": only their log id stays in memory and the body is read back
//! when the head drains. A persistent message on a durable queue is in the log already; any
//! other message is written there when paged (without waiting for fsync, and under a private
//! queue id that recovery discards), so a long backlog costs disk, not RAM.
//!
//! Paged messages are kept in runs ([`PagedRun`]): a base id and a 4-byte offset per message,
//! plus the rare per-message facts that differ from the default (delivered before, a
//! deadline). Together with the store's own dense index, a paged message costs about 15 bytes
//! of RAM, so ten million of them fit in a couple of hundred megabytes.
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

use crate::message::{Message, QueuedMessage, NEVER};
use crate::persistence::{decode_message, Persistence};
use crate::spec::LogRef;

/// A message recovered from the log, as a queue puts it back.
pub(crate) struct Restored {
    pub seq: u64,
    pub log: LogRef,
    pub expires_at: u64,
    pub delivery_count: u32,
    pub stored_len: u64,
}

/// What a paged message carries besides its id, when it is not the default (never delivered,
/// no deadline).
#[derive(Debug, Clone, Copy)]
struct Extra {
    redelivered: bool,
    delivery_count: u32,
    expires_at: u64,
}

/// Consecutive paged messages of one level stored under the same log id, in queue order.
pub(crate) struct PagedRun {
    /// The log id their entries are under: the queue's own, or its private page id.
    log_queue: u64,
    base_id: u64,
    /// Message ids minus `base_id`; the first `head` are gone (read back).
    ids: Vec<u32>,
    head: usize,
    /// `seq` of the run's first message. Messages read back get `first_seq + position`:
    /// not their original numbers, but in the same order and below the next run's, which is
    /// all `seq` is for.
    first_seq: u64,
    /// Non-default facts by position in `ids`, ascending.
    extras: VecDeque<(u32, Extra)>,
    /// Recovered after a restart: maybe delivered before it (so redelivered), its own
    /// `expiration` not yet known, its size counted as its stored size until read back.
    restored: bool,
}

/// Most messages in one run, so that its vector's spare capacity stays small.
const RUN_MAX: usize = 1 << 16;

impl PagedRun {
    fn new(log_queue: u64, base_id: u64, first_seq: u64, restored: bool) -> Self {
        PagedRun {
            log_queue,
            base_id,
            ids: Vec::new(),
            head: 0,
            first_seq,
            extras: VecDeque::new(),
            restored,
        }
    }

    fn len(&self) -> usize {
        self.ids.len() - self.head
    }

    /// Appends a message if it fits this run.
    fn try_push(&mut self, log_queue: u64, id: u64, extra: Option<Extra>) -> bool {
        let Some(delta) = id
            .checked_sub(self.base_id)
            .and_then(|d| u32::try_from(d).ok())
        else {
            return false;
        };
        if log_queue != self.log_queue || self.ids.len() >= RUN_MAX {
            return false;
        }
        if let Some(e) = extra {
            self.extras.push_back((self.ids.len() as u32, e));
        }
        self.ids.push(delta);
        true
    }

    /// The next message: its id, `seq` and non-default facts.
    fn pop(&mut self) -> Option<(u64, u64, Option<Extra>)> {
        let pos = self.head;
        let delta = *self.ids.get(pos)?;
        self.head += 1;
        let extra = match self.extras.front() {
            Some(&(p, e)) if p as usize == pos => {
                self.extras.pop_front();
                Some(e)
            }
            _ => None,
        };
        Some((
            self.base_id + u64::from(delta),
            self.first_seq + pos as u64,
            extra,
        ))
    }

    fn remaining_refs(&self) -> impl Iterator<Item = LogRef> + '_ {
        self.ids[self.head..].iter().map(move |&d| LogRef {
            queue: self.log_queue,
            id: self.base_id + u64::from(d),
        })
    }
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

/// A paged message taken off its run, on its way back into memory.
struct PagedIn {
    log: LogRef,
    seq: u64,
    extra: Extra,
    restored: bool,
}

/// Most messages read back from the log in one go (bounds the time the queue lock is held).
const REFILL_BATCH: usize = 1024;
/// Messages read back with one batch read: enough that a system call serves many small
/// messages, few enough that large ones overshoot the memory budget by little.
const READ_CHUNK: usize = 64;

pub(crate) struct Backlog {
    ready: VecDeque<QueuedMessage>,
    paged: VecDeque<PagedRun>,
    paged_len: usize,
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
            paged_len: 0,
            ready_bytes: 0,
            pager,
            counts: Counts::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.ready.len() + self.paged_len
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
                Some((log, extra)) => {
                    self.push_paged(log, m.seq, extra, false);
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

    /// Appends a paged message to the last run, or starts a new one.
    fn push_paged(&mut self, log: LogRef, seq: u64, extra: Option<Extra>, restored: bool) {
        let fits = self
            .paged
            .back_mut()
            .is_some_and(|r| r.restored == restored && r.try_push(log.queue, log.id, extra));
        if !fits {
            let mut run = PagedRun::new(log.queue, log.id, seq, restored);
            run.try_push(log.queue, log.id, extra);
            self.paged.push_back(run);
        }
        self.paged_len += 1;
    }

    /// Makes sure `m` is in the log and says under which entry, with its non-default facts.
    fn page_out(&self, m: &QueuedMessage) -> Option<(LogRef, Option<Extra>)> {
        let pager = self.pager.as_ref()?;
        let log = match m.log {
            // A persistent message of a durable queue is in the log already.
            Some(log) => log,
            None => {
                let p = &pager.persistence;
                let payload: Arc<dyn warren_store::Payload> = m.message.clone();
                match p.store.publish_volatile(&[pager.page_queue], payload) {
                    Ok(published) => LogRef {
                        queue: pager.page_queue,
                        id: published.msg_id,
                    },
                    Err(e) => {
                        warn!(error = %e, "cannot write a message to the log to page it out");
                        return None;
                    }
                }
            }
        };
        let extra =
            (m.redelivered || m.delivery_count > 0 || m.expires_at != NEVER).then_some(Extra {
                redelivered: m.redelivered,
                delivery_count: m.delivery_count,
                expires_at: m.expires_at,
            });
        Some((log, extra))
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

    /// Puts back a message recovered from the log, leaving its body there. `stored_len` (its
    /// size in the log) stands for its body size until it is read back.
    pub fn restore(&mut self, r: Restored) {
        self.counts.add(r.expires_at, r.stored_len);
        let extra = (r.delivery_count > 0 || r.expires_at != NEVER).then_some(Extra {
            redelivered: true,
            delivery_count: r.delivery_count,
            expires_at: r.expires_at,
        });
        self.push_paged(r.log, r.seq, extra, true);
    }

    /// Reads paged messages back while memory allows, [`READ_CHUNK`] at a time (one batch read
    /// from the log each: the store reads neighbours with one system call).
    fn refill(&mut self) {
        let Some(pager) = &self.pager else {
            return;
        };
        let p = pager.persistence.clone();
        let budget = pager.budget;
        let mut n = 0;
        let mut chunk: Vec<PagedIn> = Vec::with_capacity(READ_CHUNK);
        let mut ids: Vec<u64> = Vec::with_capacity(READ_CHUNK);
        while self.ready_bytes < budget / 2 && n < REFILL_BATCH {
            chunk.clear();
            while chunk.len() < READ_CHUNK {
                let Some(run) = self.paged.front_mut() else {
                    break;
                };
                let Some((id, seq, extra)) = run.pop() else {
                    self.paged.pop_front();
                    continue;
                };
                let (log_queue, restored) = (run.log_queue, run.restored);
                if run.len() == 0 {
                    self.paged.pop_front();
                }
                self.paged_len -= 1;
                let extra = extra.unwrap_or(Extra {
                    redelivered: restored,
                    delivery_count: 0,
                    expires_at: NEVER,
                });
                let log = LogRef {
                    queue: log_queue,
                    id,
                };
                chunk.push(PagedIn {
                    log,
                    seq,
                    extra,
                    restored,
                });
            }
            if chunk.is_empty() {
                break;
            }
            n += chunk.len();
            ids.clear();
            ids.extend(chunk.iter().map(|m| m.log.id));
            let payloads = p.store.read_many(&ids);
            for (m, payload) in chunk.drain(..).zip(payloads) {
                self.take_back(&p, m, payload);
            }
        }
    }

    /// Puts a message read back from the log at the end of the in-memory part (or, if it
    /// cannot be read, settles it).
    fn take_back(
        &mut self,
        p: &Persistence,
        m: PagedIn,
        payload: Result<bytes::Bytes, warren_store::StoreError>,
    ) {
        let PagedIn {
            log,
            seq,
            extra,
            restored,
        } = m;
        let id = log.id;
        let payload = match payload {
            Ok(payload) => Some(payload),
            Err(e) => {
                warn!(error = %e, "cannot read a paged message back; dropping it");
                None
            }
        };
        let stored_len = payload.as_ref().map_or(0, |b| b.len() as u64);
        let message = payload.and_then(|b| decode_message(id, b));
        // What the counts hold for it: its body size, or its stored size if recovered.
        let counted = |m: Option<&Message>| {
            if restored {
                stored_len
            } else {
                m.map_or(0, |m| m.body.len() as u64)
            }
        };
        let Some(message) = message else {
            p.settle(log.queue, &[id]);
            self.counts.sub(extra.expires_at, counted(None));
            return;
        };
        let mut expires_at = extra.expires_at;
        if let (true, Some(ttl)) = (restored, message.expiration) {
            // Durability: the time it was published is not kept, so its own TTL counts
            // from now: later than it should, never earlier.
            expires_at = expires_at.min(crate::clock::now_ms().saturating_add(ttl));
        }
        self.counts.sub(extra.expires_at, counted(Some(&message)));
        self.counts.add(expires_at, message.body.len() as u64);
        let m = QueuedMessage {
            seq,
            message: Arc::new(message),
            redelivered: extra.redelivered,
            log: Some(log),
            expires_at,
            delivery_count: extra.delivery_count,
        };
        self.ready_bytes += cost(&m);
        self.ready.push_back(m);
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
        for run in self.paged.drain(..) {
            logs.extend(run.remaining_refs());
        }
        self.paged_len = 0;
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

    /// Ready messages whose bodies are in the log rather than in memory.
    pub fn paged_len(&self) -> usize {
        self.levels.iter().map(|l| l.paged_len).sum()
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

    pub fn restore(&mut self, level: usize, r: Restored) {
        let level = level.min(self.levels.len() - 1);
        self.levels[level].restore(r);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_gives_back_ids_in_queue_order_with_their_extras() {
        let mut run = PagedRun::new(7, 100, 50, false);
        let late = Extra {
            redelivered: true,
            delivery_count: 2,
            expires_at: 1234,
        };
        assert!(run.try_push(7, 100, None));
        assert!(run.try_push(7, 105, Some(late)));
        // Ids need not increase (two publishers race), only stay above the base.
        assert!(run.try_push(7, 103, None));
        assert!(!run.try_push(7, 99, None), "below the base id");
        assert!(!run.try_push(8, 104, None), "another log id");
        assert!(
            !run.try_push(7, 100 + (1u64 << 32), None),
            "too far for 4 bytes"
        );
        assert_eq!(run.len(), 3);
        let refs: Vec<u64> = run.remaining_refs().map(|r| r.id).collect();
        assert_eq!(refs, [100, 105, 103]);
        let (id, seq, extra) = run.pop().unwrap();
        assert_eq!((id, seq), (100, 50));
        assert!(extra.is_none());
        let (id, seq, extra) = run.pop().unwrap();
        assert_eq!((id, seq), (105, 51));
        let e = extra.unwrap();
        assert_eq!(
            (e.redelivered, e.delivery_count, e.expires_at),
            (true, 2, 1234)
        );
        let (id, seq, extra) = run.pop().unwrap();
        assert_eq!((id, seq), (103, 52));
        assert!(extra.is_none());
        assert!(run.pop().is_none());
        assert_eq!(run.len(), 0);
    }

    #[test]
    fn a_full_run_refuses_more() {
        let mut run = PagedRun::new(1, 1, 0, false);
        for i in 0..RUN_MAX as u64 {
            assert!(run.try_push(1, 1 + i, None));
        }
        assert!(!run.try_push(1, 1 + RUN_MAX as u64, None));
    }
}
