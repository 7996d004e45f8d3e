//! The store's one error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in `warren-store`, in the store's own words.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O call failed; `context` says what the store was doing and `path` on which file.
    #[error("{context} ({path}): {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Bytes on disk are not what the store wrote (bad magic, CRC mismatch, impossible length).
    #[error("corrupt data in {path} at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The segment a `Location` names no longer exists (deleted after its messages died, or
    /// compacted away).
    #[error("segment {segment} does not exist")]
    MissingSegment { segment: u64 },
    /// The location has been reserved but the writer has not written it yet; read it after
    /// `wait_durable` on the publish's LSN.
    #[error("location segment {segment} offset {offset} is not written yet")]
    NotWritten { segment: u64, offset: u64 },
    /// No live message has this id (never published, or settled by every queue that held it).
    #[error("no live message {msg_id}")]
    NotFound { msg_id: u64 },
    /// The caller passed something the store cannot record (empty queue list, oversize record).
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// The disk is full: the record was not accepted. The writer keeps what it already
    /// accepted and writes it (and accepts new records again) as soon as space returns.
    #[error("no space left on the store's disk; new messages are refused until space returns")]
    NoSpace,
    /// The writer thread failed (an earlier write or fsync error); the store accepts nothing more
    /// and must be reopened, which runs recovery.
    #[error("store writer failed: {0}")]
    WriterFailed(String),
    /// The store was closed (or crashed in a test) before the operation could complete.
    #[error("store is closed")]
    Closed,
    /// A file was written in a format this version does not read (by a newer Warren). The
    /// store refuses to open rather than treat it as damage and discard it.
    #[error("{path} is in format version {version}, which this Warren does not read (it reads {supported}); refusing to open the store rather than discard it")]
    Incompatible {
        path: PathBuf,
        version: u32,
        supported: u32,
    },
}

impl StoreError {
    /// Whether this is the disk (or quota) being full.
    pub(crate) fn is_no_space(&self) -> bool {
        match self {
            StoreError::NoSpace => true,
            StoreError::Io { source, .. } => crate::fs::is_no_space(source),
            _ => false,
        }
    }

    /// The same failure, as one the writer cannot recover from (even a full disk).
    pub(crate) fn fatal(self) -> Self {
        match self {
            e @ StoreError::Io { .. } => StoreError::WriterFailed(e.to_string()),
            e => e,
        }
    }

    pub(crate) fn io(context: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            context,
            path: path.into(),
            source,
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
