//! Consumer-side extensions: single active consumer (`x-single-active-consumer`), the delivery
//! limit of quorum queues (`x-delivery-limit`, `x-delivery-count`), and the consumer timeout
//! (default and `x-consumer-timeout`; the channel is closed with RabbitMQ's 406).

mod common;

use std::time::Duration;

use common::*;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use warren_server::ServerConfig;

fn int(v: i32) -> AMQPValue {
    AMQPValue::LongInt(v)
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

fn sac() -> FieldTable {
    args(&[("x-single-active-consumer", AMQPValue::Boolean(true))])
}

#[tokio::test]
async fn only_the_first_consumer_of_a_single_active_consumer_queue_gets_messages() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let setup = within(conn.create_channel()).await.expect("channel");
    declare(&setup, "sac", false, sac()).await;
    let first_ch = within(conn.create_channel()).await.expect("channel");
    let second_ch = within(conn.create_channel()).await.expect("channel");
    let mut first = consume(&first_ch, "sac", true).await;
    let mut second = consume(&second_ch, "sac", true).await;
    assert_eq!(queue_counts(&setup, "sac").await.1, 2, "both are consumers");
    for i in 0..3u8 {
        publish(&setup, "", "sac", &[i]).await;
    }
    for i in 0..3u8 {
        assert_eq!(next_delivery(&mut first).await.data, [i]);
    }
    assert_no_delivery(&mut second).await;
    // The active one goes: the next in line takes over.
    within(first_ch.basic_cancel(first.tag().as_str(), Default::default()))
        .await
        .expect("cancel");
    publish(&setup, "", "sac", b"next").await;
    assert_eq!(next_delivery(&mut second).await.data, b"next");
}

#[tokio::test]
async fn the_next_single_active_consumer_gets_what_the_last_one_left_unacked() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let setup = within(conn.create_channel()).await.expect("channel");
    declare(&setup, "sac-handover", false, sac()).await;
    let first_ch = within(conn.create_channel()).await.expect("channel");
    within(first_ch.basic_qos(1, BasicQosOptions::default()))
        .await
        .expect("qos");
    let second_ch = within(conn.create_channel()).await.expect("channel");
    let mut first = consume(&first_ch, "sac-handover", false).await;
    let mut second = consume(&second_ch, "sac-handover", false).await;
    publish(&setup, "", "sac-handover", b"a").await;
    publish(&setup, "", "sac-handover", b"b").await;
    assert_eq!(next_delivery(&mut first).await.data, b"a");
    // "b" waits for the active consumer's credit rather than going to the second.
    assert_no_delivery(&mut second).await;
    within(first_ch.close(200, "bye")).await.expect("close");
    let a = next_delivery(&mut second).await;
    assert_eq!(a.data, b"a");
    assert!(a.redelivered);
    assert_eq!(next_delivery(&mut second).await.data, b"b");
}

fn delivery_count(props: &BasicProperties) -> Option<i64> {
    props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned())
        .map(|v| match v {
            AMQPValue::LongLongInt(n) => n,
            other => panic!("x-delivery-count {other:?}"),
        })
}

fn quorum(limit: i32, dead_letter_to: Option<&str>) -> FieldTable {
    let mut a = args(&[
        ("x-queue-type", text("quorum")),
        ("x-delivery-limit", int(limit)),
    ]);
    if let Some(q) = dead_letter_to {
        a.insert("x-dead-letter-exchange".into(), text(""));
        a.insert("x-dead-letter-routing-key".into(), text(q));
    }
    a
}

async fn requeue(ch: &Channel, tag: u64) {
    within(ch.basic_nack(
        tag,
        BasicNackOptions {
            requeue: true,
            multiple: false,
        },
    ))
    .await
    .expect("nack");
}

#[tokio::test]
async fn a_message_over_its_delivery_limit_is_dead_lettered() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "poison-dlq", false, FieldTable::default()).await;
    declare(&ch, "limited", true, quorum(2, Some("poison-dlq"))).await;
    let mut headers = FieldTable::default();
    headers.insert("app".into(), int(1));
    publish_with(
        &ch,
        "",
        "limited",
        b"poison",
        BasicProperties::default().with_headers(headers),
    )
    .await;
    // Delivered three times (the first and two redeliveries), counted from the second.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let m = get(&ch, "limited", false).await.expect("delivered");
        seen.push(delivery_count(&m.delivery.properties));
        requeue(&ch, m.delivery.delivery_tag).await;
    }
    assert_eq!(seen, [None, Some(1), Some(2)]);
    assert!(get(&ch, "limited", false).await.is_none());
    let d = get(&ch, "poison-dlq", true).await.expect("dead-lettered");
    let h = d.delivery.properties.headers().clone().expect("headers");
    assert_eq!(
        h.inner().get("x-first-death-reason"),
        Some(&AMQPValue::LongString("delivery_limit".into()))
    );
    assert!(h.inner().contains_key("app"));
    assert!(
        !h.inner().contains_key("x-delivery-count"),
        "the count is added on delivery, not kept in the message"
    );
}

#[tokio::test]
async fn returns_by_a_closing_channel_count_too_and_without_a_dlx_it_is_dropped() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let setup = within(conn.create_channel()).await.expect("channel");
    declare(&setup, "limited-drop", true, quorum(1, None)).await;
    publish(&setup, "", "limited-drop", b"m").await;
    for expected in [None, Some(1)] {
        let ch = within(conn.create_channel()).await.expect("channel");
        let m = get(&ch, "limited-drop", false).await.expect("delivered");
        assert_eq!(delivery_count(&m.delivery.properties), expected);
        within(ch.close(200, "bye")).await.expect("close");
    }
    assert_eq!(queue_counts(&setup, "limited-drop").await.0, 0);
}

#[tokio::test]
async fn delivery_counts_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::start_durable(dir.path()).await;
    {
        let (conn, ch) = broker.channel().await;
        declare(&ch, "counted", true, quorum(5, None)).await;
        within(ch.confirm_select(Default::default()))
            .await
            .expect("confirms");
        let c = within(ch.basic_publish(
            "",
            "counted",
            Default::default(),
            b"m",
            BasicProperties::default().with_delivery_mode(2),
        ))
        .await
        .expect("publish");
        within(c).await.expect("confirmed");
        for _ in 0..2 {
            let m = get(&ch, "counted", false).await.expect("delivered");
            requeue(&ch, m.delivery.delivery_tag).await;
        }
        assert_eq!(queue_counts(&ch, "counted").await.0, 1);
        let _ = conn.close(200, "bye").await;
    }
    let broker = broker.restart().await;
    let (_conn, ch) = broker.channel().await;
    let m = get(&ch, "counted", false).await.expect("back");
    assert_eq!(delivery_count(&m.delivery.properties), Some(2));
}

fn timeouts(default: Option<Duration>) -> ServerConfig {
    ServerConfig {
        consumer_timeout: default,
        consumer_timeout_check: Duration::from_millis(20),
        ..Default::default()
    }
}

/// The channel's close (code and text), waited for.
async fn closed(watch: tokio::sync::oneshot::Receiver<lapin::Error>) -> (u16, String) {
    match within(watch).await.expect("the channel was closed") {
        lapin::Error::ProtocolError(e) => (e.get_id(), e.get_message().to_string()),
        other => panic!("expected a channel close, got {other:?}"),
    }
}

fn on_close(ch: &Channel) -> tokio::sync::oneshot::Receiver<lapin::Error> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    ch.on_error(move |e| {
        if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
            let _ = tx.send(e);
        }
    });
    rx
}

#[tokio::test]
async fn an_unacknowledged_delivery_past_the_queue_timeout_closes_the_channel() {
    let broker = TestBroker::with_config(timeouts(None)).await;
    let conn = broker.connect().await;
    let setup = within(conn.create_channel()).await.expect("channel");
    declare(
        &setup,
        "slow",
        false,
        args(&[("x-consumer-timeout", int(100))]),
    )
    .await;
    let ch = within(conn.create_channel()).await.expect("channel");
    let watch = on_close(&ch);
    let mut c = consume(&ch, "slow", false).await;
    publish(&setup, "", "slow", b"m").await;
    let _held = next_delivery(&mut c).await;
    let (code, text) = closed(watch).await;
    assert_eq!(code, 406);
    assert_eq!(
        text,
        format!(
            "PRECONDITION_FAILED - delivery acknowledgement on channel {} timed out. Timeout \
             value used: 100 ms. This timeout value can be configured, see consumers doc guide \
             to learn more",
            ch.id()
        )
    );
    // The message went back to the queue.
    let m = get(&setup, "slow", true).await.expect("requeued");
    assert!(m.delivery.redelivered);
}

#[tokio::test]
async fn the_default_timeout_applies_to_basic_get_and_acks_in_time_are_fine() {
    let broker = TestBroker::with_config(timeouts(Some(Duration::from_millis(150)))).await;
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    let watch = on_close(&ch);
    declare(&ch, "timely", false, FieldTable::default()).await;
    for _ in 0..3 {
        publish(&ch, "", "timely", b"m").await;
        let m = get(&ch, "timely", false).await.expect("m");
        tokio::time::sleep(Duration::from_millis(50)).await;
        within(ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default()))
            .await
            .expect("ack");
    }
    // A no-ack consumer never times out.
    let mut c = consume(&ch, "timely", true).await;
    publish(&ch, "", "timely", b"n").await;
    let _ = next_delivery(&mut c).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(ch.status().connected(), "nothing timed out so far");
    // Held too long: closed, with the default's value.
    declare(&ch, "held", false, FieldTable::default()).await;
    publish(&ch, "", "held", b"held").await;
    let ch2 = within(conn.create_channel()).await.expect("channel");
    let watch2 = on_close(&ch2);
    let _m = get(&ch2, "held", false).await.expect("held");
    let (code, text) = closed(watch2).await;
    assert_eq!(code, 406);
    assert!(text.contains("Timeout value used: 150 ms."), "{text}");
    drop(watch);
}
