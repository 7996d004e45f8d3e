//! `warren-broker`: the messaging model, and the one door every front end uses to reach it.
//!
//! Owns: vhosts, users and permissions, exchanges and routing (direct, fanout, topic trie,
//! headers, exchange-to-exchange, alternate exchanges, delayed), queues, bindings, consumers,
//! dispatch with prefetch credit, acks and requeues, TTL, dead-lettering, limits, priorities;
//! persistence of all of it through `warren-store`; the registry of connections, channels and
//! consumers; counters with RabbitMQ's meanings.
//!
//! Must not know: sockets, frames, HTTP or tokio. Front ends (the AMQP server, the management
//! API) translate their requests into the operations of this crate and its answers back:
//!
//! - [`Broker`]: logins ([`Broker::authenticate`], [`Broker::open_session`]), vhosts, users
//!   and permissions at run time (persisted), definitions import and export, the registry
//!   ([`Broker::register_connection`], [`Broker::connections`], [`Broker::close_connection`])
//!   and the counters ([`Broker::totals`], [`Broker::churn`], [`Queue::snapshot`]).
//! - [`Session`]: what a user does in a vhost — declare, delete, bind, purge, publish
//!   ([`Session::prepare`] and [`Session::commit`]), get and consume — each with its own
//!   validation and permission checks.
//! - [`Channel`]: acks, nacks, rejects, recover, prefetch, transactions' taken deliveries.
//!   Deliveries leave through the [`Outbox`] the front end implements per connection.
//! - [`Durability`] and [`Ticket`]: a publish's confirm waits for its ticket without the
//!   front end knowing the store.
//!
//! Errors are [`BrokerError`]s in the broker's words; each front end maps them to its codes in
//! one place.
//!
//! Invariants:
//! - Lock order is vhost map → queue → channel → outbox; no lock is held across an await
//!   (there are none here) and none covers the whole broker.
//! - A delivered, unacked message is owned by exactly one channel's unacked list until it is
//!   acked, rejected, or requeued to its queue at its original position.
//! - Durability: a declare, bind or user change returns only once its record is on disk; a
//!   persistent message for a durable queue is in the log before any queue holds it.
//! - Counters add nothing shared per message: see [`stats`].

pub mod args;
mod auth;
mod backlog;
mod broker;
mod channel;
pub mod clock;
mod dead_letter;
pub mod definitions;
mod delayed;
mod durability;
mod error;
mod exchange;
pub mod limits;
mod message;
mod outbox;
mod persistence;
pub mod policy;
mod queue;
pub mod queue_args;
mod registry;
mod session;
mod spec;
pub mod stats;
mod vhost;

pub use auth::{
    Access, AccessKind, HashAlgorithm, PasswordHash, Permission, TopicPermission, User,
};
pub use broker::{Broker, Defaults, PolicyFields, SyncMode, Totals, DEFAULT_USER, DEFAULT_VHOST};
pub use channel::{
    Channel, ChannelMode, ChannelSnapshot, Consumer, ConsumerSnapshot, Settlement, Taken,
};
pub use durability::{Durability, Ticket};
pub use error::{BrokerError, EntityKind, Result};
pub use exchange::headers::headers_match;
pub use exchange::topic::TopicTrie;
pub use exchange::{Binding, Destination, Exchange};
pub use message::{parse_expiration, Message};
pub use outbox::{Outbound, Outbox};
pub use queue::{Queue, QueueSnapshot, FLOW_READY_LIMIT, MEMORY_BUDGET};
pub use queue_args::QueueType;
pub use registry::{Connection, ConnectionControl, ConnectionSnapshot};
pub use session::{
    Consume, DeclaredQueue, ExchangeDeclare, Prepared, Publish, Published, Publisher, QueueDeclare,
    Session, REPLY_TO,
};
pub use spec::{
    Accepted, ConnectionId, ConnectionInfo, ExchangeKind, ExchangeSpec, LogRef, QueueCounts,
    QueueSpec, TlsInfo, VHostMetadata,
};
pub use vhost::{Delivered, Route, VHost};
