//! Decoding errors. The codec only says what is wrong with the bytes; the server decides which
//! AMQP reply code that earns (a malformed frame is 501, a bad method argument 502, and so on).

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    #[error("frame payload ends early")]
    Truncated,
    #[error("frame end octet is {0:#04x}, expected 0xce")]
    BadFrameEnd(u8),
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    #[error("frame size {size} exceeds frame_max {max}")]
    FrameTooLarge { size: u32, max: u32 },
    #[error("unknown method {class_id}.{method_id}")]
    UnknownMethod { class_id: u16, method_id: u16 },
    #[error("unknown field table value type {0:#04x}")]
    UnknownFieldType(u8),
    #[error("field tables and arrays nested deeper than {0} levels")]
    NestingTooDeep(usize),
    #[error("short string is {0} bytes, longer than 255")]
    ShortStringTooLong(usize),
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    #[error("{0} trailing bytes after method arguments")]
    TrailingBytes(usize),
    #[error("protocol header is not AMQP 0-9-1")]
    BadProtocolHeader,
    #[error("heartbeat frame with a {0}-byte payload (heartbeats carry none)")]
    HeartbeatPayload(u32),
    #[error("content header with weight {0} (the weight must be 0)")]
    NonZeroWeight(u16),
}
