//! `warren-broker`: the messaging model.
//!
//! Owns: vhosts, users and permissions, exchanges and routing (direct, fanout, topic trie,
//! headers, exchange-to-exchange, alternate exchanges), queues, bindings, consumers, dispatch
//! with prefetch credit, acks and requeues.
//!
//! Must not know: sockets, frames or tokio. It takes domain values (names, [`Message`]s) and
//! hands deliveries to an [`Outbox`] that the server implements for each connection.
//!
//! Invariants:
//! - Lock order is vhost map → queue → channel; no lock is held across an await (there are
//!   none here) and none covers the whole broker.
//! - A delivered, unacked message is owned by exactly one channel's unacked list until it is
//!   acked, rejected, or requeued to its queue at its original position.

pub mod args;
pub mod auth;
pub mod backlog;
pub mod broker;
pub mod channel;
pub mod clock;
pub mod consumer;
pub mod dead_letter;
pub mod definitions;
pub mod delayed;
pub mod error;
pub mod exchange;
pub mod message;
pub mod outbox;
pub mod persistence;
pub mod queue;
pub mod queue_args;
pub mod vhost;

pub use auth::{Access, AccessKind, Permission, User};
pub use broker::Broker;
pub use channel::Channel;
pub use consumer::Consumer;
pub use error::{BrokerError, EntityKind};
pub use exchange::{Exchange, ExchangeKind, ExchangeSpec};
pub use message::Message;
pub use outbox::{Outbound, Outbox};
pub use queue::{Accepted, ConnectionId, Queue, QueueCounts, QueueSpec};
pub use vhost::VHost;
