//! Proptest strategies for the primitive types; the generated `arbitrary` module uses these.
//!
//! Field tables have unique keys in sorted order and floats are never NaN, so that values
//! compare equal after a round trip and match `amq-protocol`'s `BTreeMap`-backed tables.

use bytes::Bytes;
use proptest::prelude::*;

use crate::{Decimal, FieldTable, FieldValue, LongString, ShortString};

pub(crate) fn short_string() -> impl Strategy<Value = ShortString> {
    prop_oneof![
        Just(String::new()),
        "[a-z.]{1,12}",
        "\\PC{0,40}",
        // The longest a short string can be.
        "[a-z]{255}",
    ]
    .prop_map(|s| ShortString::try_from(s).expect("at most 255 bytes of UTF-8"))
}

pub(crate) fn long_string() -> impl Strategy<Value = LongString> {
    prop::collection::vec(any::<u8>(), 0..64).prop_map(LongString::from)
}

fn leaf_value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        any::<bool>().prop_map(FieldValue::Bool),
        any::<i8>().prop_map(FieldValue::I8),
        any::<u8>().prop_map(FieldValue::U8),
        any::<i16>().prop_map(FieldValue::I16),
        any::<u16>().prop_map(FieldValue::U16),
        any::<i32>().prop_map(FieldValue::I32),
        any::<u32>().prop_map(FieldValue::U32),
        any::<i64>().prop_map(FieldValue::I64),
        any::<f32>()
            .prop_filter("NaN never equals itself", |f| !f.is_nan())
            .prop_map(FieldValue::F32),
        any::<f64>()
            .prop_filter("NaN never equals itself", |f| !f.is_nan())
            .prop_map(FieldValue::F64),
        (any::<u8>(), any::<u32>())
            .prop_map(|(scale, value)| FieldValue::Decimal(Decimal { scale, value })),
        long_string().prop_map(FieldValue::LongString),
        any::<u64>().prop_map(FieldValue::Timestamp),
        Just(FieldValue::Void),
        prop::collection::vec(any::<u8>(), 0..16)
            .prop_map(|v| FieldValue::ByteArray(Bytes::from(v))),
    ]
}

fn table_of(values: impl Strategy<Value = FieldValue>) -> impl Strategy<Value = FieldTable> {
    prop::collection::btree_map(short_string(), values, 0..5)
        .prop_map(|m| FieldTable(m.into_iter().collect()))
}

pub(crate) fn field_value() -> impl Strategy<Value = FieldValue> {
    leaf_value().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(FieldValue::Array),
            table_of(inner).prop_map(FieldValue::Table),
        ]
    })
}

pub(crate) fn field_table() -> impl Strategy<Value = FieldTable> {
    table_of(field_value())
}
