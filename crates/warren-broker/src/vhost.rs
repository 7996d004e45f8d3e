//! A virtual host: its exchanges, queues and bindings, and routing between them.
//!
//! The maps are behind read-write locks taken briefly; the publish path takes only read locks.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;
use warren_codec::{FieldTable, ShortString};

use crate::args;
use crate::dead_letter::{dead_lettered, is_cycle, Dead};
use crate::delayed::{self, DelayStore};
use crate::durability::{Durability, Ticket};
use crate::error::{BrokerError, EntityKind, Result};
use crate::exchange::{headers, Binding, Destination, Exchange};
use crate::limits::{self, Limits};
use crate::message::Message;
use crate::persistence::{BindingRecord, SharedPersistence};
use crate::policy::{self, Policy, Target};
use crate::queue::{Home, Queue, QueueHost, Subscriber};
use crate::spec::{
    Accepted, ConnectionId, ExchangeKind, ExchangeSpec, QueueCounts, QueueSpec, VHostMetadata,
};
use crate::stats::{Churn, MessageStats, SizeHistogram};

/// The queues a message was routed to (deduplicated).
pub type Route = SmallVec<[Arc<Queue>; 4]>;

/// A publishing channel's memory of where its last message through the default exchange went.
/// Work queues publish to one queue over and over; at millions of messages a second the
/// vhost's shared lock, the hash of the name and the shared reference count it touches are a
/// tenth of the publishing core, and the channel is single-threaded.
#[derive(Default)]
pub struct RouteCache {
    last: Option<(ShortString, Arc<Queue>)>,
}

pub struct VHost {
    pub name: Arc<str>,
    /// Where durable topology and persistent messages go (None: memory only).
    pub(crate) persistence: SharedPersistence,
    exchanges: RwLock<HashMap<ShortString, Arc<Exchange>>>,
    queues: RwLock<HashMap<ShortString, Arc<Queue>>>,
    /// Messages waiting on an `x-delayed-message` exchange.
    delayed: DelayStore,
    churn: Arc<Churn>,
    /// Counts of the channels that have closed here, and of publishes made outside any
    /// channel (the management API's): live channels keep their own.
    retired: Mutex<(MessageStats, SizeHistogram)>,
    /// `max-connections` and `max-queues`.
    limits: RwLock<Limits>,
    /// Policies and operator policies, by name.
    policies: RwLock<Vec<Policy>>,
    operator_policies: RwLock<Vec<Policy>>,
    metadata: RwLock<VHostMetadata>,
}

/// What became of a message handed to its queues by [`VHost::deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Every queue took it (false: one refused it with `x-overflow = reject-publish`).
    pub accepted: bool,
    /// What a confirm of it must wait for (the log position of a persistent message).
    pub ticket: Ticket,
}

impl std::fmt::Debug for VHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VHost").field("name", &self.name).finish()
    }
}

/// Exchanges every vhost has, as in RabbitMQ.
const STANDARD_EXCHANGES: [(&str, ExchangeKind); 6] = [
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

fn reserved_name(name: &str) -> bool {
    name.starts_with("amq.")
}

/// RabbitMQ's text for a redeclare that does not match, e.g. "inequivalent arg 'durable' for
/// queue 'q' in vhost '/': received 'false' but current is 'true'". `received` and `current`
/// come formatted by [`args`] (quoted, or "none", or "the value ... of type ...").
fn inequivalent(
    arg: &str,
    kind: &str,
    name: &str,
    vhost: &str,
    received: &str,
    current: &str,
) -> BrokerError {
    BrokerError::PreconditionFailed(format!(
        "inequivalent arg '{arg}' for {kind} '{name}' in vhost '{vhost}': received {received} \
         but current is {current}"
    ))
}

impl VHost {
    pub(crate) fn new(name: &str, persistence: SharedPersistence, churn: Arc<Churn>) -> Arc<Self> {
        let vhost = Arc::new(VHost {
            name: Arc::from(name),
            persistence,
            exchanges: RwLock::new(HashMap::new()),
            queues: RwLock::new(HashMap::new()),
            delayed: DelayStore::default(),
            churn,
            retired: Mutex::new(Default::default()),
            limits: RwLock::new(Limits::new()),
            policies: RwLock::new(Vec::new()),
            operator_policies: RwLock::new(Vec::new()),
            metadata: RwLock::new(VHostMetadata::default()),
        });
        {
            let mut ex = vhost.exchanges.write();
            for (name, kind) in STANDARD_EXCHANGES {
                let spec = ExchangeSpec {
                    name: ShortString::from_static(name),
                    kind,
                    durable: true,
                    auto_delete: false,
                    internal: false,
                    arguments: FieldTable::new(),
                };
                ex.insert(spec.name.clone(), Arc::new(Exchange::new(&spec)));
            }
        }
        vhost
    }

    /// Its description, tags and default queue type.
    pub fn metadata(&self) -> VHostMetadata {
        self.metadata.read().clone()
    }

    pub(crate) fn set_metadata(&self, m: VHostMetadata) {
        *self.metadata.write() = m;
    }

    /// What a queue of this vhost needs to know of it.
    fn home(self: &Arc<Self>) -> Home {
        let host: std::sync::Weak<dyn QueueHost> = Arc::downgrade(self) as _;
        Home {
            host,
            vhost: self.name.clone(),
            persistence: self.persistence.clone(),
        }
    }

    /// This vhost's limits.
    pub fn limits(&self) -> Limits {
        self.limits.read().clone()
    }

    /// Sets (Some) or clears (None) one limit, recorded first.
    pub(crate) fn set_limit(&self, name: &str, value: Option<i64>) -> Result<()> {
        let mut limits = self.limits.write();
        let mut next = limits.clone();
        match value {
            Some(v) => next.insert(name.to_owned(), v),
            None => next.remove(name),
        };
        if let Some(p) = &self.persistence {
            p.save_limits("vhost_limits", &self.name, &next)?;
        }
        *limits = next;
        Ok(())
    }

    pub(crate) fn restore_limits(&self, limits: Limits) {
        *self.limits.write() = limits;
    }

    /// RabbitMQ's queue limit: refused when the vhost would hold more than `max-queues`.
    fn check_queue_limit(&self, count: usize, name: &str) -> Result<()> {
        if let Some(limit) = limits::get(&self.limits.read(), "max-queues") {
            if count as u64 + 1 > limit {
                return Err(BrokerError::PreconditionFailed(format!(
                    "cannot declare queue '{name}': queue limit in vhost '{}' ({limit}) is reached",
                    self.name
                )));
            }
        }
        Ok(())
    }

    /// Adds or replaces a policy (recorded first when the vhost persists) and applies the
    /// policies again to every queue and exchange here. Returns whether it is new.
    pub(crate) fn set_policy(&self, policy: Policy, operator: bool) -> Result<bool> {
        let created = {
            let mut list = self.policy_list(operator).write();
            if let Some(p) = &self.persistence {
                p.save_policy(operator, &self.name, &policy.name, &policy.to_json(true))?;
            }
            let created = !list.iter().any(|p| p.name == policy.name);
            list.retain(|p| p.name != policy.name);
            list.push(policy);
            created
        };
        self.apply_policies();
        Ok(created)
    }

    /// Removes a policy and applies the rest again; returns whether it existed.
    pub(crate) fn delete_policy(&self, name: &str, operator: bool) -> Result<bool> {
        let existed = {
            let mut list = self.policy_list(operator).write();
            if !list.iter().any(|p| p.name == name) {
                return Ok(false);
            }
            if let Some(p) = &self.persistence {
                p.delete_policy(operator, &self.name, name)?;
            }
            list.retain(|p| p.name != name);
            true
        };
        self.apply_policies();
        Ok(existed)
    }

    /// Puts back a policy recorded before a restart (before the queues come back).
    pub(crate) fn restore_policy(&self, policy: Policy, operator: bool) {
        self.policy_list(operator).write().push(policy);
    }

    /// The policies (or operator policies) of this vhost, by name.
    pub fn policies(&self, operator: bool) -> Vec<Policy> {
        let mut v = self.policy_list(operator).read().clone();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn policy_list(&self, operator: bool) -> &RwLock<Vec<Policy>> {
        if operator {
            &self.operator_policies
        } else {
            &self.policies
        }
    }

    /// Applies the policies in force to one queue.
    fn apply_queue_policy(&self, q: &Arc<Queue>) {
        let target = Target::Queue(q.config.queue_type);
        let users = self.policies.read();
        let ops = self.operator_policies.read();
        let user = policy::select(&users, q.name.as_str(), target);
        let op = policy::select(&ops, q.name.as_str(), target);
        q.apply_policy(user, op);
    }

    fn apply_exchange_policy(&self, x: &Exchange) {
        let users = self.policies.read();
        let p = policy::select(&users, x.name.as_str(), Target::Exchange).map(|p| {
            let ae = p
                .definition
                .get("alternate-exchange")
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            (p.name.clone(), ae)
        });
        x.set_policy(p);
    }

    /// Matches every queue and exchange here against the policies again (after a change).
    fn apply_policies(&self) {
        for q in self.queues() {
            self.apply_queue_policy(&q);
        }
        for x in self.exchanges() {
            self.apply_exchange_policy(&x);
        }
    }

    /// How far this vhost's log is on disk.
    pub fn durability(&self) -> Durability {
        Durability::new(self.persistence.as_ref().map(|p| p.store.clone()))
    }

    /// Messages waiting on delayed-message exchanges here.
    pub fn delayed_len(&self) -> usize {
        self.delayed.len()
    }

    pub(crate) fn retire_stats(&self, stats: &MessageStats, sizes: &SizeHistogram) {
        let mut r = self.retired.lock();
        r.0.add(stats);
        r.1.add(sizes);
    }

    /// A publish from outside any channel (the management API).
    pub(crate) fn count_direct_publish(&self, size: u64) {
        let mut r = self.retired.lock();
        r.0.publish += 1;
        r.1.observe(size);
    }

    pub(crate) fn count_direct_routed(&self, queues: u64, mandatory: bool) {
        let mut r = self.retired.lock();
        match (queues > 0, mandatory) {
            (true, _) => r.0.routed += queues,
            (false, true) => r.0.return_unroutable += 1,
            (false, false) => r.0.drop_unroutable += 1,
        }
    }

    /// The counts of closed channels and direct publishes here; the registry adds the live
    /// channels'.
    pub(crate) fn retired_stats(&self) -> (MessageStats, SizeHistogram) {
        *self.retired.lock()
    }

    fn not_found(&self, kind: EntityKind, name: &str) -> BrokerError {
        BrokerError::NotFound {
            kind,
            name: name.to_owned(),
            vhost: self.name.to_string(),
        }
    }

    pub fn exchange(&self, name: &str) -> Result<Arc<Exchange>> {
        self.exchanges
            .read()
            .get(name.as_bytes())
            .cloned()
            .ok_or_else(|| self.not_found(EntityKind::Exchange, name))
    }

    pub fn queue(&self, name: &str) -> Result<Arc<Queue>> {
        self.queues
            .read()
            .get(name.as_bytes())
            .cloned()
            .ok_or_else(|| self.not_found(EntityKind::Queue, name))
    }

    pub fn exchanges(&self) -> Vec<Arc<Exchange>> {
        self.exchanges.read().values().cloned().collect()
    }

    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.queues.read().values().cloned().collect()
    }

    /// `exchange.declare` (not passive). Returns the exchange, new or existing.
    pub fn declare_exchange(&self, spec: &ExchangeSpec) -> Result<Arc<Exchange>> {
        if spec.name.is_empty() {
            return Err(BrokerError::AccessRefused(
                "operation not permitted on the default exchange".into(),
            ));
        }
        let mut map = self.exchanges.write();
        if let Some(x) = map.get(&spec.name) {
            let current = x.spec();
            let flag = |arg: &str, received: &str, current: &str| {
                (received != current).then(|| {
                    (
                        arg.to_owned(),
                        format!("'{received}'"),
                        format!("'{current}'"),
                    )
                })
            };
            let diff = flag("type", spec.kind.as_str(), current.kind.as_str())
                .or_else(|| {
                    flag(
                        "durable",
                        &spec.durable.to_string(),
                        &current.durable.to_string(),
                    )
                })
                .or_else(|| {
                    flag(
                        "auto_delete",
                        &spec.auto_delete.to_string(),
                        &current.auto_delete.to_string(),
                    )
                })
                .or_else(|| {
                    flag(
                        "internal",
                        &spec.internal.to_string(),
                        &current.internal.to_string(),
                    )
                })
                .or_else(|| {
                    args::difference(&current.arguments, &spec.arguments, args::EXCHANGE_ARGS)
                });
            return match diff {
                Some((arg, received, current)) => Err(inequivalent(
                    &arg,
                    "exchange",
                    spec.name.as_str(),
                    &self.name,
                    &received,
                    &current,
                )),
                None => Ok(x.clone()),
            };
        }
        if reserved_name(spec.name.as_str()) {
            return Err(BrokerError::AccessRefused(format!(
                "exchange name '{}' contains reserved prefix 'amq.*'",
                spec.name
            )));
        }
        if spec.kind == ExchangeKind::DelayedMessage {
            delayed::validate(&spec.arguments)?;
        }
        // Durability: recorded before it becomes routable (the lock is held through the
        // fsync), so nothing confirmed through it can outlive its record in a crash.
        if let (Some(p), true) = (&self.persistence, spec.durable) {
            p.save_exchange(&self.name, spec)?;
        }
        let x = Arc::new(Exchange::new(spec));
        self.apply_exchange_policy(&x);
        map.insert(spec.name.clone(), x.clone());
        Ok(x)
    }

    /// Puts back a durable exchange recorded before a restart.
    pub fn restore_exchange(&self, spec: &ExchangeSpec) {
        let x = Arc::new(Exchange::new(spec));
        self.apply_exchange_policy(&x);
        self.exchanges.write().insert(spec.name.clone(), x);
    }

    /// The record of a binding, if it is durable: both ends durable, and a log to keep it in.
    fn binding_record(&self, source: &Exchange, b: &Binding) -> Option<BindingRecord> {
        self.persistence.as_ref()?;
        let (destination, to_queue, durable) = match &b.destination {
            Destination::Queue(q) => (q.name.to_string(), true, q.store_id.is_some()),
            Destination::Exchange(x) => (x.name.to_string(), false, x.durable),
        };
        (source.durable && durable).then(|| BindingRecord {
            vhost: self.name.to_string(),
            source: source.name.to_string(),
            destination,
            to_queue,
            routing_key: b.routing_key.clone(),
            arguments: b.arguments.clone(),
        })
    }

    /// Forgets the records of bindings that went with something deleted. A record left
    /// behind by a failed write names something missing, and is dropped at the next start.
    fn forget_bindings(&self, source: &Exchange, removed: &[Binding]) {
        if let Some(p) = &self.persistence {
            for b in removed {
                if let Some(rec) = self.binding_record(source, b) {
                    if let Err(e) = p.delete_binding(&rec) {
                        tracing::warn!(error = %e, "cannot forget a binding's record");
                    }
                }
            }
        }
    }

    /// Adds a binding, recorded first if durable (`bind-ok` promises it is on disk).
    fn add_binding(&self, source: &Exchange, b: Binding) -> Result<()> {
        if let (Some(p), Some(rec)) = (&self.persistence, self.binding_record(source, &b)) {
            p.save_binding(&rec)?;
        }
        source.bind(b);
        Ok(())
    }

    /// Removes a binding (its record first); returns whether it existed.
    fn remove_binding(&self, source: &Arc<Exchange>, b: &Binding) -> Result<bool> {
        if !source.has_binding(b) {
            return Ok(false);
        }
        if let (Some(p), Some(rec)) = (&self.persistence, self.binding_record(source, b)) {
            p.delete_binding(&rec)?;
        }
        if !source.unbind(b) {
            return Ok(false);
        }
        self.maybe_auto_delete_exchange(source);
        Ok(true)
    }

    /// Puts back a durable binding recorded before a restart.
    pub fn restore_binding(&self, rec: &BindingRecord) -> Result<()> {
        let source = self.exchange(&rec.source)?;
        let destination = if rec.to_queue {
            Destination::Queue(self.queue(&rec.destination)?)
        } else {
            Destination::Exchange(self.exchange(&rec.destination)?)
        };
        source.bind(Binding {
            destination,
            routing_key: rec.routing_key.clone(),
            arguments: rec.arguments.clone(),
        });
        Ok(())
    }

    /// `exchange.delete`. Deleting a missing exchange succeeds, as in RabbitMQ.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<()> {
        if name.is_empty() {
            return Err(BrokerError::AccessRefused(
                "operation not permitted on the default exchange".into(),
            ));
        }
        if reserved_name(name) && STANDARD_EXCHANGES.iter().any(|(n, _)| *n == name) {
            return Err(BrokerError::AccessRefused(format!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.name
            )));
        }
        let x = {
            let mut map = self.exchanges.write();
            let Some(x) = map.get(name.as_bytes()).cloned() else {
                return Ok(());
            };
            if if_unused && x.has_bindings() {
                return Err(BrokerError::PreconditionFailed(format!(
                    "exchange '{name}' in vhost '{}' in use",
                    self.name
                )));
            }
            // Durability: the record goes first; if it cannot, the exchange stays.
            if let (Some(p), true) = (&self.persistence, x.durable) {
                p.delete_exchange(&self.name, x.name.as_str())?;
            }
            map.remove(name.as_bytes());
            x
        };
        self.unlink_exchange(&x);
        Ok(())
    }

    /// Drops an exchange's bindings in both directions, once it is out of the map and its
    /// record is gone.
    fn unlink_exchange(&self, x: &Arc<Exchange>) {
        let dest = Destination::Exchange(x.clone());
        let others = self.exchanges();
        for other in others {
            let removed = other.unbind_destination(&dest);
            if !removed.is_empty() {
                self.forget_bindings(&other, &removed);
                self.maybe_auto_delete_exchange(&other);
            }
        }
        // Drop its own bindings so that destination exchanges can auto-delete.
        for b in x.bindings() {
            x.unbind(&b);
            self.forget_bindings(x, std::slice::from_ref(&b));
            if let Destination::Exchange(d) = &b.destination {
                self.maybe_auto_delete_exchange(d);
            }
        }
        x.mark_deleted();
    }

    /// RabbitMQ deletes an auto-delete exchange when its last binding (as a source) goes.
    fn maybe_auto_delete_exchange(&self, x: &Arc<Exchange>) {
        if !x.auto_delete || x.has_bindings() || x.is_deleted() {
            return;
        }
        let removed = {
            let mut map = self.exchanges.write();
            match map.get(&x.name) {
                Some(cur) if Arc::ptr_eq(cur, x) => map.remove(&x.name).is_some(),
                _ => false,
            }
        };
        if removed {
            if let (Some(p), true) = (&self.persistence, x.durable) {
                if let Err(e) = p.delete_exchange(&self.name, x.name.as_str()) {
                    tracing::warn!(error = %e, exchange = %x.name, "cannot forget an auto-deleted exchange's record");
                }
            }
            self.unlink_exchange(x);
        }
    }

    fn bind_checks(&self, source: &str, args: &FieldTable, x: &Exchange) -> Result<()> {
        if source.is_empty() {
            return Err(BrokerError::AccessRefused(
                "operation not permitted on the default exchange".into(),
            ));
        }
        if x.route_kind == ExchangeKind::Headers {
            headers::validate_x_match(args).map_err(BrokerError::PreconditionFailed)?;
        }
        Ok(())
    }

    /// `queue.bind`.
    pub fn bind_queue(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: ShortString,
        arguments: FieldTable,
        conn: ConnectionId,
    ) -> Result<()> {
        let q = self.queue(queue)?;
        q.check_access(conn)?;
        let x = self.exchange(exchange)?;
        self.bind_checks(exchange, &arguments, &x)?;
        self.add_binding(
            &x,
            Binding {
                destination: Destination::Queue(q),
                routing_key,
                arguments,
            },
        )
    }

    /// `queue.unbind`. As in RabbitMQ, removing a binding that does not exist succeeds, even
    /// when its queue or exchange does not exist; only a real removal checks exclusivity.
    pub fn unbind_queue(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: ShortString,
        arguments: FieldTable,
        conn: ConnectionId,
    ) -> Result<()> {
        if exchange.is_empty() {
            return Err(BrokerError::AccessRefused(
                "operation not permitted on the default exchange".into(),
            ));
        }
        let (Ok(q), Ok(x)) = (self.queue(queue), self.exchange(exchange)) else {
            return Ok(());
        };
        let binding = Binding {
            destination: Destination::Queue(q.clone()),
            routing_key,
            arguments,
        };
        if !x.has_binding(&binding) {
            return Ok(());
        }
        q.check_access(conn)?;
        self.remove_binding(&x, &binding).map(drop)
    }

    /// `exchange.bind`: messages reaching `source` that match also go through `destination`.
    pub fn bind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: ShortString,
        arguments: FieldTable,
    ) -> Result<()> {
        let d = self.exchange(destination)?;
        let s = self.exchange(source)?;
        if destination.is_empty() {
            return Err(BrokerError::AccessRefused(
                "operation not permitted on the default exchange".into(),
            ));
        }
        self.bind_checks(source, &arguments, &s)?;
        self.add_binding(
            &s,
            Binding {
                destination: Destination::Exchange(d),
                routing_key,
                arguments,
            },
        )
    }

    /// `exchange.unbind`. Like `queue.unbind`, it succeeds when there is nothing to remove.
    pub fn unbind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: ShortString,
        arguments: FieldTable,
    ) -> Result<()> {
        let (Ok(d), Ok(s)) = (self.exchange(destination), self.exchange(source)) else {
            return Ok(());
        };
        self.remove_binding(
            &s,
            &Binding {
                destination: Destination::Exchange(d),
                routing_key,
                arguments,
            },
        )
        .map(drop)
    }

    /// A fresh server-chosen queue name, like RabbitMQ's `amq.gen-` names.
    pub fn generate_queue_name() -> ShortString {
        crate::spec::random_name("amq.gen-")
    }

    /// `queue.declare`, passive or not. Returns the queue and its counts.
    pub fn declare_queue(
        self: &Arc<Self>,
        spec: &QueueSpec,
        passive: bool,
        conn: ConnectionId,
    ) -> Result<(Arc<Queue>, QueueCounts)> {
        if passive {
            let q = self.queue(spec.name.as_str())?;
            q.check_access(conn)?;
            q.touch();
            let counts = q.counts();
            return Ok((q, counts));
        }
        let map = self.queues.write();
        if let Some(q) = map.get(&spec.name) {
            q.check_access(conn)?;
            if q.is_exclusive() != spec.exclusive {
                // As RabbitMQ: a redeclare that differs in exclusivity is refused as if the
                // queue were locked (405), not as inequivalent (406).
                return Err(q.locked());
            }
            if let Some((arg, received, current)) = q.inequivalence(spec) {
                return Err(inequivalent(
                    &arg,
                    "queue",
                    spec.name.as_str(),
                    &self.name,
                    &received,
                    &current,
                ));
            }
            let q = q.clone();
            drop(map);
            q.touch();
            let counts = q.counts();
            Churn::bump(&self.churn.queues_declared);
            return Ok((q, counts));
        }
        if reserved_name(spec.name.as_str()) {
            return Err(BrokerError::AccessRefused(format!(
                "queue name '{}' contains reserved prefix 'amq.*'",
                spec.name
            )));
        }
        // As RabbitMQ: arguments are checked for a new queue only (a redeclare is compared).
        crate::queue_args::validate(spec, &self.name)?;
        let q = self.create_queue(map, spec, conn)?;
        Ok((
            q,
            QueueCounts {
                messages: 0,
                consumers: 0,
            },
        ))
    }

    /// Records a new queue if it is durable, then adds it to the map.
    fn create_queue(
        self: &Arc<Self>,
        mut map: parking_lot::RwLockWriteGuard<'_, HashMap<ShortString, Arc<Queue>>>,
        spec: &QueueSpec,
        conn: ConnectionId,
    ) -> Result<Arc<Queue>> {
        self.check_queue_limit(map.len(), spec.name.as_str())?;
        let owner = spec.exclusive.then_some(conn);
        // Exclusive queues die with their connection, so they are never logged (RabbitMQ
        // deletes them at restart too).
        let store_id = match &self.persistence {
            Some(p) if spec.durable && !spec.exclusive => Some(p.next_queue_id()),
            _ => None,
        };
        // Durability: recorded before it becomes routable (the vhost's queue map stays locked
        // through the fsync, which only a new durable queue pays), so a persistent message
        // confirmed into it can never outlive the queue's record in a crash.
        if let (Some(p), Some(id)) = (&self.persistence, store_id) {
            p.save_queue(&self.name, id, spec)?;
        }
        let q = Arc::new(Queue::new(spec, owner, self.home(), store_id));
        self.apply_queue_policy(&q);
        map.insert(spec.name.clone(), q.clone());
        Churn::bump(&self.churn.queues_declared);
        Churn::bump(&self.churn.queues_created);
        Ok(q)
    }

    /// Creates a queue whose name the caller chose under the reserved `amq.` prefix (server
    /// names and direct reply-to queues). A durable, non-exclusive one is recorded like any
    /// other: RabbitMQ keeps a server-named durable queue across restarts.
    pub fn declare_internal_queue(
        self: &Arc<Self>,
        spec: &QueueSpec,
        conn: ConnectionId,
    ) -> Result<Arc<Queue>> {
        let map = self.queues.write();
        self.create_queue(map, spec, conn)
    }

    /// Puts back a durable queue recorded before a restart.
    pub fn restore_queue(self: &Arc<Self>, id: u64, spec: &QueueSpec) -> Arc<Queue> {
        let store_id = self.persistence.as_ref().map(|_| id);
        let q = Arc::new(Queue::new(spec, None, self.home(), store_id));
        self.apply_queue_policy(&q);
        self.queues.write().insert(spec.name.clone(), q.clone());
        q
    }

    /// Logs a persistent message for the durable queues of its route, before it is enqueued
    /// anywhere (an ack must never reach the log before its publish). Returns the log position
    /// to wait for before confirming, if anything was logged.
    fn log_message(&self, message: &Arc<Message>, route: &[Arc<Queue>]) -> Result<Ticket> {
        let Some(p) = &self.persistence else {
            return Ok(Ticket::NONE);
        };
        if !message.persistent {
            return Ok(Ticket::NONE);
        }
        let ids: SmallVec<[u64; 4]> = route.iter().filter_map(|q| q.store_id).collect();
        if ids.is_empty() {
            return Ok(Ticket::NONE);
        }
        p.publish(message, &ids)
    }

    /// Hands a routed message to its queues: logged first when it is persistent and a
    /// queue is durable (an ack must never reach the log before its publish), then enqueued
    /// in each. Every path a message takes into queues comes through here: publishes,
    /// transactions at commit, delayed messages when due, dead-lettered messages.
    ///
    /// Durability: a log that cannot be written is an error and nothing is enqueued; the
    /// returned ticket is what a confirm must wait for.
    pub fn deliver(&self, message: &Arc<Message>, route: &[Arc<Queue>]) -> Result<Delivered> {
        let ticket = self.log_message(message, route)?;
        let mut accepted = true;
        for q in route {
            accepted &= q.publish(message.clone()) == Accepted::Yes;
        }
        Ok(Delivered { accepted, ticket })
    }

    /// `queue.delete`. Deleting a missing queue succeeds with a count of 0, as in RabbitMQ.
    pub fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
        conn: ConnectionId,
    ) -> Result<u32> {
        let q = match self.queue(name) {
            Ok(q) => q,
            Err(_) => {
                Churn::bump(&self.churn.queues_deleted);
                return Ok(0);
            }
        };
        q.check_access(conn)?;
        let counts = q.counts();
        if if_unused && counts.consumers > 0 {
            return Err(BrokerError::PreconditionFailed(format!(
                "queue '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        if if_empty && counts.messages > 0 {
            return Err(BrokerError::PreconditionFailed(format!(
                "queue '{name}' in vhost '{}' not empty",
                self.name
            )));
        }
        self.remove_queue(&q)
    }

    /// Unlinks and deletes a queue: its record first, then its bindings go, its consumers are
    /// cancelled (the clients get `basic.cancel`). Returns the number of ready messages it
    /// held.
    pub(crate) fn remove_queue(&self, q: &Arc<Queue>) -> Result<u32> {
        {
            let mut map = self.queues.write();
            match map.get(&q.name) {
                Some(cur) if Arc::ptr_eq(cur, q) => {
                    // Durability: a queue whose record cannot be removed stays.
                    if let (Some(p), Some(id)) = (&self.persistence, q.store_id) {
                        p.delete_queue(&self.name, q.name.as_str(), id)?;
                    }
                    map.remove(&q.name);
                }
                _ => return Ok(0),
            }
        }
        Churn::bump(&self.churn.queues_deleted);
        let dest = Destination::Queue(q.clone());
        for x in self.exchanges() {
            let removed = x.unbind_destination(&dest);
            if !removed.is_empty() {
                self.forget_bindings(&x, &removed);
                self.maybe_auto_delete_exchange(&x);
            }
        }
        let (consumers, count) = q.mark_deleted();
        cancel_consumers(consumers);
        Ok(count)
    }

    /// Time-driven work for this vhost's queues: expiring messages, deleting queues unused
    /// for their `x-expires`. `now` is in ms since the Unix epoch.
    pub fn tick(&self, now: u64) {
        self.release_delayed(now);
        let due: Vec<Arc<Queue>> = self
            .queues
            .read()
            .values()
            .filter(|q| q.wants_tick())
            .cloned()
            .collect();
        for q in due {
            if q.tick(now) {
                tracing::debug!(queue = %q.name, vhost = %self.name, "queue expired (x-expires)");
                if let Err(e) = self.remove_queue(&q) {
                    tracing::warn!(error = %e, queue = %q.name, "cannot delete an expired queue");
                }
            }
        }
    }

    /// Holds a message published to the delayed exchange `exchange` for `delay` ms (see
    /// [`crate::delayed`]). Returns the log position to wait for before confirming, if it was
    /// logged.
    pub(crate) fn delay_message(
        &self,
        exchange: &Exchange,
        message: Arc<Message>,
        delay: u64,
    ) -> Result<Ticket> {
        self.delayed.delay(
            self.persistence.as_ref(),
            &self.name,
            exchange.durable,
            message,
            delay,
            crate::clock::now_ms(),
        )
    }

    /// Routes the delayed messages due at `now` through their exchanges, as they are now.
    fn release_delayed(&self, now: u64) {
        if self.delayed.next_due().is_none_or(|due| due > now) {
            return;
        }
        for d in self.delayed.take_due(now, self.persistence.as_ref()) {
            // Logging it again (for durable queues) gives it an id of its own.
            let m = Arc::new(d.message);
            if let Ok(x) = self.exchange(m.exchange.as_str()) {
                let route = self.route(&x, &m);
                if let Err(e) = self.deliver(&m, &route) {
                    tracing::warn!(error = %e, "cannot log a delayed message; dropping it");
                }
            }
            if let (Some(p), Some((queue, id))) = (&self.persistence, d.log) {
                p.settle(queue, &[id]);
            }
        }
    }

    /// Puts back the delayed messages recovered from the log under `id`.
    pub fn restore_delayed(&self, id: u64, messages: &warren_store::RecoveredQueue) {
        self.delayed.set_log_id(id);
        let Some(p) = &self.persistence else {
            return;
        };
        for m in messages.iter() {
            if !self.delayed.restore(p, m.msg_id) {
                tracing::warn!(id = m.msg_id, "unreadable delayed message; dropping it");
                p.settle(id, &[m.msg_id]);
            }
        }
    }

    /// Deletes everything in this vhost (it is being deleted): queues with their messages,
    /// exchanges, bindings, delayed messages, and their records. Failures are logged: the
    /// vhost's own record is gone already, so recovery drops what is left.
    pub(crate) fn delete_contents(&self) {
        for q in self.queues() {
            if let Err(e) = self.remove_queue(&q) {
                tracing::warn!(error = %e, queue = %q.name, "cannot delete a queue of a deleted vhost");
            }
        }
        for x in self.exchanges() {
            if x.name.is_empty()
                || STANDARD_EXCHANGES
                    .iter()
                    .any(|(n, _)| *n == x.name.as_str())
            {
                continue;
            }
            if let Err(e) = self.delete_exchange(x.name.as_str(), false) {
                tracing::warn!(error = %e, exchange = %x.name, "cannot delete an exchange of a deleted vhost");
            }
        }
        self.delayed.clear(self.persistence.as_ref(), &self.name);
    }

    /// Deletes the exclusive queues a closing connection owned.
    pub fn remove_exclusive_queues(&self, conn: ConnectionId) {
        let owned: Vec<Arc<Queue>> = self
            .queues
            .read()
            .values()
            .filter(|q| q.exclusive_owner == Some(conn))
            .cloned()
            .collect();
        for q in owned {
            if let Err(e) = self.remove_queue(&q) {
                tracing::warn!(error = %e, queue = %q.name, "cannot delete an exclusive queue");
            }
        }
    }

    /// Finds the queues `message` goes to from `exchange`, following exchange-to-exchange
    /// bindings and alternate exchanges. Each queue appears once.
    /// [`VHost::route`], with the default exchange's last target remembered in `cache`. A
    /// deleted queue is never served from it (a queue declared again under the same name is a
    /// new queue, found by the lookup).
    pub fn route_cached(
        &self,
        exchange: &Arc<Exchange>,
        message: &Message,
        cache: &mut RouteCache,
    ) -> Route {
        if !exchange.name.is_empty() {
            return self.route(exchange, message);
        }
        let key = &message.routing_key;
        if let Some((name, q)) = &cache.last {
            if name == key && !q.is_deleted() {
                let mut out = Route::new();
                out.push(q.clone());
                return out;
            }
        }
        let out = self.route(exchange, message);
        // An owned copy of the name: the key is a slice of the connection's read buffer,
        // which the cache must not keep alive.
        let owned = ShortString::from_bytes(bytes::Bytes::copy_from_slice(key.as_bytes()));
        cache.last = match (out.first(), owned) {
            (Some(q), Ok(name)) => Some((name, q.clone())),
            _ => None,
        };
        out
    }

    pub fn route(&self, exchange: &Arc<Exchange>, message: &Message) -> Route {
        let mut out = Route::new();
        let key = &message.routing_key;
        if exchange.name.is_empty() {
            // The default exchange binds every queue by its name, implicitly.
            if let Ok(q) = self.queue(key.as_str()) {
                out.push(q);
            }
            return out;
        }
        let mut headers_cache: Option<Option<FieldTable>> = None;
        let mut headers = || {
            headers_cache
                .get_or_insert_with(|| message.properties().headers)
                .clone()
        };
        let mut visited: SmallVec<[*const Exchange; 4]> = SmallVec::new();
        let mut pending: SmallVec<[Arc<Exchange>; 4]> = SmallVec::new();
        pending.push(exchange.clone());
        while let Some(x) = pending.pop() {
            let ptr = Arc::as_ptr(&x);
            if visited.contains(&ptr) {
                continue;
            }
            visited.push(ptr);
            let matched = x.route(key, &mut headers, &mut |d| match d {
                Destination::Queue(q) => {
                    if !out.iter().any(|o| Arc::ptr_eq(o, q)) {
                        out.push(q.clone());
                    }
                }
                Destination::Exchange(e) => pending.push(e.clone()),
            });
            if !matched {
                if let Some(ae) = x.alternate_exchange().and_then(|n| self.exchange(&n).ok()) {
                    pending.push(ae);
                }
            }
        }
        out
    }
}

/// Tells each consumer's channel that the broker cancelled it.
fn cancel_consumers(consumers: Vec<Arc<dyn Subscriber>>) {
    for c in consumers {
        c.cancelled();
    }
}

impl QueueHost for VHost {
    fn remove_queue(&self, queue: &Arc<Queue>) -> Result<u32> {
        VHost::remove_queue(self, queue)
    }

    /// Republishes dead messages to the dead-letter exchange. Messages whose exchange is
    /// missing, that route nowhere, or that would cycle are dropped. The queue settles the
    /// originals' log entries afterwards (after the copies are logged, so a crash in between
    /// duplicates rather than loses).
    fn dead_letter(
        &self,
        queue: &str,
        dlx: &ShortString,
        routing_key: Option<&ShortString>,
        dead: Vec<Dead>,
    ) {
        let Ok(exchange) = self.exchange(dlx.as_str()) else {
            tracing::debug!(queue, exchange = %dlx, "dead-letter exchange missing; messages dropped");
            return;
        };
        let time_secs = crate::clock::now_ms() / 1000;
        for d in dead {
            let (m, cycle_check) = dead_lettered(&d, queue, dlx, routing_key, time_secs);
            let mut route = self.route(&exchange, &m);
            if let Some(h) = &cycle_check {
                route.retain(|q| {
                    let cycle = is_cycle(q.name.as_str(), h);
                    if cycle {
                        tracing::debug!(queue = %q.name, "dead-letter cycle without rejection; message dropped");
                    }
                    !cycle
                });
            }
            if route.is_empty() {
                continue;
            }
            if let Err(e) = self.deliver(&m, &route) {
                tracing::warn!(error = %e, "cannot log a dead-lettered message; dropping it");
            }
        }
    }
}
