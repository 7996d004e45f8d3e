//! The producer and consumer tasks: one connection each, one task each.
//!
//! A producer builds a batch of pre-encoded messages (stamping one timestamp per batch), writes
//! it with one flush, then picks up whatever the broker sent (confirms, returns, a close)
//! without waiting. With confirms it never has more than the window unconfirmed. A consumer
//! reads as much as the socket holds, scans every frame in it, records latencies under one lock
//! per read, and acks (multiple=true every N) with one write per read.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;
use warren_codec::Method;

use crate::client::{write_ack, ClientError, Connection, MessageTemplate, CHANNEL};
use crate::parser::Events;
use crate::stats::{Counters, Histogram};
use crate::sys::now_ns;
use crate::uri::AmqpUri;

/// A producer stops adding to a batch once it holds this many bytes.
const BATCH_BYTES: usize = 128 * 1024;
/// Messages at least this large are written from their templates ([`Connection::flush_slices`])
/// rather than copied into the write buffer, up to [`VECTORED_BATCH_BYTES`] per write.
const VECTORED_MIN: usize = 16 * 1024;
const VECTORED_BATCH_BYTES: usize = 1024 * 1024;

/// What every task shares with the coordinator.
pub struct Shared {
    pub counters: Counters,
    stop_tx: watch::Sender<bool>,
    go_tx: watch::Sender<bool>,
    stopping: AtomicBool,
    /// Tasks that finished set-up and wait for the start signal.
    pub ready: AtomicUsize,
    pub producers_done: AtomicUsize,
    pub consumers_done: AtomicUsize,
    /// When the last producer that stopped by count finished (ns after the start).
    pub producers_end_ns: AtomicU64,
    /// `now_ns()` at the start of the measured phase.
    start_ns: AtomicU64,
    failure: Mutex<Option<String>>,
    /// One histogram per consumer; the reporter drains them every interval.
    pub latencies: Mutex<Vec<Arc<Mutex<Histogram>>>>,
    /// Every producer's publish-to-confirm times, merged as each producer ends.
    pub confirm_latency: Mutex<Histogram>,
}

impl Shared {
    pub fn new() -> Arc<Self> {
        Arc::new(Shared {
            counters: Counters::default(),
            stop_tx: watch::channel(false).0,
            go_tx: watch::channel(false).0,
            stopping: AtomicBool::new(false),
            ready: AtomicUsize::new(0),
            producers_done: AtomicUsize::new(0),
            consumers_done: AtomicUsize::new(0),
            producers_end_ns: AtomicU64::new(0),
            start_ns: AtomicU64::new(0),
            failure: Mutex::new(None),
            latencies: Mutex::new(Vec::new()),
            confirm_latency: Mutex::new(Histogram::new()),
        })
    }

    /// Starts the measured phase.
    pub fn go(&self, start_ns: u64) {
        self.start_ns.store(start_ns, Ordering::SeqCst);
        self.go_tx.send_replace(true);
    }

    /// Ends the run: every task finishes what it is doing and closes its connection.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop_tx.send_replace(true);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Records the first failure and stops the run.
    pub fn fail(&self, message: String) {
        {
            let mut f = self.failure.lock();
            if f.is_none() {
                *f = Some(message);
            }
        }
        self.stop();
    }

    pub fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }

    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop_tx.subscribe()
    }

    pub fn started(&self) -> bool {
        self.start_ns.load(Ordering::SeqCst) != 0
    }

    /// Nanoseconds from the start of the measured phase to `now` (a `now_ns()` value).
    pub fn since_start(&self, now: u64) -> u64 {
        now.saturating_sub(self.start_ns.load(Ordering::Relaxed))
    }

    /// Waits for the start signal; `Stopped` if the run ends first.
    async fn ready_and_wait(&self) -> Result<(), ClientError> {
        self.ready.fetch_add(1, Ordering::SeqCst);
        let mut go = self.go_tx.subscribe();
        let mut stop = self.stop_signal();
        tokio::select! {
            _ = go.wait_for(|g| *g) => Ok(()),
            _ = stop.wait_for(|s| *s) => Err(ClientError::Stopped),
        }
    }
}

/// Closes the connection after a task's work: gracefully if it ended normally, otherwise just
/// sending what is queued (a `close-ok` owed to the broker).
async fn finish(conn: Connection, result: Result<(), ClientError>) -> Result<(), ClientError> {
    match result {
        Ok(()) | Err(ClientError::Stopped) => {
            // A failure to close politely after the work is done changes no result.
            let _ = conn.close().await;
            Ok(())
        }
        Err(e) => {
            conn.abandon().await;
            Err(e)
        }
    }
}

/// Publisher-confirm bookkeeping: which sequence numbers are still unconfirmed, so the window
/// counts exactly even when the broker confirms out of order.
#[derive(Debug, Default)]
pub struct ConfirmTracker {
    /// The lowest unsettled sequence number (sequence numbers start at 1).
    base: u64,
    /// `settled[i]` is for sequence number `base + i`.
    settled: std::collections::VecDeque<bool>,
    /// When each unsettled sequence number was published (`now_ns`), parallel to `settled`.
    sent_ns: std::collections::VecDeque<u64>,
    unsettled: u64,
    pub acked: u64,
    pub nacked: u64,
    /// Publish-to-confirm times (ns): what a confirming publisher waits for each message.
    pub latency: Histogram,
}

impl ConfirmTracker {
    pub fn new() -> Self {
        ConfirmTracker {
            base: 1,
            ..Default::default()
        }
    }

    pub fn published(&mut self, n: u64) {
        let now = now_ns();
        for _ in 0..n {
            self.settled.push_back(false);
            self.sent_ns.push_back(now);
        }
        self.unsettled += n;
    }

    pub fn in_flight(&self) -> u64 {
        self.unsettled
    }

    /// Applies a `basic.ack`/`basic.nack`. Tags already settled, or never published, are
    /// ignored.
    pub fn settle(&mut self, tag: u64, multiple: bool, ack: bool) {
        if tag < self.base {
            return;
        }
        let idx = (tag - self.base) as usize;
        if idx >= self.settled.len() {
            return;
        }
        let from = if multiple { 0 } else { idx };
        let mut n = 0;
        let now = now_ns();
        for (s, sent) in self
            .settled
            .range_mut(from..=idx)
            .zip(self.sent_ns.range(from..=idx))
        {
            if !*s {
                *s = true;
                n += 1;
                self.latency.record(now.saturating_sub(*sent));
            }
        }
        self.unsettled -= n;
        if ack {
            self.acked += n;
        } else {
            self.nacked += n;
        }
        while self.settled.front() == Some(&true) {
            self.settled.pop_front();
            self.sent_ns.pop_front();
            self.base += 1;
        }
    }
}

/// What a producer needs, the same for every producer of a run.
#[derive(Debug, Clone)]
pub struct ProducerSpec {
    pub uri: AmqpUri,
    /// (exchange, routing key) pairs, published to round-robin.
    pub targets: Vec<(String, String)>,
    pub mandatory: bool,
    pub raw_properties: Vec<u8>,
    pub size: usize,
    /// Unconfirmed window; 0: no confirms.
    pub confirm: u32,
    /// Messages per second; 0: unlimited.
    pub rate: f64,
    pub count: Option<u64>,
    pub latency: bool,
    pub connect_timeout: Duration,
}

#[derive(Default)]
struct ProducerSink {
    confirms: ConfirmTracker,
    returned: u64,
}

impl Events for ProducerSink {
    fn deliver(&mut self, _: u64, _: Option<u64>) {}

    #[inline]
    fn confirm(&mut self, tag: u64, multiple: bool, ack: bool) {
        self.confirms.settle(tag, multiple, ack);
    }

    fn returned(&mut self) {
        self.returned += 1;
    }

    fn method(&mut self, _: u16, _: Method) -> Result<(), ClientError> {
        Ok(())
    }
}

pub async fn run_producer(shared: Arc<Shared>, spec: Arc<ProducerSpec>, id: usize) {
    let result = producer(&shared, &spec, id).await;
    shared.producers_done.fetch_add(1, Ordering::SeqCst);
    if let Err(e) = result {
        shared.fail(format!("producer {id}: {e}"));
    }
}

async fn producer(shared: &Shared, spec: &ProducerSpec, id: usize) -> Result<(), ClientError> {
    let mut conn = Connection::open(
        &spec.uri,
        &format!("warren-perf producer {id}"),
        spec.connect_timeout,
    )
    .await?;
    let result = async {
        conn.open_channel(CHANNEL).await?;
        if spec.confirm > 0 {
            conn.confirm_select(CHANNEL).await?;
        }
        let body = vec![0u8; spec.size];
        let mut templates = spec
            .targets
            .iter()
            .map(|(exchange, key)| {
                MessageTemplate::new(
                    CHANNEL,
                    exchange,
                    key,
                    spec.mandatory,
                    &spec.raw_properties,
                    &body,
                    conn.frame_max(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        conn.set_stop(shared.stop_signal());
        shared.ready_and_wait().await?;
        publish(&mut conn, shared, spec, &mut templates).await
    }
    .await;
    finish(conn, result).await
}

/// Adds what the sink learned since the last call to the shared counters.
/// Moves the producer's confirm latencies into the run's histogram once it holds more than
/// `over` samples (the report may be made before a stopped producer's task ends).
fn hand_over_confirm_latency(sink: &mut ProducerSink, shared: &Shared, over: u64) {
    if sink.confirms.latency.count() > over {
        shared.confirm_latency.lock().merge(&sink.confirms.latency);
        sink.confirms.latency.reset();
    }
}

fn commit(sink: &ProducerSink, reported: &mut (u64, u64, u64), counters: &Counters) {
    let (a, n, r) = (sink.confirms.acked, sink.confirms.nacked, sink.returned);
    if a > reported.0 {
        counters
            .confirmed
            .fetch_add(a - reported.0, Ordering::Relaxed);
    }
    if n > reported.1 {
        counters.nacked.fetch_add(n - reported.1, Ordering::Relaxed);
    }
    if r > reported.2 {
        counters
            .returned
            .fetch_add(r - reported.2, Ordering::Relaxed);
    }
    *reported = (a, n, r);
}

async fn publish(
    conn: &mut Connection,
    shared: &Shared,
    spec: &ProducerSpec,
    templates: &mut [MessageTemplate],
) -> Result<(), ClientError> {
    let vectored = templates.iter().all(|t| t.bytes.len() >= VECTORED_MIN);
    let counters = &shared.counters;
    let mut sink = ProducerSink {
        confirms: ConfirmTracker::new(),
        returned: 0,
    };
    let mut reported = (0, 0, 0);
    let limit = spec.count.unwrap_or(u64::MAX);
    let window = u64::from(spec.confirm);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut next = 0usize;
    let mut stop = shared.stop_signal();
    while sent < limit && !shared.is_stopping() {
        let mut n = limit - sent;
        if window > 0 {
            let room = window.saturating_sub(sink.confirms.in_flight());
            if room == 0 {
                conn.fill().await?;
                conn.drain(&mut sink)?;
                commit(&sink, &mut reported, counters);
                continue;
            }
            n = n.min(room);
        }
        if spec.rate > 0.0 {
            let due = (started.elapsed().as_secs_f64() * spec.rate) as u64 + 1;
            if due <= sent {
                let at = started + Duration::from_secs_f64(sent as f64 / spec.rate);
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                continue;
            }
            n = n.min(due - sent);
        }
        // One timestamp per batch: the whole batch goes out in one write anyway.
        let ts = if spec.latency { now_ns() } else { 0 }.to_le_bytes();
        let mut k = 0u64;
        if vectored {
            for t in templates.iter_mut() {
                if let Some(off) = t.timestamp_offset {
                    t.bytes[off..off + 8].copy_from_slice(&ts);
                }
            }
            let mut picked = Vec::new();
            let mut bytes = 0;
            while k < n && bytes < VECTORED_BATCH_BYTES {
                picked.push(next);
                bytes += templates[next].bytes.len();
                next = (next + 1) % templates.len();
                k += 1;
            }
            let parts: Vec<&[u8]> = picked.iter().map(|&i| &templates[i].bytes[..]).collect();
            sent += k;
            if window > 0 {
                sink.confirms.published(k);
            }
            conn.flush_slices(&parts).await?;
            counters.sent.fetch_add(k, Ordering::Relaxed);
            conn.try_fill()?;
            conn.drain(&mut sink)?;
            commit(&sink, &mut reported, counters);
            continue;
        }
        while k < n && conn.wbuf.len() < BATCH_BYTES {
            let t = &templates[next];
            next = if next + 1 == templates.len() {
                0
            } else {
                next + 1
            };
            let at = conn.wbuf.len();
            conn.wbuf.extend_from_slice(&t.bytes);
            if let Some(off) = t.timestamp_offset {
                conn.wbuf[at + off..at + off + 8].copy_from_slice(&ts);
            }
            k += 1;
        }
        sent += k;
        if window > 0 {
            sink.confirms.published(k);
        }
        conn.flush().await?;
        counters.sent.fetch_add(k, Ordering::Relaxed);
        conn.try_fill()?;
        conn.drain(&mut sink)?;
        commit(&sink, &mut reported, counters);
        hand_over_confirm_latency(&mut sink, shared, 50_000);
    }
    // Counted runs end when every message is confirmed.
    while window > 0 && sent >= limit && sink.confirms.in_flight() > 0 {
        conn.fill().await?;
        conn.drain(&mut sink)?;
        commit(&sink, &mut reported, counters);
    }
    if sent >= limit {
        let end = shared.since_start(now_ns());
        shared.producers_end_ns.fetch_max(end, Ordering::SeqCst);
    }
    hand_over_confirm_latency(&mut sink, shared, 0);
    Ok(())
}

/// What a consumer needs.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub uri: AmqpUri,
    pub queue: String,
    pub qos: u16,
    pub autoack: bool,
    /// 1: one single ack per message; more: one multiple ack per that many messages.
    pub ack_every: u64,
    pub count: Option<u64>,
    pub latency: bool,
    pub connect_timeout: Duration,
}

struct ConsumerSink<'a> {
    hist: &'a mut Histogram,
    latency: bool,
    now: u64,
    /// Deliveries this consumer still counts (the rest, past -D, are left unacked).
    remaining: u64,
    new: u64,
    last_tag: u64,
}

impl Events for ConsumerSink<'_> {
    #[inline]
    fn deliver(&mut self, delivery_tag: u64, timestamp: Option<u64>) {
        if self.remaining == 0 {
            return;
        }
        self.remaining -= 1;
        self.new += 1;
        self.last_tag = delivery_tag;
        if self.latency {
            if let Some(ts) = timestamp {
                // Zero means "no timestamp"; a future one cannot come from our clock.
                if ts != 0 && ts <= self.now {
                    self.hist.record(self.now - ts);
                }
            }
        }
    }

    fn confirm(&mut self, _: u64, _: bool, _: bool) {}

    fn returned(&mut self) {}

    fn method(&mut self, _: u16, _: Method) -> Result<(), ClientError> {
        Ok(())
    }
}

pub async fn run_consumer(shared: Arc<Shared>, spec: Arc<ConsumerSpec>, id: usize) {
    let result = consumer(&shared, &spec, id).await;
    shared.consumers_done.fetch_add(1, Ordering::SeqCst);
    if let Err(e) = result {
        shared.fail(format!("consumer {id} (queue {:?}): {e}", spec.queue));
    }
}

async fn consumer(shared: &Shared, spec: &ConsumerSpec, id: usize) -> Result<(), ClientError> {
    let mut conn = Connection::open(
        &spec.uri,
        &format!("warren-perf consumer {id}"),
        spec.connect_timeout,
    )
    .await?;
    let hist = Arc::new(Mutex::new(Histogram::new()));
    shared.latencies.lock().push(hist.clone());
    let result = async {
        conn.open_channel(CHANNEL).await?;
        if spec.qos > 0 {
            conn.qos(CHANNEL, spec.qos).await?;
        }
        let tag = format!("warren-perf-{id}");
        conn.consume(CHANNEL, &spec.queue, &tag, spec.autoack)
            .await?;
        conn.set_stop(shared.stop_signal());
        shared.ready_and_wait().await?;
        consume(&mut conn, shared, spec, &hist).await
    }
    .await;
    finish(conn, result).await
}

async fn consume(
    conn: &mut Connection,
    shared: &Shared,
    spec: &ConsumerSpec,
    hist: &Mutex<Histogram>,
) -> Result<(), ClientError> {
    let counters = &shared.counters;
    let mut remaining = spec.count.unwrap_or(u64::MAX);
    let mut last_tag = 0u64;
    let mut acked = 0u64;
    loop {
        // Deliveries may already be buffered (they can follow consume-ok in the same read).
        let now = now_ns();
        let new = {
            let mut h = hist.lock();
            let mut sink = ConsumerSink {
                hist: &mut h,
                latency: spec.latency,
                now,
                remaining,
                new: 0,
                last_tag,
            };
            conn.drain(&mut sink)?;
            remaining = sink.remaining;
            last_tag = sink.last_tag;
            sink.new
        };
        if new > 0 {
            counters.received.fetch_add(new, Ordering::Relaxed);
            counters
                .last_delivery_ns
                .fetch_max(shared.since_start(now), Ordering::Relaxed);
            if !spec.autoack {
                if spec.ack_every == 1 {
                    // Delivery tags on a channel are consecutive.
                    for tag in acked + 1..=last_tag {
                        write_ack(&mut conn.wbuf, CHANNEL, tag, false);
                    }
                    acked = last_tag;
                } else if last_tag - acked >= spec.ack_every {
                    write_ack(&mut conn.wbuf, CHANNEL, last_tag, true);
                    acked = last_tag;
                }
            }
        }
        if !conn.wbuf.is_empty() {
            match conn.flush().await {
                Err(ClientError::Stopped) => break,
                r => r?,
            }
        }
        if remaining == 0 || shared.is_stopping() {
            break;
        }
        match conn.fill().await {
            Err(ClientError::Stopped) => break,
            r => r?,
        }
    }
    if !spec.autoack && last_tag > acked {
        write_ack(&mut conn.wbuf, CHANNEL, last_tag, true);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirm_window_counts_out_of_order_confirms() {
        let mut t = ConfirmTracker::new();
        t.published(5);
        assert_eq!(t.in_flight(), 5);
        t.settle(3, false, true);
        assert_eq!((t.in_flight(), t.acked), (4, 1));
        t.settle(2, true, true); // settles 1 and 2
        assert_eq!((t.in_flight(), t.acked), (2, 3));
        t.settle(3, false, true); // already settled
        assert_eq!((t.in_flight(), t.acked), (2, 3));
        t.settle(5, true, false); // 4 and 5 nacked
        assert_eq!((t.in_flight(), t.acked, t.nacked), (0, 3, 2));
        t.settle(99, true, true); // never published
        assert_eq!(t.in_flight(), 0);
        t.published(2);
        t.settle(7, true, true);
        assert_eq!((t.in_flight(), t.acked), (0, 5));
        // Every settled message, acked or nacked, got its publish-to-confirm time, once.
        assert_eq!(t.latency.count(), 7);
    }

    #[test]
    fn consumer_sink_counts_up_to_its_limit_and_measures_latency() {
        let mut h = Histogram::new();
        let mut sink = ConsumerSink {
            hist: &mut h,
            latency: true,
            now: 10_000,
            remaining: 2,
            new: 0,
            last_tag: 0,
        };
        sink.deliver(1, Some(9_000));
        sink.deliver(2, Some(0)); // no timestamp
        sink.deliver(3, Some(1)); // past the limit: ignored
        assert_eq!((sink.new, sink.last_tag, sink.remaining), (2, 2, 0));
        assert_eq!((h.count(), h.max()), (1, 1_000));
    }
}
