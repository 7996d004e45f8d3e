//! A consumer: a subscription of one channel to one queue, with its own prefetch credit.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use warren_codec::ShortString;

use crate::channel::Channel;
use crate::message::Message;
use crate::queue::{Queue, QueuedMessage};

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
    /// Delivered to this consumer and not yet settled. Changed only under the channel's lock.
    pub(crate) unacked: AtomicU32,
    /// Deliveries start only once the server has sent `basic.consume-ok`, so that the client
    /// never sees a delivery for a tag it does not know yet.
    active: AtomicBool,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("tag", &self.tag)
            .field("queue", &self.queue.name)
            .finish()
    }
}

impl Consumer {
    pub fn new(
        tag: ShortString,
        channel: Arc<Channel>,
        queue: Arc<Queue>,
        no_ack: bool,
        exclusive: bool,
        prefetch: u16,
        priority: i64,
    ) -> Self {
        Consumer {
            tag,
            channel,
            queue,
            no_ack,
            exclusive,
            prefetch,
            priority,
            unacked: AtomicU32::new(0),
            active: AtomicBool::new(false),
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
