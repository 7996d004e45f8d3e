//! [`SimFs`]: an in-memory file system that can lose power or run out of space, for testing the
//! store (and anything built on it) against the failures a real disk has.
//!
//! It remembers, per file, what was fsynced and the writes since; per directory tree, the
//! names as of the last directory fsync and the creations, removals and renames since.
//! [`SimFs::crash`] builds what a disk could hold after a power cut at that instant: the
//! synced state, plus a prefix of the unsynced name changes (journaled metadata stays in
//! order), plus a random subset of the unsynced writes, some torn at 512-byte sectors. A cut
//! can also be scheduled at the n-th mutating operation ([`SimFs::cut_power_at`]): that
//! operation and everything after it fail, as if the process died mid-call. A capacity makes
//! writes fail with `ENOSPC` (after a short write, as Linux does) until it is raised.
//!
//! Simplifications, all on the harsh side or neutral: directories exist once created; a file
//! removed while open stops counting against capacity at once; `sync_data` also makes the
//! file's size durable (as `fdatasync` does for appends).

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::fs::{Fs, FsFile, OpenMode};

const SECTOR: u64 = 512;

#[derive(Debug, Clone)]
enum NameOp {
    Link(PathBuf, u64),
    Unlink(PathBuf),
    Rename(PathBuf, PathBuf),
}

#[derive(Debug, Clone)]
enum Pending {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
struct Inode {
    data: Vec<u8>,
    synced: Vec<u8>,
    pending: Vec<Pending>,
}

#[derive(Debug, Default)]
struct State {
    dirs: BTreeSet<PathBuf>,
    names: BTreeMap<PathBuf, u64>,
    synced_names: BTreeMap<PathBuf, u64>,
    name_log: Vec<NameOp>,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    ops: u64,
    cut_at: Option<u64>,
    dead: bool,
    capacity: Option<u64>,
    locks: BTreeSet<PathBuf>,
}

fn power_lost() -> io::Error {
    io::Error::other("simulated power cut")
}

impl State {
    /// Counts one mutating operation; fails it (and all later ones) once power is cut.
    fn tick(&mut self) -> io::Result<()> {
        if self.dead {
            return Err(power_lost());
        }
        self.ops += 1;
        if self.cut_at == Some(self.ops) {
            self.dead = true;
            return Err(power_lost());
        }
        Ok(())
    }

    fn alive(&self) -> io::Result<()> {
        if self.dead {
            Err(power_lost())
        } else {
            Ok(())
        }
    }

    fn used(&self) -> u64 {
        let named: BTreeSet<u64> = self.names.values().copied().collect();
        named
            .iter()
            .filter_map(|i| self.inodes.get(i))
            .map(|n| n.data.len() as u64)
            .sum()
    }

    fn apply_name(names: &mut BTreeMap<PathBuf, u64>, op: &NameOp) {
        match op {
            NameOp::Link(p, i) => {
                names.insert(p.clone(), *i);
            }
            NameOp::Unlink(p) => {
                names.remove(p);
            }
            NameOp::Rename(from, to) => {
                if let Some(i) = names.remove(from) {
                    names.insert(to.clone(), i);
                }
            }
        }
    }

    fn name_op(&mut self, op: NameOp) {
        Self::apply_name(&mut self.names, &op);
        self.name_log.push(op);
    }
}

fn apply(data: &mut Vec<u8>, p: &Pending) {
    match p {
        Pending::Write(off, bytes) => {
            let end = *off as usize + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[*off as usize..end].copy_from_slice(bytes);
        }
        Pending::SetLen(len) => data.resize(*len as usize, 0),
    }
}

/// splitmix64: a small deterministic random source, so that a crash is reproducible from its
/// seed without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// The simulated file system; clones share it.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl SimFs {
    pub fn new() -> Self {
        SimFs::default()
    }

    /// Mutating operations (writes, truncations, syncs, creations, removals, renames) so far.
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// The power fails during the `n`-th mutating operation from the start: it and every
    /// operation after it fail, and nothing they would have done happens.
    pub fn cut_power_at(&self, n: u64) {
        self.state.lock().cut_at = Some(n);
    }

    /// Whether the power has been cut.
    pub fn is_dead(&self) -> bool {
        self.state.lock().dead
    }

    /// Bytes the files may hold in all (`None`: unlimited). A write that would pass it
    /// writes what fits and then fails with `ENOSPC`.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state.lock().capacity = bytes;
    }

    /// Bytes the named files hold.
    pub fn used(&self) -> u64 {
        self.state.lock().used()
    }

    /// What the disk could hold after losing power now, chosen by `seed`: a new file system
    /// with the power back on, holding exactly that.
    pub fn crash(&self, seed: u64) -> SimFs {
        let st = self.state.lock();
        let mut rng = Rng(seed);
        let mut names = st.synced_names.clone();
        let kept = rng.below(st.name_log.len() as u64 + 1) as usize;
        for op in &st.name_log[..kept] {
            State::apply_name(&mut names, op);
        }
        let mut inodes = HashMap::new();
        for &i in names.values() {
            let Some(node) = st.inodes.get(&i) else {
                continue;
            };
            let mut data = node.synced.clone();
            for p in &node.pending {
                match rng.below(3) {
                    0 => apply(&mut data, p),
                    1 => {}
                    _ => match p {
                        // Torn: some of its sectors made it, others did not.
                        Pending::Write(off, bytes) => {
                            let end = off + bytes.len() as u64;
                            let mut at = *off;
                            while at < end {
                                let next = ((at / SECTOR) + 1) * SECTOR;
                                let piece_end = next.min(end);
                                if rng.below(2) == 0 {
                                    let piece = bytes
                                        [(at - off) as usize..(piece_end - off) as usize]
                                        .to_vec();
                                    apply(&mut data, &Pending::Write(at, piece));
                                }
                                at = piece_end;
                            }
                        }
                        other => apply(&mut data, other),
                    },
                }
            }
            inodes.insert(
                i,
                Inode {
                    synced: data.clone(),
                    data,
                    pending: Vec::new(),
                },
            );
        }
        SimFs {
            state: Arc::new(Mutex::new(State {
                dirs: st.dirs.clone(),
                synced_names: names.clone(),
                names,
                inodes,
                next_inode: st.next_inode,
                ..State::default()
            })),
        }
    }
}

#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<State>>,
    inode: u64,
    writable: bool,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut State, u64) -> io::Result<T>) -> io::Result<T> {
        let mut st = self.state.lock();
        f(&mut st, self.inode)
    }
}

fn read_only() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "file opened read-only")
}

impl FsFile for SimFile {
    fn size(&self) -> io::Result<u64> {
        self.with(|st, i| {
            st.alive()?;
            Ok(st.inodes.get(&i).map_or(0, |n| n.data.len() as u64))
        })
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(|st, i| {
            st.alive()?;
            let data = st.inodes.get(&i).map(|n| &n.data[..]).unwrap_or(&[]);
            let start = (offset as usize).min(data.len());
            let n = buf.len().min(data.len() - start);
            buf[..n].copy_from_slice(&data[start..start + n]);
            Ok(n)
        })
    }

    fn write_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<usize> {
        if !self.writable {
            return Err(read_only());
        }
        self.with(|st, i| {
            st.tick()?;
            let mut bytes: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let len = st.inodes.get(&i).map_or(0, |n| n.data.len() as u64);
            let end = offset + bytes.len() as u64;
            if let Some(cap) = st.capacity {
                let growth = end.saturating_sub(len);
                let room = cap.saturating_sub(st.used());
                if growth > room {
                    // Linux writes what fits, then fails the next call.
                    let fits = (len + room).saturating_sub(offset);
                    if fits == 0 {
                        return Err(io::Error::from_raw_os_error(
                            rustix::io::Errno::NOSPC.raw_os_error(),
                        ));
                    }
                    bytes.truncate(fits as usize);
                }
            }
            let n = bytes.len();
            let node = st.inodes.entry(i).or_default();
            let p = Pending::Write(offset, bytes);
            apply(&mut node.data, &p);
            node.pending.push(p);
            Ok(n)
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if !self.writable {
            return Err(read_only());
        }
        self.with(|st, i| {
            st.tick()?;
            let cur = st.inodes.get(&i).map_or(0, |n| n.data.len() as u64);
            if let Some(cap) = st.capacity {
                if len > cur && len - cur > cap.saturating_sub(st.used()) {
                    return Err(io::Error::from_raw_os_error(
                        rustix::io::Errno::NOSPC.raw_os_error(),
                    ));
                }
            }
            let node = st.inodes.entry(i).or_default();
            let p = Pending::SetLen(len);
            apply(&mut node.data, &p);
            node.pending.push(p);
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|st, i| {
            st.tick()?;
            let node = st.inodes.entry(i).or_default();
            node.synced = node.data.clone();
            node.pending.clear();
            Ok(())
        })
    }
}

struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.state.lock().locks.remove(&self.path);
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl Fs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.alive()?;
        for a in dir.ancestors() {
            st.dirs.insert(a.to_owned());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state.lock();
        st.alive()?;
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FsFile>> {
        let mut st = self.state.lock();
        let existing = st.names.get(path).copied();
        let inode = match (mode, existing) {
            (OpenMode::Read | OpenMode::Write, Some(i)) => {
                st.alive()?;
                i
            }
            (OpenMode::Read | OpenMode::Write, None) => {
                st.alive()?;
                return Err(not_found(path));
            }
            (OpenMode::CreateNew, Some(_)) => {
                st.alive()?;
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ));
            }
            (OpenMode::Truncate, Some(i)) => {
                st.tick()?;
                let node = st.inodes.entry(i).or_default();
                node.data.clear();
                node.pending.push(Pending::SetLen(0));
                i
            }
            (OpenMode::Truncate | OpenMode::CreateNew, None) => {
                st.tick()?;
                if !path.parent().is_some_and(|d| st.dirs.contains(d)) {
                    return Err(not_found(path));
                }
                st.next_inode += 1;
                let i = st.next_inode;
                st.inodes.insert(i, Inode::default());
                st.name_op(NameOp::Link(path.to_owned(), i));
                i
            }
        };
        Ok(Arc::new(SimFile {
            state: self.state.clone(),
            inode,
            writable: mode != OpenMode::Read,
        }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.tick()?;
        if !st.names.contains_key(path) {
            return Err(not_found(path));
        }
        st.name_op(NameOp::Unlink(path.to_owned()));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.tick()?;
        if !st.names.contains_key(from) {
            return Err(not_found(from));
        }
        st.name_op(NameOp::Rename(from.to_owned(), to.to_owned()));
        Ok(())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.tick()?;
        // A directory fsync commits the file system's journal: every name change so far.
        st.synced_names = st.names.clone();
        st.name_log.clear();
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
        let mut st = self.state.lock();
        st.alive()?;
        if !st.locks.insert(path.to_owned()) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked", path.display()),
            ));
        }
        Ok(Box::new(SimLock {
            state: self.state.clone(),
            path: path.to_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(f: &dyn FsFile, off: u64, b: &[u8]) {
        crate::fs::write_all_at(f, &mut [IoSlice::new(b)], off).unwrap();
    }

    fn contents(fs: &SimFs, path: &Path) -> Option<Vec<u8>> {
        let f = fs.open(path, OpenMode::Read).ok()?;
        Some(crate::fs::read_all(&*f).unwrap())
    }

    #[test]
    fn only_synced_data_and_names_are_certain_after_a_crash() {
        let fs = SimFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let a = dir.join("a");
        let f = fs.open(&a, OpenMode::CreateNew).unwrap();
        write(&*f, 0, &[1; 1000]);
        f.sync_data().unwrap();
        fs.sync_dir(dir).unwrap();
        write(&*f, 1000, &[2; 2000]);
        let b = dir.join("b");
        fs.open(&b, OpenMode::CreateNew).unwrap();
        let mut saw_torn = false;
        let mut saw_b = false;
        for seed in 0..200 {
            let after = fs.crash(seed);
            let data = contents(&after, &a).expect("synced file survives");
            assert_eq!(&data[..1000], &[1; 1000][..], "synced bytes survive");
            assert!(data[1000..].iter().all(|&x| x == 0 || x == 2));
            saw_torn |= data.len() > 1000 && data[1000..].contains(&0);
            saw_b |= contents(&after, &b).is_some();
        }
        assert!(saw_torn, "some crash tears the unsynced write");
        assert!(saw_b, "some crash keeps the unsynced creation");
    }

    #[test]
    fn a_cut_fails_that_operation_and_every_later_one() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let f = fs.open(Path::new("/d/a"), OpenMode::CreateNew).unwrap();
        fs.cut_power_at(fs.ops() + 2);
        write(&*f, 0, b"one");
        assert!(f.sync_data().is_err());
        assert!(fs.is_dead());
        assert!(f.write_at(&[IoSlice::new(b"x")], 3).is_err());
        let after = fs.crash(1);
        assert!(contents(&after, Path::new("/d/a")).is_none_or(|d| d.is_empty() || d == b"one"));
    }

    #[test]
    fn a_full_disk_writes_what_fits_then_refuses_until_space_returns() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let f = fs.open(Path::new("/d/a"), OpenMode::CreateNew).unwrap();
        fs.set_capacity(Some(100));
        assert_eq!(f.write_at(&[IoSlice::new(&[7; 150])], 0).unwrap(), 100);
        let e = f.write_at(&[IoSlice::new(&[7; 50])], 100).unwrap_err();
        assert!(crate::fs::is_no_space(&e));
        f.set_len(40).unwrap();
        assert_eq!(f.write_at(&[IoSlice::new(&[7; 50])], 40).unwrap(), 50);
        fs.set_capacity(None);
        assert_eq!(f.write_at(&[IoSlice::new(&[7; 500])], 90).unwrap(), 500);
    }
}
