//! Direct reply-to: RPC replies through the `amq.rabbitmq.reply-to` pseudo-queue.

mod common;

use common::*;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

const REPLY_TO: &str = "amq.rabbitmq.reply-to";

async fn consume_replies(ch: &Channel, no_ack: bool) -> lapin::Result<lapin::Consumer> {
    within(ch.basic_consume(
        REPLY_TO,
        "",
        BasicConsumeOptions {
            no_ack,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
}

#[tokio::test]
async fn rpc_round_trip_through_direct_reply_to() {
    let broker = TestBroker::start().await;
    // The server side.
    let (_server_conn, server) = broker.channel().await;
    named_queue(&server, "rpc-requests").await;
    let mut requests = consume(&server, "rpc-requests", true).await;

    // The client side.
    let (_client_conn, client) = broker.channel().await;
    let mut replies = consume_replies(&client, true)
        .await
        .expect("consume replies");
    publish_with(
        &client,
        "",
        "rpc-requests",
        b"ping",
        BasicProperties::default()
            .with_reply_to(REPLY_TO.into())
            .with_correlation_id("c-42".into()),
    )
    .await;

    let request = next_delivery(&mut requests).await;
    assert_eq!(request.data, b"ping");
    let reply_to = request
        .properties
        .reply_to()
        .clone()
        .expect("reply_to is set")
        .to_string();
    assert!(
        reply_to.starts_with("amq.rabbitmq.reply-to.") && reply_to.len() > REPLY_TO.len() + 1,
        "the server sees a routable name, not the pseudo-queue: {reply_to}"
    );
    publish_with(
        &server,
        "",
        &reply_to,
        b"pong",
        BasicProperties::default().with_correlation_id("c-42".into()),
    )
    .await;

    let reply = next_delivery(&mut replies).await;
    assert_eq!(reply.data, b"pong");
    assert_eq!(
        reply
            .properties
            .correlation_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("c-42")
    );
}

#[tokio::test]
async fn several_requests_get_their_replies_on_one_channel() {
    let broker = TestBroker::start().await;
    let (_server_conn, server) = broker.channel().await;
    named_queue(&server, "rpc-many").await;
    let mut requests = consume(&server, "rpc-many", true).await;
    let (_client_conn, client) = broker.channel().await;
    let mut replies = consume_replies(&client, true)
        .await
        .expect("consume replies");
    for i in 0..5u8 {
        publish_with(
            &client,
            "",
            "rpc-many",
            &[i],
            BasicProperties::default().with_reply_to(REPLY_TO.into()),
        )
        .await;
    }
    for _ in 0..5 {
        let r = next_delivery(&mut requests).await;
        let to = r
            .properties
            .reply_to()
            .clone()
            .expect("reply_to")
            .to_string();
        publish(&server, "", &to, &[r.data[0] * 2]).await;
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(next_delivery(&mut replies).await.data[0]);
    }
    assert_eq!(got, [0, 2, 4, 6, 8]);
}

#[tokio::test]
async fn consuming_reply_to_without_no_ack_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    assert_eq!(code_of(consume_replies(&ch, false).await), 406);
}

#[tokio::test]
async fn consuming_reply_to_twice_on_a_channel_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    consume_replies(&ch, true).await.expect("first");
    assert_eq!(code_of(consume_replies(&ch, true).await), 406);
}

#[tokio::test]
async fn publishing_with_reply_to_without_consuming_it_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let closed = watch_close(&ch);
    let q = temp_queue(&ch).await;
    publish_with(
        &ch,
        "",
        &q,
        b"who answers?",
        BasicProperties::default().with_reply_to(REPLY_TO.into()),
    )
    .await;
    assert_eq!(closed.code().await, 406);
}

#[tokio::test]
async fn reply_consumer_on_another_channel_does_not_count() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let consuming = within(conn.create_channel()).await.expect("channel");
    let publishing = within(conn.create_channel()).await.expect("channel");
    let closed = watch_close(&publishing);
    consume_replies(&consuming, true).await.expect("consume");
    let q = temp_queue(&publishing).await;
    publish_with(
        &publishing,
        "",
        &q,
        b"x",
        BasicProperties::default().with_reply_to(REPLY_TO.into()),
    )
    .await;
    assert_eq!(closed.code().await, 406);
}

#[tokio::test]
async fn replies_after_the_client_is_gone_are_dropped() {
    let broker = TestBroker::start().await;
    let (_server_conn, server) = broker.channel().await;
    named_queue(&server, "rpc-gone").await;
    let mut requests = consume(&server, "rpc-gone", true).await;
    let (client_conn, client) = broker.channel().await;
    let replies = consume_replies(&client, true).await.expect("consume");
    publish_with(
        &client,
        "",
        "rpc-gone",
        b"ping",
        BasicProperties::default().with_reply_to(REPLY_TO.into()),
    )
    .await;
    let request = next_delivery(&mut requests).await;
    within(client.basic_cancel(replies.tag().as_str(), BasicCancelOptions::default()))
        .await
        .expect("cancel");
    within(client_conn.close(200, "bye")).await.expect("close");
    let to = request
        .properties
        .reply_to()
        .clone()
        .expect("reply_to")
        .to_string();
    publish(&server, "", &to, b"pong").await;
    // Nothing breaks on the server's channel.
    temp_queue(&server).await;
}
