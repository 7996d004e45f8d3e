//! A queue: ready messages in order, its consumers, and dispatch; and the RabbitMQ extensions
//! that act on them: TTL and queue expiry, dead-lettering, length limits, priorities,
//! consumer priorities, single active consumer and the delivery limit.
//!
//! Each queue owns its state behind one mutex held only for short, non-async sections. Dispatch
//! runs in whichever task made progress possible (a publish, an ack, a new consumer, a drained
//! socket), so there is no queue task to wake and no hand-off per message. Time-driven work
//! (expiring messages nobody consumes, deleting unused queues) runs in [`Queue::tick`].
//!
//! Lock order: a queue's lock may be held while taking a channel's lock (to assign a delivery
//! tag), never the other way round. Dead-lettering publishes to other queues (possibly this
//! one), so dead messages are gathered under the lock and republished after it is released.
//!
//! The hot path stays as it was for a queue that uses none of the extensions: the clock is
//! read only when a message has a deadline, properties are never decoded here (the publisher's
//! `priority` and `expiration` were read when the message was built), and the derived copy
//! with `x-delivery-count` is made only for redeliveries from quorum queues.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use warren_codec::{FieldTable, FieldValue, ShortString};

use crate::args;
use crate::backlog::{Levels, Pager, Restored};
use crate::clock;
use crate::dead_letter::{Dead, Reason};
use crate::error::{BrokerError, Result};
use crate::message::Message;
use crate::persistence::{decode_message, SharedPersistence};
use crate::queue_args::{Overflow, QueueArgs, QueueType};
use crate::stats::MessageStats;

pub use crate::spec::{Accepted, ConnectionId, QueueCounts, QueueSpec};

pub use crate::message::{QueuedMessage, NEVER};
pub use crate::spec::LogRef;

/// Who a subscriber is: its address, for finding it again among a queue's subscribers (it
/// is compared, never dereferenced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubscriberId(usize);

impl SubscriberId {
    pub(crate) fn of<T>(x: &T) -> Self {
        SubscriberId(x as *const T as usize)
    }
}

/// Where a queue lives: its vhost (as a [`QueueHost`]), the vhost's name and its disk.
pub(crate) struct Home {
    pub host: Weak<dyn QueueHost>,
    pub vhost: Arc<str>,
    pub persistence: SharedPersistence,
}

/// A consumer as its queue sees it (a channel's [`crate::channel::Consumer`] implements it):
/// the queue ranks its subscribers and offers them messages; credit, delivery tags and unacked
/// lists belong to the channel. A trait, so that queues and channels do not import each other.
pub(crate) trait Subscriber: Send + Sync {
    fn priority(&self) -> i64;
    fn exclusive(&self) -> bool;
    fn id(&self) -> SubscriberId;
    /// Sends `msg` (as `wire`) if there is credit: Some(no_ack) when it took the message.
    /// Called under the queue's lock.
    fn offer(&self, queue: &Arc<Queue>, msg: &QueuedMessage, wire: &Arc<Message>) -> Option<bool>;
    /// The queue was deleted: the subscriber's channel tells its client.
    fn cancelled(&self);
}

/// What a queue needs of the vhost it lives in (implemented by [`crate::vhost::VHost`]).
pub(crate) trait QueueHost: Send + Sync {
    /// Deletes the queue (auto-delete after its last consumer).
    fn remove_queue(&self, queue: &Arc<Queue>) -> Result<u32>;
    /// Republishes dead messages from `queue` to its dead-letter exchange `dlx`.
    fn dead_letter(
        &self,
        queue: &str,
        dlx: &ShortString,
        routing_key: Option<&ShortString>,
        dead: Vec<Dead>,
    );
}

/// Bytes of ready messages a queue keeps in memory before it pages the rest to the log.
pub const MEMORY_BUDGET: usize = 32 << 20;

pub struct Queue {
    pub name: ShortString,
    pub vhost_name: Arc<str>,
    pub durable: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    /// The arguments, parsed.
    pub config: QueueArgs,
    /// The connection that declared it, for exclusive queues.
    pub exclusive_owner: Option<ConnectionId>,
    host: Weak<dyn QueueHost>,
    /// The store's id for a durable queue whose persistent messages are logged.
    pub store_id: Option<u64>,
    persistence: SharedPersistence,
    inner: Mutex<QueueInner>,
    deleted: AtomicBool,
    /// When the queue was last used (ms), for `x-expires`.
    last_used: AtomicU64,
    /// The expiry in force (ms; 0: none), readable without the lock.
    expires_ms: AtomicU64,
    /// The consumer timeout in force (ms; 0: the broker's default), readable without the lock.
    consumer_timeout_ms: AtomicU64,
    /// Some ready message may expire: [`Queue::tick`] has work here.
    has_deadlines: AtomicBool,
    /// [`Queue::is_backlogged`], as of the last publish or dispatch: publishing connections
    /// poll it while they wait, which must not take the queue's lock.
    backlogged: AtomicBool,
    /// Messages handed to consumers so far: publishers held back by [`Queue::is_backlogged`]
    /// watch it to tell a slow consumer (worth waiting for) from a stuck one (not).
    handed_out: AtomicU64,
}

/// Consumers of one priority, served round-robin.
struct Group {
    priority: i64,
    members: Vec<Arc<dyn Subscriber>>,
    next: usize,
}

/// Ready messages above which a queue with consumers asks its publishers to wait
/// ([`Queue::is_backlogged`]): about a millisecond of what one consumer takes at full speed, so
/// a publisher that outruns its consumers is slowed before a standing queue builds up (each
/// message would wait behind all of it), while consumers never run dry.
pub const FLOW_READY_LIMIT: usize = 2048;

struct QueueInner {
    ready: Levels,
    next_seq: u64,
    /// In the order they subscribed (the first is the single active consumer, if that applies).
    consumers: Vec<Arc<dyn Subscriber>>,
    /// The same consumers by priority, highest first.
    groups: Vec<Group>,
    /// Delivered and not yet settled (acked, rejected or requeued).
    unacked: u64,
    /// Auto-delete applies only to a queue that has had a consumer.
    had_consumer: bool,
    /// This queue's message counts (`publish` = enqueued), under the lock they describe.
    stats: MessageStats,
    /// The settings in force: the declared arguments with the policies applied.
    settings: QueueArgs,
    /// The policy and operator policy applied, and their merged definition.
    policy: Option<String>,
    operator_policy: Option<String>,
    policy_definition: serde_json::Map<String, serde_json::Value>,
}

/// A queue's depth and counts at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSnapshot {
    pub messages_ready: u64,
    pub messages_unacknowledged: u64,
    /// Bytes of the ready messages' bodies.
    pub message_bytes_ready: u64,
    /// Ready messages whose bodies are on disk, not in memory.
    pub messages_paged_out: u64,
    pub consumers: u32,
    /// Consumers that receive messages (with single active consumer, one).
    pub active_consumers: u32,
    pub stats: MessageStats,
    /// The policy and operator policy applied, and their merged definition.
    pub policy: Option<String>,
    pub operator_policy: Option<String>,
    pub policy_definition: serde_json::Map<String, serde_json::Value>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("name", &self.name).finish()
    }
}

impl Queue {
    pub(crate) fn new(
        spec: &QueueSpec,
        owner: Option<ConnectionId>,
        home: Home,
        store_id: Option<u64>,
    ) -> Self {
        let config = QueueArgs::parse(&spec.arguments);
        let levels = config.max_priority.map_or(1, |p| usize::from(p) + 1);
        let page_queue = home.persistence.as_ref().map(|p| p.next_queue_id());
        let ready = Levels::new(levels, |count| {
            let p = home.persistence.as_ref()?;
            Some(Pager {
                persistence: p.clone(),
                page_queue: page_queue?,
                // The levels share the queue's budget (at 256 levels, 128 KiB each).
                budget: MEMORY_BUDGET / count,
            })
        });
        Queue {
            name: spec.name.clone(),
            vhost_name: home.vhost,
            durable: spec.durable,
            auto_delete: spec.auto_delete,
            arguments: spec.arguments.clone(),
            exclusive_owner: owner,
            host: home.host,
            persistence: home.persistence,
            store_id,
            inner: Mutex::new(QueueInner {
                ready,
                next_seq: 0,
                consumers: Vec::new(),
                groups: Vec::new(),
                unacked: 0,
                had_consumer: false,
                stats: MessageStats::default(),
                settings: config.clone(),
                policy: None,
                operator_policy: None,
                policy_definition: serde_json::Map::new(),
            }),
            deleted: AtomicBool::new(false),
            last_used: AtomicU64::new(if config.expires.is_some() {
                clock::now_ms()
            } else {
                0
            }),
            expires_ms: AtomicU64::new(config.expires.unwrap_or(0)),
            consumer_timeout_ms: AtomicU64::new(config.consumer_timeout.unwrap_or(0)),
            has_deadlines: AtomicBool::new(false),
            backlogged: AtomicBool::new(false),
            handed_out: AtomicU64::new(0),
            config,
        }
    }

    pub fn is_exclusive(&self) -> bool {
        self.exclusive_owner.is_some()
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// What differs between this queue and a redeclare with `spec`, if anything: the
    /// argument's name, the value received and the current one, formatted as RabbitMQ does
    /// (it compares durable, auto-delete and the arguments it knows; exclusivity is checked
    /// by the caller).
    pub(crate) fn inequivalence(&self, spec: &QueueSpec) -> Option<args::Difference> {
        let flag = |name: &str, received: bool, current: bool| {
            (received != current).then(|| {
                (
                    name.to_owned(),
                    format!("'{received}'"),
                    format!("'{current}'"),
                )
            })
        };
        flag("durable", spec.durable, self.durable)
            .or_else(|| flag("auto_delete", spec.auto_delete, self.auto_delete))
            .or_else(|| args::difference(&self.arguments, &spec.arguments, args::QUEUE_ARGS))
            .or_else(|| args::queue_type_difference(&self.arguments, &spec.arguments))
    }

    /// 405 unless `conn` may use this queue (exclusive queues belong to one connection).
    pub fn check_access(&self, conn: ConnectionId) -> Result<()> {
        match self.exclusive_owner {
            Some(owner) if owner != conn => Err(self.locked()),
            _ => Ok(()),
        }
    }

    /// RabbitMQ's 405 for a queue this connection may not use (or not declare that way).
    pub(crate) fn locked(&self) -> BrokerError {
        BrokerError::ResourceLocked(format!(
            "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be \
             originally declared on another connection or the exclusive property value does \
             not match that of the original declaration.",
            self.name, self.vhost_name
        ))
    }

    pub fn counts(&self) -> QueueCounts {
        let inner = self.inner.lock();
        QueueCounts {
            messages: inner.ready.len() as u32,
            consumers: inner.consumers.len() as u32,
        }
    }

    /// The consumer timeout in force here (ms), if the queue or its policy sets one.
    pub fn consumer_timeout(&self) -> Option<u64> {
        Some(self.consumer_timeout_ms.load(Ordering::Relaxed)).filter(|t| *t != 0)
    }

    /// Applies a (new) policy and operator policy: the settings in force become the declared
    /// arguments resolved against their merged definition, at once, as RabbitMQ does: a lower
    /// length limit drops (dead-letters) from the head now if the queue drops on overflow, an
    /// expiry restarts its countdown; a TTL applies to messages enqueued from now on.
    pub(crate) fn apply_policy(
        self: &Arc<Self>,
        user: Option<&crate::policy::Policy>,
        operator: Option<&crate::policy::Policy>,
    ) {
        let definition = crate::policy::merge(user, operator);
        let settings = crate::policy::resolve(&self.config, &definition);
        let mut dead = Vec::new();
        {
            let mut inner = self.inner.lock();
            inner.policy = user.map(|p| p.name.clone());
            inner.operator_policy = operator.map(|p| p.name.clone());
            inner.policy_definition = definition;
            if inner.settings == settings {
                return;
            }
            self.expires_ms
                .store(settings.expires.unwrap_or(0), Ordering::Relaxed);
            self.consumer_timeout_ms
                .store(settings.consumer_timeout.unwrap_or(0), Ordering::Relaxed);
            inner.settings = settings;
            if inner.settings.overflow == Overflow::DropHead {
                while self.over_limit(&inner, 0, 0) {
                    let Some(head) = inner.ready.pop_front() else {
                        break;
                    };
                    dead.push(self.dead(head, Reason::Maxlen));
                }
            }
            self.note_pressure(&inner);
        }
        self.last_used.store(clock::now_ms(), Ordering::Relaxed);
        self.dead_letter(dead);
    }

    /// What the management API shows of this queue, read under its lock in one go.
    pub fn snapshot(&self) -> QueueSnapshot {
        let inner = self.inner.lock();
        QueueSnapshot {
            messages_ready: inner.ready.len() as u64,
            messages_unacknowledged: inner.unacked,
            message_bytes_ready: inner.ready.body_bytes(),
            messages_paged_out: inner.ready.paged_len() as u64,
            consumers: inner.consumers.len() as u32,
            active_consumers: if self.config.single_active_consumer {
                u32::from(!inner.consumers.is_empty())
            } else {
                inner.consumers.len() as u32
            },
            stats: inner.stats,
            policy: inner.policy.clone(),
            operator_policy: inner.operator_policy.clone(),
            policy_definition: inner.policy_definition.clone(),
        }
    }

    /// Flow control: true while this queue has consumers but more messages wait for them than
    /// they take in a few milliseconds ([`FLOW_READY_LIMIT`]), or its backlog is outgrowing
    /// memory: publishers are faster than the consumers. Publishing connections then pause
    /// briefly (as RabbitMQ's credit flow does), so that messages do not stand in a long queue
    /// (latency) or page to disk.
    pub fn is_backlogged(&self) -> bool {
        self.backlogged.load(Ordering::Relaxed)
    }

    /// How many messages consumers have been handed (deliveries and `basic.get`), ever.
    pub fn handed_out(&self) -> u64 {
        self.handed_out.load(Ordering::Relaxed)
    }

    /// Updates [`Queue::is_backlogged`] after the ready messages or the consumers changed.
    fn note_pressure(&self, inner: &QueueInner) {
        let backlogged = !inner.consumers.is_empty()
            && (inner.ready.len() > FLOW_READY_LIMIT || inner.ready.under_pressure());
        if self.backlogged.load(Ordering::Relaxed) != backlogged {
            self.backlogged.store(backlogged, Ordering::Relaxed);
        }
    }

    /// Messages delivered and not yet settled.
    pub fn unacked_count(&self) -> u64 {
        self.inner.lock().unacked
    }

    /// The queue was used (declared, consumed from, read with `basic.get`): `x-expires`
    /// counts from now.
    pub fn touch(&self) {
        if self.expires_ms.load(Ordering::Relaxed) != 0 {
            self.last_used.store(clock::now_ms(), Ordering::Relaxed);
        }
    }

    /// When a message enqueued now expires here: the queue's TTL or its own, whichever is
    /// sooner.
    fn deadline(settings: &QueueArgs, message: &Message, now: u64) -> u64 {
        match (settings.message_ttl, message.expiration) {
            (None, None) => NEVER,
            (Some(a), Some(b)) => now.saturating_add(a.min(b)),
            (Some(t), None) | (None, Some(t)) => now.saturating_add(t),
        }
    }

    /// Whether the ready messages plus `extra` would be past `x-max-length` or
    /// `x-max-length-bytes`.
    fn over_limit(&self, inner: &QueueInner, extra: usize, extra_bytes: u64) -> bool {
        inner
            .settings
            .max_length
            .is_some_and(|max| (inner.ready.len() + extra) as u64 > max)
            || inner
                .settings
                .max_length_bytes
                .is_some_and(|max| inner.ready.body_bytes() + extra_bytes > max)
    }

    fn log_ref(&self, message: &Message) -> Option<LogRef> {
        match self.store_id {
            Some(queue) if message.persistent && message.id() != 0 => Some(LogRef {
                queue,
                id: message.id(),
            }),
            _ => None,
        }
    }

    /// Appends a message and delivers what the consumers can take. A queue with
    /// `x-overflow = reject-publish(-dlx)` refuses a message that would take it past its
    /// limit.
    pub fn publish(self: &Arc<Self>, message: Arc<Message>) -> Accepted {
        let log = self.log_ref(&message);
        let mut dead = Vec::new();
        let accepted = {
            let mut inner = self.inner.lock();
            self.publish_locked(&mut inner, message, log, &mut dead)
        };
        self.dead_letter(dead);
        accepted
    }

    fn publish_locked(
        self: &Arc<Self>,
        inner: &mut QueueInner,
        message: Arc<Message>,
        log: Option<LogRef>,
        dead: &mut Vec<(Dead, Option<LogRef>)>,
    ) -> Accepted {
        if inner.settings.overflow != Overflow::DropHead
            && self.over_limit(inner, 1, message.body.len() as u64)
        {
            if inner.settings.overflow == Overflow::RejectPublishDlx {
                dead.push((
                    Dead {
                        message,
                        reason: Reason::Maxlen,
                    },
                    log,
                ));
            } else if let (Some(p), Some(log)) = (&self.persistence, log) {
                p.settle_refs(&[log]);
            }
            return Accepted::No;
        }
        let expires_at = if inner.settings.message_ttl.is_some() || message.expiration.is_some() {
            Self::deadline(&inner.settings, &message, clock::now_ms())
        } else {
            NEVER
        };
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let m = QueuedMessage {
            seq,
            message,
            redelivered: false,
            log,
            expires_at,
            delivery_count: 0,
        };
        // As RabbitMQ: a message with nothing ahead of it goes straight to a consumer that
        // can take it, and is never counted against the limits or expired.
        if inner.ready.is_empty() && !inner.groups.is_empty() {
            let QueueInner {
                consumers, groups, ..
            } = &mut *inner;
            if let Some(no_ack) = self.offer(consumers, groups, &m) {
                inner.stats.publish += 1;
                self.delivered(inner, &m, no_ack, false);
                return Accepted::Yes;
            }
        }
        inner.stats.publish += 1;
        inner.ready.push(m);
        while self.over_limit(inner, 0, 0) {
            let Some(head) = inner.ready.pop_front() else {
                break;
            };
            dead.push(self.dead(head, Reason::Maxlen));
        }
        if expires_at != NEVER {
            self.has_deadlines.store(true, Ordering::Relaxed);
            // A TTL of 0 expires at once what could not be delivered at once.
            self.expire_head(inner, clock::now_ms(), dead);
        }
        self.dispatch_locked(inner, dead);
        Accepted::Yes
    }

    fn dead(&self, m: QueuedMessage, reason: Reason) -> (Dead, Option<LogRef>) {
        (
            Dead {
                message: m.message,
                reason,
            },
            m.log,
        )
    }

    /// Drops (dead-letters) expired messages at the head, as RabbitMQ does: a message behind
    /// one that lives longer waits for it (it is never delivered once expired, though).
    fn expire_head(
        &self,
        inner: &mut QueueInner,
        now: u64,
        dead: &mut Vec<(Dead, Option<LogRef>)>,
    ) {
        while inner.ready.front().is_some_and(|m| m.expires_at <= now) {
            if let Some(m) = inner.ready.pop_front() {
                dead.push(self.dead(m, Reason::Expired));
            }
        }
    }

    /// Books a delivery: counts it unacked, or settles it in the log for a no-ack consumer.
    fn delivered(&self, inner: &mut QueueInner, m: &QueuedMessage, no_ack: bool, get: bool) {
        Self::count_delivery(&mut inner.stats, m.redelivered, no_ack, get);
        if !no_ack {
            inner.unacked += 1;
        } else if let (Some(p), Some(log)) = (&self.persistence, m.log) {
            p.settle_refs(&[log]);
        }
    }

    fn count_delivery(stats: &mut MessageStats, redelivered: bool, no_ack: bool, get: bool) {
        match (get, no_ack) {
            (false, false) => stats.deliver += 1,
            (false, true) => stats.deliver_no_ack += 1,
            (true, false) => stats.get += 1,
            (true, true) => stats.get_no_ack += 1,
        }
        if redelivered {
            stats.redeliver += 1;
        }
    }

    /// The message as a consumer sees it: quorum queues add `x-delivery-count` to a
    /// redelivery (the properties are re-encoded only then).
    fn redelivery_view(&self, m: &QueuedMessage) -> Option<Arc<Message>> {
        if self.config.queue_type != QueueType::Quorum || m.delivery_count == 0 {
            return None;
        }
        let mut props = m.message.properties();
        let mut headers = props.headers.take().unwrap_or_default();
        args::set_table_value(
            &mut headers,
            ShortString::from_static("x-delivery-count"),
            FieldValue::I64(i64::from(m.delivery_count)),
        );
        props.headers = Some(headers);
        let view = m.message.with_properties(
            m.message.exchange.clone(),
            m.message.routing_key.clone(),
            &props,
        );
        view.set_id(m.message.id());
        Some(Arc::new(view))
    }

    /// Offers `m` to the consumers: the single active one if that applies, otherwise the
    /// highest-priority consumers with credit first, round-robin within a priority. Returns
    /// whether the taker is no-ack.
    fn offer(
        self: &Arc<Self>,
        consumers: &[Arc<dyn Subscriber>],
        groups: &mut [Group],
        m: &QueuedMessage,
    ) -> Option<bool> {
        let view = self.redelivery_view(m);
        let wire = view.as_ref().unwrap_or(&m.message);
        if self.config.single_active_consumer {
            return consumers.first()?.offer(self, m, wire);
        }
        for g in groups.iter_mut() {
            let n = g.members.len();
            for i in 0..n {
                let idx = (g.next + i) % n;
                let c = &g.members[idx];
                if let Some(no_ack) = c.offer(self, m, wire) {
                    g.next = (idx + 1) % n;
                    return Some(no_ack);
                }
            }
        }
        None
    }

    /// Delivers ready messages to consumers with credit until either runs out.
    pub fn dispatch(self: &Arc<Self>) {
        let mut dead = Vec::new();
        {
            let mut inner = self.inner.lock();
            self.dispatch_locked(&mut inner, &mut dead);
        }
        self.dead_letter(dead);
    }

    fn dispatch_locked(
        self: &Arc<Self>,
        inner: &mut QueueInner,
        dead: &mut Vec<(Dead, Option<LogRef>)>,
    ) {
        self.dispatch_ready(inner, dead);
        self.note_pressure(inner);
    }

    fn dispatch_ready(
        self: &Arc<Self>,
        inner: &mut QueueInner,
        dead: &mut Vec<(Dead, Option<LogRef>)>,
    ) {
        if inner.groups.is_empty() {
            return;
        }
        // Messages sent to no-ack consumers are settled as they go; the log hears of them in
        // one call at the end.
        let mut auto_acked: Vec<LogRef> = Vec::new();
        let mut handed = 0u64;
        let now = if inner.ready.has_deadlines() {
            clock::now_ms()
        } else {
            0
        };
        loop {
            let QueueInner {
                ready,
                consumers,
                groups,
                ..
            } = &mut *inner;
            let Some(front) = ready.front() else {
                break;
            };
            if front.expires_at <= now {
                if let Some(m) = ready.pop_front() {
                    dead.push(self.dead(m, Reason::Expired));
                }
                continue;
            }
            let Some(no_ack) = self.offer(consumers, groups, front) else {
                break;
            };
            if let Some(m) = inner.ready.pop_front() {
                handed += 1;
                Self::count_delivery(&mut inner.stats, m.redelivered, no_ack, false);
                if !no_ack {
                    inner.unacked += 1;
                } else if let Some(log) = m.log {
                    auto_acked.push(log);
                }
            }
        }
        if handed > 0 {
            self.handed_out.fetch_add(handed, Ordering::Relaxed);
        }
        if let (Some(p), false) = (&self.persistence, auto_acked.is_empty()) {
            p.settle_refs(&auto_acked);
        }
    }

    /// Regroups the consumers by priority (after one came or went).
    fn regroup(inner: &mut QueueInner) {
        let mut groups: Vec<Group> = Vec::new();
        for c in &inner.consumers {
            match groups.iter_mut().find(|g| g.priority == c.priority()) {
                Some(g) => g.members.push(c.clone()),
                None => groups.push(Group {
                    priority: c.priority(),
                    members: vec![c.clone()],
                    next: 0,
                }),
            }
        }
        groups.sort_by_key(|g| std::cmp::Reverse(g.priority));
        // Keep each surviving group's round-robin position.
        for g in &mut groups {
            if let Some(old) = inner.groups.iter().find(|o| o.priority == g.priority) {
                g.next = old.next % g.members.len();
            }
        }
        inner.groups = groups;
    }

    /// Registers a consumer; deliveries start when it is activated.
    pub(crate) fn add_consumer(self: &Arc<Self>, consumer: Arc<dyn Subscriber>) -> Result<()> {
        let mut inner = self.inner.lock();
        if self.is_deleted() {
            return Err(BrokerError::NotFound {
                kind: crate::error::EntityKind::Queue,
                name: self.name.to_string(),
                vhost: self.vhost_name.to_string(),
            });
        }
        let locked = inner.consumers.iter().any(|c| c.exclusive());
        if locked || (consumer.exclusive() && !inner.consumers.is_empty()) {
            return Err(BrokerError::AccessRefused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.name, self.vhost_name
            )));
        }
        inner.consumers.push(consumer);
        Self::regroup(&mut inner);
        inner.had_consumer = true;
        self.touch();
        Ok(())
    }

    /// Whether `consumer` is the one a single-active-consumer queue delivers to (always true
    /// for other queues).
    pub(crate) fn is_active_consumer(&self, consumer: SubscriberId) -> bool {
        !self.config.single_active_consumer
            || self
                .inner
                .lock()
                .consumers
                .first()
                .is_some_and(|c| c.id() == consumer)
    }

    /// Removes a consumer; deletes the queue if it is auto-delete and that was the last one.
    /// Otherwise the others (a lower priority, the next single active consumer) may now get
    /// what it could not take.
    pub(crate) fn remove_consumer(self: &Arc<Self>, consumer: SubscriberId) {
        if self.detach_consumer(consumer) {
            self.dispatch();
        }
    }

    /// Removes a consumer without dispatching to the others; returns whether there may be
    /// something for them. A closing channel requeues its unacked messages first, so that the
    /// next consumer gets them in their places (as RabbitMQ does).
    pub(crate) fn detach_consumer(self: &Arc<Self>, consumer: SubscriberId) -> bool {
        let (auto_delete_now, redispatch) = {
            let mut inner = self.inner.lock();
            let before = inner.consumers.len();
            inner.consumers.retain(|c| c.id() != consumer);
            let removed = before != inner.consumers.len();
            if removed {
                Self::regroup(&mut inner);
                if inner.consumers.is_empty() {
                    self.touch();
                }
            }
            (
                removed && self.auto_delete && inner.had_consumer && inner.consumers.is_empty(),
                removed && !inner.consumers.is_empty() && !inner.ready.is_empty(),
            )
        };
        if auto_delete_now {
            if let Some(host) = self.host.upgrade() {
                if let Err(e) = host.remove_queue(self) {
                    tracing::warn!(error = %e, queue = %self.name, "cannot auto-delete a queue");
                }
            }
            return false;
        }
        redispatch
    }

    /// Takes the next message for `basic.get`: the message, what the client is sent (see
    /// [`Queue::redelivery_view`]), and how many remain ready.
    pub fn get(&self, no_ack: bool) -> Option<(QueuedMessage, Arc<Message>, u32)> {
        self.touch();
        let mut dead = Vec::new();
        let got = {
            let mut inner = self.inner.lock();
            if inner.ready.has_deadlines() {
                self.expire_head(&mut inner, clock::now_ms(), &mut dead);
            }
            match inner.ready.pop_front() {
                None => {
                    inner.stats.get_empty += 1;
                    None
                }
                Some(msg) => {
                    self.delivered(&mut inner, &msg, no_ack, true);
                    let remaining = inner.ready.len() as u32;
                    self.note_pressure(&inner);
                    let wire = self
                        .redelivery_view(&msg)
                        .unwrap_or_else(|| msg.message.clone());
                    Some((msg, wire, remaining))
                }
            }
        };
        self.dead_letter(dead);
        got
    }

    /// Returns delivered messages to the queue, each at its original position, marked
    /// redelivered, and dispatches them again. A message past the queue's delivery limit is
    /// dead-lettered instead.
    pub fn requeue(self: &Arc<Self>, mut messages: Vec<QueuedMessage>) {
        if messages.is_empty() {
            return;
        }
        let mut dead = Vec::new();
        self.record_deliveries(&messages);
        {
            let mut inner = self.inner.lock();
            inner.unacked = inner.unacked.saturating_sub(messages.len() as u64);
            if self.is_deleted() {
                return;
            }
            messages.sort_by_key(|m| m.seq);
            for mut m in messages {
                m.redelivered = true;
                m.delivery_count = m.delivery_count.saturating_add(1);
                if inner
                    .settings
                    .delivery_limit
                    .is_some_and(|limit| u64::from(m.delivery_count) > limit)
                {
                    dead.push(self.dead(m, Reason::DeliveryLimit));
                    continue;
                }
                if m.expires_at != NEVER {
                    self.has_deadlines.store(true, Ordering::Relaxed);
                }
                inner.ready.requeue(m);
            }
            self.dispatch_locked(&mut inner, &mut dead);
        }
        self.dead_letter(dead);
    }

    /// Durability: a durable queue with a delivery limit logs each return of a persistent
    /// message, so that its delivery count survives a restart.
    fn record_deliveries(&self, messages: &[QueuedMessage]) {
        let (Some(p), Some(queue)) = (&self.persistence, self.store_id) else {
            return;
        };
        if self.inner.lock().settings.delivery_limit.is_none() {
            return;
        }
        let ids: Vec<u64> = messages
            .iter()
            .filter_map(|m| m.log.filter(|l| l.queue == queue).map(|l| l.id))
            .collect();
        if let Err(e) = p.store.mark_delivered(queue, &ids) {
            tracing::warn!(error = %e, "cannot log delivery counts");
        }
    }

    /// Records that delivered messages were acked.
    pub fn settle(&self, messages: &[QueuedMessage]) {
        {
            let mut inner = self.inner.lock();
            inner.unacked = inner.unacked.saturating_sub(messages.len() as u64);
            inner.stats.ack += messages.len() as u64;
        }
        self.forget(messages.iter().filter_map(|m| m.log));
    }

    /// Delivered messages were rejected (`requeue=false`): dead-lettered, or dropped.
    pub fn reject(self: &Arc<Self>, messages: Vec<QueuedMessage>) {
        {
            let mut inner = self.inner.lock();
            inner.unacked = inner.unacked.saturating_sub(messages.len() as u64);
        }
        let dead = messages
            .into_iter()
            .map(|m| self.dead(m, Reason::Rejected))
            .collect();
        self.dead_letter(dead);
    }

    /// Tells the log this queue is done with these messages.
    fn forget(&self, refs: impl Iterator<Item = LogRef>) {
        if let Some(p) = &self.persistence {
            let refs: Vec<LogRef> = refs.collect();
            if !refs.is_empty() {
                p.settle_refs(&refs);
            }
        }
    }

    /// Republishes dead messages to the dead-letter exchange (if the queue has one), then
    /// settles them in the log. Called with no queue lock held.
    fn dead_letter(&self, dead: Vec<(Dead, Option<LogRef>)>) {
        if dead.is_empty() {
            return;
        }
        let mut logs = Vec::new();
        let dead: Vec<Dead> = dead
            .into_iter()
            .map(|(d, log)| {
                logs.extend(log);
                d
            })
            .collect();
        // Read again: a policy may have changed them since the messages died.
        let (dlx, routing_key) = {
            let inner = self.inner.lock();
            (
                inner.settings.dead_letter_exchange.clone(),
                inner.settings.dead_letter_routing_key.clone(),
            )
        };
        if let (Some(dlx), Some(host)) = (dlx, self.host.upgrade()) {
            host.dead_letter(self.name.as_str(), &dlx, routing_key.as_ref(), dead);
        }
        self.forget(logs.into_iter());
    }

    /// Time-driven work: drops (dead-letters) expired messages at the head, even with nobody
    /// consuming. Returns true when the queue has been unused for its `x-expires` and should
    /// be deleted.
    pub(crate) fn tick(self: &Arc<Self>, now: u64) -> bool {
        let mut expired = false;
        if self.wants_tick() {
            let mut dead = Vec::new();
            {
                let mut inner = self.inner.lock();
                if self.has_deadlines.load(Ordering::Relaxed) {
                    self.expire_head(&mut inner, now, &mut dead);
                    self.has_deadlines
                        .store(inner.ready.has_deadlines(), Ordering::Relaxed);
                }
                if let Some(expires) = inner.settings.expires {
                    expired = inner.consumers.is_empty()
                        && now
                            >= self
                                .last_used
                                .load(Ordering::Relaxed)
                                .saturating_add(expires);
                }
            }
            self.dead_letter(dead);
        }
        expired
    }

    /// Whether [`Queue::tick`] has anything to do here.
    pub(crate) fn wants_tick(&self) -> bool {
        self.expires_ms.load(Ordering::Relaxed) != 0 || self.has_deadlines.load(Ordering::Relaxed)
    }

    /// Puts back the messages recovered from the log for this queue (at start-up, before any
    /// client), leaving their bodies on disk until they are near the head of the queue. A
    /// priority queue reads each once to learn its priority. Returns how many were restored.
    ///
    /// Durability: the time a message was enqueued is not in the log, so the queue's TTL
    /// counts from the restart (a message lives longer than it should, never shorter); its
    /// own `expiration` is applied when it is read back. Recovery cannot tell whether a
    /// message was delivered before the restart; "maybe" is what the redelivered flag means,
    /// so every restored message is marked redelivered.
    pub fn restore(&self, recovered: &warren_store::RecoveredQueue) -> u64 {
        let (Some(queue), Some(p)) = (self.store_id, &self.persistence) else {
            return 0;
        };
        let ttl = self.inner.lock().settings.message_ttl;
        let expires_at = match ttl {
            Some(ttl) => clock::now_ms().saturating_add(ttl),
            None => NEVER,
        };
        if expires_at != NEVER && !recovered.is_empty() {
            self.has_deadlines.store(true, Ordering::Relaxed);
        }
        let mut inner = self.inner.lock();
        let mut n = 0;
        for m in recovered.iter() {
            let level = match self.config.max_priority {
                Some(_) => p
                    .store
                    .read(m.msg_id)
                    .ok()
                    .and_then(|payload| decode_message(m.msg_id, payload))
                    .map_or(0, |m| usize::from(m.priority)),
                None => 0,
            };
            let seq = inner.next_seq;
            inner.next_seq += 1;
            inner.ready.restore(
                level,
                Restored {
                    seq,
                    log: LogRef {
                        queue,
                        id: m.msg_id,
                    },
                    expires_at,
                    delivery_count: m.delivery_count,
                    stored_len: p.store.len_of(m.msg_id).map_or(0, u64::from),
                },
            );
            n += 1;
        }
        n
    }

    /// Drops every ready message; returns how many there were.
    pub fn purge(&self) -> u32 {
        let (n, logged) = {
            let mut inner = self.inner.lock();
            let cleared = inner.ready.clear();
            self.note_pressure(&inner);
            cleared
        };
        if let (Some(p), false) = (&self.persistence, logged.is_empty()) {
            p.settle_refs(&logged);
        }
        n as u32
    }

    /// Marks the queue deleted and hands back its consumers (to be cancelled) and the number
    /// of ready messages it held. Only the vhost calls this, after unlinking the queue.
    pub(crate) fn mark_deleted(&self) -> (Vec<Arc<dyn Subscriber>>, u32) {
        let mut inner = self.inner.lock();
        self.deleted.store(true, Ordering::Release);
        let n = inner.ready.len() as u32;
        // Persistent messages go with the queue's log id (the vhost drops it); page copies are
        // settled here.
        let page_copies: Vec<LogRef> = inner
            .ready
            .clear()
            .1
            .into_iter()
            .filter(|r| Some(r.queue) != self.store_id)
            .collect();
        if let (Some(p), false) = (&self.persistence, page_copies.is_empty()) {
            p.settle_refs(&page_copies);
        }
        inner.groups.clear();
        (std::mem::take(&mut inner.consumers), n)
    }
}
