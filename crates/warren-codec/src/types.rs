//! AMQP primitive types: short and long strings, field tables and field values.
//!
//! Field-table type codes follow RabbitMQ's errata, not the 0-9-1 PDF: `s` is a signed 16-bit
//! integer, `u` unsigned 16, `I` signed 32, `i` unsigned 32, `l` signed 64, `x` a byte array and
//! `V` void. Every client in the wild speaks this dialect.

use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;

use crate::error::CodecError;
use crate::reader::Reader;

/// An AMQP `shortstr`: at most 255 bytes of UTF-8, kept as a slice of the frame it came in.
///
/// Invariant: the bytes are valid UTF-8 and at most 255 long. Both are checked on construction,
/// so `as_str` never fails.
#[derive(Clone, Default, Eq, PartialOrd, Ord)]
pub struct ShortString(Bytes);

/// Byte equality that never calls `memcmp` for empty strings. glibc's AVX-512 `memcmp` does a
/// masked load even for length 0, and from an empty `Bytes` (a dangling pointer in page 0)
/// that load takes a fault-suppression assist costing hundreds of cycles: every publish to
/// the default exchange compares its empty name, which cost ~10% of a publishing core.
fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}

impl PartialEq for ShortString {
    fn eq(&self, other: &Self) -> bool {
        bytes_eq(&self.0, &other.0)
    }
}

// By hand because `PartialEq` is: equal strings hash alike, and as their bytes do (`Borrow`).
impl std::hash::Hash for ShortString {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl ShortString {
    /// The empty short string.
    pub const fn empty() -> Self {
        ShortString(Bytes::new())
    }

    /// Wraps bytes that must be UTF-8 and at most 255 long.
    pub fn from_bytes(bytes: Bytes) -> Result<Self, CodecError> {
        if bytes.len() > 255 {
            return Err(CodecError::ShortStringTooLong(bytes.len()));
        }
        check_utf8(&bytes)?;
        Ok(ShortString(bytes))
    }

    /// Builds a short string from a static literal (truncation is a programming error caught
    /// by the tests that use it, so this only checks in debug builds).
    pub const fn from_static(s: &'static str) -> Self {
        ShortString(Bytes::from_static(s.as_bytes()))
    }

    pub fn as_str(&self) -> &str {
        // The invariant (valid UTF-8) holds by construction; fall back to "" rather than panic.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn encoded_len(&self) -> usize {
        1 + self.0.len()
    }

    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(self.0.len() as u8);
        buf.put_slice(&self.0);
    }

    pub fn decode(r: &mut Reader) -> Result<Self, CodecError> {
        let len = r.get_u8()? as usize;
        let bytes = r.take(len)?;
        check_utf8(&bytes)?;
        Ok(ShortString(bytes))
    }
}

/// The short-string check. Names, keys and property values are nearly always ASCII, which
/// `is_ascii` confirms for a fraction of what `from_utf8` costs on short input (100-150
/// instructions per string, a third of decoding a `basic.publish`).
pub(crate) fn check_utf8(bytes: &[u8]) -> Result<(), CodecError> {
    if bytes.is_ascii() || std::str::from_utf8(bytes).is_ok() {
        Ok(())
    } else {
        Err(CodecError::InvalidUtf8)
    }
}

// Lets maps keyed by `ShortString` be searched with `&[u8]` (hashes agree: both hash the bytes).
impl std::borrow::Borrow<[u8]> for ShortString {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl TryFrom<String> for ShortString {
    type Error = CodecError;
    fn try_from(s: String) -> Result<Self, CodecError> {
        ShortString::from_bytes(Bytes::from(s))
    }
}

impl TryFrom<&str> for ShortString {
    type Error = CodecError;
    fn try_from(s: &str) -> Result<Self, CodecError> {
        ShortString::from_bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<&ShortString> for String {
    fn from(s: &ShortString) -> String {
        s.as_str().to_owned()
    }
}

impl fmt::Debug for ShortString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ShortString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for ShortString {
    fn eq(&self, other: &str) -> bool {
        bytes_eq(self.as_bytes(), other.as_bytes())
    }
}

impl PartialEq<&str> for ShortString {
    fn eq(&self, other: &&str) -> bool {
        bytes_eq(self.as_bytes(), other.as_bytes())
    }
}

/// An AMQP `longstr`: arbitrary bytes (not necessarily UTF-8) with a 32-bit length.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct LongString(pub Bytes);

impl LongString {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The content as text, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    pub fn encoded_len(&self) -> usize {
        4 + self.0.len()
    }

    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u32(self.0.len() as u32);
        buf.put_slice(&self.0);
    }

    pub fn decode(r: &mut Reader) -> Result<Self, CodecError> {
        let len = r.get_u32()? as usize;
        Ok(LongString(r.take(len)?))
    }
}

impl From<&str> for LongString {
    fn from(s: &str) -> Self {
        LongString(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for LongString {
    fn from(s: String) -> Self {
        LongString(Bytes::from(s))
    }
}

impl From<Vec<u8>> for LongString {
    fn from(v: Vec<u8>) -> Self {
        LongString(Bytes::from(v))
    }
}

impl fmt::Debug for LongString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(s) => fmt::Debug::fmt(s, f),
            None => fmt::Debug::fmt(&self.0, f),
        }
    }
}

/// A decimal value: `value * 10^-scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decimal {
    pub scale: u8,
    pub value: u32,
}

/// One value in a field table or field array, tagged with RabbitMQ's type codes.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    /// `t`
    Bool(bool),
    /// `b`
    I8(i8),
    /// `B`
    U8(u8),
    /// `s`
    I16(i16),
    /// `u`
    U16(u16),
    /// `I`
    I32(i32),
    /// `i`
    U32(u32),
    /// `l`
    I64(i64),
    /// `f`
    F32(f32),
    /// `d`
    F64(f64),
    /// `D`
    Decimal(Decimal),
    /// `S`
    LongString(LongString),
    /// `A`
    Array(Vec<FieldValue>),
    /// `T`
    Timestamp(u64),
    /// `F`
    Table(FieldTable),
    /// `V`
    Void,
    /// `x`
    ByteArray(Bytes),
}

impl FieldValue {
    /// The value as an integer, whatever its integer width (RabbitMQ accepts any integer type
    /// for numeric arguments such as `x-message-ttl`).
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            FieldValue::I8(v) => v as i64,
            FieldValue::U8(v) => v as i64,
            FieldValue::I16(v) => v as i64,
            FieldValue::U16(v) => v as i64,
            FieldValue::I32(v) => v as i64,
            FieldValue::U32(v) => v as i64,
            FieldValue::I64(v) => v,
            FieldValue::Timestamp(v) => i64::try_from(v).ok()?,
            _ => return None,
        })
    }

    /// The value as text, for long strings that hold UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::LongString(s) => s.as_str(),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            FieldValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    fn type_code(&self) -> u8 {
        match self {
            FieldValue::Bool(_) => b't',
            FieldValue::I8(_) => b'b',
            FieldValue::U8(_) => b'B',
            FieldValue::I16(_) => b's',
            FieldValue::U16(_) => b'u',
            FieldValue::I32(_) => b'I',
            FieldValue::U32(_) => b'i',
            FieldValue::I64(_) => b'l',
            FieldValue::F32(_) => b'f',
            FieldValue::F64(_) => b'd',
            FieldValue::Decimal(_) => b'D',
            FieldValue::LongString(_) => b'S',
            FieldValue::Array(_) => b'A',
            FieldValue::Timestamp(_) => b'T',
            FieldValue::Table(_) => b'F',
            FieldValue::Void => b'V',
            FieldValue::ByteArray(_) => b'x',
        }
    }

    /// Encoded size including the type code.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            FieldValue::Bool(_) | FieldValue::I8(_) | FieldValue::U8(_) => 1,
            FieldValue::I16(_) | FieldValue::U16(_) => 2,
            FieldValue::I32(_) | FieldValue::U32(_) | FieldValue::F32(_) => 4,
            FieldValue::I64(_) | FieldValue::F64(_) | FieldValue::Timestamp(_) => 8,
            FieldValue::Decimal(_) => 5,
            FieldValue::LongString(s) => s.encoded_len(),
            FieldValue::Array(a) => 4 + a.iter().map(FieldValue::encoded_len).sum::<usize>(),
            FieldValue::Table(t) => t.encoded_len(),
            FieldValue::Void => 0,
            FieldValue::ByteArray(b) => 4 + b.len(),
        }
    }

    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(self.type_code());
        match self {
            FieldValue::Bool(v) => buf.put_u8(u8::from(*v)),
            FieldValue::I8(v) => buf.put_i8(*v),
            FieldValue::U8(v) => buf.put_u8(*v),
            FieldValue::I16(v) => buf.put_i16(*v),
            FieldValue::U16(v) => buf.put_u16(*v),
            FieldValue::I32(v) => buf.put_i32(*v),
            FieldValue::U32(v) => buf.put_u32(*v),
            FieldValue::I64(v) => buf.put_i64(*v),
            FieldValue::F32(v) => buf.put_f32(*v),
            FieldValue::F64(v) => buf.put_f64(*v),
            FieldValue::Decimal(d) => {
                buf.put_u8(d.scale);
                buf.put_u32(d.value);
            }
            FieldValue::LongString(s) => s.encode(buf),
            FieldValue::Array(a) => {
                let len: usize = a.iter().map(FieldValue::encoded_len).sum();
                buf.put_u32(len as u32);
                for v in a {
                    v.encode(buf);
                }
            }
            FieldValue::Timestamp(v) => buf.put_u64(*v),
            FieldValue::Table(t) => t.encode(buf),
            FieldValue::Void => {}
            FieldValue::ByteArray(b) => {
                buf.put_u32(b.len() as u32);
                buf.put_slice(b);
            }
        }
    }

    pub fn decode(r: &mut Reader) -> Result<Self, CodecError> {
        Self::decode_nested(r, 0)
    }

    /// Decodes a value inside `depth` enclosing tables or arrays.
    fn decode_nested(r: &mut Reader, depth: usize) -> Result<Self, CodecError> {
        let code = r.get_u8()?;
        Ok(match code {
            b't' => FieldValue::Bool(r.get_u8()? != 0),
            b'b' => FieldValue::I8(r.get_u8()? as i8),
            b'B' => FieldValue::U8(r.get_u8()?),
            b's' => FieldValue::I16(r.get_u16()? as i16),
            b'u' => FieldValue::U16(r.get_u16()?),
            b'I' => FieldValue::I32(r.get_u32()? as i32),
            b'i' => FieldValue::U32(r.get_u32()?),
            b'l' => FieldValue::I64(r.get_u64()? as i64),
            b'f' => FieldValue::F32(f32::from_bits(r.get_u32()?)),
            b'd' => FieldValue::F64(f64::from_bits(r.get_u64()?)),
            b'D' => FieldValue::Decimal(Decimal {
                scale: r.get_u8()?,
                value: r.get_u32()?,
            }),
            b'S' => FieldValue::LongString(LongString::decode(r)?),
            b'A' => {
                let len = r.get_u32()? as usize;
                let mut inner = Reader::new(r.take(len)?);
                let mut values = Vec::new();
                while !inner.is_empty() {
                    values.push(FieldValue::decode_nested(&mut inner, nest(depth)?)?);
                }
                FieldValue::Array(values)
            }
            b'T' => FieldValue::Timestamp(r.get_u64()?),
            b'F' => FieldValue::Table(FieldTable::decode_nested(r, nest(depth)?)?),
            b'V' => FieldValue::Void,
            b'x' => {
                let len = r.get_u32()? as usize;
                FieldValue::ByteArray(r.take(len)?)
            }
            other => return Err(CodecError::UnknownFieldType(other)),
        })
    }
}

/// Deepest nesting of tables and arrays accepted. Decoding recurses, and a 128 KB frame can
/// nest ~26,000 arrays (5 bytes a level): enough to overflow a worker thread's stack and abort
/// the broker. Real headers nest a few levels (`x-death`: table, array, table).
pub const MAX_NESTING: usize = 64;

/// The depth one level further in, if allowed.
pub(crate) fn nest(depth: usize) -> Result<usize, CodecError> {
    if depth >= MAX_NESTING {
        return Err(CodecError::NestingTooDeep(MAX_NESTING));
    }
    Ok(depth + 1)
}

impl From<&str> for FieldValue {
    fn from(s: &str) -> Self {
        FieldValue::LongString(LongString::from(s))
    }
}

impl From<bool> for FieldValue {
    fn from(b: bool) -> Self {
        FieldValue::Bool(b)
    }
}

/// An AMQP field table. Order is preserved (RabbitMQ keeps and shows it), so this is a list of
/// pairs rather than a map; tables are small, and lookups are linear.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldTable(pub Vec<(ShortString, FieldValue)>);

impl FieldTable {
    pub fn new() -> Self {
        FieldTable(Vec::new())
    }

    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.0
            .iter()
            .find(|(k, _)| k.as_bytes() == key.as_bytes())
            .map(|(_, v)| v)
    }

    /// Sets `key`, replacing an earlier value of the same key.
    pub fn insert(&mut self, key: ShortString, value: FieldValue) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<FieldValue> {
        let pos = self
            .0
            .iter()
            .position(|(k, _)| k.as_bytes() == key.as_bytes())?;
        Some(self.0.remove(pos).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ShortString, &FieldValue)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Size of the encoded table including its 32-bit length prefix.
    pub fn encoded_len(&self) -> usize {
        4 + self.body_len()
    }

    fn body_len(&self) -> usize {
        self.0
            .iter()
            .map(|(k, v)| k.encoded_len() + v.encoded_len())
            .sum()
    }

    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u32(self.body_len() as u32);
        self.encode_fields(buf);
    }

    /// The fields without the length prefix (the AMQPLAIN SASL response is written this way).
    pub fn encode_fields(&self, buf: &mut BytesMut) {
        for (k, v) in &self.0 {
            k.encode(buf);
            v.encode(buf);
        }
    }

    pub fn decode(r: &mut Reader) -> Result<Self, CodecError> {
        Self::decode_nested(r, 0)
    }

    fn decode_nested(r: &mut Reader, depth: usize) -> Result<Self, CodecError> {
        let len = r.get_u32()? as usize;
        let inner = Reader::new(r.take(len)?);
        Self::decode_fields_nested(inner, depth)
    }

    /// Decodes fields that fill all of `r`, with no length prefix (AMQPLAIN).
    pub fn decode_fields(r: Reader) -> Result<Self, CodecError> {
        Self::decode_fields_nested(r, 0)
    }

    fn decode_fields_nested(mut r: Reader, depth: usize) -> Result<Self, CodecError> {
        let mut fields = Vec::new();
        while !r.is_empty() {
            let key = ShortString::decode(&mut r)?;
            let value = FieldValue::decode_nested(&mut r, depth)?;
            fields.push((key, value));
        }
        Ok(FieldTable(fields))
    }
}

impl<const N: usize> From<[(&'static str, FieldValue); N]> for FieldTable {
    fn from(pairs: [(&'static str, FieldValue); N]) -> Self {
        FieldTable(
            pairs
                .into_iter()
                .map(|(k, v)| (ShortString::from_static(k), v))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(t: &FieldTable) -> FieldTable {
        let mut buf = BytesMut::new();
        t.encode(&mut buf);
        assert_eq!(buf.len(), t.encoded_len());
        let mut r = Reader::new(buf.freeze());
        let out = FieldTable::decode(&mut r).unwrap();
        assert!(r.is_empty());
        out
    }

    #[test]
    fn table_with_every_type_round_trips() {
        let nested = FieldTable::from([("n", FieldValue::I32(-5))]);
        let t = FieldTable::from([
            ("bool", FieldValue::Bool(true)),
            ("i8", FieldValue::I8(-1)),
            ("u8", FieldValue::U8(200)),
            ("i16", FieldValue::I16(-300)),
            ("u16", FieldValue::U16(60000)),
            ("i32", FieldValue::I32(-70000)),
            ("u32", FieldValue::U32(4_000_000_000)),
            ("i64", FieldValue::I64(-1 << 40)),
            ("f32", FieldValue::F32(1.5)),
            ("f64", FieldValue::F64(-2.25)),
            (
                "dec",
                FieldValue::Decimal(Decimal {
                    scale: 2,
                    value: 12345,
                }),
            ),
            ("str", FieldValue::from("héllo")),
            (
                "arr",
                FieldValue::Array(vec![FieldValue::I32(1), FieldValue::from("x")]),
            ),
            ("ts", FieldValue::Timestamp(1_700_000_000)),
            ("tbl", FieldValue::Table(nested)),
            ("void", FieldValue::Void),
            (
                "bytes",
                FieldValue::ByteArray(Bytes::from_static(b"\x00\xff")),
            ),
        ]);
        assert_eq!(round_trip(&t), t);
    }

    /// A table whose one value nests `levels` tables (alternating with arrays) inside it.
    fn nested(levels: usize) -> FieldTable {
        let mut v = FieldValue::Void;
        for i in 0..levels {
            v = if i % 2 == 0 {
                FieldValue::Array(vec![v])
            } else {
                FieldValue::Table(FieldTable::from([("k", v)]))
            };
        }
        FieldTable::from([("top", v)])
    }

    #[test]
    fn nesting_is_limited_the_same_way_by_decode_and_scan() {
        for (levels, ok) in [(MAX_NESTING, true), (MAX_NESTING + 1, false)] {
            let t = nested(levels);
            let mut buf = BytesMut::new();
            t.encode(&mut buf);
            let decoded = FieldTable::decode(&mut Reader::new(buf.clone().freeze()));
            assert_eq!(decoded.is_ok(), ok, "decode at {levels} levels");
            if !ok {
                assert_eq!(decoded, Err(CodecError::NestingTooDeep(MAX_NESTING)));
            }
            let props = crate::BasicProperties {
                headers: Some(t),
                ..Default::default()
            };
            let raw = props.to_raw();
            assert_eq!(
                crate::BasicProperties::scan(&raw).is_ok(),
                ok,
                "scan at {levels}"
            );
            assert_eq!(
                crate::BasicProperties::decode(raw).is_ok(),
                ok,
                "properties at {levels}"
            );
        }
    }

    #[test]
    fn rabbitmq_type_codes_are_used() {
        let mut buf = BytesMut::new();
        FieldValue::I16(1).encode(&mut buf);
        FieldValue::U32(1).encode(&mut buf);
        FieldValue::I64(1).encode(&mut buf);
        assert_eq!(buf[0], b's');
        assert_eq!(buf[3], b'i');
        assert_eq!(buf[8], b'l');
    }

    #[test]
    fn unknown_type_code_is_an_error() {
        let mut r = Reader::new(Bytes::from_static(b"\x00\x00\x00\x03\x01kQ"));
        assert!(matches!(
            FieldTable::decode(&mut r),
            Err(CodecError::UnknownFieldType(b'Q'))
        ));
    }

    #[test]
    fn truncated_table_is_an_error_not_a_panic() {
        let mut r = Reader::new(Bytes::from_static(b"\x00\x00\x00\x10\x01k"));
        assert!(FieldTable::decode(&mut r).is_err());
    }

    #[test]
    fn short_string_rejects_invalid_utf8() {
        assert!(ShortString::from_bytes(Bytes::from_static(b"\xff")).is_err());
    }
}
