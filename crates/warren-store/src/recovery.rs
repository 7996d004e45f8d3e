//! Recovery at open: load the checkpoint, replay the log after it, truncate a damaged tail.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::checkpoint::{self, Position, CHECKPOINT_TMP};
use crate::error::{Result, StoreError};
use crate::format::{self, SEGMENT_HEADER_LEN};
use crate::fs::{self, Fs, OpenMode};
use crate::index::{Index, UnknownRelocate};
use crate::{Location, TruncationReport};

pub(crate) struct Recovered {
    pub index: Index,
    pub next_lsn: u64,
    /// The segment new records go to, where they start, and whether its file exists.
    pub active_segment: u64,
    pub active_end: u64,
    pub active_exists: bool,
    pub truncated: Option<TruncationReport>,
    pub from_checkpoint: bool,
    pub replayed_records: u64,
}

fn list_segments(fs: &dyn Fs, dir: &Path) -> Result<BTreeMap<u64, PathBuf>> {
    let mut segs = BTreeMap::new();
    let names = fs
        .list(dir)
        .map_err(|e| StoreError::io("list store directory", dir, e))?;
    for name in names {
        if let Some(id) = format::parse_segment_file_name(&name) {
            segs.insert(id, dir.join(name));
        }
    }
    Ok(segs)
}

fn size_of(fs: &dyn Fs, path: &Path) -> io::Result<u64> {
    fs.open(path, OpenMode::Read)?.size()
}

/// Where replay starts.
enum Start {
    Checkpoint(Position),
    Beginning,
}

pub(crate) fn recover(fs: &dyn Fs, dir: &Path) -> Result<Recovered> {
    let tmp = dir.join(CHECKPOINT_TMP);
    match fs.remove(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(StoreError::io("remove stale checkpoint", &tmp, e))
        }
        _ => {}
    }
    crate::spare::remove_spares(fs, dir);
    let mut segs = list_segments(fs, dir)?;
    let (mut index, start) = match checkpoint::read(fs, dir)? {
        Some(Ok((index, pos))) => match checkpoint_consistent(fs, &segs, pos) {
            Ok(()) => (index, Start::Checkpoint(pos)),
            Err(why) => {
                tracing::warn!(
                    path = %checkpoint::path(dir).display(),
                    reason = %why,
                    "checkpoint does not match the log; replaying the whole log"
                );
                (Index::new(), Start::Beginning)
            }
        },
        Some(Err(why)) => {
            tracing::warn!(
                path = %checkpoint::path(dir).display(),
                reason = %why,
                "checkpoint unreadable; replaying the whole log"
            );
            (Index::new(), Start::Beginning)
        }
        None => (Index::new(), Start::Beginning),
    };
    let from_checkpoint = matches!(start, Start::Checkpoint(_));

    let (mut lsn, first_replayed) = match &start {
        Start::Checkpoint(pos) => {
            index.unknown_relocate = UnknownRelocate::Ignore;
            // Segments before the checkpoint position are read only for bodies: note their
            // sizes, delete those with nothing live (their deletion was pending), and forget
            // live messages whose segment has vanished.
            let before: Vec<(u64, PathBuf)> = segs
                .range(..pos.segment)
                .map(|(&k, v)| (k, v.clone()))
                .collect();
            for (id, path) in before {
                let live = index.segs.get(&id).map_or(0, |s| s.live);
                if live == 0 {
                    fs.remove(&path)
                        .map_err(|e| StoreError::io("delete dead segment", &path, e))?;
                    segs.remove(&id);
                    index.remove_segment(id);
                } else {
                    let len =
                        size_of(fs, &path).map_err(|e| StoreError::io("stat segment", &path, e))?;
                    index.extend_segment(id, len);
                }
            }
            let missing: Vec<u64> = index
                .segs
                .keys()
                .copied()
                .chain(index.loose.values().map(|l| l.segment))
                .filter(|seg| *seg < pos.segment && !segs.contains_key(seg))
                .collect();
            let mut lost = 0;
            for seg in missing {
                lost += index.drop_segment(seg);
            }
            if lost > 0 {
                tracing::warn!(
                    count = lost,
                    "live messages in the checkpoint point at missing segments; dropping them"
                );
            }
            (pos.next_lsn, pos.segment)
        }
        Start::Beginning => {
            let first = segs.keys().next().copied().unwrap_or(1);
            // A log that does not start at LSN 1 lost segments to deletion; without a
            // checkpoint, a relocated copy may be the only record of a message.
            index.unknown_relocate = if first == 1 {
                UnknownRelocate::Ignore
            } else {
                UnknownRelocate::Insert
            };
            (first, first)
        }
    };

    let mut truncated = None;
    let mut replayed = 0u64;
    let mut active: Option<(u64, u64)> = None;
    let ids: Vec<u64> = segs.range(first_replayed..).map(|(&k, _)| k).collect();
    for (n, &id) in ids.iter().enumerate() {
        let path = segs[&id].clone();
        let resume = match &start {
            Start::Checkpoint(pos) if id == pos.segment => Some(pos.offset),
            _ => None,
        };
        // Only the part after the checkpoint is read (a segment is up to 64 MiB).
        let from = resume.unwrap_or(0);
        let (header, data, file_len) = read_segment(fs, &path, from)?;
        // A newer Warren's segment is not damage: refuse to open rather than cut it off (a
        // downgrade must not delete the log).
        match format::segment_version(&header) {
            Some(version) if version != format::FORMAT_VERSION => {
                return Err(StoreError::Incompatible {
                    path,
                    version,
                    supported: format::FORMAT_VERSION,
                })
            }
            _ => {}
        }
        let damage = |offset: u64, reason: String| (offset, reason);
        let outcome: std::result::Result<u64, (u64, String)> = (|| {
            let first_lsn = format::decode_segment_header(&header).map_err(|r| damage(0, r))?;
            if first_lsn != id {
                return Err(damage(
                    0,
                    format!("header says first LSN {first_lsn}, name says {id}"),
                ));
            }
            let mut off = match resume {
                Some(o) => o,
                None => {
                    if id != lsn {
                        if from_checkpoint || id < lsn {
                            return Err(damage(
                                0,
                                format!("segment starts at LSN {id}, expected {lsn}"),
                            ));
                        }
                        tracing::warn!(
                            segment = id,
                            expected = lsn,
                            "gap in the log; relocated copies are taken as live"
                        );
                        index.unknown_relocate = UnknownRelocate::Insert;
                        lsn = id;
                    }
                    SEGMENT_HEADER_LEN
                }
            };
            index.extend_segment(id, off);
            while off < file_len {
                let rest = &data[(off - from) as usize..];
                // A prepared segment is zeros past its last record (see `spare.rs`): a
                // record length of 0 (or a shorter run of zeros at the very end) ends it.
                if rest.iter().take(4).all(|&b| b == 0) {
                    break;
                }
                let d = format::decode(rest).map_err(|e| damage(off, e.reason()))?;
                let body = d.body.map(|(b, len)| Location {
                    segment: id,
                    offset: off + b,
                    len,
                });
                index.apply(&d.op, id, off + d.rec_len, body);
                lsn += 1;
                replayed += 1;
                off += d.rec_len;
            }
            Ok(off)
        })();
        match outcome {
            Ok(end) => {
                let last = n + 1 == ids.len();
                let f = fs
                    .open(&path, OpenMode::Write)
                    .map_err(|e| StoreError::io("open segment for fsync", &path, e))?;
                // The last segment's zeros after its records go: appends continue at `end`,
                // and whatever an unfinished write left further on (an unsynced page that
                // reached the disk while an earlier one did not) must never be read as records.
                if last && end < file_len {
                    f.set_len(end)
                        .map_err(|e| StoreError::io("cut prepared segment", &path, e))?;
                }
                // Durability: what was just replayed may exist only in the page cache (the
                // previous process died between write and fsync, or ran in page-cache mode).
                // It must be on disk before a checkpoint covering it can be written; so must
                // the cut above before anything is appended after it.
                f.sync_data()
                    .map_err(|e| StoreError::io("fsync recovered segment", &path, e))?;
                active = Some((id, end));
            }
            Err((offset, reason)) => {
                let later: Vec<u64> = ids[n + 1..].to_vec();
                let report = cut(fs, dir, &segs, id, offset, file_len, later, reason)?;
                if offset < SEGMENT_HEADER_LEN {
                    index.drop_segment(id);
                    // The damaged file is gone: the previous segment (if any) stays active.
                    active = active.or_else(|| {
                        segs.range(..id)
                            .next_back()
                            .map(|(&k, _)| (k, index.segs.get(&k).map_or(0, |s| s.size)))
                    });
                } else {
                    active = Some((id, offset));
                }
                truncated = Some(report);
                break;
            }
        }
    }
    // No segment replayed: appends go to the checkpoint's segment (or the last one before it).
    let (active_segment, active_end, active_exists) = match active {
        Some((id, end)) if end >= SEGMENT_HEADER_LEN => (id, end, true),
        _ => (lsn, SEGMENT_HEADER_LEN, false),
    };
    Ok(Recovered {
        index,
        next_lsn: lsn,
        active_segment,
        active_end,
        active_exists,
        truncated,
        from_checkpoint,
        replayed_records: replayed,
    })
}

/// Reads a segment's header (as much of it as exists) and its bytes from `from` on; returns
/// them with the file's length.
fn read_segment(fs: &dyn Fs, path: &Path, from: u64) -> Result<(Vec<u8>, Vec<u8>, u64)> {
    use std::io::Read;
    let io_err = |e| StoreError::io("read segment", path, e);
    let f = fs.open(path, OpenMode::Read).map_err(io_err)?;
    let len = f.size().map_err(io_err)?;
    let mut header = Vec::with_capacity(SEGMENT_HEADER_LEN as usize);
    fs::Reader::new(&*f, 0)
        .take(SEGMENT_HEADER_LEN)
        .read_to_end(&mut header)
        .map_err(io_err)?;
    let from = from.min(len);
    let mut data = Vec::with_capacity((len - from) as usize);
    fs::Reader::new(&*f, from)
        .read_to_end(&mut data)
        .map_err(io_err)?;
    let end = from + data.len() as u64;
    Ok((header, data, end))
}

/// A checkpoint is usable only if the log still reaches the position it covers.
fn checkpoint_consistent(
    fs: &dyn Fs,
    segs: &BTreeMap<u64, PathBuf>,
    pos: Position,
) -> std::result::Result<(), String> {
    match segs.get(&pos.segment) {
        Some(path) => {
            let f = fs.open(path, OpenMode::Read).map_err(|e| e.to_string())?;
            let len = f.size().map_err(|e| e.to_string())?;
            if len < pos.offset {
                return Err(format!(
                    "segment {} is {len} bytes, checkpoint covers {}",
                    pos.segment, pos.offset
                ));
            }
            let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
            fs::read_exact_at(&*f, &mut header, 0).map_err(|e| e.to_string())?;
            match format::decode_segment_header(&header) {
                Ok(first) if first == pos.segment => Ok(()),
                Ok(first) => Err(format!("segment {} header says {first}", pos.segment)),
                Err(why) => Err(format!("segment {}: {why}", pos.segment)),
            }
        }
        None => {
            if segs.range(pos.segment..).next().is_some() {
                return Err(format!(
                    "segment {} is missing but later ones exist",
                    pos.segment
                ));
            }
            if pos.segment != pos.next_lsn {
                return Err(format!(
                    "segment {} is missing and the checkpoint is inside it",
                    pos.segment
                ));
            }
            Ok(())
        }
    }
}

/// Truncates `segment` at `offset` (deleting it if the header is damaged) and deletes every
/// later segment: nothing before the damage is lost, nothing after it is trusted.
#[allow(clippy::too_many_arguments)]
fn cut(
    fs: &dyn Fs,
    dir: &Path,
    segs: &BTreeMap<u64, PathBuf>,
    segment: u64,
    offset: u64,
    file_len: u64,
    later: Vec<u64>,
    reason: String,
) -> Result<TruncationReport> {
    let path = &segs[&segment];
    let mut discarded = file_len - offset.min(file_len);
    if offset < SEGMENT_HEADER_LEN {
        fs.remove(path)
            .map_err(|e| StoreError::io("delete damaged segment", path, e))?;
    } else {
        let f = fs
            .open(path, OpenMode::Write)
            .map_err(|e| StoreError::io("open segment for truncation", path, e))?;
        f.set_len(offset)
            .map_err(|e| StoreError::io("truncate segment", path, e))?;
        // Durability: the cut must stick before new records are appended after it.
        f.sync_data()
            .map_err(|e| StoreError::io("fsync truncated segment", path, e))?;
    }
    for id in &later {
        let p = &segs[id];
        discarded += size_of(fs, p).unwrap_or(0);
        fs.remove(p)
            .map_err(|e| StoreError::io("delete segment after damage", p, e))?;
    }
    checkpoint::sync_dir(fs, dir)?;
    tracing::warn!(
        segment,
        offset,
        bytes_discarded = discarded,
        later_segments_deleted = later.len(),
        reason = %reason,
        "damaged log tail truncated"
    );
    Ok(TruncationReport {
        segment,
        offset,
        bytes_discarded: discarded,
        segments_deleted: later,
        reason,
    })
}
