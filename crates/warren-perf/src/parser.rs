//! The hot-path frame scanner: walks a read buffer frame by frame without allocating, and turns
//! what a load generator cares about into calls on an [`Events`] sink.
//!
//! `basic.deliver` + header + body become one [`Events::deliver`] carrying the delivery tag and
//! the timestamp in the first eight body bytes; `basic.ack`/`basic.nack` become
//! [`Events::confirm`]; returned messages are counted and their content skipped. Everything
//! else (rare: `channel.close`, `connection.blocked`, ...) is decoded with `warren-codec` and
//! handed over as a [`Method`]. Incomplete frames are left in the buffer for the next read.

use bytes::Bytes;
use warren_codec::frame::{FRAME_END, FRAME_HEADER_SIZE, FRAME_OVERHEAD};
use warren_codec::{basic, CodecError, FrameType, Method};

use crate::client::ClientError;

/// What the scanner reports. Implementations must be cheap: they run once per message.
pub trait Events {
    /// A whole message arrived for a consumer. `timestamp` is the little-endian `u64` in the
    /// body's first eight bytes, if the body has that many.
    fn deliver(&mut self, delivery_tag: u64, timestamp: Option<u64>);
    /// A publisher confirm: `ack` false means `basic.nack`.
    fn confirm(&mut self, delivery_tag: u64, multiple: bool, ack: bool);
    /// A `basic.return` (its content is skipped).
    fn returned(&mut self);
    /// Any other method, decoded.
    fn method(&mut self, channel: u16, method: Method) -> Result<(), ClientError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    /// A content-bearing method we report once its body is complete.
    Deliver(u64),
    /// Content we skip (`basic.return`, `basic.get-ok`).
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages: expecting a method (or heartbeat).
    Idle,
    /// After a content-bearing method: expecting its header.
    Header(Content),
    /// Expecting `remaining` more body bytes.
    Body {
        content: Content,
        remaining: u64,
        timestamp: Option<u64>,
        first: bool,
    },
}

/// The content-assembly state that survives between reads.
#[derive(Debug)]
pub struct FrameParser {
    state: State,
    frame_max: u32,
}

fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn truncated() -> ClientError {
    ClientError::Codec(CodecError::Truncated)
}

impl FrameParser {
    /// `frame_max` bounds a whole frame, header and end octet included (0: no limit).
    pub fn new(frame_max: u32) -> Self {
        FrameParser {
            state: State::Idle,
            frame_max,
        }
    }

    pub fn set_frame_max(&mut self, frame_max: u32) {
        self.frame_max = frame_max;
    }

    /// Consumes every whole frame at the front of `buf`, reporting to `events`. Returns how many
    /// bytes were consumed; the rest is an incomplete frame to keep for the next read.
    pub fn parse(&mut self, buf: &[u8], events: &mut impl Events) -> Result<usize, ClientError> {
        let mut pos = 0;
        while buf.len() - pos >= FRAME_HEADER_SIZE {
            let h = &buf[pos..];
            let kind = h[0];
            let channel = u16::from_be_bytes([h[1], h[2]]);
            let size = u32::from_be_bytes([h[3], h[4], h[5], h[6]]);
            let total = size as usize + FRAME_OVERHEAD;
            if self.frame_max != 0 && total as u64 > u64::from(self.frame_max) {
                return Err(ClientError::Codec(CodecError::FrameTooLarge {
                    size: size.saturating_add(FRAME_OVERHEAD as u32),
                    max: self.frame_max,
                }));
            }
            if h.len() < total {
                break;
            }
            if h[total - 1] != FRAME_END {
                return Err(ClientError::Codec(CodecError::BadFrameEnd(h[total - 1])));
            }
            let payload = &h[FRAME_HEADER_SIZE..total - 1];
            match kind {
                k if k == FrameType::Method as u8 => self.method(channel, payload, events)?,
                k if k == FrameType::Header as u8 => self.header(payload, events)?,
                k if k == FrameType::Body as u8 => self.body(payload, events)?,
                k if k == FrameType::Heartbeat as u8 => {}
                other => return Err(ClientError::Codec(CodecError::UnknownFrameType(other))),
            }
            pos += total;
        }
        Ok(pos)
    }

    fn method(
        &mut self,
        channel: u16,
        p: &[u8],
        events: &mut impl Events,
    ) -> Result<(), ClientError> {
        if self.state != State::Idle {
            return Err(ClientError::Unexpected(
                "method frame in the middle of a message's content".into(),
            ));
        }
        let class = be_u16(p, 0).ok_or_else(truncated)?;
        let method = be_u16(p, 2).ok_or_else(truncated)?;
        match (class, method) {
            (basic::Deliver::CLASS_ID, basic::Deliver::METHOD_ID) => {
                // consumer-tag (shortstr), delivery-tag (longlong), ...
                let tag_len = *p.get(4).ok_or_else(truncated)? as usize;
                let delivery_tag = be_u64(p, 5 + tag_len).ok_or_else(truncated)?;
                self.state = State::Header(Content::Deliver(delivery_tag));
            }
            (basic::Ack::CLASS_ID, basic::Ack::METHOD_ID)
            | (basic::Nack::CLASS_ID, basic::Nack::METHOD_ID) => {
                let tag = be_u64(p, 4).ok_or_else(truncated)?;
                let bits = *p.get(12).ok_or_else(truncated)?;
                events.confirm(tag, bits & 1 != 0, method == basic::Ack::METHOD_ID);
            }
            (basic::Return::CLASS_ID, basic::Return::METHOD_ID) => {
                events.returned();
                self.state = State::Header(Content::Skip);
            }
            (basic::GetOk::CLASS_ID, basic::GetOk::METHOD_ID) => {
                self.state = State::Header(Content::Skip);
            }
            _ => {
                let m = Method::decode(Bytes::copy_from_slice(p))?;
                events.method(channel, m)?;
            }
        }
        Ok(())
    }

    fn header(&mut self, p: &[u8], events: &mut impl Events) -> Result<(), ClientError> {
        let State::Header(content) = self.state else {
            return Err(ClientError::Unexpected(
                "content header without a method before it".into(),
            ));
        };
        // class-id (short), weight (short), body-size (longlong), properties.
        let _class = be_u32(p, 0).ok_or_else(truncated)?;
        let body_size = be_u64(p, 4).ok_or_else(truncated)?;
        if body_size == 0 {
            self.finish(content, None, events);
        } else {
            self.state = State::Body {
                content,
                remaining: body_size,
                timestamp: None,
                first: true,
            };
        }
        Ok(())
    }

    fn body(&mut self, p: &[u8], events: &mut impl Events) -> Result<(), ClientError> {
        let State::Body {
            content,
            remaining,
            mut timestamp,
            first,
        } = self.state
        else {
            return Err(ClientError::Unexpected(
                "body frame without a content header".into(),
            ));
        };
        if first {
            timestamp = p
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes);
        }
        let len = p.len() as u64;
        if len > remaining {
            return Err(ClientError::Unexpected(
                "body frames longer than the header's body size".into(),
            ));
        }
        let remaining = remaining - len;
        if remaining == 0 {
            self.finish(content, timestamp, events);
        } else {
            self.state = State::Body {
                content,
                remaining,
                timestamp,
                first: false,
            };
        }
        Ok(())
    }

    fn finish(&mut self, content: Content, timestamp: Option<u64>, events: &mut impl Events) {
        self.state = State::Idle;
        if let Content::Deliver(tag) = content {
            events.deliver(tag, timestamp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use warren_codec::frame::{write_body, write_content_header, write_heartbeat};
    use warren_codec::{channel, write_method_frame, ShortString};

    #[derive(Default)]
    struct Log {
        delivered: Vec<(u64, Option<u64>)>,
        confirms: Vec<(u64, bool, bool)>,
        returned: usize,
        methods: Vec<(u16, &'static str)>,
    }

    impl Events for Log {
        fn deliver(&mut self, tag: u64, ts: Option<u64>) {
            self.delivered.push((tag, ts));
        }
        fn confirm(&mut self, tag: u64, multiple: bool, ack: bool) {
            self.confirms.push((tag, multiple, ack));
        }
        fn returned(&mut self) {
            self.returned += 1;
        }
        fn method(&mut self, channel: u16, method: Method) -> Result<(), ClientError> {
            self.methods.push((channel, method.name()));
            Ok(())
        }
    }

    fn deliver(buf: &mut BytesMut, tag: u64, body: &[u8], frame_max: u32) {
        let m = Method::BasicDeliver(basic::Deliver {
            consumer_tag: ShortString::from_static("ctag-1"),
            delivery_tag: tag,
            redelivered: false,
            exchange: ShortString::empty(),
            routing_key: ShortString::from_static("q"),
        });
        write_method_frame(buf, 1, &m);
        write_content_header(buf, 1, 60, body.len() as u64, &[0, 0]);
        write_body(buf, 1, body, frame_max);
    }

    #[test]
    fn deliveries_are_reported_with_their_timestamp() {
        let mut buf = BytesMut::new();
        let mut body = 42u64.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 8]);
        deliver(&mut buf, 1, &body, 0);
        write_heartbeat(&mut buf);
        deliver(&mut buf, 2, b"tiny", 0);
        deliver(&mut buf, 3, b"", 0);
        let mut log = Log::default();
        let mut p = FrameParser::new(0);
        let n = p.parse(&buf, &mut log).unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(log.delivered, vec![(1, Some(42)), (2, None), (3, None)]);
        assert_eq!(p.state, State::Idle);
    }

    #[test]
    fn frames_split_across_reads_are_resumed() {
        let mut buf = BytesMut::new();
        let mut body = 7u64.to_le_bytes().to_vec();
        body.resize(10_000, 1);
        deliver(&mut buf, 9, &body, 4096);
        deliver(&mut buf, 10, &body, 4096);
        let mut log = Log::default();
        let mut p = FrameParser::new(4096);
        // Feed one byte at a time, keeping the unconsumed tail as a reader would.
        let mut pending = Vec::new();
        for &b in buf.iter() {
            pending.push(b);
            let n = p.parse(&pending, &mut log).unwrap();
            pending.drain(..n);
        }
        assert!(pending.is_empty());
        assert_eq!(log.delivered, vec![(9, Some(7)), (10, Some(7))]);
    }

    #[test]
    fn confirms_returns_and_other_methods() {
        let mut buf = BytesMut::new();
        let ack = |tag, multiple| {
            Method::BasicAck(basic::Ack {
                delivery_tag: tag,
                multiple,
            })
        };
        write_method_frame(&mut buf, 1, &ack(5, true));
        write_method_frame(
            &mut buf,
            1,
            &Method::BasicNack(basic::Nack {
                delivery_tag: 6,
                multiple: false,
                requeue: false,
            }),
        );
        let ret = Method::BasicReturn(basic::Return {
            reply_code: 312,
            reply_text: ShortString::from_static("NO_ROUTE"),
            exchange: ShortString::empty(),
            routing_key: ShortString::from_static("nowhere"),
        });
        write_method_frame(&mut buf, 1, &ret);
        write_content_header(&mut buf, 1, 60, 3, &[0, 0]);
        write_body(&mut buf, 1, b"abc", 0);
        write_method_frame(
            &mut buf,
            1,
            &Method::ChannelClose(channel::Close {
                reply_code: 404,
                reply_text: ShortString::from_static("NOT_FOUND"),
                class_id: 60,
                method_id: 40,
            }),
        );
        let mut log = Log::default();
        FrameParser::new(0).parse(&buf, &mut log).unwrap();
        assert_eq!(log.confirms, vec![(5, true, true), (6, false, false)]);
        assert_eq!(log.returned, 1);
        assert!(log.delivered.is_empty());
        assert_eq!(log.methods, vec![(1, "channel.close")]);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let mut p = FrameParser::new(0);
        let mut log = Log::default();
        // Bad frame end.
        assert!(p.parse(&[8, 0, 0, 0, 0, 0, 0, 0xAB], &mut log).is_err());
        // Unknown frame type.
        assert!(p.parse(&[9, 0, 0, 0, 0, 0, 0, 0xCE], &mut log).is_err());
        // Body with no header.
        assert!(p
            .parse(&[3, 0, 1, 0, 0, 0, 1, b'x', 0xCE], &mut log)
            .is_err());
        // Deliver whose consumer tag runs past the payload.
        assert!(FrameParser::new(0)
            .parse(&[1, 0, 1, 0, 0, 0, 5, 0, 60, 0, 60, 200, 0xCE], &mut log)
            .is_err());
        // Oversize frame is refused from its header alone.
        assert!(FrameParser::new(4096)
            .parse(&[3, 0, 1, 0, 1, 0, 0], &mut log)
            .is_err());
    }
}
