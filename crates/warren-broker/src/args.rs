//! Declare arguments on redeclare: RabbitMQ compares only the arguments it knows for the kind
//! of entity (others may differ freely), treats all integer widths as one type, and words a
//! difference in its own way ("received '2000' but current is '1000'", "received none but
//! current is the value '1000' of type 'signedint'").

use warren_codec::{FieldTable, FieldValue, ShortString};

/// The exchange arguments RabbitMQ compares (`rabbit_exchange:assert_equivalence`).
pub const EXCHANGE_ARGS: &[&str] = &["alternate-exchange"];

/// The queue arguments RabbitMQ compares for its classic queues (`x-queue-type` is compared
/// separately, with its default).
pub const QUEUE_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-single-active-consumer",
    "x-queue-master-locator",
];

/// A difference: the argument's name, then the received and current values as RabbitMQ
/// prints them (quotes included).
pub type Difference = (String, String, String);

/// The first of `keys` whose value differs between `current` and `received`.
pub fn difference(
    current: &FieldTable,
    received: &FieldTable,
    keys: &[&str],
) -> Option<Difference> {
    keys.iter()
        .find_map(|key| compare(key, current.get(key), received.get(key)))
}

/// `x-queue-type`: "classic" is the default, so it equals no type at all.
pub fn queue_type_difference(current: &FieldTable, received: &FieldTable) -> Option<Difference> {
    let declared = |t: &'_ FieldTable| {
        t.get("x-queue-type")
            .filter(|v| v.as_str() != Some("classic"))
            .cloned()
    };
    compare(
        "x-queue-type",
        declared(current).as_ref(),
        declared(received).as_ref(),
    )
}

fn compare(
    key: &str,
    current: Option<&FieldValue>,
    received: Option<&FieldValue>,
) -> Option<Difference> {
    match (current, received) {
        (None, None) => None,
        (Some(c), Some(r)) if same(c, r) => None,
        (Some(c), Some(r)) => Some((key.to_owned(), quoted(r), quoted(c))),
        (c, r) => Some((key.to_owned(), described(r), described(c))),
    }
}

/// Equal values, counting integers of any width as one type (RabbitMQ's `type_class`).
fn same(a: &FieldValue, b: &FieldValue) -> bool {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// A value alone, as in "received '2000'".
fn quoted(v: &FieldValue) -> String {
    format!("'{}'", plain(v))
}

/// A value that the other side lacks, as in "the value '1000' of type 'signedint'"; "none"
/// when absent.
fn described(v: Option<&FieldValue>) -> String {
    match v {
        None => "none".into(),
        Some(v) => format!("the value '{}' of type '{}'", plain(v), type_name(v)),
    }
}

fn plain(v: &FieldValue) -> String {
    match v {
        FieldValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        FieldValue::Bool(b) => b.to_string(),
        other => match other.as_i64() {
            Some(i) => i.to_string(),
            None => format!("{other:?}"),
        },
    }
}

/// RabbitMQ's names for field types.
pub fn type_name(v: &FieldValue) -> &'static str {
    match v {
        FieldValue::Bool(_) => "bool",
        FieldValue::I8(_) => "byte",
        FieldValue::U8(_) => "unsignedbyte",
        FieldValue::I16(_) => "short",
        FieldValue::U16(_) => "unsignedshort",
        FieldValue::I32(_) => "signedint",
        FieldValue::U32(_) => "unsignedint",
        FieldValue::I64(_) => "long",
        FieldValue::F32(_) => "float",
        FieldValue::F64(_) => "double",
        FieldValue::Decimal(_) => "decimal",
        FieldValue::LongString(_) => "longstr",
        FieldValue::Array(_) => "array",
        FieldValue::Timestamp(_) => "timestamp",
        FieldValue::Table(_) => "table",
        FieldValue::Void => "void",
        FieldValue::ByteArray(_) => "binary",
    }
}

/// RabbitMQ's `rabbit_misc:set_table_value`: replace or append, then sort by key.
pub fn set_table_value(t: &mut FieldTable, k: ShortString, v: FieldValue) {
    t.insert(k, v);
    sort_table(t);
}

pub fn sort_table(t: &mut FieldTable) {
    t.0.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(entries: &[(&'static str, FieldValue)]) -> FieldTable {
        let mut table = FieldTable::new();
        for (k, v) in entries {
            table.insert(warren_codec::ShortString::from_static(k), v.clone());
        }
        table
    }

    #[test]
    fn unknown_arguments_are_not_compared() {
        let a = t(&[("x-foo", FieldValue::I32(1))]);
        let b = t(&[("x-foo", FieldValue::I32(2))]);
        assert_eq!(difference(&a, &b, QUEUE_ARGS), None);
    }

    #[test]
    fn integer_widths_are_one_type() {
        let a = t(&[("x-message-ttl", FieldValue::I32(1000))]);
        let b = t(&[("x-message-ttl", FieldValue::I64(1000))]);
        assert_eq!(difference(&a, &b, QUEUE_ARGS), None);
    }

    #[test]
    fn classic_queue_type_equals_no_type() {
        let classic = t(&[("x-queue-type", FieldValue::from("classic"))]);
        let quorum = t(&[("x-queue-type", FieldValue::from("quorum"))]);
        let none = FieldTable::new();
        assert_eq!(queue_type_difference(&classic, &none), None);
        assert_eq!(queue_type_difference(&none, &classic), None);
        assert_eq!(
            queue_type_difference(&quorum, &none),
            Some((
                "x-queue-type".into(),
                "none".into(),
                "the value 'quorum' of type 'longstr'".into()
            ))
        );
    }

    #[test]
    fn differences_are_worded_as_rabbitmq_does() {
        let current = t(&[("x-message-ttl", FieldValue::I32(1000))]);
        let received = t(&[("x-message-ttl", FieldValue::I32(2000))]);
        assert_eq!(
            difference(&current, &received, QUEUE_ARGS),
            Some(("x-message-ttl".into(), "'2000'".into(), "'1000'".into()))
        );
        assert_eq!(
            difference(&current, &FieldTable::new(), QUEUE_ARGS),
            Some((
                "x-message-ttl".into(),
                "none".into(),
                "the value '1000' of type 'signedint'".into()
            ))
        );
    }
}
