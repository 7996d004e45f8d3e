//! Queues: declaring (server-named, passive, flags, arguments), exclusivity, auto-delete,
//! counts, purge, delete, bindings, and the "last declared queue" shortcut.

mod common;

use common::*;
use lapin::options::{
    BasicCancelOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;

async fn declare(
    ch: &Channel,
    name: &str,
    options: QueueDeclareOptions,
    arguments: FieldTable,
) -> lapin::Result<lapin::Queue> {
    within(ch.queue_declare(name, options, arguments)).await
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn server_named_queue_gets_an_amq_gen_name() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let a = temp_queue(&ch).await;
    let b = temp_queue(&ch).await;
    assert!(a.starts_with("amq.gen-"), "{a}");
    assert_ne!(a, b);
    // Reachable through the default exchange by that name.
    publish(&ch, "", &a, b"hi").await;
    assert_eq!(
        get(&ch, &a, true).await.expect("message").delivery.data,
        b"hi"
    );
}

#[tokio::test]
async fn passive_declare_finds_an_existing_queue() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    named_queue(&ch, "present").await;
    let q = declare(&ch, "present", passive(), FieldTable::default())
        .await
        .expect("passive declare");
    assert_eq!(q.name().as_str(), "present");
}

#[tokio::test]
async fn passive_declare_of_missing_queue_closes_channel_with_404() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let r = declare(&ch, "absent", passive(), FieldTable::default()).await;
    assert_eq!(code_of(r), 404);
}

#[tokio::test]
async fn passive_declare_with_empty_name_closes_channel_with_404() {
    // As RabbitMQ: the "last declared queue" shortcut does not apply to a passive declare.
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    named_queue(&ch, "declared-before").await;
    let r = declare(&ch, "", passive(), FieldTable::default()).await;
    assert_eq!(code_of(r), 404);
}

#[tokio::test]
async fn declare_with_amq_prefix_closes_channel_with_403() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let r = declare(
        &ch,
        "amq.mine",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await;
    assert_eq!(code_of(r), 403);
}

#[tokio::test]
async fn redeclare_with_same_flags_and_arguments_is_ok() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let opts = QueueDeclareOptions {
        durable: true,
        auto_delete: true,
        ..Default::default()
    };
    let a = args(&[("x-max-length", AMQPValue::LongInt(10))]);
    declare(&ch, "stable", opts, a.clone())
        .await
        .expect("declare");
    declare(&ch, "stable", opts, a).await.expect("redeclare");
}

#[tokio::test]
async fn redeclare_with_other_durability_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    named_queue(&ch, "not-durable").await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let r = declare(&ch, "not-durable", durable, FieldTable::default()).await;
    assert_eq!(code_of(r), 406);
}

#[tokio::test]
async fn redeclare_with_other_auto_delete_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    named_queue(&ch, "kept").await;
    let auto = QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    let r = declare(&ch, "kept", auto, FieldTable::default()).await;
    assert_eq!(code_of(r), 406);
}

#[tokio::test]
async fn redeclare_with_other_exclusivity_closes_channel_with_405() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    named_queue(&ch, "shared").await;
    let r = declare(&ch, "shared", exclusive(), FieldTable::default()).await;
    assert_eq!(code_of(r), 405);
}

#[tokio::test]
async fn exclusive_queue_is_transient_whatever_durable_says() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let durable_exclusive = QueueDeclareOptions {
        durable: true,
        exclusive: true,
        ..Default::default()
    };
    declare(
        &ch,
        "transient-anyway",
        durable_exclusive,
        FieldTable::default(),
    )
    .await
    .expect("declare");
    declare(&ch, "transient-anyway", exclusive(), FieldTable::default())
        .await
        .expect("durable is not compared for exclusive queues");
    let vhost = broker.broker().vhost("/").expect("default vhost");
    assert!(!vhost.queue("transient-anyway").expect("queue").durable);
}

#[tokio::test]
async fn redeclare_with_other_known_argument_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    let ttl = |ms| args(&[("x-message-ttl", AMQPValue::LongInt(ms))]);
    declare(&ch, "ttl", QueueDeclareOptions::default(), ttl(1000))
        .await
        .expect("declare");
    let r = declare(&ch, "ttl", QueueDeclareOptions::default(), ttl(2000)).await;
    assert_eq!(code_of(r), 406);
    // Leaving the argument out is a difference too.
    let ch = within(conn.create_channel()).await.expect("channel");
    let r = declare(
        &ch,
        "ttl",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await;
    assert_eq!(code_of(r), 406);
    // Another integer width with the same value is the same.
    let ch = within(conn.create_channel()).await.expect("channel");
    declare(
        &ch,
        "ttl",
        QueueDeclareOptions::default(),
        args(&[("x-message-ttl", AMQPValue::LongLongInt(1000))]),
    )
    .await
    .expect("same value, wider type");
}

#[tokio::test]
async fn redeclare_with_other_unknown_argument_is_ok() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declare(
        &ch,
        "custom",
        QueueDeclareOptions::default(),
        args(&[("x-mine", text("a"))]),
    )
    .await
    .expect("declare");
    declare(
        &ch,
        "custom",
        QueueDeclareOptions::default(),
        args(&[("x-mine", text("b"))]),
    )
    .await
    .expect("unknown arguments are not compared");
}

#[tokio::test]
async fn quorum_queue_type_is_accepted() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let quorum = args(&[("x-queue-type", text("quorum"))]);
    declare(&ch, "replicated", durable, quorum.clone())
        .await
        .expect("declare a quorum queue");
    declare(&ch, "replicated", durable, quorum)
        .await
        .expect("redeclare");
    publish(&ch, "", "replicated", b"q").await;
    assert_eq!(
        get(&ch, "replicated", true)
            .await
            .expect("message")
            .delivery
            .data,
        b"q"
    );
}

#[tokio::test]
async fn classic_queue_type_equals_no_queue_type() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declare(
        &ch,
        "plain",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("declare");
    declare(
        &ch,
        "plain",
        QueueDeclareOptions::default(),
        args(&[("x-queue-type", text("classic"))]),
    )
    .await
    .expect("classic is the default");
}

#[tokio::test]
async fn non_durable_quorum_queue_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let r = declare(
        &ch,
        "fragile",
        QueueDeclareOptions::default(),
        args(&[("x-queue-type", text("quorum"))]),
    )
    .await;
    assert_eq!(code_of(r), 406);
}

#[tokio::test]
async fn exclusive_or_auto_delete_quorum_queue_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    for opts in [
        QueueDeclareOptions {
            durable: true,
            exclusive: true,
            ..Default::default()
        },
        QueueDeclareOptions {
            durable: true,
            auto_delete: true,
            ..Default::default()
        },
    ] {
        let ch = within(conn.create_channel()).await.expect("channel");
        let r = declare(
            &ch,
            "odd-quorum",
            opts,
            args(&[("x-queue-type", text("quorum"))]),
        )
        .await;
        assert_eq!(code_of(r), 406, "{opts:?}");
    }
}

#[tokio::test]
async fn unknown_queue_type_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let r = declare(
        &ch,
        "typed",
        durable,
        args(&[("x-queue-type", text("nope"))]),
    )
    .await;
    assert_eq!(code_of(r), 406);
}

#[tokio::test]
async fn exclusive_queue_used_from_another_connection_closes_channel_with_405() {
    let broker = TestBroker::start().await;
    let (_owner, ch) = broker.channel().await;
    declare(&ch, "private", exclusive(), FieldTable::default())
        .await
        .expect("declare");
    let other = broker.connect().await;

    let ch = within(other.create_channel()).await.expect("channel");
    assert_eq!(
        code_of(declare(&ch, "private", exclusive(), FieldTable::default()).await),
        405
    );
    let ch = within(other.create_channel()).await.expect("channel");
    assert_eq!(
        code_of(declare(&ch, "private", passive(), FieldTable::default()).await),
        405
    );
    let ch = within(other.create_channel()).await.expect("channel");
    let r =
        within(ch.basic_consume("private", "", Default::default(), FieldTable::default())).await;
    assert_eq!(code_of(r), 405);
    let ch = within(other.create_channel()).await.expect("channel");
    let r = within(ch.basic_get("private", Default::default())).await;
    assert_eq!(code_of(r), 405);
    let ch = within(other.create_channel()).await.expect("channel");
    let r = within(ch.queue_purge("private", QueuePurgeOptions::default())).await;
    assert_eq!(code_of(r), 405);
    let ch = within(other.create_channel()).await.expect("channel");
    let r = within(ch.queue_bind(
        "private",
        "amq.direct",
        "k",
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(code_of(r), 405);
    let ch = within(other.create_channel()).await.expect("channel");
    let r = within(ch.queue_delete("private", QueueDeleteOptions::default())).await;
    assert_eq!(code_of(r), 405);
}

#[tokio::test]
async fn exclusive_queue_is_deleted_when_its_connection_closes() {
    let broker = TestBroker::start().await;
    let (owner, ch) = broker.channel().await;
    declare(&ch, "mine-while-open", exclusive(), FieldTable::default())
        .await
        .expect("declare");
    within(owner.close(200, "bye")).await.expect("close");
    let (_conn, ch) = broker.channel().await;
    let r = declare(&ch, "mine-while-open", passive(), FieldTable::default()).await;
    assert_eq!(code_of(r), 404);
}

#[tokio::test]
async fn exclusive_queue_is_deleted_when_its_connection_drops() {
    let broker = TestBroker::start().await;
    let mut raw = common::raw::RawClient::open(broker.addr()).await;
    raw.open_channel(1).await;
    raw.send_method(
        1,
        warren_codec::queue::Declare {
            queue: "dropped-with-socket".try_into().expect("shortstr"),
            passive: false,
            durable: false,
            exclusive: true,
            auto_delete: false,
            no_wait: false,
            arguments: warren_codec::FieldTable::new(),
        },
    )
    .await;
    raw.read_method().await.expect("declare-ok");
    drop(raw);
    let vhost = broker.broker().vhost("/").expect("default vhost");
    eventually(|| vhost.queue("dropped-with-socket").is_err()).await;
}

/// RabbitMQ answers a channel that deletes a queue it consumes from with `queue.delete-ok`
/// first and its `basic.cancel` after; py-amqp raises `ConsumerCancelled` out of
/// `queue_delete` when the cancel comes first.
#[tokio::test]
async fn delete_ok_comes_before_the_deleting_channels_own_cancel() {
    use warren_codec::{basic, queue, FieldTable as RawTable, Method};
    let broker = TestBroker::start().await;
    let mut raw = common::raw::RawClient::open(broker.addr()).await;
    raw.open_channel(1).await;
    let name = || "consumed-then-deleted".try_into().expect("shortstr");
    // Several rounds, on a new queue of the same name each time.
    for _ in 0..3 {
        raw.send_method(
            1,
            queue::Declare {
                queue: name(),
                passive: false,
                durable: false,
                exclusive: false,
                auto_delete: false,
                no_wait: false,
                arguments: RawTable::new(),
            },
        )
        .await;
        raw.read_method().await.expect("declare-ok");
        raw.send_method(
            1,
            basic::Consume {
                queue: name(),
                consumer_tag: "mine".try_into().expect("shortstr"),
                no_local: false,
                no_ack: false,
                exclusive: false,
                no_wait: false,
                arguments: RawTable::new(),
            },
        )
        .await;
        raw.read_method().await.expect("consume-ok");
        raw.send_method(
            1,
            queue::Delete {
                queue: name(),
                if_unused: false,
                if_empty: false,
                no_wait: false,
            },
        )
        .await;
        let first = raw.read_method().await;
        assert!(
            matches!(first, Some((1, Method::QueueDeleteOk(_)))),
            "{first:?}"
        );
        let second = raw.read_method().await;
        assert!(
            matches!(&second, Some((1, Method::BasicCancel(c))) if c.consumer_tag.as_str() == "mine"),
            "{second:?}"
        );
    }
}

#[tokio::test]
async fn auto_delete_queue_is_deleted_after_its_last_consumer_cancels() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let auto = QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    declare(&ch, "ephemeral", auto, FieldTable::default())
        .await
        .expect("declare");
    let a = consume(&ch, "ephemeral", true).await;
    let b = consume(&ch, "ephemeral", true).await;
    within(ch.basic_cancel(a.tag().as_str(), BasicCancelOptions::default()))
        .await
        .expect("cancel a");
    assert_eq!(queue_counts(&ch, "ephemeral").await, (0, 1));
    within(ch.basic_cancel(b.tag().as_str(), BasicCancelOptions::default()))
        .await
        .expect("cancel b");
    let r = declare(&ch, "ephemeral", passive(), FieldTable::default()).await;
    assert_eq!(code_of(r), 404);
}

#[tokio::test]
async fn auto_delete_queue_that_never_had_a_consumer_stays() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let auto = QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    declare(&ch, "unused-auto", auto, FieldTable::default())
        .await
        .expect("declare");
    declare(&ch, "unused-auto", passive(), FieldTable::default())
        .await
        .expect("still there");
}

#[tokio::test]
async fn declare_ok_reports_message_and_consumer_counts() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    named_queue(&ch, "counted").await;
    for _ in 0..3 {
        publish(&ch, "", "counted", b"m").await;
    }
    let q = declare(
        &ch,
        "counted",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("redeclare");
    assert_eq!((q.message_count(), q.consumer_count()), (3, 0));
    let (_c2, ch2) = broker.channel().await;
    within(ch2.basic_qos(1, Default::default()))
        .await
        .expect("qos");
    let _consumer = consume(&ch2, "counted", false).await;
    // One message is out with the consumer, two wait; one consumer.
    let ch3 = ch.clone();
    within(async {
        while queue_counts(&ch3, "counted").await != (2, 1) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn purge_returns_the_number_of_messages_removed() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    named_queue(&ch, "purged").await;
    for _ in 0..4 {
        publish(&ch, "", "purged", b"m").await;
    }
    let n = within(ch.queue_purge("purged", QueuePurgeOptions::default()))
        .await
        .expect("purge");
    assert_eq!(n, 4);
    assert_eq!(queue_counts(&ch, "purged").await, (0, 0));
}

#[tokio::test]
async fn purge_of_missing_queue_closes_channel_with_404() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let r = within(ch.queue_purge("nothing-here", QueuePurgeOptions::default())).await;
    assert_eq!(code_of(r), 404);
}

#[tokio::test]
async fn delete_returns_the_number_of_messages_it_held() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    named_queue(&ch, "doomed").await;
    for _ in 0..2 {
        publish(&ch, "", "doomed", b"m").await;
    }
    let n = within(ch.queue_delete("doomed", QueueDeleteOptions::default()))
        .await
        .expect("delete");
    assert_eq!(n, 2);
    let r = declare(&ch, "doomed", passive(), FieldTable::default()).await;
    assert_eq!(code_of(r), 404);
}

#[tokio::test]
async fn delete_if_unused_with_a_consumer_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    named_queue(&ch, "busy").await;
    let _consumer = consume(&ch, "busy", true).await;
    let (_c2, ch2) = broker.channel().await;
    let if_unused = QueueDeleteOptions {
        if_unused: true,
        ..Default::default()
    };
    let r = within(ch2.queue_delete("busy", if_unused)).await;
    assert_eq!(code_of(r), 406);
}

#[tokio::test]
async fn delete_if_empty_with_messages_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    named_queue(&ch, "full").await;
    publish(&ch, "", "full", b"m").await;
    let if_empty = QueueDeleteOptions {
        if_empty: true,
        ..Default::default()
    };
    let r = within(ch.queue_delete("full", if_empty)).await;
    assert_eq!(code_of(r), 406);
}

#[tokio::test]
async fn delete_of_missing_queue_succeeds_with_zero() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let n = within(ch.queue_delete("never-declared", QueueDeleteOptions::default()))
        .await
        .expect("delete-ok");
    assert_eq!(n, 0);
}

#[tokio::test]
async fn bind_to_missing_exchange_closes_channel_with_404() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    let r = within(ch.queue_bind(
        &q,
        "no-such-exchange",
        "k",
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(code_of(r), 404);
}

#[tokio::test]
async fn bind_of_missing_queue_closes_channel_with_404() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let r = within(ch.queue_bind(
        "no-such-queue",
        "amq.direct",
        "k",
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(code_of(r), 404);
}

#[tokio::test]
async fn unbind_stops_routing() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    within(ch.queue_bind(
        &q,
        "amq.direct",
        "k",
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("bind");
    publish(&ch, "amq.direct", "k", b"before").await;
    within(ch.queue_unbind(&q, "amq.direct", "k", FieldTable::default()))
        .await
        .expect("unbind");
    publish(&ch, "amq.direct", "k", b"after").await;
    assert_eq!(
        get(&ch, &q, true).await.expect("message").delivery.data,
        b"before"
    );
    assert!(get(&ch, &q, true).await.is_none());
}

#[tokio::test]
async fn empty_queue_name_means_the_last_queue_declared_on_the_channel() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    within(ch.queue_bind(
        "",
        "amq.direct",
        "shortcut",
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("bind the current queue");
    publish(&ch, "amq.direct", "shortcut", b"a").await;
    publish(&ch, "amq.direct", "shortcut", b"b").await;
    assert_eq!(get(&ch, "", true).await.expect("get").delivery.data, b"a");
    let n = within(ch.queue_purge("", QueuePurgeOptions::default()))
        .await
        .expect("purge");
    assert_eq!(n, 1);
    let mut consumer = consume(&ch, "", true).await;
    publish(&ch, "", &q, b"c").await;
    assert_eq!(next_delivery(&mut consumer).await.data, b"c");
}

#[tokio::test]
async fn empty_queue_name_without_a_declared_queue_closes_channel_with_404() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let r = within(ch.queue_bind(
        "",
        "amq.direct",
        "k",
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(code_of(r), 404);
}
