//! Message TTL (`x-message-ttl`, the `expiration` property) and queue expiry (`x-expires`),
//! with RabbitMQ's semantics: expired messages are never delivered, a queue nobody consumes
//! from still drops them, and an unused queue goes away.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use lapin::options::{BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use warren_broker::{clock, Broker};
use warren_server::ServerConfig;

fn ttl(ms: i32) -> FieldTable {
    args(&[("x-message-ttl", AMQPValue::LongInt(ms))])
}

/// The broker's periodic work every 10 ms, so that tests stay quick.
fn fast() -> ServerConfig {
    ServerConfig {
        tick_interval: Duration::from_millis(10),
        ..Default::default()
    }
}

/// No periodic work at all: only what clients do drives the queues.
fn no_ticks() -> ServerConfig {
    ServerConfig {
        tick_interval: Duration::from_secs(3600),
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

fn expiring(ms: &str) -> BasicProperties {
    BasicProperties::default().with_expiration(ms.into())
}

fn ready(broker: &TestBroker, queue: &str) -> u32 {
    broker
        .broker()
        .vhost("/")
        .and_then(|v| v.queue(queue).ok())
        .map_or(0, |q| q.counts().messages)
}

fn exists(broker: &TestBroker, queue: &str) -> bool {
    broker
        .broker()
        .vhost("/")
        .is_some_and(|v| v.queue(queue).is_ok())
}

#[tokio::test]
async fn queue_ttl_drops_messages_nobody_consumes() {
    let broker = TestBroker::with_config(fast()).await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "ttl-q", false, ttl(200)).await;
    publish(&ch, "", "ttl-q", b"short-lived").await;
    eventually(|| ready(&broker, "ttl-q") == 1).await;
    eventually(|| ready(&broker, "ttl-q") == 0).await;
    assert!(get(&ch, "ttl-q", true).await.is_none());
}

#[tokio::test]
async fn expired_messages_are_never_delivered_even_before_a_sweep() {
    let broker = TestBroker::with_config(no_ticks()).await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "stale", false, ttl(20)).await;
    publish(&ch, "", "stale", b"old").await;
    publish_with(&ch, "", "stale", b"own-ttl", expiring("20")).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    // Nothing swept them, but neither get nor a consumer may see them.
    assert!(get(&ch, "stale", true).await.is_none());
    publish_with(&ch, "", "stale", b"late", expiring("20")).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    let mut c = consume(&ch, "stale", true).await;
    assert_no_delivery(&mut c).await;
}

#[tokio::test]
async fn per_message_expiration_and_queue_ttl_take_the_sooner() {
    let broker = TestBroker::with_config(fast()).await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "mixed", false, ttl(60_000)).await;
    publish_with(&ch, "", "mixed", b"soon", expiring("20")).await;
    publish_with(&ch, "", "mixed", b"later", expiring("3600000")).await;
    // The short one expires at the head; the other is still there.
    let _ = queue_counts(&ch, "mixed").await;
    eventually(|| ready(&broker, "mixed") == 1).await;
    let m = get(&ch, "mixed", true)
        .await
        .expect("the long-lived message");
    assert_eq!(m.delivery.data, b"later");
    // A queue without TTL honours the property alone.
    declare(&ch, "plain", false, FieldTable::default()).await;
    publish_with(&ch, "", "plain", b"x", expiring("200")).await;
    assert_eq!(queue_counts(&ch, "plain").await.0, 1);
    eventually(|| ready(&broker, "plain") == 0).await;
}

#[tokio::test]
async fn zero_ttl_delivers_to_a_waiting_consumer_and_drops_otherwise() {
    let broker = TestBroker::with_config(no_ticks()).await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "now-or-never", false, ttl(0)).await;
    publish(&ch, "", "now-or-never", b"dropped").await;
    eventually(|| ready(&broker, "now-or-never") == 0).await;
    let mut c = consume(&ch, "now-or-never", true).await;
    publish(&ch, "", "now-or-never", b"taken").await;
    assert_eq!(next_delivery(&mut c).await.data, b"taken");
    // Expiration "0" on the message works the same.
    publish_with(&ch, "", "now-or-never", b"also taken", expiring("0")).await;
    assert_eq!(next_delivery(&mut c).await.data, b"also taken");
}

#[tokio::test]
async fn a_requeued_message_keeps_its_deadline() {
    let broker = TestBroker::with_config(fast()).await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "keep", false, ttl(100)).await;
    publish(&ch, "", "keep", b"m").await;
    let m = get(&ch, "keep", false).await.expect("message");
    tokio::time::sleep(Duration::from_millis(150)).await;
    within(ch.basic_nack(
        m.delivery.delivery_tag,
        BasicNackOptions {
            requeue: true,
            ..Default::default()
        },
    ))
    .await
    .expect("nack");
    // It came back after its TTL: it expires instead of being redelivered.
    eventually(|| ready(&broker, "keep") == 0).await;
    assert!(get(&ch, "keep", true).await.is_none());
}

#[tokio::test]
async fn invalid_expiration_closes_the_channel_with_rabbitmqs_406() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    let cases = [
        ("abc", "invalid expiration 'abc': no_integer"),
        ("-1", "invalid expiration '-1': {value_negative,-1}"),
        ("1.5", "invalid expiration '1.5': {leftover_string,\".5\"}"),
    ];
    let conn = broker.connect().await;
    for (exp, text) in cases {
        let ch = within(conn.create_channel()).await.expect("channel");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = std::sync::Mutex::new(Some(tx));
        ch.on_error(move |e| {
            if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
                let _ = tx.send(e);
            }
        });
        publish_with(&ch, "", &q, b"x", expiring(exp)).await;
        match within(rx).await.expect("closed") {
            lapin::Error::ProtocolError(e) => {
                assert_eq!(e.get_id(), 406);
                assert_eq!(
                    e.get_message().as_str(),
                    format!("PRECONDITION_FAILED - {text}")
                );
            }
            other => panic!("expected a channel close, got {other:?}"),
        }
    }
    // Valid ones are taken.
    publish_with(&ch, "", &q, b"x", expiring("+5000")).await;
    eventually(|| ready(&broker, &q) == 1).await;
}

#[tokio::test]
async fn an_unused_queue_expires() {
    let broker = TestBroker::with_config(fast()).await;
    let (_conn, ch) = broker.channel().await;
    declare(
        &ch,
        "ephemeral",
        false,
        args(&[("x-expires", AMQPValue::LongInt(50))]),
    )
    .await;
    publish(&ch, "", "ephemeral", b"goes with it").await;
    eventually(|| !exists(&broker, "ephemeral")).await;
}

#[tokio::test]
async fn a_queue_with_a_consumer_does_not_expire_and_use_resets_the_clock() {
    let broker = TestBroker::with_config(fast()).await;
    let (_conn, ch) = broker.channel().await;
    let expires = args(&[("x-expires", AMQPValue::LongInt(150))]);
    declare(&ch, "used", false, expires.clone()).await;
    let c = consume(&ch, "used", true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(exists(&broker, "used"), "a consumed queue is in use");
    // Once the consumer goes, the clock starts again.
    within(ch.basic_cancel(c.tag().as_str(), Default::default()))
        .await
        .expect("cancel");
    // Redeclaring (and basic.get) count as use.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        declare(&ch, "used", false, expires.clone()).await;
    }
    assert!(exists(&broker, "used"));
    eventually(|| !exists(&broker, "used")).await;
}

#[tokio::test]
async fn fake_time_expires_messages_and_queues_through_the_broker_tick() {
    let broker = TestBroker::with_config(no_ticks()).await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "hour", false, ttl(3_600_000)).await;
    declare(
        &ch,
        "idle",
        false,
        args(&[("x-expires", AMQPValue::LongInt(3_600_000))]),
    )
    .await;
    publish(&ch, "", "hour", b"m").await;
    eventually(|| ready(&broker, "hour") == 1).await;
    broker.broker().tick(clock::now_ms() + 60_000);
    assert_eq!(ready(&broker, "hour"), 1);
    assert!(exists(&broker, "idle"));
    broker.broker().tick(clock::now_ms() + 3_600_001);
    assert_eq!(ready(&broker, "hour"), 0);
    assert!(!exists(&broker, "idle"));
}

/// A broker on `dir`, as after a (re)start.
async fn durable_broker(dir: &std::path::Path) -> TestBroker {
    let b = Broker::open(dir, warren_broker::SyncMode::PageCache).expect("open the data dir");
    TestBroker::start_with(Arc::new(b), fast()).await
}

async fn restart(broker: TestBroker, dir: &std::path::Path) -> TestBroker {
    let inner = broker.broker().clone();
    broker.shutdown().await;
    inner.close();
    drop(inner);
    durable_broker(dir).await
}

#[tokio::test]
async fn ttl_on_a_durable_queue_survives_a_restart_counting_from_the_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = durable_broker(dir.path()).await;
    {
        let (conn, ch) = broker.channel().await;
        declare(&ch, "durable-ttl", true, ttl(300)).await;
        within(ch.confirm_select(Default::default()))
            .await
            .expect("confirms");
        let persistent = BasicProperties::default().with_delivery_mode(2);
        let confirm =
            within(ch.basic_publish("", "durable-ttl", Default::default(), b"kept", persistent))
                .await
                .expect("publish");
        within(confirm).await.expect("confirmed");
        let _ = conn.close(200, "bye").await;
    }
    let broker = restart(broker, dir.path()).await;
    // The queue's TTL counts again from the restart (never shorter than asked).
    assert_eq!(ready(&broker, "durable-ttl"), 1);
    eventually(|| ready(&broker, "durable-ttl") == 0).await;
}
