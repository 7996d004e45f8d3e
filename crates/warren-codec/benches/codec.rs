//! Micro-benchmarks of the codec's per-message paths: what a publish costs to parse and a
//! delivery to write. See `docs/microbenchmarks.md`; `bench/instructions.sh` counts their
//! instructions.

#[path = "../../../bench/harness.rs"]
mod harness;

use bytes::{Bytes, BytesMut};
use harness::{black_box, Bench};
use warren_codec::frame::{self, FrameType};
use warren_codec::{
    basic, write_method_frame, BasicProperties, ContentHeader, FieldTable, FieldValue, LongString,
    Method, Reader, ShortString, CLASS_BASIC,
};

/// A short string backed by a shared (reference-counted) buffer, as decoded ones are: cloning
/// it costs what cloning a decoded one costs.
fn shared(s: &str) -> ShortString {
    ShortString::from_bytes(Bytes::copy_from_slice(s.as_bytes())).expect("short string")
}

/// What a typical client sets: content type and persistence.
fn plain_properties() -> BasicProperties {
    BasicProperties {
        content_type: Some(shared("application/json")),
        delivery_mode: Some(2),
        ..BasicProperties::default()
    }
}

/// Application headers of a typical traced message.
fn headers_table() -> FieldTable {
    FieldTable(vec![
        (
            shared("x-trace-id"),
            FieldValue::LongString(LongString::from("4bf92f3577b34da6a3ce929d0e0e4736")),
        ),
        (shared("x-retry-count"), FieldValue::I32(2)),
        (shared("x-first-seen"), FieldValue::Timestamp(1_700_000_000)),
        (shared("x-urgent"), FieldValue::Bool(false)),
        (
            shared("x-origin"),
            FieldValue::Table(FieldTable(vec![
                (shared("host"), FieldValue::LongString("edge-7".into())),
                (shared("pid"), FieldValue::I64(4242)),
            ])),
        ),
        (shared("tenant"), FieldValue::LongString("acme".into())),
    ])
}

fn headers_properties() -> BasicProperties {
    BasicProperties {
        headers: Some(headers_table()),
        message_id: Some(shared("msg-000000001")),
        timestamp: Some(1_700_000_000),
        ..plain_properties()
    }
}

fn publish_method() -> Method {
    Method::BasicPublish(basic::Publish {
        exchange: shared("orders"),
        routing_key: shared("orders.eu.created"),
        mandatory: false,
        immediate: false,
    })
}

/// The three frames of one publish with a 16-byte body, as a client writes them.
fn publish_frames() -> Vec<u8> {
    let mut buf = BytesMut::new();
    write_method_frame(&mut buf, 1, &publish_method());
    let body = [0x42u8; 16];
    frame::write_content_header(
        &mut buf,
        1,
        CLASS_BASIC,
        body.len() as u64,
        &plain_properties().to_raw(),
    );
    frame::write_body(&mut buf, 1, &body, 131_072);
    buf.to_vec()
}

/// The payload of a method frame (what `Method::decode` is given).
fn method_payload(m: &Method) -> Bytes {
    let mut buf = BytesMut::new();
    m.encode(&mut buf);
    buf.freeze()
}

struct FrameStream {
    buf: BytesMut,
    chunk: Vec<u8>,
}

/// Publishes per refill of the read buffer (a 64 KiB read, roughly).
const PUBLISHES_PER_READ: usize = 1024;

fn main() {
    let mut b = Bench::from_args("codec");

    // What the server does per published message: split three frames off the read buffer,
    // decode the method (`basic.publish` alone, without the `Method` enum) and the content
    // header (the body stays a slice of the buffer). The buffer is refilled, as a socket read
    // would, every 1024 messages.
    b.case(
        "decode_publish_frames",
        1_000_000,
        || {
            let one = publish_frames();
            let chunk = one.repeat(PUBLISHES_PER_READ);
            FrameStream {
                buf: BytesMut::with_capacity(chunk.len()),
                chunk,
            }
        },
        |s, _| {
            if s.buf.is_empty() {
                s.buf.extend_from_slice(&s.chunk);
            }
            let m = frame::decode_frame(&mut s.buf, 131_072).unwrap().unwrap();
            assert_eq!(warren_codec::method_ids(&m.payload), Some((60, 40)));
            let method = basic::Publish::decode_payload(m.payload).unwrap();
            let h = frame::decode_frame(&mut s.buf, 131_072).unwrap().unwrap();
            let header = ContentHeader::decode(h.payload).unwrap();
            let body = frame::decode_frame(&mut s.buf, 131_072).unwrap().unwrap();
            debug_assert_eq!(body.kind, FrameType::Body);
            black_box((method, header, body));
        },
    );

    b.case(
        "decode_publish_method",
        2_000_000,
        || method_payload(&publish_method()),
        |payload, _| {
            black_box(Method::decode(payload.clone()).unwrap());
        },
    );

    // What the server's writer does per delivery: basic.deliver, the publisher's raw
    // properties passed through, one body frame; the buffer is reused.
    b.case(
        "encode_deliver_16b",
        2_000_000,
        || {
            let consumer_tag = shared("amq.ctag-5UxKq3b0PQv6yNhZ0e7xvA");
            let exchange = shared("orders");
            let routing_key = shared("orders.eu.created");
            let raw = plain_properties().to_raw();
            let body = Bytes::copy_from_slice(&[0x42u8; 16]);
            (
                BytesMut::with_capacity(4096),
                consumer_tag,
                exchange,
                routing_key,
                raw,
                body,
            )
        },
        |(buf, tag, exchange, key, raw, body), i| {
            buf.clear();
            frame::write_deliver(buf, 1, tag, i + 1, false, exchange, key);
            frame::write_content_header(buf, 1, CLASS_BASIC, body.len() as u64, raw);
            frame::write_body(buf, 1, body, 131_072);
            black_box(&buf[..]);
        },
    );

    // What the server did for every publish before `scan` (and still does for direct reply-to).
    b.case(
        "properties_decode",
        2_000_000,
        || plain_properties().to_raw(),
        |raw, _| {
            black_box(BasicProperties::decode(raw.clone()).unwrap());
        },
    );

    // What the server does instead: check them all, read the few it needs.
    b.case(
        "properties_scan",
        2_000_000,
        || plain_properties().to_raw(),
        |raw, _| {
            black_box(BasicProperties::scan(raw).unwrap());
        },
    );

    b.case(
        "properties_scan_headers",
        500_000,
        || headers_properties().to_raw(),
        |raw, _| {
            black_box(BasicProperties::scan(raw).unwrap());
        },
    );

    b.case(
        "properties_decode_headers",
        500_000,
        || headers_properties().to_raw(),
        |raw, _| {
            black_box(BasicProperties::decode(raw.clone()).unwrap());
        },
    );

    b.case(
        "field_table_decode",
        500_000,
        || {
            let mut buf = BytesMut::new();
            headers_table().encode(&mut buf);
            buf.freeze()
        },
        |raw, _| {
            let mut r = Reader::new(raw.clone());
            black_box(FieldTable::decode(&mut r).unwrap());
        },
    );

    b.done();
}
