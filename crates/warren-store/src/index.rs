//! The live index: which messages are alive, for which queues, where their bodies are, and how
//! many live records each segment still holds.
//!
//! The writer thread owns the index and applies each record to it in LSN order, after writing
//! it; recovery rebuilds it by applying the same [`Op`]s decoded from the log, so a running store
//! and a recovered one cannot disagree about what a record means.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use smallvec::SmallVec;

use crate::format::Op;
use crate::{Location, Lsn, RecoveredMessage};

/// A fast hasher for ids the broker assigns (not attacker-chosen): FxHash's multiply-rotate.
/// With SipHash, hashing dominated recovery of a million messages.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// One queue's claim on a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueRef {
    pub queue: u64,
    /// How many times the message was delivered from this queue (`mark_delivered` calls).
    pub deliveries: u32,
}

/// A live message.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// LSN of the original publish record: the order in which queues recover messages.
    pub order: Lsn,
    pub loc: Location,
    /// Bytes the record holding the body occupies (for per-segment live-byte accounting).
    pub rec_len: u32,
    /// Queues the message is not yet settled for; never empty while the entry exists.
    pub queues: SmallVec<[QueueRef; 2]>,
}

/// Liveness of one segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SegStat {
    /// End of the last record applied (the file's length as far as the index knows).
    pub size: u64,
    /// Live message records in the segment.
    pub live: u64,
    /// Bytes those live records occupy.
    pub live_bytes: u64,
}

/// What a relocate record for a message the index does not know means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnknownRelocate {
    /// The message was settled before the copy was applied (the index saw its whole history,
    /// from a checkpoint or from an unbroken log): the copy is dead.
    Ignore,
    /// The log has gaps and no checkpoint covers them: the original may be in a deleted
    /// segment, so the copy is taken as live (at-least-once, best effort).
    Insert,
}

#[derive(Debug)]
pub(crate) struct Index {
    pub msgs: IdMap<Entry>,
    pub segs: BTreeMap<u64, SegStat>,
    /// Live messages per queue (lets `drop_queue` of an empty queue skip the scan).
    pub queue_live: IdMap<u64>,
    /// One more than the largest message id ever published.
    pub next_msg_id: u64,
    pub unknown_relocate: UnknownRelocate,
}

impl Index {
    pub fn new() -> Self {
        Index {
            msgs: IdMap::default(),
            segs: BTreeMap::new(),
            queue_live: IdMap::default(),
            next_msg_id: 1,
            unknown_relocate: UnknownRelocate::Ignore,
        }
    }

    /// Records that `segment` exists and extends at least to `end`.
    pub fn extend_segment(&mut self, segment: u64, end: u64) {
        let s = self.segs.entry(segment).or_default();
        s.size = s.size.max(end);
    }

    /// Inserts a live message (from a checkpoint, a publish or an unknown relocate).
    pub fn insert(&mut self, msg_id: u64, entry: Entry) {
        if self.msgs.contains_key(&msg_id) {
            tracing::warn!(msg_id, "message id published twice; the later record wins");
            self.forget(msg_id);
        }
        let s = self.segs.entry(entry.loc.segment).or_default();
        s.live += 1;
        s.live_bytes += u64::from(entry.rec_len);
        for q in &entry.queues {
            *self.queue_live.entry(q.queue).or_default() += 1;
        }
        self.next_msg_id = self.next_msg_id.max(msg_id.saturating_add(1));
        self.msgs.insert(msg_id, entry);
    }

    /// Removes a message entirely, settling it for every queue it still had.
    pub(crate) fn forget(&mut self, msg_id: u64) {
        let Some(e) = self.msgs.remove(&msg_id) else {
            return;
        };
        if let Some(s) = self.segs.get_mut(&e.loc.segment) {
            s.live = s.live.saturating_sub(1);
            s.live_bytes = s.live_bytes.saturating_sub(u64::from(e.rec_len));
        }
        for q in &e.queues {
            self.dec_queue(q.queue);
        }
    }

    fn dec_queue(&mut self, queue: u64) {
        if let Some(n) = self.queue_live.get_mut(&queue) {
            *n -= 1;
            if *n == 0 {
                self.queue_live.remove(&queue);
            }
        }
    }

    /// Settles `msg_id` for `queue`; kills the message when no queue is left.
    fn settle(&mut self, queue: u64, msg_id: u64) {
        let Some(e) = self.msgs.get_mut(&msg_id) else {
            return;
        };
        let Some(i) = e.queues.iter().position(|q| q.queue == queue) else {
            return;
        };
        e.queues.swap_remove(i);
        let dead = e.queues.is_empty();
        self.dec_queue(queue);
        if dead {
            self.forget(msg_id);
        }
    }

    /// Applies one record, written at `lsn` in `segment` ending at `rec_end`, whose body (for
    /// publish and relocate records) is at `body`.
    pub fn apply(
        &mut self,
        lsn: Lsn,
        op: &Op,
        segment: u64,
        rec_end: u64,
        rec_len: u64,
        body: Option<Location>,
    ) {
        self.extend_segment(segment, rec_end);
        match op {
            Op::Publish { msg_id, queues } => {
                let Some(loc) = body else { return };
                let entry = Entry {
                    order: lsn,
                    loc,
                    rec_len: rec_len as u32,
                    queues: queues
                        .iter()
                        .map(|&queue| QueueRef {
                            queue,
                            deliveries: 0,
                        })
                        .collect(),
                };
                if entry.queues.is_empty() {
                    return;
                }
                self.insert(*msg_id, entry);
            }
            Op::Ack { queue, ids } => {
                for &id in ids {
                    self.settle(*queue, id);
                }
            }
            Op::Delivered { queue, ids } => {
                for id in ids {
                    if let Some(e) = self.msgs.get_mut(id) {
                        if let Some(q) = e.queues.iter_mut().find(|q| q.queue == *queue) {
                            q.deliveries = q.deliveries.saturating_add(1);
                        }
                    }
                }
            }
            Op::DropQueue { queue } => {
                if !self.queue_live.contains_key(queue) {
                    return;
                }
                // Rare (queue deletion or purge): a scan of the live index is acceptable.
                let ids: Vec<u64> = self
                    .msgs
                    .iter()
                    .filter(|(_, e)| e.queues.iter().any(|q| q.queue == *queue))
                    .map(|(&id, _)| id)
                    .collect();
                for id in ids {
                    self.settle(*queue, id);
                }
            }
            Op::Relocate {
                msg_id,
                order,
                old_segment,
                old_offset,
                queues,
            } => {
                let Some(loc) = body else { return };
                match self.msgs.get_mut(msg_id) {
                    Some(e) => {
                        if e.loc.segment != *old_segment || e.loc.offset != *old_offset {
                            return;
                        }
                        let old = std::mem::replace(&mut e.loc, loc);
                        let old_len = std::mem::replace(&mut e.rec_len, rec_len as u32);
                        if let Some(s) = self.segs.get_mut(&old.segment) {
                            s.live = s.live.saturating_sub(1);
                            s.live_bytes = s.live_bytes.saturating_sub(u64::from(old_len));
                        }
                        let s = self.segs.entry(loc.segment).or_default();
                        s.live += 1;
                        s.live_bytes += rec_len;
                    }
                    None => {
                        if self.unknown_relocate == UnknownRelocate::Ignore || queues.is_empty() {
                            return;
                        }
                        let entry = Entry {
                            order: *order,
                            loc,
                            rec_len: rec_len as u32,
                            queues: queues
                                .iter()
                                .map(|&(queue, deliveries)| QueueRef { queue, deliveries })
                                .collect(),
                        };
                        self.insert(*msg_id, entry);
                    }
                }
            }
        }
    }

    /// Live messages per queue, each list in publish order.
    pub fn per_queue(&self) -> HashMap<u64, Vec<RecoveredMessage>> {
        let mut tmp: IdMap<Vec<(Lsn, RecoveredMessage)>> = IdMap::default();
        for (&msg_id, e) in &self.msgs {
            for q in &e.queues {
                tmp.entry(q.queue).or_default().push((
                    e.order,
                    RecoveredMessage {
                        msg_id,
                        location: e.loc,
                        delivered: q.deliveries > 0,
                        delivery_count: q.deliveries,
                    },
                ));
            }
        }
        tmp.into_iter()
            .map(|(q, mut v)| {
                v.sort_unstable_by_key(|(order, m)| (*order, m.msg_id));
                (q, v.into_iter().map(|(_, m)| m).collect())
            })
            .collect()
    }
}
