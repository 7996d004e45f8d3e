//! Vhost and user limits over real sockets, with RabbitMQ 3.10's reply codes, texts and
//! method ids.

mod common;

use common::raw::{Handshake, Opened, RawClient};
use common::*;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::json;
use warren_codec::{channel, Method};

#[tokio::test]
async fn the_vhost_connection_limit_refuses_with_530_on_connection_open() {
    let broker = TestBroker::start().await;
    broker
        .broker()
        .set_vhost_limit("/", "max-connections", Some(&json!(1)))
        .expect("limit");
    let _first = broker.connect().await;
    let mut raw = RawClient::connect(broker.addr()).await;
    let r = raw.handshake(Handshake::default()).await;
    assert!(matches!(r, Opened::Closed(530, 10, 40)), "{r:?}");
    let err = connect_url(&broker.amqp_url())
        .await
        .expect_err("over the limit");
    assert!(
        err.to_string().contains(
            "NOT_ALLOWED - access to vhost '/' refused for user 'guest': connection limit (1) is reached"
        ),
        "{err}"
    );
    // -1 lifts it.
    broker
        .broker()
        .set_vhost_limit("/", "max-connections", Some(&json!(-1)))
        .expect("limit");
    let _second = broker.connect().await;
}

#[tokio::test]
async fn the_user_connection_limit_refuses_after_the_vhost_one() {
    let broker = TestBroker::start().await;
    broker
        .broker()
        .set_user_limit("guest", "max-connections", Some(&json!(1)))
        .expect("limit");
    let _first = broker.connect().await;
    let err = connect_url(&broker.amqp_url())
        .await
        .expect_err("over the limit");
    assert!(
        err.to_string().contains(
            "NOT_ALLOWED - connection refused for user 'guest': user connection limit (1) is reached"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn the_user_channel_limit_closes_the_connection_with_530() {
    let broker = TestBroker::start().await;
    broker
        .broker()
        .set_user_limit("guest", "max-channels", Some(&json!(2)))
        .expect("limit");
    let mut raw = RawClient::open(broker.addr()).await;
    raw.open_channel(1).await;
    raw.open_channel(2).await;
    raw.send_method(3, channel::Open {}).await;
    assert_eq!(raw.expect_close().await, (530, 0, 0));
    // Closing a channel gives its place back, on any of the user's connections.
    let mut other = RawClient::open(broker.addr()).await;
    other.open_channel(1).await;
    other.open_channel(2).await;
    other.send_method(2, channel::Close::default()).await;
    loop {
        match other.read_method().await {
            Some((2, Method::ChannelCloseOk(_))) => break,
            Some(_) => continue,
            None => panic!("connection ended"),
        }
    }
    other.open_channel(3).await;
}

#[tokio::test]
async fn the_vhost_queue_limit_refuses_new_queues_with_406() {
    let broker = TestBroker::start().await;
    broker
        .broker()
        .set_vhost_limit("/", "max-queues", Some(&json!(1)))
        .expect("limit");
    let (_conn, ch) = broker.channel().await;
    named_queue(&ch, "q1").await;
    // Redeclaring an existing queue is always allowed.
    named_queue(&ch, "q1").await;
    let err = within(ch.queue_declare("q2", QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .expect_err("over the limit");
    assert_eq!(reply_code(&err), Some(406));
    assert!(
        err.to_string().contains(
            "PRECONDITION_FAILED - cannot declare queue 'q2': queue limit in vhost '/' (1) is reached"
        ),
        "{err}"
    );
    let bad = broker
        .broker()
        .set_vhost_limit("/", "max-queues", Some(&json!("5")));
    assert_eq!(
        bad.expect_err("not a number").to_string(),
        "Validation failed\n\nmax-queues should be a number, actually was <<\"5\">>\n"
    );
}
