//! Acknowledgements: basic.get, ack, nack, reject, recover, the redelivered flag, and
//! unacked messages going back to their queue in their original order.

mod common;

use common::raw::RawClient;
use common::*;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicQosOptions, BasicRecoverOptions,
    BasicRejectOptions,
};
use lapin::Channel;
use warren_codec::{basic, queue, FieldTable as RawTable, FrameType, Method};

async fn fill(ch: &Channel, queue: &str, n: u32) {
    for i in 0..n {
        publish(ch, "", queue, i.to_string().as_bytes()).await;
    }
}

fn text(data: &[u8]) -> String {
    String::from_utf8(data.to_vec()).expect("utf-8")
}

/// Bodies and redelivered flags of everything in `queue`, taken with auto-ack.
async fn drain(ch: &Channel, queue: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    while let Some(m) = get(ch, queue, true).await {
        out.push((text(&m.delivery.data), m.delivery.redelivered));
    }
    out
}

fn all(bodies: &[&str], redelivered: bool) -> Vec<(String, bool)> {
    bodies
        .iter()
        .map(|b| (b.to_string(), redelivered))
        .collect()
}

#[tokio::test]
async fn basic_get_returns_messages_then_get_empty() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    assert!(
        get(&ch, &q, false).await.is_none(),
        "get-empty on an empty queue"
    );
    fill(&ch, &q, 3).await;
    let m = get(&ch, &q, false).await.expect("get-ok");
    assert_eq!(text(&m.delivery.data), "0");
    assert_eq!(m.message_count, 2, "messages left after this one");
    assert!(!m.delivery.redelivered);
    m.delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    assert_eq!(drain(&ch, &q).await, all(&["1", "2"], false));
    assert!(get(&ch, &q, false).await.is_none());
}

#[tokio::test]
async fn basic_get_of_missing_queue_closes_channel_with_404() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let r = within(ch.basic_get("no-such-queue", BasicGetOptions::default())).await;
    assert_eq!(code_of(r), 404);
}

#[tokio::test]
async fn ack_removes_the_message_for_good() {
    let broker = TestBroker::start().await;
    let (conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    fill(&ch, &q, 1).await;
    let m = get(&ch, &q, false).await.expect("get-ok");
    m.delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    // Closing the channel does not bring it back.
    within(ch.close(200, "bye")).await.expect("close");
    let ch = within(conn.create_channel()).await.expect("channel");
    assert!(get(&ch, &q, true).await.is_none());
}

#[tokio::test]
async fn ack_multiple_settles_everything_up_to_the_tag() {
    let broker = TestBroker::start().await;
    let (conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    fill(&ch, &q, 4).await;
    let mut consumer = consume(&ch, &q, false).await;
    let mut tags = Vec::new();
    for _ in 0..4 {
        tags.push(next_delivery(&mut consumer).await.delivery_tag);
    }
    within(ch.basic_ack(tags[2], BasicAckOptions { multiple: true }))
        .await
        .expect("ack multiple");
    within(ch.close(200, "bye")).await.expect("close");
    let ch = within(conn.create_channel()).await.expect("channel");
    assert_eq!(drain(&ch, &q).await, all(&["3"], true));
}

#[tokio::test]
async fn ack_with_tag_0_and_multiple_settles_all() {
    let broker = TestBroker::start().await;
    let (conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    fill(&ch, &q, 3).await;
    let mut consumer = consume(&ch, &q, false).await;
    for _ in 0..3 {
        next_delivery(&mut consumer).await;
    }
    within(ch.basic_ack(0, BasicAckOptions { multiple: true }))
        .await
        .expect("ack all");
    within(ch.close(200, "bye")).await.expect("close");
    let ch = within(conn.create_channel()).await.expect("channel");
    assert!(drain(&ch, &q).await.is_empty());
}

#[tokio::test]
async fn ack_of_an_unknown_delivery_tag_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let closed = watch_close(&ch);
    within(ch.basic_ack(99, BasicAckOptions::default()))
        .await
        .expect("ack sent");
    assert_eq!(closed.code().await, 406);
}

#[tokio::test]
async fn ack_of_tag_0_without_multiple_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let closed = watch_close(&ch);
    within(ch.basic_ack(0, BasicAckOptions::default()))
        .await
        .expect("ack sent");
    assert_eq!(closed.code().await, 406);
}

#[tokio::test]
async fn double_ack_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let closed = watch_close(&ch);
    let q = temp_queue(&ch).await;
    fill(&ch, &q, 1).await;
    let m = get(&ch, &q, false).await.expect("get-ok");
    let tag = m.delivery.delivery_tag;
    within(ch.basic_ack(tag, BasicAckOptions::default()))
        .await
        .expect("ack");
    within(ch.basic_ack(tag, BasicAckOptions::default()))
        .await
        .expect("ack sent");
    assert_eq!(closed.code().await, 406);
}

#[tokio::test]
async fn nack_and_reject_of_unknown_tags_close_channel_with_406() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    let closed = watch_close(&ch);
    within(ch.basic_nack(
        5,
        BasicNackOptions {
            multiple: true,
            requeue: true,
        },
    ))
    .await
    .expect("nack sent");
    assert_eq!(closed.code().await, 406);
    let ch = within(conn.create_channel()).await.expect("channel");
    let closed = watch_close(&ch);
    within(ch.basic_reject(7, BasicRejectOptions { requeue: false }))
        .await
        .expect("reject sent");
    assert_eq!(closed.code().await, 406);
}

#[tokio::test]
async fn nack_with_requeue_redelivers_with_the_redelivered_flag() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    fill(&ch, &q, 2).await;
    within(ch.basic_qos(1, BasicQosOptions::default()))
        .await
        .expect("qos");
    let mut consumer = consume(&ch, &q, false).await;
    let first = next_delivery(&mut consumer).await;
    assert!(!first.redelivered);
    first
        .acker
        .nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        })
        .await
        .expect("nack");
    // Back at the head of the queue, before "1".
    let again = next_delivery(&mut consumer).await;
    again
        .acker
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    let second = next_delivery(&mut consumer).await;
    assert_eq!((text(&again.data), again.redelivered), ("0".into(), true));
    assert_eq!(
        (text(&second.data), second.redelivered),
        ("1".into(), false)
    );
}

#[tokio::test]
async fn nack_without_requeue_drops_the_message() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    fill(&ch, &q, 2).await;
    let m = get(&ch, &q, false).await.expect("get-ok");
    m.delivery
        .acker
        .nack(BasicNackOptions {
            multiple: false,
            requeue: false,
        })
        .await
        .expect("nack");
    assert_eq!(drain(&ch, &q).await, all(&["1"], false));
}

#[tokio::test]
async fn nack_multiple_requeues_everything_up_to_the_tag_in_order() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    fill(&ch, &q, 4).await;
    let mut tags = Vec::new();
    for _ in 0..3 {
        tags.push(
            get(&ch, &q, false)
                .await
                .expect("get-ok")
                .delivery
                .delivery_tag,
        );
    }
    within(ch.basic_nack(
        tags[2],
        BasicNackOptions {
            multiple: true,
            requeue: true,
        },
    ))
    .await
    .expect("nack");
    let got = drain(&ch, &q).await;
    assert_eq!(
        got,
        vec![
            ("0".into(), true),
            ("1".into(), true),
            ("2".into(), true),
            ("3".into(), false)
        ]
    );
}

#[tokio::test]
async fn reject_with_and_without_requeue() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    fill(&ch, &q, 2).await;
    let a = get(&ch, &q, false).await.expect("get-ok");
    let b = get(&ch, &q, false).await.expect("get-ok");
    a.delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .expect("reject");
    b.delivery
        .acker
        .reject(BasicRejectOptions { requeue: true })
        .await
        .expect("reject");
    assert_eq!(drain(&ch, &q).await, all(&["1"], true));
}

#[tokio::test]
async fn requeued_message_goes_back_before_newer_messages() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    fill(&ch, &q, 3).await;
    let m = get(&ch, &q, false).await.expect("get-ok");
    publish(&ch, "", &q, b"3").await;
    m.delivery
        .acker
        .nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        })
        .await
        .expect("nack");
    let bodies: Vec<String> = drain(&ch, &q).await.into_iter().map(|(b, _)| b).collect();
    assert_eq!(bodies, ["0", "1", "2", "3"]);
}

#[tokio::test]
async fn recover_redelivers_unacked_messages() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    fill(&ch, &q, 2).await;
    let mut consumer = consume(&ch, &q, false).await;
    next_delivery(&mut consumer).await;
    next_delivery(&mut consumer).await;
    within(ch.basic_recover(BasicRecoverOptions { requeue: true }))
        .await
        .expect("recover-ok");
    let a = next_delivery(&mut consumer).await;
    let b = next_delivery(&mut consumer).await;
    assert_eq!((text(&a.data), a.redelivered), ("0".into(), true));
    assert_eq!((text(&b.data), b.redelivered), ("1".into(), true));
    b.acker
        .ack(BasicAckOptions { multiple: true })
        .await
        .expect("ack");
}

#[tokio::test]
async fn recover_without_requeue_closes_connection_with_540() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(1, basic::Recover { requeue: false }).await;
    assert_eq!(c.expect_close().await, (540, 60, 110));
}

#[tokio::test]
async fn unacked_messages_are_requeued_in_order_when_the_channel_closes() {
    let broker = TestBroker::start().await;
    let (conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    fill(&ch, &q, 5).await;
    let mut consumer = consume(&ch, &q, false).await;
    let mut deliveries = Vec::new();
    for _ in 0..5 {
        deliveries.push(next_delivery(&mut consumer).await);
    }
    // Ack two in the middle; the others go back where they were.
    deliveries[1]
        .acker
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    deliveries[3]
        .acker
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    within(ch.basic_cancel(consumer.tag().as_str(), Default::default()))
        .await
        .expect("cancel");
    publish(&ch, "", &q, b"5").await;
    within(ch.close(200, "bye")).await.expect("close");
    let ch = within(conn.create_channel()).await.expect("channel");
    assert_eq!(
        drain(&ch, &q).await,
        vec![
            ("0".into(), true),
            ("2".into(), true),
            ("4".into(), true),
            ("5".into(), false)
        ]
    );
}

#[tokio::test]
async fn unacked_messages_are_requeued_in_order_when_the_connection_dies() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    named_queue(&ch, "survivor").await;
    fill(&ch, "survivor", 4).await;

    let mut raw = RawClient::open(broker.addr()).await;
    raw.open_channel(1).await;
    raw.send_method(
        1,
        basic::Consume {
            queue: "survivor".try_into().expect("shortstr"),
            consumer_tag: "doomed".try_into().expect("shortstr"),
            no_local: false,
            no_ack: false,
            exclusive: false,
            no_wait: false,
            arguments: RawTable::new(),
        },
    )
    .await;
    // consume-ok and four deliveries (method, header, body each).
    let mut deliveries = 0;
    while deliveries < 4 {
        let f = raw.read_frame().await.expect("frame");
        if f.kind == FrameType::Method {
            if let Ok(Method::BasicDeliver(_)) = Method::decode(f.payload) {
                deliveries += 1;
            }
        }
    }
    drop(raw); // The TCP connection goes without a close.

    let q = "survivor";
    within(async {
        while queue_counts(&ch, q).await.0 != 4 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(drain(&ch, q).await, all(&["0", "1", "2", "3"], true));
}

#[tokio::test]
async fn unacked_messages_go_to_another_consumer_when_one_channel_closes() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let first = within(conn.create_channel()).await.expect("channel");
    let second = within(conn.create_channel()).await.expect("channel");
    let q = temp_queue(&first).await;
    within(first.basic_qos(2, BasicQosOptions::default()))
        .await
        .expect("qos");
    let mut greedy = consume(&first, &q, false).await;
    fill(&first, &q, 2).await;
    next_delivery(&mut greedy).await;
    next_delivery(&mut greedy).await;
    let mut patient = consume(&second, &q, false).await;
    assert_no_delivery(&mut patient).await;
    within(first.close(200, "bye")).await.expect("close");
    for expected in ["0", "1"] {
        let d = next_delivery(&mut patient).await;
        assert_eq!((text(&d.data), d.redelivered), (expected.into(), true));
    }
}

#[tokio::test]
async fn delivery_tags_count_up_per_channel() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    fill(&ch, &q, 3).await;
    let mut tags = Vec::new();
    for _ in 0..3 {
        tags.push(
            get(&ch, &q, false)
                .await
                .expect("get-ok")
                .delivery
                .delivery_tag,
        );
    }
    assert_eq!(tags, [1, 2, 3]);
}

#[tokio::test]
async fn basic_get_on_an_empty_queue_answers_get_empty() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        queue::Declare {
            queue: "counted-get".try_into().expect("shortstr"),
            passive: false,
            durable: false,
            exclusive: true,
            auto_delete: false,
            no_wait: true,
            arguments: RawTable::new(),
        },
    )
    .await;
    c.send_method(
        1,
        basic::Get {
            queue: "counted-get".try_into().expect("shortstr"),
            no_ack: true,
        },
    )
    .await;
    assert!(matches!(
        c.read_method().await,
        Some((1, Method::BasicGetEmpty(_)))
    ));
}
