//! Exchanges: declaring, deleting, binding, and routing through each type.

mod common;

use common::*;
use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeUnbindOptions,
    QueueBindOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};

async fn declare(ch: &Channel, name: &str, kind: ExchangeKind) -> lapin::Result<()> {
    declare_with(
        ch,
        name,
        kind,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
}

async fn declare_with(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    options: ExchangeDeclareOptions,
    args: FieldTable,
) -> lapin::Result<()> {
    within(ch.exchange_declare(name, kind, options, args)).await
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str, args: FieldTable) {
    within(ch.queue_bind(queue, exchange, key, QueueBindOptions::default(), args))
        .await
        .expect("queue.bind");
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

/// Bodies of the messages waiting in `queue`, in order.
async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = get(ch, queue, true).await {
        out.push(String::from_utf8(m.delivery.data).expect("utf-8 body"));
    }
    out
}

#[tokio::test]
async fn declare_each_exchange_type_succeeds() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    for (name, kind) in [
        ("x-direct", ExchangeKind::Direct),
        ("x-fanout", ExchangeKind::Fanout),
        ("x-topic", ExchangeKind::Topic),
        ("x-headers", ExchangeKind::Headers),
    ] {
        declare(&ch, name, kind.clone()).await.expect("declare");
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        declare_with(&ch, name, kind, passive, FieldTable::default())
            .await
            .expect("passive declare finds it");
    }
}

#[tokio::test]
async fn redeclare_with_same_properties_is_ok() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let opts = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let args = table(&[("alternate-exchange", text("ae"))]);
    for _ in 0..2 {
        declare_with(&ch, "same", ExchangeKind::Topic, opts, args.clone())
            .await
            .expect("declare");
    }
    // The standard exchanges too, with their own properties.
    declare_with(
        &ch,
        "amq.direct",
        ExchangeKind::Direct,
        opts,
        FieldTable::default(),
    )
    .await
    .expect("amq.direct is durable direct");
}

#[tokio::test]
async fn redeclare_with_another_type_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "typed", ExchangeKind::Direct)
        .await
        .expect("declare");
    let r = declare(&ch, "typed", ExchangeKind::Fanout).await;
    assert_eq!(code_of(r), 406);
}

#[tokio::test]
async fn redeclare_with_other_durability_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    declare(&ch, "durable-x", ExchangeKind::Direct)
        .await
        .expect("declare");
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let r = declare_with(
        &ch,
        "durable-x",
        ExchangeKind::Direct,
        durable,
        FieldTable::default(),
    )
    .await;
    assert_eq!(code_of(r), 406);
    // Only the channel closed.
    let ch = within(conn.create_channel())
        .await
        .expect("connection still open");
    let r = declare(&ch, "amq.direct", ExchangeKind::Direct).await;
    assert_eq!(code_of(r), 406, "amq.direct is durable");
}

#[tokio::test]
async fn redeclare_with_other_alternate_exchange_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let opts = ExchangeDeclareOptions::default();
    declare_with(
        &ch,
        "ae-x",
        ExchangeKind::Direct,
        opts,
        table(&[("alternate-exchange", text("a"))]),
    )
    .await
    .expect("declare");
    let r = declare_with(
        &ch,
        "ae-x",
        ExchangeKind::Direct,
        opts,
        FieldTable::default(),
    )
    .await;
    assert_eq!(code_of(r), 406);
}

#[tokio::test]
async fn redeclare_with_other_unknown_arguments_is_ok() {
    // RabbitMQ compares only the arguments it knows (alternate-exchange).
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let opts = ExchangeDeclareOptions::default();
    declare_with(
        &ch,
        "args-x",
        ExchangeKind::Direct,
        opts,
        table(&[("x-foo", text("a"))]),
    )
    .await
    .expect("declare");
    declare_with(
        &ch,
        "args-x",
        ExchangeKind::Direct,
        opts,
        table(&[("x-foo", text("b"))]),
    )
    .await
    .expect("redeclare ignores unknown arguments");
}

#[tokio::test]
async fn unknown_exchange_type_closes_connection_with_503() {
    let broker = TestBroker::start().await;
    let (conn, ch) = broker.channel().await;
    let r = declare(&ch, "weird", ExchangeKind::Custom("x-no-such-type".into())).await;
    assert_eq!(code_of(r), 503);
    eventually(|| !conn.status().connected()).await;
}

#[tokio::test]
async fn declare_with_amq_prefix_closes_channel_with_403() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let r = declare(&ch, "amq.mine", ExchangeKind::Direct).await;
    assert_eq!(code_of(r), 403);
}

#[tokio::test]
async fn passive_declare_of_missing_exchange_closes_channel_with_404() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let r = declare_with(
        &ch,
        "nowhere",
        ExchangeKind::Direct,
        passive,
        FieldTable::default(),
    )
    .await;
    assert_eq!(code_of(r), 404);
}

#[tokio::test]
async fn declare_of_the_default_exchange_closes_channel_with_403() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    let r = declare(&ch, "", ExchangeKind::Direct).await;
    assert_eq!(code_of(r), 403);
    // Passive too, as RabbitMQ.
    let ch = within(conn.create_channel()).await.expect("channel");
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let r = declare_with(
        &ch,
        "",
        ExchangeKind::Direct,
        passive,
        FieldTable::default(),
    )
    .await;
    assert_eq!(code_of(r), 403);
}

#[tokio::test]
async fn delete_of_missing_exchange_succeeds() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    within(ch.exchange_delete("never-was", ExchangeDeleteOptions::default()))
        .await
        .expect("delete-ok");
}

#[tokio::test]
async fn delete_if_unused_with_bindings_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    declare(&ch, "used", ExchangeKind::Direct)
        .await
        .expect("declare");
    let q = temp_queue(&ch).await;
    bind(&ch, &q, "used", "k", FieldTable::default()).await;
    let if_unused = ExchangeDeleteOptions {
        if_unused: true,
        ..Default::default()
    };
    let r = within(ch.exchange_delete("used", if_unused)).await;
    assert_eq!(code_of(r), 406);

    // Without bindings it goes.
    let ch = within(conn.create_channel()).await.expect("channel");
    within(ch.queue_unbind(&q, "used", "k", FieldTable::default()))
        .await
        .expect("unbind");
    within(ch.exchange_delete("used", if_unused))
        .await
        .expect("unused now");
}

#[tokio::test]
async fn delete_of_a_standard_exchange_closes_channel_with_403() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let r = within(ch.exchange_delete("amq.topic", ExchangeDeleteOptions::default())).await;
    assert_eq!(code_of(r), 403);
}

#[tokio::test]
async fn binding_a_queue_to_the_default_exchange_closes_channel_with_403() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    let r = within(ch.queue_bind(
        &q,
        "",
        "k",
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(code_of(r), 403);
}

#[tokio::test]
async fn direct_exchange_routes_by_exact_key() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    bind(&ch, &q, "amq.direct", "info", FieldTable::default()).await;
    publish(&ch, "amq.direct", "info", b"yes").await;
    publish(&ch, "amq.direct", "info.x", b"no").await;
    assert_eq!(drain(&ch, &q).await, ["yes"]);
}

#[tokio::test]
async fn fanout_exchange_routes_to_every_bound_queue() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let a = temp_queue(&ch).await;
    let b = temp_queue(&ch).await;
    bind(&ch, &a, "amq.fanout", "", FieldTable::default()).await;
    bind(&ch, &b, "amq.fanout", "ignored", FieldTable::default()).await;
    publish(&ch, "amq.fanout", "whatever", b"all").await;
    assert_eq!(drain(&ch, &a).await, ["all"]);
    assert_eq!(drain(&ch, &b).await, ["all"]);
}

#[tokio::test]
async fn topic_exchange_matches_star_and_hash() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "logs", ExchangeKind::Topic)
        .await
        .expect("declare");
    let star = temp_queue(&ch).await;
    let hash = temp_queue(&ch).await;
    let exact = temp_queue(&ch).await;
    bind(&ch, &star, "logs", "*.error", FieldTable::default()).await;
    bind(&ch, &hash, "logs", "kern.#", FieldTable::default()).await;
    bind(&ch, &exact, "logs", "kern.error", FieldTable::default()).await;
    for key in [
        "kern.error",
        "app.error",
        "kern",
        "kern.disk.full",
        "app.error.x",
        "error",
    ] {
        publish(&ch, "logs", key, key.as_bytes()).await;
    }
    assert_eq!(drain(&ch, &star).await, ["kern.error", "app.error"]);
    assert_eq!(
        drain(&ch, &hash).await,
        ["kern.error", "kern", "kern.disk.full"]
    );
    assert_eq!(drain(&ch, &exact).await, ["kern.error"]);
}

#[tokio::test]
async fn topic_hash_alone_matches_everything() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    bind(&ch, &q, "amq.topic", "#", FieldTable::default()).await;
    for key in ["", "a", "a.b.c"] {
        publish(&ch, "amq.topic", key, key.as_bytes()).await;
    }
    assert_eq!(drain(&ch, &q).await, ["", "a", "a.b.c"]);
}

fn headers(entries: &[(&str, AMQPValue)]) -> BasicProperties {
    BasicProperties::default().with_headers(table(entries))
}

#[tokio::test]
async fn headers_exchange_x_match_all_and_any() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let all = temp_queue(&ch).await;
    let any = temp_queue(&ch).await;
    bind(
        &ch,
        &all,
        "amq.headers",
        "",
        table(&[
            ("x-match", text("all")),
            ("format", text("pdf")),
            ("type", text("report")),
        ]),
    )
    .await;
    bind(
        &ch,
        &any,
        "amq.headers",
        "",
        table(&[
            ("x-match", text("any")),
            ("format", text("pdf")),
            ("type", text("report")),
        ]),
    )
    .await;
    let both = headers(&[("format", text("pdf")), ("type", text("report"))]);
    let one = headers(&[("format", text("pdf")), ("type", text("log"))]);
    let none = headers(&[("format", text("zip"))]);
    publish_with(&ch, "amq.headers", "", b"both", both).await;
    publish_with(&ch, "amq.headers", "", b"one", one).await;
    publish_with(&ch, "amq.headers", "", b"none", none).await;
    publish(&ch, "amq.headers", "", b"no-headers").await;
    assert_eq!(drain(&ch, &all).await, ["both"]);
    assert_eq!(drain(&ch, &any).await, ["both", "one"]);
}

#[tokio::test]
async fn headers_binding_with_invalid_x_match_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    let r = within(ch.queue_bind(
        &q,
        "amq.headers",
        "",
        QueueBindOptions::default(),
        table(&[("x-match", text("some"))]),
    ))
    .await;
    assert_eq!(code_of(r), 406);
}

#[tokio::test]
async fn exchange_to_exchange_binding_routes() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "upstream", ExchangeKind::Topic)
        .await
        .expect("declare");
    declare(&ch, "downstream", ExchangeKind::Fanout)
        .await
        .expect("declare");
    within(ch.exchange_bind(
        "downstream",
        "upstream",
        "orders.*",
        ExchangeBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("exchange.bind");
    let q = temp_queue(&ch).await;
    bind(&ch, &q, "downstream", "", FieldTable::default()).await;
    publish(&ch, "upstream", "orders.new", b"routed").await;
    publish(&ch, "upstream", "invoices.new", b"dropped").await;
    assert_eq!(drain(&ch, &q).await, ["routed"]);

    within(ch.exchange_unbind(
        "downstream",
        "upstream",
        "orders.*",
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("exchange.unbind");
    publish(&ch, "upstream", "orders.new", b"after-unbind").await;
    assert!(drain(&ch, &q).await.is_empty());
}

#[tokio::test]
async fn exchange_bind_to_missing_exchange_closes_channel_with_404() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let r = within(ch.exchange_bind(
        "amq.fanout",
        "no-such-source",
        "",
        ExchangeBindOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(code_of(r), 404);
}

#[tokio::test]
async fn alternate_exchange_receives_unroutable_messages() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "unrouted", ExchangeKind::Fanout)
        .await
        .expect("declare");
    declare_with(
        &ch,
        "main",
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        table(&[("alternate-exchange", text("unrouted"))]),
    )
    .await
    .expect("declare");
    let routed = temp_queue(&ch).await;
    let leftovers = temp_queue(&ch).await;
    bind(&ch, &routed, "main", "known", FieldTable::default()).await;
    bind(&ch, &leftovers, "unrouted", "", FieldTable::default()).await;
    publish(&ch, "main", "known", b"a").await;
    publish(&ch, "main", "unknown", b"b").await;
    assert_eq!(drain(&ch, &routed).await, ["a"]);
    assert_eq!(drain(&ch, &leftovers).await, ["b"]);
}

#[tokio::test]
async fn publish_to_internal_exchange_closes_channel_with_403() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let closed = watch_close(&ch);
    let internal = ExchangeDeclareOptions {
        internal: true,
        ..Default::default()
    };
    declare_with(
        &ch,
        "inside",
        ExchangeKind::Fanout,
        internal,
        FieldTable::default(),
    )
    .await
    .expect("declare");
    publish(&ch, "inside", "", b"x").await;
    assert_eq!(closed.code().await, 403);
}

#[tokio::test]
async fn internal_exchange_is_reachable_through_an_exchange_binding() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let internal = ExchangeDeclareOptions {
        internal: true,
        ..Default::default()
    };
    declare_with(
        &ch,
        "inner",
        ExchangeKind::Fanout,
        internal,
        FieldTable::default(),
    )
    .await
    .expect("declare");
    within(ch.exchange_bind(
        "inner",
        "amq.fanout",
        "",
        ExchangeBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("bind");
    let q = temp_queue(&ch).await;
    bind(&ch, &q, "inner", "", FieldTable::default()).await;
    publish(&ch, "amq.fanout", "", b"through").await;
    assert_eq!(drain(&ch, &q).await, ["through"]);
}

#[tokio::test]
async fn auto_delete_exchange_goes_when_its_last_binding_is_removed() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    let auto = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    declare_with(
        &ch,
        "transient",
        ExchangeKind::Direct,
        auto,
        FieldTable::default(),
    )
    .await
    .expect("declare");
    let q = temp_queue(&ch).await;
    bind(&ch, &q, "transient", "a", FieldTable::default()).await;
    bind(&ch, &q, "transient", "b", FieldTable::default()).await;
    within(ch.queue_unbind(&q, "transient", "a", FieldTable::default()))
        .await
        .expect("unbind a");
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    declare_with(
        &ch,
        "transient",
        ExchangeKind::Direct,
        passive,
        FieldTable::default(),
    )
    .await
    .expect("still bound by b");
    within(ch.queue_unbind(&q, "transient", "b", FieldTable::default()))
        .await
        .expect("unbind b");
    let r = declare_with(
        &ch,
        "transient",
        ExchangeKind::Direct,
        passive,
        FieldTable::default(),
    )
    .await;
    assert_eq!(code_of(r), 404);
}

#[tokio::test]
async fn auto_delete_exchange_never_bound_stays() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let auto = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    declare_with(
        &ch,
        "lonely",
        ExchangeKind::Fanout,
        auto,
        FieldTable::default(),
    )
    .await
    .expect("declare");
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    declare_with(
        &ch,
        "lonely",
        ExchangeKind::Fanout,
        passive,
        FieldTable::default(),
    )
    .await
    .expect("still there");
}

#[tokio::test]
async fn unbinding_what_does_not_exist_succeeds() {
    // As RabbitMQ: queue.unbind and exchange.unbind of a missing queue, exchange or binding
    // answer unbind-ok.
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    within(ch.queue_unbind(&q, "amq.direct", "never", FieldTable::default()))
        .await
        .expect("missing binding");
    within(ch.queue_unbind("no-such-queue", "amq.direct", "k", FieldTable::default()))
        .await
        .expect("missing queue");
    within(ch.queue_unbind(&q, "no-such-exchange", "k", FieldTable::default()))
        .await
        .expect("missing exchange");
    within(ch.exchange_unbind(
        "no-such-exchange",
        "amq.direct",
        "k",
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("missing destination");
}

#[tokio::test]
async fn unbind_from_the_default_exchange_closes_channel_with_403() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    let r = within(ch.queue_unbind(&q, "", &q, FieldTable::default())).await;
    assert_eq!(code_of(r), 403);
}
