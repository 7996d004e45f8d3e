//! A consumer: a subscription of one channel to one queue, with its own prefetch credit.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use warren_codec::{FieldTable, ShortString};

use crate::channel::Channel;
use crate::message::Message;
use crate::queue::{Queue, QueuedMessage};
use crate::spec::ConnectionInfo;

pub struct Consumer {
    pub tag: ShortString,
    pub channel: Arc<Channel>,
    pub queue: Arc<Queue>,
    /// Auto-ack: messages count as settled the moment they are sent.
    pub no_ack: bool,
    pub exclusive: bool,
    /// Per-consumer prefetch (`basic.qos` with `global=false` before `basic.consume`); 0 means
    /// no limit.
    pub prefetch: u16,
    /// `x-priority`: consumers of a higher priority get messages first.
    pub priority: i64,
    /// The arguments of `basic.consume`, as given.
    pub arguments: FieldTable,
    /// Delivered to this consumer and not yet settled. Changed only under the channel's lock.
    pub(crate) unacked: AtomicU32,
    /// Deliveries start only once the server has sent `basic.consume-ok`, so that the client
    /// never sees a delivery for a tag it does not know yet.
    active: AtomicBool,
}

/// A consumer as the management API lists it.
#[derive(Debug, Clone)]
pub struct ConsumerSnapshot {
    pub tag: String,
    pub queue: String,
    pub vhost: String,
    pub channel_name: String,
    pub channel: u16,
    pub connection: String,
    pub user: String,
    pub ack_required: bool,
    pub exclusive: bool,
    pub prefetch_count: u16,
    /// Whether it receives messages (false for a waiting single-active-consumer).
    pub active: bool,
    pub priority: i64,
    pub arguments: FieldTable,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("tag", &self.tag)
            .field("queue", &self.queue.name)
            .finish()
    }
}

/// What `basic.consume` asked for, checked.
pub(crate) struct Subscription {
    pub tag: ShortString,
    pub no_ack: bool,
    pub exclusive: bool,
    pub priority: i64,
    pub arguments: FieldTable,
}

impl Consumer {
    pub(crate) fn new(
        channel: Arc<Channel>,
        queue: Arc<Queue>,
        prefetch: u16,
        s: Subscription,
    ) -> Self {
        Consumer {
            tag: s.tag,
            channel,
            queue,
            no_ack: s.no_ack,
            exclusive: s.exclusive,
            prefetch,
            priority: s.priority,
            arguments: s.arguments,
            unacked: AtomicU32::new(0),
            active: AtomicBool::new(false),
        }
    }

    /// What the management API shows of this consumer.
    pub fn snapshot(self: &Arc<Self>, conn: &ConnectionInfo, channel: u16) -> ConsumerSnapshot {
        ConsumerSnapshot {
            tag: self.tag.to_string(),
            queue: self.queue.name.to_string(),
            vhost: self.queue.vhost_name.to_string(),
            channel_name: format!("{} ({channel})", conn.name),
            channel,
            connection: conn.name.clone(),
            user: conn.user.clone(),
            ack_required: !self.no_ack,
            exclusive: self.exclusive,
            prefetch_count: self.prefetch,
            active: self.queue.is_active_consumer(self),
            priority: self.priority,
            arguments: self.arguments.clone(),
        }
    }

    pub fn unacked(&self) -> u32 {
        self.unacked.load(Ordering::Relaxed)
    }

    /// Starts deliveries (after `basic.consume-ok` was queued for the client).
    pub fn activate(&self) {
        self.active.store(true, Ordering::Release);
        self.queue.dispatch();
    }

    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Whether the per-consumer limit leaves room for one more message.
    pub(crate) fn has_credit(&self) -> bool {
        self.no_ack || self.prefetch == 0 || self.unacked() < u32::from(self.prefetch)
    }

    /// Sends `msg` (as `wire`, which may carry extra headers) if this consumer and its
    /// channel have credit. Called under the queue lock.
    pub(crate) fn try_deliver(
        self: &Arc<Self>,
        queue: &Arc<Queue>,
        msg: &QueuedMessage,
        wire: &Arc<Message>,
    ) -> bool {
        self.channel.try_deliver(self, queue, msg, wire)
    }
}
