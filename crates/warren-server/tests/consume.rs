//! Consumers: tags, exclusivity, cancelling (by the client and by the broker), dispatch
//! across consumers, and prefetch.

mod common;

use std::time::Duration;

use common::raw::{Handshake, RawClient};
use common::*;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer, ConsumerState};
use warren_codec::{basic, queue, FieldTable as RawTable, Method};

async fn consume_with(
    ch: &Channel,
    queue: &str,
    tag: &str,
    options: BasicConsumeOptions,
) -> lapin::Result<Consumer> {
    within(ch.basic_consume(queue, tag, options, FieldTable::default())).await
}

async fn fill(ch: &Channel, queue: &str, n: u32) {
    for i in 0..n {
        publish(ch, "", queue, i.to_string().as_bytes()).await;
    }
}

fn body(d: &lapin::message::Delivery) -> String {
    String::from_utf8(d.data.clone()).expect("utf-8")
}

#[tokio::test]
async fn consume_with_empty_tag_gets_a_generated_tag() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    let a = consume(&ch, &q, true).await;
    let b = consume(&ch, &q, true).await;
    assert!(a.tag().as_str().starts_with("amq.ctag-"), "{}", a.tag());
    assert_ne!(a.tag(), b.tag());
}

#[tokio::test]
async fn consume_with_a_tag_uses_it() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    let mut c = consume_with(&ch, &q, "my-tag", BasicConsumeOptions::default())
        .await
        .expect("consume");
    assert_eq!(c.tag().as_str(), "my-tag");
    publish(&ch, "", &q, b"x").await;
    let d = next_delivery(&mut c).await;
    d.acker.ack(BasicAckOptions::default()).await.expect("ack");
}

#[tokio::test]
async fn consume_from_missing_queue_closes_channel_with_404() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let r = consume_with(&ch, "no-such-queue", "", BasicConsumeOptions::default()).await;
    assert_eq!(code_of(r), 404);
}

#[tokio::test]
async fn exclusive_consumer_refuses_other_consumers_with_403() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    let q = temp_queue(&ch).await;
    let exclusive = BasicConsumeOptions {
        exclusive: true,
        ..Default::default()
    };
    let _sole = consume_with(&ch, &q, "", exclusive).await.expect("consume");
    let other = within(conn.create_channel()).await.expect("channel");
    let r = consume_with(&other, &q, "", BasicConsumeOptions::default()).await;
    assert_eq!(code_of(r), 403);
}

#[tokio::test]
async fn exclusive_consume_on_a_queue_with_consumers_closes_channel_with_403() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    let q = temp_queue(&ch).await;
    let _first = consume(&ch, &q, true).await;
    let other = within(conn.create_channel()).await.expect("channel");
    let exclusive = BasicConsumeOptions {
        exclusive: true,
        ..Default::default()
    };
    let r = consume_with(&other, &q, "", exclusive).await;
    assert_eq!(code_of(r), 403);
}

#[tokio::test]
async fn reusing_a_consumer_tag_on_a_channel_closes_connection_with_530() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        queue::Declare {
            queue: "tagged".try_into().expect("shortstr"),
            passive: false,
            durable: false,
            exclusive: true,
            auto_delete: false,
            no_wait: true,
            arguments: RawTable::new(),
        },
    )
    .await;
    let consume = basic::Consume {
        queue: "tagged".try_into().expect("shortstr"),
        consumer_tag: "t1".try_into().expect("shortstr"),
        no_local: false,
        no_ack: true,
        exclusive: false,
        no_wait: false,
        arguments: RawTable::new(),
    };
    c.send_method(1, consume.clone()).await;
    assert!(matches!(
        c.read_method().await,
        Some((1, Method::BasicConsumeOk(_)))
    ));
    c.send_method(1, consume).await;
    assert_eq!(c.expect_close().await, (530, 60, 20));
}

#[tokio::test]
async fn the_same_tag_on_two_channels_is_fine() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let a = within(conn.create_channel()).await.expect("channel");
    let b = within(conn.create_channel()).await.expect("channel");
    let q = temp_queue(&a).await;
    consume_with(&a, &q, "same", BasicConsumeOptions::default())
        .await
        .expect("on a");
    consume_with(&b, &q, "same", BasicConsumeOptions::default())
        .await
        .expect("on b");
}

#[tokio::test]
async fn cancel_stops_deliveries_and_leaves_messages_queued() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    let mut c = consume(&ch, &q, true).await;
    publish(&ch, "", &q, b"before").await;
    assert_eq!(next_delivery(&mut c).await.data, b"before");
    within(ch.basic_cancel(c.tag().as_str(), BasicCancelOptions::default()))
        .await
        .expect("cancel");
    publish(&ch, "", &q, b"after").await;
    assert_no_delivery(&mut c).await;
    assert_eq!(
        get(&ch, &q, true)
            .await
            .expect("still queued")
            .delivery
            .data,
        b"after"
    );
}

#[tokio::test]
async fn cancel_of_an_unknown_tag_is_answered_with_cancel_ok() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    within(ch.basic_cancel("never-consumed", BasicCancelOptions::default()))
        .await
        .expect("cancel-ok");
    temp_queue(&ch).await;
}

#[tokio::test]
async fn deleting_the_queue_cancels_its_consumers_from_the_server() {
    let broker = TestBroker::start().await;
    let (conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    let mut c = consume(&ch, &q, true).await;
    let other = within(conn.create_channel()).await.expect("channel");
    within(other.queue_delete(&q, QueueDeleteOptions::default()))
        .await
        .expect("delete");
    use futures_lite::StreamExt;
    assert!(within(c.next()).await.is_none(), "the consumer stream ends");
    assert_eq!(c.state(), ConsumerState::Canceled);
    // The channel stays usable.
    temp_queue(&ch).await;
}

#[tokio::test]
async fn server_cancel_is_a_basic_cancel_frame_for_clients_that_asked() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    let declare = queue::Declare {
        queue: "to-delete".try_into().expect("shortstr"),
        passive: false,
        durable: false,
        exclusive: false,
        auto_delete: false,
        no_wait: true,
        arguments: RawTable::new(),
    };
    c.send_method(1, declare).await;
    c.send_method(
        1,
        basic::Consume {
            queue: "to-delete".try_into().expect("shortstr"),
            consumer_tag: "watched".try_into().expect("shortstr"),
            no_local: false,
            no_ack: true,
            exclusive: false,
            no_wait: false,
            arguments: RawTable::new(),
        },
    )
    .await;
    assert!(matches!(
        c.read_method().await,
        Some((1, Method::BasicConsumeOk(_)))
    ));
    let (_conn, ch) = broker.channel().await;
    within(ch.queue_delete("to-delete", QueueDeleteOptions::default()))
        .await
        .expect("delete");
    match c.read_method().await {
        Some((1, Method::BasicCancel(m))) => assert_eq!(m.consumer_tag.as_str(), "watched"),
        other => panic!("expected basic.cancel, got {other:?}"),
    }
}

#[tokio::test]
async fn server_cancel_is_not_sent_to_clients_without_the_capability() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open_with(
        broker.addr(),
        Handshake {
            client_properties: RawTable::new(),
            ..Handshake::default()
        },
    )
    .await;
    c.open_channel(1).await;
    c.send_method(
        1,
        queue::Declare {
            queue: "quiet-delete".try_into().expect("shortstr"),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            no_wait: true,
            arguments: RawTable::new(),
        },
    )
    .await;
    c.send_method(
        1,
        basic::Consume {
            queue: "quiet-delete".try_into().expect("shortstr"),
            consumer_tag: "unwatched".try_into().expect("shortstr"),
            no_local: false,
            no_ack: true,
            exclusive: false,
            no_wait: false,
            arguments: RawTable::new(),
        },
    )
    .await;
    assert!(matches!(
        c.read_method().await,
        Some((1, Method::BasicConsumeOk(_)))
    ));
    let (_conn, ch) = broker.channel().await;
    within(ch.queue_delete("quiet-delete", QueueDeleteOptions::default()))
        .await
        .expect("delete");
    assert!(c
        .read_frame_within(Duration::from_millis(300))
        .await
        .is_none());
}

#[tokio::test]
async fn messages_are_dispatched_round_robin_across_consumers() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    let mut a = consume(&ch, &q, true).await;
    let mut b = consume(&ch, &q, true).await;
    fill(&ch, &q, 6).await;
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    for _ in 0..3 {
        got_a.push(body(&next_delivery(&mut a).await));
        got_b.push(body(&next_delivery(&mut b).await));
    }
    assert_eq!(got_a, ["0", "2", "4"]);
    assert_eq!(got_b, ["1", "3", "5"]);
}

#[tokio::test]
async fn prefetch_1_gives_the_next_message_to_whoever_acks() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let slow_ch = within(conn.create_channel()).await.expect("channel");
    let fast_ch = within(conn.create_channel()).await.expect("channel");
    let q = temp_queue(&slow_ch).await;
    for ch in [&slow_ch, &fast_ch] {
        within(ch.basic_qos(1, BasicQosOptions::default()))
            .await
            .expect("qos");
    }
    let mut slow = consume(&slow_ch, &q, false).await;
    let mut fast = consume(&fast_ch, &q, false).await;
    fill(&slow_ch, &q, 6).await;
    let held = next_delivery(&mut slow).await;
    assert_eq!(body(&held), "0");
    let mut fast_got = Vec::new();
    for _ in 0..5 {
        let d = next_delivery(&mut fast).await;
        fast_got.push(body(&d));
        d.acker.ack(BasicAckOptions::default()).await.expect("ack");
    }
    assert_eq!(fast_got, ["1", "2", "3", "4", "5"]);
    assert_no_delivery(&mut slow).await;
}

#[tokio::test]
async fn per_consumer_prefetch_limits_each_consumer_separately() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    within(ch.basic_qos(2, BasicQosOptions { global: false }))
        .await
        .expect("qos");
    let mut a = consume(&ch, &q, false).await;
    let mut b = consume(&ch, &q, false).await;
    fill(&ch, &q, 10).await;
    for c in [&mut a, &mut b] {
        next_delivery(c).await;
        next_delivery(c).await;
        assert_no_delivery(c).await;
    }
    assert_eq!(queue_counts(&ch, &q).await.0, 6);
}

#[tokio::test]
async fn global_prefetch_limits_the_whole_channel() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q1 = temp_queue(&ch).await;
    let q2 = temp_queue(&ch).await;
    within(ch.basic_qos(3, BasicQosOptions { global: true }))
        .await
        .expect("qos");
    let mut a = consume(&ch, &q1, false).await;
    let mut b = consume(&ch, &q2, false).await;
    fill(&ch, &q1, 5).await;
    fill(&ch, &q2, 5).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (r1, _) = queue_counts(&ch, &q1).await;
    let (r2, _) = queue_counts(&ch, &q2).await;
    assert_eq!(10 - r1 - r2, 3, "three unacked across both consumers");
    // Acking everything lets the rest through, three at a time.
    let mut total = 0;
    while total < 10 {
        let d = tokio::select! {
            d = next_delivery(&mut a) => d,
            d = next_delivery(&mut b) => d,
        };
        d.acker.ack(BasicAckOptions::default()).await.expect("ack");
        total += 1;
    }
}

#[tokio::test]
async fn no_ack_consumers_ignore_prefetch() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    within(ch.basic_qos(1, BasicQosOptions::default()))
        .await
        .expect("qos");
    let mut c = consume(&ch, &q, true).await;
    fill(&ch, &q, 5).await;
    for i in 0..5 {
        assert_eq!(body(&next_delivery(&mut c).await), i.to_string());
    }
}

#[tokio::test]
async fn prefetch_size_is_not_implemented_540() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        basic::Qos {
            prefetch_size: 10,
            prefetch_count: 0,
            global: false,
        },
    )
    .await;
    assert_eq!(c.expect_close().await, (540, 60, 10));
}

#[tokio::test]
async fn a_consumer_gets_messages_published_before_it_started() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    fill(&ch, &q, 3).await;
    let mut c = consume(&ch, &q, true).await;
    for i in 0..3 {
        assert_eq!(body(&next_delivery(&mut c).await), i.to_string());
    }
}
