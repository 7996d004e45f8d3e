//! The broker's plain value types: what a client declares and what an operation reports.
//! A leaf module: it imports nothing else of the crate, so every other file can use it.

use std::net::SocketAddr;

use base64::Engine;
use rand::RngCore;
use warren_codec::{FieldTable, ShortString};

/// A random name under one of RabbitMQ's prefixes (`amq.gen-` queues, `amq.ctag-` consumer
/// tags, direct reply-to queues): 16 random bytes, base64url.
pub(crate) fn random_name(prefix: &str) -> ShortString {
    let mut raw = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut raw);
    let name = format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    ShortString::try_from(name).unwrap_or_default()
}

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

/// What an operator says about a vhost (RabbitMQ's vhost metadata).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VHostMetadata {
    pub description: String,
    pub tags: Vec<String>,
    /// The type a durable, non-exclusive, non-auto-delete queue declared here without
    /// `x-queue-type` gets (None: classic).
    pub default_queue_type: Option<String>,
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

/// Where a message is in the log, for one queue: settling it means acking this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRef {
    pub queue: u64,
    pub id: u64,
}

/// What a connection is, fixed once it is open.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// RabbitMQ's name for it: `peer:port -> local:port`.
    pub name: String,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub user: String,
    pub vhost: String,
    /// What the client said about itself in `connection.start-ok`.
    pub client_properties: FieldTable,
    /// When it opened, in ms since the Unix epoch.
    pub connected_at: u64,
    /// "AMQP 0-9-1".
    pub protocol: &'static str,
    pub auth_mechanism: String,
    pub frame_max: u32,
    pub channel_max: u16,
    /// Negotiated heartbeat in seconds (0: none).
    pub heartbeat: u16,
    /// The TLS session, for a connection accepted on a TLS listener.
    pub tls: Option<TlsInfo>,
}

/// A connection's TLS session, in the words RabbitMQ's management API uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// `tlsv1.2` or `tlsv1.3`.
    pub protocol: String,
    /// Erlang's names: `ecdhe_rsa` (`any` for TLS 1.3), `aes_256_gcm`, `aead`.
    pub key_exchange: String,
    pub cipher: String,
    pub hash: String,
    /// The client certificate, when one was verified: subject and issuer as RFC 4514
    /// names, validity as `not-before - not-after`.
    pub peer_cert_subject: Option<String>,
    pub peer_cert_issuer: Option<String>,
    pub peer_cert_validity: Option<String>,
}

impl ConnectionInfo {
    /// RabbitMQ's connection name for a socket.
    pub fn name_for(peer: SocketAddr, local: SocketAddr) -> String {
        format!("{peer} -> {local}")
    }
}
