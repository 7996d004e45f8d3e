//! `warren-codec`: the AMQP 0-9-1 wire format, with RabbitMQ's extensions.
//!
//! Owns: frame splitting and writing ([`frame`]), the method structs and the [`Method`] enum
//! generated from `shared/spec/amqp0-9-1-rabbit.xml` ([`generated`], plus `connection.blocked`,
//! `connection.unblocked` and `connection.update-secret`, which that file lacks), field tables
//! with RabbitMQ's type codes ([`types`]), and content headers whose properties stay raw until
//! someone asks for them ([`frame::ContentHeader`], [`BasicProperties`], and
//! [`BasicProperties::scan`], which checks them and reads a few without decoding them).
//!
//! Must not know: sockets, tokio, or anything about the broker. Decoding never panics on bad
//! input: every malformed byte sequence is a [`CodecError`].

pub mod error;
pub mod frame;
pub mod generated;
pub mod reader;
pub mod scan;
pub mod types;

#[cfg(test)]
mod tests;

pub use error::CodecError;
pub use frame::{ContentHeader, Frame, FrameType};
pub use generated::*;
pub use reader::Reader;
pub use scan::PropertySummary;
pub use types::{Decimal, FieldTable, FieldValue, LongString, ShortString};

use bytes::{Bytes, BytesMut};

/// A method frame: header, class and method ids, arguments, frame end.
pub fn write_method_frame(buf: &mut BytesMut, channel: u16, method: &Method) {
    let start = frame::begin_frame(buf, FrameType::Method, channel);
    method.encode(buf);
    frame::finish_frame(buf, start);
}

/// The class and method ids at the start of a method frame's payload, if it has them.
pub fn method_ids(payload: &[u8]) -> Option<(u16, u16)> {
    match payload {
        [c0, c1, m0, m1, ..] => Some((
            u16::from_be_bytes([*c0, *c1]),
            u16::from_be_bytes([*m0, *m1]),
        )),
        _ => None,
    }
}

impl basic::Publish {
    /// Decodes a method frame's payload whose ids ([`method_ids`]) are `basic.publish`'s, with
    /// [`Method::decode`]'s checks and errors. The server's path for every publish: it skips
    /// the [`Method`] enum, a large value that would be moved several times per frame.
    pub fn decode_payload(payload: Bytes) -> Result<Self, CodecError> {
        let mut r = Reader::new(payload);
        r.get_u32()?; // the ids
        let publish = Self::decode_args(&mut r)?;
        if !r.is_empty() {
            return Err(CodecError::TrailingBytes(r.remaining()));
        }
        Ok(publish)
    }
}
