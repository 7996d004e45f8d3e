//! The public handle: configuration, appends (reserve space, hand to the writer), reads,
//! compaction, close.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};
use smallvec::SmallVec;

use crate::durable::{DurableShared, WaitDurable};
use crate::error::{Result, StoreError};
use crate::format::{self, Op, MAX_QUEUES_PER_MESSAGE, SEGMENT_HEADER_LEN};
use crate::fs::{self, Fs, FsFile, OpenMode, OsFs};
use crate::index::Index;
use crate::payload::Body;
use crate::recovery;
use crate::spare::Spares;
use crate::writer::{self, Append, Cmd};
use crate::{Location, Lsn, Recovery};

/// When an append counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `fdatasync` after every group of writes; an LSN is durable only once it is on disk.
    #[default]
    Fsync,
    /// `write()` only: an LSN is "durable" once it is in the OS page cache (survives a crash of
    /// the broker, not of the machine), like RabbitMQ's classic queues. Segment rollovers,
    /// checkpoints and close still fsync.
    PageCache,
}

/// How a [`Store`] is set up. [`StoreConfig::new`] gives defaults that work.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory holding the segments, the checkpoint and the lock file.
    pub dir: PathBuf,
    /// A new segment starts when the next record would not fit (default 64 MiB). A record
    /// larger than this gets a segment of its own.
    pub segment_size: u64,
    pub sync: SyncMode,
    /// A checkpoint is written at least this often while records arrive (default 30 s).
    pub checkpoint_interval: Duration,
    /// ... and also after this many bytes of log since the last one (default 64 MiB, or the
    /// size of the last checkpoint if that is larger), which bounds the tail a restart replays.
    pub checkpoint_bytes: u64,
    /// `compact()` rewrites the live records of non-active segments whose live bytes are below
    /// this fraction of their size (default 0.25).
    pub compact_threshold: f64,
    /// Most live bytes one `compact()` call copies (default 64 MiB).
    pub compact_max_bytes: u64,
    /// If set, a background thread runs [`Store::compact`] this often (default: never; the
    /// broker sets it).
    pub compact_interval: Option<Duration>,
    /// Back-pressure: appends block while this many bytes wait for the writer (default
    /// 16 MiB: several fsyncs' worth at any rate a disk sustains, and no more RAM than that).
    pub max_queued_bytes: u64,
    /// While the disk is full, how often the writer tries again to write what it holds
    /// (default 1 s).
    pub retry_interval: Duration,
    /// In [`SyncMode::Fsync`], a dead segment is not deleted but recycled as the next one: a
    /// background thread fills it with zeros and syncs it (default: on). Writing over
    /// allocated blocks lets `fdatasync` flush data alone, with no file-system journal commit
    /// for a growing file: on ext4 here each sync took ~30% less time and ~25% less CPU, and
    /// scenario 3 ran ~6% faster. A log that only grows (a backlog) has no dead segments and
    /// writes nothing extra.
    pub preallocate: bool,
    /// The file system (default: the operating system's; tests use [`crate::sim::SimFs`]).
    pub fs: Arc<dyn Fs>,
}

impl StoreConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            dir: dir.into(),
            segment_size: 64 << 20,
            sync: SyncMode::Fsync,
            checkpoint_interval: Duration::from_secs(30),
            checkpoint_bytes: 64 << 20,
            compact_threshold: 0.25,
            compact_max_bytes: 64 << 20,
            compact_interval: None,
            preallocate: true,
            max_queued_bytes: 16 << 20,
            retry_interval: Duration::from_secs(1),
            fs: Arc::new(OsFs),
        }
    }
}

/// Counters for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Records written to the log.
    pub records: u64,
    /// Group writes (one `write` of everything that arrived during the previous fsync).
    pub write_batches: u64,
    /// `fdatasync` calls on log segments (group commits, rollovers, pre-checkpoint syncs).
    pub fsyncs: u64,
    pub bytes_written: u64,
    pub checkpoints: u64,
    pub segments_deleted: u64,
    /// Live messages and segments after the writer's last batch.
    pub live_messages: u64,
    pub segments: u64,
    pub durable_lsn: Lsn,
    /// How long the writer paused appends to snapshot the index for the last checkpoint
    /// (the file itself is written and fsynced by another thread).
    pub last_checkpoint_snapshot_micros: u64,
    /// Times the disk was found full (each suspended new messages until space returned).
    pub disk_full: u64,
    /// Whether new messages are refused right now because the disk is full.
    pub suspended: bool,
}

/// A message handed to the log by [`Store::publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Durable once [`Store::wait_durable`] on it resolves.
    pub lsn: Lsn,
    /// The id it is read, acked and recovered by.
    pub msg_id: u64,
}

/// What [`Store::append`] reserved.
struct Appended {
    lsn: Lsn,
    /// The id given to a publish record (0 for other records).
    msg_id: u64,
    loc: Option<Location>,
}

/// A live message moved by [`Store::compact`]: the owner must use `new` from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relocation {
    pub msg_id: u64,
    pub old: Location,
    pub new: Location,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppendState {
    Open,
    /// The disk is full: records with a body are refused ([`StoreError::NoSpace`]) until the
    /// writer has written what it holds; small records (acks) still queue behind it.
    Suspended,
    Closed,
    Failed,
}

/// Bodies at most this far apart are read with one `pread` by [`Store::read_many`] (the bytes
/// between them are read and dropped: an ack record or two).
const READ_GAP: u64 = 4 << 10;
/// Most bytes [`Store::read_many`] reads with one `pread`.
const READ_SPAN: u64 = 1 << 20;

/// Where a body's record bytes start on disk: its own CRC32C precedes it, so one read of
/// `len + 4` bytes from here reads and verifies it. (Saturating: a bogus location is refused
/// by [`Store::read_span`] as inside the segment header, not wrapped around.)
fn crc_at(loc: &Location) -> u64 {
    loc.offset.saturating_sub(4)
}

fn end_of(loc: &Location) -> u64 {
    loc.offset + u64::from(loc.len)
}

/// Splits a run of nearby bodies (in file order) into parts of at most [`READ_SPAN`] bytes.
fn spans(run: &[(usize, Location)]) -> Vec<&[(usize, Location)]> {
    let mut parts = Vec::new();
    let mut from = 0;
    for k in 1..=run.len() {
        let end_of_part = k == run.len() || end_of(&run[k].1) - crc_at(&run[from].1) > READ_SPAN;
        if end_of_part {
            parts.push(&run[from..k]);
            from = k;
        }
    }
    parts
}

/// The reservation state: the next LSN and where its record will go, and the writer's inbox.
/// Held only for the reservation and the hand-off, so the inbox order is the LSN order is the
/// file order.
pub(crate) struct Appender {
    pub next_lsn: Lsn,
    pub segment: u64,
    pub offset: u64,
    pub queued_bytes: u64,
    pub state: AppendState,
    /// The id the next publish gets: ids follow log order, which keeps each segment's
    /// messages a dense run in the index.
    pub next_msg_id: u64,
    /// Commands for the writer, in order. A queue under the lock the reservation holds anyway
    /// costs a push; a channel cost a third of the publisher's share of a persistent publish.
    pub inbox: VecDeque<Cmd>,
    /// The writer sleeps on [`Shared::work`] (a command must wake it).
    pub writer_waiting: bool,
    /// The writer thread has ended: nothing sent will be read.
    pub writer_gone: bool,
}

impl Appender {
    /// Hands a command to the writer.
    pub fn send(&mut self, work: &Condvar, cmd: Cmd) -> Result<()> {
        if self.writer_gone {
            return Err(StoreError::Closed);
        }
        self.inbox.push_back(cmd);
        if self.writer_waiting {
            work.notify_one();
        }
        Ok(())
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub records: AtomicU64,
    pub write_batches: AtomicU64,
    pub fsyncs: AtomicU64,
    pub bytes_written: AtomicU64,
    pub checkpoints: AtomicU64,
    pub segments_deleted: AtomicU64,
    pub live_messages: AtomicU64,
    pub segments: AtomicU64,
    pub checkpoint_snapshot_micros: AtomicU64,
    pub disk_full: AtomicU64,
}

/// State shared by the handles, the writer thread and the checkpoint thread.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub fs: Arc<dyn Fs>,
    pub appender: Mutex<Appender>,
    /// Signalled when queued bytes drop or the store stops.
    pub space: Condvar,
    /// Signalled when the writer has a command (and is waiting for one).
    pub work: Condvar,
    /// End of what the writer has written: `(segment, offset)`. Reads beyond it wait.
    pub written: Mutex<(u64, u64)>,
    /// Signalled each time `written` moves on.
    pub written_cv: Condvar,
    /// Read handles, one per segment; opened and removed under the write lock so a deleted
    /// segment never lingers here.
    pub files: RwLock<HashMap<u64, Arc<dyn FsFile>>>,
    /// Where each live message's body is and who holds it. The writer thread applies records
    /// to it; readers look bodies up in it (briefly: one lookup or one batch).
    pub index: Mutex<Index>,
    pub counters: Counters,
    /// Dead segments recycled as the next ones ([`StoreConfig::preallocate`]).
    pub spares: Option<Spares>,
}

impl Shared {
    pub fn segment_path(&self, segment: u64) -> PathBuf {
        self.dir.join(format::segment_file_name(segment))
    }

    fn read_handle(&self, segment: u64) -> Result<Arc<dyn FsFile>> {
        if let Some(f) = self.files.read().get(&segment) {
            return Ok(f.clone());
        }
        let mut files = self.files.write();
        if let Some(f) = files.get(&segment) {
            return Ok(f.clone());
        }
        let path = self.segment_path(segment);
        let f = match self.fs.open(&path, OpenMode::Read) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::MissingSegment { segment })
            }
            Err(e) => return Err(StoreError::io("open segment for reading", path, e)),
        };
        files.insert(segment, f.clone());
        Ok(f)
    }

    /// Moves the appenders to `to` if they are in one of `from`, and wakes any append waiting
    /// for space so that it sees the change.
    pub fn move_state(&self, from: &[AppendState], to: AppendState) {
        {
            let mut ap = self.appender.lock();
            if from.contains(&ap.state) {
                ap.state = to;
            }
        }
        self.space.notify_all();
    }

    /// Deletes a segment file and forgets its read handle (under the handle lock, so no reader
    /// can re-open it in between).
    pub fn delete_segment(&self, segment: u64) -> Result<()> {
        let mut files = self.files.write();
        let path = self.segment_path(segment);
        let recycled = self.spares.as_ref().is_some_and(|s| s.recycle(&path));
        match if recycled {
            Ok(())
        } else {
            self.fs.remove(&path)
        } {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("delete segment", path, e)),
        }
        files.remove(&segment);
        self.counters
            .segments_deleted
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

struct Inner {
    config: StoreConfig,
    shared: Arc<Shared>,
    durable: Arc<DurableShared>,
    writer: Mutex<Option<JoinHandle<Result<()>>>>,
    compact_lock: Mutex<()>,
    /// The background compactor, and the sender whose drop stops it.
    compactor: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
    /// Holds the directory's `flock` until [`Store::close`] (or the last handle drops).
    lock_file: Mutex<Option<Box<dyn Any + Send + Sync>>>,
}

/// A handle on the store. Cheap to clone; every clone talks to the same writer thread.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.config.dir)
            .finish_non_exhaustive()
    }
}

const LOCK_FILE: &str = "LOCK";

fn lock_dir(fs: &dyn Fs, dir: &Path) -> Result<Box<dyn Any + Send + Sync>> {
    let path = dir.join(LOCK_FILE);
    fs.lock(&path).map_err(|e| {
        StoreError::io(
            "lock store directory (is another store open on it?)",
            &path,
            e,
        )
    })
}

impl Store {
    /// Opens (creating if needed) the store in `config.dir`, runs recovery, and starts the
    /// writer thread. Returns the live messages found.
    pub fn open(config: StoreConfig) -> Result<(Store, Recovery)> {
        if config.segment_size < SEGMENT_HEADER_LEN + 64 {
            return Err(StoreError::Invalid("segment_size too small"));
        }
        let fs = config.fs.clone();
        fs.create_dir_all(&config.dir)
            .map_err(|e| StoreError::io("create store directory", &config.dir, e))?;
        let lock_file = lock_dir(&*fs, &config.dir)?;
        let rec = recovery::recover(&*fs, &config.dir)?;
        let recovery = Recovery {
            queues: rec.index.per_queue(),
            truncated: rec.truncated.clone(),
            from_checkpoint: rec.from_checkpoint,
            replayed_records: rec.replayed_records,
        };
        let durable = Arc::new(DurableShared::new(rec.next_lsn - 1));
        let shared = Arc::new(Shared {
            dir: config.dir.clone(),
            fs,
            appender: Mutex::new(Appender {
                next_lsn: rec.next_lsn,
                segment: rec.active_segment,
                offset: rec.active_end,
                queued_bytes: 0,
                state: AppendState::Open,
                next_msg_id: rec.index.next_msg_id,
                inbox: VecDeque::new(),
                writer_waiting: false,
                writer_gone: false,
            }),
            space: Condvar::new(),
            work: Condvar::new(),
            written: Mutex::new((rec.active_segment, rec.active_end)),
            written_cv: Condvar::new(),
            files: RwLock::new(HashMap::new()),
            index: Mutex::new(rec.index),
            counters: Counters::default(),
            spares: (config.preallocate && config.sync == SyncMode::Fsync)
                .then(|| Spares::new(config.fs.clone(), config.dir.clone(), config.segment_size)),
        });
        // A fresh checkpoint right away makes the next restart cheap, and lets segments that
        // died before the crash be deleted.
        let needs_checkpoint = rec.replayed_records > 0 || rec.truncated.is_some();
        let handle = writer::spawn(writer::WriterSetup {
            shared: shared.clone(),
            durable: durable.clone(),
            config: config.clone(),
            active_segment: rec.active_segment,
            active_end: rec.active_end,
            active_exists: rec.active_exists,
            last_lsn: rec.next_lsn - 1,
            checkpoint_now: needs_checkpoint,
        })?;
        let store = Store {
            inner: Arc::new(Inner {
                config,
                shared,
                durable,
                writer: Mutex::new(Some(handle)),
                compact_lock: Mutex::new(()),
                compactor: Mutex::new(None),
                lock_file: Mutex::new(Some(lock_file)),
            }),
        };
        if let Some(every) = store.inner.config.compact_interval {
            store.spawn_compactor(every)?;
        }
        Ok((store, recovery))
    }

    /// Starts the thread that compacts mostly-dead segments every `every`. It holds only a
    /// weak handle, so it never keeps the store open.
    fn spawn_compactor(&self, every: Duration) -> Result<()> {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let weak = Arc::downgrade(&self.inner);
        let handle = std::thread::Builder::new()
            .name("warren-store-compact".into())
            .spawn(move || loop {
                match stop_rx.recv_timeout(every) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let Some(inner) = weak.upgrade() else { return };
                let store = Store { inner };
                match store.compact() {
                    Ok(moved) if !moved.is_empty() => {
                        tracing::info!(messages = moved.len(), "compacted mostly-dead segments")
                    }
                    Ok(_) => {}
                    Err(StoreError::Closed) => return,
                    Err(e) => tracing::warn!(error = %e, "compaction failed"),
                }
            })
            .map_err(|e| StoreError::io("spawn compaction thread", &self.inner.config.dir, e))?;
        *self.inner.compactor.lock() = Some((stop_tx, handle));
        Ok(())
    }

    /// Reserves the next LSN and file space for `op`, and hands the record to the writer.
    /// A publish record gets its message id here, in log order. Blocks only under
    /// back-pressure (too many bytes waiting for the writer).
    fn append(&self, op: Op, body: Body, sync: bool) -> Result<Appended> {
        let has_body = matches!(op, Op::Publish { .. } | Op::Relocate { .. });
        let body_len = body.len() as u32;
        let mut op = op;
        // Only the length is needed here; the writer thread encodes and checksums the record,
        // off the publisher's path.
        let rec_len = format::record_len(&op, body.len()).map_err(StoreError::Invalid)?;
        let head_len = rec_len - u64::from(body_len);
        let shared = &self.inner.shared;
        let mut ap = shared.appender.lock();
        loop {
            match ap.state {
                AppendState::Open => {}
                AppendState::Suspended if has_body => return Err(StoreError::NoSpace),
                // Acks must not be lost or block the broker while the disk is full: they are
                // small, and queue behind what the writer holds without back-pressure.
                AppendState::Suspended => break,
                AppendState::Closed => return Err(StoreError::Closed),
                AppendState::Failed => {
                    return Err(self
                        .inner
                        .durable
                        .failure()
                        .unwrap_or(StoreError::WriterFailed("writer stopped".into())))
                }
            }
            if ap.queued_bytes == 0
                || ap.queued_bytes + rec_len <= self.inner.config.max_queued_bytes
            {
                break;
            }
            shared.space.wait(&mut ap);
        }
        if ap.offset > SEGMENT_HEADER_LEN && ap.offset + rec_len > self.inner.config.segment_size {
            ap.segment = ap.next_lsn;
            ap.offset = SEGMENT_HEADER_LEN;
        }
        let lsn = ap.next_lsn;
        let (segment, offset) = (ap.segment, ap.offset);
        let loc = has_body.then_some(Location {
            segment,
            offset: offset + head_len,
            len: body_len,
        });
        let mut msg_id = 0;
        if let Op::Publish { msg_id: id, .. } = &mut op {
            msg_id = ap.next_msg_id;
            *id = msg_id;
        }
        // Sent under the lock: the writer receives records in reservation order, so it writes
        // every record exactly at the offset reserved for it.
        ap.send(
            &shared.work,
            Cmd::Append(Append {
                lsn,
                segment,
                offset,
                len: rec_len,
                sync,
                op,
                body,
            }),
        )?;
        ap.next_lsn += 1;
        ap.offset += rec_len;
        ap.queued_bytes += rec_len;
        if msg_id != 0 {
            ap.next_msg_id += 1;
        }
        Ok(Appended { lsn, msg_id, loc })
    }

    /// Appends a message stored once for several queues (a fanout writes the body once) and
    /// gives it its id. Returns at once; the record is durable once [`Store::wait_durable`]
    /// on the returned LSN resolves, and readable with [`Store::read`] right away.
    pub fn publish(&self, queues: &[u64], payload: impl Into<Body>) -> Result<Published> {
        self.publish_with(queues, payload.into(), true)
    }

    /// [`Store::publish`] for a message nobody will wait for: a copy of a transient message
    /// that a queue pages out of memory, under an id that recovery discards. The writer does
    /// not fsync for it (a batch of nothing but such records is only written; the next fsync
    /// covers it), so paging a backlog out runs at the speed of writing, not of syncing.
    pub fn publish_volatile(&self, queues: &[u64], payload: impl Into<Body>) -> Result<Published> {
        self.publish_with(queues, payload.into(), false)
    }

    fn publish_with(&self, queues: &[u64], payload: Body, sync: bool) -> Result<Published> {
        if queues.is_empty() {
            return Err(StoreError::Invalid("a message needs at least one queue"));
        }
        let mut qs: SmallVec<[u64; 4]> = SmallVec::from_slice(queues);
        qs.sort_unstable();
        qs.dedup();
        if qs.len() > MAX_QUEUES_PER_MESSAGE {
            return Err(StoreError::Invalid("too many queues for one message"));
        }
        let a = self.append(
            Op::Publish {
                msg_id: 0,
                queues: qs,
            },
            payload,
            sync,
        )?;
        Ok(Published {
            lsn: a.lsn,
            msg_id: a.msg_id,
        })
    }

    /// The messages are settled (acked, dropped) for `queue`; a message settled for all its
    /// queues is dead. One small record for the whole batch of ids.
    pub fn ack(&self, queue: u64, msg_ids: &[u64]) -> Result<Lsn> {
        if msg_ids.is_empty() {
            return Ok(self.last_lsn());
        }
        self.append(
            Op::Ack {
                queue,
                ids: msg_ids.to_vec(),
            },
            Body::default(),
            true,
        )
        .map(|a| a.lsn)
    }

    /// The messages were delivered (or requeued after a delivery) from `queue`: their
    /// delivery count goes up by one, and recovery reports them as `delivered`.
    pub fn mark_delivered(&self, queue: u64, msg_ids: &[u64]) -> Result<Lsn> {
        if msg_ids.is_empty() {
            return Ok(self.last_lsn());
        }
        self.append(
            Op::Delivered {
                queue,
                ids: msg_ids.to_vec(),
            },
            Body::default(),
            true,
        )
        .map(|a| a.lsn)
    }

    /// Settles every message of `queue` for it (queue deleted or purged).
    pub fn drop_queue(&self, queue: u64) -> Result<Lsn> {
        self.append(Op::DropQueue { queue }, Body::default(), true)
            .map(|a| a.lsn)
    }

    fn last_lsn(&self) -> Lsn {
        self.inner.shared.appender.lock().next_lsn - 1
    }

    /// Reads a live message's body back (one lookup, one `pread`), verifying its CRC.
    pub fn read(&self, msg_id: u64) -> Result<Bytes> {
        // A segment may be deleted (after compaction moved the body) between the lookup and
        // the read: look again once.
        for _ in 0..2 {
            let Some(loc) = self.inner.shared.index.lock().locate(msg_id) else {
                return self.read_unapplied(msg_id);
            };
            match self.read_at(&loc) {
                Err(StoreError::MissingSegment { .. }) => continue,
                r => return r,
            }
        }
        Err(StoreError::NotFound { msg_id })
    }

    /// The stored size of a live message's payload, without reading it.
    pub fn len_of(&self, msg_id: u64) -> Option<u32> {
        self.inner.shared.index.lock().locate(msg_id).map(|l| l.len)
    }

    /// A message the index does not know: published but not yet written (wait for the writer,
    /// which is never far behind), or not alive.
    fn read_unapplied(&self, msg_id: u64) -> Result<Bytes> {
        if msg_id == 0 || msg_id >= self.inner.shared.appender.lock().next_msg_id {
            return Err(StoreError::NotFound { msg_id });
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let shared = &self.inner.shared;
        loop {
            {
                let index = shared.index.lock();
                if let Some(loc) = index.locate(msg_id) {
                    drop(index);
                    return self.read_at(&loc);
                }
                if msg_id < index.next_msg_id {
                    return Err(StoreError::NotFound { msg_id });
                }
            }
            let mut written = shared.written.lock();
            if shared
                .written_cv
                .wait_until(&mut written, deadline)
                .timed_out()
            {
                return Err(StoreError::NotFound { msg_id });
            }
        }
    }

    /// Reads the bodies of several live messages, in the order given: [`Store::read`] for a
    /// batch. Bodies that lie close together in one segment (a backlog paged out in order)
    /// are read with one `pread` and handed out as slices of it, so draining a long backlog
    /// costs a system call per run of messages, not per message.
    pub fn read_many(&self, msg_ids: &[u64]) -> Vec<Result<Bytes>> {
        let mut located: Vec<(usize, Location)> = {
            let index = self.inner.shared.index.lock();
            msg_ids
                .iter()
                .enumerate()
                .filter_map(|(i, &id)| index.locate(id).map(|l| (i, l)))
                .collect()
        };
        located.sort_by_key(|(_, l)| (l.segment, l.offset));
        let mut out: Vec<Option<Result<Bytes>>> = (0..msg_ids.len()).map(|_| None).collect();
        // Runs of bodies close together in one segment, each read at once.
        for run in located
            .chunk_by(|(_, a), (_, b)| b.segment == a.segment && crc_at(b) <= end_of(a) + READ_GAP)
        {
            for part in spans(run) {
                let (first, last) = (part[0].1, part[part.len() - 1].1);
                let start = crc_at(&first);
                let end = end_of(&last);
                // On failure (a segment deleted meanwhile by compaction, an unreadable span),
                // each is read on its own below.
                if let Ok(span) = self.read_span(first.segment, start, end) {
                    for (i, loc) in part {
                        let at = (crc_at(loc) - start) as usize;
                        let body = span.slice(at..at + 4 + loc.len as usize);
                        out[*i] = Some(self.verified(body, loc));
                    }
                }
            }
        }
        out.into_iter()
            .zip(msg_ids)
            .map(|(r, &id)| r.unwrap_or_else(|| self.read(id)))
            .collect()
    }

    /// Reads the body at `loc` (one `pread`), verifying its CRC. The location must have been
    /// written (its publish waited for, or returned by recovery or `compact`).
    fn read_at(&self, loc: &Location) -> Result<Bytes> {
        let buf = self.read_span(loc.segment, crc_at(loc), end_of(loc))?;
        self.verified(buf, loc)
    }

    /// Bytes `start..end` of `segment`, once the writer has written them.
    fn read_span(&self, segment: u64, start: u64, end: u64) -> Result<Bytes> {
        let shared = &self.inner.shared;
        if start < SEGMENT_HEADER_LEN {
            return Err(StoreError::Invalid(
                "location offset inside the segment header",
            ));
        }
        {
            // A location is handed out when the append is reserved, before the writer thread
            // has written it: a reader that comes that early waits for the writer (which is
            // never far behind), rather than failing.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let mut written = shared.written.lock();
            loop {
                let (wseg, wend) = *written;
                if !(segment > wseg || (segment == wseg && end > wend)) {
                    break;
                }
                if shared
                    .written_cv
                    .wait_until(&mut written, deadline)
                    .timed_out()
                {
                    return Err(StoreError::NotWritten {
                        segment,
                        offset: start,
                    });
                }
            }
        }
        let file = shared.read_handle(segment)?;
        let mut buf = vec![0u8; (end - start) as usize];
        fs::read_exact_at(&*file, &mut buf, start).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                StoreError::Corrupt {
                    path: shared.segment_path(segment),
                    offset: start,
                    reason: "body beyond the end of the segment".into(),
                }
            } else {
                StoreError::io("read message body", shared.segment_path(segment), e)
            }
        })?;
        Ok(Bytes::from(buf))
    }

    /// The body in `buf` (its CRC32C, which precedes every body on disk, then the body),
    /// checked.
    fn verified(&self, buf: Bytes, loc: &Location) -> Result<Bytes> {
        let stored = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if crc32c::crc32c(&buf[4..]) != stored {
            return Err(StoreError::Corrupt {
                path: self.inner.shared.segment_path(loc.segment),
                offset: loc.offset,
                reason: "message body CRC mismatch".into(),
            });
        }
        Ok(buf.slice(4..))
    }

    /// Highest LSN known durable (fsynced; written, in page-cache mode).
    pub fn durable_lsn(&self) -> Lsn {
        self.inner.durable.durable()
    }

    /// Resolves once `lsn` is durable (immediately if it already is). Executor-agnostic.
    pub fn wait_durable(&self, lsn: Lsn) -> WaitDurable {
        WaitDurable::new(self.inner.durable.clone(), lsn)
    }

    /// Blocks the calling thread until `lsn` is durable.
    fn send(&self, cmd: Cmd) -> Result<()> {
        let shared = &self.inner.shared;
        shared.appender.lock().send(&shared.work, cmd)
    }

    pub fn wait_durable_blocking(&self, lsn: Lsn) -> Result<()> {
        self.inner.durable.wait_blocking(lsn)
    }

    /// Writes a checkpoint now and waits for it (and for the deletion of the dead segments it
    /// covers).
    pub fn checkpoint(&self) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        self.send(Cmd::Checkpoint(Some(tx)))?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Copies the live messages of mostly-dead segments (live bytes below
    /// `compact_threshold`) to the end of the log, waits until the copies are durable, and
    /// checkpoints so that the emptied segments are deleted. Returns the moves; the owner must
    /// switch to the new locations. A message settled meanwhile may still appear in the list
    /// (its copy is dead on arrival); an owner that no longer knows it ignores the entry.
    /// Call it periodically from a blocking context.
    pub fn compact(&self) -> Result<Vec<Relocation>> {
        let _one_at_a_time = self.inner.compact_lock.lock();
        let (tx, rx) = mpsc::channel();
        self.send(Cmd::Scan(tx))?;
        let candidates = rx.recv().map_err(|_| StoreError::Closed)?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut moved = Vec::with_capacity(candidates.len());
        let mut last = None;
        for c in candidates {
            let body = match self.read_at(&c.loc) {
                Ok(b) => b,
                // The segment died and was deleted since the scan: nothing left to move.
                Err(StoreError::MissingSegment { .. }) => continue,
                // An unreadable body cannot be copied; it stays where it is (and so does its
                // segment) and the owner finds out when it reads it.
                Err(e @ StoreError::Corrupt { .. }) => {
                    tracing::warn!(msg_id = c.msg_id, error = %e, "compaction skipped a damaged body");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let a = self.append(
                Op::Relocate {
                    msg_id: c.msg_id,
                    order: c.order,
                    old_segment: c.loc.segment,
                    old_offset: c.loc.offset,
                    queues: c.queues,
                },
                Body::Bytes(body),
                true,
            )?;
            last = Some(a.lsn);
            if let Some(new) = a.loc {
                moved.push(Relocation {
                    msg_id: c.msg_id,
                    old: c.loc,
                    new,
                });
            }
        }
        if let Some(lsn) = last {
            self.wait_durable_blocking(lsn)?;
        }
        self.checkpoint()?;
        Ok(moved)
    }

    /// Counters: records, fsyncs, batches, checkpoints, live messages.
    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.shared.counters;
        StoreStats {
            records: c.records.load(Ordering::Relaxed),
            write_batches: c.write_batches.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            checkpoints: c.checkpoints.load(Ordering::Relaxed),
            segments_deleted: c.segments_deleted.load(Ordering::Relaxed),
            live_messages: c.live_messages.load(Ordering::Relaxed),
            segments: c.segments.load(Ordering::Relaxed),
            durable_lsn: self.durable_lsn(),
            last_checkpoint_snapshot_micros: c.checkpoint_snapshot_micros.load(Ordering::Relaxed),
            disk_full: c.disk_full.load(Ordering::Relaxed),
            suspended: self.is_suspended(),
        }
    }

    /// Whether the disk was found full and new messages are refused until space returns.
    pub fn is_suspended(&self) -> bool {
        self.inner.shared.appender.lock().state == AppendState::Suspended
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.config.dir
    }

    /// Flushes and fsyncs everything accepted so far, writes a final checkpoint, stops the
    /// writer and releases the directory lock, so the directory can be opened again at once
    /// even while clones of this handle linger. They get [`StoreError::Closed`] afterwards.
    pub fn close(&self) -> Result<()> {
        let stopped = self.inner.stop(false);
        // The writer thread has been joined (and with it the checkpoint thread): nothing of
        // this handle writes to the directory any more.
        self.inner.lock_file.lock().take();
        stopped
    }

    /// Test helper: stops the writer as a crash would, without a final checkpoint (records
    /// already handed to the writer are written; nothing is fsynced in page-cache mode).
    #[doc(hidden)]
    pub fn crash_for_test(self) {
        let _ = self.inner.stop(true);
    }
}

impl Inner {
    fn stop(&self, crash: bool) -> Result<()> {
        if let Some((stop, handle)) = self.compactor.lock().take() {
            drop(stop);
            // The compactor itself may drop the last handle (and so run this): never join
            // oneself.
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
        let Some(handle) = self.writer.lock().take() else {
            return Err(StoreError::Closed);
        };
        let reply = {
            let mut ap = self.shared.appender.lock();
            if matches!(ap.state, AppendState::Open | AppendState::Suspended) {
                ap.state = AppendState::Closed;
            }
            self.shared.space.notify_all();
            if crash {
                let _ = ap.send(&self.shared.work, Cmd::Crash);
                None
            } else {
                let (tx, rx) = mpsc::channel();
                let _ = ap.send(&self.shared.work, Cmd::Close(tx));
                Some(rx)
            }
        };
        let replied = reply.and_then(|rx| rx.recv().ok());
        let joined = handle
            .join()
            .map_err(|_| StoreError::WriterFailed("writer thread panicked".into()))?;
        match replied {
            Some(r) => r.and(joined),
            None => joined,
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.writer.lock().is_some() {
            if let Err(e) = self.stop(false) {
                tracing::warn!(error = %e, "closing the store on drop failed");
            }
        }
    }
}
