//! The operations layer without a socket: every operation a front end calls, its answer and its
//! error path, driven the way the AMQP server and the management API drive it.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use warren_broker::definitions::Definitions;
use warren_broker::stats::ConnectionCounters;
use warren_broker::{
    Broker, BrokerError, Channel, ConnectionControl, ConnectionInfo, Consume, EntityKind,
    ExchangeDeclare, HashAlgorithm, Outbound, Outbox, PasswordHash, Permission, Publish, Publisher,
    QueueDeclare, Session, SyncMode, Ticket,
};
use warren_codec::{BasicProperties, FieldTable, FieldValue, ShortString};

/// Collects what the broker hands a connection.
#[derive(Default)]
struct Collect(Mutex<Vec<Outbound>>);

impl Outbox for Collect {
    fn push(&self, item: Outbound) {
        self.0.lock().push(item);
    }
    fn is_congested(&self) -> bool {
        false
    }
}

impl Collect {
    fn take(&self) -> Vec<Outbound> {
        std::mem::take(&mut *self.0.lock())
    }
}

fn s(v: &str) -> ShortString {
    ShortString::try_from(v).expect("short string")
}

fn args(pairs: &[(&str, FieldValue)]) -> FieldTable {
    let mut t = FieldTable::new();
    for (k, v) in pairs {
        t.insert(s(k), v.clone());
    }
    t
}

fn guest(b: &Broker, conn: u64) -> Session {
    let user = b.authenticate("guest", "guest", true).expect("guest");
    b.open_session(&user, "/", conn).expect("session")
}

/// A user with the given rights on `/`.
fn limited(b: &Broker, configure: &str, write: &str, read: &str) -> Session {
    b.add_user(
        "u",
        Some(PasswordHash::new("pw", HashAlgorithm::Sha256)),
        vec![],
    )
    .expect("user");
    b.set_permission(
        "u",
        "/",
        Permission::new(configure, write, read).expect("regex"),
    )
    .expect("permission");
    let user = b.authenticate("u", "pw", true).expect("login");
    b.open_session(&user, "/", 7).expect("session")
}

fn queue(name: &str) -> QueueDeclare {
    QueueDeclare {
        name: s(name),
        ..QueueDeclare::default()
    }
}

fn exchange(name: &str, kind: &str) -> ExchangeDeclare {
    ExchangeDeclare {
        name: s(name),
        kind: kind.into(),
        passive: false,
        durable: false,
        auto_delete: false,
        internal: false,
        arguments: FieldTable::new(),
    }
}

fn message(exchange: &str, key: &str, props: BasicProperties, mandatory: bool) -> Publish {
    Publish {
        exchange: s(exchange),
        routing_key: s(key),
        mandatory,
        properties: props.to_raw(),
        body: Bytes::from_static(b"hello"),
    }
}

fn channel(id: u16, conn: u64) -> (Arc<Channel>, Arc<Collect>) {
    let out = Arc::new(Collect::default());
    (Arc::new(Channel::new(id, conn, out.clone())), out)
}

fn is_precondition(r: &Result<impl std::fmt::Debug, BrokerError>) -> bool {
    matches!(r, Err(BrokerError::PreconditionFailed(_)))
}

#[test]
fn exchanges_are_declared_checked_and_deleted() {
    let b = Broker::new();
    let g = guest(&b, 1);
    g.declare_exchange(exchange("x", "topic")).expect("declare");
    // Same again: fine; a different type: RabbitMQ's 406.
    g.declare_exchange(exchange("x", "topic"))
        .expect("redeclare");
    let r = g.declare_exchange(exchange("x", "fanout"));
    assert!(
        matches!(&r, Err(BrokerError::PreconditionFailed(m)) if m.contains("inequivalent arg 'type'")),
        "{r:?}"
    );
    assert!(matches!(
        g.declare_exchange(exchange("y", "nonsense")),
        Err(BrokerError::CommandInvalid(_))
    ));
    assert!(matches!(
        g.declare_exchange(exchange("", "direct")),
        Err(BrokerError::AccessRefused(_))
    ));
    assert!(matches!(
        g.declare_exchange(exchange("amq.mine", "direct")),
        Err(BrokerError::AccessRefused(_))
    ));
    let mut passive = exchange("missing", "direct");
    passive.passive = true;
    assert!(matches!(
        g.declare_exchange(passive),
        Err(BrokerError::NotFound {
            kind: EntityKind::Exchange,
            ..
        })
    ));
    assert!(matches!(
        g.delete_exchange("amq.direct", false),
        Err(BrokerError::AccessRefused(_))
    ));
    g.declare_queue(queue("q")).expect("queue");
    g.bind_queue("q", "x", s("a.#"), FieldTable::new())
        .expect("bind");
    assert!(is_precondition(&g.delete_exchange("x", true)));
    g.delete_exchange("x", false).expect("delete");
    g.delete_exchange("x", false)
        .expect("deleting a missing exchange succeeds");
}

#[test]
fn permissions_are_checked_by_each_operation() {
    let b = Broker::new();
    let u = limited(&b, "^u\\.", "^u\\.", "^u\\.");
    assert!(matches!(
        u.declare_queue(queue("other")),
        Err(BrokerError::AccessRefused(m)) if m == "configure access to queue 'other' in vhost '/' refused for user 'u'"
    ));
    u.declare_queue(queue("u.q")).expect("own queue");
    // Binding needs read on the source exchange too.
    assert!(matches!(
        u.bind_queue("u.q", "amq.direct", s("k"), FieldTable::new()),
        Err(BrokerError::AccessRefused(_))
    ));
    let mut p = Publisher::direct();
    assert!(matches!(
        u.publish(
            &mut p,
            message("amq.direct", "k", BasicProperties::default(), false)
        ),
        Err(BrokerError::AccessRefused(_))
    ));
    // A dead-letter exchange needs write access to it.
    let dl = QueueDeclare {
        arguments: args(&[("x-dead-letter-exchange", FieldValue::from("amq.fanout"))]),
        ..queue("u.dl")
    };
    assert!(matches!(
        u.declare_queue(dl),
        Err(BrokerError::AccessRefused(_))
    ));
    let (ch, _) = channel(1, 7);
    assert!(matches!(
        u.get(&ch, "other", false),
        Err(BrokerError::AccessRefused(_))
    ));
    assert!(matches!(
        u.purge_queue("other"),
        Err(BrokerError::AccessRefused(_))
    ));
}

#[test]
fn queues_follow_rabbitmq_rules() {
    let b = Broker::new();
    let g = guest(&b, 1);
    // Server-named, and an exclusive queue is transient whatever it asks for.
    let d = g
        .declare_queue(QueueDeclare {
            durable: true,
            exclusive: true,
            ..queue("")
        })
        .expect("server-named");
    assert!(d.name.as_str().starts_with("amq.gen-"));
    let q = b.vhost("/").unwrap().queue(d.name.as_str()).unwrap();
    assert!(!q.durable && q.is_exclusive());
    // Another connection may not use it.
    let other = guest(&b, 2);
    assert!(matches!(
        other.purge_queue(d.name.as_str()),
        Err(BrokerError::ResourceLocked(_))
    ));
    // Quorum queues must be durable.
    let r = g.declare_queue(QueueDeclare {
        arguments: args(&[("x-queue-type", FieldValue::from("quorum"))]),
        ..queue("qq")
    });
    assert!(
        matches!(&r, Err(BrokerError::PreconditionFailed(m)) if m == "invalid property 'non-durable' for queue 'qq' in vhost '/'"),
        "{r:?}"
    );
    assert!(is_precondition(&g.declare_queue(QueueDeclare {
        arguments: args(&[("x-max-priority", FieldValue::from("high"))]),
        ..queue("bad")
    })));
    assert!(matches!(
        g.declare_queue(QueueDeclare {
            passive: true,
            ..queue("nope")
        }),
        Err(BrokerError::NotFound { .. })
    ));
    // Delete if empty refuses a queue with messages; a plain delete counts them.
    g.declare_queue(queue("full")).expect("declare");
    let mut p = Publisher::direct();
    for _ in 0..3 {
        g.publish(
            &mut p,
            message("", "full", BasicProperties::default(), false),
        )
        .expect("publish");
    }
    assert!(is_precondition(&g.delete_queue("full", false, true)));
    assert_eq!(g.purge_queue("full").expect("purge"), 3);
    g.publish(
        &mut p,
        message("", "full", BasicProperties::default(), false),
    )
    .expect("publish");
    assert_eq!(g.delete_queue("full", false, false).expect("delete"), 1);
    assert_eq!(g.delete_queue("full", false, false).expect("missing"), 0);
}

#[test]
fn publish_reports_routing_acceptance_and_returns() {
    let b = Broker::new();
    let g = guest(&b, 1);
    g.declare_queue(queue("a")).expect("a");
    g.declare_queue(queue("b")).expect("b");
    g.declare_exchange(exchange("fan", "fanout")).expect("fan");
    g.bind_queue("a", "fan", s(""), FieldTable::new())
        .expect("bind");
    g.bind_queue("b", "fan", s(""), FieldTable::new())
        .expect("bind");
    let mut p = Publisher::direct();
    let out = g
        .publish(&mut p, message("fan", "", BasicProperties::default(), true))
        .expect("publish");
    assert_eq!(out.routed.len(), 2);
    assert!(out.accepted && out.returned.is_none());
    assert_eq!(out.ticket, Ticket::NONE, "nothing to wait for in memory");

    let out = g
        .publish(
            &mut p,
            message("amq.direct", "none", BasicProperties::default(), true),
        )
        .expect("publish");
    assert!(out.routed.is_empty());
    assert!(
        out.returned.is_some(),
        "mandatory and unroutable comes back"
    );

    // A full queue with reject-publish refuses: the publisher would get a nack.
    g.declare_queue(QueueDeclare {
        arguments: args(&[
            ("x-max-length", FieldValue::I32(1)),
            ("x-overflow", FieldValue::from("reject-publish")),
        ]),
        ..queue("capped")
    })
    .expect("capped");
    let first = g
        .publish(
            &mut p,
            message("", "capped", BasicProperties::default(), false),
        )
        .expect("publish");
    let second = g
        .publish(
            &mut p,
            message("", "capped", BasicProperties::default(), false),
        )
        .expect("publish");
    assert!(first.accepted && !second.accepted);

    let impostor = BasicProperties {
        user_id: Some(s("someone-else")),
        ..BasicProperties::default()
    };
    let r = g.publish(&mut p, message("", "a", impostor, false));
    assert!(is_precondition(&r), "{r:?}");
    let bad_ttl = BasicProperties {
        expiration: Some(s("soon")),
        ..BasicProperties::default()
    };
    assert!(is_precondition(
        &g.publish(&mut p, message("", "a", bad_ttl, false))
    ));
    g.declare_exchange(ExchangeDeclare {
        internal: true,
        ..exchange("inside", "direct")
    })
    .expect("internal");
    assert!(matches!(
        g.publish(
            &mut p,
            message("inside", "", BasicProperties::default(), false)
        ),
        Err(BrokerError::AccessRefused(_))
    ));
    // Bytes that are not properties: a syntax error, not a panic.
    let garbage = Publish {
        properties: Bytes::from_static(&[0xff, 0xff]),
        ..message("", "a", BasicProperties::default(), false)
    };
    assert!(matches!(
        g.publish(&mut p, garbage),
        Err(BrokerError::Malformed(_))
    ));
    // A prepared publish (a transaction) reaches its queue only at commit.
    let prepared = g
        .prepare(&mut p, message("", "b", BasicProperties::default(), false))
        .expect("prepare");
    let before = b
        .vhost("/")
        .unwrap()
        .queue("b")
        .unwrap()
        .snapshot()
        .messages_ready;
    g.commit(&mut p, prepared).expect("commit");
    let after = b
        .vhost("/")
        .unwrap()
        .queue("b")
        .unwrap()
        .snapshot()
        .messages_ready;
    assert_eq!(after, before + 1);
}

#[test]
fn get_consume_ack_nack_reject_and_recover() {
    let b = Broker::new();
    let g = guest(&b, 1);
    g.declare_queue(queue("w")).expect("w");
    let (ch, out) = channel(1, 1);
    assert!(!g.get(&ch, "w", false).expect("get"), "empty");
    let mut p = Publisher::direct();
    for _ in 0..4 {
        g.publish(&mut p, message("", "w", BasicProperties::default(), false))
            .expect("publish");
    }
    assert!(g.get(&ch, "w", false).expect("get"));
    assert!(matches!(
        out.take()[..],
        [Outbound::GetOk {
            delivery_tag: 1,
            message_count: 3,
            ..
        }]
    ));
    ch.ack(1, false).expect("ack");
    assert!(is_precondition(&ch.ack(1, false)), "acking twice is a 406");

    let c = g
        .consume(
            &ch,
            Consume {
                queue: s("w"),
                no_ack: false,
                ..Consume::default()
            },
        )
        .expect("consume");
    assert!(c.tag.as_str().starts_with("amq.ctag-"));
    c.activate();
    let tags: Vec<u64> = out
        .take()
        .iter()
        .map(|o| match o {
            Outbound::Deliver { delivery_tag, .. } => *delivery_tag,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(tags, [2, 3, 4]);
    // Reject one (dropped: no dead-letter exchange), requeue one, recover the rest.
    ch.nack(2, false, false).expect("reject");
    ch.nack(3, false, true).expect("requeue");
    let redelivered = out.take();
    assert!(matches!(
        redelivered[..],
        [Outbound::Deliver {
            delivery_tag: 5,
            redelivered: true,
            ..
        }]
    ));
    ch.recover();
    assert_eq!(out.take().len(), 2, "4 and 5 come back");
    let q = b.vhost("/").unwrap().queue("w").unwrap().snapshot();
    assert_eq!((q.messages_ready, q.messages_unacknowledged), (0, 2));
    // Reusing a tag is refused; a missing queue is a 404.
    let dup = g.consume(
        &ch,
        Consume {
            queue: s("w"),
            tag: c.tag.clone(),
            ..Consume::default()
        },
    );
    assert!(matches!(dup, Err(BrokerError::NotAllowed(_))));
    assert!(matches!(
        g.consume(
            &ch,
            Consume {
                queue: s("nope"),
                ..Consume::default()
            }
        ),
        Err(BrokerError::NotFound { .. })
    ));
    ch.close();
    let q = b.vhost("/").unwrap().queue("w").unwrap().snapshot();
    assert_eq!((q.messages_ready, q.messages_unacknowledged), (2, 0));
}

#[test]
fn users_vhosts_and_permissions_change_at_run_time() {
    let b = Broker::new();
    b.add_vhost("tenant").expect("vhost");
    assert!(b
        .add_user(
            "ann",
            Some(PasswordHash::new("pw", HashAlgorithm::Sha256)),
            vec!["management".into()]
        )
        .expect("user"));
    assert!(!b
        .add_user(
            "ann",
            Some(PasswordHash::new("pw2", HashAlgorithm::Sha256)),
            vec![]
        )
        .expect("replace"));
    assert!(
        b.authenticate("ann", "pw", true).is_err(),
        "the password was changed"
    );
    let ann = b.authenticate("ann", "pw2", true).expect("login");
    assert!(matches!(
        b.open_session(&ann, "tenant", 1),
        Err(BrokerError::NotAllowed(_))
    ));
    assert!(b
        .set_permission("ann", "tenant", Permission::full())
        .expect("set"));
    let sess = b.open_session(&ann, "tenant", 1).expect("now allowed");
    sess.declare_queue(queue("t.q")).expect("declare in tenant");
    assert!(matches!(
        b.set_permission("nobody", "tenant", Permission::full()),
        Err(BrokerError::NotFound {
            kind: EntityKind::User,
            ..
        })
    ));
    assert!(matches!(
        b.set_permission("ann", "nowhere", Permission::full()),
        Err(BrokerError::NotFound {
            kind: EntityKind::VHost,
            ..
        })
    ));
    assert!(matches!(
        Permission::new("(", ".*", ".*"),
        Err(BrokerError::Invalid(_))
    ));
    // Deleting the vhost takes its queues and the rights on it.
    assert!(b.delete_vhost("tenant").expect("delete"));
    assert!(!b.delete_vhost("tenant").expect("already gone"));
    assert!(b.permission("ann", "tenant").is_none());
    assert!(b.vhost("tenant").is_none());
    assert!(b.delete_user("ann").expect("delete"));
    assert!(b.authenticate("ann", "pw2", true).is_err());
}

#[test]
fn definitions_export_imports_back_equal() {
    let json = r#"{
      "users": [{"name": "app", "password": "pw", "tags": ["management"]}],
      "vhosts": [{"name": "/"}, {"name": "prod"}],
      "permissions": [{"user": "app", "vhost": "prod", "configure": "^app", "write": ".*", "read": ".*"}],
      "exchanges": [{"name": "events", "vhost": "prod", "type": "topic", "durable": true,
                     "auto_delete": false, "internal": false, "arguments": {"alternate-exchange": "ae"}}],
      "queues": [{"name": "app.q", "vhost": "prod", "durable": true, "auto_delete": false,
                  "arguments": {"x-max-length": 10, "x-queue-type": "classic"}}],
      "bindings": [{"source": "events", "vhost": "prod", "destination": "app.q",
                    "destination_type": "queue", "routing_key": "a.#", "arguments": {}}]
    }"#;
    let first = Broker::empty();
    Definitions::parse(json).unwrap().apply(&first).unwrap();
    let exported = Definitions::export(&first, None);
    let second = Broker::empty();
    Definitions::parse(&exported.to_string())
        .unwrap()
        .apply(&second)
        .unwrap();
    assert_eq!(Definitions::export(&second, None), exported);
    assert_eq!(exported["queues"][0]["arguments"]["x-max-length"], 10);
    assert_eq!(exported["bindings"][0]["routing_key"], "a.#");
    assert!(
        second.authenticate("app", "pw", false).is_ok(),
        "the hash came along"
    );
    let per_vhost = Definitions::export(&second, Some("prod"));
    assert!(per_vhost.get("users").is_none());
    assert!(per_vhost["queues"][0].get("vhost").is_none());
    assert!(matches!(
        Definitions::parse("{"),
        Err(BrokerError::Invalid(_))
    ));
}

/// Records the broker's close requests.
struct Recorded(Arc<Mutex<Vec<String>>>);

impl ConnectionControl for Recorded {
    fn close(&self, reason: &str) {
        self.0.lock().push(reason.to_owned());
    }
}

#[test]
fn connections_register_and_close_by_name() {
    let b = Broker::new();
    let sess = guest(&b, 42);
    let closed = Arc::new(Mutex::new(Vec::new()));
    let peer = "127.0.0.1:5555".parse().unwrap();
    let local = "127.0.0.1:5672".parse().unwrap();
    let info = ConnectionInfo {
        name: ConnectionInfo::name_for(peer, local),
        peer,
        local,
        user: "guest".into(),
        vhost: "/".into(),
        client_properties: FieldTable::new(),
        connected_at: 0,
        protocol: "AMQP 0-9-1",
        auth_mechanism: "PLAIN".into(),
        frame_max: 131072,
        channel_max: 2047,
        heartbeat: 60,
        tls: None,
    };
    let conn = b.register_connection(
        &sess,
        info,
        Arc::new(ConnectionCounters::default()),
        Box::new(Recorded(closed.clone())),
    );
    assert_eq!(conn.info.name, "127.0.0.1:5555 -> 127.0.0.1:5672");
    let ch = conn
        .open_channel(1, Arc::new(Collect::default()))
        .expect("channel");
    assert_eq!(b.channels().len(), 1);
    b.close_connection("127.0.0.1:5555 -> 127.0.0.1:5672", "bye")
        .expect("found");
    assert_eq!(*closed.lock(), ["bye"]);
    ch.close();
    conn.close_channel(&ch);
    b.connection_closed(42);
    assert!(b.connections().is_empty());
    let churn = b.churn();
    assert_eq!(
        (
            churn.connections_opened,
            churn.connections_closed,
            churn.channels_opened,
            churn.channels_closed
        ),
        (1, 1, 1, 1)
    );
    assert!(matches!(
        b.close_connection("127.0.0.1:5555 -> 127.0.0.1:5672", "again"),
        Err(BrokerError::NotFound {
            kind: EntityKind::Connection,
            ..
        })
    ));
}

#[test]
fn a_record_that_cannot_be_written_fails_the_declare() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Broker::open(dir.path(), SyncMode::Fsync).expect("open");
    let g = guest(&b, 1);
    g.declare_queue(QueueDeclare {
        durable: true,
        ..queue("kept")
    })
    .expect("durable queue");
    // Closing the stores makes every later write fail, as a dead disk would.
    b.close();
    let r = g.declare_queue(QueueDeclare {
        durable: true,
        ..queue("lost")
    });
    assert!(matches!(r, Err(BrokerError::Storage(_))), "{r:?}");
    assert!(
        b.vhost("/").unwrap().queue("lost").is_err(),
        "no declare-ok, no queue"
    );
    // A transient queue needs no record.
    g.declare_queue(queue("transient")).expect("transient");
    let r = g.declare_exchange(ExchangeDeclare {
        durable: true,
        ..exchange("dx", "direct")
    });
    assert!(matches!(r, Err(BrokerError::Storage(_))), "{r:?}");
    let r = b.add_user("z", None, vec![]);
    assert!(matches!(r, Err(BrokerError::Storage(_))), "{r:?}");
}
