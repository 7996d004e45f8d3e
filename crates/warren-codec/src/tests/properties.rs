//! `BasicProperties`: round trips, flag layout, continuation words and error paths.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use crate::generated::arbitrary;
use crate::*;

fn short(s: &str) -> ShortString {
    ShortString::try_from(s).unwrap()
}

pub(crate) fn all_set() -> BasicProperties {
    BasicProperties {
        content_type: Some(short("application/json")),
        content_encoding: Some(short("gzip")),
        headers: Some(FieldTable::from([
            ("a", FieldValue::I32(-1)),
            ("b", FieldValue::from("text")),
        ])),
        delivery_mode: Some(2),
        priority: Some(9),
        correlation_id: Some(short("corr")),
        reply_to: Some(short("amq.rabbitmq.reply-to")),
        expiration: Some(short("60000")),
        message_id: Some(short("id-1")),
        timestamp: Some(1_700_000_000),
        kind: Some(short("order.created")),
        user_id: Some(short("guest")),
        app_id: Some(short("warren-test")),
        cluster_id: Some(short("c1")),
    }
}

proptest! {
    #[test]
    fn properties_round_trip(p in arbitrary::basic_properties()) {
        prop_assert_eq!(BasicProperties::decode(p.to_raw())?, p);
    }

    #[test]
    fn every_strict_prefix_of_properties_is_an_error(p in arbitrary::basic_properties()) {
        let raw = p.to_raw();
        for len in 0..raw.len() {
            prop_assert_eq!(BasicProperties::decode(raw.slice(..len)), Err(CodecError::Truncated));
        }
    }
}

#[test]
fn all_properties_round_trip() {
    let p = all_set();
    let raw = p.to_raw();
    // Fourteen properties: bits 15 down to 2.
    assert_eq!(&raw[..2], &[0xff, 0xfc]);
    assert_eq!(BasicProperties::decode(raw).unwrap(), p);
}

#[test]
fn no_properties_is_a_zero_flags_word() {
    assert_eq!(&BasicProperties::default().to_raw()[..], &[0, 0]);
    assert_eq!(
        BasicProperties::decode(Bytes::from_static(&[0, 0])).unwrap(),
        BasicProperties::default()
    );
}

#[test]
fn flag_bit_15_is_the_first_property() {
    let p = BasicProperties {
        content_type: Some(short("t")),
        delivery_mode: Some(2),
        ..Default::default()
    };
    // content-type is bit 15, delivery-mode (fourth) bit 12.
    assert_eq!(&p.to_raw()[..], &[0x90, 0x00, 1, b't', 2]);
}

#[test]
fn continuation_words_are_read_past() {
    // delivery-mode, with the continuation bit set and one more (empty) flags word.
    let raw = Bytes::from_static(&[0x10, 0x01, 0x00, 0x00, 2]);
    let p = BasicProperties::decode(raw).unwrap();
    assert_eq!(p.delivery_mode, Some(2));
    // Two continuation words.
    let raw = Bytes::from_static(&[0x10, 0x01, 0x00, 0x01, 0x00, 0x00, 2]);
    assert_eq!(BasicProperties::decode(raw).unwrap().delivery_mode, Some(2));
    // A continuation bit with no word after it.
    assert_eq!(
        BasicProperties::decode(Bytes::from_static(&[0x00, 0x01])),
        Err(CodecError::Truncated)
    );
}

#[test]
fn unknown_flags_and_their_data_are_ignored() {
    // Bit 1 is not a basic property; whatever it carries cannot be parsed and is skipped.
    let raw = Bytes::from_static(&[0x10, 0x02, 2, 0xde, 0xad]);
    assert_eq!(BasicProperties::decode(raw).unwrap().delivery_mode, Some(2));
    // So are flags in a continuation word.
    let raw = Bytes::from_static(&[0x10, 0x01, 0x80, 0x00, 2, 0xbe, 0xef]);
    assert_eq!(BasicProperties::decode(raw).unwrap().delivery_mode, Some(2));
}

#[test]
fn bytes_after_the_known_properties_are_an_error() {
    assert_eq!(
        BasicProperties::decode(Bytes::from_static(&[0x10, 0x00, 2, 0xff])),
        Err(CodecError::TrailingBytes(1))
    );
}

#[test]
fn properties_survive_a_content_header_frame() {
    let p = all_set();
    let mut buf = BytesMut::new();
    frame::write_content_header(&mut buf, 1, CLASS_BASIC, 42, &p.to_raw());
    let f = frame::decode_frame(&mut buf, 0).unwrap().unwrap();
    let header = ContentHeader::decode(f.payload).unwrap();
    assert_eq!((header.class_id, header.body_size), (CLASS_BASIC, 42));
    assert_eq!(BasicProperties::decode(header.raw_properties).unwrap(), p);
}

/// `scan` must accept exactly what `decode` accepts, fail with the same error, and agree on
/// the properties it reads.
fn assert_scan_agrees(raw: &[u8]) -> Result<(), TestCaseError> {
    let scanned = BasicProperties::scan(raw);
    match BasicProperties::decode(Bytes::copy_from_slice(raw)) {
        Ok(p) => {
            let s = scanned.map_err(|e| TestCaseError::fail(format!("scan failed: {e}")))?;
            prop_assert_eq!(s.delivery_mode, p.delivery_mode);
            prop_assert_eq!(s.priority, p.priority);
            prop_assert_eq!(s.reply_to, p.reply_to.as_ref().map(ShortString::as_str));
            prop_assert_eq!(s.expiration, p.expiration.as_ref().map(ShortString::as_str));
            prop_assert_eq!(s.user_id, p.user_id.as_ref().map(ShortString::as_str));
            prop_assert_eq!(s.has_headers, p.headers.is_some());
        }
        Err(e) => prop_assert_eq!(scanned, Err(e)),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn scan_agrees_with_decode_on_valid_properties(p in arbitrary::basic_properties()) {
        let raw = p.to_raw();
        assert_scan_agrees(&raw)?;
        for len in 0..raw.len() {
            assert_scan_agrees(&raw[..len])?;
        }
    }

    #[test]
    fn scan_agrees_with_decode_on_corrupted_properties(
        p in arbitrary::basic_properties(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut raw = p.to_raw().to_vec();
        for (at, x) in flips {
            let i = at.index(raw.len());
            raw[i] ^= x;
        }
        assert_scan_agrees(&raw)?;
    }

    #[test]
    fn scan_agrees_with_decode_on_random_bytes(
        raw in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        assert_scan_agrees(&raw)?;
    }
}

#[test]
fn scan_reads_what_the_broker_needs() {
    let raw = all_set().to_raw();
    let s = BasicProperties::scan(&raw).unwrap();
    assert_eq!(
        s,
        PropertySummary {
            delivery_mode: Some(2),
            priority: Some(9),
            reply_to: Some("amq.rabbitmq.reply-to"),
            expiration: Some("60000"),
            user_id: Some("guest"),
            has_headers: true,
        }
    );
    // Invalid UTF-8 in a property the broker does not read, and in a header key, still fails.
    let bad_type = [0x80, 0x00, 1, 0xff];
    assert_eq!(
        BasicProperties::scan(&bad_type),
        Err(CodecError::InvalidUtf8)
    );
    let bad_key = [0x20, 0x00, 0, 0, 0, 3, 1, 0xff, b'V'];
    assert_eq!(
        BasicProperties::scan(&bad_key),
        Err(CodecError::InvalidUtf8)
    );
}
