//! Queue and consumer arguments RabbitMQ checks at declare time: wrong types and values are
//! refused with 406 and RabbitMQ's own words (texts checked against RabbitMQ 3.10).

mod common;

use common::*;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;
use warren_broker::Permission;

fn int(v: i32) -> AMQPValue {
    AMQPValue::LongInt(v)
}

/// The reply code and text of a declare expected to fail.
async fn declare_error(ch: &Channel, name: &str, durable: bool, a: FieldTable) -> (u16, String) {
    let r = within(ch.queue_declare(
        name,
        QueueDeclareOptions {
            durable,
            ..Default::default()
        },
        a,
    ))
    .await;
    match r {
        Err(lapin::Error::ProtocolError(e)) => (e.get_id(), e.get_message().to_string()),
        other => panic!("expected a channel error, got {other:?}"),
    }
}

async fn declares_ok(ch: &Channel, name: &str, durable: bool, a: FieldTable) {
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

#[tokio::test]
async fn wrong_argument_types_and_values_close_the_channel_with_rabbitmqs_text() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let cases: Vec<(FieldTable, &str)> = vec![
        (
            args(&[("x-message-ttl", text("abc"))]),
            "invalid arg 'x-message-ttl' for queue 'q' in vhost '/': \"expected integer, got longstr\"",
        ),
        (
            args(&[("x-message-ttl", int(-1))]),
            "invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}",
        ),
        (
            args(&[("x-message-ttl", AMQPValue::LongLongInt(315_360_000_001))]),
            "invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_too_large,315360000001}",
        ),
        (
            args(&[("x-message-ttl", AMQPValue::Boolean(true))]),
            "invalid arg 'x-message-ttl' for queue 'q' in vhost '/': \"expected integer, got bool\"",
        ),
        (
            args(&[("x-expires", int(0))]),
            "invalid arg 'x-expires' for queue 'q' in vhost '/': {value_zero,0}",
        ),
        (
            args(&[("x-max-length", int(-1))]),
            "invalid arg 'x-max-length' for queue 'q' in vhost '/': {value_negative,-1}",
        ),
        (
            args(&[("x-max-length-bytes", text("x"))]),
            "invalid arg 'x-max-length-bytes' for queue 'q' in vhost '/': \"expected integer, got longstr\"",
        ),
        (
            args(&[("x-overflow", text("foo"))]),
            "invalid arg 'x-overflow' for queue 'q' in vhost '/': invalid_overflow",
        ),
        (
            args(&[("x-overflow", int(1))]),
            "invalid arg 'x-overflow' for queue 'q' in vhost '/': {unacceptable_type,signedint}",
        ),
        (
            args(&[("x-dead-letter-exchange", int(1))]),
            "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'",
        ),
        (
            args(&[("x-dead-letter-routing-key", text("k"))]),
            "invalid arg 'x-dead-letter-routing-key' for queue 'q' in vhost '/': routing_key_but_no_dlx_defined",
        ),
        (
            args(&[("x-max-priority", int(256))]),
            "invalid arg 'x-max-priority' for queue 'q' in vhost '/': {max_value_exceeded,256}",
        ),
        (
            args(&[("x-single-active-consumer", int(1))]),
            "invalid arg 'x-single-active-consumer' for queue 'q' in vhost '/': {unacceptable_type,signedint}",
        ),
        (
            args(&[("x-delivery-limit", int(3))]),
            "invalid arg 'x-delivery-limit' for queue 'q' in vhost '/' of queue type rabbit_classic_queue",
        ),
    ];
    for (a, expected) in cases {
        let ch = within(conn.create_channel()).await.expect("channel");
        let (code, reply) = declare_error(&ch, "q", false, a).await;
        assert_eq!(code, 406, "{reply}");
        assert_eq!(reply, format!("PRECONDITION_FAILED - {expected}"));
    }
}

#[tokio::test]
async fn quorum_queues_refuse_priorities_and_accept_a_delivery_limit() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declares_ok(
        &ch,
        "qq",
        true,
        args(&[
            ("x-queue-type", text("quorum")),
            ("x-delivery-limit", int(3)),
        ]),
    )
    .await;
    let (code, reply) = declare_error(
        &ch,
        "qq2",
        true,
        args(&[
            ("x-queue-type", text("quorum")),
            ("x-max-priority", text("x")),
        ]),
    )
    .await;
    assert_eq!(code, 406);
    assert_eq!(
        reply,
        "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'qq2' in vhost '/' of queue \
         type rabbit_quorum_queue"
    );
}

#[tokio::test]
async fn server_named_queues_are_checked_too() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let (code, reply) = declare_error(&ch, "", false, args(&[("x-expires", int(-5))])).await;
    assert_eq!(code, 406);
    assert!(reply.ends_with("{value_negative,-5}"), "{reply}");
}

#[tokio::test]
async fn valid_and_unknown_arguments_are_accepted() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declares_ok(
        &ch,
        "all-good",
        false,
        args(&[
            ("x-message-ttl", int(0)),
            ("x-expires", int(60_000)),
            ("x-max-length", int(0)),
            ("x-max-length-bytes", AMQPValue::LongLongInt(1 << 40)),
            ("x-overflow", text("reject-publish-dlx")),
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text("dead")),
            ("x-max-priority", int(255)),
            ("x-single-active-consumer", AMQPValue::Boolean(true)),
            ("x-consumer-timeout", int(1000)),
            ("x-queue-mode", text("lazy")),
            ("x-something-else", text("whatever")),
        ]),
    )
    .await;
}

#[tokio::test]
async fn a_redeclare_is_compared_not_revalidated() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declares_ok(&ch, "cmp", false, args(&[("x-message-ttl", int(10))])).await;
    let (code, reply) = declare_error(&ch, "cmp", false, args(&[("x-message-ttl", int(-1))])).await;
    assert_eq!(code, 406);
    assert!(
        reply.contains("inequivalent arg 'x-message-ttl'"),
        "{reply}"
    );
}

#[tokio::test]
async fn consumer_priority_must_be_an_integer() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    named_queue(&ch, "cq").await;
    let r = within(ch.basic_consume(
        "cq",
        "",
        BasicConsumeOptions::default(),
        args(&[("x-priority", text("high"))]),
    ))
    .await;
    match r {
        Err(lapin::Error::ProtocolError(e)) => {
            assert_eq!(e.get_id(), 406);
            assert_eq!(
                e.get_message().as_str(),
                "PRECONDITION_FAILED - invalid arg 'x-priority' for queue 'cq' in vhost '/': \
                 \"expected integer, got longstr\""
            );
        }
        other => panic!("expected a 406, got {other:?}"),
    }
}

#[tokio::test]
async fn a_dead_letter_exchange_needs_write_access_to_it() {
    let broker = TestBroker::start().await;
    broker.add_user("limited", "pw", None);
    broker
        .broker()
        .set_permission(
            "limited",
            "/",
            Permission::new(".*", "^ok", ".*").expect("permission"),
        )
        .expect("set permission");
    let conn = connect_url(&broker.url_for("limited", "pw", "/"))
        .await
        .expect("connect");
    let ch = within(conn.create_channel()).await.expect("channel");
    let (code, reply) = declare_error(
        &ch,
        "with-dlx",
        false,
        args(&[("x-dead-letter-exchange", text("forbidden-dlx"))]),
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        reply,
        "ACCESS_REFUSED - write access to exchange 'forbidden-dlx' in vhost '/' refused for user \
         'limited'"
    );
}
