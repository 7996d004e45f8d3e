//! A tiny durable key-value store for topology (vhosts, users, exchanges, queues, bindings):
//! few entries, rare writes, every write durable on return.
//!
//! One append-only file, `meta.log`: a header (`WARRENMT`, version u32) and CRC-framed records
//! `len:u32 | crc32c:u32 | op:u8 | key_len:u16 | key | value` (op 1 = put, 2 = delete; the CRC
//! covers len, op and everything after). Open replays it, stops at the first damaged record,
//! and compacts: the live entries are rewritten to `meta.log.tmp`, fsynced, renamed over
//! `meta.log`, and the directory fsynced. The file is also compacted when it grows to several
//! times its live size.

use std::any::Any;
use std::collections::BTreeMap;
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::checkpoint::sync_dir;
use crate::error::{Result, StoreError};
use crate::format::Cursor;
use crate::fs::{self, Fs, FsFile, OpenMode, OsFs};

const MAGIC: &[u8; 8] = b"WARRENMT";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 12;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const FILE: &str = "meta.log";
const TMP: &str = "meta.log.tmp";
const LOCK: &str = "meta.lock";

struct State {
    file: Arc<dyn FsFile>,
    map: BTreeMap<String, Vec<u8>>,
    /// Bytes in the file, and bytes its live entries would need: compaction when the former
    /// outgrows the latter.
    file_len: u64,
    live_len: u64,
    /// Set by [`MetaStore::close`]: writes are refused from then on.
    closed: bool,
}

/// Durable topology storage. `Send + Sync`; calls are serialized.
pub struct MetaStore {
    dir: PathBuf,
    fs: Arc<dyn Fs>,
    state: Mutex<State>,
    /// Holds the directory's `flock` until [`MetaStore::close`] (or drop).
    lock: Mutex<Option<Box<dyn Any + Send + Sync>>>,
}

impl std::fmt::Debug for MetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn encode(op: u8, key: &str, value: &[u8], out: &mut Vec<u8>) -> Result<()> {
    if key.len() > u16::MAX as usize {
        return Err(StoreError::Invalid("metadata key longer than 65535 bytes"));
    }
    let len = 1 + 2 + key.len() + value.len();
    let len = u32::try_from(len).map_err(|_| StoreError::Invalid("metadata value too large"))?;
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.push(op);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(value);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[start..start + 4]), &out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

fn entry_len(key: &str, value: &[u8]) -> u64 {
    (8 + 1 + 2 + key.len() + value.len()) as u64
}

/// Replays a meta file; returns the map and where the valid data ends.
fn replay(bytes: &[u8], path: &Path) -> Result<(BTreeMap<String, Vec<u8>>, usize)> {
    let mut map = BTreeMap::new();
    if bytes.len() < HEADER_LEN {
        return Ok((map, 0));
    }
    if &bytes[0..8] != MAGIC {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            offset: 0,
            reason: "bad metadata file magic".into(),
        });
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != VERSION {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            offset: 8,
            reason: format!("unsupported metadata version {version}"),
        });
    }
    let mut off = HEADER_LEN;
    while off < bytes.len() {
        let rest = &bytes[off..];
        let valid = (|| {
            let mut r = Cursor::new(rest);
            let len = r.u32()? as usize;
            let crc = r.u32()?;
            let data = r.bytes(len)?;
            if crc32c::crc32c_append(crc32c::crc32c(&rest[0..4]), data) != crc {
                return None;
            }
            let mut d = Cursor::new(data);
            let op = d.u8()?;
            let klen = d.u16()? as usize;
            let key = std::str::from_utf8(d.bytes(klen)?).ok()?.to_owned();
            let value = d.bytes(d.remaining())?.to_vec();
            Some((8 + len, op, key, value))
        })();
        let Some((n, op, key, value)) = valid else {
            tracing::warn!(
                path = %path.display(),
                offset = off,
                bytes_discarded = bytes.len() - off,
                "damaged metadata tail dropped"
            );
            break;
        };
        match op {
            OP_PUT => {
                map.insert(key, value);
            }
            OP_DELETE => {
                map.remove(&key);
            }
            _ => {
                tracing::warn!(path = %path.display(), offset = off, op, "unknown metadata op; tail dropped");
                break;
            }
        }
        off += n;
    }
    Ok((map, off))
}

impl MetaStore {
    /// Opens (creating if needed) the metadata in `dir`, compacting it.
    pub fn open(dir: impl AsRef<Path>) -> Result<MetaStore> {
        MetaStore::open_on(Arc::new(OsFs), dir)
    }

    /// [`MetaStore::open`] on the given file system.
    pub fn open_on(fs: Arc<dyn Fs>, dir: impl AsRef<Path>) -> Result<MetaStore> {
        let dir = dir.as_ref().to_owned();
        fs.create_dir_all(&dir)
            .map_err(|e| StoreError::io("create metadata dir", &dir, e))?;
        let lock_path = dir.join(LOCK);
        let lock = fs
            .lock(&lock_path)
            .map_err(|e| StoreError::io("lock metadata (already open?)", &lock_path, e))?;
        let path = dir.join(FILE);
        let bytes = match fs.open(&path, OpenMode::Read) {
            Ok(f) => fs::read_all(&*f).map_err(|e| StoreError::io("read metadata", &path, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(StoreError::io("read metadata", &path, e)),
        };
        let (map, _) = replay(&bytes, &path)?;
        let (file, file_len) = rewrite(&*fs, &dir, &map)?;
        let live_len = file_len;
        Ok(MetaStore {
            dir,
            fs,
            state: Mutex::new(State {
                file,
                map,
                file_len,
                live_len,
                closed: false,
            }),
            lock: Mutex::new(Some(lock)),
        })
    }

    fn append(&self, st: &mut State, op: u8, key: &str, value: &[u8]) -> Result<()> {
        if st.closed {
            return Err(StoreError::Closed);
        }
        let mut rec = Vec::with_capacity(16 + key.len() + value.len());
        encode(op, key, value, &mut rec)?;
        let path = self.dir.join(FILE);
        let written = fs::write_all_at(&*st.file, &mut [IoSlice::new(&rec)], st.file_len)
            .map_err(|e| StoreError::io("append metadata", &path, e))
            // Durability: every metadata change is on disk before the call returns.
            .and_then(|()| {
                st.file
                    .sync_data()
                    .map_err(|e| StoreError::io("fsync metadata", &path, e))
            });
        if let Err(e) = written {
            // A record cut short (a full disk) must not stay in front of the next one, or
            // replay would stop there and lose every later change; nor may a record the
            // caller was told failed come back after a restart.
            let _ = st
                .file
                .set_len(st.file_len)
                .and_then(|()| st.file.sync_data());
            return Err(e);
        }
        st.file_len += rec.len() as u64;
        Ok(())
    }

    fn maybe_compact(&self, st: &mut State) -> Result<()> {
        if st.file_len > 4 * st.live_len + (1 << 20) {
            let (file, len) = rewrite(&*self.fs, &self.dir, &st.map)?;
            st.file = file;
            st.file_len = len;
            st.live_len = len;
        }
        Ok(())
    }

    /// Sets `key` to `value`, durably.
    pub fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        let mut st = self.state.lock();
        self.append(&mut st, OP_PUT, key, value)?;
        if let Some(old) = st.map.insert(key.to_owned(), value.to_vec()) {
            st.live_len -= entry_len(key, &old);
        }
        st.live_len += entry_len(key, value);
        self.maybe_compact(&mut st)
    }

    /// Removes `key`, durably (a no-op if it is absent).
    pub fn delete(&self, key: &str) -> Result<()> {
        let mut st = self.state.lock();
        if !st.map.contains_key(key) {
            return Ok(());
        }
        self.append(&mut st, OP_DELETE, key, &[])?;
        if let Some(old) = st.map.remove(key) {
            st.live_len -= entry_len(key, &old);
        }
        self.maybe_compact(&mut st)
    }

    /// Refuses further writes and releases the directory lock, so the directory can be opened
    /// again at once even while this handle is still shared. Every write made so far is on
    /// disk already.
    pub fn close(&self) {
        // Under the state lock: a write in progress finishes before the lock goes.
        let mut st = self.state.lock();
        st.closed = true;
        self.lock.lock().take();
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.state.lock().map.get(key).cloned()
    }

    /// Every entry, sorted by key.
    pub fn iter(&self) -> Vec<(String, Vec<u8>)> {
        self.state
            .lock()
            .map
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Writes `map` as a fresh file, atomically replacing `meta.log`; returns it open for appends.
fn rewrite(
    fs: &dyn Fs,
    dir: &Path,
    map: &BTreeMap<String, Vec<u8>>,
) -> Result<(Arc<dyn FsFile>, u64)> {
    let tmp = dir.join(TMP);
    let dst = dir.join(FILE);
    let mut buf = Vec::new();
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&VERSION.to_le_bytes());
    for (k, v) in map {
        encode(OP_PUT, k, v, &mut buf)?;
    }
    let f = fs
        .open(&tmp, OpenMode::Truncate)
        .map_err(|e| StoreError::io("create metadata", &tmp, e))?;
    fs::write_all_at(&*f, &mut [IoSlice::new(&buf)], 0)
        .map_err(|e| StoreError::io("write metadata", &tmp, e))?;
    // Durability: the new file is complete on disk before it replaces the old one.
    f.sync_data()
        .map_err(|e| StoreError::io("fsync metadata", &tmp, e))?;
    drop(f);
    fs.rename(&tmp, &dst)
        .map_err(|e| StoreError::io("rename metadata", &dst, e))?;
    sync_dir(fs, dir)?;
    let file = fs
        .open(&dst, OpenMode::Write)
        .map_err(|e| StoreError::io("open metadata", &dst, e))?;
    Ok((file, buf.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimFs;
    use std::fs::OpenOptions;
    use std::io::Write;

    #[test]
    fn a_write_refused_by_a_full_disk_leaves_no_trace_and_later_writes_survive() {
        let sim = SimFs::new();
        let m = MetaStore::open_on(Arc::new(sim.clone()), "/meta").unwrap();
        m.put("a", b"1").unwrap();
        sim.set_capacity(Some(sim.used() + 20));
        let e = m.put("big", &[7; 100]).unwrap_err();
        assert!(e.is_no_space(), "{e}");
        sim.set_capacity(None);
        m.put("b", b"2").unwrap();
        drop(m);
        let again = MetaStore::open_on(Arc::new(sim.crash(7)), "/meta").unwrap();
        assert_eq!(
            again.iter(),
            vec![
                ("a".to_string(), b"1".to_vec()),
                ("b".to_string(), b"2".to_vec())
            ]
        );
    }

    #[test]
    fn put_delete_survive_reopen_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let m = MetaStore::open(dir.path()).unwrap();
            m.put("vhost/", b"{}").unwrap();
            m.put("queue//q1", b"durable").unwrap();
            m.put("queue//q2", b"x").unwrap();
            m.put("queue//q1", b"durable2").unwrap();
            m.delete("queue//q2").unwrap();
            m.delete("absent").unwrap();
        }
        let m = MetaStore::open(dir.path()).unwrap();
        assert_eq!(
            m.iter(),
            vec![
                ("queue//q1".to_string(), b"durable2".to_vec()),
                ("vhost/".to_string(), b"{}".to_vec()),
            ]
        );
        m.put("binding//a", b"b").unwrap();
        drop(m);
        // A torn append: garbage after the last record is dropped, everything before kept.
        let path = dir.path().join(FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let m = MetaStore::open(dir.path()).unwrap();
        assert_eq!(m.iter().len(), 3);
        assert_eq!(m.get("binding//a"), Some(b"b".to_vec()));
    }

    #[test]
    fn second_open_of_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _m = MetaStore::open(dir.path()).unwrap();
        assert!(MetaStore::open(dir.path()).is_err());
    }

    #[test]
    fn close_refuses_writes_and_lets_the_dir_be_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        m.put("k", b"v").unwrap();
        m.close();
        assert!(matches!(m.put("k2", b"v"), Err(StoreError::Closed)));
        let again = MetaStore::open(dir.path()).unwrap();
        assert_eq!(again.iter(), vec![("k".to_string(), b"v".to_vec())]);
    }

    #[test]
    fn grows_then_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(dir.path()).unwrap();
        let v = vec![7u8; 4096];
        for _ in 0..600 {
            m.put("k", &v).unwrap();
        }
        let len = std::fs::metadata(dir.path().join(FILE)).unwrap().len();
        assert!(len < 2 << 20, "file not compacted: {len}");
        drop(m);
        let m = MetaStore::open(dir.path()).unwrap();
        assert_eq!(m.get("k"), Some(v));
    }
}
