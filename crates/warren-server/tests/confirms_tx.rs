//! Publisher confirms and transactions, and the rules for mixing them.

mod common;

use bytes::BytesMut;
use common::raw::RawClient;
use common::*;
use lapin::options::{
    BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use warren_codec::{basic, confirm, frame, tx, FrameType, Method, ShortString};

async fn confirm_mode(ch: &Channel) {
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .expect("confirm.select");
}

async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    key: &str,
    mandatory: bool,
    body: &[u8],
) -> Confirmation {
    let confirm = within(ch.basic_publish(
        exchange,
        key,
        BasicPublishOptions {
            mandatory,
            ..Default::default()
        },
        body,
        BasicProperties::default(),
    ))
    .await
    .expect("publish");
    within(confirm).await.expect("confirmation")
}

async fn tx_select(ch: &Channel) {
    within(ch.tx_select()).await.expect("tx.select");
}

#[tokio::test]
async fn confirm_select_acks_every_publish() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    confirm_mode(&ch).await;
    let mut pending = Vec::new();
    for i in 0..100u32 {
        let key = if i % 2 == 0 { q.as_str() } else { "nowhere" };
        pending.push(
            within(ch.basic_publish(
                "",
                key,
                BasicPublishOptions::default(),
                &i.to_be_bytes(),
                BasicProperties::default(),
            ))
            .await
            .expect("publish"),
        );
    }
    for p in pending {
        assert_eq!(
            within(p).await.expect("confirmation"),
            Confirmation::Ack(None)
        );
    }
    assert_eq!(queue_counts(&ch, &q).await.0, 50);
}

#[tokio::test]
async fn unroutable_publish_is_acked_too() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    confirm_mode(&ch).await;
    let c = publish_confirmed(&ch, "amq.direct", "nobody", false, b"x").await;
    assert_eq!(c, Confirmation::Ack(None));
}

#[tokio::test]
async fn mandatory_unroutable_publish_is_returned_then_acked() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    confirm_mode(&ch).await;
    let c = publish_confirmed(&ch, "amq.direct", "nobody", true, b"bounce").await;
    // lapin attaches a return that arrived before the ack to that ack.
    let Confirmation::Ack(Some(returned)) = c else {
        panic!("expected an ack carrying the returned message, got {c:?}");
    };
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.delivery.data, b"bounce");
}

#[tokio::test]
async fn return_frames_come_before_the_ack_on_the_wire() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(1, confirm::Select { nowait: false }).await;
    assert!(matches!(
        c.read_method().await,
        Some((1, Method::ConfirmSelectOk(_)))
    ));
    c.send_method(
        1,
        basic::Publish {
            exchange: ShortString::from_static("amq.direct"),
            routing_key: ShortString::from_static("nobody"),
            mandatory: true,
            immediate: false,
        },
    )
    .await;
    let mut buf = BytesMut::new();
    frame::write_content_header(&mut buf, 1, 60, 3, &[0, 0]);
    frame::write_frame(&mut buf, FrameType::Body, 1, b"abc");
    c.send_bytes(&buf).await;

    match c.read_method().await {
        Some((1, Method::BasicReturn(r))) => {
            assert_eq!(r.reply_code, 312);
            assert_eq!(r.reply_text.as_str(), "NO_ROUTE");
        }
        other => panic!("expected basic.return, got {other:?}"),
    }
    let header = c.read_frame().await.expect("content header");
    assert_eq!(header.kind, FrameType::Header);
    let body = c.read_frame().await.expect("content body");
    assert_eq!(
        (body.kind, &body.payload[..]),
        (FrameType::Body, &b"abc"[..])
    );
    match c.read_method().await {
        Some((1, Method::BasicAck(a))) => assert_eq!(a.delivery_tag, 1),
        other => panic!("expected basic.ack, got {other:?}"),
    }
}

#[tokio::test]
async fn confirm_sequence_numbers_count_from_one_per_channel() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(1, confirm::Select { nowait: true }).await;
    let publish = basic::Publish {
        exchange: ShortString::empty(),
        routing_key: ShortString::from_static("nowhere"),
        mandatory: false,
        immediate: false,
    };
    let mut acked = 0;
    for n in 1..=3u64 {
        c.send_method(1, publish.clone()).await;
        c.send_content_header(1, 0).await;
        // Acks may cover several publishes (multiple); wait until this one is covered.
        while acked < n {
            match c.read_method().await {
                Some((1, Method::BasicAck(a))) => {
                    assert!(a.delivery_tag <= n && (a.multiple || a.delivery_tag == acked + 1));
                    acked = a.delivery_tag;
                }
                other => panic!("expected basic.ack, got {other:?}"),
            }
        }
    }
    assert_eq!(acked, 3);
}

#[tokio::test]
async fn publish_to_missing_exchange_in_confirm_mode_closes_channel_with_404() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    confirm_mode(&ch).await;
    let confirm = within(ch.basic_publish(
        "no-such-exchange",
        "k",
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default(),
    ))
    .await
    .expect("publish sent");
    assert_eq!(code_of(within(confirm).await), 404);
}

#[tokio::test]
async fn wait_for_confirms_returns_once_everything_is_acked() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    confirm_mode(&ch).await;
    for _ in 0..20 {
        publish(&ch, "", &q, b"x").await;
    }
    let returned = within(ch.wait_for_confirms()).await.expect("all confirmed");
    assert!(returned.is_empty());
    assert_eq!(queue_counts(&ch, &q).await.0, 20);
}

#[tokio::test]
async fn confirm_select_after_tx_select_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    tx_select(&ch).await;
    let r = within(ch.confirm_select(ConfirmSelectOptions::default())).await;
    assert_eq!(code_of(r), 406);
}

#[tokio::test]
async fn tx_select_after_confirm_select_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    confirm_mode(&ch).await;
    let r = within(ch.tx_select()).await;
    assert_eq!(code_of(r), 406);
}

#[tokio::test]
async fn tx_commit_without_tx_select_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    assert_eq!(code_of(within(ch.tx_commit()).await), 406);
    let ch = within(conn.create_channel()).await.expect("channel");
    assert_eq!(code_of(within(ch.tx_rollback()).await), 406);
}

#[tokio::test]
async fn mode_errors_name_the_method_in_the_close() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(1, tx::Commit {}).await;
    assert_eq!(c.expect_channel_close(1).await, (406, 90, 20));
}

#[tokio::test]
async fn tx_publish_is_not_visible_until_commit() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    tx_select(&ch).await;
    publish(&ch, "", &q, b"a").await;
    publish(&ch, "", &q, b"b").await;
    assert_eq!(queue_counts(&ch, &q).await.0, 0);
    within(ch.tx_commit()).await.expect("commit");
    assert_eq!(queue_counts(&ch, &q).await.0, 2);
    // The channel stays transactional: the next publish waits for the next commit.
    publish(&ch, "", &q, b"c").await;
    assert_eq!(queue_counts(&ch, &q).await.0, 2);
    within(ch.tx_commit()).await.expect("commit");
    assert_eq!(queue_counts(&ch, &q).await.0, 3);
}

#[tokio::test]
async fn tx_rollback_discards_publishes() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    tx_select(&ch).await;
    publish(&ch, "", &q, b"a").await;
    within(ch.tx_rollback()).await.expect("rollback");
    within(ch.tx_commit()).await.expect("commit of nothing");
    assert_eq!(queue_counts(&ch, &q).await.0, 0);
}

#[tokio::test]
async fn tx_acks_are_applied_at_commit() {
    let broker = TestBroker::start().await;
    let (conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    for b in [b"a", b"b"] {
        publish(&ch, "", &q, b).await;
    }
    let tx_ch = within(conn.create_channel()).await.expect("channel");
    tx_select(&tx_ch).await;
    let a = get(&tx_ch, &q, false).await.expect("a");
    let b = get(&tx_ch, &q, false).await.expect("b");
    a.delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .expect("ack a");
    within(tx_ch.tx_commit()).await.expect("commit");
    b.delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .expect("ack b");
    // b's ack is not committed: closing the channel returns b (and only b) to the queue.
    within(tx_ch.close(200, "bye")).await.expect("close");
    let left = get(&ch, &q, true).await.expect("b is back");
    assert_eq!(
        (left.delivery.data.as_slice(), left.delivery.redelivered),
        (&b"b"[..], true)
    );
    assert!(get(&ch, &q, true).await.is_none());
}

#[tokio::test]
async fn tx_rollback_makes_acked_messages_unacked_again() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    publish(&ch, "", &q, b"a").await;
    tx_select(&ch).await;
    let a = get(&ch, &q, false).await.expect("a");
    let tag = a.delivery.delivery_tag;
    within(ch.basic_ack(tag, BasicAckOptions::default()))
        .await
        .expect("ack");
    within(ch.tx_rollback()).await.expect("rollback");
    // Unacked again, so it can be acked again, and the commit settles it.
    within(ch.basic_ack(tag, BasicAckOptions::default()))
        .await
        .expect("ack");
    within(ch.tx_commit()).await.expect("commit");
    assert!(get(&ch, &q, true).await.is_none());
}

#[tokio::test]
async fn double_ack_in_a_transaction_closes_channel_with_406_at_once() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    let q = ShortString::from_static("tx-double-ack");
    c.send_method(
        1,
        warren_codec::queue::Declare {
            queue: q.clone(),
            passive: false,
            durable: false,
            exclusive: true,
            auto_delete: false,
            no_wait: true,
            arguments: warren_codec::FieldTable::new(),
        },
    )
    .await;
    c.send_method(
        1,
        basic::Publish {
            exchange: ShortString::empty(),
            routing_key: q.clone(),
            mandatory: false,
            immediate: false,
        },
    )
    .await;
    c.send_content_header(1, 0).await;
    c.send_method(1, tx::Select {}).await;
    assert!(matches!(
        c.read_method().await,
        Some((1, Method::TxSelectOk(_)))
    ));
    c.send_method(
        1,
        basic::Get {
            queue: q,
            no_ack: false,
        },
    )
    .await;
    let tag = match c.read_method().await {
        Some((1, Method::BasicGetOk(g))) => g.delivery_tag,
        other => panic!("expected get-ok, got {other:?}"),
    };
    c.read_frame().await.expect("content header");
    let ack = basic::Ack {
        delivery_tag: tag,
        multiple: false,
    };
    c.send_method(1, ack.clone()).await;
    c.send_method(1, ack).await;
    assert_eq!(c.expect_channel_close(1).await, (406, 60, 80));
}

#[tokio::test]
async fn tx_mandatory_unroutable_publish_is_returned_at_commit() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    tx_select(&ch).await;
    within(ch.basic_publish(
        "amq.direct",
        "nobody",
        BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        },
        b"back",
        BasicProperties::default(),
    ))
    .await
    .expect("publish");
    within(ch.tx_commit()).await.expect("commit");
    within(ch.queue_declare("", QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .expect("round trip");
    let returned = within(ch.wait_for_confirms()).await.expect("returns");
    assert_eq!(returned.len(), 1);
    assert_eq!(returned[0].reply_code, 312);
}

#[tokio::test]
async fn tx_publish_to_missing_exchange_closes_channel_with_404_before_commit() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    tx_select(&ch).await;
    // The close may reach lapin before or after it sends tx.commit: watch for it directly.
    let closed = watch_close(&ch);
    publish(&ch, "no-such-exchange", "k", b"x").await;
    let _ = within(ch.tx_commit()).await;
    assert_eq!(closed.code().await, 404);
}
