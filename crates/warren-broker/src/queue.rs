//! A queue: ready messages in order, its consumers, and dispatch.
//!
//! Each queue owns its state behind one mutex held only for short, non-async sections. Dispatch
//! runs in whichever task made progress possible (a publish, an ack, a new consumer, a drained
//! socket), so there is no queue task to wake and no hand-off per message.
//!
//! Lock order: a queue's lock may be held while taking a channel's lock (to assign a delivery
//! tag), never the other way round.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use warren_codec::{FieldTable, ShortString};

use crate::args;
use crate::backlog::{Backlog, PagedMessage, Pager};
use crate::consumer::Consumer;
use crate::error::{BrokerError, Result};
use crate::message::Message;
use crate::persistence::SharedPersistence;
use crate::vhost::VHost;

/// Identifies a client connection, for exclusive queues and consumers.
pub type ConnectionId = u64;

pub use crate::backlog::{LogRef, QueuedMessage};

/// Bytes of ready messages a queue keeps in memory before it pages the rest to the log.
pub const MEMORY_BUDGET: usize = 32 << 20;

/// The declared shape of a queue, compared on redeclare.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    pub name: ShortString,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

pub struct Queue {
    pub name: ShortString,
    pub vhost_name: Arc<str>,
    pub durable: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    /// The connection that declared it, for exclusive queues.
    pub exclusive_owner: Option<ConnectionId>,
    vhost: Weak<VHost>,
    /// The store's id for a durable queue whose persistent messages are logged.
    pub store_id: Option<u64>,
    persistence: SharedPersistence,
    inner: Mutex<QueueInner>,
    deleted: AtomicBool,
}

struct QueueInner {
    ready: Backlog,
    next_seq: u64,
    consumers: Vec<Arc<Consumer>>,
    /// Round-robin cursor into `consumers`.
    next_consumer: usize,
    /// Delivered and not yet settled (acked, rejected or requeued).
    unacked: u64,
    /// Auto-delete applies only to a queue that has had a consumer.
    had_consumer: bool,
}

/// Counts reported by `queue.declare-ok` and `queue.delete-ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    pub messages: u32,
    pub consumers: u32,
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
        vhost: &Arc<VHost>,
        store_id: Option<u64>,
    ) -> Self {
        Queue {
            name: spec.name.clone(),
            vhost_name: vhost.name.clone(),
            durable: spec.durable,
            auto_delete: spec.auto_delete,
            arguments: spec.arguments.clone(),
            exclusive_owner: owner,
            vhost: Arc::downgrade(vhost),
            persistence: vhost.persistence.clone(),
            store_id,
            inner: Mutex::new(QueueInner {
                ready: Backlog::new(vhost.persistence.as_ref().map(|p| Pager {
                    persistence: p.clone(),
                    page_queue: p.next_queue_id(),
                    budget: MEMORY_BUDGET,
                })),
                next_seq: 0,
                consumers: Vec::new(),
                next_consumer: 0,
                unacked: 0,
                had_consumer: false,
            }),
            deleted: AtomicBool::new(false),
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

    /// Messages delivered and not yet settled.
    pub fn unacked_count(&self) -> u64 {
        self.inner.lock().unacked
    }

    /// Appends a message and delivers what the consumers can take.
    pub fn publish(self: &Arc<Self>, message: Arc<Message>) {
        let log = match self.store_id {
            Some(queue) if message.persistent => Some(LogRef {
                queue,
                id: message.id,
            }),
            _ => None,
        };
        let mut inner = self.inner.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.ready.push(QueuedMessage {
            seq,
            message,
            redelivered: false,
            log,
        });
        self.dispatch_locked(&mut inner);
    }

    /// Delivers ready messages to consumers with credit, round-robin, until either runs out.
    pub fn dispatch(self: &Arc<Self>) {
        let mut inner = self.inner.lock();
        self.dispatch_locked(&mut inner);
    }

    fn dispatch_locked(self: &Arc<Self>, inner: &mut QueueInner) {
        // Messages sent to no-ack consumers are settled as they go; the log hears of them in
        // one call at the end.
        let mut auto_acked: Vec<LogRef> = Vec::new();
        while !inner.consumers.is_empty() {
            let n = inner.consumers.len();
            let start = inner.next_consumer;
            let QueueInner {
                ready, consumers, ..
            } = &mut *inner;
            let Some(front) = ready.front() else {
                break;
            };
            let mut taken = None;
            for i in 0..n {
                let idx = (start + i) % n;
                if consumers[idx].try_deliver(self, front) {
                    taken = Some((idx, consumers[idx].no_ack));
                    break;
                }
            }
            let Some((idx, no_ack)) = taken else {
                break;
            };
            inner.next_consumer = (idx + 1) % n;
            if let Some(m) = inner.ready.pop_front() {
                if !no_ack {
                    inner.unacked += 1;
                } else if let Some(log) = m.log {
                    auto_acked.push(log);
                }
            }
        }
        if let (Some(p), false) = (&self.persistence, auto_acked.is_empty()) {
            p.settle_refs(&auto_acked);
        }
    }

    /// Registers a consumer; deliveries start when it is activated.
    pub fn add_consumer(self: &Arc<Self>, consumer: Arc<Consumer>) -> Result<()> {
        let mut inner = self.inner.lock();
        if self.is_deleted() {
            return Err(BrokerError::NotFound {
                kind: crate::error::EntityKind::Queue,
                name: self.name.to_string(),
                vhost: self.vhost_name.to_string(),
            });
        }
        let locked = inner.consumers.iter().any(|c| c.exclusive);
        if locked || (consumer.exclusive && !inner.consumers.is_empty()) {
            return Err(BrokerError::AccessRefused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.name, self.vhost_name
            )));
        }
        inner.consumers.push(consumer);
        inner.had_consumer = true;
        Ok(())
    }

    /// Removes a consumer; deletes the queue if it is auto-delete and that was the last one.
    pub fn remove_consumer(self: &Arc<Self>, consumer: &Arc<Consumer>) {
        let auto_delete_now = {
            let mut inner = self.inner.lock();
            let before = inner.consumers.len();
            inner.consumers.retain(|c| !Arc::ptr_eq(c, consumer));
            if inner.next_consumer >= inner.consumers.len() {
                inner.next_consumer = 0;
            }
            before != inner.consumers.len()
                && self.auto_delete
                && inner.had_consumer
                && inner.consumers.is_empty()
        };
        if auto_delete_now {
            if let Some(vhost) = self.vhost.upgrade() {
                vhost.remove_queue(self);
            }
        }
    }

    /// Takes the next message for `basic.get`; `message_count` is what remains ready.
    pub fn get(&self, no_ack: bool) -> Option<(QueuedMessage, u32)> {
        let mut inner = self.inner.lock();
        let msg = inner.ready.pop_front()?;
        if !no_ack {
            inner.unacked += 1;
        } else if let (Some(p), Some(log)) = (&self.persistence, msg.log) {
            p.settle_refs(&[log]);
        }
        let remaining = inner.ready.len() as u32;
        Some((msg, remaining))
    }

    /// Returns delivered messages to the queue, each at its original position, marked
    /// redelivered, and dispatches them again.
    pub fn requeue(self: &Arc<Self>, mut messages: Vec<QueuedMessage>) {
        if messages.is_empty() {
            return;
        }
        let mut inner = self.inner.lock();
        inner.unacked = inner.unacked.saturating_sub(messages.len() as u64);
        if self.is_deleted() {
            return;
        }
        messages.sort_by_key(|m| m.seq);
        for mut m in messages {
            m.redelivered = true;
            inner.ready.requeue(m);
        }
        self.dispatch_locked(&mut inner);
    }

    /// Tells the log this queue is done with these messages.
    fn forget<'a>(&self, messages: impl Iterator<Item = &'a QueuedMessage>) {
        if let Some(p) = &self.persistence {
            let refs: Vec<LogRef> = messages.filter_map(|m| m.log).collect();
            if !refs.is_empty() {
                p.settle_refs(&refs);
            }
        }
    }

    /// Records that delivered messages were acked or dropped.
    pub fn settle(&self, messages: &[QueuedMessage]) {
        {
            let mut inner = self.inner.lock();
            inner.unacked = inner.unacked.saturating_sub(messages.len() as u64);
        }
        self.forget(messages.iter());
    }

    /// Puts back a message recovered from the log (at start-up, before any client), leaving
    /// its body on disk until it is near the head of the queue.
    pub fn restore(&self, msg_id: u64, location: warren_store::Location) {
        let Some(queue) = self.store_id else {
            return;
        };
        let mut inner = self.inner.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        // Recovery cannot tell whether it was delivered before the restart; "maybe" is what
        // the redelivered flag means, so say so.
        inner.ready.restore(PagedMessage {
            seq,
            log: LogRef { queue, id: msg_id },
            location,
            redelivered: true,
        });
    }

    /// Drops every ready message; returns how many there were.
    pub fn purge(&self) -> u32 {
        let (n, logged) = self.inner.lock().ready.clear();
        if let (Some(p), false) = (&self.persistence, logged.is_empty()) {
            p.settle_refs(&logged);
        }
        n as u32
    }

    /// Marks the queue deleted and hands back its consumers (to be cancelled) and the number
    /// of ready messages it held. Only the vhost calls this, after unlinking the queue.
    pub(crate) fn mark_deleted(&self) -> (Vec<Arc<Consumer>>, u32) {
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
        (std::mem::take(&mut inner.consumers), n)
    }
}
