//! Length limits: `x-max-length`, `x-max-length-bytes`, and `x-overflow` = drop-head (the
//! default; dropped heads are dead-lettered with reason maxlen), reject-publish (a confirming
//! publisher gets `basic.nack`) and reject-publish-dlx (the refused message is dead-lettered).

mod common;

use common::*;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};

fn int(v: i32) -> AMQPValue {
    AMQPValue::LongInt(v)
}

async fn declare(ch: &Channel, name: &str, a: FieldTable) {
    within(ch.queue_declare(name, QueueDeclareOptions::default(), a))
        .await
        .expect("declare");
}

async fn drain(ch: &Channel, queue: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(m) = get(ch, queue, true).await {
        out.push(m.delivery.data);
    }
    out
}

/// Publishes with confirms on; true when acked, false when nacked.
async fn confirmed(ch: &Channel, queue: &str, body: &[u8]) -> bool {
    let c = within(ch.basic_publish(
        "",
        queue,
        BasicPublishOptions::default(),
        body,
        BasicProperties::default(),
    ))
    .await
    .expect("publish");
    match within(c).await.expect("confirm") {
        Confirmation::Ack(_) => true,
        Confirmation::Nack(_) => false,
        Confirmation::NotRequested => panic!("confirms are on"),
    }
}

async fn confirming_channel(broker: &TestBroker) -> (lapin::Connection, Channel) {
    let (conn, ch) = broker.channel().await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .expect("confirm.select");
    (conn, ch)
}

#[tokio::test]
async fn max_length_drops_the_oldest_messages() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "three", args(&[("x-max-length", int(3))])).await;
    for i in 1..=5u8 {
        publish(&ch, "", "three", &[i]).await;
    }
    assert_eq!(queue_counts(&ch, "three").await.0, 3);
    assert_eq!(drain(&ch, "three").await, [vec![3], vec![4], vec![5]]);
}

#[tokio::test]
async fn max_length_bytes_counts_bodies() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "bytes", args(&[("x-max-length-bytes", int(25))])).await;
    for i in 0..4u8 {
        publish(&ch, "", "bytes", &[i; 10]).await;
    }
    // 20 bytes fit, a third 10-byte body would not.
    assert_eq!(drain(&ch, "bytes").await, [vec![2; 10], vec![3; 10]]);
}

#[tokio::test]
async fn dropped_heads_are_dead_lettered_with_reason_maxlen() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "overflowed", FieldTable::default()).await;
    declare(
        &ch,
        "capped",
        args(&[
            ("x-max-length", int(1)),
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text("overflowed")),
        ]),
    )
    .await;
    publish(&ch, "", "capped", b"first").await;
    publish(&ch, "", "capped", b"second").await;
    let m = {
        assert_eq!(queue_counts(&ch, "overflowed").await.0, 1);
        get(&ch, "overflowed", true)
            .await
            .expect("dead-lettered head")
    };
    assert_eq!(m.delivery.data, b"first");
    let q = broker.broker().vhost("/").unwrap().queue("capped").unwrap();
    assert_eq!(q.counts().messages, 1);
    let headers = m.delivery.properties.headers().clone().expect("headers");
    match headers.inner().get("x-first-death-reason") {
        Some(AMQPValue::LongString(r)) => assert_eq!(r.to_string(), "maxlen"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn reject_publish_nacks_the_publisher_and_keeps_the_queue() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = confirming_channel(&broker).await;
    declare(
        &ch,
        "full",
        args(&[
            ("x-max-length", int(2)),
            ("x-overflow", text("reject-publish")),
        ]),
    )
    .await;
    assert!(confirmed(&ch, "full", b"1").await);
    assert!(confirmed(&ch, "full", b"2").await);
    assert!(!confirmed(&ch, "full", b"3").await, "nacked when full");
    assert_eq!(drain(&ch, "full").await, [b"1".to_vec(), b"2".to_vec()]);
    // Room again: accepted again.
    assert!(confirmed(&ch, "full", b"4").await);
}

#[tokio::test]
async fn reject_publish_dlx_also_dead_letters_the_refused_message() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = confirming_channel(&broker).await;
    declare(&ch, "refused", FieldTable::default()).await;
    declare(
        &ch,
        "strict",
        args(&[
            ("x-max-length", int(1)),
            ("x-overflow", text("reject-publish-dlx")),
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text("refused")),
        ]),
    )
    .await;
    assert!(confirmed(&ch, "strict", b"kept").await);
    assert!(!confirmed(&ch, "strict", b"refused").await);
    assert_eq!(drain(&ch, "strict").await, [b"kept".to_vec()]);
    let m = get(&ch, "refused", true).await.expect("dead-lettered");
    assert_eq!(m.delivery.data, b"refused");
    let h = m.delivery.properties.headers().clone().expect("headers");
    let Some(AMQPValue::FieldArray(deaths)) = h.inner().get("x-death").cloned() else {
        panic!("x-death");
    };
    let Some(AMQPValue::FieldTable(d)) = deaths.as_slice().first().cloned() else {
        panic!("entry");
    };
    assert_eq!(
        d.inner().get("reason"),
        Some(&AMQPValue::LongString("maxlen".into()))
    );
}

#[tokio::test]
async fn a_nack_does_not_hide_the_acks_around_it() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = confirming_channel(&broker).await;
    declare(
        &ch,
        "one",
        args(&[
            ("x-max-length", int(1)),
            ("x-overflow", text("reject-publish")),
        ]),
    )
    .await;
    declare(&ch, "free", FieldTable::default()).await;
    // Publish without waiting, then collect the confirmations in order.
    let mut pending = Vec::new();
    for (q, body) in [
        ("one", "a"),
        ("one", "b"),
        ("free", "c"),
        ("one", "d"),
        ("free", "e"),
    ] {
        pending.push(
            within(ch.basic_publish(
                "",
                q,
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            ))
            .await
            .expect("publish"),
        );
    }
    let mut outcome = Vec::new();
    for c in pending {
        outcome.push(matches!(
            within(c).await.expect("confirm"),
            Confirmation::Ack(_)
        ));
    }
    assert_eq!(outcome, [true, false, true, false, true]);
}

#[tokio::test]
async fn a_message_refused_by_one_queue_is_nacked_but_kept_by_the_others() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = confirming_channel(&broker).await;
    declare(
        &ch,
        "tight",
        args(&[
            ("x-max-length", int(0)),
            ("x-overflow", text("reject-publish")),
        ]),
    )
    .await;
    declare(&ch, "roomy", FieldTable::default()).await;
    for q in ["tight", "roomy"] {
        within(ch.queue_bind(
            q,
            "amq.fanout",
            "",
            Default::default(),
            FieldTable::default(),
        ))
        .await
        .expect("bind");
    }
    let c = within(ch.basic_publish(
        "amq.fanout",
        "",
        BasicPublishOptions::default(),
        b"m",
        BasicProperties::default(),
    ))
    .await
    .expect("publish");
    assert!(matches!(
        within(c).await.expect("confirm"),
        Confirmation::Nack(_)
    ));
    assert_eq!(queue_counts(&ch, "roomy").await.0, 1);
    assert_eq!(queue_counts(&ch, "tight").await.0, 0);
}

#[tokio::test]
async fn a_consumer_that_can_take_it_gets_a_message_a_full_queue_would_drop() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "zero", args(&[("x-max-length", int(0))])).await;
    publish(&ch, "", "zero", b"dropped").await;
    assert_eq!(queue_counts(&ch, "zero").await.0, 0);
    let mut c = consume(&ch, "zero", true).await;
    publish(&ch, "", "zero", b"delivered").await;
    assert_eq!(next_delivery(&mut c).await.data, b"delivered");
}

#[tokio::test]
async fn unacknowledged_messages_do_not_count_against_the_limit() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = confirming_channel(&broker).await;
    declare(
        &ch,
        "unacked",
        args(&[
            ("x-max-length", int(1)),
            ("x-overflow", text("reject-publish")),
        ]),
    )
    .await;
    assert!(confirmed(&ch, "unacked", b"1").await);
    let _held = get(&ch, "unacked", false).await.expect("held unacked");
    assert!(confirmed(&ch, "unacked", b"2").await);
    assert!(!confirmed(&ch, "unacked", b"3").await);
}

#[tokio::test]
async fn limits_apply_to_a_priority_queue_from_its_highest_priority() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declare(
        &ch,
        "pq-capped",
        args(&[("x-max-length", int(2)), ("x-max-priority", int(5))]),
    )
    .await;
    for (p, body) in [(1u8, "low"), (5, "high"), (1, "low2")] {
        publish_with(
            &ch,
            "",
            "pq-capped",
            body.as_bytes(),
            BasicProperties::default().with_priority(p),
        )
        .await;
    }
    // RabbitMQ drops the head, which in a priority queue is the highest priority.
    assert_eq!(
        drain(&ch, "pq-capped").await,
        [b"low".to_vec(), b"low2".to_vec()]
    );
}

#[tokio::test]
async fn length_limit_of_a_durable_queue_holds_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::start_durable(dir.path()).await;
    let persistent = BasicProperties::default().with_delivery_mode(2);
    {
        let (conn, ch) = broker.channel().await;
        within(ch.queue_declare(
            "capped-durable",
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args(&[("x-max-length", int(2))]),
        ))
        .await
        .expect("declare");
        within(ch.confirm_select(ConfirmSelectOptions::default()))
            .await
            .expect("confirms");
        for body in [&b"1"[..], b"2", b"3"] {
            let confirm = within(ch.basic_publish(
                "",
                "capped-durable",
                BasicPublishOptions::default(),
                body,
                persistent.clone(),
            ))
            .await
            .expect("publish");
            within(confirm).await.expect("confirmed");
        }
        let _ = conn.close(200, "bye").await;
    }
    let broker = broker.restart().await;
    let (_conn, ch) = broker.channel().await;
    // The dropped head stays dropped; the limit still applies to new publishes.
    let confirm = within(ch.basic_publish(
        "",
        "capped-durable",
        BasicPublishOptions::default(),
        b"4",
        persistent,
    ))
    .await
    .expect("publish");
    within(confirm).await.expect("published");
    assert_eq!(
        drain(&ch, "capped-durable").await,
        vec![b"3".to_vec(), b"4".to_vec()]
    );
}
