//! Method round trips, wire layout against hand-written bytes, and error paths.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

use crate::constants::*;
use crate::generated::arbitrary;
use crate::*;

fn encode(m: &Method) -> Bytes {
    let mut buf = BytesMut::new();
    m.encode(&mut buf);
    buf.freeze()
}

fn short(s: &str) -> ShortString {
    ShortString::try_from(s).unwrap()
}

#[test]
fn every_method_round_trips() {
    let all = arbitrary::each_method();
    // 60 in the XML, plus connection.blocked, unblocked, update-secret and update-secret-ok.
    assert_eq!(all.len(), 64);
    for (name, strategy) in all {
        let mut runner = TestRunner::new(Config {
            cases: 32,
            ..Config::default()
        });
        runner
            .run(&strategy, |m| {
                prop_assert_eq!(m.name(), name);
                let bytes = encode(&m);
                prop_assert_eq!(&bytes[..2], &m.class_id().to_be_bytes()[..]);
                prop_assert_eq!(&bytes[2..4], &m.method_id().to_be_bytes()[..]);
                prop_assert_eq!(Method::decode(bytes)?, m);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

proptest! {
    #[test]
    fn any_method_round_trips(m in arbitrary::method()) {
        prop_assert_eq!(Method::decode(encode(&m))?, m);
    }

    #[test]
    fn every_strict_prefix_of_a_method_is_truncated(m in arbitrary::method()) {
        let bytes = encode(&m);
        for len in 0..bytes.len() {
            prop_assert_eq!(Method::decode(bytes.slice(..len)), Err(CodecError::Truncated));
        }
    }

    #[test]
    fn a_method_with_bytes_after_its_arguments_is_rejected(
        m in arbitrary::method(),
        extra in prop::collection::vec(any::<u8>(), 1..8),
    ) {
        let mut buf = BytesMut::new();
        m.encode(&mut buf);
        buf.extend_from_slice(&extra);
        prop_assert_eq!(
            Method::decode(buf.freeze()),
            Err(CodecError::TrailingBytes(extra.len()))
        );
    }
}

#[test]
fn queue_declare_packs_its_bits_into_one_octet_lsb_first() {
    let m: Method = queue::Declare {
        queue: short("q"),
        passive: false,
        durable: true,
        exclusive: false,
        auto_delete: true,
        no_wait: false,
        arguments: FieldTable::new(),
    }
    .into();
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0, 50, 0, 10, // queue.declare
        0, 0, // reserved-1 (ticket)
        1, b'q', // queue
        0b0000_1010, // passive, durable, exclusive, auto-delete, no-wait
        0, 0, 0, 0, // arguments
    ];
    assert_eq!(&encode(&m)[..], expected);
    assert_eq!(Method::decode(Bytes::from_static(expected)).unwrap(), m);

    #[rustfmt::skip]
    let all_set = Method::decode(Bytes::from_static(&[
        0, 50, 0, 10, 0, 0, 0, 0b0001_1111, 0, 0, 0, 0,
    ]))
    .unwrap();
    let Method::QueueDeclare(d) = all_set else {
        panic!("not queue.declare: {all_set:?}")
    };
    assert!(d.passive && d.durable && d.exclusive && d.auto_delete && d.no_wait);
}

#[test]
fn basic_consume_packs_its_bits_into_one_octet_lsb_first() {
    let m: Method = basic::Consume {
        queue: short("q"),
        consumer_tag: short("c"),
        no_local: false,
        no_ack: true,
        exclusive: false,
        no_wait: true,
        arguments: FieldTable::new(),
    }
    .into();
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0, 60, 0, 20, // basic.consume
        0, 0, // reserved-1
        1, b'q', // queue
        1, b'c', // consumer-tag
        0b0000_1010, // no-local, no-ack, exclusive, no-wait
        0, 0, 0, 0, // arguments
    ];
    assert_eq!(&encode(&m)[..], expected);
    assert_eq!(Method::decode(Bytes::from_static(expected)).unwrap(), m);

    #[rustfmt::skip]
    let reversed: &[u8] = &[0, 60, 0, 20, 0, 0, 0, 0, 0b0000_0101, 0, 0, 0, 0];
    let Method::BasicConsume(c) = Method::decode(Bytes::from_static(reversed)).unwrap() else {
        panic!("not basic.consume")
    };
    assert!(c.no_local && !c.no_ack && c.exclusive && !c.no_wait);
}

#[test]
fn bits_after_a_non_bit_field_start_a_new_octet() {
    // basic.deliver: consumer-tag, delivery-tag, redelivered (bit), exchange, routing-key.
    let m: Method = basic::Deliver {
        consumer_tag: short("c"),
        delivery_tag: 7,
        redelivered: true,
        exchange: short("x"),
        routing_key: short("k"),
    }
    .into();
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0, 60, 0, 60, 1, b'c', 0, 0, 0, 0, 0, 0, 0, 7, 1, 1, b'x', 1, b'k',
    ];
    assert_eq!(&encode(&m)[..], expected);
}

#[test]
fn reserved_fields_are_written_as_zero_and_ignored_when_read() {
    // connection.open: virtual-host, reserved-1 (shortstr), reserved-2 (bit).
    let m: Method = connection::Open {
        virtual_host: short("/"),
    }
    .into();
    assert_eq!(&encode(&m)[..], &[0, 10, 0, 40, 1, b'/', 0, 0]);
    // Old clients send capabilities and insist=1 there; both are dropped.
    let from_old_client = Method::decode(Bytes::from_static(&[
        0, 10, 0, 40, 1, b'/', 2, 0xff, 0xfe, 1,
    ]))
    .unwrap();
    assert_eq!(from_old_client, m);

    // channel.open-ok's reserved-1 is a longstr.
    let ok: Method = channel::OpenOk {}.into();
    assert_eq!(&encode(&ok)[..], &[0, 20, 0, 11, 0, 0, 0, 0]);
}

#[test]
fn rabbitmq_extensions_have_their_ids() {
    let blocked = Method::decode(Bytes::from_static(&[0, 10, 0, 60, 3, b'l', b'o', b'w'])).unwrap();
    assert_eq!(
        blocked,
        Method::ConnectionBlocked(connection::Blocked {
            reason: short("low")
        })
    );
    assert_eq!(blocked.name(), "connection.blocked");
    let unblocked: Method = connection::Unblocked {}.into();
    assert_eq!(&encode(&unblocked)[..], &[0, 10, 0, 61]);
    let update: Method = connection::UpdateSecret {
        new_secret: LongString::from("tok"),
        reason: short("r"),
    }
    .into();
    assert_eq!(
        &encode(&update)[..],
        &[0, 10, 0, 70, 0, 0, 0, 3, b't', b'o', b'k', 1, b'r']
    );
    let ok: Method = connection::UpdateSecretOk {}.into();
    assert_eq!((ok.class_id(), ok.method_id()), (10, 71));
    assert_eq!(ok.name(), "connection.update-secret-ok");
}

#[test]
fn unknown_ids_are_an_error() {
    for (class_id, method_id) in [(10u16, 99u16), (30, 10), (0, 0), (60, 41), (0xffff, 0xffff)] {
        let mut payload = BytesMut::new();
        payload.extend_from_slice(&class_id.to_be_bytes());
        payload.extend_from_slice(&method_id.to_be_bytes());
        payload.extend_from_slice(&[0; 16]);
        assert_eq!(
            Method::decode(payload.freeze()),
            Err(CodecError::UnknownMethod {
                class_id,
                method_id
            })
        );
    }
}

#[test]
fn empty_and_short_payloads_are_truncated() {
    for bytes in [&[][..], &[0], &[0, 60], &[0, 60, 0]] {
        assert_eq!(
            Method::decode(Bytes::copy_from_slice(bytes)),
            Err(CodecError::Truncated)
        );
    }
}

#[test]
fn invalid_utf8_in_a_short_string_is_an_error() {
    // basic.consume-ok with consumer-tag 0xff.
    assert_eq!(
        Method::decode(Bytes::from_static(&[0, 60, 0, 21, 1, 0xff])),
        Err(CodecError::InvalidUtf8)
    );
}

#[test]
fn only_publish_return_deliver_and_get_ok_carry_content() {
    let mut with_content: Vec<&str> = arbitrary::each_method()
        .into_iter()
        .filter(|(_, s)| {
            let mut runner = TestRunner::deterministic();
            s.new_tree(&mut runner).unwrap().current().has_content()
        })
        .map(|(name, _)| name)
        .collect();
    with_content.sort_unstable();
    assert_eq!(
        with_content,
        [
            "basic.deliver",
            "basic.get-ok",
            "basic.publish",
            "basic.return"
        ]
    );
}

#[test]
fn ids_names_and_conversions() {
    let m: Method = basic::QosOk {}.into();
    assert_eq!(
        (m.class_id(), m.method_id(), m.name()),
        (60, 11, "basic.qos-ok")
    );
    assert!(m.is_synchronous());
    assert!(!Method::from(basic::Ack::default()).is_synchronous());
    assert_eq!(basic::Publish::CLASS_ID, CLASS_BASIC);
    assert_eq!(basic::Publish::METHOD_ID, 40);
    assert_eq!(basic::RecoverAsync::METHOD_ID, 100);
    assert_eq!(basic::GetEmpty::METHOD_ID, 72);
    assert_eq!(exchange::UnbindOk::METHOD_ID, 51);
    assert_eq!(
        [
            CLASS_CONNECTION,
            CLASS_CHANNEL,
            CLASS_EXCHANGE,
            CLASS_QUEUE,
            CLASS_BASIC,
            CLASS_CONFIRM,
            CLASS_TX
        ],
        [10, 20, 40, 50, 60, 85, 90]
    );
    let declare = exchange::Declare {
        kind: short("topic"),
        ..Default::default()
    };
    assert_eq!(Method::from(declare).name(), "exchange.declare");
}

#[test]
fn constants_and_error_classes_come_from_the_spec() {
    assert_eq!(FRAME_METHOD, 1);
    assert_eq!(FRAME_HEARTBEAT, 8);
    assert_eq!(FRAME_END, crate::frame::FRAME_END);
    assert_eq!(FRAME_MIN_SIZE, crate::frame::FRAME_MIN_SIZE);
    assert_eq!(REPLY_SUCCESS, 200);
    assert_eq!(NO_ROUTE, 312);
    assert_eq!((NOT_FOUND, PRECONDITION_FAILED), (404, 406));
    assert_eq!((FRAME_ERROR, INTERNAL_ERROR), (501, 541));
    for soft in [311, 312, 313, 403, 404, 405, 406] {
        assert!(is_soft_error(soft) && !is_hard_error(soft), "{soft}");
    }
    for hard in [320, 402, 501, 502, 503, 504, 505, 506, 530, 540, 541] {
        assert!(is_hard_error(hard) && !is_soft_error(hard), "{hard}");
    }
    assert!(!is_hard_error(REPLY_SUCCESS) && !is_soft_error(REPLY_SUCCESS));
    assert_eq!(error_name(NOT_FOUND), Some("NOT_FOUND"));
    assert_eq!(error_name(200), None);
}

#[test]
fn a_method_frame_survives_the_frame_layer() {
    let m: Method = basic::Publish {
        exchange: short("amq.topic"),
        routing_key: short("a.b"),
        mandatory: true,
        immediate: false,
    }
    .into();
    let mut buf = BytesMut::new();
    write_method_frame(&mut buf, 3, &m);
    let frame = frame::decode_frame(&mut buf, 4096).unwrap().unwrap();
    assert_eq!((frame.kind, frame.channel), (FrameType::Method, 3));
    assert_eq!(Method::decode(frame.payload).unwrap(), m);
    assert!(buf.is_empty());
}

proptest! {
    /// The publish fast path decodes what `Method::decode` decodes, and fails as it fails.
    #[test]
    fn publish_decode_payload_agrees_with_method_decode(
        p in crate::generated::arbitrary::basic_publish(),
        cut in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 0..3),
    ) {
        let mut buf = bytes::BytesMut::new();
        Method::from(p).encode(&mut buf);
        let whole = buf.len();
        buf.extend_from_slice(&extra);
        let len = if extra.is_empty() { cut.index(whole + 1) } else { buf.len() };
        let payload = buf.freeze().slice(..len);
        let fast = basic::Publish::decode_payload(payload.clone());
        match Method::decode(payload) {
            Ok(Method::BasicPublish(m)) => prop_assert_eq!(fast, Ok(m)),
            Ok(other) => prop_assert!(false, "decoded as {}", other.name()),
            Err(e) => prop_assert_eq!(fast, Err(e)),
        }
    }
}
