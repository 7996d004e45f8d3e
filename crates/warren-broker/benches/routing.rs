//! Micro-benchmarks of the broker's per-message paths: routing through each kind of exchange,
//! and a queue taking a message and handing it to a consumer. See `docs/microbenchmarks.md`;
//! `bench/instructions.sh` counts their instructions.

#[path = "../../../bench/harness.rs"]
mod harness;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use harness::{black_box, Bench};
use warren_broker::{
    headers_match, Broker, Channel, Exchange, ExchangeKind, ExchangeSpec, Message, Outbound,
    Outbox, Queue, QueueSpec, TopicTrie, VHost,
};
use warren_codec::{BasicProperties, FieldTable, FieldValue, LongString, ShortString};

/// The server's side of a connection, reduced to counting what it is handed: deliveries are
/// dropped, so the measurement stops at the broker's boundary.
#[derive(Default)]
struct CountingOutbox {
    pushed: AtomicU64,
}

impl Outbox for CountingOutbox {
    fn push(&self, item: Outbound) {
        self.pushed.fetch_add(1, Ordering::Relaxed);
        drop(item);
    }

    fn is_congested(&self) -> bool {
        false
    }
}

const CONN: u64 = 1;

/// Routing cases cycle through this many routing keys. With one key, the hash maps' random
/// seeds decide a fixed probe length for the whole run, and the count moves by a few percent
/// from run to run; averaged over several keys it holds still.
const KEYS: usize = 16;

/// A short string backed by a shared buffer, as the ones decoded from a publish are.
fn shared(s: &str) -> ShortString {
    ShortString::from_bytes(Bytes::copy_from_slice(s.as_bytes())).expect("short string")
}

fn vhost() -> Arc<VHost> {
    Broker::new().vhost("/").expect("the default vhost")
}

fn declare_queue(v: &Arc<VHost>, name: &str) -> Arc<Queue> {
    let spec = QueueSpec {
        name: shared(name),
        durable: false,
        exclusive: false,
        auto_delete: false,
        arguments: FieldTable::new(),
    };
    v.declare_queue(&spec, false, CONN)
        .expect("declare queue")
        .0
}

fn declare_exchange(v: &Arc<VHost>, name: &str, kind: ExchangeKind) -> Arc<Exchange> {
    let spec = ExchangeSpec {
        name: shared(name),
        kind,
        durable: false,
        auto_delete: false,
        internal: false,
        arguments: FieldTable::new(),
    };
    v.declare_exchange(&spec).expect("declare exchange")
}

/// A message as the server builds it from a publish: shared strings and buffers, properties
/// decoded from the raw bytes.
struct Template {
    exchange: ShortString,
    routing_key: ShortString,
    raw: Bytes,
    props: BasicProperties,
    body: Bytes,
}

impl Template {
    fn new(exchange: &str, routing_key: &str, props: BasicProperties) -> Self {
        let raw = props.to_raw();
        Template {
            exchange: shared(exchange),
            routing_key: shared(routing_key),
            props: BasicProperties::decode(raw.clone()).expect("properties"),
            raw,
            body: Bytes::copy_from_slice(&[0x42u8; 16]),
        }
    }

    fn message(&self) -> Arc<Message> {
        Arc::new(Message::new(
            self.exchange.clone(),
            self.routing_key.clone(),
            self.raw.clone(),
            self.body.clone(),
            &self.props,
        ))
    }
}

/// Binding patterns of a topic exchange with `n` bindings: a mix of literal patterns, `*` and
/// `#`, spread over 16 regions, 64 services and as many events as it takes.
fn topic_pattern(i: usize) -> String {
    let region = i % 16;
    let service = (i / 16) % 64;
    let event = i / (16 * 64);
    match i % 4 {
        0 => format!("region{region}.svc{service}.ev{event}"),
        1 => format!("region{region}.*.ev{event}"),
        2 => format!("region{region}.svc{service}.#"),
        _ => format!("*.svc{service}.ev{event}.#"),
    }
}

/// Routing key `j` of the topic cases: each matches a few of the patterns above.
fn topic_key(j: usize) -> String {
    format!("region{}.svc{}.ev0", j % 16, j * 5 % 64)
}

fn topic_trie(n: usize) -> TopicTrie<u32> {
    let mut t = TopicTrie::new();
    for i in 0..n {
        t.insert(&topic_pattern(i), i as u32);
    }
    t
}

fn headers_properties() -> BasicProperties {
    let headers = FieldTable(vec![
        (shared("format"), FieldValue::LongString("pdf".into())),
        (shared("type"), FieldValue::LongString("report3".into())),
        (shared("x-retry-count"), FieldValue::I32(0)),
        (
            shared("x-trace-id"),
            FieldValue::LongString(LongString::from("4bf92f3577b34da6a3ce929d0e0e4736")),
        ),
    ]);
    BasicProperties {
        content_type: Some(shared("application/pdf")),
        headers: Some(headers),
        ..BasicProperties::default()
    }
}

/// Binding `i` of the headers exchange: `x-match` all or any over two conditions.
fn headers_binding(i: usize) -> FieldTable {
    let mode = if i % 2 == 0 { "all" } else { "any" };
    FieldTable(vec![
        (shared("x-match"), FieldValue::LongString(mode.into())),
        (shared("format"), FieldValue::LongString("pdf".into())),
        (
            shared("type"),
            FieldValue::LongString(format!("report{i}").into()),
        ),
    ])
}

struct Routed {
    vhost: Arc<VHost>,
    exchange: Arc<Exchange>,
    messages: Vec<Arc<Message>>,
}

impl Routed {
    fn route(&self, i: u64) {
        let m = &self.messages[i as usize % self.messages.len()];
        black_box(self.vhost.route(&self.exchange, m));
    }
}

/// An exchange of `kind` with `queues` queues bound by `binding(i)` (routing key, arguments),
/// and messages to route through it in turn.
fn routed(
    kind: ExchangeKind,
    queues: usize,
    binding: impl Fn(usize) -> (String, FieldTable),
    templates: Vec<Template>,
) -> Routed {
    let v = vhost();
    let x = declare_exchange(&v, "bench.x", kind);
    for i in 0..queues {
        let q = format!("q{i}");
        declare_queue(&v, &q);
        let (key, args) = binding(i);
        v.bind_queue(&q, "bench.x", shared(&key), args, CONN)
            .expect("bind");
    }
    Routed {
        vhost: v,
        exchange: x,
        messages: templates.iter().map(Template::message).collect(),
    }
}

struct Consuming {
    queue: Arc<Queue>,
    channel: Arc<Channel>,
    template: Template,
    next_tag: u64,
}

fn consuming(no_ack: bool, consumers: bool) -> Consuming {
    let v = vhost();
    let queue = declare_queue(&v, "work");
    let outbox: Arc<dyn Outbox> = Arc::new(CountingOutbox::default());
    let channel = Arc::new(Channel::new(1, CONN, outbox));
    if consumers {
        let c = channel
            .add_consumer(
                &queue,
                shared("amq.ctag-bench"),
                no_ack,
                false,
                0,
                FieldTable::new(),
            )
            .expect("consume");
        c.activate();
    }
    Consuming {
        queue,
        channel,
        template: Template::new("", "work", BasicProperties::default()),
        next_tag: 1,
    }
}

fn main() {
    let mut b = Bench::from_args("routing");

    for (name, n, bindings) in [
        ("topic_match_1k", 500_000, 1_000),
        ("topic_match_10k", 500_000, 10_000),
    ] {
        let bindings = b.size(bindings, bindings / 10);
        b.case(
            name,
            n,
            || {
                (
                    topic_trie(bindings),
                    (0..KEYS).map(topic_key).collect::<Vec<_>>(),
                )
            },
            |(t, keys), i| {
                let key = &keys[i as usize % keys.len()];
                let mut matched = 0u32;
                t.for_each_match(black_box(key), &mut |v| matched = matched.wrapping_add(*v));
                black_box(matched);
            },
        );
    }

    // Each routing case goes through `VHost::route`, the server's call per publish.
    b.case(
        "direct_route_100",
        1_000_000,
        || {
            routed(
                ExchangeKind::Direct,
                100,
                |i| (format!("key.{i}"), FieldTable::new()),
                (0..KEYS)
                    .map(|j| {
                        let key = format!("key.{}", j * 37 % 100);
                        Template::new("bench.x", &key, BasicProperties::default())
                    })
                    .collect(),
            )
        },
        |r, i| r.route(i),
    );

    b.case(
        "fanout_route_10",
        1_000_000,
        || {
            routed(
                ExchangeKind::Fanout,
                10,
                |_| (String::new(), FieldTable::new()),
                vec![Template::new("bench.x", "", BasicProperties::default())],
            )
        },
        |r, i| r.route(i),
    );

    // Routing decodes the message's properties to read its headers.
    b.case(
        "headers_route_10",
        200_000,
        || {
            routed(
                ExchangeKind::Headers,
                10,
                |i| (String::new(), headers_binding(i)),
                vec![Template::new("bench.x", "", headers_properties())],
            )
        },
        |r, i| r.route(i),
    );

    b.case(
        "headers_match_one",
        2_000_000,
        || (headers_binding(3), headers_properties().headers),
        |(args, headers), _| {
            black_box(headers_match(args, headers.as_ref()));
        },
    );

    // A message built as the server builds one per publish, put in a queue with no consumer.
    b.case(
        "queue_publish",
        1_000_000,
        || consuming(true, false),
        |c, _| {
            black_box(c.queue.publish(c.template.message()));
        },
    );

    // ... handed at once to a no-ack consumer (delivery pushed to the counting outbox).
    b.case(
        "queue_publish_deliver_noack",
        1_000_000,
        || consuming(true, true),
        |c, _| {
            black_box(c.queue.publish(c.template.message()));
        },
    );

    // ... to a consumer that acks each delivery.
    b.case(
        "queue_publish_deliver_ack",
        1_000_000,
        || consuming(false, true),
        |c, _| {
            black_box(c.queue.publish(c.template.message()));
            c.channel.ack(c.next_tag, false).expect("ack");
            c.next_tag += 1;
        },
    );

    b.done();
}
