//! The writer thread (group commit) and the checkpoint thread.
//!
//! The writer takes everything that arrived while its previous fsync ran, encodes and
//! checksums it into one buffer, writes it with one vectored write per segment, applies the
//! records to the live index, calls `fdatasync` once, then publishes the new durable LSN. It
//! alone writes segment files and owns the index.
//! Checkpoints are serialized here (a consistent snapshot between two batches) and written by
//! a second thread so that a big index does not stall appends while it is fsynced.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::checkpoint::{self, Position};
use crate::durable::DurableShared;
use crate::error::{Result, StoreError};
use crate::format::{self, Op, SEGMENT_HEADER_LEN};
use crate::fs::{self, FsFile, OpenMode};
use crate::payload::Body;
use crate::store::{AppendState, Shared, StoreConfig, SyncMode};
use crate::Location;

/// One record on its way to disk, at the place reserved for it, not yet encoded: the writer
/// encodes it (and computes its checksums) into its batch buffer, off the publisher's path.
pub(crate) struct Append {
    pub lsn: u64,
    pub segment: u64,
    pub offset: u64,
    /// The whole record's length on disk.
    pub len: u64,
    /// Someone may wait for it to be durable (false: a page-out copy, see
    /// [`crate::Store::publish_volatile`]).
    pub sync: bool,
    pub op: Op,
    pub body: Body,
}

impl Append {
    fn head_len(&self) -> u64 {
        self.len - self.body.len() as u64
    }
}

/// A live message of a segment chosen for compaction.
pub(crate) struct Candidate {
    pub msg_id: u64,
    pub order: u64,
    pub loc: Location,
    pub queues: Vec<(u64, u32)>,
}

pub(crate) enum Cmd {
    Append(Append),
    /// Write a checkpoint; reply once it (and the segment deletions it allows) is done.
    Checkpoint(Option<Sender<Result<()>>>),
    /// List the live messages of the segments worth compacting.
    Scan(Sender<Vec<Candidate>>),
    /// Flush, fsync, final checkpoint, stop.
    Close(Sender<Result<()>>),
    /// Stop now, as a crash would (tests).
    Crash,
}

pub(crate) struct WriterSetup {
    pub shared: Arc<Shared>,
    pub durable: Arc<DurableShared>,
    pub config: StoreConfig,
    pub active_segment: u64,
    pub active_end: u64,
    pub active_exists: bool,
    pub last_lsn: u64,
    pub checkpoint_now: bool,
}

struct CheckpointJob {
    /// The checkpoint, written to its temporary file but not yet synced.
    file: Arc<dyn FsFile>,
    dead: Vec<u64>,
    reply: Option<Sender<Result<()>>>,
}

struct Writer {
    shared: Arc<Shared>,
    durable: Arc<DurableShared>,
    config: StoreConfig,
    /// The segment being appended to, its end, and its file once opened.
    seg: u64,
    end: u64,
    file: Option<Arc<dyn FsFile>>,
    seg_exists: bool,
    /// Segments created by the batch being written (rolled back if the disk is full).
    created: Vec<u64>,
    last_lsn: u64,
    ckpt_lsn: u64,
    ckpt_at: Instant,
    bytes_since_ckpt: u64,
    /// Size of the last checkpoint written.
    ckpt_size: u64,
    ckpt_tx: Option<Sender<CheckpointJob>>,
    ckpt_inflight: Arc<AtomicUsize>,
    ckpt_thread: Option<JoinHandle<()>>,
    /// The active segment holds writes no fsync has covered yet (batches of page-out copies
    /// only, which are not synced on their own).
    unsynced: bool,
    buf: Vec<u8>,
    /// A record's head while it is encoded (or a large payload's head).
    scratch: Vec<u8>,
}

/// Most bytes gathered into one group write (bounds latency and memory per batch).
const MAX_BATCH_BYTES: u64 = 4 << 20;
/// A group's records are written this much at a time. The batch buffer is then reused while
/// it is still in the CPU's cache: one 4 MiB write of page-out copies made the kernel's copy
/// into the page cache read its source from memory (48% of the writer's time in scenario 8).
const WRITE_CHUNK: u64 = 256 << 10;
/// Bodies up to this size are copied into the batch buffer; larger ones are written from their
/// own buffers with a vectored write.
const COPY_LIMIT: usize = 16 << 10;

pub(crate) fn spawn(setup: WriterSetup) -> Result<JoinHandle<Result<()>>> {
    let (ckpt_tx, ckpt_rx) = mpsc::channel::<CheckpointJob>();
    let ckpt_inflight = Arc::new(AtomicUsize::new(0));
    let ckpt_thread = {
        let shared = setup.shared.clone();
        let inflight = ckpt_inflight.clone();
        std::thread::Builder::new()
            .name("warren-store-ckpt".into())
            .spawn(move || checkpoint_thread(shared, ckpt_rx, inflight))
            .map_err(|e| StoreError::io("spawn checkpoint thread", &setup.config.dir, e))?
    };
    let dir = setup.config.dir.clone();
    let checkpoint_now = setup.checkpoint_now;
    let mut w = Writer {
        shared: setup.shared,
        durable: setup.durable,
        seg: setup.active_segment,
        end: setup.active_end,
        file: None,
        seg_exists: setup.active_exists,
        created: Vec::new(),
        last_lsn: setup.last_lsn,
        ckpt_lsn: if checkpoint_now { 0 } else { setup.last_lsn },
        ckpt_at: Instant::now(),
        bytes_since_ckpt: 0,
        ckpt_size: 0,
        ckpt_tx: Some(ckpt_tx),
        ckpt_inflight,
        ckpt_thread: Some(ckpt_thread),
        unsynced: false,
        buf: Vec::new(),
        scratch: Vec::new(),
        config: setup.config,
    };
    w.publish_gauges();
    let (shared, durable) = (w.shared.clone(), w.durable.clone());
    std::thread::Builder::new()
        .name("warren-store-writer".into())
        .spawn(move || {
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                if checkpoint_now {
                    if let Err(e) = w.checkpoint(None) {
                        tracing::warn!(error = %e, "checkpoint after recovery failed");
                    }
                }
                w.run()
            }));
            let result = run.unwrap_or_else(|_| {
                // A bug, not an I/O error: fail the store rather than leave waiters hanging.
                let msg = "writer thread panicked".to_string();
                tracing::error!("{msg}; the store must be reopened");
                shared.appender.lock().state = AppendState::Failed;
                shared.space.notify_all();
                durable.finish(Some(msg.clone()));
                Err(StoreError::WriterFailed(msg))
            });
            // Nothing sent from now on is read: commands still queued are dropped (their
            // reply channels close, so nobody waits for an answer) and later sends fail.
            let orphans = {
                let mut ap = shared.appender.lock();
                ap.writer_gone = true;
                std::mem::take(&mut ap.inbox)
            };
            drop(orphans);
            result
        })
        .map_err(|e| StoreError::io("spawn writer thread", dir, e))
}

impl Writer {
    /// Makes sure `into` holds commands: if it is empty, takes every queued one (with `wait`,
    /// first waiting up to that long for one). Returns whether it holds any.
    fn take(&self, into: &mut VecDeque<Cmd>, wait: Option<Duration>) -> bool {
        if !into.is_empty() {
            return true;
        }
        let mut ap = self.shared.appender.lock();
        if ap.inbox.is_empty() {
            let Some(timeout) = wait else {
                return false;
            };
            ap.writer_waiting = true;
            self.shared.work.wait_for(&mut ap, timeout);
            ap.writer_waiting = false;
            if ap.inbox.is_empty() {
                return false;
            }
        }
        // Swapping keeps both queues' allocations: no copy, no allocation per batch.
        std::mem::swap(into, &mut ap.inbox);
        true
    }

    fn run(mut self) -> Result<()> {
        let mut batch: Vec<Append> = Vec::new();
        let mut pending: VecDeque<Cmd> = VecDeque::new();
        let result = loop {
            let timeout = self
                .config
                .checkpoint_interval
                .saturating_sub(self.ckpt_at.elapsed())
                .max(Duration::from_millis(1));
            if !self.take(&mut pending, Some(timeout)) {
                self.maybe_checkpoint();
                continue;
            }
            // Group commit: everything queued (up to MAX_BATCH_BYTES), and what arrives while
            // it is gathered.
            let mut batch_bytes = 0u64;
            let mut stop = None;
            while let Some(cmd) = pending.pop_front() {
                match cmd {
                    Cmd::Append(a) => {
                        batch_bytes += a.len;
                        batch.push(a);
                    }
                    control => {
                        // Controls see every record sent before them.
                        if let Err(e) = self.flush(&mut batch) {
                            stop = self.write_failed(e, &mut batch, Some(control), &mut pending);
                            if stop.is_some() {
                                break;
                            }
                        } else if let Some(done) = self.control(control) {
                            stop = Some(done);
                            break;
                        }
                        batch_bytes = 0;
                    }
                }
                if batch_bytes >= MAX_BATCH_BYTES {
                    break;
                }
                self.take(&mut pending, None);
            }
            if let Some(done) = stop {
                break done;
            }
            if let Err(e) = self.flush(&mut batch) {
                if let Some(done) = self.write_failed(e, &mut batch, None, &mut pending) {
                    break done;
                }
            }
            self.maybe_checkpoint();
        };
        if let Err(e) = &result {
            self.fail(e);
        }
        self.stop_checkpoint_thread();
        if let Some(spares) = &self.shared.spares {
            spares.close();
        }
        self.durable
            .finish(result.as_ref().err().map(|e| e.to_string()));
        result
    }

    /// Handles a control command; `Some` means the writer stops with that result.
    fn control(&mut self, cmd: Cmd) -> Option<Result<()>> {
        match cmd {
            Cmd::Append(_) => None,
            Cmd::Checkpoint(reply) => {
                if let Err(e) = self.checkpoint(reply) {
                    tracing::warn!(error = %e, "checkpoint failed");
                }
                None
            }
            Cmd::Scan(reply) => {
                let _ = reply.send(self.scan());
                None
            }
            Cmd::Close(reply) => {
                let r = self.close();
                let _ = reply.send(match &r {
                    Ok(()) => Ok(()),
                    Err(e) => Err(StoreError::WriterFailed(e.to_string())),
                });
                Some(r)
            }
            Cmd::Crash => {
                self.shared.appender.lock().state = AppendState::Closed;
                self.shared.space.notify_all();
                Some(Ok(()))
            }
        }
    }

    /// Final flush: fsync, final checkpoint (waited for), stop accepting.
    fn close(&mut self) -> Result<()> {
        self.shared.move_state(
            &[AppendState::Open, AppendState::Suspended],
            AppendState::Closed,
        );
        let (tx, rx) = mpsc::channel();
        self.checkpoint(Some(tx))?;
        rx.recv()
            .map_err(|_| StoreError::WriterFailed("checkpoint thread stopped".into()))?
    }

    /// A batch could not be written. A full disk suspends the store until space returns (the
    /// batch is kept and written then); any other failure stops the writer. `Some` means the
    /// writer stops with that result.
    fn write_failed(
        &mut self,
        e: StoreError,
        batch: &mut Vec<Append>,
        control: Option<Cmd>,
        pending: &mut VecDeque<Cmd>,
    ) -> Option<Result<()>> {
        match e {
            StoreError::NoSpace => self.wait_for_space(std::mem::take(batch), control, pending),
            e => Some(Err(e)),
        }
    }

    /// The disk is full. Holds the records that could not be written (and the small ones that
    /// keep coming: acks), refuses new messages ([`AppendState::Suspended`]), and tries the
    /// write again every `retry_interval` until it succeeds. Their LSNs stay pending, so
    /// nothing is confirmed that is not on disk, and nothing accepted is dropped. `Some`
    /// means the writer stops with that result.
    fn wait_for_space(
        &mut self,
        mut held: Vec<Append>,
        control: Option<Cmd>,
        pending: &mut VecDeque<Cmd>,
    ) -> Option<Result<()>> {
        // Counted first: whoever is refused for it (below) finds it counted.
        self.shared
            .counters
            .disk_full
            .fetch_add(1, Ordering::Relaxed);
        // Appends blocked by back-pressure wake up and are refused.
        self.shared
            .move_state(&[AppendState::Open], AppendState::Suspended);
        tracing::error!(
            records = held.len(),
            dir = %self.shared.dir.display(),
            "disk full: the store holds what it could not write and refuses new messages until space returns"
        );
        let abandoned = |held: &[Append]| {
            StoreError::WriterFailed(format!(
                "stopped while the disk was full; {} records were never written",
                held.len()
            ))
        };
        let mut control = control;
        let mut next_try = Instant::now() + self.config.retry_interval;
        loop {
            let cmd = match control.take() {
                Some(c) => Some(c),
                // Retry on time even while acks keep coming.
                None if Instant::now() >= next_try => None,
                None => {
                    let wait = next_try.saturating_duration_since(Instant::now());
                    self.take(pending, Some(wait));
                    pending.pop_front()
                }
            };
            match cmd {
                Some(Cmd::Append(a)) => held.push(a),
                Some(Cmd::Checkpoint(reply)) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(StoreError::NoSpace));
                    }
                }
                Some(Cmd::Scan(reply)) => {
                    let _ = reply.send(Vec::new());
                }
                Some(Cmd::Close(reply)) => {
                    let e = abandoned(&held);
                    let _ = reply.send(Err(StoreError::WriterFailed(e.to_string())));
                    return Some(Err(e));
                }
                Some(crash @ Cmd::Crash) => return self.control(crash),
                None => match self.flush(&mut held) {
                    Ok(()) => {
                        self.shared
                            .move_state(&[AppendState::Suspended], AppendState::Open);
                        tracing::warn!(dir = %self.shared.dir.display(), "disk space returned: the store accepts messages again");
                        return None;
                    }
                    Err(StoreError::NoSpace) => {
                        next_try = Instant::now() + self.config.retry_interval;
                    }
                    Err(e) => return Some(Err(e)),
                },
            }
        }
    }

    fn fail(&mut self, e: &StoreError) {
        tracing::error!(error = %e, "store writer failed; the store must be reopened");
        self.shared.appender.lock().state = AppendState::Failed;
        self.shared.space.notify_all();
    }

    fn stop_checkpoint_thread(&mut self) {
        self.ckpt_tx = None;
        if let Some(h) = self.ckpt_thread.take() {
            let _ = h.join();
        }
    }

    fn sync_active(&mut self) -> Result<()> {
        if let Some(f) = &self.file {
            f.sync_data().map_err(|e| {
                StoreError::io("fdatasync segment", self.shared.segment_path(self.seg), e)
            })?;
            self.shared.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        self.unsynced = false;
        Ok(())
    }

    /// Makes `segment` the open segment, creating it (with its header) if needed.
    fn ensure_segment(&mut self, segment: u64) -> Result<()> {
        if segment == self.seg && self.file.is_some() {
            return Ok(());
        }
        if segment != self.seg {
            // Durability: the old segment is complete and must be on disk before anything in
            // the next one can be called durable (in both sync modes: a checkpoint only syncs
            // the active segment).
            self.sync_active()?;
            self.file = None;
            self.seg = segment;
            self.end = SEGMENT_HEADER_LEN;
            self.seg_exists = false;
        }
        let path = self.shared.segment_path(segment);
        let fs = &self.shared.fs;
        if self.seg_exists {
            let f = fs
                .open(&path, OpenMode::Write)
                .map_err(|e| StoreError::io("open active segment", &path, e))?;
            self.file = Some(f);
        } else {
            let spare = self.shared.spares.as_ref();
            let f = if spare.is_some_and(|s| s.take(&path)) {
                fs.open(&path, OpenMode::Write)
                    .map_err(|e| StoreError::io("open prepared segment", &path, e))?
            } else {
                fs.open(&path, OpenMode::CreateNew)
                    .map_err(|e| StoreError::io("create segment", &path, e))?
            };
            self.created.push(segment);
            let header = format::encode_segment_header(segment);
            fs::write_all_at(&*f, &mut [IoSlice::new(&header)], 0)
                .map_err(|e| StoreError::io("write segment header", &path, e))?;
            // Durability: the new file's name must survive a crash once its records are
            // reported durable; the header itself is covered by the batch's fdatasync.
            checkpoint::sync_dir(&**fs, &self.shared.dir)?;
            self.file = Some(f);
            self.seg_exists = true;
            self.end = SEGMENT_HEADER_LEN;
        }
        Ok(())
    }

    /// Writes, syncs and applies a batch of records. If the disk is full, undoes what the
    /// batch wrote and returns [`StoreError::NoSpace`] with the batch intact, to be written
    /// again later at the same positions (everything reserved after it stays valid).
    fn flush(&mut self, batch: &mut Vec<Append>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let start = (self.seg, self.end, self.seg_exists);
        let bytes = match self.write_batch(batch) {
            Ok(bytes) => bytes,
            Err(e) if e.is_no_space() => {
                self.rollback(start)?;
                return Err(StoreError::NoSpace);
            }
            Err(e) => return Err(e),
        };
        // The index learns the records as soon as they are written (readers look bodies up
        // in it, and wait for `written` when they are early), before the fsync.
        {
            let mut index = self.shared.index.lock();
            for seg in self.created.drain(..) {
                index.extend_segment(seg, SEGMENT_HEADER_LEN);
            }
            for a in batch.iter() {
                let body = match a.op {
                    Op::Publish { .. } | Op::Relocate { .. } => Some(Location {
                        segment: a.segment,
                        offset: a.offset + a.head_len(),
                        len: a.body.len() as u32,
                    }),
                    _ => None,
                };
                index.apply(&a.op, a.segment, a.offset + a.len, body);
            }
        }
        *self.shared.written.lock() = (self.seg, self.end);
        self.shared.written_cv.notify_all();
        if self.config.sync == SyncMode::Fsync {
            // Durability: one fdatasync for the whole group; only after it returns are the
            // records' LSNs published as durable (and publisher confirms released). The index
            // already holds them, so a failure here cannot be undone: it stops the writer.
            // (Measured and dropped, scenario 3: a sync thread that lets the writer write the
            // next batch during a sync cost 20% (the sync then has more to write back); two
            // syncs in flight took twice as long each; a sync thread that only frees the
            // writer from publishing the durable LSN gained nothing measurable.)
            if batch.iter().any(|a| a.sync) {
                self.sync_active().map_err(StoreError::fatal)?;
            } else {
                // Nobody waits for these records (and recovery discards them): they are
                // reported durable once written, and the next fsync covers them.
                self.unsynced = true;
            }
        }
        let last = batch.last().map_or(self.last_lsn, |a| a.lsn);
        self.last_lsn = last;
        let c = &self.shared.counters;
        c.records.fetch_add(batch.len() as u64, Ordering::Relaxed);
        c.write_batches.fetch_add(1, Ordering::Relaxed);
        c.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        batch.clear();
        self.publish_gauges();
        self.durable.advance(last);
        {
            let mut ap = self.shared.appender.lock();
            ap.queued_bytes = ap.queued_bytes.saturating_sub(bytes);
        }
        self.shared.space.notify_all();
        self.bytes_since_ckpt += bytes;
        Ok(())
    }

    /// Writes the batch's records, segment by segment; returns the bytes written.
    fn write_batch(&mut self, batch: &[Append]) -> Result<u64> {
        let mut bytes = 0u64;
        let mut i = 0;
        while i < batch.len() {
            let seg = batch[i].segment;
            let j = i + batch[i..]
                .iter()
                .position(|a| a.segment != seg)
                .unwrap_or(batch.len() - i);
            self.ensure_segment(seg)?;
            bytes += self.write_run(&batch[i..j])?;
            i = j;
        }
        Ok(bytes)
    }

    /// Undoes a batch that did not fit: removes the segments it created and cuts the segment
    /// it started in back to where it started.
    fn rollback(&mut self, (seg, end, existed): (u64, u64, bool)) -> Result<()> {
        self.file = None;
        let fs = self.shared.fs.clone();
        let created = std::mem::take(&mut self.created);
        for &s in &created {
            let path = self.shared.segment_path(s);
            match fs.remove(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("remove unwritten segment", path, e)),
            }
        }
        if !created.is_empty() {
            checkpoint::sync_dir(&*fs, &self.shared.dir)?;
        }
        self.seg = seg;
        self.end = end;
        self.seg_exists = existed && !created.contains(&seg);
        if self.seg_exists {
            let path = self.shared.segment_path(seg);
            let f = fs
                .open(&path, OpenMode::Write)
                .map_err(|e| StoreError::io("open active segment", &path, e))?;
            f.set_len(end)
                .map_err(|e| StoreError::io("truncate unwritten records", &path, e))?;
            self.file = Some(f);
        }
        Ok(())
    }

    fn publish_gauges(&self) {
        let (live, segments) = {
            let index = self.shared.index.lock();
            (index.live, index.segs.len() as u64)
        };
        let c = &self.shared.counters;
        c.live_messages.store(live, Ordering::Relaxed);
        c.segments.store(segments, Ordering::Relaxed);
    }

    /// Writes records that all belong to the open segment, in writes of about
    /// [`WRITE_CHUNK`] bytes.
    fn write_run(&mut self, run: &[Append]) -> Result<u64> {
        let before = self.end;
        let mut i = 0;
        while i < run.len() {
            let mut j = i + 1;
            let mut bytes = run[i].len;
            while j < run.len() && bytes + run[j].len <= WRITE_CHUNK {
                bytes += run[j].len;
                j += 1;
            }
            self.write_chunk(&run[i..j])?;
            i = j;
        }
        Ok(self.end - before)
    }

    /// Writes records that all belong to the open segment with one (vectored) write.
    fn write_chunk(&mut self, run: &[Append]) -> Result<u64> {
        enum Piece {
            Buf(usize, usize),
            Tail(usize),
        }
        self.buf.clear();
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut end = self.end;
        for (k, a) in run.iter().enumerate() {
            if a.offset != end {
                return Err(StoreError::WriterFailed(format!(
                    "record {} reserved at offset {} but the segment ends at {end}",
                    a.lsn, a.offset
                )));
            }
            // The body is its head (empty for plain bytes) and its tail.
            let tail = a.body.tail();
            let mismatch = || {
                StoreError::WriterFailed(format!(
                    "record {}: its payload is not the length it was reserved with",
                    a.lsn
                ))
            };
            if tail.len() <= COPY_LIMIT {
                // The whole body goes into the buffer behind room for the record's head, which
                // is then computed from it there: one checksum pass over one slice each.
                let head_at = self.buf.len();
                let body_at = head_at + format::head_len(&a.op);
                self.buf.resize(body_at, 0);
                a.body.write_head(&mut self.buf);
                self.buf.extend_from_slice(tail);
                if self.buf.len() - body_at != a.body.len() {
                    return Err(mismatch());
                }
                self.scratch.clear();
                format::encode_head_parts(&a.op, &[&self.buf[body_at..]], &mut self.scratch)
                    .map_err(StoreError::Invalid)?;
                self.buf[head_at..body_at].copy_from_slice(&self.scratch);
            } else {
                // A large tail is written from where it is, not copied.
                self.scratch.clear();
                a.body.write_head(&mut self.scratch);
                if self.scratch.len() + tail.len() != a.body.len() {
                    return Err(mismatch());
                }
                format::encode_head_parts(&a.op, &[&self.scratch, tail], &mut self.buf)
                    .map_err(StoreError::Invalid)?;
                self.buf.extend_from_slice(&self.scratch);
                pieces.push(Piece::Buf(start, self.buf.len()));
                pieces.push(Piece::Tail(k));
                start = self.buf.len();
            }
            end += a.len;
        }
        pieces.push(Piece::Buf(start, self.buf.len()));
        let mut slices: Vec<IoSlice<'_>> = pieces
            .iter()
            .map(|p| match *p {
                Piece::Buf(s, e) => IoSlice::new(&self.buf[s..e]),
                Piece::Tail(k) => IoSlice::new(run[k].body.tail()),
            })
            .filter(|s| !s.is_empty())
            .collect();
        let path = self.shared.segment_path(self.seg);
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| StoreError::WriterFailed("no open segment".into()))?;
        fs::write_all_at(&**file, &mut slices, self.end)
            .map_err(|e| StoreError::io("write segment", path, e))?;
        let written = end - self.end;
        self.end = end;
        Ok(written)
    }

    fn maybe_checkpoint(&mut self) {
        if self.last_lsn == self.ckpt_lsn {
            self.ckpt_at = Instant::now();
            return;
        }
        // The byte trigger never fires before the tail is as large as the last checkpoint:
        // writing checkpoints then costs at most as much I/O as the log itself, and a restart
        // reads at most about twice the checkpoint's size.
        let due = self.ckpt_at.elapsed() >= self.config.checkpoint_interval
            || self.bytes_since_ckpt >= self.config.checkpoint_bytes.max(self.ckpt_size);
        // A periodic checkpoint is skipped while the previous one is still being written.
        if due && self.ckpt_inflight.load(Ordering::Acquire) == 0 {
            if let Err(e) = self.checkpoint(None) {
                tracing::warn!(error = %e, "periodic checkpoint failed");
            }
        }
    }

    /// Snapshots the index (between batches, so it is consistent with the log position) and
    /// hands it to the checkpoint thread with the dead segments it allows to delete.
    fn checkpoint(&mut self, reply: Option<Sender<Result<()>>>) -> Result<()> {
        // Durability: the checkpoint covers the log up to (seg, end); that log must be on disk
        // before the checkpoint is, or a crash could leave a checkpoint ahead of the log.
        if self.config.sync == SyncMode::PageCache || self.unsynced {
            self.sync_active()?;
        }
        let started = Instant::now();
        let pos = Position {
            segment: self.seg,
            offset: self.end,
            next_lsn: self.last_lsn + 1,
        };
        // Dead segments wholly before the checkpoint position: the checkpoint makes their acks
        // and drops unnecessary for recovery, so they can go once it is durable.
        // One temporary file at a time: wait for the previous checkpoint to be installed.
        while self.ckpt_inflight.load(Ordering::Acquire) > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (file, dead) = {
            let mut index = self.shared.index.lock();
            let dead: Vec<u64> = index
                .segs
                .iter()
                .filter(|(&id, s)| id < pos.segment && s.live == 0)
                .map(|(&id, _)| id)
                .collect();
            for &id in &dead {
                index.remove_segment(id);
            }
            // Written straight to the file (buffered, not synced: the checkpoint thread
            // syncs and installs it), so no copy of the snapshot is held in memory.
            let file = checkpoint::write_tmp(&*self.shared.fs, &self.shared.dir, &index, pos)?;
            (file, dead)
        };
        self.shared
            .counters
            .checkpoint_snapshot_micros
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.ckpt_size = file.size().unwrap_or(0);
        self.ckpt_lsn = self.last_lsn;
        self.ckpt_at = Instant::now();
        self.bytes_since_ckpt = 0;
        self.publish_gauges();
        let Some(tx) = &self.ckpt_tx else {
            return Err(StoreError::Closed);
        };
        self.ckpt_inflight.fetch_add(1, Ordering::AcqRel);
        tx.send(CheckpointJob { file, dead, reply })
            .map_err(|_| StoreError::WriterFailed("checkpoint thread stopped".into()))
    }

    /// Live messages of non-active segments whose live bytes are below the threshold, oldest
    /// segments first, up to `compact_max_bytes`.
    fn scan(&self) -> Vec<Candidate> {
        let index = self.shared.index.lock();
        let mut chosen = Vec::new();
        let mut budget = self.config.compact_max_bytes;
        for (&id, s) in &index.segs {
            if id >= self.seg || s.live == 0 || s.size == 0 {
                continue;
            }
            if (s.live_bytes as f64) < self.config.compact_threshold * s.size as f64 {
                if s.live_bytes > budget && !chosen.is_empty() {
                    break;
                }
                budget = budget.saturating_sub(s.live_bytes);
                chosen.push(id);
            }
        }
        chosen
            .into_iter()
            .flat_map(|seg| index.live_in(seg))
            .map(|m| Candidate {
                msg_id: m.msg_id,
                // Ids are assigned in log order: the id is the message's order.
                order: m.msg_id,
                loc: m.loc,
                queues: index.holders(m.msg_id),
            })
            .collect()
    }
}

fn checkpoint_thread(shared: Arc<Shared>, rx: Receiver<CheckpointJob>, inflight: Arc<AtomicUsize>) {
    for job in rx {
        let CheckpointJob { file, dead, reply } = job;
        let result = install_checkpoint(&shared, file, &dead);
        if let Err(e) = &result {
            tracing::warn!(error = %e, "writing checkpoint failed");
        }
        inflight.fetch_sub(1, Ordering::AcqRel);
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }
}

fn install_checkpoint(shared: &Shared, file: Arc<dyn FsFile>, dead: &[u64]) -> Result<()> {
    checkpoint::install(&*shared.fs, &shared.dir, file)?;
    shared.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
    if dead.is_empty() {
        return Ok(());
    }
    // Durability: deletion only after the checkpoint that makes these segments unnecessary is
    // durable (the rename and its directory fsync above).
    for &seg in dead {
        shared.delete_segment(seg)?;
        tracing::debug!(segment = seg, "deleted dead segment");
    }
    checkpoint::sync_dir(&*shared.fs, &shared.dir)
}
