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
//! opaque `u64` ids: a message id, the queue ids it is stored for, its body. The broker decides
//! what they mean. It does not depend on tokio either: waiting for durability is a
//! [`WaitDurable`] future driven by std `Waker`s, usable from any executor (or
//! [`Store::wait_durable_blocking`] from a thread).
//!
//! Invariants:
//! - LSNs are assigned under one short mutex together with the record's file position, and
//!   records reach the writer in that order, so LSN order = file order and a returned
//!   [`Location`] is exactly where the body will be.
//! - An LSN is reported durable only after the `fdatasync` that covers it (in
//!   [`SyncMode::Fsync`]), and every earlier LSN is durable too.
//! - Every record is CRC32C-framed; recovery stops at the first record that fails, truncates
//!   the log there and deletes any later segment. Nothing before the damage is lost.
//! - A checkpoint never covers log that is not on disk; a segment is deleted only when it holds
//!   no live message *and* a durable checkpoint covers it (so acks stored in it are never
//!   needed by recovery).
//! - The writer thread alone writes segments and owns the index; no lock spans the store.

mod checkpoint;
mod durable;
mod error;
mod format;
mod index;
pub mod meta;
mod recovery;
mod store;
mod writer;

use std::collections::HashMap;

pub use durable::WaitDurable;
pub use error::StoreError;
pub use format::{FORMAT_VERSION, MAX_QUEUES_PER_MESSAGE, MAX_RECORD_LEN};
pub use meta::MetaStore;
pub use store::{Relocation, Store, StoreConfig, StoreStats, SyncMode};

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
    /// Live messages per queue id, each list in publish order.
    pub queues: HashMap<u64, Vec<RecoveredMessage>>,
    /// One more than the largest message id ever stored: a safe next id.
    pub next_msg_id: u64,
    /// Set if a damaged tail was cut off.
    pub truncated: Option<TruncationReport>,
    /// Whether a checkpoint was used (otherwise the whole log was replayed).
    pub from_checkpoint: bool,
    /// Log records replayed after the checkpoint (or in total).
    pub replayed_records: u64,
}

/// One live message of a queue after recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveredMessage {
    pub msg_id: u64,
    pub location: Location,
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
