//! `warren-store`: durable bytes for the broker.
//!
//! Owns: one segmented, append-only log per directory ([`Store`]), written by a dedicated
//! writer thread that group-commits (everything that arrived during the previous `fdatasync`
//! goes out in one write and one `fdatasync`); the live index of which message records are
//! still needed; checkpoints of that index so that restart replays only the log tail; recovery
//! with truncation of a torn or corrupt tail; deletion of dead segments and compaction of
//! mostly-dead ones; and a tiny durable key-value store for topology ([`MetaStore`]). The
//! on-disk format is documented in `docs/store-format.md`.
//!
//! Must not know: AMQP, exchanges, queues or consumers as concepts. It stores records for
//! opaque `u64` ids: a message id (which the store assigns), the queue ids it is stored for,
//! its body. The broker decides what they mean; it reads, acks and recovers messages by id and
//! never learns where a body is. It does not depend on tokio either: waiting for durability is a
//! [`WaitDurable`] future driven by std `Waker`s, usable from any executor (or
//! [`Store::wait_durable_blocking`] from a thread).
//!
//! Invariants:
//! - LSNs and message ids are assigned under one short mutex together with the record's file
//!   position, and records reach the writer in that order, so LSN order = file order = id
//!   order, and a segment's messages have consecutive ids (the index is dense vectors).
//! - An LSN is reported durable only after the `fdatasync` that covers it (in
//!   [`SyncMode::Fsync`]), and every earlier LSN is durable too. The one exception is a batch
//!   of nothing but page-out copies ([`Store::publish_volatile`]): nobody waits for those and
//!   recovery discards them, so they are reported durable once written, and the next fsync (a
//!   later batch's, a segment switch's or a checkpoint's) covers them.
//! - Every record is CRC32C-framed; recovery stops at the first record that fails, truncates
//!   the log there and deletes any later segment. Nothing before the damage is lost. A record
//!   length of 0 ends a segment's records: dead segments are recycled as the next ones,
//!   zero-filled and synced ahead of time (`spare.rs`), so that fsyncs flush data alone.
//! - A checkpoint never covers log that is not on disk; a segment is deleted only when it holds
//!   no live message *and* a durable checkpoint covers it (so acks stored in it are never
//!   needed by recovery).
//! - The writer thread alone writes segments and updates the index (readers only look bodies
//!   up in it, one lookup or batch at a time); no lock spans the store.

mod checkpoint;
mod durable;
mod error;
mod format;
pub mod fs;
mod index;
pub mod meta;
mod payload;
mod recovery;
pub mod sim;
mod spare;
mod store;
mod writer;

use std::collections::HashMap;

pub use durable::WaitDurable;
pub use error::StoreError;
pub use format::{FORMAT_VERSION, MAX_QUEUES_PER_MESSAGE, MAX_RECORD_LEN};
pub use meta::MetaStore;
pub use payload::{Body, Payload};
pub use store::{Published, Relocation, Store, StoreConfig, StoreStats, SyncMode};

/// Log sequence number: one per record, increasing, starting at 1. 0 means "nothing".
pub type Lsn = u64;

/// Where a message body lives: `len` bytes at `offset` in the segment whose first LSN is
/// `segment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

/// What [`Store::open`] found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Live messages per queue id.
    pub queues: HashMap<u64, RecoveredQueue>,
    /// Set if a damaged tail was cut off.
    pub truncated: Option<TruncationReport>,
    /// Whether a checkpoint was used (otherwise the whole log was replayed).
    pub from_checkpoint: bool,
    /// Log records replayed after the checkpoint (or in total).
    pub replayed_records: u64,
}

/// A set of message ids, compressed (a recovered queue of ten million messages costs a few
/// megabytes, not a vector of them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdSet(pub(crate) roaring::RoaringTreemap);

impl IdSet {
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.0.contains(id)
    }

    /// Ascending ids: the order in which the messages were published.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter()
    }
}

/// The live messages of one queue after recovery.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecoveredQueue {
    /// Their ids; ascending id order is publish order.
    pub ids: IdSet,
    /// Delivery counts of the messages marked delivered at least once (`mark_delivered`).
    pub delivered: HashMap<u64, u32>,
}

impl RecoveredQueue {
    pub fn len(&self) -> usize {
        self.ids.len() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The messages in publish order.
    pub fn iter(&self) -> impl Iterator<Item = RecoveredMessage> + '_ {
        self.ids.iter().map(|msg_id| {
            let delivery_count = self.delivered.get(&msg_id).copied().unwrap_or(0);
            RecoveredMessage {
                msg_id,
                delivered: delivery_count > 0,
                delivery_count,
            }
        })
    }
}

/// One live message of a queue after recovery. Its body is read with [`Store::read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveredMessage {
    pub msg_id: u64,
    /// It was delivered at least once from this queue (deliver it with `redelivered = true`).
    pub delivered: bool,
    /// How many times it was marked delivered for this queue.
    pub delivery_count: u32,
}

/// What recovery cut off, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncationReport {
    /// Segment (first LSN) where the damage was found.
    pub segment: u64,
    /// Offset at which that segment was cut (0: the whole file was removed).
    pub offset: u64,
    /// Bytes removed, in that segment and in the later ones.
    pub bytes_discarded: u64,
    /// Later segments deleted because they followed the damage.
    pub segments_deleted: Vec<u64>,
    pub reason: String,
}
