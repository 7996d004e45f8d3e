//! Policies and operator policies, with RabbitMQ 3.10's rules (see `docs/dev/policies.md`):
//! validation and its texts, which policy applies to a queue or exchange, the merge of an
//! operator policy into the user policy, and how a policy value and an `x-` argument resolve.
//!
//! A leaf module: it knows names, kinds and queue types, not queues.

use regex::bytes::Regex;
use serde_json::{Map, Value};

use crate::error::{BrokerError, Result};
use crate::queue_args::{Overflow, QueueArgs, QueueType};

/// What a policy applies to. 3.10 knows the first three; the queue-type values are 3.12's,
/// accepted because rabbitmqadmin v2 sends them, with 3.12's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyTo {
    Queues,
    Exchanges,
    All,
    ClassicQueues,
    QuorumQueues,
    Streams,
}

impl ApplyTo {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queues" => ApplyTo::Queues,
            "exchanges" => ApplyTo::Exchanges,
            "all" => ApplyTo::All,
            "classic_queues" => ApplyTo::ClassicQueues,
            "quorum_queues" => ApplyTo::QuorumQueues,
            "streams" => ApplyTo::Streams,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ApplyTo::Queues => "queues",
            ApplyTo::Exchanges => "exchanges",
            ApplyTo::All => "all",
            ApplyTo::ClassicQueues => "classic_queues",
            ApplyTo::QuorumQueues => "quorum_queues",
            ApplyTo::Streams => "streams",
        }
    }
}

/// What a policy is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Queue(QueueType),
    Exchange,
}

/// A validated policy (or operator policy).
#[derive(Debug, Clone)]
pub struct Policy {
    pub vhost: String,
    pub name: String,
    pub pattern: String,
    regex: Regex,
    pub apply_to: ApplyTo,
    /// Any JSON number, as RabbitMQ allows.
    pub priority: f64,
    /// The definition as given (keys validated).
    pub definition: Map<String, Value>,
}

/// Keys a user policy may hold (RabbitMQ 3.10's validators).
const POLICY_KEYS: &[&str] = &[
    "alternate-exchange",
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "dead-letter-strategy",
    "message-ttl",
    "expires",
    "max-length",
    "max-length-bytes",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "queue-mode",
    "queue-version",
    "overflow",
    "delivery-limit",
    "max-age",
    "stream-max-segment-size-bytes",
    "queue-leader-locator",
    "initial-cluster-size",
    "queue-master-locator",
    // RabbitMQ 3.12's; the operators expect it.
    "consumer-timeout",
];

/// Keys an operator policy may hold in 3.10.
const OPERATOR_KEYS: &[&str] = &[
    "expires",
    "message-ttl",
    "max-length",
    "max-length-bytes",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "delivery-limit",
];

/// Keys that make a policy not apply to a queue of the type (`unsupported_policies`).
fn unsupported(t: QueueType) -> &'static [&'static str] {
    match t {
        QueueType::Classic => &[
            "max-age",
            "stream-max-segment-size-bytes",
            "queue-leader-locator",
            "initial-cluster-size",
            "delivery-limit",
            "dead-letter-strategy",
        ],
        QueueType::Quorum => &[
            "max-priority",
            "queue-mode",
            "single-active-consumer",
            "queue-master-locator",
            "max-age",
            "stream-max-segment-size-bytes",
            "initial-cluster-size",
        ],
        QueueType::Stream => &[
            "expires",
            "message-ttl",
            "dead-letter-exchange",
            "dead-letter-routing-key",
            "max-length",
            "max-in-memory-length",
            "max-in-memory-bytes",
            "max-priority",
            "overflow",
            "queue-mode",
            "single-active-consumer",
            "delivery-limit",
            "queue-master-locator",
            "dead-letter-strategy",
        ],
    }
}

/// A JSON value as Erlang's `~p` prints it (what RabbitMQ's error texts show).
fn erlang(v: &Value) -> String {
    match v {
        Value::String(s) => format!("<<\"{s}\">>"),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(erlang).collect::<Vec<_>>().join(",")),
        Value::Object(o) => format!(
            "#{{{}}}",
            o.iter()
                .map(|(k, v)| format!("<<\"{k}\">> => {}", erlang(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

fn non_neg_int(v: &Value) -> bool {
    v.as_u64().is_some()
}

/// The error text for a bad value of `key`, if it is bad.
fn check_value(key: &str, v: &Value) -> Option<String> {
    let one_of = |allowed: &[&str]| v.as_str().is_some_and(|s| allowed.contains(&s));
    let (ok, what) = match key {
        "alternate-exchange" => (v.is_string(), "is not a valid alternate exchange name"),
        "dead-letter-exchange" => (v.is_string(), "is not a valid dead letter exchange name"),
        "dead-letter-routing-key" => (v.is_string(), "is not a valid dead letter routing key"),
        "dead-letter-strategy" => (
            one_of(&["at-most-once", "at-least-once"]),
            "is not a valid dead letter strategy",
        ),
        "message-ttl" => (non_neg_int(v), "is not a valid message TTL"),
        "expires" => (
            v.as_u64().is_some_and(|n| n >= 1),
            "is not a valid queue expiry",
        ),
        "max-length" => (non_neg_int(v), "is not a valid maximum length"),
        "max-length-bytes" => (non_neg_int(v), "is not a valid maximum length in bytes"),
        "max-in-memory-length" | "max-in-memory-bytes" => {
            (non_neg_int(v), "is not a valid maximum memory in bytes")
        }
        "queue-mode" => (
            one_of(&["default", "lazy"]),
            "is not a valid queue-mode value",
        ),
        "queue-version" => (
            v.as_u64().is_some_and(|n| n == 1 || n == 2),
            "is not a valid queue-version value",
        ),
        "overflow" => (
            one_of(&["drop-head", "reject-publish", "reject-publish-dlx"]),
            "is not a valid overflow value",
        ),
        "delivery-limit" => (non_neg_int(v), "is not a valid delivery limit"),
        "max-age" => (v.is_string(), "is not a valid max age"),
        "stream-max-segment-size-bytes" => (
            v.as_u64().is_some_and(|n| n <= 3_000_000_000),
            "is not a valid segment size",
        ),
        "queue-leader-locator" => (
            one_of(&["client-local", "balanced", "random", "least-leaders"]),
            "is not a valid queue leader locator value",
        ),
        "initial-cluster-size" => (non_neg_int(v), "is not a valid cluster size"),
        "consumer-timeout" => (non_neg_int(v), "is not a valid consumer timeout"),
        "queue-master-locator" => (
            one_of(&["client-local", "min-masters", "random"]),
            "invalid queue-master-locator value",
        ),
        _ => (true, ""),
    };
    (!ok).then(|| format!("{} {what}", erlang(v)))
}

/// RabbitMQ's text for a definition, or None when it is valid: the first bad value in sorted
/// key order, else the keys it does not know.
fn check_definition(def: &Map<String, Value>, operator: bool) -> Option<String> {
    if def.is_empty() {
        return Some("no policy provided".into());
    }
    let known = if operator { OPERATOR_KEYS } else { POLICY_KEYS };
    let mut keys: Vec<&String> = def.keys().collect();
    keys.sort();
    for k in &keys {
        if known.contains(&k.as_str()) {
            if let Some(e) = check_value(k, &def[k.as_str()]) {
                return Some(e);
            }
        }
    }
    let unknown: Vec<String> = keys
        .iter()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| format!("{{<<\"{k}\">>,{}}}", erlang(&def[k.as_str()])))
        .collect();
    (!unknown.is_empty())
        .then(|| format!("[{}] are not recognised policy settings", unknown.join(",")))
}

impl Policy {
    /// Validates a policy as RabbitMQ does, reporting every failing field in its order
    /// (definition, apply-to, pattern, priority) as one `Validation failed` text.
    pub fn new(
        vhost: &str,
        name: &str,
        pattern: &Value,
        apply_to: Option<&Value>,
        priority: Option<&Value>,
        definition: &Value,
        operator: bool,
    ) -> Result<Self> {
        let mut errors = Vec::new();
        let def = match definition {
            Value::Object(m) => {
                if let Some(e) = check_definition(m, operator) {
                    errors.push(e);
                }
                m.clone()
            }
            other => {
                errors.push(format!(
                    "definition must be an object, was {}",
                    erlang(other)
                ));
                Map::new()
            }
        };
        let apply = match apply_to {
            None => Some(ApplyTo::All),
            Some(v) => v.as_str().and_then(ApplyTo::parse),
        };
        if apply.is_none() {
            let shown = match apply_to {
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => String::new(),
            };
            errors.push(format!(
                "apply-to '{shown}' unrecognised; should be 'queues', 'exchanges' or 'all'"
            ));
        }
        let regex = match pattern {
            Value::String(p) => match Regex::new(p) {
                Ok(r) => Some(r),
                Err(e) => {
                    errors.push(format!(
                        "pattern should be regular expression but is invalid: {e}"
                    ));
                    None
                }
            },
            other => {
                errors.push(format!(
                    "pattern should be a binary but was {}",
                    erlang(other)
                ));
                None
            }
        };
        let prio = match priority {
            None => Some(0.0),
            Some(Value::Number(n)) => n.as_f64(),
            Some(_) => None,
        };
        if prio.is_none() {
            if let Some(v) = priority {
                errors.push(format!(
                    "priority should be a number, actually was {}",
                    erlang(v)
                ));
            }
        }
        match (errors.is_empty(), regex, apply, prio) {
            (true, Some(regex), Some(apply_to), Some(priority)) => Ok(Policy {
                vhost: vhost.to_owned(),
                name: name.to_owned(),
                pattern: pattern.as_str().unwrap_or_default().to_owned(),
                regex,
                apply_to,
                priority,
                definition: def,
            }),
            _ => {
                let mut text = "Validation failed\n\n".to_owned();
                for e in errors {
                    text.push_str(&e);
                    text.push('\n');
                }
                Err(BrokerError::Invalid(text))
            }
        }
    }

    /// A policy from its JSON record (`{"vhost","name","pattern","apply-to","definition",
    /// "priority"}`), as the API lists it and definitions carry it.
    pub fn from_json(v: &Value, operator: bool) -> Result<Self> {
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
        Policy::new(
            text("vhost"),
            text("name"),
            v.get("pattern").unwrap_or(&Value::Null),
            v.get("apply-to"),
            v.get("priority"),
            v.get("definition").unwrap_or(&Value::Null),
            operator,
        )
    }

    /// Whether this policy applies to `name` of kind `target` (vhost already matched).
    pub fn matches(&self, name: &str, target: Target) -> bool {
        let kind_ok = matches!(
            (self.apply_to, target),
            (ApplyTo::All, _)
                | (ApplyTo::Exchanges, Target::Exchange)
                | (ApplyTo::Queues, Target::Queue(_))
                | (ApplyTo::ClassicQueues, Target::Queue(QueueType::Classic))
                | (ApplyTo::QuorumQueues, Target::Queue(QueueType::Quorum))
                | (ApplyTo::Streams, Target::Queue(QueueType::Stream))
        );
        if !kind_ok || !self.regex.is_match(name.as_bytes()) {
            return false;
        }
        match target {
            // A key the queue's type does not support rules the whole policy out.
            Target::Queue(t) => !self
                .definition
                .keys()
                .any(|k| unsupported(t).contains(&k.as_str())),
            Target::Exchange => true,
        }
    }

    /// The record's JSON, as the API lists and definitions export it.
    pub fn to_json(&self, with_vhost: bool) -> Value {
        let mut m = Map::new();
        if with_vhost {
            m.insert("vhost".into(), Value::from(self.vhost.clone()));
        }
        m.insert("name".into(), Value::from(self.name.clone()));
        m.insert("pattern".into(), Value::from(self.pattern.clone()));
        m.insert("apply-to".into(), Value::from(self.apply_to.as_str()));
        m.insert("definition".into(), Value::Object(self.definition.clone()));
        m.insert("priority".into(), priority_json(self.priority));
        Value::Object(m)
    }
}

fn priority_json(p: f64) -> Value {
    if p.fract() == 0.0 && p.abs() < 1e15 {
        Value::from(p as i64)
    } else {
        serde_json::Number::from_f64(p).map_or(Value::from(0), Value::Number)
    }
}

/// The policy that applies: the highest priority among those that match; on equal priority
/// the smallest name (RabbitMQ leaves this to hash order; Warren picks a fixed rule).
pub fn select<'a>(policies: &'a [Policy], name: &str, target: Target) -> Option<&'a Policy> {
    policies
        .iter()
        .filter(|p| p.matches(name, target))
        .max_by(|a, b| {
            a.priority
                .partial_cmp(&b.priority)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| b.name.cmp(&a.name))
        })
}

/// The user policy's definition with the operator policy merged in: for each key both hold,
/// the smaller value (every operator key is a limit).
pub fn merge(user: Option<&Policy>, operator: Option<&Policy>) -> Map<String, Value> {
    let mut out = user.map(|p| p.definition.clone()).unwrap_or_default();
    if let Some(op) = operator {
        for (k, v) in &op.definition {
            let merged = match (out.get(k).and_then(Value::as_u64), v.as_u64()) {
                (Some(a), Some(b)) => Value::from(a.min(b)),
                _ => v.clone(),
            };
            out.insert(k.clone(), merged);
        }
    }
    out
}

/// A queue's settings with an effective policy definition applied to its declared arguments,
/// key by key as RabbitMQ resolves them for its type.
pub fn resolve(declared: &QueueArgs, def: &Map<String, Value>) -> QueueArgs {
    let mut out = declared.clone();
    let quorum = declared.queue_type == QueueType::Quorum;
    let num = |k: &str| def.get(k).and_then(Value::as_u64);
    let text = |k: &str| {
        def.get(k)
            .and_then(Value::as_str)
            .and_then(|s| warren_codec::ShortString::try_from(s).ok())
    };
    let min = |arg: Option<u64>, pol: Option<u64>| match (arg, pol) {
        (Some(a), Some(p)) => Some(a.min(p)),
        (a, p) => a.or(p),
    };
    out.message_ttl = min(declared.message_ttl, num("message-ttl"));
    out.max_length = min(declared.max_length, num("max-length"));
    out.max_length_bytes = min(declared.max_length_bytes, num("max-length-bytes"));
    out.delivery_limit = min(declared.delivery_limit, num("delivery-limit"));
    out.consumer_timeout = min(declared.consumer_timeout, num("consumer-timeout"));
    out.expires = match (quorum, num("expires")) {
        // Quorum queues: the policy wins, even over a smaller argument.
        (true, Some(p)) => Some(p),
        (_, p) => min(declared.expires, p),
    };
    let policy_overflow = def
        .get("overflow")
        .and_then(Value::as_str)
        .and_then(|s| match s {
            "drop-head" => Some(Overflow::DropHead),
            "reject-publish" => Some(Overflow::RejectPublish),
            "reject-publish-dlx" => Some(Overflow::RejectPublishDlx),
            _ => None,
        });
    out.overflow = match (declared.overflow_declared, policy_overflow, quorum) {
        (_, Some(p), true) => p,
        (true, _, false) => declared.overflow,
        (false, Some(p), false) => p,
        _ => declared.overflow,
    };
    // The argument wins for dead-lettering, for every type.
    if declared.dead_letter_exchange.is_none() {
        out.dead_letter_exchange = text("dead-letter-exchange");
    }
    if declared.dead_letter_routing_key.is_none() {
        out.dead_letter_routing_key = text("dead-letter-routing-key");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use warren_codec::{FieldTable, FieldValue, ShortString};

    fn policy(name: &str, pattern: &str, prio: i64, def: Value) -> Policy {
        Policy::new(
            "/",
            name,
            &json!(pattern),
            None,
            Some(&json!(prio)),
            &def,
            false,
        )
        .expect("valid")
    }

    fn args(pairs: &[(&str, FieldValue)]) -> QueueArgs {
        let mut t = FieldTable::new();
        for (k, v) in pairs {
            t.insert(ShortString::try_from(*k).unwrap(), v.clone());
        }
        QueueArgs::parse(&t)
    }

    fn invalid(r: Result<Policy>) -> String {
        match r {
            Err(BrokerError::Invalid(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn validation_reports_rabbitmq_texts_in_its_order() {
        let e = invalid(Policy::new(
            "/",
            "p",
            &json!("("),
            Some(&json!("foo")),
            Some(&json!("x")),
            &json!({"max-length": "a"}),
            false,
        ));
        assert!(e.starts_with("Validation failed\n\n<<\"a\">> is not a valid maximum length\napply-to 'foo' unrecognised; should be 'queues', 'exchanges' or 'all'\npattern should be regular expression but is invalid"), "{e}");
        assert!(
            e.ends_with("priority should be a number, actually was <<\"x\">>\n"),
            "{e}"
        );
        // The first bad value in sorted key order; unknown keys only when values are fine.
        let e = invalid(Policy::new(
            "/",
            "p",
            &json!("."),
            None,
            None,
            &json!({"message-ttl": "x", "max-length": -1}),
            false,
        ));
        assert_eq!(e, "Validation failed\n\n-1 is not a valid maximum length\n");
        let e = invalid(Policy::new(
            "/",
            "p",
            &json!("."),
            None,
            None,
            &json!({"foo": 1, "message-ttl": -5}),
            false,
        ));
        assert_eq!(e, "Validation failed\n\n-5 is not a valid message TTL\n");
        let e = invalid(Policy::new(
            "/",
            "p",
            &json!("."),
            None,
            None,
            &json!({"foo": 1}),
            false,
        ));
        assert_eq!(
            e,
            "Validation failed\n\n[{<<\"foo\">>,1}] are not recognised policy settings\n"
        );
        let e = invalid(Policy::new(
            "/",
            "p",
            &json!("."),
            None,
            None,
            &json!({"expires": 0}),
            false,
        ));
        assert_eq!(e, "Validation failed\n\n0 is not a valid queue expiry\n");
        let e = invalid(Policy::new(
            "/",
            "p",
            &json!("."),
            None,
            None,
            &json!({}),
            false,
        ));
        assert_eq!(e, "Validation failed\n\nno policy provided\n");
        // Operator policies take only the seven limit keys.
        let e = invalid(Policy::new(
            "/",
            "p",
            &json!("."),
            None,
            None,
            &json!({"queue-mode": "lazy"}),
            true,
        ));
        assert_eq!(e, "Validation failed\n\n[{<<\"queue-mode\">>,<<\"lazy\">>}] are not recognised policy settings\n");
    }

    #[test]
    fn the_highest_priority_applicable_policy_wins() {
        let ps = vec![
            policy(
                "hi",
                "^app",
                10,
                json!({"queue-mode": "lazy", "max-length": 7}),
            ),
            policy("lo", "^app", 0, json!({"max-length": 2})),
        ];
        let q = |t| select(&ps, "app-x", Target::Queue(t)).map(|p| p.name.as_str());
        assert_eq!(q(QueueType::Classic), Some("hi"));
        // queue-mode is not a quorum key: the whole policy is skipped for quorum queues.
        assert_eq!(q(QueueType::Quorum), Some("lo"));
        // max-length is not a stream key.
        assert_eq!(q(QueueType::Stream), None);
        assert_eq!(
            select(&ps, "other", Target::Queue(QueueType::Classic)).map(|p| &p.name),
            None
        );
        // Unanchored, and equal priorities go to the smaller name.
        let ps = vec![
            policy("b", "pp", 1, json!({"max-length": 1})),
            policy("a", "pp", 1, json!({"max-length": 1})),
        ];
        assert_eq!(
            select(&ps, "xppx", Target::Exchange).map(|p| p.name.as_str()),
            Some("a")
        );
    }

    #[test]
    fn values_resolve_per_key_and_queue_type() {
        let user = policy(
            "u",
            ".",
            0,
            json!({"max-length": 3, "message-ttl": 120000, "dead-letter-exchange": "dlxB", "expires": 100000, "overflow": "drop-head"}),
        );
        let op = Policy::new(
            "/",
            "o",
            &json!("."),
            None,
            None,
            &json!({"max-length": 5, "message-ttl": 60000}),
            true,
        )
        .unwrap();
        let def = merge(Some(&user), Some(&op));
        assert_eq!(def["max-length"], 3);
        assert_eq!(def["message-ttl"], 60000);
        let classic = args(&[
            ("x-max-length", FieldValue::I32(4)),
            ("x-message-ttl", FieldValue::I32(1000)),
            ("x-dead-letter-exchange", FieldValue::from("dlxA")),
            ("x-expires", FieldValue::I32(600000)),
            ("x-overflow", FieldValue::from("reject-publish")),
        ]);
        let r = resolve(&classic, &def);
        assert_eq!(r.max_length, Some(3));
        assert_eq!(r.message_ttl, Some(1000));
        assert_eq!(
            r.dead_letter_exchange.as_ref().map(|s| s.as_str()),
            Some("dlxA")
        );
        assert_eq!(r.expires, Some(100000));
        assert_eq!(
            r.overflow,
            Overflow::RejectPublish,
            "the argument wins on classic queues"
        );
        let quorum = args(&[
            ("x-queue-type", FieldValue::from("quorum")),
            ("x-expires", FieldValue::I32(3000)),
            ("x-overflow", FieldValue::from("reject-publish")),
        ]);
        let r = resolve(&quorum, &def);
        assert_eq!(
            r.expires,
            Some(100000),
            "the policy wins on quorum queues, even larger"
        );
        assert_eq!(r.overflow, Overflow::DropHead);
        let plain = resolve(&args(&[]), &def);
        assert_eq!(
            plain.dead_letter_exchange.as_ref().map(|s| s.as_str()),
            Some("dlxB")
        );
    }
}
