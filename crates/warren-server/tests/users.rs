//! Users and permissions are kept in the data directory like the topology: what a definitions
//! file or the broker's API created is still there after a restart without the file, and the
//! default guest user is created only when the data directory is new (as RabbitMQ does), so
//! a deleted guest stays deleted.

mod common;

use std::sync::Arc;

use common::*;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use tempfile::TempDir;
use warren_broker::definitions::Definitions;
use warren_broker::{Broker, HashAlgorithm, PasswordHash, Permission, SyncMode};

fn data_dir() -> TempDir {
    tempfile::tempdir().expect("temporary data directory")
}

/// Opens `dir`, imports `defs` as `warren --definitions` does, and serves it.
async fn start_with_definitions(dir: &TempDir, defs: &str) -> TestBroker {
    let broker = Broker::open(dir.path(), SyncMode::Fsync).expect("open the data directory");
    Definitions::parse(defs)
        .expect("parse definitions")
        .apply(&broker)
        .expect("apply definitions");
    TestBroker::start_durable_with(Arc::new(broker), dir.path()).await
}

/// Stops the server and releases the data directory, as `warren` does at SIGTERM.
async fn stop(broker: TestBroker) {
    let b = broker.broker().clone();
    broker.shutdown().await;
    b.close();
}

/// A user with a plain password (hashed with SHA-256 at import), another with a SHA-512 hash
/// as RabbitMQ exports it, a vhost, and their rights there: `app` may configure only `app.*`.
fn definitions() -> String {
    let hash = PasswordHash::new("ops-secret", HashAlgorithm::Sha512).to_base64();
    format!(
        r#"{{
        "users": [
            {{"name": "app", "password": "app-secret", "tags": "monitoring"}},
            {{"name": "ops", "password_hash": "{hash}",
              "hashing_algorithm": "rabbit_password_hashing_sha512", "tags": ["administrator"]}}
        ],
        "vhosts": [{{"name": "prod"}}],
        "permissions": [
            {{"user": "app", "vhost": "prod", "configure": "^app\\.", "write": ".*", "read": ".*"}},
            {{"user": "ops", "vhost": "prod", "configure": ".*", "write": ".*", "read": ".*"}}
        ]
    }}"#
    )
}

#[tokio::test]
async fn users_and_permissions_from_definitions_survive_a_restart_without_the_file() {
    let dir = data_dir();
    let broker = start_with_definitions(&dir, &definitions()).await;
    // `restart()` reopens the directory with no definitions.
    let broker = broker.restart().await;

    let conn = connect_url(&broker.url_for("app", "app-secret", "prod"))
        .await
        .expect("app logs in to prod after the restart");
    let ch = within(conn.create_channel()).await.expect("channel");
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .expect("confirm.select");
    named_queue(&ch, "app.orders").await;
    let confirm = within(ch.basic_publish(
        "",
        "app.orders",
        BasicPublishOptions::default(),
        b"order-1",
        BasicProperties::default(),
    ))
    .await
    .expect("publish");
    assert!(within(confirm).await.expect("confirmation").is_ack());
    let got = get(&ch, "app.orders", true).await.expect("the message");
    assert_eq!(got.delivery.data, b"order-1");

    // The configure pattern came back with the user: other names are refused.
    let r = within(ch.queue_declare(
        "billing",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(code_of(r), 403);

    // Tags and the SHA-512 hash came back as imported.
    let app = broker.broker().user("app").expect("app is recorded");
    assert_eq!(app.tags, vec!["monitoring"]);
    let ops = broker.broker().user("ops").expect("ops is recorded");
    assert_eq!(ops.tags, vec!["administrator"]);
    let conn = connect_url(&broker.url_for("ops", "ops-secret", "prod"))
        .await
        .expect("ops logs in with the SHA-512 hash after the restart");
    within(conn.close(200, "bye")).await.expect("close");

    // No rights on `/`, and the wrong password is still wrong.
    let err = connect_url(&broker.url_for("app", "app-secret", "/"))
        .await
        .expect_err("app has no rights on /");
    assert_eq!(reply_code(&err), Some(530), "{err:?}");
    let err = connect_url(&broker.url_for("app", "wrong", "prod"))
        .await
        .expect_err("wrong password");
    assert_eq!(reply_code(&err), Some(403), "{err:?}");

    // The defaults were created with the directory and are still there.
    let (_c, _ch) = broker.channel().await;
}

#[tokio::test]
async fn importing_definitions_again_replaces_the_recorded_user() {
    let dir = data_dir();
    let broker = start_with_definitions(&dir, &definitions()).await;
    stop(broker).await;
    let changed = r#"{
        "users": [{"name": "app", "password": "rotated", "tags": []}],
        "permissions": [{"user": "app", "vhost": "prod",
                         "configure": "", "write": ".*", "read": ".*"}]
    }"#;
    let broker = start_with_definitions(&dir, changed).await;
    let broker = broker.restart().await;
    let err = connect_url(&broker.url_for("app", "app-secret", "prod"))
        .await
        .expect_err("the old password was replaced");
    assert_eq!(reply_code(&err), Some(403), "{err:?}");
    let conn = connect_url(&broker.url_for("app", "rotated", "prod"))
        .await
        .expect("the new password works after the restart");
    let ch = within(conn.create_channel()).await.expect("channel");
    // The empty configure pattern replaced `^app\.`: nothing may be declared now.
    let r = within(ch.queue_declare(
        "app.orders",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(code_of(r), 403);
}

#[tokio::test]
async fn a_deleted_guest_is_not_recreated_at_restart() {
    let dir = data_dir();
    let broker = TestBroker::start_durable(dir.path()).await;
    broker.add_user("admin", "admin-pw", Some("/"));
    assert!(broker.broker().delete_user("guest").expect("recorded"));
    let broker = broker.restart().await;

    let err = connect_url(&broker.amqp_url())
        .await
        .expect_err("guest was deleted");
    assert_eq!(reply_code(&err), Some(403), "{err:?}");
    assert!(broker.broker().user("guest").is_none());
    // The vhost guest had rights on stays, and so does the user added at run time.
    let conn = connect_url(&broker.url_for("admin", "admin-pw", "/"))
        .await
        .expect("admin logs in after the restart");
    let ch = within(conn.create_channel()).await.expect("channel");
    named_queue(&ch, "still-here").await;
}

#[tokio::test]
async fn permissions_changed_at_run_time_are_enforced_after_restart() {
    let dir = data_dir();
    let broker = TestBroker::start_durable(dir.path()).await;
    broker.broker().add_vhost("staging").expect("add vhost");
    broker.add_user("carol", "pw", Some("staging"));
    broker
        .broker()
        .set_permission(
            "carol",
            "/",
            Permission::new("^carol-", ".*", ".*").expect("valid patterns"),
        )
        .expect("set permission");
    assert!(broker
        .broker()
        .clear_permission("carol", "staging")
        .expect("recorded"));
    let broker = broker.restart().await;

    let err = connect_url(&broker.url_for("carol", "pw", "staging"))
        .await
        .expect_err("carol's rights on staging were cleared");
    assert_eq!(reply_code(&err), Some(530), "{err:?}");
    let conn = connect_url(&broker.url_for("carol", "pw", "/"))
        .await
        .expect("carol logs in to /");
    let ch = within(conn.create_channel()).await.expect("channel");
    named_queue(&ch, "carol-q").await;
    let r = within(ch.queue_declare(
        "dave-q",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(code_of(r), 403);
}
