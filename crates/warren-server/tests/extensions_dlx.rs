//! Dead-lettering: rejected (requeue=false), expired, and delivery-limited messages go to the
//! queue's dead-letter exchange with the `x-death` history as RabbitMQ 3.10 writes it, the
//! `expiration` property removed, and cycles without a rejection dropped.

mod common;

use std::time::Duration;

use common::*;
use lapin::options::{
    BasicAckOptions, BasicNackOptions, BasicRejectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};
use warren_codec::FieldValue;
use warren_server::ServerConfig;

fn fast() -> ServerConfig {
    ServerConfig {
        tick_interval: Duration::from_millis(10),
        ..Default::default()
    }
}

async fn declare(ch: &Channel, name: &str, durable: bool, a: FieldTable) {
    within(ch.queue_declare(
        name,
        QueueDeclareOptions {
            durable,
            ..Default::default()
        },
        a,
    ))
    .await
    .expect("declare");
}

/// A fanout exchange `dlx` bound to queue `dlq`.
async fn dead_letter_target(ch: &Channel) {
    within(ch.exchange_declare(
        "dlx",
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("declare dlx");
    declare(ch, "dlq", false, FieldTable::default()).await;
    within(ch.queue_bind(
        "dlq",
        "dlx",
        "",
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("bind dlq");
}

fn ready(broker: &TestBroker, queue: &str) -> u32 {
    broker
        .broker()
        .vhost("/")
        .and_then(|v| v.queue(queue).ok())
        .map_or(0, |q| q.counts().messages)
}

/// Takes the next ready message of `queue` straight from the broker, with its properties
/// decoded as the broker keeps them (field order included, which lapin does not keep).
fn take(
    broker: &TestBroker,
    queue: &str,
) -> (warren_broker::Message, warren_codec::BasicProperties) {
    let q = broker
        .broker()
        .vhost("/")
        .and_then(|v| v.queue(queue).ok())
        .expect("queue");
    let (m, _, _) = q.get(true).expect("a message");
    let props = m.message.properties();
    let msg = warren_broker::Message::new(
        m.message.exchange.clone(),
        m.message.routing_key.clone(),
        m.message.raw_properties.clone(),
        m.message.body.clone(),
        &props,
    );
    (msg, props)
}

fn keys(t: &warren_codec::FieldTable) -> Vec<&str> {
    t.iter().map(|(k, _)| k.as_str()).collect()
}

fn deaths(props: &warren_codec::BasicProperties) -> Vec<warren_codec::FieldTable> {
    match props.headers.as_ref().and_then(|h| h.get("x-death")) {
        Some(FieldValue::Array(a)) => a
            .iter()
            .map(|e| match e {
                FieldValue::Table(t) => t.clone(),
                other => panic!("x-death entry {other:?}"),
            })
            .collect(),
        other => panic!("no x-death: {other:?}"),
    }
}

fn s(v: &FieldValue) -> &str {
    v.as_str().expect("a string")
}

#[tokio::test]
async fn rejected_message_is_dead_lettered_with_rabbitmqs_x_death() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    dead_letter_target(&ch).await;
    declare(
        &ch,
        "work",
        false,
        args(&[("x-dead-letter-exchange", text("dlx"))]),
    )
    .await;
    within(ch.queue_bind(
        "work",
        "amq.direct",
        "job",
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("bind");
    let mut headers = FieldTable::default();
    headers.insert("app".into(), AMQPValue::LongInt(7));
    publish_with(
        &ch,
        "amq.direct",
        "job",
        b"payload",
        BasicProperties::default()
            .with_headers(headers)
            .with_priority(3)
            .with_content_type("text/plain".into()),
    )
    .await;
    let m = get(&ch, "work", false).await.expect("message");
    within(ch.basic_reject(
        m.delivery.delivery_tag,
        BasicRejectOptions { requeue: false },
    ))
    .await
    .expect("reject");
    eventually(|| ready(&broker, "dlq") == 1).await;
    assert_eq!(ready(&broker, "work"), 0);

    // Through the client: where it went and what it says.
    let d = get(&ch, "dlq", false).await.expect("dead-lettered");
    assert_eq!(d.delivery.exchange.as_str(), "dlx");
    assert_eq!(d.delivery.routing_key.as_str(), "job");
    assert_eq!(d.delivery.data, b"payload");
    assert_eq!(*d.delivery.properties.priority(), Some(3));
    assert_eq!(
        d.delivery
            .properties
            .content_type()
            .as_ref()
            .map(|c| c.as_str()),
        Some("text/plain")
    );
    within(ch.basic_reject(
        d.delivery.delivery_tag,
        BasicRejectOptions { requeue: true },
    ))
    .await
    .expect("put it back");
    assert_eq!(queue_counts(&ch, "dlq").await.0, 1);

    // Byte for byte, as the broker keeps (and sends) it.
    let (_, props) = take(&broker, "dlq");
    let h = props.headers.as_ref().expect("headers");
    assert_eq!(
        keys(h),
        [
            "app",
            "x-death",
            "x-first-death-exchange",
            "x-first-death-queue",
            "x-first-death-reason"
        ]
    );
    assert_eq!(s(h.get("x-first-death-reason").unwrap()), "rejected");
    assert_eq!(s(h.get("x-first-death-queue").unwrap()), "work");
    assert_eq!(s(h.get("x-first-death-exchange").unwrap()), "amq.direct");
    assert!(
        h.get("x-last-death-reason").is_none(),
        "RabbitMQ 3.10 writes no x-last-death-*"
    );
    let d = deaths(&props);
    assert_eq!(d.len(), 1);
    assert_eq!(
        keys(&d[0]),
        [
            "count",
            "reason",
            "queue",
            "time",
            "exchange",
            "routing-keys"
        ]
    );
    assert_eq!(d[0].get("count"), Some(&FieldValue::I64(1)));
    assert_eq!(s(d[0].get("reason").unwrap()), "rejected");
    assert_eq!(s(d[0].get("queue").unwrap()), "work");
    assert_eq!(s(d[0].get("exchange").unwrap()), "amq.direct");
    assert!(matches!(d[0].get("time"), Some(FieldValue::Timestamp(t)) if *t > 1_600_000_000));
    assert_eq!(
        d[0].get("routing-keys"),
        Some(&FieldValue::Array(vec![FieldValue::from("job")]))
    );
}

#[tokio::test]
async fn expired_message_is_dead_lettered_without_its_expiration() {
    let broker = TestBroker::with_config(fast()).await;
    let (_conn, ch) = broker.channel().await;
    dead_letter_target(&ch).await;
    declare(
        &ch,
        "short",
        false,
        args(&[
            ("x-dead-letter-exchange", text("dlx")),
            ("x-message-ttl", AMQPValue::LongInt(5000)),
        ]),
    )
    .await;
    publish_with(
        &ch,
        "",
        "short",
        b"m",
        BasicProperties::default().with_expiration("20".into()),
    )
    .await;
    eventually(|| ready(&broker, "dlq") == 1).await;
    let (_, props) = take(&broker, "dlq");
    assert_eq!(
        props.expiration, None,
        "dead-lettering removes the expiration"
    );
    let d = deaths(&props);
    assert_eq!(s(d[0].get("reason").unwrap()), "expired");
    assert_eq!(s(d[0].get("original-expiration").unwrap()), "20");
    assert_eq!(
        keys(&d[0]),
        [
            "count",
            "reason",
            "queue",
            "time",
            "exchange",
            "routing-keys",
            "original-expiration"
        ]
    );
    // The queue's own TTL leaves no original-expiration.
    publish(&ch, "", "short", b"n").await;
    let _ = queue_counts(&ch, "short").await;
    broker
        .broker()
        .tick(warren_broker::clock::now_ms() + 10_000);
    eventually(|| ready(&broker, "dlq") == 1).await;
    let (_, props) = take(&broker, "dlq");
    assert!(deaths(&props)[0].get("original-expiration").is_none());
}

#[tokio::test]
async fn dead_letter_routing_key_replaces_the_original() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "parking", false, FieldTable::default()).await;
    declare(
        &ch,
        "src",
        false,
        args(&[
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text("parking")),
        ]),
    )
    .await;
    publish(&ch, "", "src", b"m").await;
    let m = get(&ch, "src", false).await.expect("message");
    within(ch.basic_nack(
        m.delivery.delivery_tag,
        BasicNackOptions {
            requeue: false,
            multiple: false,
        },
    ))
    .await
    .expect("nack");
    let d = {
        eventually(|| ready(&broker, "parking") == 1).await;
        get(&ch, "parking", true).await.expect("dead-lettered")
    };
    assert_eq!(d.delivery.exchange.as_str(), "");
    assert_eq!(d.delivery.routing_key.as_str(), "parking");
}

#[tokio::test]
async fn acks_requeues_and_closed_channels_do_not_dead_letter() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    dead_letter_target(&ch).await;
    declare(
        &ch,
        "q",
        false,
        args(&[("x-dead-letter-exchange", text("dlx"))]),
    )
    .await;
    for body in [b"a", b"b", b"c"] {
        publish(&ch, "", "q", body).await;
    }
    let a = get(&ch, "q", false).await.expect("a");
    within(ch.basic_ack(a.delivery.delivery_tag, BasicAckOptions::default()))
        .await
        .expect("ack");
    let b = get(&ch, "q", false).await.expect("b");
    within(ch.basic_nack(
        b.delivery.delivery_tag,
        BasicNackOptions {
            requeue: true,
            multiple: false,
        },
    ))
    .await
    .expect("requeue");
    let other = within(conn.create_channel()).await.expect("channel");
    let _c = get(&other, "q", false).await.expect("c or b");
    within(other.close(200, "bye")).await.expect("close");
    assert_eq!(queue_counts(&ch, "q").await.0, 2);
    assert_eq!(ready(&broker, "dlq"), 0);
}

#[tokio::test]
async fn nack_multiple_dead_letters_each_message() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    dead_letter_target(&ch).await;
    declare(
        &ch,
        "many",
        false,
        args(&[("x-dead-letter-exchange", text("dlx"))]),
    )
    .await;
    let mut c = consume(&ch, "many", false).await;
    for i in 0..5u8 {
        publish(&ch, "", "many", &[i]).await;
    }
    let mut last = 0;
    for _ in 0..5 {
        last = next_delivery(&mut c).await.delivery_tag;
    }
    within(ch.basic_nack(
        last,
        BasicNackOptions {
            requeue: false,
            multiple: true,
        },
    ))
    .await
    .expect("nack");
    eventually(|| ready(&broker, "dlq") == 5).await;
    // In order.
    for i in 0..5u8 {
        assert_eq!(get(&ch, "dlq", true).await.expect("m").delivery.data, [i]);
    }
}

#[tokio::test]
async fn rejecting_again_counts_up_the_same_entry() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    // Rejections may cycle: the message comes back to the same queue.
    declare(
        &ch,
        "loop",
        false,
        args(&[
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text("loop")),
        ]),
    )
    .await;
    publish(&ch, "", "loop", b"m").await;
    for _ in 0..3 {
        let m = loop {
            if let Some(m) = get(&ch, "loop", false).await {
                break m;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        within(ch.basic_reject(
            m.delivery.delivery_tag,
            BasicRejectOptions { requeue: false },
        ))
        .await
        .expect("reject");
    }
    eventually(|| ready(&broker, "loop") == 1).await;
    let (_, props) = take(&broker, "loop");
    let d = deaths(&props);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].get("count"), Some(&FieldValue::I64(3)));
    // An incremented entry is sorted by key, as RabbitMQ leaves it.
    assert_eq!(
        keys(&d[0]),
        [
            "count",
            "exchange",
            "queue",
            "reason",
            "routing-keys",
            "time"
        ]
    );
}

#[tokio::test]
async fn an_expiry_cycle_is_dropped_instead_of_looping() {
    let broker = TestBroker::with_config(fast()).await;
    let (_conn, ch) = broker.channel().await;
    // Expired messages go back to the same queue (default exchange, same routing key).
    declare(
        &ch,
        "cyc",
        false,
        args(&[
            ("x-dead-letter-exchange", text("")),
            ("x-message-ttl", AMQPValue::LongInt(10)),
        ]),
    )
    .await;
    publish(&ch, "", "cyc", b"m").await;
    let _ = queue_counts(&ch, "cyc").await;
    // It expires once, comes back (x-death names this queue), expires again and is dropped.
    eventually(|| ready(&broker, "cyc") == 0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ready(&broker, "cyc"), 0);
}

#[tokio::test]
async fn three_expiry_hops_give_rabbitmq_310s_x_death_order() {
    let broker = TestBroker::with_config(fast()).await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "ch4", false, FieldTable::default()).await;
    for (q, next) in [("ch3", "ch4"), ("ch2", "ch3"), ("ch1", "ch2")] {
        declare(
            &ch,
            q,
            false,
            args(&[
                ("x-dead-letter-exchange", text("")),
                ("x-dead-letter-routing-key", text(next)),
                ("x-message-ttl", AMQPValue::LongInt(10)),
            ]),
        )
        .await;
    }
    publish(&ch, "", "ch1", b"m").await;
    eventually(|| ready(&broker, "ch4") == 1).await;
    let (_, props) = take(&broker, "ch4");
    let queues: Vec<String> = deaths(&props)
        .iter()
        .map(|d| s(d.get("queue").unwrap()).to_owned())
        .collect();
    assert_eq!(queues, ["ch3", "ch1", "ch2"]);
    let h = props.headers.as_ref().unwrap();
    assert_eq!(s(h.get("x-first-death-queue").unwrap()), "ch1");
}

#[tokio::test]
async fn a_missing_dead_letter_exchange_drops_the_message() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declare(
        &ch,
        "orphan",
        false,
        args(&[("x-dead-letter-exchange", text("nowhere"))]),
    )
    .await;
    publish(&ch, "", "orphan", b"m").await;
    let m = get(&ch, "orphan", false).await.expect("message");
    within(ch.basic_reject(
        m.delivery.delivery_tag,
        BasicRejectOptions { requeue: false },
    ))
    .await
    .expect("reject");
    assert_eq!(queue_counts(&ch, "orphan").await.0, 0);
}

#[tokio::test]
async fn a_rejection_inside_a_transaction_dead_letters_at_commit() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    dead_letter_target(&ch).await;
    declare(
        &ch,
        "txq",
        false,
        args(&[("x-dead-letter-exchange", text("dlx"))]),
    )
    .await;
    publish(&ch, "", "txq", b"m").await;
    within(ch.tx_select()).await.expect("tx");
    let m = get(&ch, "txq", false).await.expect("message");
    within(ch.basic_reject(
        m.delivery.delivery_tag,
        BasicRejectOptions { requeue: false },
    ))
    .await
    .expect("reject");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(ready(&broker, "dlq"), 0);
    within(ch.tx_commit()).await.expect("commit");
    eventually(|| ready(&broker, "dlq") == 1).await;
}

#[tokio::test]
async fn dead_lettered_persistent_messages_survive_a_restart_in_their_new_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::start_durable(dir.path()).await;
    {
        let (conn, ch) = broker.channel().await;
        declare(&ch, "dur-dlq", true, FieldTable::default()).await;
        declare(
            &ch,
            "dur-src",
            true,
            args(&[
                ("x-dead-letter-exchange", text("")),
                ("x-dead-letter-routing-key", text("dur-dlq")),
            ]),
        )
        .await;
        publish_with(
            &ch,
            "",
            "dur-src",
            b"keep me",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await;
        let m = get(&ch, "dur-src", false).await.expect("message");
        within(ch.basic_reject(
            m.delivery.delivery_tag,
            BasicRejectOptions { requeue: false },
        ))
        .await
        .expect("reject");
        assert_eq!(queue_counts(&ch, "dur-dlq").await.0, 1);
        let _ = conn.close(200, "bye").await;
    }
    let broker = broker.restart().await;
    let (_conn, ch) = broker.channel().await;
    assert_eq!(
        queue_counts(&ch, "dur-src").await.0,
        0,
        "settled in its old queue"
    );
    let m = get(&ch, "dur-dlq", true).await.expect("dead-lettered copy");
    assert_eq!(m.delivery.data, b"keep me");
    let h = m.delivery.properties.headers().clone().expect("headers");
    assert!(h.inner().contains_key("x-death"));
}
