//! Random bytes never panic the decoders; they decode or return an error.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use crate::generated::arbitrary;
use crate::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn method_decode_never_panics_on_random_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        let _ = Method::decode(Bytes::from(bytes));
    }

    /// Random arguments behind a known class and method id reach the argument decoders.
    #[test]
    fn method_decode_never_panics_on_random_arguments(
        id in prop::sample::select(known_ids()),
        args in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut buf = BytesMut::new();
        buf.put_u16(id.0);
        buf.put_u16(id.1);
        buf.extend_from_slice(&args);
        if let Ok(m) = Method::decode(buf.freeze()) {
            // Whatever decodes re-encodes to something that decodes the same.
            let mut again = BytesMut::new();
            m.encode(&mut again);
            prop_assert_eq!(Method::decode(again.freeze())?, m);
        }
    }

    /// Valid encodings with some bytes flipped.
    #[test]
    fn method_decode_never_panics_on_corrupted_methods(
        m in arbitrary::method(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut buf = BytesMut::new();
        m.encode(&mut buf);
        for (at, x) in flips {
            let i = at.index(buf.len());
            buf[i] ^= x;
        }
        let _ = Method::decode(buf.freeze());
    }

    #[test]
    fn properties_decode_never_panics_on_random_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        let _ = BasicProperties::decode(Bytes::from(bytes));
    }

    #[test]
    fn properties_decode_never_panics_on_corrupted_properties(
        p in arbitrary::basic_properties(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut buf = BytesMut::from(&p.to_raw()[..]);
        for (at, x) in flips {
            let i = at.index(buf.len());
            buf[i] ^= x;
        }
        let _ = BasicProperties::decode(buf.freeze());
    }
}

fn known_ids() -> Vec<(u16, u16)> {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    arbitrary::each_method()
        .into_iter()
        .map(|(_, s)| {
            let m = s.new_tree(&mut runner).unwrap().current();
            (m.class_id(), m.method_id())
        })
        .collect()
}
