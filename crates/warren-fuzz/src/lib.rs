//! The checks Warren's fuzz targets run, one function per target. `fuzz/` (cargo-fuzz, built
//! with libFuzzer) calls them with generated inputs; `tests/corpus.rs` replays the committed
//! corpus through the same functions in an ordinary `cargo test`, so a crash found once stays
//! fixed.
//!
//! Each check must not panic on any input, and states what must hold for the input it got
//! (a decode that succeeds re-encodes to something that decodes to the same value; the fast
//! property scan agrees with the full decode).

use bytes::{Bytes, BytesMut};
use warren_codec::frame::{decode_frame, frame_len};
use warren_codec::{BasicProperties, FieldTable, Method, Reader};

/// The names of the targets, as `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`.
pub const TARGETS: &[&str] = &[
    "frames",
    "methods",
    "field_tables",
    "properties",
    "definitions",
    "channel_frames",
    "config",
    "cluster_frames",
];

/// Runs the check called `name` on `data` (None: no such target).
pub fn run(name: &str, data: &[u8]) -> Option<()> {
    match name {
        "frames" => frames(data),
        "methods" => methods(data),
        "field_tables" => field_tables(data),
        "properties" => properties(data),
        "definitions" => definitions(data),
        "channel_frames" => channel_frames(data),
        "config" => config(data),
        "cluster_frames" => cluster_frames(data),
        _ => return None,
    }
    Some(())
}

/// A byte stream split into frames, as the connection reader does; the first byte picks a
/// `frame_max` (0, the AMQP minimum, or large). `frame_len` and `decode_frame` must agree.
pub fn frames(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let frame_max = match pick % 3 {
        0 => 0,
        1 => 4096,
        _ => 131_072,
    };
    let mut buf = BytesMut::from(rest);
    loop {
        let len = frame_len(&buf, frame_max);
        match decode_frame(&mut buf, frame_max) {
            Ok(Some(f)) => {
                assert!(
                    matches!(len, Ok(Some(n)) if n == f.payload.len() + 8),
                    "frame_len {len:?} disagrees with a {}-byte payload",
                    f.payload.len()
                );
            }
            Ok(None) => {
                assert!(len.is_ok(), "frame_len failed where decode waits: {len:?}");
                return;
            }
            // A bad header fails both; a bad frame-end octet only the decode.
            Err(_) => return,
        }
    }
}

/// A method frame's payload: what decodes must encode to bytes that decode and encode to the
/// same bytes again (bytes, not values: a NaN float in a table is not equal to itself).
pub fn methods(data: &[u8]) {
    let Ok(m) = Method::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let mut first = BytesMut::new();
    m.encode(&mut first);
    let again = Method::decode(first.clone().freeze()).expect("a re-encoded method decodes");
    let mut second = BytesMut::new();
    again.encode(&mut second);
    assert_eq!(first, second);
}

/// A field table (with its length prefix): the same round trip.
pub fn field_tables(data: &[u8]) {
    let mut r = Reader::new(Bytes::copy_from_slice(data));
    let Ok(t) = FieldTable::decode(&mut r) else {
        return;
    };
    let mut first = BytesMut::new();
    t.encode(&mut first);
    let again = FieldTable::decode(&mut Reader::new(first.clone().freeze()))
        .expect("a re-encoded table decodes");
    let mut second = BytesMut::new();
    again.encode(&mut second);
    assert_eq!(first, second);
}

/// Content-header properties: the broker's fast scan accepts exactly what the full decode
/// accepts, and reads the same values.
pub fn properties(data: &[u8]) {
    let scanned = BasicProperties::scan(data);
    let decoded = BasicProperties::decode(Bytes::copy_from_slice(data));
    match (scanned, decoded) {
        (Ok(s), Ok(d)) => {
            assert_eq!(s.delivery_mode, d.delivery_mode);
            assert_eq!(s.priority, d.priority);
            assert_eq!(s.reply_to, d.reply_to.as_ref().map(|v| v.as_str()));
            assert_eq!(s.expiration, d.expiration.as_ref().map(|v| v.as_str()));
            assert_eq!(s.user_id, d.user_id.as_ref().map(|v| v.as_str()));
            assert_eq!(s.has_headers, d.headers.is_some());
        }
        (Err(_), Err(_)) => {}
        (s, d) => panic!("scan and decode disagree: {s:?} vs {d:?}"),
    }
}

/// A definitions file imported into an empty in-memory broker, then exported: errors are
/// fine, panics are not, and whatever was imported exports.
pub fn definitions(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(defs) = warren_broker::definitions::Definitions::parse(text) else {
        return;
    };
    let broker = warren_broker::Broker::empty();
    let _ = defs.apply(&broker);
    let _ = warren_broker::definitions::Definitions::export(&broker, None);
}

/// A frame sequence for channel 1 fed to the channel's state machine as the connection would
/// (methods, content headers, bodies; in-memory broker): the content assembler and every
/// method handler must refuse what they cannot take with an AMQP error, never a panic. The
/// first error ends the run, as it would close the channel or the connection.
pub fn channel_frames(data: &[u8]) {
    use std::sync::Arc;
    use warren_codec::FrameType;

    let broker = Arc::new(warren_broker::Broker::new());
    let Ok(warren_server::driven::Driven {
        ctx, mut machine, ..
    }) = warren_server::driven::driven(&broker, 1 << 20)
    else {
        return;
    };
    let mut buf = BytesMut::from(data);
    while let Ok(Some(f)) = decode_frame(&mut buf, 131_072) {
        let result = match f.kind {
            FrameType::Method => match Method::decode(f.payload) {
                Ok(Method::BasicPublish(p)) => machine.handle_publish(p),
                Ok(m) => machine.handle_method_frame(&ctx, m),
                // The connection would close (502/503): end as it would.
                Err(_) => break,
            },
            FrameType::Header | FrameType::Body => machine.handle_content_frame(&ctx, f),
            FrameType::Heartbeat => Ok(()),
        };
        if result.is_err() {
            break;
        }
        machine.flush_confirms(&ctx, ctx.durability.reached());
    }
    // As the connection ends: consumers and unacked messages go back (without this, the
    // queue and its consumer keep each other alive, which the leak checker reports).
    machine.end(&ctx);
    broker.connection_closed(1);
}

/// A configuration file (rabbitmq.conf's format), then the same text as `WARREN_*`
/// variables: every line is a setting or an error naming it, never a panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut settings = warren::config::Settings::default();
    let _ = settings.apply_file(text);
    let env = text.lines().filter_map(|l| {
        let (k, v) = l.split_once('=')?;
        Some((
            format!("WARREN_{}", k.trim().to_uppercase().replace('.', "__")),
            v.trim().to_owned(),
        ))
    });
    let _ = warren::config::Settings::default().apply_env(env);
}

/// What a cluster peer sends: the first byte picks how the rest is used. Even: a frame of that
/// kind (the byte's upper bits) around the rest as its body, sealed with a valid checksum, so
/// that the fuzzer reaches the request decoding behind it. Odd: the rest as raw link bytes,
/// split into frames as the link reader does. A frame that decodes must re-encode to the same
/// bytes; its body decodes as its kind's request or is refused, never a panic.
pub fn cluster_frames(data: &[u8]) {
    use warren_cluster::wire::{Frame, Kind};
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let check = |bytes: &[u8]| {
        if let Ok(f) = Frame::decode(&bytes[4..]) {
            assert_eq!(f.encode(), bytes, "a decoded frame re-encodes differently");
            let _ = warren_cluster::decode_request(&f);
        }
    };
    if pick % 2 == 0 {
        let kinds = [
            Kind::AppendEntries,
            Kind::Vote,
            Kind::PreVote,
            Kind::Snapshot,
            Kind::TransferLeader,
            Kind::Ping,
            Kind::Response,
            Kind::Challenge,
            Kind::Hello,
            Kind::Welcome,
        ];
        let kind = kinds[usize::from(pick / 2) % kinds.len()];
        let frame = Frame {
            kind,
            group: 1,
            corr: 7,
            body: rest.to_vec(),
        };
        let bytes = frame.encode();
        assert_eq!(
            Frame::rest_len([bytes[0], bytes[1], bytes[2], bytes[3]]),
            Ok(bytes.len() - 4)
        );
        check(&bytes);
        return;
    }
    let mut stream = rest;
    while stream.len() >= 4 {
        let Ok(len) = Frame::rest_len([stream[0], stream[1], stream[2], stream[3]]) else {
            return;
        };
        if stream.len() < 4 + len {
            return;
        }
        check(&stream[..4 + len]);
        stream = &stream[4 + len..];
    }
}
