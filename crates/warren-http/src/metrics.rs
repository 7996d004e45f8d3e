//! Prometheus metrics in the `rabbitmq_prometheus` format (see `docs/dev/prometheus.md`):
//! `/metrics` (aggregated), `/metrics/per-object` (per vhost and queue), and
//! `/metrics/detailed` (chosen families). Written by hand in RabbitMQ's names and labels;
//! reading takes no lock the message path holds for long (queue snapshots take each queue's
//! lock briefly).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use warren_broker::stats::{MessageStats, SIZE_BUCKETS};
use warren_broker::QueueType;

use crate::{process, Http};

pub fn router() -> Router<Arc<Http>> {
    Router::new()
        .route("/metrics", get(aggregated))
        .route("/metrics/per-object", get(per_object))
        .route("/metrics/detailed", get(detailed))
}

const PROTOCOL: &str = "amqp091";
const QUEUE_TYPES: [&str; 3] = [
    "rabbit_classic_queue",
    "rabbit_quorum_queue",
    "rabbit_stream_queue",
];

/// Escapes a label value as the text format requires (RabbitMQ 3.10 did not, and a queue
/// named with a quote broke its whole page).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A page of families; each family's TYPE and HELP come once, before its samples.
#[derive(Default)]
struct Page {
    out: String,
}

impl Page {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        let _ = writeln!(self.out, "# HELP {name} {help}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn done(mut self) -> Response {
        self.out.push('\n');
        (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            self.out,
        )
            .into_response()
    }
}

/// What the broker holds right now, read once per scrape.
struct Reading {
    totals: MessageStats,
    sizes: warren_broker::stats::SizeHistogram,
    publishers: usize,
    /// Per queue type: (ready, unacked, consumers).
    queues: Vec<QueueReading>,
    connections: usize,
    channels: usize,
    consumers: usize,
    churn: warren_broker::stats::ChurnStats,
}

struct QueueReading {
    vhost: String,
    name: String,
    kind: QueueType,
    s: warren_broker::QueueSnapshot,
}

fn read(http: &Http) -> Reading {
    let b = &http.broker;
    let t = b.totals(None);
    let mut queues = Vec::new();
    for v in b.vhosts() {
        for q in v.queues() {
            queues.push(QueueReading {
                vhost: v.name.to_string(),
                name: q.name.to_string(),
                kind: q.config.queue_type,
                s: q.snapshot(),
            });
        }
    }
    let connections = b.connections();
    let channels = connections.iter().map(|c| c.channels().len()).sum();
    Reading {
        totals: t.messages,
        sizes: t.sizes,
        publishers: t.publishers,
        queues,
        connections: connections.len(),
        channels,
        consumers: b.consumers().len(),
        churn: b.churn(),
    }
}

fn identity(page: &mut Page, http: &Http, endpoint: &str) {
    page.family(
        "rabbitmq_build_info",
        "untyped",
        "RabbitMQ & Erlang/OTP version info",
    );
    page.sample(
        "rabbitmq_build_info",
        &[
            (
                "rabbitmq_version",
                warren_broker::definitions::RABBIT_VERSION,
            ),
            (
                "prometheus_plugin_version",
                warren_broker::definitions::RABBIT_VERSION,
            ),
            ("prometheus_client_version", "4.9.1"),
            ("erlang_version", "none"),
            ("warren_version", env!("CARGO_PKG_VERSION")),
        ],
        1,
    );
    page.family(
        "rabbitmq_identity_info",
        "untyped",
        "RabbitMQ node & cluster identity info",
    );
    let cluster_id = http.node.cluster_id();
    page.sample(
        "rabbitmq_identity_info",
        &[
            ("rabbitmq_node", &http.node.name),
            ("rabbitmq_cluster", &http.node.cluster_name),
            ("rabbitmq_cluster_permanent_id", &cluster_id),
            ("rabbitmq_endpoint", endpoint),
        ],
        1,
    );
}

fn process(page: &mut Page, http: &Http) {
    let rss = process::resident_memory();
    let fds = process::open_fds();
    let max_fds = process::fd_limit();
    let sockets = http.broker.connections().len();
    page.one(
        "rabbitmq_process_open_fds",
        "gauge",
        "Open file descriptors",
        fds,
    );
    page.one(
        "rabbitmq_process_max_fds",
        "gauge",
        "Open file descriptors limit",
        max_fds,
    );
    page.one(
        "rabbitmq_process_open_tcp_sockets",
        "gauge",
        "Open TCP sockets",
        sockets,
    );
    page.one(
        "rabbitmq_process_max_tcp_sockets",
        "gauge",
        "Open TCP sockets limit",
        max_fds,
    );
    page.one(
        "rabbitmq_process_resident_memory_bytes",
        "gauge",
        "Memory used in bytes",
        rss,
    );
    page.one(
        "rabbitmq_resident_memory_limit_bytes",
        "gauge",
        "Memory high watermark in bytes",
        http.node.memory_limit,
    );
    page.one(
        "rabbitmq_disk_space_available_limit_bytes",
        "gauge",
        "Free disk space low watermark in bytes",
        http.node.disk_free_limit,
    );
    let free = http.alarms.disk_free().unwrap_or(0);
    page.one(
        "rabbitmq_disk_space_available_bytes",
        "gauge",
        "Disk space available in bytes",
        free,
    );
    let uptime = http.started.elapsed().as_secs_f64();
    page.one(
        "rabbitmq_erlang_uptime_seconds",
        "gauge",
        "Node uptime",
        format!("{uptime:.3}"),
    );
    let (mem, disk) = http.alarms.raised();
    page.one(
        "rabbitmq_alarms_memory_used_watermark",
        "untyped",
        "is 1 if VM memory watermark alarm is in effect",
        u8::from(mem),
    );
    page.one(
        "rabbitmq_alarms_free_disk_space_watermark",
        "untyped",
        "is 1 if free disk space watermark alarm is in effect",
        u8::from(disk),
    );
    page.one(
        "rabbitmq_alarms_file_descriptor_limit",
        "untyped",
        "is 1 if file descriptor limit alarm is in effect",
        0,
    );
}

fn objects(page: &mut Page, r: &Reading) {
    page.one(
        "rabbitmq_connections",
        "gauge",
        "Connections currently open",
        r.connections,
    );
    page.one(
        "rabbitmq_channels",
        "gauge",
        "Channels currently open",
        r.channels,
    );
    page.one(
        "rabbitmq_consumers",
        "gauge",
        "Consumers currently connected",
        r.consumers,
    );
    page.one(
        "rabbitmq_queues",
        "gauge",
        "Queues available",
        r.queues.len(),
    );
    page.one(
        "rabbitmq_channel_consumers",
        "gauge",
        "Consumers on a channel",
        r.consumers,
    );
    let c = &r.churn;
    page.one(
        "rabbitmq_connections_opened_total",
        "counter",
        "Total number of connections opened",
        c.connections_opened,
    );
    page.one(
        "rabbitmq_connections_closed_total",
        "counter",
        "Total number of connections closed or terminated",
        c.connections_closed,
    );
    page.one(
        "rabbitmq_channels_opened_total",
        "counter",
        "Total number of channels opened",
        c.channels_opened,
    );
    page.one(
        "rabbitmq_channels_closed_total",
        "counter",
        "Total number of channels closed",
        c.channels_closed,
    );
    page.one(
        "rabbitmq_queues_declared_total",
        "counter",
        "Total number of queues declared",
        c.queues_declared,
    );
    page.one(
        "rabbitmq_queues_created_total",
        "counter",
        "Total number of queues created",
        c.queues_created,
    );
    page.one(
        "rabbitmq_queues_deleted_total",
        "counter",
        "Total number of queues deleted",
        c.queues_deleted,
    );
}

fn queue_sums(page: &mut Page, r: &Reading) {
    let ready: u64 = r.queues.iter().map(|q| q.s.messages_ready).sum();
    let unacked: u64 = r.queues.iter().map(|q| q.s.messages_unacknowledged).sum();
    page.one(
        "rabbitmq_queue_messages_ready",
        "gauge",
        "Messages ready to be delivered to consumers",
        ready,
    );
    page.one(
        "rabbitmq_queue_messages_unacked",
        "gauge",
        "Messages delivered to consumers but not yet acknowledged",
        unacked,
    );
    page.one(
        "rabbitmq_queue_messages",
        "gauge",
        "Sum of ready and unacknowledged messages - total queue depth",
        ready + unacked,
    );
    let consumers: u64 = r.queues.iter().map(|q| u64::from(q.s.consumers)).sum();
    page.one(
        "rabbitmq_queue_consumers",
        "gauge",
        "Consumers on a queue",
        consumers,
    );
}

/// A per-queue family: name, help, and how to read it.
type QueueFamily = (&'static str, &'static str, fn(&QueueReading) -> u64);
/// A `queue_type`-labelled global counter: name, help, and which queue counter it sums.
type TypedCounter = (&'static str, &'static str, fn(&MessageStats) -> u64);

fn per_queue(page: &mut Page, r: &Reading) {
    let families: [QueueFamily; 6] = [
        (
            "rabbitmq_queue_messages_ready",
            "Messages ready to be delivered to consumers",
            |q| q.s.messages_ready,
        ),
        (
            "rabbitmq_queue_messages_unacked",
            "Messages delivered to consumers but not yet acknowledged",
            |q| q.s.messages_unacknowledged,
        ),
        (
            "rabbitmq_queue_messages",
            "Sum of ready and unacknowledged messages - total queue depth",
            |q| q.s.messages_ready + q.s.messages_unacknowledged,
        ),
        ("rabbitmq_queue_consumers", "Consumers on a queue", |q| {
            u64::from(q.s.consumers)
        }),
        (
            "rabbitmq_queue_messages_ready_bytes",
            "Size in bytes of ready messages",
            |q| q.s.message_bytes_ready,
        ),
        (
            "rabbitmq_queue_messages_paged_out",
            "Messages paged out to disk",
            |q| q.s.messages_paged_out,
        ),
    ];
    for (name, help, value) in families {
        page.family(name, "gauge", help);
        for q in &r.queues {
            page.sample(name, &[("vhost", &q.vhost), ("queue", &q.name)], value(q));
        }
    }
}

/// Which queue type a queue's deliveries count under.
fn type_label(kind: QueueType) -> &'static str {
    match kind {
        QueueType::Classic => QUEUE_TYPES[0],
        QueueType::Quorum => QUEUE_TYPES[1],
        QueueType::Stream => QUEUE_TYPES[2],
    }
}

fn global(page: &mut Page, r: &Reading) {
    let t = &r.totals;
    let proto = [("protocol", PROTOCOL)];
    let plain: [(&str, &str, u64); 6] = [
        ("rabbitmq_global_messages_received_total", "Total number of messages received from publishers", t.publish),
        ("rabbitmq_global_messages_received_confirm_total", "Total number of messages received from publishers expecting confirmations", t.publish_confirm),
        ("rabbitmq_global_messages_routed_total", "Total number of messages routed to queues or streams", t.routed),
        ("rabbitmq_global_messages_confirmed_total", "Total number of messages confirmed to publishers", t.confirm),
        ("rabbitmq_global_messages_unroutable_dropped_total", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable", t.drop_unroutable),
        ("rabbitmq_global_messages_unroutable_returned_total", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", t.return_unroutable),
    ];
    for (name, help, v) in plain {
        page.family(name, "counter", help);
        page.sample(name, &proto, v);
    }
    page.family(
        "rabbitmq_global_publishers",
        "gauge",
        "Current number of publishers",
    );
    page.sample("rabbitmq_global_publishers", &proto, r.publishers);
    page.family(
        "rabbitmq_global_consumers",
        "gauge",
        "Current number of consumers",
    );
    page.sample("rabbitmq_global_consumers", &proto, r.consumers);
    // Per queue type: the queues' own counters, summed by type.
    let mut by_type: HashMap<&str, MessageStats> = HashMap::new();
    for q in &r.queues {
        by_type
            .entry(type_label(q.kind))
            .or_default()
            .add(&q.s.stats);
    }
    let typed: [TypedCounter; 8] = [
        ("rabbitmq_global_messages_delivered_total", "Total number of messages delivered to consumers", |s| s.deliver_get()),
        ("rabbitmq_global_messages_delivered_consume_manual_ack_total", "Total number of messages delivered to consumers using basic.consume with manual acknowledgment", |s| s.deliver),
        ("rabbitmq_global_messages_delivered_consume_auto_ack_total", "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment", |s| s.deliver_no_ack),
        ("rabbitmq_global_messages_delivered_get_manual_ack_total", "Total number of messages delivered to consumers using basic.get with manual acknowledgment", |s| s.get),
        ("rabbitmq_global_messages_delivered_get_auto_ack_total", "Total number of messages delivered to consumers using basic.get with automatic acknowledgment", |s| s.get_no_ack),
        ("rabbitmq_global_messages_get_empty_total", "Total number of times basic.get operations fetched no message", |s| s.get_empty),
        ("rabbitmq_global_messages_redelivered_total", "Total number of messages redelivered to consumers", |s| s.redeliver),
        ("rabbitmq_global_messages_acknowledged_total", "Total number of messages acknowledged by consumers", |s| s.ack),
    ];
    let zero = MessageStats::default();
    for (name, help, value) in typed {
        page.family(name, "counter", help);
        for qt in QUEUE_TYPES {
            let s = by_type.get(qt).unwrap_or(&zero);
            page.sample(
                name,
                &[("protocol", PROTOCOL), ("queue_type", qt)],
                value(s),
            );
        }
    }
    sizes(page, &r.sizes);
}

/// The bucket bounds as the RabbitMQ-Overview dashboard selects them: Prometheus 3 stores
/// RabbitMQ's integer `le` values in this float form, and Prometheus 2 keeps what it is given,
/// so giving this form makes the dashboard's size panels work with both.
const LE: [&str; SIZE_BUCKETS.len()] = [
    "100.0", "1000.0", "10000.0", "100000.0", "1e+06", "1e+07", "5e+07", "1e+08",
];

fn sizes(page: &mut Page, h: &warren_broker::stats::SizeHistogram) {
    let name = "rabbitmq_message_size_bytes";
    page.family(
        name,
        "histogram",
        "Size of messages received from publishers",
    );
    let mut cumulative = 0;
    for (i, le) in LE.iter().enumerate() {
        cumulative += h.buckets[i];
        page.sample(
            &format!("{name}_bucket"),
            &[("protocol", PROTOCOL), ("le", le)],
            cumulative,
        );
    }
    page.sample(
        &format!("{name}_bucket"),
        &[("protocol", PROTOCOL), ("le", "+Inf")],
        h.count(),
    );
    page.sample(
        &format!("{name}_count"),
        &[("protocol", PROTOCOL)],
        h.count(),
    );
    page.sample(&format!("{name}_sum"), &[("protocol", PROTOCOL)], h.sum);
}

async fn aggregated(State(http): State<Arc<Http>>) -> Response {
    let r = read(&http);
    let mut page = Page::default();
    process(&mut page, &http);
    objects(&mut page, &r);
    queue_sums(&mut page, &r);
    identity(&mut page, &http, "aggregated");
    global(&mut page, &r);
    page.done()
}

async fn per_object(State(http): State<Arc<Http>>) -> Response {
    let r = read(&http);
    let mut page = Page::default();
    process(&mut page, &http);
    objects(&mut page, &r);
    per_queue(&mut page, &r);
    identity(&mut page, &http, "per-object");
    global(&mut page, &r);
    page.done()
}

/// `/metrics/detailed?family=...&vhost=...`: only the families asked for (`family` repeats).
async fn detailed(
    State(http): State<Arc<Http>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let families: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "family")
        .map(|(_, v)| v.as_str())
        .collect();
    let vhosts: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "vhost")
        .map(|(_, v)| v.as_str())
        .collect();
    let mut r = read(&http);
    if !vhosts.is_empty() {
        r.queues.retain(|q| vhosts.contains(&q.vhost.as_str()));
    }
    let mut page = Page::default();
    identity(&mut page, &http, "detailed");
    // Unknown families are ignored, as RabbitMQ does; each group is written once.
    let wants = |names: &[&str]| families.iter().any(|f| names.contains(f));
    if wants(&["queue_coarse_metrics", "queue_metrics"]) {
        per_queue(&mut page, &r);
    }
    if wants(&[
        "connection_churn_metrics",
        "channel_churn_metrics",
        "queue_churn_metrics",
    ]) {
        objects(&mut page, &r);
    }
    page.done()
}
