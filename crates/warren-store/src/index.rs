//! The live index: where each message's body is, which queues still hold it, and how much of
//! each segment is still live.
//!
//! Memory is the point of its shape: a backlog of ten million messages must cost tens of bytes
//! each, not hundreds. Message ids are assigned by the store in log order, so the messages of a
//! segment have consecutive ids and the segment keeps them in two dense vectors indexed by
//! `id - first_id` (body position: 8 bytes; queues still holding it: 2 bytes). Which queues
//! hold which ids is one compressed bitmap per queue. Anything that does not fit the dense
//! layout (a body moved by compaction, a log written by an older version) is a "loose" entry
//! in a small map.
//!
//! The writer thread applies each record to the index in LSN order, after writing it; recovery
//! rebuilds it by applying the same [`Op`]s decoded from the log, so a running store and a
//! recovered one cannot disagree about what a record means. Readers look bodies up in it.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use roaring::RoaringTreemap;
use smallvec::SmallVec;

use crate::format::Op;
use crate::Location;

/// A fast hasher for ids the store assigns (not attacker-chosen): FxHash's multiply-rotate.
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

/// Bytes a message record occupies besides its body (frame header, type, id, one queue, body
/// CRC), for the live-bytes estimate that compaction compares with a segment's size.
const RECORD_OVERHEAD: u64 = 40;

/// What a live message counts for in its segment's live bytes.
fn weight(len: u32) -> u64 {
    u64::from(len) + RECORD_OVERHEAD
}

/// Where a body is within its segment (segments are far smaller than 4 GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Slot {
    pub offset: u32,
    pub len: u32,
}

/// One segment: its size, its messages, and how much of it is live.
#[derive(Debug, Clone, Default)]
pub(crate) struct SegStat {
    /// End of the last record applied (the file's length as far as the index knows).
    pub size: u64,
    /// Id of `slots[0]` (meaningful once `slots` is non-empty).
    pub first_id: u64,
    pub slots: Vec<Slot>,
    /// Queues still holding each slot's message; 0 = dead.
    pub refs: Vec<u16>,
    /// Live messages whose body is in this segment (dense and loose).
    pub live: u64,
    /// Bytes of their records, estimated (compaction compares it with `size`).
    pub live_bytes: u64,
}

/// A live message outside the dense layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loose {
    pub segment: u64,
    pub slot: Slot,
    pub refs: u16,
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
    pub segs: BTreeMap<u64, SegStat>,
    /// Segment holding the dense slots that start at each `first_id`.
    pub by_first_id: BTreeMap<u64, u64>,
    pub loose: IdMap<Loose>,
    /// Live message ids per queue.
    pub queues: IdMap<RoaringTreemap>,
    /// Delivery counts (`mark_delivered`) of live messages, per queue; absent = 0.
    pub delivered: IdMap<IdMap<u32>>,
    /// Live messages in total.
    pub live: u64,
    /// One more than the largest message id ever published.
    pub next_msg_id: u64,
    pub unknown_relocate: UnknownRelocate,
}

/// A live message, as compaction sees it.
pub(crate) struct LiveMessage {
    pub msg_id: u64,
    pub loc: Location,
}

impl Index {
    pub fn new() -> Self {
        Index {
            segs: BTreeMap::new(),
            by_first_id: BTreeMap::new(),
            loose: IdMap::default(),
            queues: IdMap::default(),
            delivered: IdMap::default(),
            live: 0,
            next_msg_id: 1,
            unknown_relocate: UnknownRelocate::Ignore,
        }
    }

    /// Records that `segment` exists and extends at least to `end`.
    pub fn extend_segment(&mut self, segment: u64, end: u64) {
        let s = self.segs.entry(segment).or_default();
        s.size = s.size.max(end);
    }

    /// The dense position of `msg_id`: its segment and slot number.
    fn dense(&self, msg_id: u64) -> Option<(u64, usize)> {
        let (&first, &segment) = self.by_first_id.range(..=msg_id).next_back()?;
        let s = self.segs.get(&segment)?;
        let i = usize::try_from(msg_id - first).ok()?;
        (i < s.slots.len()).then_some((segment, i))
    }

    /// Where the body of a live message is.
    pub fn locate(&self, msg_id: u64) -> Option<Location> {
        if let Some(l) = self.loose.get(&msg_id) {
            return Some(location(l.segment, l.slot));
        }
        let (segment, i) = self.dense(msg_id)?;
        let s = &self.segs[&segment];
        (s.refs[i] > 0).then(|| location(segment, s.slots[i]))
    }

    fn refs(&self, msg_id: u64) -> u16 {
        if let Some(l) = self.loose.get(&msg_id) {
            return l.refs;
        }
        self.dense(msg_id)
            .map_or(0, |(segment, i)| self.segs[&segment].refs[i])
    }

    /// Adds a live message held by `queues` (with their delivery counts) whose body is at
    /// `loc`. A message id seen alive already is replaced (the later record wins).
    fn insert(&mut self, msg_id: u64, loc: Location, queues: &[(u64, u32)]) {
        if queues.is_empty() {
            return;
        }
        if self.refs(msg_id) > 0 {
            tracing::warn!(msg_id, "message id published twice; the later record wins");
            self.forget(msg_id);
        }
        let refs = queues.len().min(usize::from(u16::MAX)) as u16;
        let slot = Slot {
            offset: loc.offset as u32,
            len: loc.len,
        };
        let s = self.segs.entry(loc.segment).or_default();
        // The first message of a segment starts its dense run (unless that id already starts
        // another segment's run); later ones extend it when their ids follow on.
        let dense = if s.slots.is_empty() {
            let free = !self.by_first_id.contains_key(&msg_id);
            if free {
                s.first_id = msg_id;
                self.by_first_id.insert(msg_id, loc.segment);
            }
            free
        } else {
            s.first_id + s.slots.len() as u64 == msg_id
        };
        if dense {
            s.slots.push(slot);
            s.refs.push(refs);
        } else {
            self.loose.insert(
                msg_id,
                Loose {
                    segment: loc.segment,
                    slot,
                    refs,
                },
            );
        }
        s.live += 1;
        s.live_bytes += weight(loc.len);
        self.live += 1;
        for &(q, deliveries) in queues {
            self.queues.entry(q).or_default().insert(msg_id);
            if deliveries > 0 {
                self.delivered
                    .entry(q)
                    .or_default()
                    .insert(msg_id, deliveries);
            }
        }
        self.next_msg_id = self.next_msg_id.max(msg_id.saturating_add(1));
    }

    /// Drops one queue's claim on a message; kills it when none is left.
    fn release(&mut self, msg_id: u64) {
        let dead_at = if let Some(l) = self.loose.get_mut(&msg_id) {
            l.refs = l.refs.saturating_sub(1);
            if l.refs > 0 {
                return;
            }
            let l = self.loose.remove(&msg_id);
            l.map(|l| (l.segment, l.slot.len))
        } else if let Some((segment, i)) = self.dense(msg_id) {
            let s = self
                .segs
                .get_mut(&segment)
                .map(|s| (&mut s.refs[i], s.slots[i].len));
            match s {
                Some((r, len)) if *r > 0 => {
                    *r -= 1;
                    if *r > 0 {
                        return;
                    }
                    Some((segment, len))
                }
                _ => None,
            }
        } else {
            None
        };
        if let Some((segment, len)) = dead_at {
            if let Some(s) = self.segs.get_mut(&segment) {
                s.live = s.live.saturating_sub(1);
                s.live_bytes = s.live_bytes.saturating_sub(weight(len));
            }
            self.live = self.live.saturating_sub(1);
        }
    }

    /// Removes a message entirely, settling it for every queue it still had.
    pub(crate) fn forget(&mut self, msg_id: u64) {
        for (q, _) in self.holders(msg_id) {
            self.settle(q, msg_id);
        }
        // A claim no queue records (cannot happen through the API) must not keep it alive.
        while self.refs(msg_id) > 0 {
            self.release(msg_id);
        }
    }

    /// Settles `msg_id` for `queue`; kills the message when no queue is left.
    fn settle(&mut self, queue: u64, msg_id: u64) {
        let Some(ids) = self.queues.get_mut(&queue) else {
            return;
        };
        if !ids.remove(msg_id) {
            return;
        }
        if ids.is_empty() {
            self.queues.remove(&queue);
        }
        if let Some(d) = self.delivered.get_mut(&queue) {
            d.remove(&msg_id);
            if d.is_empty() {
                self.delivered.remove(&queue);
            }
        }
        self.release(msg_id);
    }

    /// Kills every live message whose body is in `segment` (the file is gone).
    pub fn drop_segment(&mut self, segment: u64) -> u64 {
        let mut ids: Vec<u64> = self
            .loose
            .iter()
            .filter(|(_, l)| l.segment == segment)
            .map(|(&id, _)| id)
            .collect();
        if let Some(s) = self.segs.get(&segment) {
            ids.extend(
                s.refs
                    .iter()
                    .enumerate()
                    .filter(|(_, &r)| r > 0)
                    .map(|(i, _)| s.first_id + i as u64),
            );
        }
        for &id in &ids {
            self.forget(id);
        }
        self.remove_segment(segment);
        ids.len() as u64
    }

    /// Forgets a segment whose file is deleted (it holds nothing live).
    pub fn remove_segment(&mut self, segment: u64) {
        if let Some(s) = self.segs.remove(&segment) {
            if self.by_first_id.get(&s.first_id) == Some(&segment) {
                self.by_first_id.remove(&s.first_id);
            }
        }
    }

    /// Applies one record, written in `segment` and ending at `rec_end`, whose body (for
    /// publish and relocate records) is at `body`.
    pub fn apply(&mut self, op: &Op, segment: u64, rec_end: u64, body: Option<Location>) {
        self.extend_segment(segment, rec_end);
        match op {
            Op::Publish { msg_id, queues } => {
                let Some(loc) = body else { return };
                let queues: SmallVec<[(u64, u32); 4]> = queues.iter().map(|&q| (q, 0)).collect();
                self.insert(*msg_id, loc, &queues);
            }
            Op::Ack { queue, ids } => {
                for &id in ids {
                    self.settle(*queue, id);
                }
            }
            Op::Delivered { queue, ids } => {
                let Some(live) = self.queues.get(queue) else {
                    return;
                };
                let live: Vec<u64> = ids
                    .iter()
                    .copied()
                    .filter(|&id| live.contains(id))
                    .collect();
                if live.is_empty() {
                    return;
                }
                let d = self.delivered.entry(*queue).or_default();
                for id in live {
                    let c = d.entry(id).or_default();
                    *c = c.saturating_add(1);
                }
            }
            Op::DropQueue { queue } => {
                let Some(ids) = self.queues.remove(queue) else {
                    return;
                };
                self.delivered.remove(queue);
                for id in ids.iter() {
                    self.release(id);
                }
            }
            Op::Relocate {
                msg_id,
                old_segment,
                old_offset,
                queues,
                ..
            } => {
                let Some(loc) = body else { return };
                match self.locate(*msg_id) {
                    Some(cur) => {
                        if cur.segment != *old_segment || cur.offset != *old_offset {
                            return;
                        }
                        let refs = self.refs(*msg_id);
                        // Out of the old place (dense or loose)...
                        if self.loose.remove(msg_id).is_none() {
                            if let Some((seg, i)) = self.dense(*msg_id) {
                                if let Some(s) = self.segs.get_mut(&seg) {
                                    s.refs[i] = 0;
                                }
                            }
                        }
                        if let Some(s) = self.segs.get_mut(&cur.segment) {
                            s.live = s.live.saturating_sub(1);
                            s.live_bytes = s.live_bytes.saturating_sub(weight(cur.len));
                        }
                        // ...into the new one, always loose: its id is not the new segment's.
                        self.loose.insert(
                            *msg_id,
                            Loose {
                                segment: loc.segment,
                                slot: Slot {
                                    offset: loc.offset as u32,
                                    len: loc.len,
                                },
                                refs,
                            },
                        );
                        let s = self.segs.entry(loc.segment).or_default();
                        s.live += 1;
                        s.live_bytes += weight(loc.len);
                    }
                    None => {
                        if self.unknown_relocate == UnknownRelocate::Ignore {
                            return;
                        }
                        self.insert(*msg_id, loc, queues);
                    }
                }
            }
        }
    }

    /// The queues holding `msg_id`, with its delivery count in each.
    pub fn holders(&self, msg_id: u64) -> Vec<(u64, u32)> {
        let mut v: Vec<(u64, u32)> = self
            .queues
            .iter()
            .filter(|(_, ids)| ids.contains(msg_id))
            .map(|(&q, _)| {
                let d = self
                    .delivered
                    .get(&q)
                    .and_then(|d| d.get(&msg_id))
                    .copied()
                    .unwrap_or(0);
                (q, d)
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// Live messages whose body is in `segment`, in file order.
    pub fn live_in(&self, segment: u64) -> Vec<LiveMessage> {
        let mut v: Vec<LiveMessage> = self
            .loose
            .iter()
            .filter(|(_, l)| l.segment == segment && l.refs > 0)
            .map(|(&msg_id, l)| LiveMessage {
                msg_id,
                loc: location(segment, l.slot),
            })
            .collect();
        if let Some(s) = self.segs.get(&segment) {
            v.extend(
                s.refs
                    .iter()
                    .zip(&s.slots)
                    .enumerate()
                    .filter(|(_, (&r, _))| r > 0)
                    .map(|(i, (_, &slot))| LiveMessage {
                        msg_id: s.first_id + i as u64,
                        loc: location(segment, slot),
                    }),
            );
        }
        v.sort_unstable_by_key(|m| m.loc.offset);
        v
    }

    /// Live messages per queue, in id (that is, publish) order, with their delivery counts.
    pub fn per_queue(&self) -> HashMap<u64, crate::RecoveredQueue> {
        self.queues
            .iter()
            .map(|(&q, ids)| {
                let delivered = self
                    .delivered
                    .get(&q)
                    .map(|d| d.iter().map(|(&id, &n)| (id, n)).collect())
                    .unwrap_or_default();
                (
                    q,
                    crate::RecoveredQueue {
                        ids: crate::IdSet(ids.clone()),
                        delivered,
                    },
                )
            })
            .collect()
    }

    /// Rebuilds the per-segment live counts from `refs` and the loose map (after loading a
    /// checkpoint, which stores only the slots).
    pub fn recount(&mut self) {
        self.live = 0;
        for s in self.segs.values_mut() {
            s.live = 0;
            s.live_bytes = 0;
            for (r, slot) in s.refs.iter().zip(&s.slots) {
                if *r > 0 {
                    s.live += 1;
                    s.live_bytes += weight(slot.len);
                }
            }
        }
        for l in self.loose.values() {
            let s = self.segs.entry(l.segment).or_default();
            s.live += 1;
            s.live_bytes += weight(l.slot.len);
        }
        self.live = self.segs.values().map(|s| s.live).sum();
    }
}

fn location(segment: u64, slot: Slot) -> Location {
    Location {
        segment,
        offset: u64::from(slot.offset),
        len: slot.len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(ix: &mut Index, id: u64, queues: &[u64], seg: u64, off: u64) {
        let op = Op::Publish {
            msg_id: id,
            queues: queues.iter().copied().collect(),
        };
        let loc = Location {
            segment: seg,
            offset: off,
            len: 10,
        };
        ix.apply(&op, seg, off + 10, Some(loc));
    }

    #[test]
    fn consecutive_ids_are_dense_and_settle_per_queue() {
        let mut ix = Index::new();
        for id in 1..=100 {
            publish(&mut ix, id, &[1, 2], 1, id * 100);
        }
        assert!(ix.loose.is_empty());
        assert_eq!(ix.segs[&1].slots.len(), 100);
        assert_eq!(ix.live, 100);
        ix.apply(
            &Op::Ack {
                queue: 1,
                ids: (1..=50).collect(),
            },
            1,
            0,
            None,
        );
        assert_eq!(ix.live, 100, "queue 2 still holds them");
        ix.apply(
            &Op::Ack {
                queue: 2,
                ids: (1..=10).collect(),
            },
            1,
            0,
            None,
        );
        assert_eq!(ix.live, 90);
        assert_eq!(ix.locate(5), None);
        assert_eq!(ix.locate(11).map(|l| l.offset), Some(1100));
        ix.apply(&Op::DropQueue { queue: 2 }, 1, 0, None);
        assert_eq!(ix.live, 50);
        assert_eq!(ix.segs[&1].live, 50);
    }

    #[test]
    fn ids_out_of_order_go_loose_and_still_settle() {
        let mut ix = Index::new();
        publish(&mut ix, 10, &[1], 1, 100);
        publish(&mut ix, 12, &[1], 1, 200);
        publish(&mut ix, 11, &[1], 1, 300);
        // 12 does not follow 10 and goes loose; 11 does and joins the dense run.
        assert_eq!(ix.loose.len(), 1);
        assert_eq!(ix.locate(12).map(|l| l.offset), Some(200));
        assert_eq!(ix.locate(11).map(|l| l.offset), Some(300));
        ix.apply(
            &Op::Ack {
                queue: 1,
                ids: vec![10, 11, 12],
            },
            1,
            0,
            None,
        );
        assert_eq!(ix.live, 0);
        assert_eq!(ix.segs[&1].live, 0);
    }

    #[test]
    fn relocation_moves_the_body_and_its_claims() {
        let mut ix = Index::new();
        publish(&mut ix, 1, &[1, 2], 1, 100);
        let op = Op::Relocate {
            msg_id: 1,
            order: 1,
            old_segment: 1,
            old_offset: 100,
            queues: vec![(1, 0), (2, 0)],
        };
        let new = Location {
            segment: 9,
            offset: 50,
            len: 10,
        };
        ix.apply(&op, 9, 60, Some(new));
        assert_eq!(ix.locate(1), Some(new));
        assert_eq!(ix.segs[&1].live, 0);
        assert_eq!(ix.segs[&9].live, 1);
        ix.apply(
            &Op::Ack {
                queue: 1,
                ids: vec![1],
            },
            9,
            0,
            None,
        );
        assert_eq!(ix.segs[&9].live, 1);
        ix.apply(
            &Op::Ack {
                queue: 2,
                ids: vec![1],
            },
            9,
            0,
            None,
        );
        assert_eq!(ix.segs[&9].live, 0);
        assert_eq!(ix.live, 0);
    }
}
