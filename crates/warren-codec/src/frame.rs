//! Frame splitting and writing.
//!
//! The mini-redis discipline: callers read into a buffer and call [`decode_frame`] until it
//! returns `Ok(None)` ("incomplete" is normal, not an error). An oversize frame is rejected from
//! its 7-byte header, before its payload is buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::CodecError;
use crate::generated::basic;
use crate::types::ShortString;

/// What a client sends first: `AMQP` 0 0 9 1. The server answers a wrong one with this too.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// Type, channel and size: the bytes before a frame's payload.
pub const FRAME_HEADER_SIZE: usize = 7;
/// Header plus the frame-end octet: what a frame costs beyond its payload.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_SIZE + 1;
pub const FRAME_END: u8 = 0xCE;
/// Spec: peers must accept frames of at least this size before tuning.
pub const FRAME_MIN_SIZE: u32 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    Method = 1,
    Header = 2,
    Body = 3,
    Heartbeat = 8,
}

impl FrameType {
    fn from_u8(v: u8) -> Result<Self, CodecError> {
        Ok(match v {
            1 => FrameType::Method,
            2 => FrameType::Header,
            3 => FrameType::Body,
            8 => FrameType::Heartbeat,
            other => return Err(CodecError::UnknownFrameType(other)),
        })
    }
}

/// One frame, its payload shared with the read buffer.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: FrameType,
    pub channel: u16,
    pub payload: Bytes,
}

/// Outcome of looking at the first bytes a client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum ProtocolHeader {
    /// Fewer than eight bytes so far.
    Incomplete,
    /// `AMQP 0-9-1`; the eight bytes have been consumed.
    Accepted,
    /// Anything else: answer with [`PROTOCOL_HEADER`] and close.
    Rejected,
}

/// Checks (and on success consumes) the protocol header at the start of `buf`.
pub fn decode_protocol_header(buf: &mut BytesMut) -> ProtocolHeader {
    let n = buf.len().min(PROTOCOL_HEADER.len());
    if buf[..n] != PROTOCOL_HEADER[..n] {
        return ProtocolHeader::Rejected;
    }
    if n < PROTOCOL_HEADER.len() {
        return ProtocolHeader::Incomplete;
    }
    let _ = buf.split_to(PROTOCOL_HEADER.len());
    ProtocolHeader::Accepted
}

/// The length (header, payload and end octet) of the frame starting at `buf[0]`, from its
/// header alone; `Ok(None)` while fewer than 7 bytes are buffered. Lets a reader make room for
/// the rest of a frame, or read a large one into a buffer of its own ([`decode_whole_frame`]).
///
/// `frame_max` bounds the whole frame (0 means no limit); the errors are [`decode_frame`]'s.
pub fn frame_len(buf: &[u8], frame_max: u32) -> Result<Option<usize>, CodecError> {
    Ok(frame_header(buf, frame_max)?.map(|h| h.total))
}

/// A checked frame header.
struct FrameHeader {
    kind: FrameType,
    channel: u16,
    /// Header, payload and end octet.
    total: usize,
}

fn frame_header(buf: &[u8], frame_max: u32) -> Result<Option<FrameHeader>, CodecError> {
    let Some(header) = buf.get(..FRAME_HEADER_SIZE) else {
        return Ok(None);
    };
    let kind = FrameType::from_u8(header[0])?;
    let channel = u16::from_be_bytes([header[1], header[2]]);
    let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]);
    if kind == FrameType::Heartbeat && size != 0 {
        return Err(CodecError::HeartbeatPayload(size));
    }
    let total = size as u64 + FRAME_OVERHEAD as u64;
    if frame_max != 0 && total > frame_max as u64 {
        return Err(CodecError::FrameTooLarge {
            size: size.saturating_add(FRAME_OVERHEAD as u32),
            max: frame_max,
        });
    }
    Ok(Some(FrameHeader {
        kind,
        channel,
        total: total as usize,
    }))
}

/// Splits one whole frame off the front of `buf`, or returns `Ok(None)` if more bytes are needed
/// (making room for them is the caller's business; [`frame_len`] tells how much).
///
/// `frame_max` bounds the whole frame including header and end octet (0 means no limit). On
/// error the connection must be closed with 501 FRAME_ERROR; the buffer is left as it was.
pub fn decode_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, CodecError> {
    let Some(header) = frame_header(buf, frame_max)? else {
        return Ok(None);
    };
    if buf.len() < header.total {
        return Ok(None);
    }
    check_frame_end(buf[header.total - 1])?;
    let frame = buf.split_to(header.total);
    Ok(Some(into_frame(frame, &header)))
}

/// The frame in `buf`, which holds exactly one whole frame and nothing else: a large frame read
/// into a buffer of its own. Unlike [`decode_frame`] it does not split the buffer, so the
/// payload stays its only owner: passing it on (as a message body) and dropping it later, on
/// another thread, touches no reference count shared with other frames.
pub fn decode_whole_frame(buf: BytesMut, frame_max: u32) -> Result<Frame, CodecError> {
    let Some(header) = frame_header(&buf, frame_max)? else {
        return Err(CodecError::Truncated);
    };
    if buf.len() != header.total {
        return Err(CodecError::Truncated);
    }
    check_frame_end(buf[header.total - 1])?;
    Ok(into_frame(buf, &header))
}

fn check_frame_end(end: u8) -> Result<(), CodecError> {
    if end == FRAME_END {
        Ok(())
    } else {
        Err(CodecError::BadFrameEnd(end))
    }
}

/// The payload of `frame`, a whole checked frame.
fn into_frame(mut frame: BytesMut, header: &FrameHeader) -> Frame {
    // `advance` and `truncate`, not `split_to`: splitting would take (and then drop) another
    // reference to a shared buffer, two atomic operations per frame.
    frame.advance(FRAME_HEADER_SIZE);
    frame.truncate(header.total - FRAME_OVERHEAD);
    Frame {
        kind: header.kind,
        channel: header.channel,
        payload: frame.freeze(),
    }
}

/// Writes a frame header whose size is patched by [`finish_frame`] once the payload is written.
/// Returns the offset to pass to `finish_frame`.
pub fn begin_frame(buf: &mut BytesMut, kind: FrameType, channel: u16) -> usize {
    let start = buf.len();
    buf.put_u8(kind as u8);
    buf.put_u16(channel);
    buf.put_u32(0);
    start
}

/// Patches the size of the frame begun at `start` and appends the frame-end octet.
pub fn finish_frame(buf: &mut BytesMut, start: usize) {
    let size = (buf.len() - start - FRAME_HEADER_SIZE) as u32;
    buf[start + 3..start + 7].copy_from_slice(&size.to_be_bytes());
    buf.put_u8(FRAME_END);
}

/// A whole frame around an already-encoded payload.
pub fn write_frame(buf: &mut BytesMut, kind: FrameType, channel: u16, payload: &[u8]) {
    buf.reserve(payload.len() + FRAME_OVERHEAD);
    write_frame_header(buf, kind, channel, payload.len() as u32);
    buf.put_slice(payload);
    buf.put_u8(FRAME_END);
}

/// The header of a frame whose `size` payload bytes (and frame-end octet) the caller writes.
pub fn write_frame_header(buf: &mut BytesMut, kind: FrameType, channel: u16, size: u32) {
    buf.put_u8(kind as u8);
    buf.put_u16(channel);
    buf.put_u32(size);
}

/// The largest body slice per body frame for `frame_max` (0 means no limit).
pub fn body_chunk_size(frame_max: u32) -> usize {
    if frame_max == 0 {
        usize::MAX
    } else {
        (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1)
    }
}

pub fn write_heartbeat(buf: &mut BytesMut) {
    write_frame(buf, FrameType::Heartbeat, 0, &[]);
}

/// A content header frame. `raw_properties` is the property-flags word(s) followed by the
/// property list, exactly as the publisher sent them: properties are passed through unchanged.
pub fn write_content_header(
    buf: &mut BytesMut,
    channel: u16,
    class_id: u16,
    body_size: u64,
    raw_properties: &[u8],
) {
    let size = 2 + 2 + 8 + raw_properties.len();
    buf.reserve(size + FRAME_OVERHEAD);
    buf.put_u8(FrameType::Header as u8);
    buf.put_u16(channel);
    buf.put_u32(size as u32);
    buf.put_u16(class_id);
    buf.put_u16(0);
    buf.put_u64(body_size);
    buf.put_slice(raw_properties);
    buf.put_u8(FRAME_END);
}

/// Body frames for `body`, each at most `frame_max` long (0 means one frame). An empty body
/// gets no body frame at all (spec: the header's body size of 0 says it all).
pub fn write_body(buf: &mut BytesMut, channel: u16, body: &[u8], frame_max: u32) {
    for part in body.chunks(body_chunk_size(frame_max)) {
        write_frame(buf, FrameType::Body, channel, part);
    }
}

/// The `basic.deliver` method frame, from borrowed fields. The server writes one per delivery;
/// building a [`crate::Method`] for it would move a large enum and clone the exchange and
/// routing key, whose reference counts live in the publisher's read buffer, on another core.
/// The bytes are those of `Method::BasicDeliver` (a test checks it).
pub fn write_deliver(
    buf: &mut BytesMut,
    channel: u16,
    consumer_tag: &ShortString,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &ShortString,
    routing_key: &ShortString,
) {
    let size = 2 + 2 + consumer_tag.encoded_len() + 8 + 1;
    let size = size + exchange.encoded_len() + routing_key.encoded_len();
    buf.reserve(size + FRAME_OVERHEAD);
    write_frame_header(buf, FrameType::Method, channel, size as u32);
    buf.put_u16(basic::Deliver::CLASS_ID);
    buf.put_u16(basic::Deliver::METHOD_ID);
    consumer_tag.encode(buf);
    buf.put_u64(delivery_tag);
    buf.put_u8(u8::from(redelivered));
    exchange.encode(buf);
    routing_key.encode(buf);
    buf.put_u8(FRAME_END);
}

/// A decoded content header. The properties stay raw; decode them with
/// [`crate::BasicProperties::decode`] only when something needs to look inside.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentHeader {
    pub class_id: u16,
    pub body_size: u64,
    /// Property flags followed by the property list.
    pub raw_properties: Bytes,
}

impl ContentHeader {
    pub fn decode(payload: Bytes) -> Result<Self, CodecError> {
        let mut r = crate::reader::Reader::new(payload);
        let class_id = r.get_u16()?;
        let weight = r.get_u16()?;
        if weight != 0 {
            return Err(CodecError::NonZeroWeight(weight));
        }
        let body_size = r.get_u64()?;
        let raw_properties = r.rest();
        if raw_properties.len() < 2 {
            return Err(CodecError::Truncated);
        }
        Ok(ContentHeader {
            class_id,
            body_size,
            raw_properties,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_frame_waits_for_more_bytes() {
        let mut buf = BytesMut::new();
        write_frame(&mut buf, FrameType::Body, 3, b"hello");
        let whole = buf.clone();
        let mut partial = BytesMut::from(&whole[..9]);
        assert!(decode_frame(&mut partial, 0).unwrap().is_none());
        partial.extend_from_slice(&whole[9..]);
        let frame = decode_frame(&mut partial, 0).unwrap().unwrap();
        assert_eq!(frame.kind, FrameType::Body);
        assert_eq!(frame.channel, 3);
        assert_eq!(&frame.payload[..], b"hello");
        assert!(partial.is_empty());
    }

    #[test]
    fn whole_frame_in_its_own_buffer_decodes_like_a_split_one() {
        let mut buf = BytesMut::new();
        write_frame(&mut buf, FrameType::Body, 3, &[7u8; 100]);
        assert_eq!(frame_len(&buf[..7], 0), Ok(Some(108)));
        assert_eq!(frame_len(&buf[..6], 0), Ok(None));
        let frame = decode_whole_frame(buf.clone(), 0).unwrap();
        assert_eq!((frame.kind, frame.channel), (FrameType::Body, 3));
        assert_eq!(&frame.payload[..], &[7u8; 100][..]);
        assert_eq!(
            decode_whole_frame(buf.split_to(107), 0).unwrap_err(),
            CodecError::Truncated
        );
        let mut bad = BytesMut::new();
        write_frame(&mut bad, FrameType::Body, 3, b"x");
        bad[8] = 0;
        assert_eq!(
            decode_whole_frame(bad, 0).unwrap_err(),
            CodecError::BadFrameEnd(0)
        );
        assert_eq!(
            frame_len(&[3u8, 0, 1, 0, 1, 0, 0], 4096).unwrap_err(),
            CodecError::FrameTooLarge {
                size: 65536 + 8,
                max: 4096
            }
        );
    }

    #[test]
    fn oversize_frame_is_rejected_from_its_header() {
        let mut buf = BytesMut::from(&[3u8, 0, 1, 0, 1, 0, 0][..]);
        assert_eq!(
            decode_frame(&mut buf, 4096).unwrap_err(),
            CodecError::FrameTooLarge {
                size: 65536 + 8,
                max: 4096
            }
        );
    }

    #[test]
    fn bad_frame_end_is_an_error() {
        let mut buf = BytesMut::from(&[8u8, 0, 0, 0, 0, 0, 0, 0xAB][..]);
        assert_eq!(
            decode_frame(&mut buf, 0).unwrap_err(),
            CodecError::BadFrameEnd(0xAB)
        );
    }

    #[test]
    fn unknown_frame_type_is_an_error() {
        let mut buf = BytesMut::from(&[9u8, 0, 0, 0, 0, 0, 0, 0xCE][..]);
        assert_eq!(
            decode_frame(&mut buf, 0).unwrap_err(),
            CodecError::UnknownFrameType(9)
        );
    }

    #[test]
    fn protocol_header_is_checked_incrementally() {
        let mut buf = BytesMut::from(&b"AMQ"[..]);
        assert_eq!(decode_protocol_header(&mut buf), ProtocolHeader::Incomplete);
        buf.extend_from_slice(b"P\x00\x00\x09\x01rest");
        assert_eq!(decode_protocol_header(&mut buf), ProtocolHeader::Accepted);
        assert_eq!(&buf[..], b"rest");
        let mut bad = BytesMut::from(&b"AMQP\x01\x01\x00\x0a"[..]);
        assert_eq!(decode_protocol_header(&mut bad), ProtocolHeader::Rejected);
        let mut http = BytesMut::from(&b"GET"[..]);
        assert_eq!(decode_protocol_header(&mut http), ProtocolHeader::Rejected);
    }

    #[test]
    fn deliver_frame_is_the_generated_encoding() {
        let s = |v: &str| ShortString::try_from(v).unwrap();
        for (tag, exchange) in [("amq.ctag-1", "orders"), ("", "")] {
            let m = crate::basic::Deliver {
                consumer_tag: s(tag),
                delivery_tag: 0x0102_0304_0506_0708,
                redelivered: true,
                exchange: s(exchange),
                routing_key: s("orders.eu"),
            };
            let mut want = BytesMut::new();
            crate::write_method_frame(&mut want, 7, &m.clone().into());
            let mut got = BytesMut::new();
            write_deliver(
                &mut got,
                7,
                &m.consumer_tag,
                m.delivery_tag,
                m.redelivered,
                &m.exchange,
                &m.routing_key,
            );
            assert_eq!(got, want);
        }
    }

    #[test]
    fn body_is_split_at_frame_max() {
        let mut buf = BytesMut::new();
        write_body(&mut buf, 1, &[7u8; 10], 12);
        let mut n = 0;
        let mut total = 0;
        while let Some(f) = decode_frame(&mut buf, 12).unwrap() {
            n += 1;
            total += f.payload.len();
        }
        assert_eq!((n, total), (3, 10));
    }
}
