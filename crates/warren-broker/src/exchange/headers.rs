//! Headers-exchange routing: does a message's `headers` table satisfy a binding's arguments?
//!
//! The rules are RabbitMQ's (`rabbit_exchange_type_headers`, 3.13 and 4.x):
//!
//! - **Mode.** The binding argument `x-match` chooses the mode: `all` (the default), `any`,
//!   `all-with-x` or `any-with-x`. Only a long string with one of those exact values counts;
//!   anything else (possible only for bindings that skipped [`validate_x_match`], such as ones
//!   restored from old definitions) falls back to `all`, as RabbitMQ's does.
//! - **Which binding arguments count.** `x-match` itself never does. Other arguments whose names
//!   start with `x-` count only in the `*-with-x` modes. Every other argument is a condition.
//! - **A condition holds** if the message has a header with that name and either the binding's
//!   value is void (`V`: "the header is present, with any value") or the two values are equal
//!   (below).
//! - **`all`** matches when every condition holds, so a binding with no conditions matches every
//!   message, with or without headers. **`any`** matches when at least one holds, so a binding
//!   with no conditions matches nothing.
//! - **No headers** (the property absent) is the same as an empty table: `all` with at least one
//!   condition, and `any`, do not match.
//! - **Duplicate header names:** the last one wins (RabbitMQ folds the headers into a map).
//!
//! **Equality** is Erlang's exact equality (`=:=`) on the values RabbitMQ decodes, which drops
//! the field type at the top level but keeps it inside arrays and tables:
//!
//! - integers of any width compare by value (`I8(1)`, `U16(1)`, `I32(1)` and `I64(1)` are
//!   equal), and so do timestamps;
//! - `f32` and `f64` compare by value (an `f32` widened exactly), but an integer never equals a
//!   float (`1` is not `1.0`);
//! - long strings and byte arrays compare by bytes, with each other too (both are binaries);
//! - booleans with booleans; decimals when scale and value are both equal;
//! - arrays and tables compare element by element, in order, **with** types (an array holding
//!   `I32(1)` differs from one holding `I64(1)`), and an empty array equals an empty table (both
//!   are the empty list in Erlang);
//! - a void header equals nothing, and nothing else equals across these groups.
//!
//! One deliberate difference: RabbitMQ 4.x converts a *header* timestamp to milliseconds before
//! comparing (its message container keeps AMQP 1.0 time), so there a timestamp header equals a
//! binding integer 1000 times larger and never the same timestamp. We compare timestamps in
//! seconds, as RabbitMQ 3.x did, so a timestamp binding matches the same timestamp header.

use crate::args::type_name;
use warren_codec::{FieldTable, FieldValue, ShortString};

/// The binding argument that selects the mode.
const X_MATCH: &str = "x-match";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

impl Mode {
    /// The mode for a valid `x-match` value.
    fn parse(value: &[u8]) -> Option<Mode> {
        match value {
            b"all" => Some(Mode::All),
            b"any" => Some(Mode::Any),
            b"all-with-x" => Some(Mode::AllWithX),
            b"any-with-x" => Some(Mode::AnyWithX),
            _ => None,
        }
    }

    /// The mode a binding routes with. Spec (RabbitMQ): the first `x-match`; a missing or
    /// invalid one means `all`.
    fn of(binding_args: &FieldTable) -> Mode {
        match binding_args.get(X_MATCH) {
            Some(FieldValue::LongString(s)) => Mode::parse(s.as_bytes()).unwrap_or(Mode::All),
            _ => Mode::All,
        }
    }

    fn is_any(self) -> bool {
        matches!(self, Mode::Any | Mode::AnyWithX)
    }

    fn with_x(self) -> bool {
        matches!(self, Mode::AllWithX | Mode::AnyWithX)
    }
}

/// Whether a message with `headers` (`None` when the property is absent) is routed by a binding
/// with `binding_args`. See the module docs for the rules.
pub fn headers_match(binding_args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let mode = Mode::of(binding_args);
    let mut conditions = binding_args
        .0
        .iter()
        .filter(|(name, _)| is_condition(name, mode))
        .map(|(name, wanted)| condition_holds(name, wanted, headers));
    if mode.is_any() {
        conditions.any(|held| held)
    } else {
        conditions.all(|held| held)
    }
}

fn is_condition(name: &ShortString, mode: Mode) -> bool {
    let name = name.as_bytes();
    if name == X_MATCH.as_bytes() {
        return false;
    }
    // `x-` arguments are the broker's, not conditions, unless the binding asks for them.
    mode.with_x() || !name.starts_with(b"x-")
}

fn condition_holds(name: &ShortString, wanted: &FieldValue, headers: Option<&FieldTable>) -> bool {
    // Last occurrence: RabbitMQ builds a map from the header list, so later entries overwrite.
    let found = headers.and_then(|h| h.0.iter().rev().find(|(k, _)| k == name));
    match (wanted, found) {
        (_, None) => false,
        // Spec (RabbitMQ): a void binding value tests presence only.
        (FieldValue::Void, Some(_)) => true,
        (wanted, Some((_, actual))) => routing_eq(wanted, actual),
    }
}

/// Erlang `=:=` on the values RabbitMQ decodes from a top-level table entry (see module docs).
fn routing_eq(a: &FieldValue, b: &FieldValue) -> bool {
    use FieldValue as V;
    if let (Some(x), Some(y)) = (integer(a), integer(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (float(a), float(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (binary(a), binary(b)) {
        return x == y;
    }
    match (a, b) {
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Decimal(x), V::Decimal(y)) => x == y,
        // Nested values keep their type tags in Erlang, which is exactly the derived equality.
        (V::Array(x), V::Array(y)) => x == y,
        (V::Table(x), V::Table(y)) => x == y,
        (V::Array(x), V::Table(y)) | (V::Table(y), V::Array(x)) => x.is_empty() && y.0.is_empty(),
        (V::Void, V::Void) => true,
        _ => false,
    }
}

fn integer(v: &FieldValue) -> Option<i128> {
    Some(match *v {
        FieldValue::I8(x) => x.into(),
        FieldValue::U8(x) => x.into(),
        FieldValue::I16(x) => x.into(),
        FieldValue::U16(x) => x.into(),
        FieldValue::I32(x) => x.into(),
        FieldValue::U32(x) => x.into(),
        FieldValue::I64(x) => x.into(),
        FieldValue::Timestamp(x) => x.into(),
        _ => return None,
    })
}

fn float(v: &FieldValue) -> Option<f64> {
    match *v {
        FieldValue::F32(x) => Some(x.into()),
        FieldValue::F64(x) => Some(x),
        _ => None,
    }
}

fn binary(v: &FieldValue) -> Option<&[u8]> {
    match v {
        FieldValue::LongString(s) => Some(s.as_bytes()),
        FieldValue::ByteArray(b) => Some(b),
        _ => None,
    }
}

/// Checks a headers binding's `x-match` argument, as RabbitMQ does when the binding is created.
///
/// A missing `x-match` is fine (it means `all`). Otherwise it must be a long string holding
/// `all`, `any`, `all-with-x` or `any-with-x`. The error is RabbitMQ's text, for the broker to
/// send with 406 PRECONDITION_FAILED.
pub fn validate_x_match(args: &FieldTable) -> Result<(), String> {
    match args.get(X_MATCH) {
        None => Ok(()),
        Some(FieldValue::LongString(s)) => match Mode::parse(s.as_bytes()) {
            Some(_) => Ok(()),
            None => Err(format!(
                "Invalid x-match field value {}; expected all, any, all-with-x, or any-with-x",
                Erl(&FieldValue::LongString(s.clone()))
            )),
        },
        Some(other) => Err(format!(
            "Invalid x-match field type {} (value {}); expected longstr",
            type_name(other),
            Erl(other)
        )),
    }
}

/// A field value printed roughly as Erlang's `~tp` prints RabbitMQ's decoded form, so error
/// texts read like RabbitMQ's (`<<"foo">>`, `{2,150}`, `[{longstr,<<"a">>}]`).
struct Erl<'a>(&'a FieldValue);

impl std::fmt::Display for Erl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.0;
        if let Some(i) = integer(v) {
            return write!(f, "{i}");
        }
        if let Some(x) = float(v) {
            return write!(f, "{x:?}");
        }
        if let Some(bytes) = binary(v) {
            return write_binary(f, bytes);
        }
        match v {
            FieldValue::Bool(b) => write!(f, "{b}"),
            FieldValue::Void => f.write_str("undefined"),
            FieldValue::Decimal(d) => write!(f, "{{{},{}}}", d.scale, d.value),
            FieldValue::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    write!(f, "{sep}{{{},{}}}", type_name(item), Erl(item))?;
                }
                f.write_str("]")
            }
            FieldValue::Table(table) => {
                f.write_str("[")?;
                for (i, (k, item)) in table.0.iter().enumerate() {
                    f.write_str(if i == 0 { "{" } else { ",{" })?;
                    write_binary(f, k.as_bytes())?;
                    write!(f, ",{},{}}}", type_name(item), Erl(item))?;
                }
                f.write_str("]")
            }
            // Every other variant was printed above.
            _ => write!(f, "{v:?}"),
        }
    }
}

/// An Erlang binary: `<<"text">>`, `<<"tëxt"/utf8>>`, or `<<1,2,3>>` when not printable.
fn write_binary(f: &mut std::fmt::Formatter<'_>, bytes: &[u8]) -> std::fmt::Result {
    let text = std::str::from_utf8(bytes).ok().filter(|s| {
        !s.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
    });
    match text {
        Some(s) => {
            f.write_str("<<\"")?;
            for c in s.chars() {
                match c {
                    '"' => f.write_str("\\\"")?,
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    '\t' => f.write_str("\\t")?,
                    '\r' => f.write_str("\\r")?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str(if s.is_ascii() { "\">>" } else { "\"/utf8>>" })
        }
        None => {
            f.write_str("<<")?;
            for (i, b) in bytes.iter().enumerate() {
                write!(f, "{}{b}", if i == 0 { "" } else { "," })?;
            }
            f.write_str(">>")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_codec::{Decimal, LongString};

    fn s(v: &str) -> FieldValue {
        FieldValue::from(v)
    }

    fn table<const N: usize>(pairs: [(&'static str, FieldValue); N]) -> FieldTable {
        FieldTable::from(pairs)
    }

    #[test]
    fn all_is_the_default_and_needs_every_condition() {
        let args = table([("format", s("pdf")), ("type", s("report"))]);
        let both = table([
            ("format", s("pdf")),
            ("type", s("report")),
            ("extra", s("x")),
        ]);
        let one = table([("format", s("pdf"))]);
        let wrong = table([("format", s("pdf")), ("type", s("log"))]);
        assert!(headers_match(&args, Some(&both)));
        assert!(!headers_match(&args, Some(&one)));
        assert!(!headers_match(&args, Some(&wrong)));
        assert!(!headers_match(&args, None));

        let explicit = table([
            ("x-match", s("all")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]);
        assert!(headers_match(&explicit, Some(&both)));
        assert!(!headers_match(&explicit, Some(&one)));
    }

    #[test]
    fn any_needs_one_condition() {
        let args = table([
            ("x-match", s("any")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]);
        assert!(headers_match(&args, Some(&table([("format", s("pdf"))]))));
        assert!(headers_match(
            &args,
            Some(&table([("type", s("report")), ("format", s("zip"))]))
        ));
        assert!(!headers_match(&args, Some(&table([("format", s("zip"))]))));
        assert!(!headers_match(&args, Some(&FieldTable::new())));
        assert!(!headers_match(&args, None));
    }

    #[test]
    fn binding_without_conditions_matches_everything_under_all_and_nothing_under_any() {
        let all = table([("x-match", s("all")), ("x-other", s("ignored"))]);
        assert!(headers_match(&FieldTable::new(), None));
        assert!(headers_match(&all, None));
        assert!(headers_match(&all, Some(&table([("a", s("b"))]))));
        let any = table([("x-match", s("any"))]);
        assert!(!headers_match(&any, None));
        assert!(!headers_match(&any, Some(&table([("a", s("b"))]))));
    }

    #[test]
    fn void_binding_value_tests_presence_only() {
        let args = table([("flag", FieldValue::Void)]);
        assert!(headers_match(
            &args,
            Some(&table([("flag", s("anything"))]))
        ));
        assert!(headers_match(
            &args,
            Some(&table([("flag", FieldValue::Void)]))
        ));
        assert!(headers_match(
            &args,
            Some(&table([("flag", FieldValue::I32(0))]))
        ));
        assert!(!headers_match(&args, Some(&table([("other", s("x"))]))));
        assert!(!headers_match(&args, None));
        // A void header is present, but equals no non-void binding value.
        let valued = table([("flag", s(""))]);
        assert!(!headers_match(
            &valued,
            Some(&table([("flag", FieldValue::Void)]))
        ));
    }

    #[test]
    fn x_arguments_are_ignored_unless_mode_is_with_x() {
        let headers = table([("x-tenant", s("t1")), ("kind", s("a"))]);
        let other_tenant = table([("x-tenant", s("t2")), ("kind", s("a"))]);

        let all = table([
            ("x-match", s("all")),
            ("x-tenant", s("t1")),
            ("kind", s("a")),
        ]);
        assert!(headers_match(&all, Some(&headers)));
        assert!(headers_match(&all, Some(&other_tenant)), "x-tenant ignored");

        let all_x = table([
            ("x-match", s("all-with-x")),
            ("x-tenant", s("t1")),
            ("kind", s("a")),
        ]);
        assert!(headers_match(&all_x, Some(&headers)));
        assert!(!headers_match(&all_x, Some(&other_tenant)));
        assert!(!headers_match(&all_x, Some(&table([("kind", s("a"))]))));

        // Under `any`, an x- argument alone is no condition at all, so nothing matches.
        let any = table([("x-match", s("any")), ("x-tenant", s("t1"))]);
        assert!(!headers_match(&any, Some(&headers)));
        let any_x = table([("x-match", s("any-with-x")), ("x-tenant", s("t1"))]);
        assert!(headers_match(&any_x, Some(&headers)));
        assert!(!headers_match(&any_x, Some(&other_tenant)));
    }

    #[test]
    fn x_match_is_never_a_condition_even_with_x() {
        // The message has no `x-match` header; the binding's own `x-match` must not require one.
        let args = table([("x-match", s("all-with-x")), ("k", s("v"))]);
        assert!(headers_match(&args, Some(&table([("k", s("v"))]))));
        let any_x = table([("x-match", s("any-with-x"))]);
        assert!(!headers_match(
            &any_x,
            Some(&table([("x-match", s("any-with-x"))]))
        ));
    }

    #[test]
    fn invalid_x_match_routes_as_all() {
        let args = table([("x-match", s("some")), ("a", s("1")), ("b", s("2"))]);
        assert!(!headers_match(&args, Some(&table([("a", s("1"))]))));
        assert!(headers_match(
            &args,
            Some(&table([("a", s("1")), ("b", s("2"))]))
        ));
        let typed = table([
            ("x-match", FieldValue::I32(1)),
            ("a", s("1")),
            ("b", s("2")),
        ]);
        assert!(!headers_match(&typed, Some(&table([("a", s("1"))]))));
    }

    #[test]
    fn integers_of_different_widths_are_equal_but_not_to_floats_or_strings() {
        let args = table([("n", FieldValue::I32(5))]);
        for same in [
            FieldValue::I8(5),
            FieldValue::U8(5),
            FieldValue::I16(5),
            FieldValue::U16(5),
            FieldValue::U32(5),
            FieldValue::I64(5),
            FieldValue::Timestamp(5),
        ] {
            assert!(
                headers_match(&args, Some(&table([("n", same.clone())]))),
                "{same:?}"
            );
        }
        for different in [
            FieldValue::I64(6),
            FieldValue::F64(5.0),
            s("5"),
            FieldValue::Bool(true),
        ] {
            assert!(
                !headers_match(&args, Some(&table([("n", different.clone())]))),
                "{different:?}"
            );
        }
        let big = table([("n", FieldValue::U32(u32::MAX))]);
        assert!(headers_match(
            &big,
            Some(&table([("n", FieldValue::I64(u32::MAX.into()))]))
        ));
        assert!(!headers_match(
            &big,
            Some(&table([("n", FieldValue::I32(-1))]))
        ));
    }

    #[test]
    fn floats_strings_and_other_values_compare_as_rabbitmq_does() {
        let float = table([("f", FieldValue::F64(1.5))]);
        assert!(headers_match(
            &float,
            Some(&table([("f", FieldValue::F32(1.5))]))
        ));
        assert!(!headers_match(
            &float,
            Some(&table([("f", FieldValue::I64(1))]))
        ));

        let text = table([("s", s("abc"))]);
        let bytes = FieldValue::ByteArray(bytes::Bytes::from_static(b"abc"));
        assert!(headers_match(&text, Some(&table([("s", bytes)]))));
        assert!(!headers_match(&text, Some(&table([("s", s("ABC"))]))));

        let flag = table([("b", FieldValue::Bool(true))]);
        assert!(headers_match(
            &flag,
            Some(&table([("b", FieldValue::Bool(true))]))
        ));
        assert!(!headers_match(
            &flag,
            Some(&table([("b", FieldValue::U8(1))]))
        ));

        let dec = |scale, value| FieldValue::Decimal(Decimal { scale, value });
        let d = table([("d", dec(2, 150))]);
        assert!(headers_match(&d, Some(&table([("d", dec(2, 150))]))));
        assert!(!headers_match(&d, Some(&table([("d", dec(1, 15))]))));
    }

    #[test]
    fn nested_values_compare_with_their_types() {
        let arr = |v: Vec<FieldValue>| FieldValue::Array(v);
        let args = table([("a", arr(vec![FieldValue::I32(1), s("x")]))]);
        let same = table([("a", arr(vec![FieldValue::I32(1), s("x")]))]);
        let wider = table([("a", arr(vec![FieldValue::I64(1), s("x")]))]);
        assert!(headers_match(&args, Some(&same)));
        assert!(!headers_match(&args, Some(&wider)));

        let inner = table([("k", s("v"))]);
        let args = table([("t", FieldValue::Table(inner.clone()))]);
        assert!(headers_match(
            &args,
            Some(&table([("t", FieldValue::Table(inner))]))
        ));
        let empty_array = table([("e", arr(Vec::new()))]);
        let empty_table = table([("e", FieldValue::Table(FieldTable::new()))]);
        assert!(headers_match(&empty_array, Some(&empty_table)));
    }

    #[test]
    fn last_duplicate_header_wins() {
        let args = table([("k", s("second"))]);
        let headers = table([("k", s("first"))]);
        let mut dup = headers.clone();
        dup.0.push((ShortString::from_static("k"), s("second")));
        assert!(!headers_match(&args, Some(&headers)));
        assert!(headers_match(&args, Some(&dup)));
    }

    #[test]
    fn valid_x_match_values_pass_validation() {
        assert_eq!(validate_x_match(&FieldTable::new()), Ok(()));
        assert_eq!(
            validate_x_match(&table([("other", FieldValue::I8(1))])),
            Ok(())
        );
        for mode in ["all", "any", "all-with-x", "any-with-x"] {
            assert_eq!(
                validate_x_match(&table([("x-match", s(mode))])),
                Ok(()),
                "{mode}"
            );
        }
    }

    #[test]
    fn invalid_x_match_value_is_rejected_with_rabbitmq_text() {
        assert_eq!(
            validate_x_match(&table([("x-match", s("ALL"))])),
            Err(
                "Invalid x-match field value <<\"ALL\">>; expected all, any, all-with-x, or \
                 any-with-x"
                    .to_owned()
            )
        );
        let raw = FieldValue::LongString(LongString::from(vec![0xff, 0x01]));
        assert_eq!(
            validate_x_match(&table([("x-match", raw)])),
            Err(
                "Invalid x-match field value <<255,1>>; expected all, any, all-with-x, or \
                 any-with-x"
                    .to_owned()
            )
        );
    }

    #[test]
    fn non_string_x_match_is_rejected_with_its_type() {
        assert_eq!(
            validate_x_match(&table([("x-match", FieldValue::I32(1))])),
            Err("Invalid x-match field type signedint (value 1); expected longstr".to_owned())
        );
        let bytes = FieldValue::ByteArray(bytes::Bytes::from_static(b"all"));
        assert_eq!(
            validate_x_match(&table([("x-match", bytes)])),
            Err(
                "Invalid x-match field type binary (value <<\"all\">>); expected longstr"
                    .to_owned()
            )
        );
        let arr = FieldValue::Array(vec![s("all"), FieldValue::Bool(true)]);
        assert_eq!(
            validate_x_match(&table([("x-match", arr)])),
            Err(
                "Invalid x-match field type array (value [{longstr,<<\"all\">>},{bool,true}]); \
                 expected longstr"
                    .to_owned()
            )
        );
    }
}
