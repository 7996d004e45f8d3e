//! Policies and operator policies through the broker's operations: precedence against queue
//! arguments, live application to existing queues, the operator merge, exchanges' alternate
//! exchange, and a restart.

use bytes::Bytes;
use serde_json::{json, Value};
use warren_broker::definitions::Definitions;
use warren_broker::{
    Broker, ExchangeDeclare, PolicyFields, Publish, Publisher, QueueDeclare, Session, SyncMode,
};
use warren_codec::{BasicProperties, FieldTable, FieldValue, ShortString};

fn s(v: &str) -> ShortString {
    ShortString::try_from(v).unwrap()
}

fn guest(b: &Broker) -> Session {
    let u = b.authenticate("guest", "guest", true).unwrap();
    b.open_session(&u, "/", 1).unwrap()
}

fn set(b: &Broker, operator: bool, name: &str, pattern: &str, prio: i64, def: Value) -> bool {
    b.set_policy(
        operator,
        PolicyFields {
            vhost: "/",
            name,
            pattern: &json!(pattern),
            apply_to: None,
            priority: Some(&json!(prio)),
            definition: &def,
        },
    )
    .expect("valid policy")
}

fn publish(g: &Session, exchange: &str, key: &str, n: usize) {
    let mut p = Publisher::direct();
    for _ in 0..n {
        g.publish(
            &mut p,
            Publish {
                exchange: s(exchange),
                routing_key: s(key),
                mandatory: false,
                properties: BasicProperties::default().to_raw(),
                body: Bytes::from_static(b"m"),
            },
        )
        .expect("publish");
    }
}

fn ready(b: &Broker, q: &str) -> u64 {
    b.vhost("/")
        .unwrap()
        .queue(q)
        .unwrap()
        .snapshot()
        .messages_ready
}

fn declare(g: &Session, name: &str, args: &[(&str, FieldValue)]) {
    let mut t = FieldTable::new();
    for (k, v) in args {
        t.insert(s(k), v.clone());
    }
    g.declare_queue(QueueDeclare {
        name: s(name),
        durable: true,
        arguments: t,
        ..QueueDeclare::default()
    })
    .expect("declare");
}

#[test]
fn a_policy_applies_at_once_and_dead_letters_what_a_lower_limit_drops() {
    let b = Broker::new();
    let g = guest(&b);
    declare(&g, "app.q", &[]);
    declare(&g, "dead", &[]);
    g.bind_queue("dead", "amq.fanout", s(""), FieldTable::new())
        .unwrap();
    publish(&g, "", "app.q", 10);
    assert!(set(
        &b,
        false,
        "dl",
        "^app",
        0,
        json!({"dead-letter-exchange": "amq.fanout"})
    ));
    assert_eq!(ready(&b, "app.q"), 10);
    // A higher-priority policy replaces it (policies never merge), so keep the DLX in it.
    assert!(set(
        &b,
        false,
        "cap",
        "^app",
        5,
        json!({"max-length": 4, "dead-letter-exchange": "amq.fanout"})
    ));
    assert_eq!(ready(&b, "app.q"), 4, "truncated from the head at once");
    assert_eq!(ready(&b, "dead"), 6, "and the dropped ones dead-lettered");
    let snap = b.vhost("/").unwrap().queue("app.q").unwrap().snapshot();
    assert_eq!(snap.policy.as_deref(), Some("cap"));
    assert_eq!(
        Value::Object(snap.policy_definition),
        json!({"max-length": 4, "dead-letter-exchange": "amq.fanout"})
    );
    // Updating a policy is not a creation.
    assert!(!set(&b, false, "cap", "^app", 5, json!({"max-length": 6})));
    publish(&g, "", "app.q", 5);
    assert_eq!(ready(&b, "app.q"), 6);
    // Cleared: the next matching policy applies again (no limit).
    assert!(b.delete_policy(false, "/", "cap").unwrap());
    assert!(!b.delete_policy(false, "/", "cap").unwrap());
    publish(&g, "", "app.q", 3);
    assert_eq!(ready(&b, "app.q"), 9);
    assert_eq!(
        b.vhost("/")
            .unwrap()
            .queue("app.q")
            .unwrap()
            .snapshot()
            .policy
            .as_deref(),
        Some("dl")
    );
}

#[test]
fn the_argument_and_the_operator_policy_bound_what_a_policy_allows() {
    let b = Broker::new();
    let g = guest(&b);
    declare(&g, "arg.q", &[("x-max-length", FieldValue::I32(3))]);
    declare(&g, "free.q", &[]);
    set(&b, false, "lenient", ".", 0, json!({"max-length": 5}));
    publish(&g, "", "arg.q", 8);
    publish(&g, "", "free.q", 8);
    assert_eq!(ready(&b, "arg.q"), 3, "the smaller of argument and policy");
    assert_eq!(ready(&b, "free.q"), 5);
    set(&b, true, "ops", ".", 0, json!({"max-length": 2}));
    assert_eq!(
        ready(&b, "free.q"),
        2,
        "the operator policy's limit is lower"
    );
    let snap = b.vhost("/").unwrap().queue("free.q").unwrap().snapshot();
    assert_eq!(snap.operator_policy.as_deref(), Some("ops"));
    assert_eq!(
        Value::Object(snap.policy_definition),
        json!({"max-length": 2})
    );
    // Operator policies take only limit keys.
    let bad = b.set_policy(
        true,
        PolicyFields {
            vhost: "/",
            name: "bad",
            pattern: &json!("."),
            apply_to: None,
            priority: None,
            definition: &json!({"overflow": "reject-publish"}),
        },
    );
    assert!(bad.is_err());
}

#[test]
fn a_policy_can_name_an_exchange_s_alternate_exchange() {
    let b = Broker::new();
    let g = guest(&b);
    for (name, kind) in [("in", "direct"), ("ae", "fanout")] {
        g.declare_exchange(ExchangeDeclare {
            name: s(name),
            kind: kind.into(),
            passive: false,
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::new(),
        })
        .unwrap();
    }
    declare(&g, "caught", &[]);
    g.bind_queue("caught", "ae", s(""), FieldTable::new())
        .unwrap();
    publish(&g, "in", "nowhere", 1);
    assert_eq!(ready(&b, "caught"), 0);
    let def = json!({"alternate-exchange": "ae"});
    b.set_policy(
        false,
        PolicyFields {
            vhost: "/",
            name: "ae",
            pattern: &json!("^in$"),
            apply_to: Some(&json!("exchanges")),
            priority: None,
            definition: &def,
        },
    )
    .unwrap();
    publish(&g, "in", "nowhere", 1);
    assert_eq!(ready(&b, "caught"), 1);
    assert_eq!(
        b.vhost("/")
            .unwrap()
            .exchange("in")
            .unwrap()
            .policy()
            .as_deref(),
        Some("ae")
    );
}

#[test]
fn policies_survive_a_restart_and_travel_in_definitions() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = Broker::open(dir.path(), SyncMode::Fsync).unwrap();
        let g = guest(&b);
        declare(&g, "kept", &[]);
        set(
            &b,
            false,
            "ttl",
            "^kept$",
            1,
            json!({"max-length": 1, "message-ttl": 60000}),
        );
        set(&b, true, "op", ".", 0, json!({"expires": 3600000}));
        b.close();
    }
    let b = Broker::open(dir.path(), SyncMode::Fsync).unwrap();
    let g = guest(&b);
    publish(&g, "", "kept", 3);
    assert_eq!(
        ready(&b, "kept"),
        1,
        "the recovered queue has its policy again"
    );
    let snap = b.vhost("/").unwrap().queue("kept").unwrap().snapshot();
    assert_eq!(snap.operator_policy.as_deref(), Some("op"));
    let exported = Definitions::export(&b, None);
    assert_eq!(exported["policies"][0]["name"], "ttl");
    assert_eq!(exported["policies"][0]["apply-to"], "all");
    assert_eq!(exported["parameters"][0]["component"], "operator_policy");
    assert_eq!(
        exported["parameters"][0]["value"]["definition"],
        json!({"expires": 3600000})
    );
    let fresh = Broker::empty();
    Definitions::parse(&exported.to_string())
        .unwrap()
        .apply(&fresh)
        .unwrap();
    assert_eq!(Definitions::export(&fresh, None), exported);
    b.close();
}
