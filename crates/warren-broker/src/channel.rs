//! The broker's side of an AMQP channel: delivery tags, unacked messages, consumers and
//! prefetch. The server keeps the protocol state machine; this keeps what queues and acks touch.
//!
//! A [`Consumer`] lives here too: it is a channel's subscription to a queue, and its credit
//! and unacked count change under the channel's lock. Its queue sees it only as a
//! [`Subscriber`], so queues do not depend on channels.
//!
//! Delivery tags are assigned and the delivery pushed to the connection's outbox under this
//! channel's lock, so the client sees tags in increasing order even when several queues deliver
//! to the channel at once. Lock order: queue, then channel.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use warren_codec::{FieldTable, ShortString};

use crate::error::{BrokerError, Result};
use crate::exchange::Exchange;
use crate::message::Message;
use crate::outbox::{Outbound, Outbox};
use crate::queue::{Queue, QueuedMessage, Subscriber, SubscriberId};
use crate::spec::ConnectionId;
use crate::spec::ConnectionInfo;
use crate::stats::{ChannelCounters, ExchangeCounters, MessageStats, SizeHistogram};
use crate::vhost::VHost;

/// A delivered message awaiting its ack.
#[derive(Debug)]
pub struct Unacked {
    pub tag: u64,
    pub queue: Arc<Queue>,
    pub message: QueuedMessage,
    /// The unacked count of the consumer it went to (None for `basic.get`).
    pub credit: Option<Arc<AtomicU32>>,
    /// When the channel first saw it outstanding (ms), for the consumer timeout; 0 until the
    /// next check. Stamping at the check rather than at delivery keeps the clock off the
    /// delivery path: a timeout fires at most one check interval late, never early.
    pub seen_at: u64,
}

/// What to do with delivered messages that the client settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// `basic.ack`: done with.
    Ack,
    /// `basic.nack`/`basic.reject` with `requeue=true`, `basic.recover`, or the channel
    /// closing: back to the queue.
    Requeue,
    /// `basic.nack`/`basic.reject` with `requeue=false`: dead-lettered, or dropped.
    Reject,
}

/// Whether a channel confirms publishes or holds them in transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelMode {
    Normal = 0,
    Confirm = 1,
    Tx = 2,
}

pub struct Channel {
    pub id: u16,
    pub connection: ConnectionId,
    outbox: Arc<dyn Outbox>,
    state: Mutex<ChannelState>,
    /// Message counts (see [`crate::stats`] for who writes which).
    pub(crate) counters: ChannelCounters,
    /// Per exchange published to: this channel's counts there. Locked when the channel
    /// publishes to an exchange it has not used yet, and when the counts are read.
    exchanges: Mutex<Vec<(Arc<Exchange>, Arc<ExchangeCounters>)>>,
    mode: AtomicU8,
    /// The private queue behind direct reply-to, once this channel consumes from it.
    reply_queue: OnceLock<ShortString>,
}

/// A channel's state as the management API shows it.
#[derive(Debug, Clone)]
pub struct ChannelSnapshot {
    /// RabbitMQ's channel name: `<connection name> (<number>)`.
    pub name: String,
    pub connection: String,
    pub number: u16,
    pub user: String,
    pub vhost: String,
    pub mode: ChannelMode,
    /// `basic.qos` with `global=false` (for consumers created afterwards).
    pub prefetch_count: u16,
    /// `basic.qos` with `global=true`.
    pub global_prefetch_count: u16,
    pub messages_unacknowledged: usize,
    /// Publishes not yet confirmed (confirm mode).
    pub messages_unconfirmed: u64,
    pub consumer_count: usize,
    pub stats: MessageStats,
}

#[derive(Default)]
struct ChannelState {
    next_tag: u64,
    /// In tag order (tags are assigned in increasing order and appended).
    unacked: VecDeque<Unacked>,
    consumers: HashMap<ShortString, Arc<Consumer>>,
    /// `basic.qos` with `global=false`: the limit given to consumers created afterwards.
    consumer_prefetch: u16,
    /// `basic.qos` with `global=true`: one limit over all of the channel's unacked messages.
    channel_prefetch: u16,
    closed: bool,
}

/// Deliveries taken out of the unacked set by an ack, nack or reject inside a transaction:
/// settled at commit, or given back at rollback. As in RabbitMQ they leave the set at once,
/// so acking the same tag twice in one transaction is refused there and then.
#[derive(Debug, Default)]
pub struct Taken {
    entries: Vec<Unacked>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("id", &self.id).finish()
    }
}

impl Channel {
    pub fn new(id: u16, connection: ConnectionId, outbox: Arc<dyn Outbox>) -> Self {
        Channel {
            id,
            connection,
            outbox,
            state: Mutex::new(ChannelState {
                next_tag: 1,
                ..ChannelState::default()
            }),
            counters: ChannelCounters::default(),
            exchanges: Mutex::new(Vec::new()),
            mode: AtomicU8::new(ChannelMode::Normal as u8),
            reply_queue: OnceLock::new(),
        }
    }

    pub fn mode(&self) -> ChannelMode {
        match self.mode.load(Ordering::Relaxed) {
            1 => ChannelMode::Confirm,
            2 => ChannelMode::Tx,
            _ => ChannelMode::Normal,
        }
    }

    /// `confirm.select` or `tx.select` (the front end enforces that a channel takes one).
    pub fn set_mode(&self, mode: ChannelMode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// Counts publisher confirms the front end sent: `acked` acks and `nacked` nacks. Called
    /// by the channel's own task.
    pub fn count_confirms(&self, acked: u64, nacked: u64) {
        self.counters.confirm.add(acked);
        self.counters.nack.add(nacked);
    }

    /// The direct reply-to queue this channel consumes from, if any.
    pub fn reply_queue(&self) -> Option<&ShortString> {
        self.reply_queue.get()
    }

    pub(crate) fn set_reply_queue(&self, name: ShortString) -> Result<()> {
        self.reply_queue
            .set(name)
            .map_err(|_| BrokerError::PreconditionFailed("reply consumer already set".into()))
    }

    /// This channel's counts for exchange `x`, created on first use.
    pub(crate) fn exchange_counters(&self, x: &Arc<Exchange>) -> Arc<ExchangeCounters> {
        let mut slots = self.exchanges.lock();
        if let Some((_, c)) = slots.iter().find(|(e, _)| Arc::ptr_eq(e, x)) {
            return c.clone();
        }
        let c = Arc::new(ExchangeCounters::default());
        slots.push((x.clone(), c.clone()));
        c
    }

    /// This channel's counts for exchange `x`, if it published there.
    pub(crate) fn exchange_stats(&self, x: &Arc<Exchange>) -> Option<crate::stats::ExchangeStats> {
        self.exchanges
            .lock()
            .iter()
            .find(|(e, _)| Arc::ptr_eq(e, x))
            .map(|(_, c)| c.snapshot())
    }

    /// Message counts so far.
    pub fn stats(&self) -> MessageStats {
        self.counters.snapshot()
    }

    /// Sizes of the messages published on this channel.
    pub fn sizes(&self) -> SizeHistogram {
        self.counters.sizes()
    }

    /// The channel closed: its counts move into its vhost's and its exchanges' totals, so
    /// that they stay in the sums.
    pub(crate) fn retire(&self, vhost: &VHost) {
        vhost.retire_stats(&self.stats(), &self.sizes());
        for (x, c) in self.exchanges.lock().drain(..) {
            x.retire_stats(&c.snapshot());
        }
    }

    pub fn snapshot(&self, conn: &ConnectionInfo) -> ChannelSnapshot {
        let (prefetch, global, unacked, consumers) = {
            let st = self.state.lock();
            (
                st.consumer_prefetch,
                st.channel_prefetch,
                st.unacked.len(),
                st.consumers.len(),
            )
        };
        let stats = self.stats();
        ChannelSnapshot {
            name: format!("{} ({})", conn.name, self.id),
            connection: conn.name.clone(),
            number: self.id,
            user: conn.user.clone(),
            vhost: conn.vhost.clone(),
            mode: self.mode(),
            prefetch_count: prefetch,
            global_prefetch_count: global,
            messages_unacknowledged: unacked,
            messages_unconfirmed: stats
                .publish_confirm
                .saturating_sub(stats.confirm + stats.nack),
            consumer_count: consumers,
            stats,
        }
    }

    pub fn consumer_snapshots(&self, conn: &ConnectionInfo) -> Vec<ConsumerSnapshot> {
        let consumers: Vec<Arc<Consumer>> = self.state.lock().consumers.values().cloned().collect();
        let mut out: Vec<ConsumerSnapshot> = consumers
            .iter()
            .map(|c| c.snapshot(conn, self.id))
            .collect();
        out.sort_by(|a, b| a.tag.cmp(&b.tag));
        out
    }

    /// `basic.qos`. RabbitMQ's meaning: `global=false` sets the limit for consumers created
    /// after this call; `global=true` limits the channel's unacked messages as a whole.
    pub fn set_prefetch(self: &Arc<Self>, count: u16, global: bool) {
        {
            let mut st = self.state.lock();
            if global {
                st.channel_prefetch = count;
            } else {
                st.consumer_prefetch = count;
            }
        }
        if global {
            self.resume();
        }
    }

    pub fn consumer_prefetch(&self) -> u16 {
        self.state.lock().consumer_prefetch
    }

    pub fn has_consumer(&self, tag: &ShortString) -> bool {
        self.state.lock().consumers.contains_key(tag)
    }

    pub fn consumer_count(&self) -> usize {
        self.state.lock().consumers.len()
    }

    pub fn unacked_count(&self) -> usize {
        self.state.lock().unacked.len()
    }

    /// Subscribes to `queue`. Nothing is delivered until the caller has queued
    /// `basic.consume-ok` and called [`Consumer::activate`].
    pub fn add_consumer(
        self: &Arc<Self>,
        queue: &Arc<Queue>,
        tag: ShortString,
        no_ack: bool,
        exclusive: bool,
        priority: i64,
        arguments: FieldTable,
    ) -> Result<Arc<Consumer>> {
        let prefetch = self.consumer_prefetch();
        let consumer = Arc::new(Consumer::new(
            self.clone(),
            queue.clone(),
            prefetch,
            Subscription {
                tag: tag.clone(),
                no_ack,
                exclusive,
                priority,
                arguments,
            },
        ));
        {
            let mut st = self.state.lock();
            if st.consumers.contains_key(&tag) {
                return Err(BrokerError::NotAllowed(format!(
                    "attempt to reuse consumer tag '{tag}'"
                )));
            }
            st.consumers.insert(tag.clone(), consumer.clone());
        }
        if let Err(e) = queue.add_consumer(consumer.clone() as Arc<dyn Subscriber>) {
            self.state.lock().consumers.remove(&tag);
            return Err(e);
        }
        Ok(consumer)
    }

    /// `basic.cancel` from the client. Returns false if there was no such consumer.
    pub fn cancel_consumer(&self, tag: &ShortString) -> bool {
        let consumer = self.state.lock().consumers.remove(tag);
        match consumer {
            Some(c) => {
                c.queue.remove_consumer(c.id());
                true
            }
            None => false,
        }
    }

    /// The queue under this consumer was deleted: forget it and tell the client.
    pub(crate) fn consumer_cancelled_by_broker(&self, consumer: &Consumer) {
        let removed = {
            let mut st = self.state.lock();
            match st.consumers.get(&consumer.tag) {
                Some(c) if std::ptr::eq(Arc::as_ptr(c), consumer) => {
                    st.consumers.remove(&consumer.tag);
                    !st.closed
                }
                _ => false,
            }
        };
        if removed {
            self.outbox.push(Outbound::Cancel {
                channel: self.id,
                consumer_tag: consumer.tag.clone(),
            });
        }
    }

    /// Called by a queue, under its lock: delivers `msg` (sent as `wire`) to `consumer` if
    /// there is credit.
    pub(crate) fn try_deliver(
        &self,
        consumer: &Consumer,
        queue: &Arc<Queue>,
        msg: &QueuedMessage,
        wire: &Arc<Message>,
    ) -> bool {
        let mut st = self.state.lock();
        if st.closed || !consumer.is_active() || self.outbox.is_congested() {
            return false;
        }
        if !consumer.no_ack {
            if !consumer.has_credit() {
                return false;
            }
            if st.channel_prefetch != 0 && st.unacked.len() >= usize::from(st.channel_prefetch) {
                return false;
            }
        }
        let tag = st.next_tag;
        st.next_tag += 1;
        // Counted under the channel lock, which every delivery to this channel holds.
        if consumer.no_ack {
            self.counters.deliver_no_ack.inc();
        } else {
            self.counters.deliver.inc();
        }
        if msg.redelivered {
            self.counters.redeliver.inc();
        }
        if !consumer.no_ack {
            consumer.unacked.fetch_add(1, Ordering::Relaxed);
            st.unacked.push_back(Unacked {
                tag,
                queue: queue.clone(),
                message: msg.clone(),
                credit: Some(consumer.unacked.clone()),
                seen_at: 0,
            });
        }
        self.outbox.push(Outbound::Deliver {
            channel: self.id,
            consumer_tag: consumer.tag.clone(),
            delivery_tag: tag,
            redelivered: msg.redelivered,
            message: wire.clone(),
        });
        true
    }

    /// `basic.get`: takes one message from `queue` and sends `get-ok`. Returns false when the
    /// queue was empty (the caller sends `get-empty`). Prefetch does not apply to `basic.get`.
    pub fn get(self: &Arc<Self>, queue: &Arc<Queue>, no_ack: bool) -> bool {
        let Some((msg, message, message_count)) = queue.get(no_ack) else {
            self.counters.get_empty.inc();
            return false;
        };
        let mut st = self.state.lock();
        let tag = st.next_tag;
        st.next_tag += 1;
        let redelivered = msg.redelivered;
        if no_ack {
            self.counters.get_no_ack.inc();
        } else {
            self.counters.get.inc();
        }
        if redelivered {
            self.counters.redeliver.inc();
        }
        if !no_ack {
            st.unacked.push_back(Unacked {
                tag,
                queue: queue.clone(),
                message: msg,
                credit: None,
                seen_at: 0,
            });
        }
        self.outbox.push(Outbound::GetOk {
            channel: self.id,
            delivery_tag: tag,
            redelivered,
            message_count,
            message,
        });
        true
    }

    /// Removes the unacked entries named by (`tag`, `multiple`) with RabbitMQ's rules: tag 0
    /// with `multiple` means all; otherwise the tag must be outstanding, or it is a 406.
    fn take_unacked(&self, tag: u64, multiple: bool) -> Result<Vec<Unacked>> {
        let mut st = self.state.lock();
        let taken: Vec<Unacked> = if multiple && tag == 0 {
            st.unacked.drain(..).collect()
        } else {
            let pos = st.unacked.binary_search_by_key(&tag, |u| u.tag);
            match pos {
                Ok(i) if multiple => st.unacked.drain(..=i).collect(),
                Ok(i) => st.unacked.remove(i).into_iter().collect(),
                Err(_) => {
                    return Err(BrokerError::PreconditionFailed(format!(
                        "unknown delivery tag {tag}"
                    )))
                }
            }
        };
        for u in &taken {
            if let Some(c) = &u.credit {
                c.fetch_sub(1, Ordering::Relaxed);
            }
        }
        Ok(taken)
    }

    /// `basic.ack`.
    pub fn ack(self: &Arc<Self>, tag: u64, multiple: bool) -> Result<()> {
        let taken = self.take_unacked(tag, multiple)?;
        self.settle(taken, Settlement::Ack);
        Ok(())
    }

    /// `basic.nack` / `basic.reject`: requeue, or dead-letter (or drop).
    pub fn nack(self: &Arc<Self>, tag: u64, multiple: bool, requeue: bool) -> Result<()> {
        let taken = self.take_unacked(tag, multiple)?;
        let how = if requeue {
            Settlement::Requeue
        } else {
            Settlement::Reject
        };
        self.settle(taken, how);
        Ok(())
    }

    /// An ack, nack or reject inside a transaction: takes the deliveries named by (`tag`,
    /// `multiple`) out of the unacked set without settling them.
    pub fn take(&self, tag: u64, multiple: bool) -> Result<Taken> {
        Ok(Taken {
            entries: self.take_unacked(tag, multiple)?,
        })
    }

    /// `tx.commit`: settles deliveries taken by [`Channel::take`].
    pub fn settle_taken(self: &Arc<Self>, taken: Taken, how: Settlement) {
        self.settle(taken.entries, how);
    }

    /// `tx.rollback` (or a channel closing mid-transaction): deliveries taken by
    /// [`Channel::take`] are unacked again, in tag order.
    pub fn restore(&self, taken: Taken) {
        let mut st = self.state.lock();
        for u in taken.entries {
            if let Some(c) = &u.credit {
                c.fetch_add(1, Ordering::Relaxed);
            }
            let pos = st.unacked.partition_point(|x| x.tag < u.tag);
            st.unacked.insert(pos, u);
        }
    }

    /// `basic.recover` with `requeue=true`: every unacked message goes back to its queue.
    pub fn recover(self: &Arc<Self>) {
        let taken = match self.take_unacked(0, true) {
            Ok(t) => t,
            Err(_) => return,
        };
        self.settle(taken, Settlement::Requeue);
    }

    /// Settles messages in their queues (outside the channel lock) and lets freed credit flow.
    fn settle(self: &Arc<Self>, entries: Vec<Unacked>, how: Settlement) {
        if entries.is_empty() {
            return;
        }
        if how == Settlement::Ack {
            // Acks come from the channel's own task (and the ack counter has no other writer).
            self.counters.ack.add(entries.len() as u64);
        }
        let mut by_queue: Vec<(Arc<Queue>, Vec<QueuedMessage>)> = Vec::new();
        for u in entries {
            match by_queue.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &u.queue)) {
                Some((_, msgs)) => msgs.push(u.message),
                None => by_queue.push((u.queue, vec![u.message])),
            }
        }
        for (queue, msgs) in &mut by_queue {
            match how {
                Settlement::Ack => queue.settle(msgs),
                Settlement::Requeue => queue.requeue(std::mem::take(msgs)),
                Settlement::Reject => queue.reject(std::mem::take(msgs)),
            }
        }
        self.resume();
    }

    /// Asks every queue this channel consumes from to dispatch again (credit was freed, or
    /// the socket drained).
    pub fn resume(self: &Arc<Self>) {
        let consumers: Vec<Arc<Consumer>> = {
            let st = self.state.lock();
            if st.closed {
                return;
            }
            st.consumers.values().cloned().collect()
        };
        for c in consumers {
            c.queue.dispatch();
        }
    }

    /// The channel is closing: cancel its consumers and return every unacked message to its
    /// queue (redelivered), in that order so the messages go to other consumers.
    pub fn close(self: &Arc<Self>) {
        let (consumers, unacked) = {
            let mut st = self.state.lock();
            st.closed = true;
            let consumers: Vec<Arc<Consumer>> = st.consumers.drain().map(|(_, c)| c).collect();
            let unacked: Vec<Unacked> = st.unacked.drain(..).collect();
            (consumers, unacked)
        };
        let waiting: Vec<Arc<Queue>> = consumers
            .iter()
            .filter(|c| c.queue.detach_consumer(c.id()))
            .map(|c| c.queue.clone())
            .collect();
        for u in &unacked {
            if let Some(c) = &u.credit {
                c.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.settle(unacked, Settlement::Requeue);
        // The other consumers of those queues may take what this channel's could not.
        for q in waiting {
            q.dispatch();
        }
    }

    /// The consumer timeout: stamps deliveries first seen outstanding now, and returns the
    /// timeout (ms) of one outstanding for longer than its queue allows (`x-consumer-timeout`,
    /// or `default_ms`), if any. The caller closes the channel with 406.
    pub fn check_timeouts(&self, now: u64, default_ms: u64) -> Option<u64> {
        let mut st = self.state.lock();
        let mut timed_out = None;
        for u in st.unacked.iter_mut() {
            if u.seen_at == 0 {
                u.seen_at = now;
                continue;
            }
            let timeout = u.queue.consumer_timeout().unwrap_or(default_ms);
            if timed_out.is_none() && now.saturating_sub(u.seen_at) > timeout {
                timed_out = Some(timeout);
            }
        }
        timed_out
    }
}

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
    /// Delivered to this consumer and not yet settled. Changed only under the channel's lock;
    /// each of its unacked deliveries holds it too.
    pub(crate) unacked: Arc<AtomicU32>,
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
            unacked: Arc::new(AtomicU32::new(0)),
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
            active: self.queue.is_active_consumer(self.id()),
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

    /// Who this consumer is to its queue (see [`Subscriber`]).
    pub(crate) fn id(&self) -> SubscriberId {
        SubscriberId::of(self)
    }
}

impl Subscriber for Consumer {
    fn priority(&self) -> i64 {
        self.priority
    }

    fn exclusive(&self) -> bool {
        self.exclusive
    }

    fn id(&self) -> SubscriberId {
        SubscriberId::of(self)
    }

    /// Sends `msg` (as `wire`, which may carry extra headers) if this consumer and its
    /// channel have credit. Called under the queue lock.
    fn offer(&self, queue: &Arc<Queue>, msg: &QueuedMessage, wire: &Arc<Message>) -> Option<bool> {
        self.channel
            .try_deliver(self, queue, msg, wire)
            .then_some(self.no_ack)
    }

    fn cancelled(&self) {
        self.channel.consumer_cancelled_by_broker(self);
    }
}
