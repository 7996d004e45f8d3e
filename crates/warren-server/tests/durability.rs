//! Durability across a clean restart, seen from a client: which topology and which messages
//! come back when the broker reopens its data directory, and which must not.
//!
//! Every test runs a broker on a temporary data directory, restarts it with
//! [`TestBroker::restart`] (clean shutdown, store closed, same directory reopened on a new
//! port) and looks again with fresh connections. Messages that must be in the log before the
//! restart are published with confirms; acks that must be recorded are followed by a round
//! trip on their channel, so the broker has processed them when the restart begins.

mod common;

use common::*;
use lapin::options::{
    BasicAckOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use tempfile::TempDir;

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

fn transient() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(1)
}

async fn start(dir: &TempDir) -> TestBroker {
    TestBroker::start_durable(dir.path()).await
}

/// A channel in confirm mode.
async fn confirm_channel(broker: &TestBroker) -> (Connection, Channel) {
    let (conn, ch) = broker.channel().await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .expect("confirm.select");
    (conn, ch)
}

/// Publishes on a confirm-mode channel and waits for the broker's ack.
async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) {
    let confirm =
        within(ch.basic_publish(exchange, key, BasicPublishOptions::default(), body, props))
            .await
            .expect("publish");
    let c = within(confirm).await.expect("confirmation");
    assert!(c.is_ack(), "publish to {exchange:?}/{key:?} was not acked");
}

fn queue_options(durable: bool) -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable,
        ..Default::default()
    }
}

async fn declare_queue(ch: &Channel, name: &str, options: QueueDeclareOptions, args: FieldTable) {
    within(ch.queue_declare(name, options, args))
        .await
        .unwrap_or_else(|e| panic!("declare queue {name}: {e}"));
}

async fn durable_queue(ch: &Channel, name: &str) {
    declare_queue(ch, name, queue_options(true), FieldTable::default()).await;
}

async fn declare_exchange(ch: &Channel, name: &str, kind: ExchangeKind, durable: bool) {
    within(ch.exchange_declare(
        name,
        kind,
        ExchangeDeclareOptions {
            durable,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap_or_else(|e| panic!("declare exchange {name}: {e}"));
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    within(ch.queue_bind(
        queue,
        exchange,
        key,
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("queue.bind");
}

/// Whether a passive declare finds the queue (on a channel of its own: a 404 closes it).
async fn queue_exists(broker: &TestBroker, name: &str) -> bool {
    let (_conn, ch) = broker.channel().await;
    let r = within(ch.queue_declare(
        name,
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await;
    match r {
        Ok(_) => true,
        Err(e) if reply_code(&e) == Some(404) => false,
        Err(e) => panic!("passive declare of queue {name}: {e}"),
    }
}

async fn exchange_exists(broker: &TestBroker, name: &str) -> bool {
    let (_conn, ch) = broker.channel().await;
    let r = within(ch.exchange_declare(
        name,
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await;
    match r {
        Ok(()) => true,
        Err(e) if reply_code(&e) == Some(404) => false,
        Err(e) => panic!("passive declare of exchange {name}: {e}"),
    }
}

/// A round trip on `ch`: the broker has processed everything sent on it before (acks, nacks).
async fn sync(ch: &Channel, queue: &str) {
    queue_counts(ch, queue).await;
}

/// Takes every ready message of `queue` (basic.get with auto-ack): bodies and redelivered
/// flags, in queue order.
async fn drain(broker: &TestBroker, queue: &str) -> Vec<(Vec<u8>, bool)> {
    let (_conn, ch) = broker.channel().await;
    let mut out = Vec::new();
    while let Some(m) = get(&ch, queue, true).await {
        out.push((m.delivery.data.clone(), m.delivery.redelivered));
    }
    out
}

async fn drain_bodies(broker: &TestBroker, queue: &str) -> Vec<Vec<u8>> {
    drain(broker, queue)
        .await
        .into_iter()
        .map(|(b, _)| b)
        .collect()
}

fn bodies(names: &[&str]) -> Vec<Vec<u8>> {
    names.iter().map(|n| n.as_bytes().to_vec()).collect()
}

/// The data directory outlives the brokers opened on it.
fn data_dir() -> TempDir {
    tempfile::tempdir().expect("temporary data directory")
}

// ---------------------------------------------------------------------------------------
// Topology

#[tokio::test]
async fn durable_exchange_queue_and_binding_survive_restart() {
    let dir = data_dir();
    let broker = start(&dir).await;
    {
        let (_conn, ch) = broker.channel().await;
        declare_exchange(&ch, "orders", ExchangeKind::Direct, true).await;
        durable_queue(&ch, "orders.eu").await;
        bind(&ch, "orders.eu", "orders", "eu").await;
        // A binding from a standard exchange (durable, and recreated by every vhost) too.
        bind(&ch, "orders.eu", "amq.topic", "orders.#").await;
    }
    let broker = broker.restart().await;
    assert!(exchange_exists(&broker, "orders").await);
    assert!(queue_exists(&broker, "orders.eu").await);
    // The bindings route again: publishes to the exchanges reach the queue.
    let (_conn, ch) = confirm_channel(&broker).await;
    publish_confirmed(&ch, "orders", "eu", b"routed", transient()).await;
    publish_confirmed(&ch, "amq.topic", "orders.eu.new", b"topic", transient()).await;
    assert_eq!(
        drain_bodies(&broker, "orders.eu").await,
        bodies(&["routed", "topic"])
    );
}

#[tokio::test]
async fn transient_queue_exclusive_queue_and_transient_exchange_are_gone_after_restart() {
    let dir = data_dir();
    let broker = start(&dir).await;
    let (conn, ch) = broker.channel().await;
    durable_queue(&ch, "kept").await;
    declare_queue(
        &ch,
        "transient",
        queue_options(false),
        FieldTable::default(),
    )
    .await;
    // Asked for durable, but exclusive: it lives and dies with its connection, which is
    // still open when the broker goes down.
    declare_queue(
        &ch,
        "exclusive",
        QueueDeclareOptions {
            durable: true,
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await;
    declare_exchange(&ch, "transient.x", ExchangeKind::Fanout, false).await;
    let broker = broker.restart().await;
    drop((ch, conn));
    assert!(queue_exists(&broker, "kept").await);
    assert!(!queue_exists(&broker, "transient").await);
    assert!(!queue_exists(&broker, "exclusive").await);
    assert!(!exchange_exists(&broker, "transient.x").await);
}

#[tokio::test]
async fn durable_auto_delete_queue_without_consumer_survives_restart() {
    let dir = data_dir();
    let broker = start(&dir).await;
    {
        let (_conn, ch) = broker.channel().await;
        declare_queue(
            &ch,
            "lonely",
            QueueDeclareOptions {
                durable: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    }
    let broker = broker.restart().await;
    assert!(queue_exists(&broker, "lonely").await);
    // Still auto-delete: its first consumer's cancel deletes it.
    let (_conn, ch) = broker.channel().await;
    let consumer = consume(&ch, "lonely", false).await;
    within(ch.basic_cancel(consumer.tag().as_str(), Default::default()))
        .await
        .expect("basic.cancel");
    assert!(!queue_exists(&broker, "lonely").await);
    let broker = broker.restart().await;
    assert!(!queue_exists(&broker, "lonely").await);
}

#[tokio::test]
async fn server_named_durable_queue_survives_restart() {
    let dir = data_dir();
    let broker = start(&dir).await;
    let name = {
        let (_conn, ch) = confirm_channel(&broker).await;
        let q = within(ch.queue_declare("", queue_options(true), FieldTable::default()))
            .await
            .expect("declare a server-named durable queue");
        let name = q.name().as_str().to_owned();
        publish_confirmed(&ch, "", &name, b"kept", persistent()).await;
        name
    };
    assert!(name.starts_with("amq.gen-"), "{name}");
    let broker = broker.restart().await;
    assert!(queue_exists(&broker, &name).await);
    assert_eq!(drain_bodies(&broker, &name).await, bodies(&["kept"]));
}

#[tokio::test]
async fn durable_queue_and_exchange_with_arguments_redeclare_identically_after_restart() {
    let dir = data_dir();
    let mut qargs = FieldTable::default();
    qargs.insert("x-max-length".into(), AMQPValue::LongInt(10));
    qargs.insert("x-message-ttl".into(), AMQPValue::LongLongInt(60_000));
    let mut xargs = FieldTable::default();
    xargs.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString("amq.fanout".into()),
    );
    let xopts = ExchangeDeclareOptions {
        durable: true,
        auto_delete: false,
        internal: false,
        ..Default::default()
    };
    let broker = start(&dir).await;
    {
        let (_conn, ch) = broker.channel().await;
        declare_queue(&ch, "with-args", queue_options(true), qargs.clone()).await;
        within(ch.exchange_declare("topics", ExchangeKind::Topic, xopts, xargs.clone()))
            .await
            .expect("declare exchange with arguments");
    }
    let broker = broker.restart().await;
    let (_conn, ch) = broker.channel().await;
    // The same declarations are equivalent to what came back (a difference would be a 406).
    declare_queue(&ch, "with-args", queue_options(true), qargs).await;
    within(ch.exchange_declare("topics", ExchangeKind::Topic, xopts, xargs))
        .await
        .expect("redeclare the exchange identically");
    // And a different type is still refused: the type came back too.
    let r =
        within(ch.exchange_declare("topics", ExchangeKind::Direct, xopts, FieldTable::default()))
            .await;
    assert_eq!(code_of(r), 406);
}

#[tokio::test]
async fn exchange_to_exchange_binding_survives_restart() {
    let dir = data_dir();
    let broker = start(&dir).await;
    {
        let (_conn, ch) = broker.channel().await;
        declare_exchange(&ch, "front", ExchangeKind::Fanout, true).await;
        declare_exchange(&ch, "back", ExchangeKind::Direct, true).await;
        within(ch.exchange_bind(
            "back",
            "front",
            "",
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ))
        .await
        .expect("exchange.bind");
        durable_queue(&ch, "back.q").await;
        bind(&ch, "back.q", "back", "k").await;
    }
    let broker = broker.restart().await;
    let (_conn, ch) = confirm_channel(&broker).await;
    publish_confirmed(&ch, "front", "k", b"via-front", transient()).await;
    assert_eq!(
        drain_bodies(&broker, "back.q").await,
        bodies(&["via-front"])
    );
}

#[tokio::test]
async fn exchanges_bound_in_a_cycle_come_back_and_route_once() {
    // A cycle of exchange bindings is legal (routing visits each exchange once). The old
    // broker's objects may keep each other alive after shutdown: closing it must release the
    // data directory anyway, or the restart could not open it.
    let dir = data_dir();
    let broker = start(&dir).await;
    {
        let (_conn, ch) = broker.channel().await;
        declare_exchange(&ch, "ring.a", ExchangeKind::Fanout, true).await;
        declare_exchange(&ch, "ring.b", ExchangeKind::Fanout, true).await;
        for (dst, src) in [("ring.b", "ring.a"), ("ring.a", "ring.b")] {
            within(ch.exchange_bind(
                dst,
                src,
                "",
                ExchangeBindOptions::default(),
                FieldTable::default(),
            ))
            .await
            .expect("exchange.bind");
        }
        durable_queue(&ch, "ring.q").await;
        bind(&ch, "ring.q", "ring.b", "").await;
    }
    let broker = broker.restart().await;
    let (_conn, ch) = confirm_channel(&broker).await;
    publish_confirmed(&ch, "ring.a", "", b"once", persistent()).await;
    drop((_conn, ch));
    let broker = broker.restart().await;
    assert_eq!(drain_bodies(&broker, "ring.q").await, bodies(&["once"]));
}

#[tokio::test]
async fn deleting_a_durable_exchange_removes_its_bindings_for_good() {
    let dir = data_dir();
    let broker = start(&dir).await;
    {
        // front --> doomed --k--> survivor; then doomed goes, with both bindings.
        let (_conn, ch) = broker.channel().await;
        declare_exchange(&ch, "front", ExchangeKind::Fanout, true).await;
        declare_exchange(&ch, "doomed", ExchangeKind::Direct, true).await;
        within(ch.exchange_bind(
            "doomed",
            "front",
            "",
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ))
        .await
        .expect("exchange.bind");
        durable_queue(&ch, "survivor").await;
        bind(&ch, "survivor", "doomed", "k").await;
        within(ch.exchange_delete("doomed", ExchangeDeleteOptions::default()))
            .await
            .expect("exchange.delete");
    }
    let broker = broker.restart().await;
    assert!(!exchange_exists(&broker, "doomed").await);
    assert!(exchange_exists(&broker, "front").await);
    assert!(queue_exists(&broker, "survivor").await);
    // A new exchange of the same name starts without the old bindings, to it or from it.
    let (_conn, ch) = confirm_channel(&broker).await;
    declare_exchange(&ch, "doomed", ExchangeKind::Direct, true).await;
    publish_confirmed(&ch, "doomed", "k", b"unroutable", transient()).await;
    publish_confirmed(&ch, "front", "k", b"unroutable", transient()).await;
    assert!(drain_bodies(&broker, "survivor").await.is_empty());
    // ... also after yet another restart.
    drop((_conn, ch));
    let broker = broker.restart().await;
    let (_conn, ch) = confirm_channel(&broker).await;
    publish_confirmed(&ch, "doomed", "k", b"unroutable", transient()).await;
    publish_confirmed(&ch, "front", "k", b"unroutable", transient()).await;
    assert!(drain_bodies(&broker, "survivor").await.is_empty());
}

#[tokio::test]
async fn unbound_durable_binding_stays_unbound_after_restart() {
    let dir = data_dir();
    let broker = start(&dir).await;
    {
        let (_conn, ch) = broker.channel().await;
        declare_exchange(&ch, "ex", ExchangeKind::Direct, true).await;
        durable_queue(&ch, "q").await;
        bind(&ch, "q", "ex", "a").await;
        bind(&ch, "q", "ex", "b").await;
        within(ch.queue_unbind("q", "ex", "a", FieldTable::default()))
            .await
            .expect("queue.unbind");
    }
    let broker = broker.restart().await;
    let (_conn, ch) = confirm_channel(&broker).await;
    publish_confirmed(&ch, "ex", "a", b"a", transient()).await;
    publish_confirmed(&ch, "ex", "b", b"b", transient()).await;
    assert_eq!(drain_bodies(&broker, "q").await, bodies(&["b"]));
}

// ---------------------------------------------------------------------------------------
// Messages

#[tokio::test]
async fn persistent_messages_in_durable_queue_survive_restart_in_order_marked_redelivered() {
    let dir = data_dir();
    let broker = start(&dir).await;
    let sent: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    {
        let (_conn, ch) = confirm_channel(&broker).await;
        durable_queue(&ch, "q").await;
        for m in &sent {
            publish_confirmed(&ch, "", "q", m.as_bytes(), persistent()).await;
        }
    }
    let broker = broker.restart().await;
    let (_conn, ch) = broker.channel().await;
    assert_eq!(queue_counts(&ch, "q").await.0, 20);
    let got = drain(&broker, "q").await;
    let got_bodies: Vec<Vec<u8>> = got.iter().map(|(b, _)| b.clone()).collect();
    let want: Vec<Vec<u8>> = sent.iter().map(|s| s.as_bytes().to_vec()).collect();
    assert_eq!(got_bodies, want);
    assert!(got.iter().all(|(_, redelivered)| *redelivered));
}

#[tokio::test]
async fn message_properties_exchange_and_routing_key_survive_restart() {
    let dir = data_dir();
    let broker = start(&dir).await;
    let mut headers = FieldTable::default();
    headers.insert("x-trace".into(), AMQPValue::LongString("abc".into()));
    headers.insert("n".into(), AMQPValue::LongInt(42));
    let props = persistent()
        .with_content_type("application/json".into())
        .with_correlation_id("corr-1".into())
        .with_message_id("mid-1".into())
        .with_priority(3)
        .with_headers(headers.clone());
    {
        let (_conn, ch) = confirm_channel(&broker).await;
        declare_exchange(&ch, "props.x", ExchangeKind::Topic, true).await;
        durable_queue(&ch, "props.q").await;
        bind(&ch, "props.q", "props.x", "a.*").await;
        publish_confirmed(&ch, "props.x", "a.b", b"{}", props).await;
    }
    let broker = broker.restart().await;
    let (_conn, ch) = broker.channel().await;
    let m = get(&ch, "props.q", true)
        .await
        .expect("the message came back");
    let d = &m.delivery;
    assert_eq!(d.exchange.as_str(), "props.x");
    assert_eq!(d.routing_key.as_str(), "a.b");
    assert_eq!(d.data, b"{}");
    assert_eq!(d.properties.delivery_mode(), &Some(2));
    assert_eq!(
        d.properties.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(
        d.properties.correlation_id().as_ref().map(|s| s.as_str()),
        Some("corr-1")
    );
    assert_eq!(
        d.properties.message_id().as_ref().map(|s| s.as_str()),
        Some("mid-1")
    );
    assert_eq!(d.properties.priority(), &Some(3));
    assert_eq!(d.properties.headers().as_ref(), Some(&headers));
}

#[tokio::test]
async fn large_persistent_message_survives_restart_intact() {
    let dir = data_dir();
    let broker = start(&dir).await;
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    {
        let (_conn, ch) = confirm_channel(&broker).await;
        durable_queue(&ch, "big").await;
        publish_confirmed(&ch, "", "big", &body, persistent()).await;
    }
    let broker = broker.restart().await;
    let got = drain_bodies(&broker, "big").await;
    assert_eq!(got.len(), 1);
    assert!(got[0] == body, "the body changed across the restart");
}

#[tokio::test]
async fn transient_messages_in_durable_queue_are_gone_after_restart() {
    let dir = data_dir();
    let broker = start(&dir).await;
    {
        let (_conn, ch) = confirm_channel(&broker).await;
        durable_queue(&ch, "mixed").await;
        publish_confirmed(&ch, "", "mixed", b"p1", persistent()).await;
        publish_confirmed(&ch, "", "mixed", b"t1", transient()).await;
        publish_confirmed(&ch, "", "mixed", b"t2", BasicProperties::default()).await;
        publish_confirmed(&ch, "", "mixed", b"p2", persistent()).await;
    }
    let broker = broker.restart().await;
    assert_eq!(drain_bodies(&broker, "mixed").await, bodies(&["p1", "p2"]));
}

#[tokio::test]
async fn persistent_messages_in_transient_queue_are_gone_after_restart() {
    let dir = data_dir();
    let broker = start(&dir).await;
    {
        let (_conn, ch) = confirm_channel(&broker).await;
        declare_queue(&ch, "fleeting", queue_options(false), FieldTable::default()).await;
        publish_confirmed(&ch, "", "fleeting", b"p", persistent()).await;
    }
    let broker = broker.restart().await;
    assert!(!queue_exists(&broker, "fleeting").await);
    // A durable queue of the same name declared now starts empty.
    let (_conn, ch) = broker.channel().await;
    durable_queue(&ch, "fleeting").await;
    assert_eq!(queue_counts(&ch, "fleeting").await.0, 0);
}

#[tokio::test]
async fn recovered_messages_survive_a_second_restart() {
    let dir = data_dir();
    let broker = start(&dir).await;
    {
        let (_conn, ch) = confirm_channel(&broker).await;
        durable_queue(&ch, "q").await;
        for m in ["a", "b", "c"] {
            publish_confirmed(&ch, "", "q", m.as_bytes(), persistent()).await;
        }
    }
    let broker = broker.restart().await;
    let broker = broker.restart().await;
    assert_eq!(drain_bodies(&broker, "q").await, bodies(&["a", "b", "c"]));
}

/// A 512 KiB body that names its index and is checkable byte by byte.
fn big_body(i: usize) -> Vec<u8> {
    let mut b = format!("big-{i:03}:").into_bytes();
    b.extend((0..512 * 1024).map(|j| ((i * 7 + j) % 253) as u8));
    b
}

fn big_index(body: &[u8]) -> usize {
    let head = std::str::from_utf8(&body[..8]).expect("a text prefix");
    let i: usize = head[4..7].parse().expect("an index");
    assert!(body == big_body(i).as_slice(), "body {i} damaged");
    i
}

/// More than a queue keeps in memory (`warren_broker::MEMORY_BUDGET`), so the tail of
/// the backlog is paged to the log: persistent messages by position, transient ones as page
/// copies that must not outlive the broker.
const BIG: usize = warren_broker::MEMORY_BUDGET / (512 * 1024) + 16;

#[tokio::test]
async fn paged_backlog_keeps_persistent_messages_and_drops_transient_ones_across_restart() {
    let dir = data_dir();
    let broker = start(&dir).await;
    {
        // A fanout into two deep queues; one of them is purged before the restart.
        let (_conn, ch) = confirm_channel(&broker).await;
        declare_exchange(&ch, "deep.fan", ExchangeKind::Fanout, true).await;
        for q in ["deep", "deep.purged"] {
            durable_queue(&ch, q).await;
            bind(&ch, q, "deep.fan", "").await;
        }
        let mut confirms = Vec::new();
        for i in 0..BIG {
            let props = if i % 2 == 0 {
                persistent()
            } else {
                transient()
            };
            confirms.push(
                within(ch.basic_publish(
                    "deep.fan",
                    "",
                    BasicPublishOptions::default(),
                    &big_body(i),
                    props,
                ))
                .await
                .expect("publish"),
            );
        }
        for c in confirms {
            assert!(within(c).await.expect("confirmation").is_ack());
        }
        // The test means something only if transient messages were paged (copied to the log).
        let b = broker.broker();
        eventually(|| b.stored_messages().expect("a durable broker") as usize > BIG / 2).await;
        let purged = within(ch.queue_purge("deep.purged", QueuePurgeOptions::default()))
            .await
            .expect("queue.purge");
        assert_eq!(purged as usize, BIG);
        sync(&ch, "deep").await;
    }
    let broker = broker.restart().await;
    let got: Vec<usize> = drain_bodies(&broker, "deep")
        .await
        .iter()
        .map(|b| big_index(b))
        .collect();
    let want: Vec<usize> = (0..BIG).step_by(2).collect();
    assert_eq!(got, want);
    assert!(drain_bodies(&broker, "deep.purged").await.is_empty());
}

#[tokio::test]
async fn acks_of_paged_messages_stick_across_restart() {
    let dir = data_dir();
    let broker = start(&dir).await;
    {
        let (_conn, ch) = confirm_channel(&broker).await;
        durable_queue(&ch, "deep").await;
        let mut confirms = Vec::new();
        for i in 0..BIG {
            let props = if i % 2 == 0 {
                persistent()
            } else {
                transient()
            };
            confirms.push(
                within(ch.basic_publish(
                    "",
                    "deep",
                    BasicPublishOptions::default(),
                    &big_body(i),
                    props,
                ))
                .await
                .expect("publish"),
            );
        }
        for c in confirms {
            assert!(within(c).await.expect("confirmation").is_ack());
        }
        // Everything is delivered (paged bodies read back); persistent messages with an
        // index divisible by 4 and all transient ones are acked, the rest is left unacked
        // (a prefetch window larger than what stays unacked).
        within(ch.basic_qos(BIG as u16, BasicQosOptions::default()))
            .await
            .expect("basic.qos");
        let mut consumer = consume(&ch, "deep", false).await;
        for want in 0..BIG {
            let d = next_delivery(&mut consumer).await;
            assert_eq!(big_index(&d.data), want);
            if want % 4 != 2 {
                within(d.ack(BasicAckOptions::default()))
                    .await
                    .expect("ack");
            }
        }
        sync(&ch, "deep").await;
    }
    let broker = broker.restart().await;
    let got: Vec<usize> = drain_bodies(&broker, "deep")
        .await
        .iter()
        .map(|b| big_index(b))
        .collect();
    let want: Vec<usize> = (0..BIG).filter(|i| i % 4 == 2).collect();
    assert_eq!(got, want);
}

// ---------------------------------------------------------------------------------------
// Acknowledgements

#[tokio::test]
async fn acked_messages_do_not_come_back_after_restart() {
    let dir = data_dir();
    let broker = start(&dir).await;
    {
        let (_conn, ch) = confirm_channel(&broker).await;
        durable_queue(&ch, "q").await;
        for m in ["m0", "m1", "m2", "m3", "m4"] {
            publish_confirmed(&ch, "", "q", m.as_bytes(), persistent()).await;
        }
        // m0 and m1 by basic.get + ack, m2 by a consumer's ack.
        for _ in 0..2 {
            let m = get(&ch, "q", false).await.expect("a message");
            within(m.delivery.ack(BasicAckOptions::default()))
                .await
                .expect("ack");
        }
        within(ch.basic_qos(1, BasicQosOptions::default()))
            .await
            .expect("basic.qos");
        let mut consumer = consume(&ch, "q", false).await;
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.data, b"m2");
        within(d.ack(BasicAckOptions::default()))
            .await
            .expect("ack");
        // m3 is delivered next and left unacked: it must come back.
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.data, b"m3");
        sync(&ch, "q").await;
    }
    let broker = broker.restart().await;
    let got = drain(&broker, "q").await;
    assert_eq!(
        got,
        vec![(b"m3".to_vec(), true), (b"m4".to_vec(), true)],
        "acked messages came back or unacked ones were lost"
    );
}

#[tokio::test]
async fn auto_acked_deliveries_do_not_come_back_after_restart() {
    let dir = data_dir();
    let broker = start(&dir).await;
    {
        let (_conn, ch) = confirm_channel(&broker).await;
        durable_queue(&ch, "q").await;
        for m in ["g", "c1", "c2", "left"] {
            publish_confirmed(&ch, "", "q", m.as_bytes(), persistent()).await;
        }
        let g = get(&ch, "q", true).await.expect("basic.get no-ack");
        assert_eq!(g.delivery.data, b"g");
        within(ch.basic_qos(2, BasicQosOptions::default()))
            .await
            .expect("basic.qos");
        // A no-ack consumer takes the rest, then is gone; "left" is published after it.
        let mut consumer = consume(&ch, "q", true).await;
        assert_eq!(next_delivery(&mut consumer).await.data, b"c1");
        assert_eq!(next_delivery(&mut consumer).await.data, b"c2");
        assert_eq!(next_delivery(&mut consumer).await.data, b"left");
        within(ch.basic_cancel(consumer.tag().as_str(), Default::default()))
            .await
            .expect("basic.cancel");
        publish_confirmed(&ch, "", "q", b"after", persistent()).await;
    }
    let broker = broker.restart().await;
    assert_eq!(drain_bodies(&broker, "q").await, bodies(&["after"]));
}

#[tokio::test]
async fn nacked_and_rejected_without_requeue_do_not_come_back_but_requeued_ones_do() {
    let dir = data_dir();
    let broker = start(&dir).await;
    {
        let (_conn, ch) = confirm_channel(&broker).await;
        durable_queue(&ch, "q").await;
        for m in ["nack", "reject", "requeue", "kept"] {
            publish_confirmed(&ch, "", "q", m.as_bytes(), persistent()).await;
        }
        let m = get(&ch, "q", false).await.expect("a message");
        assert_eq!(m.delivery.data, b"nack");
        within(m.delivery.nack(BasicNackOptions {
            requeue: false,
            multiple: false,
        }))
        .await
        .expect("nack");
        let m = get(&ch, "q", false).await.expect("a message");
        assert_eq!(m.delivery.data, b"reject");
        within(
            m.delivery
                .reject(lapin::options::BasicRejectOptions { requeue: false }),
        )
        .await
        .expect("reject");
        let m = get(&ch, "q", false).await.expect("a message");
        assert_eq!(m.delivery.data, b"requeue");
        within(m.delivery.nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        }))
        .await
        .expect("nack with requeue");
        sync(&ch, "q").await;
    }
    let broker = broker.restart().await;
    assert_eq!(
        drain_bodies(&broker, "q").await,
        bodies(&["requeue", "kept"])
    );
}

#[tokio::test]
async fn unacked_deliveries_come_back_after_restart() {
    let dir = data_dir();
    let broker = start(&dir).await;
    let (conn, ch) = confirm_channel(&broker).await;
    durable_queue(&ch, "q").await;
    for m in ["u1", "u2", "u3"] {
        publish_confirmed(&ch, "", "q", m.as_bytes(), persistent()).await;
    }
    let mut consumer = consume(&ch, "q", false).await;
    for want in ["u1", "u2", "u3"] {
        assert_eq!(next_delivery(&mut consumer).await.data, want.as_bytes());
    }
    // The connection is still open, with everything unacked, when the broker goes down.
    let broker = broker.restart().await;
    drop((consumer, ch, conn));
    let got = drain(&broker, "q").await;
    assert_eq!(
        got,
        vec![
            (b"u1".to_vec(), true),
            (b"u2".to_vec(), true),
            (b"u3".to_vec(), true)
        ]
    );
}

#[tokio::test]
async fn acking_recovered_messages_removes_them_and_spares_new_ones() {
    let dir = data_dir();
    let broker = start(&dir).await;
    {
        let (_conn, ch) = confirm_channel(&broker).await;
        durable_queue(&ch, "q").await;
        for m in ["old1", "old2"] {
            publish_confirmed(&ch, "", "q", m.as_bytes(), persistent()).await;
        }
    }
    let broker = broker.restart().await;
    {
        // New messages get ids of their own, distinct from the recovered ones: acking the
        // recovered ones must not settle the new ones in the log.
        let (_conn, ch) = confirm_channel(&broker).await;
        for m in ["new1", "new2"] {
            publish_confirmed(&ch, "", "q", m.as_bytes(), persistent()).await;
        }
        for want in ["old1", "old2"] {
            let m = get(&ch, "q", false).await.expect("a recovered message");
            assert_eq!(m.delivery.data, want.as_bytes());
            assert!(m.delivery.redelivered);
            within(m.delivery.ack(BasicAckOptions::default()))
                .await
                .expect("ack");
        }
        sync(&ch, "q").await;
    }
    let broker = broker.restart().await;
    assert_eq!(drain_bodies(&broker, "q").await, bodies(&["new1", "new2"]));
}

#[tokio::test]
async fn fanout_copies_in_two_durable_queues_are_settled_independently() {
    let dir = data_dir();
    let broker = start(&dir).await;
    {
        let (_conn, ch) = confirm_channel(&broker).await;
        declare_exchange(&ch, "fan", ExchangeKind::Fanout, true).await;
        durable_queue(&ch, "left").await;
        durable_queue(&ch, "right").await;
        bind(&ch, "left", "fan", "").await;
        bind(&ch, "right", "fan", "").await;
        for m in ["f1", "f2", "f3"] {
            publish_confirmed(&ch, "fan", "", m.as_bytes(), persistent()).await;
        }
        // Every copy in "left" is acked; "right" keeps all three.
        for _ in 0..3 {
            let m = get(&ch, "left", false).await.expect("a copy");
            within(m.delivery.ack(BasicAckOptions::default()))
                .await
                .expect("ack");
        }
        sync(&ch, "left").await;
    }
    let broker = broker.restart().await;
    assert!(drain_bodies(&broker, "left").await.is_empty());
    assert_eq!(
        drain_bodies(&broker, "right").await,
        bodies(&["f1", "f2", "f3"])
    );
    // Draining "right" (auto-ack) settled the last copies: nothing comes back anywhere.
    let broker = broker.restart().await;
    assert!(drain_bodies(&broker, "left").await.is_empty());
    assert!(drain_bodies(&broker, "right").await.is_empty());
}

// ---------------------------------------------------------------------------------------
// Deleting and purging

#[tokio::test]
async fn deleted_durable_queue_does_not_come_back_nor_do_its_messages() {
    let dir = data_dir();
    let broker = start(&dir).await;
    {
        let (_conn, ch) = confirm_channel(&broker).await;
        durable_queue(&ch, "gone").await;
        durable_queue(&ch, "recreated").await;
        for q in ["gone", "recreated"] {
            publish_confirmed(&ch, "", q, b"old", persistent()).await;
            within(ch.queue_delete(q, QueueDeleteOptions::default()))
                .await
                .expect("queue.delete");
        }
        // Same name, new queue: only what is published to it now belongs to it.
        durable_queue(&ch, "recreated").await;
        publish_confirmed(&ch, "", "recreated", b"new", persistent()).await;
    }
    let broker = broker.restart().await;
    assert!(!queue_exists(&broker, "gone").await);
    assert_eq!(drain_bodies(&broker, "recreated").await, bodies(&["new"]));
    // A queue declared under the old name after the restart starts empty, too.
    let (_conn, ch) = broker.channel().await;
    durable_queue(&ch, "gone").await;
    assert_eq!(queue_counts(&ch, "gone").await.0, 0);
    drop((_conn, ch));
    let broker = broker.restart().await;
    assert!(drain_bodies(&broker, "gone").await.is_empty());
    assert!(drain_bodies(&broker, "recreated").await.is_empty());
}

#[tokio::test]
async fn purged_durable_queue_stays_empty_after_restart() {
    let dir = data_dir();
    let broker = start(&dir).await;
    {
        let (_conn, ch) = confirm_channel(&broker).await;
        durable_queue(&ch, "q").await;
        for m in ["a", "b", "c"] {
            publish_confirmed(&ch, "", "q", m.as_bytes(), persistent()).await;
        }
        let purged = within(ch.queue_purge("q", QueuePurgeOptions::default()))
            .await
            .expect("queue.purge");
        assert_eq!(purged, 3);
        publish_confirmed(&ch, "", "q", b"after-purge", persistent()).await;
    }
    let broker = broker.restart().await;
    assert_eq!(drain_bodies(&broker, "q").await, bodies(&["after-purge"]));
}

// ---------------------------------------------------------------------------------------
// Transactions and confirms

#[tokio::test]
async fn committed_persistent_publishes_survive_restart_and_rolled_back_ones_do_not() {
    let dir = data_dir();
    let broker = start(&dir).await;
    {
        let (_conn, ch) = broker.channel().await;
        durable_queue(&ch, "q").await;
        within(ch.tx_select()).await.expect("tx.select");
        publish_with(&ch, "", "q", b"committed-1", persistent()).await;
        publish_with(&ch, "", "q", b"committed-2", persistent()).await;
        within(ch.tx_commit()).await.expect("tx.commit");
        publish_with(&ch, "", "q", b"rolled-back", persistent()).await;
        within(ch.tx_rollback()).await.expect("tx.rollback");
        // An ack inside a committed transaction is recorded too.
        let m = get(&ch, "q", false).await.expect("a committed message");
        assert_eq!(m.delivery.data, b"committed-1");
        within(m.delivery.ack(BasicAckOptions::default()))
            .await
            .expect("ack");
        within(ch.tx_commit()).await.expect("tx.commit");
        // An uncommitted publish at restart is lost with its transaction.
        publish_with(&ch, "", "q", b"open-tx", persistent()).await;
        sync(&ch, "q").await;
    }
    let broker = broker.restart().await;
    assert_eq!(drain_bodies(&broker, "q").await, bodies(&["committed-2"]));
}

#[tokio::test]
async fn every_confirmed_message_is_there_after_restart() {
    const N: usize = 1000;
    let dir = data_dir();
    let broker = start(&dir).await;
    {
        let (_conn, ch) = confirm_channel(&broker).await;
        durable_queue(&ch, "bulk").await;
        let mut confirms = Vec::with_capacity(N);
        for i in 0..N {
            let body = format!("bulk-{i:04}");
            confirms.push(
                within(ch.basic_publish(
                    "",
                    "bulk",
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    persistent(),
                ))
                .await
                .expect("publish"),
            );
        }
        for c in confirms {
            assert!(within(c).await.expect("confirmation").is_ack());
        }
    }
    let broker = broker.restart().await;
    let (_conn, ch) = broker.channel().await;
    assert_eq!(queue_counts(&ch, "bulk").await.0 as usize, N);
    let got = drain_bodies(&broker, "bulk").await;
    let want: Vec<Vec<u8>> = (0..N)
        .map(|i| format!("bulk-{i:04}").into_bytes())
        .collect();
    assert!(got == want, "messages lost, duplicated or reordered");
}

// ---------------------------------------------------------------------------------------
// Definitions

#[tokio::test]
async fn vhost_and_durable_queue_from_definitions_survive_restart() {
    let dir = data_dir();
    let defs = r#"{
        "vhosts": [{"name": "defs"}],
        "permissions": [{"user": "guest", "vhost": "defs",
                         "configure": ".*", "write": ".*", "read": ".*"}],
        "exchanges": [{"name": "defs.x", "vhost": "defs", "type": "fanout",
                       "durable": true, "auto_delete": false, "internal": false,
                       "arguments": {}}],
        "queues": [{"name": "defs.q", "vhost": "defs", "durable": true,
                    "auto_delete": false, "arguments": {}}],
        "bindings": [{"source": "defs.x", "vhost": "defs", "destination": "defs.q",
                      "destination_type": "queue", "routing_key": "", "arguments": {}}]
    }"#;
    let broker = warren_broker::Broker::open(dir.path(), warren_broker::SyncMode::Fsync)
        .expect("open the data directory");
    warren_broker::definitions::Definitions::parse(defs)
        .expect("parse definitions")
        .apply(&broker)
        .expect("apply definitions");
    let broker = TestBroker::start_durable_with(std::sync::Arc::new(broker), dir.path()).await;
    let broker = broker.restart().await;
    let vhost = broker.broker().vhost("defs").expect("the vhost came back");
    let q = vhost.queue("defs.q").expect("the queue came back");
    assert!(q.durable);
    let x = vhost.exchange("defs.x").expect("the exchange came back");
    assert!(x.has_bindings(), "the binding did not come back");
}

/// Flow control waits only for consumers that take messages: one whose prefetch is full (it
/// never acks) must not hold publishers back, so its queue grows past the memory budget and
/// pages, as RabbitMQ's would. (Held back, each ~1 MiB read of the publisher would wait up to a
/// second: most of a minute for what follows.)
#[tokio::test]
async fn a_consumer_with_a_full_prefetch_does_not_hold_publishers_back() {
    let dir = tempfile::tempdir().expect("temporary data directory");
    let broker = start(&dir).await;
    let (_c1, consumer_ch) = broker.channel().await;
    within(consumer_ch.queue_declare(
        "stuck",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("declare");
    within(consumer_ch.basic_qos(1, BasicQosOptions::default()))
        .await
        .expect("qos");
    let mut consumer = consume(&consumer_ch, "stuck", false).await;
    let (_c2, ch) = confirm_channel(&broker).await;
    publish_with(&ch, "", "stuck", b"first", transient()).await;
    let _held = next_delivery(&mut consumer).await; // never acked: no credit left
    let big = vec![7u8; 1 << 20];
    let started = std::time::Instant::now();
    let mut confirms = Vec::new();
    for _ in 0..48 {
        confirms.push(
            within(ch.basic_publish(
                "",
                "stuck",
                BasicPublishOptions::default(),
                &big,
                transient(),
            ))
            .await
            .expect("publish"),
        );
    }
    for c in confirms {
        tokio::time::timeout(std::time::Duration::from_secs(30), c)
            .await
            .expect("confirmed in time")
            .expect("confirm");
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "48 MiB took {:?}: publishers were held back for a consumer that cannot take more",
        started.elapsed()
    );
    assert_eq!(queue_counts(&ch, "stuck").await.0, 48);
}
