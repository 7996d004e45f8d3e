//! Checkpoints: a snapshot of the live index and the log position it covers.
//!
//! Restart loads the newest checkpoint and replays only the log after its position, so restart
//! cost is bounded by the tail, not by the total data. The file is replaced atomically
//! (temp file, fsync, rename, fsync of the directory).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use smallvec::SmallVec;

use crate::error::{Result, StoreError};
use crate::format::Cursor;
use crate::index::{Entry, Index, QueueRef};
use crate::Location;

pub const CHECKPOINT_FILE: &str = "checkpoint";
pub const CHECKPOINT_TMP: &str = "checkpoint.tmp";
const MAGIC: &[u8; 8] = b"WARRENCP";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 24;

/// The log position a checkpoint covers: every record before `(segment, offset)` is reflected
/// in it; `next_lsn` is the LSN of the first record at that position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub segment: u64,
    pub offset: u64,
    pub next_lsn: u64,
}

/// Serializes the index and the position it covers.
pub(crate) fn encode(index: &Index, pos: Position) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + index.segs.len() * 16 + index.msgs.len() * 56);
    for v in [pos.segment, pos.offset, pos.next_lsn, index.next_msg_id] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    body.extend_from_slice(&(index.segs.len() as u64).to_le_bytes());
    for (seg, stat) in &index.segs {
        body.extend_from_slice(&seg.to_le_bytes());
        body.extend_from_slice(&stat.size.to_le_bytes());
    }
    body.extend_from_slice(&(index.msgs.len() as u64).to_le_bytes());
    for (msg_id, e) in &index.msgs {
        body.extend_from_slice(&msg_id.to_le_bytes());
        body.extend_from_slice(&e.order.to_le_bytes());
        body.extend_from_slice(&e.loc.segment.to_le_bytes());
        body.extend_from_slice(&e.loc.offset.to_le_bytes());
        body.extend_from_slice(&e.loc.len.to_le_bytes());
        body.extend_from_slice(&e.rec_len.to_le_bytes());
        body.extend_from_slice(&(e.queues.len() as u16).to_le_bytes());
        for q in &e.queues {
            body.extend_from_slice(&q.queue.to_le_bytes());
            body.extend_from_slice(&q.deliveries.to_le_bytes());
        }
    }
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Parses a checkpoint file's bytes back into an index and its position.
pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<(Index, Position), String> {
    if bytes.len() < HEADER_LEN || &bytes[0..8] != MAGIC {
        return Err("bad checkpoint header".into());
    }
    let mut h = Cursor::new(&bytes[8..HEADER_LEN]);
    let version = h.u32().unwrap_or(0);
    if version != VERSION {
        return Err(format!("unsupported checkpoint version {version}"));
    }
    let body_len = h.u64().unwrap_or(u64::MAX);
    let crc = h.u32().unwrap_or(0);
    let body = &bytes[HEADER_LEN..];
    if body.len() as u64 != body_len {
        return Err("checkpoint length mismatch".into());
    }
    if crc32c::crc32c(body) != crc {
        return Err("checkpoint CRC mismatch".into());
    }
    let short = || "checkpoint body cut short".to_string();
    let mut r = Cursor::new(body);
    let pos = Position {
        segment: r.u64().ok_or_else(short)?,
        offset: r.u64().ok_or_else(short)?,
        next_lsn: r.u64().ok_or_else(short)?,
    };
    let mut index = Index::new();
    let next_msg_id = r.u64().ok_or_else(short)?;
    let nsegs = r.u64().ok_or_else(short)?;
    for _ in 0..nsegs {
        let seg = r.u64().ok_or_else(short)?;
        let size = r.u64().ok_or_else(short)?;
        index.extend_segment(seg, size);
    }
    let nmsgs = r.u64().ok_or_else(short)?;
    index.msgs.reserve(
        usize::try_from(nmsgs)
            .map_err(|_| short())?
            .min(body.len() / 40),
    );
    for _ in 0..nmsgs {
        let msg_id = r.u64().ok_or_else(short)?;
        let order = r.u64().ok_or_else(short)?;
        let loc = Location {
            segment: r.u64().ok_or_else(short)?,
            offset: r.u64().ok_or_else(short)?,
            len: r.u32().ok_or_else(short)?,
        };
        let rec_len = r.u32().ok_or_else(short)?;
        let nq = r.u16().ok_or_else(short)?;
        let mut queues = SmallVec::with_capacity(nq as usize);
        for _ in 0..nq {
            queues.push(QueueRef {
                queue: r.u64().ok_or_else(short)?,
                deliveries: r.u32().ok_or_else(short)?,
            });
        }
        if queues.is_empty() {
            return Err(format!("checkpoint entry {msg_id} has no queues"));
        }
        index.insert(
            msg_id,
            Entry {
                order,
                loc,
                rec_len,
                queues,
            },
        );
    }
    if r.remaining() != 0 {
        return Err("trailing bytes in checkpoint".into());
    }
    index.next_msg_id = index.next_msg_id.max(next_msg_id);
    Ok((index, pos))
}

/// Writes `bytes` as the directory's checkpoint, atomically.
pub(crate) fn write_atomically(dir: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(CHECKPOINT_TMP);
    let dst = dir.join(CHECKPOINT_FILE);
    let mut f = File::create(&tmp).map_err(|e| StoreError::io("create checkpoint", &tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| StoreError::io("write checkpoint", &tmp, e))?;
    // Durability: the new checkpoint's bytes must be on disk before the rename makes it the
    // checkpoint, or a crash could leave a name pointing at garbage.
    f.sync_all()
        .map_err(|e| StoreError::io("fsync checkpoint", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, &dst).map_err(|e| StoreError::io("rename checkpoint", &dst, e))?;
    // Durability: the rename itself lives in the directory.
    sync_dir(dir)
}

/// Reads the checkpoint file, if any. A missing file is `Ok(None)`; an unreadable or invalid one
/// is reported as `Err(reason)` in the inner result so that recovery can fall back.
pub(crate) fn read(dir: &Path) -> Result<Option<std::result::Result<(Index, Position), String>>> {
    let path = dir.join(CHECKPOINT_FILE);
    match fs::read(&path) {
        Ok(bytes) => Ok(Some(decode(&bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("read checkpoint", &path, e)),
    }
}

/// fsyncs a directory so that creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| StoreError::io("open directory", dir, e))?;
    d.sync_all()
        .map_err(|e| StoreError::io("fsync directory", dir, e))
}

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}
