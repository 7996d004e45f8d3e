//! Delayed messages: the `x-delayed-message` exchange type (`x-delayed-type`, `x-delay` in
//! ms), built in with the delayed-message plugin's behaviour, no 49-day limit, and durable
//! delays that survive a restart (tested with the broker's tick given a future time).

mod common;

use std::time::Duration;

use common::*;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};
use warren_broker::clock;
use warren_server::ServerConfig;

fn delayed_kind() -> ExchangeKind {
    ExchangeKind::Custom("x-delayed-message".into())
}

fn fast() -> ServerConfig {
    ServerConfig {
        tick_interval: Duration::from_millis(10),
        ..Default::default()
    }
}

fn no_ticks() -> ServerConfig {
    ServerConfig {
        tick_interval: Duration::from_secs(3600),
        ..Default::default()
    }
}

/// A delayed exchange `name` routing as `kind`, bound to a fresh queue `queue` with `key`.
async fn delayed_setup(
    ch: &Channel,
    name: &str,
    kind: &str,
    queue: &str,
    key: &str,
    durable: bool,
) {
    within(ch.exchange_declare(
        name,
        delayed_kind(),
        ExchangeDeclareOptions {
            durable,
            ..Default::default()
        },
        args(&[("x-delayed-type", text(kind))]),
    ))
    .await
    .expect("declare the delayed exchange");
    within(ch.queue_declare(
        queue,
        QueueDeclareOptions {
            durable,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .expect("declare the queue");
    within(ch.queue_bind(
        queue,
        name,
        key,
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("bind");
}

fn with_delay(delay: AMQPValue) -> BasicProperties {
    BasicProperties::default().with_headers(args(&[("x-delay", delay)]))
}

fn ready(broker: &TestBroker, queue: &str) -> u32 {
    broker
        .broker()
        .vhost("/")
        .and_then(|v| v.queue(queue).ok())
        .map_or(0, |q| q.counts().messages)
}

fn waiting(broker: &TestBroker) -> usize {
    broker.broker().vhost("/").map_or(0, |v| v.delayed_len())
}

#[tokio::test]
async fn a_delayed_exchange_needs_a_valid_x_delayed_type() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let cases = [
        (
            FieldTable::default(),
            "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type",
        ),
        (
            args(&[("x-delayed-type", text("x-delayed-message"))]),
            "PRECONDITION_FAILED - Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'",
        ),
    ];
    for (a, expected) in cases {
        let ch = within(conn.create_channel()).await.expect("channel");
        match within(ch.exchange_declare("bad", delayed_kind(), Default::default(), a)).await {
            Err(lapin::Error::ProtocolError(e)) => {
                assert_eq!(e.get_id(), 406);
                assert_eq!(e.get_message().as_str(), expected);
            }
            other => panic!("expected a 406, got {other:?}"),
        }
    }
    // An unknown routing type is an unknown exchange type: a connection error.
    let ch = within(conn.create_channel()).await.expect("channel");
    let r = within(ch.exchange_declare(
        "bad",
        delayed_kind(),
        Default::default(),
        args(&[("x-delayed-type", text("nope"))]),
    ))
    .await;
    assert_eq!(code_of(r), 503);
}

#[tokio::test]
async fn messages_wait_their_delay_and_come_out_in_due_order() {
    let broker = TestBroker::with_config(fast()).await;
    let (_conn, ch) = broker.channel().await;
    delayed_setup(&ch, "later", "direct", "later-q", "k", false).await;
    publish_with(
        &ch,
        "later",
        "k",
        b"late",
        with_delay(AMQPValue::LongInt(400)),
    )
    .await;
    publish_with(
        &ch,
        "later",
        "k",
        b"early",
        with_delay(AMQPValue::LongInt(150)),
    )
    .await;
    let _ = queue_counts(&ch, "later-q").await;
    assert_eq!(waiting(&broker), 2);
    assert_eq!(ready(&broker, "later-q"), 0);
    let mut c = consume(&ch, "later-q", true).await;
    let start = std::time::Instant::now();
    let first = next_delivery(&mut c).await;
    assert_eq!(first.data, b"early");
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(next_delivery(&mut c).await.data, b"late");
    assert!(
        start.elapsed() >= Duration::from_millis(350),
        "{:?}",
        start.elapsed()
    );
    // The plugin negates x-delay on the way out, so the message is not delayed again.
    let h = first.properties.headers().clone().expect("headers");
    assert_eq!(h.inner().get("x-delay"), Some(&AMQPValue::LongInt(-150)));
}

#[tokio::test]
async fn no_positive_delay_routes_at_once() {
    let broker = TestBroker::with_config(no_ticks()).await;
    let (_conn, ch) = broker.channel().await;
    delayed_setup(&ch, "now", "fanout", "now-q", "", false).await;
    publish(&ch, "now", "", b"no header").await;
    publish_with(&ch, "now", "", b"zero", with_delay(AMQPValue::LongInt(0))).await;
    publish_with(
        &ch,
        "now",
        "",
        b"negative",
        with_delay(AMQPValue::LongInt(-10)),
    )
    .await;
    publish_with(&ch, "now", "", b"garbage", with_delay(text("soon"))).await;
    assert_eq!(queue_counts(&ch, "now-q").await.0, 4);
    assert_eq!(waiting(&broker), 0);
}

#[tokio::test]
async fn the_routing_type_and_bindings_apply_when_the_message_is_due() {
    let broker = TestBroker::with_config(no_ticks()).await;
    let (_conn, ch) = broker.channel().await;
    delayed_setup(&ch, "topical", "topic", "orders-eu", "orders.eu.*", false).await;
    publish_with(
        &ch,
        "topical",
        "orders.eu.new",
        b"a",
        with_delay(AMQPValue::LongInt(60_000)),
    )
    .await;
    publish_with(
        &ch,
        "topical",
        "orders.us.new",
        b"b",
        with_delay(AMQPValue::LongInt(60_000)),
    )
    .await;
    // A binding made while they wait counts.
    within(ch.queue_declare("orders-us", Default::default(), FieldTable::default()))
        .await
        .expect("declare");
    within(ch.queue_bind(
        "orders-us",
        "topical",
        "orders.us.#",
        Default::default(),
        FieldTable::default(),
    ))
    .await
    .expect("bind");
    broker.broker().tick(clock::now_ms() + 61_000);
    assert_eq!(
        get(&ch, "orders-eu", true).await.expect("eu").delivery.data,
        b"a"
    );
    assert_eq!(
        get(&ch, "orders-us", true).await.expect("us").delivery.data,
        b"b"
    );
}

#[tokio::test]
async fn a_mandatory_delayed_message_is_returned_at_once_and_still_delivered() {
    let broker = TestBroker::with_config(no_ticks()).await;
    let (_conn, ch) = broker.channel().await;
    delayed_setup(&ch, "m", "direct", "m-q", "k", false).await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .expect("confirms");
    let c = within(ch.basic_publish(
        "m",
        "k",
        BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        },
        b"m",
        with_delay(AMQPValue::LongInt(60_000)),
    ))
    .await
    .expect("publish");
    let Confirmation::Ack(Some(returned)) = within(c).await.expect("confirm") else {
        panic!("expected a returned, acked message");
    };
    assert_eq!(returned.reply_code, 312);
    broker.broker().tick(clock::now_ms() + 61_000);
    assert_eq!(queue_counts(&ch, "m-q").await.0, 1);
}

#[tokio::test]
async fn there_is_no_49_day_limit() {
    let broker = TestBroker::with_config(no_ticks()).await;
    let (_conn, ch) = broker.channel().await;
    delayed_setup(&ch, "far", "direct", "far-q", "k", false).await;
    let hundred_days: i64 = 100 * 24 * 3600 * 1000;
    publish_with(
        &ch,
        "far",
        "k",
        b"m",
        with_delay(AMQPValue::LongLongInt(hundred_days)),
    )
    .await;
    let _ = queue_counts(&ch, "far-q").await;
    assert_eq!(waiting(&broker), 1, "the plugin would route it at once");
    broker
        .broker()
        .tick(clock::now_ms() + 99 * 24 * 3600 * 1000);
    assert_eq!(ready(&broker, "far-q"), 0);
    broker
        .broker()
        .tick(clock::now_ms() + hundred_days as u64 + 1000);
    assert_eq!(ready(&broker, "far-q"), 1);
}

#[tokio::test]
async fn a_delayed_publish_in_a_transaction_waits_for_commit() {
    let broker = TestBroker::with_config(no_ticks()).await;
    let (_conn, ch) = broker.channel().await;
    delayed_setup(&ch, "txd", "direct", "txd-q", "k", false).await;
    within(ch.tx_select()).await.expect("tx");
    publish_with(&ch, "txd", "k", b"m", with_delay(AMQPValue::LongInt(1000))).await;
    let _ = queue_counts(&ch, "txd-q").await;
    assert_eq!(waiting(&broker), 0);
    within(ch.tx_commit()).await.expect("commit");
    assert_eq!(waiting(&broker), 1);
}

#[tokio::test]
async fn durable_delays_survive_a_restart_and_are_delivered_on_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::start_durable(dir.path()).await;
    {
        let (conn, ch) = broker.channel().await;
        delayed_setup(&ch, "dur-delay", "direct", "dur-delay-q", "k", true).await;
        within(ch.confirm_select(ConfirmSelectOptions::default()))
            .await
            .expect("confirms");
        for (body, delay, persistent) in [
            (&b"in an hour"[..], 3_600_000, true),
            (&b"soon"[..], 300, true),
            (&b"transient"[..], 3_600_000, false),
        ] {
            let mut props = with_delay(AMQPValue::LongInt(delay));
            if persistent {
                props = props.with_delivery_mode(2);
            }
            let c = within(ch.basic_publish(
                "dur-delay",
                "k",
                BasicPublishOptions::default(),
                body,
                props,
            ))
            .await
            .expect("publish");
            within(c).await.expect("confirmed");
        }
        assert_eq!(waiting(&broker), 3);
        let _ = conn.close(200, "bye").await;
    }
    let broker = broker.restart().await;
    // The persistent ones were logged with their due time; the transient one is gone.
    assert_eq!(waiting(&broker), 2);
    let (_conn, ch) = broker.channel().await;
    let mut c = consume(&ch, "dur-delay-q", true).await;
    assert_eq!(next_delivery(&mut c).await.data, b"soon");
    assert_no_delivery(&mut c).await;
    // Fake time: an hour later (the server's own tick is real time).
    broker.broker().tick(clock::now_ms() + 3_601_000);
    let d = next_delivery(&mut c).await;
    assert_eq!(d.data, b"in an hour");
    assert_eq!(*d.properties.delivery_mode(), Some(2));
    assert_eq!(waiting(&broker), 0);
    // Delivered ones are settled in the log: nothing comes back after another restart.
    drop(c);
    drop(ch);
    drop(_conn);
    let broker = broker.restart().await;
    assert_eq!(waiting(&broker), 0);
    assert_eq!(ready(&broker, "dur-delay-q"), 0);
}
