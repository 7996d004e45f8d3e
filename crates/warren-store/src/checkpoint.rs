//! Checkpoints: a snapshot of the live index and the log position it covers.
//!
//! Restart loads the newest checkpoint and replays only the log after its position, so restart
//! cost is bounded by the tail, not by the total data. The file is replaced atomically
//! (temp file, fsync, rename, fsync of the directory).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use roaring::RoaringTreemap;

use crate::error::{Result, StoreError};
use crate::format::Cursor;
use crate::index::{IdMap, Index, Loose, SegStat, Slot};

pub const CHECKPOINT_FILE: &str = "checkpoint";
pub const CHECKPOINT_TMP: &str = "checkpoint.tmp";
const MAGIC: &[u8; 8] = b"WARRENCP";
/// 2: dense per-segment slots and per-queue bitmaps (1: one entry per message).
const VERSION: u32 = 2;
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
///
/// Layout (all little-endian): position (segment, offset, next LSN), next message id; the
/// segments, each with its size, first id and dense slots (`offset:u32 len:u32 refs:u16`);
/// the loose messages (`id segment offset:u32 len:u32 refs:u16`); each queue's live ids as a
/// serialized roaring bitmap; the non-zero delivery counts per queue.
pub(crate) fn encode(index: &Index, pos: Position) -> Vec<u8> {
    let slots: usize = index.segs.values().map(|s| s.slots.len()).sum();
    let mut body = Vec::with_capacity(64 + index.segs.len() * 32 + slots * 10);
    for v in [pos.segment, pos.offset, pos.next_lsn, index.next_msg_id] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    body.extend_from_slice(&(index.segs.len() as u64).to_le_bytes());
    for (seg, stat) in &index.segs {
        for v in [*seg, stat.size, stat.first_id, stat.slots.len() as u64] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        for (slot, refs) in stat.slots.iter().zip(&stat.refs) {
            body.extend_from_slice(&slot.offset.to_le_bytes());
            body.extend_from_slice(&slot.len.to_le_bytes());
            body.extend_from_slice(&refs.to_le_bytes());
        }
    }
    body.extend_from_slice(&(index.loose.len() as u64).to_le_bytes());
    for (id, l) in &index.loose {
        body.extend_from_slice(&id.to_le_bytes());
        body.extend_from_slice(&l.segment.to_le_bytes());
        body.extend_from_slice(&l.slot.offset.to_le_bytes());
        body.extend_from_slice(&l.slot.len.to_le_bytes());
        body.extend_from_slice(&l.refs.to_le_bytes());
    }
    body.extend_from_slice(&(index.queues.len() as u64).to_le_bytes());
    for (q, ids) in &index.queues {
        body.extend_from_slice(&q.to_le_bytes());
        body.extend_from_slice(&(ids.serialized_size() as u64).to_le_bytes());
        // Writing into a Vec cannot fail.
        let _ = ids.serialize_into(&mut body);
    }
    body.extend_from_slice(&(index.delivered.len() as u64).to_le_bytes());
    for (q, counts) in &index.delivered {
        body.extend_from_slice(&q.to_le_bytes());
        body.extend_from_slice(&(counts.len() as u64).to_le_bytes());
        for (id, n) in counts {
            body.extend_from_slice(&id.to_le_bytes());
            body.extend_from_slice(&n.to_le_bytes());
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

/// A count read from the file, bounded by what the remaining bytes could hold (a damaged
/// count must not make us allocate terabytes).
fn count(r: &mut Cursor<'_>, min_item: usize) -> std::result::Result<usize, String> {
    let n = r.u64().ok_or("checkpoint body cut short")?;
    match usize::try_from(n) {
        Ok(n) if n <= r.remaining() / min_item.max(1) => Ok(n),
        _ => Err(format!("checkpoint count {n} exceeds its size")),
    }
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
    index.next_msg_id = r.u64().ok_or_else(short)?.max(1);
    for _ in 0..count(&mut r, 32)? {
        let seg = r.u64().ok_or_else(short)?;
        let size = r.u64().ok_or_else(short)?;
        let first_id = r.u64().ok_or_else(short)?;
        let n = count(&mut r, 10)?;
        let mut stat = SegStat {
            size,
            first_id,
            slots: Vec::with_capacity(n),
            refs: Vec::with_capacity(n),
            ..SegStat::default()
        };
        for _ in 0..n {
            stat.slots.push(Slot {
                offset: r.u32().ok_or_else(short)?,
                len: r.u32().ok_or_else(short)?,
            });
            stat.refs.push(r.u16().ok_or_else(short)?);
        }
        if n > 0 {
            index.by_first_id.insert(first_id, seg);
        }
        index.segs.insert(seg, stat);
    }
    for _ in 0..count(&mut r, 26)? {
        let id = r.u64().ok_or_else(short)?;
        let loose = Loose {
            segment: r.u64().ok_or_else(short)?,
            slot: Slot {
                offset: r.u32().ok_or_else(short)?,
                len: r.u32().ok_or_else(short)?,
            },
            refs: r.u16().ok_or_else(short)?,
        };
        index.loose.insert(id, loose);
    }
    for _ in 0..count(&mut r, 16)? {
        let q = r.u64().ok_or_else(short)?;
        let len = count(&mut r, 1)?;
        let raw = r.bytes(len).ok_or_else(short)?;
        let ids = RoaringTreemap::deserialize_from(raw)
            .map_err(|e| format!("checkpoint queue {q}: {e}"))?;
        index.queues.insert(q, ids);
    }
    for _ in 0..count(&mut r, 16)? {
        let q = r.u64().ok_or_else(short)?;
        let n = count(&mut r, 12)?;
        let mut counts = IdMap::default();
        counts.reserve(n);
        for _ in 0..n {
            let id = r.u64().ok_or_else(short)?;
            counts.insert(id, r.u32().ok_or_else(short)?);
        }
        index.delivered.insert(q, counts);
    }
    if r.remaining() != 0 {
        return Err("trailing bytes in checkpoint".into());
    }
    index.recount();
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
