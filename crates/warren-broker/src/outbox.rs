//! What the broker hands to a client connection: domain values, not frames. The server
//! implements [`Outbox`] for each connection and turns these into `basic.deliver`,
//! `basic.get-ok` and `basic.cancel` frames.

use std::sync::Arc;

use warren_codec::ShortString;

use crate::message::Message;

#[derive(Debug)]
pub enum Outbound {
    /// A message for a consumer.
    Deliver {
        channel: u16,
        consumer_tag: ShortString,
        delivery_tag: u64,
        redelivered: bool,
        message: Arc<Message>,
    },
    /// The answer to `basic.get` when a message was there.
    GetOk {
        channel: u16,
        delivery_tag: u64,
        redelivered: bool,
        message_count: u32,
        message: Arc<Message>,
    },
    /// The broker cancelled a consumer (its queue was deleted).
    Cancel {
        channel: u16,
        consumer_tag: ShortString,
    },
}

/// A connection's outgoing queue, as the broker sees it.
///
/// `push` is called while queue and channel locks are held, so it must never block or call
/// back into the broker.
pub trait Outbox: Send + Sync {
    fn push(&self, item: Outbound);
    /// True while the connection's socket is not keeping up; queues stop dispatching to its
    /// consumers until the server calls [`crate::Channel::resume`].
    fn is_congested(&self) -> bool;
}
