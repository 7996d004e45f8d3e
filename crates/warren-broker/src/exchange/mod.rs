//! Exchanges and their bindings. Each kind keeps an index suited to its matching rule; the
//! plain list of bindings is kept beside it for listing, unbinding and equality checks.

pub mod headers;
pub mod topic;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;
use warren_codec::{FieldTable, ShortString};

use crate::queue::Queue;
pub use crate::spec::{ExchangeKind, ExchangeSpec};
use crate::stats::ExchangeStats;
use topic::TopicTrie;

/// Where a binding leads.
#[derive(Debug, Clone)]
pub enum Destination {
    Queue(Arc<Queue>),
    Exchange(Arc<Exchange>),
}

impl PartialEq for Destination {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Destination::Queue(a), Destination::Queue(b)) => Arc::ptr_eq(a, b),
            (Destination::Exchange(a), Destination::Exchange(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Destination {}

#[derive(Debug, Clone)]
pub struct Binding {
    pub destination: Destination,
    pub routing_key: ShortString,
    pub arguments: FieldTable,
}

impl Binding {
    fn same_as(&self, other: &Binding) -> bool {
        self.destination == other.destination
            && self.routing_key == other.routing_key
            && self.arguments == other.arguments
    }
}

#[derive(Default)]
struct Bindings {
    all: Vec<Binding>,
    direct: HashMap<ShortString, SmallVec<[Destination; 2]>>,
    topic: TopicTrie<Destination>,
}

pub struct Exchange {
    pub name: ShortString,
    /// The declared type.
    pub kind: ExchangeKind,
    /// How bindings match: the declared type, or a delayed-message exchange's
    /// `x-delayed-type`.
    pub route_kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    /// The `alternate-exchange` argument: where messages go that match no binding here.
    pub alternate: Option<String>,
    bindings: RwLock<Bindings>,
    deleted: AtomicBool,
    /// Counts of channels that have closed (live channels keep their own; see
    /// [`crate::stats`]), and of publishes from outside any channel.
    retired: Mutex<ExchangeStats>,
    /// The policy applied (its name) and the alternate exchange it names, if any.
    policy: RwLock<Option<(String, Option<String>)>>,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish()
    }
}

impl Exchange {
    pub fn new(spec: &ExchangeSpec) -> Self {
        let alternate = spec
            .arguments
            .get("alternate-exchange")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let route_kind = match spec.kind {
            ExchangeKind::DelayedMessage => spec
                .arguments
                .get("x-delayed-type")
                .and_then(|v| v.as_str())
                .and_then(ExchangeKind::parse)
                .filter(|k| *k != ExchangeKind::DelayedMessage)
                .unwrap_or(ExchangeKind::Direct),
            kind => kind,
        };
        Exchange {
            name: spec.name.clone(),
            kind: spec.kind,
            route_kind,
            durable: spec.durable,
            auto_delete: spec.auto_delete,
            internal: spec.internal,
            arguments: spec.arguments.clone(),
            alternate,
            bindings: RwLock::new(Bindings::default()),
            deleted: AtomicBool::new(false),
            retired: Mutex::new(ExchangeStats::default()),
            policy: RwLock::new(None),
        }
    }

    /// Applies a policy: its name, and its `alternate-exchange` (the argument wins over it).
    pub(crate) fn set_policy(&self, policy: Option<(String, Option<String>)>) {
        *self.policy.write() = policy;
    }

    /// The policy applied, if any.
    pub fn policy(&self) -> Option<String> {
        self.policy.read().as_ref().map(|(n, _)| n.clone())
    }

    /// Where unroutable messages go: the `alternate-exchange` argument, else the policy's.
    /// Read only when a message matches no binding.
    pub fn alternate_exchange(&self) -> Option<String> {
        self.alternate
            .clone()
            .or_else(|| self.policy.read().as_ref().and_then(|(_, ae)| ae.clone()))
    }

    pub(crate) fn retire_stats(&self, s: &ExchangeStats) {
        self.retired.lock().add(s);
    }

    /// The counts of closed channels and direct publishes; the registry adds the live ones.
    pub(crate) fn retired_stats(&self) -> ExchangeStats {
        *self.retired.lock()
    }

    pub fn spec(&self) -> ExchangeSpec {
        ExchangeSpec {
            name: self.name.clone(),
            kind: self.kind,
            durable: self.durable,
            auto_delete: self.auto_delete,
            internal: self.internal,
            arguments: self.arguments.clone(),
        }
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    pub fn has_bindings(&self) -> bool {
        !self.bindings.read().all.is_empty()
    }

    pub fn bindings(&self) -> Vec<Binding> {
        self.bindings.read().all.clone()
    }

    pub fn has_binding(&self, binding: &Binding) -> bool {
        self.bindings.read().all.iter().any(|x| x.same_as(binding))
    }

    /// Adds a binding; adding one that exists already is a no-op, as in RabbitMQ.
    pub fn bind(&self, binding: Binding) {
        let mut b = self.bindings.write();
        if b.all.iter().any(|x| x.same_as(&binding)) {
            return;
        }
        match self.route_kind {
            ExchangeKind::Direct => b
                .direct
                .entry(binding.routing_key.clone())
                .or_default()
                .push(binding.destination.clone()),
            ExchangeKind::Topic => {
                b.topic
                    .insert(binding.routing_key.as_str(), binding.destination.clone());
            }
            ExchangeKind::Fanout | ExchangeKind::Headers | ExchangeKind::DelayedMessage => {}
        }
        b.all.push(binding);
    }

    /// Removes a binding; returns whether it existed.
    pub fn unbind(&self, binding: &Binding) -> bool {
        let mut b = self.bindings.write();
        let Some(pos) = b.all.iter().position(|x| x.same_as(binding)) else {
            return false;
        };
        let removed = b.all.remove(pos);
        Self::unindex(self.route_kind, &mut b, &removed);
        true
    }

    fn unindex(kind: ExchangeKind, b: &mut Bindings, removed: &Binding) {
        match kind {
            ExchangeKind::Direct => {
                if let Some(dests) = b.direct.get_mut(&removed.routing_key) {
                    if let Some(i) = dests.iter().position(|d| *d == removed.destination) {
                        dests.remove(i);
                    }
                    if dests.is_empty() {
                        b.direct.remove(&removed.routing_key);
                    }
                }
            }
            ExchangeKind::Topic => {
                // Another binding with the same key and destination but other arguments still
                // needs the trie entry.
                let still_needed = b.all.iter().any(|x| {
                    x.routing_key == removed.routing_key && x.destination == removed.destination
                });
                if !still_needed {
                    b.topic
                        .remove(removed.routing_key.as_str(), &removed.destination);
                }
            }
            ExchangeKind::Fanout | ExchangeKind::Headers | ExchangeKind::DelayedMessage => {}
        }
    }

    /// Removes every binding to `dest`; returns them.
    pub fn unbind_destination(&self, dest: &Destination) -> Vec<Binding> {
        let mut b = self.bindings.write();
        let (gone, kept): (Vec<Binding>, Vec<Binding>) = std::mem::take(&mut b.all)
            .into_iter()
            .partition(|x| x.destination == *dest);
        b.all = kept;
        for removed in &gone {
            Self::unindex(self.route_kind, &mut b, removed);
        }
        gone
    }

    /// Calls `f` for each destination whose binding matches. Returns whether any matched.
    /// `headers` is asked for the message headers only by a headers exchange.
    pub fn route(
        &self,
        routing_key: &ShortString,
        headers: &mut dyn FnMut() -> Option<FieldTable>,
        f: &mut dyn FnMut(&Destination),
    ) -> bool {
        let b = self.bindings.read();
        let mut matched = false;
        match self.route_kind {
            ExchangeKind::Direct => {
                if let Some(dests) = b.direct.get(routing_key) {
                    for d in dests {
                        matched = true;
                        f(d);
                    }
                }
            }
            ExchangeKind::Fanout => {
                for x in &b.all {
                    matched = true;
                    f(&x.destination);
                }
            }
            ExchangeKind::Topic => {
                b.topic.for_each_match(routing_key.as_str(), &mut |d| {
                    matched = true;
                    f(d);
                });
            }
            ExchangeKind::Headers => {
                if b.all.is_empty() {
                    return false;
                }
                let h = headers();
                for x in &b.all {
                    if headers::headers_match(&x.arguments, h.as_ref()) {
                        matched = true;
                        f(&x.destination);
                    }
                }
            }
            // Never a route kind (see `Exchange::new`).
            ExchangeKind::DelayedMessage => {}
        }
        matched
    }
}
