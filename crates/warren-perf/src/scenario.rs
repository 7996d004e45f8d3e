//! A run from start to end: declare the topology, start the consumers and producers, release
//! them together, report every interval, decide when the run is over, tear down.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use warren_codec::BasicProperties;

use crate::cli::Options;
use crate::client::{ClientError, Connection, CHANNEL};
use crate::report::{progress_line, Columns, IdleReport, Latency, Printer, RunReport};
use crate::stats::{rate, Histogram, Snapshot};
use crate::sys::{cpu_seconds, now_ns, raise_open_files_limit, rss_kib};
use crate::uri::AmqpUri;
use crate::worker::{run_consumer, run_producer, ConsumerSpec, ProducerSpec, Shared};

/// How often the coordinator looks at the counters to decide whether the run is over.
const TICK: Duration = Duration::from_millis(20);
/// With -C and no -D: how long consumers may go without a delivery, once every producer is
/// done, before the run stops waiting for messages that will not come (unroutable, say).
const IDLE_AFTER_PRODUCERS: Duration = Duration::from_secs(3);
/// How long tasks get to close their connections once the run is over.
const TEARDOWN: Duration = Duration::from_secs(10);
/// Handshakes in flight at once when opening idle connections.
const IDLE_CONCURRENCY: usize = 64;

/// Names, declarations and publish targets derived from the options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub exchange: String,
    pub exchange_kind: String,
    pub queues: Vec<String>,
    /// (queue, binding key) when publishing through a named exchange.
    pub bindings: Vec<(String, String)>,
    /// (exchange, routing key) pairs the producers publish to round-robin.
    pub targets: Vec<(String, String)>,
    /// Queues each published message reaches (for knowing when a counted run is complete).
    pub copies_per_message: u64,
    pub declare: bool,
    pub delete_queues: bool,
    pub delete_exchange: bool,
}

impl Topology {
    pub fn new(opts: &Options, run_id: &str) -> Self {
        let queues = opts.queue_names(run_id);
        let exchange = opts.exchange_name(run_id);
        let fanout = opts.exchange_kind() == "fanout";
        let key = opts.routing_key.clone();
        let (targets, bindings) = if exchange.is_empty() {
            let targets = match &key {
                Some(k) => vec![(String::new(), k.clone())],
                None => queues.iter().map(|q| (String::new(), q.clone())).collect(),
            };
            (targets, Vec::new())
        } else if fanout {
            let k = key.unwrap_or_default();
            let bindings = queues.iter().map(|q| (q.clone(), k.clone())).collect();
            (vec![(exchange.clone(), k)], bindings)
        } else {
            match &key {
                Some(k) => (
                    vec![(exchange.clone(), k.clone())],
                    queues.iter().map(|q| (q.clone(), k.clone())).collect(),
                ),
                None => (
                    queues
                        .iter()
                        .map(|q| (exchange.clone(), q.clone()))
                        .collect(),
                    queues.iter().map(|q| (q.clone(), q.clone())).collect(),
                ),
            }
        };
        let copies_per_message = if fanout { queues.len() as u64 } else { 1 };
        Topology {
            exchange_kind: opts.exchange_kind().to_owned(),
            exchange,
            queues,
            bindings,
            targets,
            copies_per_message,
            declare: !opts.predeclared,
            delete_queues: !opts.predeclared && !opts.keep && opts.queues_are_generated(),
            delete_exchange: !opts.predeclared && !opts.keep && opts.exchange_is_generated(),
        }
    }

    async fn declare(&self, conn: &mut Connection, opts: &Options) -> Result<(), ClientError> {
        // Spec: "amq." names are the broker's own; they exist and may not be declared anew.
        if !self.exchange.is_empty() && !self.exchange.starts_with("amq.") {
            conn.declare_exchange(CHANNEL, &self.exchange, &self.exchange_kind, opts.durable)
                .await?;
        }
        let auto_delete = !opts.durable && !opts.keep;
        for q in &self.queues {
            conn.declare_queue(CHANNEL, q, opts.durable, auto_delete)
                .await?;
        }
        for (q, key) in &self.bindings {
            conn.bind_queue(CHANNEL, q, &self.exchange, key).await?;
        }
        Ok(())
    }

    async fn delete(&self, conn: &mut Connection) -> Result<(), ClientError> {
        if self.delete_queues {
            for q in &self.queues {
                conn.delete_queue(CHANNEL, q).await?;
            }
        }
        if self.delete_exchange {
            conn.delete_exchange(CHANNEL, &self.exchange).await?;
        }
        Ok(())
    }
}

/// A name no other run is using.
pub fn run_id() -> String {
    format!(
        "warren-perf-{}-{}",
        std::process::id(),
        now_ns() % 1_000_000
    )
}

/// How the measured phase ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ending {
    /// Nanoseconds from the start signal to the stop decision (0: never started).
    pub stopped_ns: u64,
    /// Ended because every count (-C/-D) was met, not by time, failure or interruption.
    pub by_count: bool,
    pub cpu_s: f64,
}

/// Everything about a run that the reporter needs, whether it ended normally or was cut off.
pub struct Run {
    pub shared: Arc<Shared>,
    pub total_latency: parking_lot::Mutex<Histogram>,
    pub ending: parking_lot::Mutex<Ending>,
    cpu_at_start: parking_lot::Mutex<f64>,
}

impl Run {
    pub fn new() -> Arc<Self> {
        Arc::new(Run {
            shared: Shared::new(),
            total_latency: parking_lot::Mutex::new(Histogram::new()),
            ending: parking_lot::Mutex::new(Ending::default()),
            cpu_at_start: parking_lot::Mutex::new(cpu_seconds()),
        })
    }

    /// Moves every consumer's latencies into `into` (and the run's total).
    fn collect_latency(&self, into: &mut Histogram) {
        for h in self.shared.latencies.lock().iter() {
            let mut h = h.lock();
            into.merge(&h);
            h.reset();
        }
        self.total_latency.lock().merge(into);
    }

    /// The report as things stand. `error` overrides the tasks' own failure, if any.
    pub fn report(&self, opts: &Options, error: Option<String>) -> RunReport {
        let mut rest = Histogram::new();
        self.collect_latency(&mut rest);
        let ending = *self.ending.lock();
        let c = self.shared.counters.snapshot();
        let stopped_ns = if ending.stopped_ns > 0 {
            ending.stopped_ns
        } else {
            self.shared.since_start(now_ns())
        };
        // A run that failed before its start signal measured nothing.
        let stopped_ns = if self.shared.started() { stopped_ns } else { 0 };
        let duration = stopped_ns as f64 / 1e9;
        let cpu = if ending.cpu_s > 0.0 {
            ending.cpu_s
        } else {
            cpu_seconds() - *self.cpu_at_start.lock()
        };
        let elapsed = |ns: u64| {
            if ending.by_count && ns > 0 {
                ns as f64 / 1e9
            } else {
                duration
            }
        };
        let send_s = elapsed(self.shared.producers_end_ns.load(Ordering::SeqCst));
        let recv_s = elapsed(self.shared.counters.last_delivery_ns.load(Ordering::SeqCst));
        let error = error.or_else(|| self.shared.failure());
        RunReport {
            scenario: opts.label.clone(),
            ok: error.is_none(),
            error,
            producers: opts.producer_count(),
            consumers: opts.consumer_count(),
            size: opts.size,
            confirm: (opts.confirm_window() > 0).then_some(opts.confirm_window()),
            qos: opts.qos,
            autoack: opts.autoack,
            send_rate: rate(c.sent, send_s).round(),
            recv_rate: rate(c.received, recv_s).round(),
            confirm_rate: rate(c.confirmed, send_s).round(),
            sent: c.sent,
            received: c.received,
            confirmed: c.confirmed,
            nacked: c.nacked,
            returned: c.returned,
            latency_us: Latency::of(&self.total_latency.lock()),
            confirm_latency_us: Latency::of(&self.shared.confirm_latency.lock()),
            duration_s: (duration * 1000.0).round() / 1000.0,
            perf_cpu_s: (cpu * 1000.0).round() / 1000.0,
            perf_cpu_pct: if duration > 0.0 {
                (cpu / duration * 100.0).round()
            } else {
                0.0
            },
        }
    }
}

fn raw_properties(opts: &Options) -> Vec<u8> {
    let props = BasicProperties {
        delivery_mode: opts.persistent().then_some(2),
        ..Default::default()
    };
    props.to_raw().to_vec()
}

/// Runs producers and consumers until the run is over. Failures are recorded in `run.shared`.
pub async fn run(opts: &Options, uri: &AmqpUri, run: &Run, printer: Printer) {
    let shared = &run.shared;
    let id = run_id();
    let topology = Topology::new(opts, &id);

    let mut admin = None;
    if topology.declare || topology.delete_queues || topology.delete_exchange {
        let declared = async {
            let mut conn =
                Connection::open(uri, "warren-perf setup", opts.connect_timeout()).await?;
            conn.open_channel(CHANNEL).await?;
            if topology.declare {
                topology.declare(&mut conn, opts).await?;
            }
            Ok::<_, ClientError>(conn)
        }
        .await;
        match declared {
            Ok(conn) => admin = Some(conn),
            Err(e) => {
                shared.fail(format!("setup: {e}"));
                return;
            }
        }
    }

    let mut tasks = JoinSet::new();
    let consumers_total = opts.consumer_count();
    let producers_total = opts.producer_count();
    let mut n = 0;
    for queue in &topology.queues {
        let spec = Arc::new(ConsumerSpec {
            uri: uri.clone(),
            queue: queue.clone(),
            qos: opts.qos,
            autoack: opts.autoack,
            ack_every: opts.ack_every(),
            count: opts.cmessages,
            latency: opts.latency_enabled(),
            connect_timeout: opts.connect_timeout(),
        });
        for _ in 0..opts.consumers {
            tasks.spawn(run_consumer(shared.clone(), spec.clone(), n));
            n += 1;
        }
    }
    let pspec = Arc::new(ProducerSpec {
        uri: uri.clone(),
        targets: topology.targets.clone(),
        mandatory: opts.mandatory(),
        raw_properties: raw_properties(opts),
        size: opts.size,
        confirm: opts.confirm_window(),
        rate: opts.rate,
        count: opts.pmessages,
        latency: opts.latency_enabled(),
        connect_timeout: opts.connect_timeout(),
    });
    for i in 0..producers_total {
        tasks.spawn(run_producer(shared.clone(), pspec.clone(), i));
    }

    // Release everyone together once all are connected and subscribed.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let total = consumers_total + producers_total;
    let mut interrupted = false;
    while shared.ready.load(Ordering::SeqCst) < total && shared.failure().is_none() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            _ = &mut ctrl_c => { interrupted = true; break; }
        }
    }

    if shared.failure().is_none() && !interrupted {
        let cpu0 = cpu_seconds();
        *run.cpu_at_start.lock() = cpu0;
        shared.go(now_ns());
        let by_count = measure(opts, run, &topology, printer, &mut ctrl_c).await;
        let stopped_ns = shared.since_start(now_ns());
        *run.ending.lock() = Ending {
            stopped_ns,
            by_count,
            cpu_s: cpu_seconds() - cpu0,
        };
    }
    shared.stop();

    let teardown = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(TEARDOWN, teardown).await.is_err() {
        tasks.abort_all();
        printer.text("warren-perf: some connections did not close in time");
    }
    if let Some(mut conn) = admin {
        let cleanup = async {
            topology.delete(&mut conn).await?;
            conn.close().await
        };
        if let Err(e) = cleanup.await {
            printer.text(&format!("warren-perf: cleaning up: {e}"));
        }
    }
}

/// The measured phase: reports every interval, returns whether it ended by meeting its
/// message counts (rather than by time, failure or Ctrl-C).
async fn measure(
    opts: &Options,
    run: &Run,
    topology: &Topology,
    printer: Printer,
    ctrl_c: &mut std::pin::Pin<&mut impl std::future::Future>,
) -> bool {
    let shared = &run.shared;
    let start = Instant::now();
    let run_time = opts.run_time();
    let interval = Duration::from_secs_f64(opts.interval);
    let cols = Columns {
        confirms: opts.confirm_window() > 0,
        returns: opts.mandatory(),
        latency: opts.latency_enabled(),
    };
    let producers_total = opts.producer_count();
    let consumers_total = opts.consumer_count();
    let expected =
        opts.pmessages.unwrap_or(0) * producers_total as u64 * topology.copies_per_message;
    let mut tick = tokio::time::interval(TICK);
    let mut next_report = interval;
    let mut last = Snapshot::default();
    let mut last_at = Duration::ZERO;
    let mut last_cpu = cpu_seconds();
    let mut window = Histogram::new();
    let mut idle_since: Option<(Instant, u64)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = ctrl_c.as_mut() => return false,
        }
        if shared.failure().is_some() {
            return false;
        }
        let elapsed = start.elapsed();
        if elapsed >= next_report {
            let now = shared.counters.snapshot();
            let secs = (elapsed - last_at).as_secs_f64();
            let cpu = cpu_seconds();
            let delta = Snapshot {
                sent: now.sent - last.sent,
                confirmed: now.confirmed - last.confirmed,
                nacked: now.nacked - last.nacked,
                returned: now.returned - last.returned,
                received: now.received - last.received,
            };
            run.collect_latency(&mut window);
            let cpu_pct = (cpu - last_cpu) / secs * 100.0;
            printer.progress(&progress_line(
                elapsed.as_secs_f64(),
                delta,
                secs,
                cols,
                &window,
                cpu_pct,
            ));
            window.reset();
            (last, last_at, last_cpu) = (now, elapsed, cpu);
            next_report += interval;
        }
        if run_time.is_some_and(|t| elapsed >= t) {
            return false;
        }
        let producers_done = shared.producers_done.load(Ordering::SeqCst) >= producers_total;
        let consumers_done = shared.consumers_done.load(Ordering::SeqCst) >= consumers_total;
        if opts.cmessages.is_some() && consumers_total > 0 {
            if consumers_done && (producers_done || opts.pmessages.is_none()) {
                return true;
            }
        } else if opts.pmessages.is_some() && producers_done {
            let received = shared.counters.received.load(Ordering::Relaxed);
            if consumers_total == 0 || received >= expected {
                return true;
            }
            match idle_since {
                Some((at, seen)) if seen == received => {
                    if at.elapsed() >= IDLE_AFTER_PRODUCERS {
                        printer.text(&format!(
                            "warren-perf: stopped waiting: {} of {expected} messages received",
                            received
                        ));
                        return true;
                    }
                }
                _ => idle_since = Some((Instant::now(), received)),
            }
        }
    }
}

/// Opens `--idle-connections` connections, holds them, reports how many opened and, given
/// `--broker-pid`, what they cost the broker in memory.
pub async fn idle(opts: &Options, uri: &AmqpUri, printer: Printer) -> IdleReport {
    let requested = opts.idle_connections.unwrap_or(0);
    let limit = raise_open_files_limit();
    if (limit as usize) < requested + 64 {
        printer.text(&format!(
            "warren-perf: open-files limit is {limit}: some of {requested} connections may fail"
        ));
    }
    let rss_before = opts.broker_pid.and_then(rss_kib);
    let cpu0 = cpu_seconds();
    let started = Instant::now();

    let mut open = Vec::with_capacity(requested);
    let mut first_error = None;
    let mut pending = JoinSet::new();
    let mut next = 0usize;
    while next < requested || !pending.is_empty() {
        // After the first failure the broker is likely at a limit: stop asking.
        while next < requested && pending.len() < IDLE_CONCURRENCY && first_error.is_none() {
            let uri = uri.clone();
            let name = format!("warren-perf idle {next}");
            let timeout = opts.connect_timeout();
            pending.spawn(async move {
                let mut conn = Connection::open(&uri, &name, timeout).await?;
                conn.open_channel(CHANNEL).await?;
                Ok::<_, ClientError>(conn)
            });
            next += 1;
        }
        match pending.join_next().await {
            Some(Ok(Ok(conn))) => open.push(conn),
            Some(Ok(Err(e))) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
            Some(Err(e)) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
            None => break,
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    let opened = open.len();
    // Connections never attempted (after a failure) count as failed too.
    let failed = requested - opened;
    printer.text(&format!(
        "opened {} of {requested} connections in {connect_s:.3}s",
        open.len()
    ));

    let hold = opts.run_time().unwrap_or(Duration::from_secs(10));
    let held = Instant::now();
    tokio::select! {
        _ = tokio::time::sleep(hold) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let held_s = held.elapsed().as_secs_f64();
    let rss_after = opts.broker_pid.and_then(rss_kib);
    let cpu_s = cpu_seconds() - cpu0;

    let mut closing = JoinSet::new();
    for conn in open.drain(..) {
        if closing.len() >= IDLE_CONCURRENCY * 4 {
            closing.join_next().await;
        }
        closing.spawn(async move {
            let _ = conn.close().await;
        });
    }
    while closing.join_next().await.is_some() {}

    let per_connection = match (rss_before, rss_after) {
        (Some(b), Some(a)) if opened > 0 => {
            Some(((a as f64 - b as f64) / opened as f64 * 10.0).round() / 10.0)
        }
        _ => None,
    };
    let total_s = started.elapsed().as_secs_f64();
    IdleReport {
        scenario: opts.label.clone(),
        ok: failed == 0,
        error: first_error,
        requested,
        idle_connections: opened,
        failed,
        connect_s: (connect_s * 1000.0).round() / 1000.0,
        held_s: (held_s * 1000.0).round() / 1000.0,
        broker_rss_kib_before: rss_before,
        broker_rss_kib_after: rss_after,
        broker_kib_per_connection: per_connection,
        perf_cpu_s: (cpu_s * 1000.0).round() / 1000.0,
        perf_cpu_pct: (cpu_s / total_s * 100.0).round(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn topo(args: &[&str]) -> Topology {
        let mut all = vec!["warren-perf"];
        all.extend_from_slice(args);
        let o = Options::try_parse_from(all).unwrap();
        o.validate().unwrap();
        Topology::new(&o, "run")
    }

    #[test]
    fn default_publishes_straight_to_a_generated_queue() {
        let t = topo(&[]);
        assert_eq!(t.exchange, "");
        assert_eq!(t.queues, vec!["run"]);
        assert_eq!(t.targets, vec![("".into(), "run".into())]);
        assert!(t.bindings.is_empty());
        assert!(t.declare && t.delete_queues && !t.delete_exchange);
    }

    #[test]
    fn named_queue_is_not_deleted() {
        let t = topo(&["-u", "backlog"]);
        assert_eq!(t.targets, vec![("".into(), "backlog".into())]);
        assert!(!t.delete_queues);
        let t = topo(&["--keep"]);
        assert!(!t.delete_queues);
    }

    #[test]
    fn fanout_binds_every_queue_and_counts_copies() {
        let t = topo(&["--fanout-queues", "3"]);
        assert_eq!(t.exchange, "run-fanout");
        assert_eq!(t.exchange_kind, "fanout");
        assert_eq!(t.targets, vec![("run-fanout".into(), "".into())]);
        assert_eq!(t.bindings.len(), 3);
        assert_eq!(t.copies_per_message, 3);
        assert!(t.delete_exchange && t.delete_queues);
    }

    #[test]
    fn queue_pattern_round_robins_across_queues() {
        let t = topo(&["--queue-pattern", "perf-%d", "--queue-pattern-to", "3"]);
        assert_eq!(
            t.targets,
            vec![
                ("".into(), "perf-1".into()),
                ("".into(), "perf-2".into()),
                ("".into(), "perf-3".into())
            ]
        );
        let t = topo(&[
            "--queue-pattern",
            "perf-%d",
            "--queue-pattern-to",
            "2",
            "-e",
            "ex",
        ]);
        assert_eq!(t.targets[1], ("ex".into(), "perf-2".into()));
        assert_eq!(t.bindings[1], ("perf-2".into(), "perf-2".into()));
        assert!(!t.delete_exchange);
    }

    #[test]
    fn predeclared_declares_and_deletes_nothing() {
        let t = topo(&["--predeclared", "-u", "q"]);
        assert!(!t.declare && !t.delete_queues && !t.delete_exchange);
    }

    #[test]
    fn persistent_flag_sets_delivery_mode() {
        let o = Options::try_parse_from(["warren-perf", "-f", "persistent"]).unwrap();
        let props = BasicProperties::decode(raw_properties(&o).into()).unwrap();
        assert_eq!(props.delivery_mode, Some(2));
        let o = Options::try_parse_from(["warren-perf"]).unwrap();
        assert_eq!(raw_properties(&o), vec![0, 0]);
    }
}
