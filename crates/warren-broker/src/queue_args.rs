//! Queue arguments: RabbitMQ's checks at declare time (in its order and words), and the
//! settings a queue runs with once declared.
//!
//! RabbitMQ reports a bad argument as `invalid arg 'x-message-ttl' for queue 'q' in vhost '/':
//! "expected integer, got longstr"`, the part after the colon being an Erlang term printed
//! with `~p` (`{value_negative,-1}`, `invalid_overflow`, a quoted string). The texts below were
//! checked against RabbitMQ 3.10.
//!
//! Each queue type accepts only some of the arguments RabbitMQ knows (`x-delivery-limit` is
//! for quorum queues, `x-max-priority` for classic ones); the others are refused with
//! "... of queue type rabbit_classic_queue". Arguments RabbitMQ does not know pass unchecked.

use warren_codec::{FieldTable, FieldValue, ShortString};

use crate::args::type_name;
use crate::error::{BrokerError, Result};
use crate::spec::QueueSpec;

/// The longest TTL or expiry RabbitMQ accepts: ten years in milliseconds.
pub const MAX_EXPIRY: i64 = 315_360_000_000;

/// The highest `x-max-priority` (RabbitMQ's `?MAX_SUPPORTED_PRIORITY`).
pub const MAX_PRIORITY: i64 = 255;

/// RabbitMQ's default consumer timeout: 30 minutes.
pub const DEFAULT_CONSUMER_TIMEOUT_MS: u64 = 30 * 60 * 1000;

/// What a queue does when a publish would take it past `x-max-length` or `x-max-length-bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop (or dead-letter) messages from the head to make room.
    #[default]
    DropHead,
    /// Refuse the publish (a `basic.nack` to a confirming publisher).
    RejectPublish,
    /// Refuse the publish and dead-letter the refused message.
    RejectPublishDlx,
}

/// The queue types Warren accepts (all run as Warren's own queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    #[default]
    Classic,
    Quorum,
    Stream,
}

impl QueueType {
    /// The type a declare names (`x-queue-type`), if it is one RabbitMQ knows.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "classic" => Some(QueueType::Classic),
            "quorum" => Some(QueueType::Quorum),
            "stream" => Some(QueueType::Stream),
            _ => None,
        }
    }

    /// The name the management API shows (`type`).
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }

    fn from_args(args: &FieldTable) -> Self {
        match args.get("x-queue-type").and_then(FieldValue::as_str) {
            Some("quorum") => QueueType::Quorum,
            Some("stream") => QueueType::Stream,
            _ => QueueType::Classic,
        }
    }

    /// RabbitMQ's module name, as it appears in errors.
    fn module(self) -> &'static str {
        match self {
            QueueType::Classic => "rabbit_classic_queue",
            QueueType::Quorum => "rabbit_quorum_queue",
            QueueType::Stream => "rabbit_stream_queue",
        }
    }

    /// The arguments this type accepts (`capabilities()` in RabbitMQ 3.10).
    fn supported(self) -> &'static [&'static str] {
        match self {
            QueueType::Classic => &[
                "x-expires",
                "x-message-ttl",
                "x-dead-letter-exchange",
                "x-dead-letter-routing-key",
                "x-max-length",
                "x-max-length-bytes",
                "x-max-priority",
                "x-overflow",
                "x-queue-mode",
                "x-queue-version",
                "x-single-active-consumer",
                "x-queue-type",
                "x-queue-master-locator",
            ],
            QueueType::Quorum => &[
                "x-dead-letter-exchange",
                "x-dead-letter-routing-key",
                "x-dead-letter-strategy",
                "x-expires",
                "x-max-length",
                "x-max-length-bytes",
                "x-max-in-memory-length",
                "x-max-in-memory-bytes",
                "x-overflow",
                "x-single-active-consumer",
                "x-queue-type",
                "x-quorum-initial-group-size",
                "x-delivery-limit",
                "x-message-ttl",
            ],
            QueueType::Stream => &[
                "x-max-length-bytes",
                "x-queue-type",
                "x-max-age",
                "x-stream-max-segment-size-bytes",
                "x-initial-cluster-size",
                "x-queue-leader-locator",
            ],
        }
    }
}

/// Every argument some queue type accepts: these are the ones checked against the type.
fn known(arg: &str) -> bool {
    [QueueType::Classic, QueueType::Quorum, QueueType::Stream]
        .iter()
        .any(|t| t.supported().contains(&arg))
}

/// The settings a declared queue runs with. Parsing is lenient (a value that does not fit is
/// ignored): declares are validated first, and a record restored from disk was validated when
/// it was declared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueArgs {
    pub queue_type: QueueType,
    /// `x-message-ttl`, in ms.
    pub message_ttl: Option<u64>,
    /// `x-expires`, in ms.
    pub expires: Option<u64>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    pub dead_letter_exchange: Option<ShortString>,
    pub dead_letter_routing_key: Option<ShortString>,
    /// `x-max-priority`: the queue has priority levels `0..=max`.
    pub max_priority: Option<u8>,
    pub single_active_consumer: bool,
    /// `x-delivery-limit` (quorum queues): deliveries after the first allowed before the
    /// message is dead-lettered.
    pub delivery_limit: Option<u64>,
    /// `x-consumer-timeout`, in ms.
    pub consumer_timeout: Option<u64>,
    /// Whether `x-overflow` was given (a policy's `overflow` then loses on classic queues).
    pub overflow_declared: bool,
}

/// An integer argument, of any of the integer types RabbitMQ accepts (not timestamps).
fn int(v: &FieldValue) -> Option<i64> {
    match v {
        FieldValue::Timestamp(_) => None,
        other => other.as_i64(),
    }
}

fn non_negative(args: &FieldTable, key: &str) -> Option<u64> {
    args.get(key)
        .and_then(int)
        .and_then(|v| u64::try_from(v).ok())
}

fn text(args: &FieldTable, key: &str) -> Option<ShortString> {
    match args.get(key) {
        Some(FieldValue::LongString(s)) => ShortString::from_bytes(s.0.clone()).ok(),
        _ => None,
    }
}

impl QueueArgs {
    pub fn parse(args: &FieldTable) -> Self {
        let queue_type = QueueType::from_args(args);
        let overflow = match args.get("x-overflow").and_then(FieldValue::as_str) {
            Some("reject-publish") => Overflow::RejectPublish,
            Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
            _ => Overflow::DropHead,
        };
        QueueArgs {
            queue_type,
            message_ttl: non_negative(args, "x-message-ttl"),
            expires: non_negative(args, "x-expires").filter(|v| *v > 0),
            max_length: non_negative(args, "x-max-length"),
            max_length_bytes: non_negative(args, "x-max-length-bytes"),
            overflow,
            dead_letter_exchange: text(args, "x-dead-letter-exchange"),
            dead_letter_routing_key: text(args, "x-dead-letter-routing-key"),
            max_priority: non_negative(args, "x-max-priority")
                .map(|p| p.min(MAX_PRIORITY as u64) as u8),
            single_active_consumer: args
                .get("x-single-active-consumer")
                .and_then(FieldValue::as_bool)
                .unwrap_or(false),
            delivery_limit: (queue_type == QueueType::Quorum)
                .then(|| non_negative(args, "x-delivery-limit"))
                .flatten(),
            consumer_timeout: non_negative(args, "x-consumer-timeout"),
            overflow_declared: args.get("x-overflow").is_some(),
        }
    }

    /// Whether messages in this queue can expire (the queue's TTL; a message's own
    /// `expiration` is looked at separately).
    pub fn has_ttl(&self) -> bool {
        self.message_ttl.is_some()
    }
}

/// An Erlang term as RabbitMQ prints the reasons of its argument errors.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Term {
    Atom(&'static str),
    /// `{tag,value}`.
    Tagged(&'static str, Box<Term>),
    Int(i128),
    /// A string printed with `~p`: in double quotes.
    Str(String),
}

impl std::fmt::Display for Term {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Term::Atom(a) => f.write_str(a),
            Term::Tagged(tag, v) => write!(f, "{{{tag},{v}}}"),
            Term::Int(i) => write!(f, "{i}"),
            Term::Str(s) => {
                f.write_str("\"")?;
                for c in s.chars() {
                    match c {
                        '"' => f.write_str("\\\"")?,
                        '\\' => f.write_str("\\\\")?,
                        '\n' => f.write_str("\\n")?,
                        '\t' => f.write_str("\\t")?,
                        c => write!(f, "{c}")?,
                    }
                }
                f.write_str("\"")
            }
        }
    }
}

fn tagged(tag: &'static str, v: Term) -> Term {
    Term::Tagged(tag, Box::new(v))
}

/// `check_int_arg`: any integer type.
fn check_int(v: &FieldValue) -> Result<i64, Term> {
    int(v).ok_or_else(|| Term::Str(format!("expected integer, got {}", type_name(v))))
}

fn check_non_neg_int(v: &FieldValue) -> Result<(), Term> {
    let n = check_int(v)?;
    if n < 0 {
        return Err(tagged("value_negative", Term::Int(n.into())));
    }
    Ok(())
}

/// `rabbit_misc:check_expiry`.
fn check_expiry(n: i64) -> Result<(), Term> {
    if n < 0 {
        Err(tagged("value_negative", Term::Int(n.into())))
    } else if n > MAX_EXPIRY {
        Err(tagged("value_too_large", Term::Int(n.into())))
    } else {
        Ok(())
    }
}

fn check_expires(v: &FieldValue) -> Result<(), Term> {
    let n = check_int(v)?;
    if n == 0 {
        return Err(tagged("value_zero", Term::Int(0)));
    }
    check_expiry(n)
}

fn check_message_ttl(v: &FieldValue) -> Result<(), Term> {
    check_expiry(check_int(v)?)
}

fn check_longstr(v: &FieldValue) -> Result<(), Term> {
    match v {
        FieldValue::LongString(_) => Ok(()),
        other => Err(tagged("unacceptable_type", Term::Atom(type_name(other)))),
    }
}

fn check_bool(v: &FieldValue) -> Result<(), Term> {
    match v {
        FieldValue::Bool(_) => Ok(()),
        other => Err(tagged("unacceptable_type", Term::Atom(type_name(other)))),
    }
}

fn check_max_priority(v: &FieldValue) -> Result<(), Term> {
    check_non_neg_int(v)?;
    let n = check_int(v)?;
    if n > MAX_PRIORITY {
        return Err(tagged("max_value_exceeded", Term::Int(n.into())));
    }
    Ok(())
}

fn check_overflow(v: &FieldValue) -> Result<(), Term> {
    check_longstr(v)?;
    match v.as_str() {
        Some("drop-head" | "reject-publish" | "reject-publish-dlx") => Ok(()),
        _ => Err(Term::Atom("invalid_overflow")),
    }
}

fn check_queue_mode(v: &FieldValue) -> Result<(), Term> {
    check_longstr(v)?;
    match v {
        FieldValue::LongString(s) if matches!(s.as_str(), Some("default" | "lazy")) => Ok(()),
        FieldValue::LongString(s) => Err(Term::Str(format!(
            "unsupported queue mode '{}'",
            String::from_utf8_lossy(s.as_bytes())
        ))),
        _ => Ok(()),
    }
}

type Check = fn(&FieldValue) -> Result<(), Term>;

/// RabbitMQ's declare-time checks, in its order (`rabbit_amqqueue:declare_args/0`).
/// `x-dead-letter-routing-key` needs the whole table and is handled in place.
const CHECKS: &[(&str, Check)] = &[
    ("x-expires", check_expires),
    ("x-message-ttl", check_message_ttl),
    ("x-dead-letter-exchange", check_longstr),
    ("x-dead-letter-routing-key", check_longstr),
    ("x-max-length", check_non_neg_int),
    ("x-max-length-bytes", check_non_neg_int),
    ("x-max-in-memory-length", check_non_neg_int),
    ("x-max-in-memory-bytes", check_non_neg_int),
    ("x-max-priority", check_max_priority),
    ("x-overflow", check_overflow),
    ("x-queue-mode", check_queue_mode),
    ("x-single-active-consumer", check_bool),
];

fn resource(spec: &QueueSpec, vhost: &str) -> String {
    format!("queue '{}' in vhost '{vhost}'", spec.name)
}

/// RabbitMQ's checks of a declare's queue type and of the properties that type allows, in its
/// order and words. (Warren runs every type as its own queue for now, so that applications
/// declaring them work unchanged.)
pub fn check_type(spec: &QueueSpec, vhost: &str) -> Result<()> {
    let queue = resource(spec, vhost);
    let kind = match spec.arguments.get("x-queue-type") {
        None => QueueType::Classic,
        Some(FieldValue::LongString(s)) => match s.as_str().and_then(QueueType::parse) {
            Some(t) => t,
            None => {
                return Err(BrokerError::PreconditionFailed(format!(
                    "invalid arg 'x-queue-type' for {queue}: \"unsupported queue type '{}'\"",
                    String::from_utf8_lossy(s.as_bytes())
                )))
            }
        },
        Some(other) => {
            return Err(BrokerError::PreconditionFailed(format!(
                "invalid arg 'x-queue-type' for {queue}: {{unacceptable_type,{}}}",
                type_name(other)
            )))
        }
    };
    if kind != QueueType::Classic {
        // Replicated types live beyond any one connection and must survive restarts.
        let invalid = if spec.auto_delete {
            Some("auto-delete")
        } else if spec.exclusive {
            Some("exclusive-owner")
        } else if !spec.durable {
            Some("non-durable")
        } else {
            None
        };
        if let Some(property) = invalid {
            return Err(BrokerError::PreconditionFailed(format!(
                "invalid property '{property}' for {queue}"
            )));
        }
    }
    Ok(())
}

/// Checks a new queue's arguments as RabbitMQ does; a 406 in its words if one is wrong.
pub fn validate(spec: &QueueSpec, vhost: &str) -> Result<()> {
    let args = &spec.arguments;
    // The channel checks the dead-letter exchange's type before anything else.
    if let Some(v) = args.get("x-dead-letter-exchange") {
        if !matches!(v, FieldValue::LongString(_)) {
            return Err(BrokerError::PreconditionFailed(format!(
                "invalid type '{}' for arg 'x-dead-letter-exchange' in {}",
                type_name(v),
                resource(spec, vhost)
            )));
        }
    }
    let queue_type = QueueType::from_args(args);
    // Replicated types refuse what they do not support before checking values; classic
    // queues check values first (as observed on RabbitMQ 3.10).
    if queue_type != QueueType::Classic {
        check_supported(spec, vhost, queue_type)?;
    }
    for (key, check) in CHECKS {
        let Some(v) = args.get(key) else { continue };
        let mut result = check(v);
        if *key == "x-dead-letter-routing-key"
            && result.is_ok()
            && args.get("x-dead-letter-exchange").is_none()
        {
            result = Err(Term::Atom("routing_key_but_no_dlx_defined"));
        }
        if let Err(reason) = result {
            return Err(BrokerError::PreconditionFailed(format!(
                "invalid arg '{key}' for {}: {reason}",
                resource(spec, vhost)
            )));
        }
    }
    if queue_type == QueueType::Classic {
        check_supported(spec, vhost, queue_type)?;
    }
    Ok(())
}

fn check_supported(spec: &QueueSpec, vhost: &str, queue_type: QueueType) -> Result<()> {
    let supported = queue_type.supported();
    for (key, _) in spec.arguments.iter() {
        let key = key.as_str();
        if known(key) && !supported.contains(&key) {
            return Err(BrokerError::PreconditionFailed(format!(
                "invalid arg '{key}' for {} of queue type {}",
                resource(spec, vhost),
                queue_type.module()
            )));
        }
    }
    Ok(())
}

/// Checks `basic.consume` arguments (`x-priority` must be an integer) and returns the
/// consumer's priority.
pub fn consumer_priority(args: &FieldTable, queue: &str, vhost: &str) -> Result<i64> {
    let invalid = |key: &str, reason: Term| {
        BrokerError::PreconditionFailed(format!(
            "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {reason}"
        ))
    };
    let priority = match args.get("x-priority") {
        Some(v) => check_int(v).map_err(|r| invalid("x-priority", r))?,
        None => 0,
    };
    if let Some(v) = args.get("x-cancel-on-ha-failover") {
        check_bool(v).map_err(|r| invalid("x-cancel-on-ha-failover", r))?;
    }
    Ok(priority)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_codec::{Decimal, LongString};

    fn spec(entries: &[(&'static str, FieldValue)]) -> QueueSpec {
        let mut arguments = FieldTable::new();
        for (k, v) in entries {
            arguments.insert(ShortString::from_static(k), v.clone());
        }
        QueueSpec {
            name: ShortString::from_static("q"),
            durable: false,
            exclusive: false,
            auto_delete: false,
            arguments,
        }
    }

    fn error(entries: &[(&'static str, FieldValue)]) -> String {
        match validate(&spec(entries), "/") {
            Err(BrokerError::PreconditionFailed(t)) => t,
            other => panic!("expected a 406, got {other:?}"),
        }
    }

    fn s(v: &str) -> FieldValue {
        FieldValue::LongString(LongString::from(v))
    }

    #[test]
    fn texts_match_rabbitmq() {
        let p = "invalid arg";
        assert_eq!(
            error(&[("x-message-ttl", s("abc"))]),
            format!(
                "{p} 'x-message-ttl' for queue 'q' in vhost '/': \"expected integer, got longstr\""
            )
        );
        assert_eq!(
            error(&[("x-message-ttl", FieldValue::I32(-1))]),
            format!("{p} 'x-message-ttl' for queue 'q' in vhost '/': {{value_negative,-1}}")
        );
        assert_eq!(
            error(&[(
                "x-message-ttl",
                FieldValue::Decimal(Decimal {
                    scale: 1,
                    value: 15
                })
            )]),
            format!(
                "{p} 'x-message-ttl' for queue 'q' in vhost '/': \"expected integer, got decimal\""
            )
        );
        assert_eq!(
            error(&[("x-message-ttl", FieldValue::I64(315_360_000_001))]),
            format!(
                "{p} 'x-message-ttl' for queue 'q' in vhost '/': {{value_too_large,315360000001}}"
            )
        );
        assert_eq!(
            error(&[("x-expires", FieldValue::I32(0))]),
            format!("{p} 'x-expires' for queue 'q' in vhost '/': {{value_zero,0}}")
        );
        assert_eq!(
            error(&[("x-overflow", s("foo"))]),
            format!("{p} 'x-overflow' for queue 'q' in vhost '/': invalid_overflow")
        );
        assert_eq!(
            error(&[("x-overflow", FieldValue::I32(1))]),
            format!("{p} 'x-overflow' for queue 'q' in vhost '/': {{unacceptable_type,signedint}}")
        );
        assert_eq!(
            error(&[("x-dead-letter-exchange", FieldValue::I32(1))]),
            "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'"
        );
        assert_eq!(
            error(&[("x-dead-letter-routing-key", s("k"))]),
            format!("{p} 'x-dead-letter-routing-key' for queue 'q' in vhost '/': routing_key_but_no_dlx_defined")
        );
        assert_eq!(
            error(&[("x-max-priority", FieldValue::I32(256))]),
            format!("{p} 'x-max-priority' for queue 'q' in vhost '/': {{max_value_exceeded,256}}")
        );
        assert_eq!(
            error(&[("x-single-active-consumer", s("true"))]),
            format!("{p} 'x-single-active-consumer' for queue 'q' in vhost '/': {{unacceptable_type,longstr}}")
        );
        assert_eq!(
            error(&[("x-queue-mode", s("foo"))]),
            format!(
                "{p} 'x-queue-mode' for queue 'q' in vhost '/': \"unsupported queue mode 'foo'\""
            )
        );
        assert_eq!(
            error(&[("x-delivery-limit", FieldValue::I32(1))]),
            format!("{p} 'x-delivery-limit' for queue 'q' in vhost '/' of queue type rabbit_classic_queue")
        );
    }

    #[test]
    fn order_follows_rabbitmq() {
        // Values before the classic type's refusals...
        assert!(error(&[
            ("x-delivery-limit", FieldValue::I32(1)),
            ("x-message-ttl", s("x"))
        ])
        .contains("'x-message-ttl'"));
        // ...but a quorum queue refuses what it does not support first.
        assert!(
            error(&[("x-queue-type", s("quorum")), ("x-max-priority", s("x"))])
                .ends_with("of queue type rabbit_quorum_queue")
        );
        assert!(error(&[("x-message-ttl", s("x")), ("x-expires", s("x"))]).contains("'x-expires'"));
    }

    #[test]
    fn good_arguments_pass_and_parse() {
        let sp = spec(&[
            ("x-message-ttl", FieldValue::I32(0)),
            ("x-max-length", FieldValue::I64(0)),
            ("x-max-priority", FieldValue::U8(10)),
            ("x-dead-letter-exchange", s("")),
            ("x-dead-letter-routing-key", s("k")),
            ("x-overflow", s("reject-publish-dlx")),
            ("x-consumer-timeout", s("anything")),
            ("x-unknown", FieldValue::Void),
        ]);
        validate(&sp, "/").expect("valid");
        let a = QueueArgs::parse(&sp.arguments);
        assert_eq!(a.message_ttl, Some(0));
        assert_eq!(a.max_length, Some(0));
        assert_eq!(a.max_priority, Some(10));
        assert_eq!(a.overflow, Overflow::RejectPublishDlx);
        assert_eq!(
            a.dead_letter_exchange.as_ref().map(|s| s.as_str()),
            Some("")
        );
        assert_eq!(a.consumer_timeout, None);
    }

    #[test]
    fn consumer_arguments() {
        let mut t = FieldTable::new();
        t.insert(ShortString::from_static("x-priority"), s("x"));
        assert_eq!(
            consumer_priority(&t, "q", "/"),
            Err(BrokerError::PreconditionFailed(
                "invalid arg 'x-priority' for queue 'q' in vhost '/': \"expected integer, got longstr\"".into()
            ))
        );
        t.insert(ShortString::from_static("x-priority"), FieldValue::I64(-5));
        assert_eq!(consumer_priority(&t, "q", "/"), Ok(-5));
    }
}
