//! `warren-codec`: the AMQP 0-9-1 wire format, with RabbitMQ's extensions.
//!
//! Owns: frame splitting and writing ([`frame`]), the method structs and the [`Method`] enum
//! generated from `shared/spec/amqp0-9-1-rabbit.xml` ([`generated`], plus `connection.blocked`,
//! `connection.unblocked` and `connection.update-secret`, which that file lacks), field tables
//! with RabbitMQ's type codes ([`types`]), and content headers whose properties stay raw until
//! someone asks for them ([`frame::ContentHeader`], [`BasicProperties`]).
//!
//! Must not know: sockets, tokio, or anything about the broker. Decoding never panics on bad
//! input: every malformed byte sequence is a [`CodecError`].

pub mod error;
pub mod frame;
pub mod generated;
pub mod reader;
pub mod types;

#[cfg(test)]
mod tests;

pub use error::CodecError;
pub use frame::{ContentHeader, Frame, FrameType};
pub use generated::*;
pub use reader::Reader;
pub use types::{Decimal, FieldTable, FieldValue, LongString, ShortString};

use bytes::BytesMut;

/// A method frame: header, class and method ids, arguments, frame end.
pub fn write_method_frame(buf: &mut BytesMut, channel: u16, method: &Method) {
    let start = frame::begin_frame(buf, FrameType::Method, channel);
    method.encode(buf);
    frame::finish_frame(buf, start);
}
