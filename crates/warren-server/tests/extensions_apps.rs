//! Declarations real frameworks make, unchanged: Celery/kombu (priority + dead-letter + TTL on a
//! task queue, the pidbox and event queues with TTL and expiry) and Spring AMQP (a durable
//! queue with a dead-letter exchange and routing key, TTL as a Java Integer, a quorum queue
//! with a delivery limit). Each is declared twice (frameworks redeclare on every start) and
//! used the way the framework uses it.

mod common;

use std::time::Duration;

use common::*;
use lapin::options::{
    BasicRejectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};
use warren_server::ServerConfig;

async fn exchange(ch: &Channel, name: &str, kind: ExchangeKind, durable: bool) {
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
    .expect("exchange.declare");
}

async fn queue(ch: &Channel, name: &str, options: QueueDeclareOptions, a: FieldTable) {
    within(ch.queue_declare(name, options, a))
        .await
        .expect("queue.declare");
}

async fn bind(ch: &Channel, q: &str, x: &str, key: &str) {
    within(ch.queue_bind(
        q,
        x,
        key,
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("queue.bind");
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn celery_style_declarations_work_unchanged() {
    let broker = TestBroker::with_config(ServerConfig {
        tick_interval: Duration::from_millis(10),
        ..Default::default()
    })
    .await;
    let (_conn, ch) = broker.channel().await;
    // py-amqp sends Python ints as signed 32-bit ('I') and the DLX as a long string.
    let task_args = args(&[
        ("x-max-priority", AMQPValue::LongInt(10)),
        ("x-dead-letter-exchange", text("celery.dlx")),
        ("x-dead-letter-routing-key", text("celery.dead")),
        ("x-message-ttl", AMQPValue::LongInt(60_000)),
    ]);
    for _ in 0..2 {
        exchange(&ch, "celery.dlx", ExchangeKind::Direct, true).await;
        queue(&ch, "celery.dead", durable(), FieldTable::default()).await;
        bind(&ch, "celery.dead", "celery.dlx", "celery.dead").await;
        exchange(&ch, "tasks", ExchangeKind::Direct, true).await;
        queue(&ch, "tasks", durable(), task_args.clone()).await;
        bind(&ch, "tasks", "tasks", "tasks").await;
        // Remote control and events: TTL and expiry on auto-delete queues.
        exchange(&ch, "celery.pidbox", ExchangeKind::Fanout, false).await;
        queue(
            &ch,
            "worker1.celery.pidbox",
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            args(&[
                ("x-message-ttl", AMQPValue::LongInt(300_000)),
                ("x-expires", AMQPValue::LongInt(10_000)),
            ]),
        )
        .await;
        bind(&ch, "worker1.celery.pidbox", "celery.pidbox", "").await;
    }
    for (p, body) in [(1u8, "low"), (9, "urgent"), (5, "normal")] {
        publish_with(
            &ch,
            "tasks",
            "tasks",
            body.as_bytes(),
            BasicProperties::default()
                .with_priority(p)
                .with_delivery_mode(2)
                .with_content_type("application/json".into()),
        )
        .await;
    }
    let mut c = consume(&ch, "tasks", false).await;
    let urgent = next_delivery(&mut c).await;
    assert_eq!(urgent.data, b"urgent");
    // A task that fails for good is rejected and lands in the dead-letter queue.
    within(ch.basic_reject(urgent.delivery_tag, BasicRejectOptions { requeue: false }))
        .await
        .expect("reject");
    assert_eq!(next_delivery(&mut c).await.data, b"normal");
    assert_eq!(next_delivery(&mut c).await.data, b"low");
    let dead = loop {
        if let Some(m) = get(&ch, "celery.dead", true).await {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(dead.delivery.data, b"urgent");
    assert_eq!(dead.delivery.routing_key.as_str(), "celery.dead");
}

#[tokio::test]
async fn spring_style_declarations_work_unchanged() {
    let broker = TestBroker::with_config(ServerConfig {
        tick_interval: Duration::from_millis(10),
        ..Default::default()
    })
    .await;
    let (_conn, ch) = broker.channel().await;
    // QueueBuilder.durable("orders").deadLetterExchange("orders.dlx")
    //     .deadLetterRoutingKey("orders.dlq").ttl(200) — Java Integer is 'I'.
    let orders = args(&[
        ("x-dead-letter-exchange", text("orders.dlx")),
        ("x-dead-letter-routing-key", text("orders.dlq")),
        ("x-message-ttl", AMQPValue::LongInt(200)),
    ]);
    // QueueBuilder.durable("payments").quorum().deliveryLimit(3)
    let payments = args(&[
        ("x-queue-type", text("quorum")),
        ("x-delivery-limit", AMQPValue::LongInt(3)),
        ("x-dead-letter-exchange", text("orders.dlx")),
        ("x-dead-letter-routing-key", text("orders.dlq")),
    ]);
    // RabbitAdmin declares everything at start-up, and again on every reconnection.
    for _ in 0..2 {
        exchange(&ch, "orders.dlx", ExchangeKind::Direct, true).await;
        queue(&ch, "orders.dlq", durable(), FieldTable::default()).await;
        bind(&ch, "orders.dlq", "orders.dlx", "orders.dlq").await;
        exchange(&ch, "orders", ExchangeKind::Topic, true).await;
        queue(&ch, "orders", durable(), orders.clone()).await;
        bind(&ch, "orders", "orders", "order.#").await;
        queue(&ch, "payments", durable(), payments.clone()).await;
    }
    // An order nobody handles in time expires into the dead-letter queue.
    publish_with(
        &ch,
        "orders",
        "order.created",
        b"{\"id\":1}",
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2),
    )
    .await;
    let expired = loop {
        if let Some(m) = get(&ch, "orders.dlq", true).await {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(expired.delivery.data, b"{\"id\":1}");
    // A payment that keeps failing (Spring requeues on a listener exception) is parked after
    // its delivery limit.
    publish(&ch, "", "payments", b"pay").await;
    let mut c = consume(&ch, "payments", false).await;
    for _ in 0..4 {
        let d = next_delivery(&mut c).await;
        within(ch.basic_reject(d.delivery_tag, BasicRejectOptions { requeue: true }))
            .await
            .expect("requeue");
    }
    let parked = loop {
        if let Some(m) = get(&ch, "orders.dlq", true).await {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(parked.delivery.data, b"pay");
}
