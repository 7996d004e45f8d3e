//! The broker's plain value types: what a client declares and what an operation reports.
//! A leaf module: it imports nothing else of the crate, so every other file can use it.

use warren_codec::{FieldTable, ShortString};

/// Identifies a client connection, for exclusive queues and consumers.
pub type ConnectionId = u64;

/// The declared shape of a queue, compared on redeclare.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    pub name: ShortString,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

/// Counts reported by `queue.declare-ok` and `queue.delete-ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    pub messages: u32,
    pub consumers: u32,
}

/// What a queue did with a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    Yes,
    /// Refused by `x-overflow` = `reject-publish(-dlx)`: a confirming publisher gets a nack.
    No,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
    /// The delayed-message plugin's type: messages with an `x-delay` header wait that long,
    /// then are routed as the `x-delayed-type` argument's type routes (see [`crate::delayed`]).
    DelayedMessage,
}

impl ExchangeKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            "topic" => ExchangeKind::Topic,
            "headers" => ExchangeKind::Headers,
            "x-delayed-message" => ExchangeKind::DelayedMessage,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
            ExchangeKind::DelayedMessage => "x-delayed-message",
        }
    }
}

/// The declared shape of an exchange, compared on redeclare.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeSpec {
    pub name: ShortString,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}
