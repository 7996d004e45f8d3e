//! Priority queues (`x-max-priority`: higher `priority` first, FIFO within a level, requeue
//! to its place in its level, paging per level, restart) and consumer priorities
//! (`x-priority` on `basic.consume`: higher-priority consumers with credit first,
//! round-robin within a priority).

mod common;

use common::*;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Consumer};

fn max_priority(p: i32) -> FieldTable {
    args(&[("x-max-priority", AMQPValue::LongInt(p))])
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

async fn publish_p(ch: &Channel, queue: &str, priority: Option<u8>, body: &[u8]) {
    let mut props = BasicProperties::default();
    if let Some(p) = priority {
        props = props.with_priority(p);
    }
    publish_with(ch, "", queue, body, props).await;
}

async fn drain(ch: &Channel, queue: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(m) = get(ch, queue, true).await {
        out.push(m.delivery.data);
    }
    out
}

fn strings(v: &[&str]) -> Vec<Vec<u8>> {
    v.iter().map(|s| s.as_bytes().to_vec()).collect()
}

#[tokio::test]
async fn higher_priorities_first_fifo_within_a_level() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "pq", false, max_priority(3)).await;
    for (p, body) in [
        (None, "none"),
        (Some(9), "nine"),
        (Some(3), "three"),
        (Some(2), "two"),
        (Some(0), "zero"),
        (Some(2), "two-b"),
    ] {
        publish_p(&ch, "pq", p, body.as_bytes()).await;
    }
    // Above the maximum counts as the maximum; no priority is 0 (as RabbitMQ 3.10).
    assert_eq!(
        drain(&ch, "pq").await,
        strings(&["nine", "three", "two", "two-b", "none", "zero"])
    );
}

#[tokio::test]
async fn a_queue_without_max_priority_ignores_priorities() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "fifo", false, FieldTable::default()).await;
    publish_p(&ch, "fifo", Some(1), b"a").await;
    publish_p(&ch, "fifo", Some(9), b"b").await;
    assert_eq!(drain(&ch, "fifo").await, strings(&["a", "b"]));
}

#[tokio::test]
async fn a_requeued_message_goes_back_to_its_place_in_its_level() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "rq", false, max_priority(5)).await;
    publish_p(&ch, "rq", Some(5), b"h1").await;
    publish_p(&ch, "rq", Some(5), b"h2").await;
    publish_p(&ch, "rq", Some(1), b"l1").await;
    let h1 = get(&ch, "rq", false).await.expect("h1");
    let h2 = get(&ch, "rq", false).await.expect("h2");
    assert_eq!(h1.delivery.data, b"h1");
    publish_p(&ch, "rq", Some(5), b"h3").await;
    for m in [&h2, &h1] {
        within(ch.basic_nack(
            m.delivery.delivery_tag,
            BasicNackOptions {
                requeue: true,
                multiple: false,
            },
        ))
        .await
        .expect("requeue");
    }
    assert_eq!(drain(&ch, "rq").await, strings(&["h1", "h2", "h3", "l1"]));
}

#[tokio::test]
async fn consumers_get_priority_order_too() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "pq-consumed", false, max_priority(10)).await;
    for (p, body) in [(1, "low"), (10, "high"), (5, "mid")] {
        publish_p(&ch, "pq-consumed", Some(p), body.as_bytes()).await;
    }
    let _ = queue_counts(&ch, "pq-consumed").await;
    let mut c = consume(&ch, "pq-consumed", true).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_delivery(&mut c).await.data);
    }
    assert_eq!(got, strings(&["high", "mid", "low"]));
}

#[tokio::test]
async fn paged_priority_levels_keep_their_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::start_durable(dir.path()).await;
    let (_conn, ch) = broker.channel().await;
    // Ten levels share the queue's 32 MiB: each pages past 3.2 MiB.
    declare(&ch, "paged-pq", false, max_priority(9)).await;
    let body = |level: u8, i: u8| {
        let mut b = vec![level; 512 * 1024];
        b[0] = i;
        b
    };
    for i in 0..10u8 {
        publish_p(&ch, "paged-pq", Some(2), &body(2, i)).await;
        publish_p(&ch, "paged-pq", Some(7), &body(7, i)).await;
    }
    let mut order = Vec::new();
    while let Some(m) = get(&ch, "paged-pq", true).await {
        order.push((m.delivery.data[1], m.delivery.data[0]));
    }
    let expected: Vec<(u8, u8)> = (0..10)
        .map(|i| (7, i))
        .chain((0..10).map(|i| (2, i)))
        .collect();
    assert_eq!(order, expected);
}

#[tokio::test]
async fn a_durable_priority_queue_comes_back_in_priority_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::start_durable(dir.path()).await;
    {
        let (conn, ch) = broker.channel().await;
        declare(&ch, "dur-pq", true, max_priority(5)).await;
        within(ch.confirm_select(Default::default()))
            .await
            .expect("confirms");
        for (p, body) in [(1u8, "l1"), (5, "h1"), (1, "l2"), (5, "h2")] {
            let c = within(
                ch.basic_publish(
                    "",
                    "dur-pq",
                    Default::default(),
                    body.as_bytes(),
                    BasicProperties::default()
                        .with_priority(p)
                        .with_delivery_mode(2),
                ),
            )
            .await
            .expect("publish");
            within(c).await.expect("confirmed");
        }
        let _ = conn.close(200, "bye").await;
    }
    let broker = broker.restart().await;
    let (_conn, ch) = broker.channel().await;
    assert_eq!(
        drain(&ch, "dur-pq").await,
        strings(&["h1", "h2", "l1", "l2"])
    );
}

async fn consume_with_priority(ch: &Channel, queue: &str, priority: Option<i32>) -> Consumer {
    let a = match priority {
        Some(p) => args(&[("x-priority", AMQPValue::LongInt(p))]),
        None => FieldTable::default(),
    };
    within(ch.basic_consume(queue, "", BasicConsumeOptions::default(), a))
        .await
        .expect("consume")
}

#[tokio::test]
async fn higher_priority_consumers_get_messages_while_they_have_credit() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let setup = within(conn.create_channel()).await.expect("channel");
    declare(&setup, "shared", false, FieldTable::default()).await;
    let low_ch = within(conn.create_channel()).await.expect("channel");
    let high_ch = within(conn.create_channel()).await.expect("channel");
    for ch in [&low_ch, &high_ch] {
        within(ch.basic_qos(1, BasicQosOptions::default()))
            .await
            .expect("qos");
    }
    let mut low = consume_with_priority(&low_ch, "shared", None).await;
    let mut high = consume_with_priority(&high_ch, "shared", Some(10)).await;
    publish(&setup, "", "shared", b"1").await;
    let first = next_delivery(&mut high).await;
    assert_eq!(first.data, b"1");
    // The high-priority consumer is out of credit: the next goes to the other.
    publish(&setup, "", "shared", b"2").await;
    assert_eq!(next_delivery(&mut low).await.data, b"2");
    // Both full: the third waits, and goes to the high-priority one once it acks.
    publish(&setup, "", "shared", b"3").await;
    assert_no_delivery(&mut high).await;
    within(high_ch.basic_ack(first.delivery_tag, BasicAckOptions::default()))
        .await
        .expect("ack");
    assert_eq!(next_delivery(&mut high).await.data, b"3");
    assert_no_delivery(&mut low).await;
}

#[tokio::test]
async fn consumers_of_one_priority_share_round_robin() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "rr", false, FieldTable::default()).await;
    let mut a = consume_with_priority(&ch, "rr", Some(5)).await;
    let mut b = consume_with_priority(&ch, "rr", Some(5)).await;
    let mut idle = consume_with_priority(&ch, "rr", Some(-1)).await;
    for i in 0..4u8 {
        publish(&ch, "", "rr", &[i]).await;
    }
    assert_eq!(next_delivery(&mut a).await.data, [0]);
    assert_eq!(next_delivery(&mut b).await.data, [1]);
    assert_eq!(next_delivery(&mut a).await.data, [2]);
    assert_eq!(next_delivery(&mut b).await.data, [3]);
    assert_no_delivery(&mut idle).await;
}

#[tokio::test]
async fn consumer_priorities_are_advertised() {
    use warren_codec::{frame, FieldValue, Method};
    let broker = TestBroker::start().await;
    let mut c = common::raw::RawClient::connect(broker.addr()).await;
    c.send_bytes(frame::PROTOCOL_HEADER).await;
    let Some((0, Method::ConnectionStart(start))) = c.read_method().await else {
        panic!("expected connection.start");
    };
    let Some(FieldValue::Table(caps)) = start.server_properties.get("capabilities") else {
        panic!("no capabilities");
    };
    assert_eq!(
        caps.get("consumer_priorities"),
        Some(&FieldValue::Bool(true))
    );
}
