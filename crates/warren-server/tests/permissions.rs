//! Permissions: configure, write and read regexes are checked on every operation, each
//! refusal closing the channel with 403 ACCESS_REFUSED, as in RabbitMQ.

mod common;

use common::*;
use lapin::options::{BasicConsumeOptions, BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use warren_broker::Permission;

/// A user `u` whose rights are the three patterns, and a channel of theirs.
async fn user_channel(
    broker: &TestBroker,
    configure: &str,
    write: &str,
    read: &str,
) -> (Connection, Channel) {
    broker.add_user("u", "pw", None);
    broker
        .broker()
        .set_permission(
            "u",
            "/",
            Permission::new(configure, write, read).expect("valid patterns"),
        )
        .expect("set permission");
    let conn = connect_url(&broker.url_for("u", "pw", "/"))
        .await
        .expect("connect");
    let ch = within(conn.create_channel()).await.expect("channel");
    (conn, ch)
}

/// Declares `name` as guest (who may do anything).
async fn guest_declares(broker: &TestBroker, name: &str) {
    let (_c, ch) = broker.channel().await;
    named_queue(&ch, name).await;
}

#[tokio::test]
async fn publishing_needs_write_permission_on_the_exchange() {
    let broker = TestBroker::start().await;
    guest_declares(&broker, "target").await;
    let (_conn, ch) = user_channel(&broker, ".*", "^amq\\.direct$", ".*").await;
    // The default exchange is "" and does not match the write pattern.
    let closed = watch_close(&ch);
    publish(&ch, "", "target", b"x").await;
    assert_eq!(closed.code().await, 403);
}

#[tokio::test]
async fn publishing_is_allowed_where_the_write_pattern_matches() {
    let broker = TestBroker::start().await;
    guest_declares(&broker, "target").await;
    let (_conn, ch) = user_channel(&broker, "", ".*", "").await;
    publish(&ch, "", "target", b"x").await;
    let (_c, gch) = broker.channel().await;
    within(async {
        while queue_counts(&gch, "target").await.0 != 1 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn consuming_and_getting_need_read_permission_on_the_queue() {
    let broker = TestBroker::start().await;
    guest_declares(&broker, "secret").await;
    let (_conn, ch) = user_channel(&broker, ".*", ".*", "^public$").await;
    let r = within(ch.basic_get("secret", BasicGetOptions::default())).await;
    assert_eq!(code_of(r), 403);
    let ch = within(_conn.create_channel()).await.expect("channel");
    let r = within(ch.basic_consume(
        "secret",
        "",
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(code_of(r), 403);
}

#[tokio::test]
async fn binding_needs_write_on_the_queue_and_read_on_the_exchange() {
    let broker = TestBroker::start().await;
    guest_declares(&broker, "bq").await;
    // May write to the queue but not read from amq.direct.
    let (conn, ch) = user_channel(&broker, ".*", ".*", "^bq$").await;
    let r = within(ch.queue_bind(
        "bq",
        "amq.direct",
        "k",
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(code_of(r), 403);
    drop(conn);
}

#[tokio::test]
async fn empty_pattern_grants_nothing() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = user_channel(&broker, "", ".*", ".*").await;
    let r = within(ch.queue_declare("any", QueueDeclareOptions::default(), FieldTable::default()))
        .await;
    assert_eq!(code_of(r), 403);
}
