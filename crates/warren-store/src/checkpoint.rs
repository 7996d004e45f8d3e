//! Checkpoints: a snapshot of the live index and the log position it covers.
//!
//! Restart loads the newest checkpoint and replays only the log after its position, so restart
//! cost is bounded by the tail, not by the total data. The file is replaced atomically
//! (temp file, fsync, rename, fsync of the directory).

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use roaring::RoaringTreemap;

use crate::error::{Result, StoreError};
use crate::fs::{self, Fs, FsFile, OpenMode};
use crate::index::{IdMap, Index, Loose, SegStat, Slot};

pub const CHECKPOINT_FILE: &str = "checkpoint";
pub const CHECKPOINT_TMP: &str = "checkpoint.tmp";
const MAGIC: &[u8; 8] = b"WARRENCP";
/// 2: dense per-segment slots and per-queue bitmaps, length and CRC in a trailer so that the
/// file is written and read as a stream (1: one entry per message, CRC in the header).
const VERSION: u32 = 2;
const HEADER_LEN: usize = 12;
const TRAILER_LEN: u64 = 12;

/// The log position a checkpoint covers: every record before `(segment, offset)` is reflected
/// in it; `next_lsn` is the LSN of the first record at that position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub segment: u64,
    pub offset: u64,
    pub next_lsn: u64,
}

/// A writer that counts and checksums what passes through it.
struct Summing<W> {
    inner: W,
    len: u64,
    crc: u32,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.len += n as u64;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that counts and checksums what passes through it.
struct Checked<R> {
    inner: R,
    len: u64,
    crc: u32,
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.len += n as u64;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }
}

/// Serializes the index and the position it covers into `out`, as a stream: a checkpoint of
/// ten million messages is ~100 MB and must not need a second copy in memory.
///
/// Layout (all little-endian): header (magic, version); body: position (segment, offset,
/// next LSN), next message id; the segments, each with its size, first id and dense slots
/// (`offset:u32 len:u32 refs:u16`); the loose messages (`id segment offset:u32 len:u32
/// refs:u16`); each queue's live ids as a serialized roaring bitmap; the non-zero delivery
/// counts per queue; trailer: body length, body CRC32C.
pub(crate) fn encode(index: &Index, pos: Position, out: impl Write) -> io::Result<()> {
    let mut out = out;
    out.write_all(MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    let mut w = Summing {
        inner: &mut out,
        len: 0,
        crc: 0,
    };
    for v in [pos.segment, pos.offset, pos.next_lsn, index.next_msg_id] {
        w.write_all(&v.to_le_bytes())?;
    }
    w.write_all(&(index.segs.len() as u64).to_le_bytes())?;
    for (seg, stat) in &index.segs {
        for v in [*seg, stat.size, stat.first_id, stat.slots.len() as u64] {
            w.write_all(&v.to_le_bytes())?;
        }
        for (slot, refs) in stat.slots.iter().zip(&stat.refs) {
            let mut rec = [0u8; 10];
            rec[0..4].copy_from_slice(&slot.offset.to_le_bytes());
            rec[4..8].copy_from_slice(&slot.len.to_le_bytes());
            rec[8..10].copy_from_slice(&refs.to_le_bytes());
            w.write_all(&rec)?;
        }
    }
    w.write_all(&(index.loose.len() as u64).to_le_bytes())?;
    for (id, l) in &index.loose {
        w.write_all(&id.to_le_bytes())?;
        w.write_all(&l.segment.to_le_bytes())?;
        w.write_all(&l.slot.offset.to_le_bytes())?;
        w.write_all(&l.slot.len.to_le_bytes())?;
        w.write_all(&l.refs.to_le_bytes())?;
    }
    w.write_all(&(index.queues.len() as u64).to_le_bytes())?;
    for (q, ids) in &index.queues {
        w.write_all(&q.to_le_bytes())?;
        w.write_all(&(ids.serialized_size() as u64).to_le_bytes())?;
        ids.serialize_into(&mut w)?;
    }
    w.write_all(&(index.delivered.len() as u64).to_le_bytes())?;
    for (q, counts) in &index.delivered {
        w.write_all(&q.to_le_bytes())?;
        w.write_all(&(counts.len() as u64).to_le_bytes())?;
        for (id, n) in counts {
            w.write_all(&id.to_le_bytes())?;
            w.write_all(&n.to_le_bytes())?;
        }
    }
    let (len, crc) = (w.len, w.crc);
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&crc.to_le_bytes())?;
    out.flush()
}

fn u16_of(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_le_bytes(b))
}

fn u32_of(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn u64_of(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// A count read from the file, bounded by what the rest of the body could hold (a damaged
/// count must not make us allocate terabytes before the CRC says it is damaged).
fn count(r: &mut impl Read, room: u64, min_item: u64) -> io::Result<usize> {
    let n = u64_of(r)?;
    if n > room / min_item.max(1) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("count {n} exceeds the checkpoint's size"),
        ));
    }
    Ok(n as usize)
}

/// Parses a checkpoint (`file_len` bytes) back into an index and its position.
pub(crate) fn decode(
    input: impl Read,
    file_len: u64,
) -> std::result::Result<(Index, Position), String> {
    let mut input = input;
    let mut header = [0u8; HEADER_LEN];
    input
        .read_exact(&mut header)
        .map_err(|_| "bad checkpoint header".to_string())?;
    if &header[0..8] != MAGIC {
        return Err("bad checkpoint header".into());
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != VERSION {
        return Err(format!("unsupported checkpoint version {version}"));
    }
    let room = file_len
        .checked_sub(HEADER_LEN as u64 + TRAILER_LEN)
        .ok_or("checkpoint cut short")?;
    let mut r = Checked {
        inner: (&mut input).take(room),
        len: 0,
        crc: 0,
    };
    let parsed = decode_body(&mut r, room).map_err(|e| format!("checkpoint body: {e}"));
    let (len, crc) = (r.len, r.crc);
    let stored_len = u64_of(&mut input).map_err(|_| "checkpoint trailer missing")?;
    let stored_crc = u32_of(&mut input).map_err(|_| "checkpoint trailer missing")?;
    // The CRC is judged first: a damaged body may also have failed to parse.
    if stored_len != room || len != room || stored_crc != crc {
        return Err("checkpoint CRC or length mismatch".into());
    }
    parsed
}

fn decode_body(r: &mut impl Read, room: u64) -> io::Result<(Index, Position)> {
    let pos = Position {
        segment: u64_of(r)?,
        offset: u64_of(r)?,
        next_lsn: u64_of(r)?,
    };
    let mut index = Index::new();
    index.next_msg_id = u64_of(r)?.max(1);
    for _ in 0..count(r, room, 32)? {
        let seg = u64_of(r)?;
        let size = u64_of(r)?;
        let first_id = u64_of(r)?;
        let n = count(r, room, 10)?;
        let mut stat = SegStat {
            size,
            first_id,
            slots: Vec::with_capacity(n),
            refs: Vec::with_capacity(n),
            ..SegStat::default()
        };
        for _ in 0..n {
            let mut rec = [0u8; 10];
            r.read_exact(&mut rec)?;
            stat.slots.push(Slot {
                offset: u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]),
                len: u32::from_le_bytes([rec[4], rec[5], rec[6], rec[7]]),
            });
            stat.refs.push(u16::from_le_bytes([rec[8], rec[9]]));
        }
        if n > 0 {
            index.by_first_id.insert(first_id, seg);
        }
        index.segs.insert(seg, stat);
    }
    for _ in 0..count(r, room, 26)? {
        let id = u64_of(r)?;
        let loose = Loose {
            segment: u64_of(r)?,
            slot: Slot {
                offset: u32_of(r)?,
                len: u32_of(r)?,
            },
            refs: u16_of(r)?,
        };
        index.loose.insert(id, loose);
    }
    for _ in 0..count(r, room, 16)? {
        let q = u64_of(r)?;
        let len = count(r, room, 1)? as u64;
        let ids = RoaringTreemap::deserialize_from(r.take(len))?;
        index.queues.insert(q, ids);
    }
    for _ in 0..count(r, room, 16)? {
        let q = u64_of(r)?;
        let n = count(r, room, 12)?;
        let mut counts = IdMap::default();
        counts.reserve(n);
        for _ in 0..n {
            let id = u64_of(r)?;
            counts.insert(id, u32_of(r)?);
        }
        index.delivered.insert(q, counts);
    }
    let mut rest = [0u8; 1];
    if r.read(&mut rest)? != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "trailing bytes"));
    }
    index.recount();
    Ok((index, pos))
}

/// Writes a checkpoint of `index` to the temporary file (not yet synced); [`install`] makes it
/// the checkpoint.
pub(crate) fn write_tmp(
    fs: &dyn Fs,
    dir: &Path,
    index: &Index,
    pos: Position,
) -> Result<Arc<dyn FsFile>> {
    let tmp = dir.join(CHECKPOINT_TMP);
    let f = fs
        .open(&tmp, OpenMode::Truncate)
        .map_err(|e| StoreError::io("create checkpoint", &tmp, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, fs::Writer::new(&*f, 0));
    let written = encode(index, pos, &mut w).and_then(|()| w.flush());
    drop(w);
    if let Err(e) = written {
        // A full disk must not keep a half checkpoint's worth of space.
        let _ = f.set_len(0);
        return Err(StoreError::io("write checkpoint", &tmp, e));
    }
    Ok(f)
}

/// Makes the temporary file written by [`write_tmp`] the checkpoint, atomically.
pub(crate) fn install(fs: &dyn Fs, dir: &Path, tmp_file: Arc<dyn FsFile>) -> Result<()> {
    let tmp = dir.join(CHECKPOINT_TMP);
    let dst = dir.join(CHECKPOINT_FILE);
    // Durability: the new checkpoint's bytes must be on disk before the rename makes it the
    // checkpoint, or a crash could leave a name pointing at garbage.
    tmp_file
        .sync_data()
        .map_err(|e| StoreError::io("fsync checkpoint", &tmp, e))?;
    drop(tmp_file);
    fs.rename(&tmp, &dst)
        .map_err(|e| StoreError::io("rename checkpoint", &dst, e))?;
    // Durability: the rename itself lives in the directory.
    sync_dir(fs, dir)
}

/// Reads the checkpoint file, if any. A missing file is `Ok(None)`; an unreadable or invalid one
/// is reported as `Err(reason)` in the inner result so that recovery can fall back.
pub(crate) fn read(
    fs: &dyn Fs,
    dir: &Path,
) -> Result<Option<std::result::Result<(Index, Position), String>>> {
    let path = dir.join(CHECKPOINT_FILE);
    let f = match fs.open(&path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("read checkpoint", &path, e)),
    };
    let len = f
        .size()
        .map_err(|e| StoreError::io("read checkpoint", &path, e))?;
    Ok(Some(decode(
        BufReader::with_capacity(1 << 20, fs::Reader::new(&*f, 0)),
        len,
    )))
}

/// fsyncs a directory so that creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(fs: &dyn Fs, dir: &Path) -> Result<()> {
    fs.sync_dir(dir)
        .map_err(|e| StoreError::io("fsync directory", dir, e))
}

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Op;
    use crate::Location;

    fn sample() -> Index {
        let mut ix = Index::new();
        for id in 1..=1000u64 {
            let op = Op::Publish {
                msg_id: id,
                queues: [id % 3, 7].into_iter().collect(),
            };
            let loc = Location {
                segment: 1 + id / 400,
                offset: id * 64,
                len: 30,
            };
            ix.apply(&op, loc.segment, loc.offset + 30, Some(loc));
        }
        ix.apply(
            &Op::Ack {
                queue: 7,
                ids: (1..=500).collect(),
            },
            3,
            0,
            None,
        );
        ix.apply(
            &Op::Delivered {
                queue: 1,
                ids: vec![700, 703],
            },
            3,
            0,
            None,
        );
        ix
    }

    fn encoded(ix: &Index) -> Vec<u8> {
        let pos = Position {
            segment: 3,
            offset: 999,
            next_lsn: 1234,
        };
        let mut out = Vec::new();
        encode(ix, pos, &mut out).unwrap();
        out
    }

    #[test]
    fn a_checkpoint_streams_back_into_the_same_index() {
        let ix = sample();
        let bytes = encoded(&ix);
        let (back, pos) = decode(&bytes[..], bytes.len() as u64).unwrap();
        assert_eq!(pos.next_lsn, 1234);
        assert_eq!(back.live, ix.live);
        assert_eq!(back.queues, ix.queues);
        assert_eq!(back.delivered, ix.delivered);
        assert_eq!(back.next_msg_id, ix.next_msg_id);
        for id in 1..=1000 {
            assert_eq!(back.locate(id), ix.locate(id), "id {id}");
        }
    }

    #[test]
    fn a_damaged_or_cut_checkpoint_is_refused() {
        let bytes = encoded(&sample());
        for cut in [0, 5, 12, 100, bytes.len() - 1] {
            assert!(decode(&bytes[..cut], cut as u64).is_err(), "cut at {cut}");
        }
        for at in [12, 50, bytes.len() / 2, bytes.len() - 13] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(decode(&bad[..], bad.len() as u64).is_err(), "flip at {at}");
        }
    }
}
