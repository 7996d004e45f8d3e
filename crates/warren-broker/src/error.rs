//! The broker's errors, in its own words. The server maps each to an AMQP reply code in one
//! place (`warren-server`'s `error.rs`); nothing here knows those codes.

use thiserror::Error;

/// What kind of thing was not found, for messages like RabbitMQ's "no queue 'x' in vhost '/'".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    Exchange,
    Queue,
    VHost,
    User,
    Connection,
}

impl std::fmt::Display for EntityKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EntityKind::Exchange => "exchange",
            EntityKind::Queue => "queue",
            EntityKind::VHost => "vhost",
            EntityKind::User => "user",
            EntityKind::Connection => "connection",
        })
    }
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum BrokerError {
    /// A named entity does not exist (a channel error: 404).
    #[error("no {kind} '{name}' in vhost '{vhost}'")]
    NotFound {
        kind: EntityKind,
        name: String,
        vhost: String,
    },
    /// The request contradicts existing state or its own arguments (a channel error: 406).
    #[error("{0}")]
    PreconditionFailed(String),
    /// The user may not do this (a channel error: 403).
    #[error("{0}")]
    AccessRefused(String),
    /// Someone else holds an exclusive lock on it (a channel error: 405).
    #[error("{0}")]
    ResourceLocked(String),
    /// Not allowed at the connection level, e.g. a vhost the user may not open (530).
    #[error("{0}")]
    NotAllowed(String),
    /// Wrong credentials (403 on connection.start-ok, closing the connection).
    #[error("{0}")]
    AuthenticationFailed(String),
    /// A request the broker does not support (540).
    #[error("{0}")]
    NotImplemented(String),
    /// An argument the broker cannot accept where RabbitMQ closes the connection (e.g. an
    /// unknown exchange type is a 503 COMMAND_INVALID).
    #[error("{0}")]
    CommandInvalid(String),
    /// Input that is not well-formed (a definitions file, a permission's regular expression,
    /// a password hash): the caller's mistake, reported with what was wrong.
    #[error("{0}")]
    Invalid(String),
    /// A client's bytes that do not decode (e.g. content header properties): a 502
    /// SYNTAX_ERROR that closes an AMQP connection.
    #[error("{0}")]
    Malformed(String),
    /// The disk refused a write or read the broker needed (a connection error: 541). Nothing
    /// was confirmed or declared that depends on it.
    #[error("{0}")]
    Storage(String),
    /// The disk is full: the message log takes no new messages until space returns (a
    /// connection error: 506). What it accepted before is kept and confirmed once written.
    #[error("{0}")]
    DiskFull(String),
}

impl From<warren_store::StoreError> for BrokerError {
    fn from(e: warren_store::StoreError) -> Self {
        match e {
            warren_store::StoreError::NoSpace => BrokerError::DiskFull(
                "disk full: the message log refuses new persistent messages until space returns"
                    .into(),
            ),
            e => BrokerError::Storage(format!("cannot write the message log: {e}")),
        }
    }
}

impl BrokerError {
    pub(crate) fn storage(what: &str, e: impl std::fmt::Display) -> Self {
        BrokerError::Storage(format!("{what}: {e}"))
    }
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
