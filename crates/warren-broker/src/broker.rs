//! The whole broker: vhosts and users. Connections log in here and get a vhost and the rights
//! they hold in it; from then on they talk to that vhost directly.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::auth::{Access, HashAlgorithm, PasswordHash, Permission, TopicPermission, User};
use crate::channel::{ChannelSnapshot, ConsumerSnapshot};
use crate::durability::Durability;
use crate::error::{BrokerError, EntityKind, Result};
use crate::exchange::Exchange;
use crate::limits::{self, Limits, UserLimits};
use crate::persistence::{Persistence, SharedPersistence};
use crate::policy::Policy;
use crate::registry::{Connection, ConnectionControl, Registry};
use crate::session::Session;
use crate::spec::ConnectionId;
use crate::spec::{ConnectionInfo, VHostMetadata};
use crate::stats::{
    Churn, ChurnStats, ConnectionCounters, ExchangeStats, MessageStats, SizeHistogram,
};
use crate::vhost::VHost;

/// The default user, as in RabbitMQ: guest/guest, administrator, full rights on `/`, and
/// allowed to log in only from the loopback interface.
pub const DEFAULT_USER: &str = "guest";
pub const DEFAULT_VHOST: &str = "/";

/// When a persistent message counts as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// On disk (fsynced) before it is confirmed.
    Fsync,
    /// Written to the OS, as RabbitMQ's classic queues do.
    PageCache,
}

/// A policy as the API and definitions give it (validated by [`Broker::set_policy`]).
#[derive(Debug, Clone, Copy)]
pub struct PolicyFields<'a> {
    pub vhost: &'a str,
    pub name: &'a str,
    pub pattern: &'a serde_json::Value,
    pub apply_to: Option<&'a serde_json::Value>,
    pub priority: Option<&'a serde_json::Value>,
    pub definition: &'a serde_json::Value,
}

/// What a new data directory starts with (RabbitMQ's `default_user`, `default_pass`,
/// `default_vhost`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    pub user: String,
    pub password: String,
    pub vhost: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            user: DEFAULT_USER.into(),
            password: "guest".into(),
            vhost: DEFAULT_VHOST.into(),
        }
    }
}

pub struct Broker {
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    users: RwLock<HashMap<String, User>>,
    /// (user, vhost) → rights.
    permissions: RwLock<HashMap<(String, String), Permission>>,
    /// (user, vhost, exchange) → topic rights; ordered, for listing.
    topic_permissions: RwLock<BTreeMap<(String, String, String), TopicPermission>>,
    /// Users that may connect only from loopback addresses (`loopback_users` in RabbitMQ).
    loopback_users: RwLock<Vec<String>>,
    /// Open connections allowed on the node (`connection_max`; 0: no limit).
    connection_max: AtomicU64,
    next_connection: AtomicU64,
    persistence: SharedPersistence,
    registry: Registry,
    churn: Arc<Churn>,
    user_limits: Arc<UserLimits>,
}

/// Message counts summed over channels (live and closed) and direct publishes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub messages: MessageStats,
    pub sizes: SizeHistogram,
    /// Live channels that have published (RabbitMQ's `publishers` gauge).
    pub publishers: usize,
}

impl Default for Broker {
    fn default() -> Self {
        Self::new()
    }
}

impl Broker {
    /// A broker with the default vhost and the guest user.
    pub fn new() -> Self {
        Self::with_persistence(None)
    }

    /// A broker keeping durable things in `persistence` (None: in memory only), with the
    /// users and permissions recorded there. The default vhost, the guest user and guest's
    /// rights on it are created (and recorded) only if the store has never held them: always
    /// in memory, once per data directory otherwise.
    pub fn with_persistence(persistence: SharedPersistence) -> Self {
        Self::with_defaults(persistence, &Defaults::default())
    }

    /// As [`Broker::with_persistence`], with `defaults` for a new data directory.
    pub fn with_defaults(persistence: SharedPersistence, defaults: &Defaults) -> Self {
        let mut b = Broker::empty();
        b.persistence = persistence;
        // Users and permissions are kept with the topology; the defaults are created only in
        // a new data directory, as RabbitMQ does, so a deleted guest stays deleted.
        if !b.restore_accounts() {
            if let Err(e) = b.create_defaults(defaults) {
                tracing::error!(error = %e, "cannot record the default user and vhost");
            }
        }
        b.loopback_users.write().push(DEFAULT_USER.into());
        b
    }

    /// Brings back the recorded users and permissions; returns whether the defaults were
    /// created in this data directory before (false without persistence).
    fn restore_accounts(&self) -> bool {
        let Some(p) = &self.persistence else {
            return false;
        };
        let accounts = p.accounts();
        let mut users = self.users.write();
        for u in accounts.users {
            users.insert(u.name.clone(), u);
        }
        let mut permissions = self.permissions.write();
        for (user, vhost, permission) in accounts.permissions {
            permissions.insert((user, vhost), permission);
        }
        let mut topics = self.topic_permissions.write();
        for (user, vhost, t) in accounts.topic_permissions {
            topics.insert((user, vhost, t.exchange.clone()), t);
        }
        accounts.defaults_created
    }

    /// The default vhost, the default user (an administrator) and its full rights there;
    /// recorded, with the fact that they were created, when the broker persists.
    fn create_defaults(&self, d: &Defaults) -> Result<()> {
        self.add_vhost(&d.vhost)?;
        self.add_user(
            &d.user,
            Some(PasswordHash::new(&d.password, HashAlgorithm::Sha256)),
            vec!["administrator".into()],
        )?;
        self.set_permission(&d.user, &d.vhost, Permission::full())?;
        if let Some(p) = &self.persistence {
            p.mark_defaults_created()?;
            tracing::info!(
                user = %d.user,
                vhost = %d.vhost,
                "new data directory: created the default user and vhost"
            );
        }
        Ok(())
    }

    /// Caps the open connections on the node (RabbitMQ's `connection_max`; None: no limit).
    pub fn set_connection_max(&self, max: Option<u64>) {
        self.connection_max
            .store(max.map_or(0, |m| m.max(1)), Ordering::Relaxed);
    }

    /// Replaces the users that may log in only from loopback addresses (RabbitMQ's
    /// `loopback_users`; `guest` by default).
    pub fn set_loopback_users(&self, users: Vec<String>) {
        *self.loopback_users.write() = users;
    }

    /// A broker with no vhosts and no users (definitions fill it in).
    pub fn empty() -> Self {
        let churn = Arc::new(Churn::default());
        let user_limits = Arc::new(UserLimits::default());
        Broker {
            vhosts: RwLock::new(HashMap::new()),
            users: RwLock::new(HashMap::new()),
            permissions: RwLock::new(HashMap::new()),
            topic_permissions: RwLock::new(BTreeMap::new()),
            loopback_users: RwLock::new(Vec::new()),
            connection_max: AtomicU64::new(0),
            next_connection: AtomicU64::new(1),
            persistence: None,
            registry: Registry::new(churn.clone(), user_limits.clone()),
            churn,
            user_limits,
        }
    }

    pub fn next_connection_id(&self) -> ConnectionId {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    /// Creates a vhost (recorded first when the broker persists); an existing one is
    /// returned as it is.
    pub fn add_vhost(&self, name: &str) -> Result<Arc<VHost>> {
        let mut vhosts = self.vhosts.write();
        if let Some(v) = vhosts.get(name) {
            return Ok(v.clone());
        }
        if let Some(p) = &self.persistence {
            p.save_vhost(name, &VHostMetadata::default())?;
        }
        let v = VHost::new(name, self.persistence.clone(), self.churn.clone());
        vhosts.insert(name.to_owned(), v.clone());
        Ok(v)
    }

    /// Creates a vhost or changes its description, tags and default queue type (durably when
    /// the broker persists). The default queue type must be one Warren declares (classic,
    /// quorum, stream). Returns whether the vhost is new.
    pub fn put_vhost(&self, name: &str, metadata: VHostMetadata) -> Result<bool> {
        if let Some(t) = &metadata.default_queue_type {
            if crate::queue_args::QueueType::parse(t).is_none() {
                return Err(BrokerError::Invalid(format!(
                    "default queue type '{t}' is not one of classic, quorum, stream"
                )));
            }
        }
        let existed = self.vhost(name).is_some();
        let v = self.add_vhost(name)?;
        if let Some(p) = &self.persistence {
            p.save_vhost(name, &metadata)?;
        }
        v.set_metadata(metadata);
        Ok(!existed)
    }

    /// Deletes a vhost with everything in it: its connections are closed (the clients are
    /// told), its queues and exchanges deleted with their records and messages, and the
    /// permissions on it removed. Returns whether it existed.
    pub fn delete_vhost(&self, name: &str) -> Result<bool> {
        let Some(v) = self.vhost(name) else {
            return Ok(false);
        };
        if let Some(p) = &self.persistence {
            p.delete_vhost(name)?;
        }
        self.vhosts.write().remove(name);
        for c in self.registry.all() {
            if c.info.vhost == name {
                c.close("vhost deleted");
            }
        }
        v.delete_contents();
        let users: Vec<String> = self
            .permissions
            .read()
            .keys()
            .filter(|(_, vh)| vh == name)
            .map(|(u, _)| u.clone())
            .collect();
        for u in users {
            self.clear_permission(&u, name)?;
        }
        let users: Vec<String> = self
            .topic_permissions
            .read()
            .keys()
            .filter(|(_, vh, _)| vh == name)
            .map(|(u, _, _)| u.clone())
            .collect();
        for u in users {
            self.clear_topic_permissions(&u, name, None)?;
        }
        Ok(true)
    }

    /// Messages the log holds live (None without a disk): stored persistent messages and
    /// paged-out transient ones.
    pub fn stored_messages(&self) -> Option<u64> {
        self.persistence
            .as_ref()
            .map(|p| p.store.stats().live_messages)
    }

    /// Whether the message log found its disk full and refuses new persistent messages until
    /// space returns.
    pub fn log_full(&self) -> bool {
        self.persistence
            .as_ref()
            .is_some_and(|p| p.store.is_suspended())
    }

    /// Sets a policy (or operator policy) from its API fields, validated as RabbitMQ does;
    /// it applies at once to the vhost's queues and exchanges. Returns whether it is new.
    pub fn set_policy(&self, operator: bool, p: PolicyFields<'_>) -> Result<bool> {
        let v = self.vhost(p.vhost).ok_or_else(|| BrokerError::NotFound {
            kind: EntityKind::VHost,
            name: p.vhost.to_owned(),
            vhost: p.vhost.to_owned(),
        })?;
        let policy = Policy::new(
            p.vhost,
            p.name,
            p.pattern,
            p.apply_to,
            p.priority,
            p.definition,
            operator,
        )?;
        v.set_policy(policy, operator)
    }

    /// Removes a policy; returns whether it existed.
    pub fn delete_policy(&self, operator: bool, vhost: &str, name: &str) -> Result<bool> {
        match self.vhost(vhost) {
            Some(v) => v.delete_policy(name, operator),
            None => Ok(false),
        }
    }

    /// The policies (or operator policies) of one vhost, or of all.
    pub fn policies(&self, operator: bool, vhost: Option<&str>) -> Vec<Policy> {
        let mut vs = self.vhosts();
        vs.sort_by(|a, b| a.name.cmp(&b.name));
        vs.iter()
            .filter(|v| vhost.is_none_or(|n| n == &*v.name))
            .flat_map(|v| v.policies(operator))
            .collect()
    }

    /// How far the log is on disk.
    pub fn durability(&self) -> Durability {
        Durability::new(self.persistence.as_ref().map(|p| p.store.clone()))
    }

    /// Opens (or creates) the broker's data in `dir` and brings back what it held: durable
    /// vhosts, exchanges, queues and bindings, and the persistent messages of durable queues.
    pub fn open(dir: &std::path::Path, sync: SyncMode) -> Result<Self> {
        Self::open_with(dir, sync, &Defaults::default())
    }

    /// As [`Broker::open`], with `defaults` for a new data directory.
    pub fn open_with(dir: &std::path::Path, sync: SyncMode, defaults: &Defaults) -> Result<Self> {
        let meta = warren_store::MetaStore::open(dir.join("meta")).map_err(|e| {
            BrokerError::storage(&format!("cannot open {}", dir.join("meta").display()), e)
        })?;
        let mut config = warren_store::StoreConfig::new(dir.join("log"));
        // Mostly-dead segments (one queue drained, another still long) are rewritten in the
        // background so that the disk is given back.
        config.compact_interval = Some(std::time::Duration::from_secs(30));
        config.sync = match sync {
            SyncMode::Fsync => warren_store::SyncMode::Fsync,
            SyncMode::PageCache => warren_store::SyncMode::PageCache,
        };
        let (store, recovery) = warren_store::Store::open(config).map_err(|e| {
            BrokerError::storage(&format!("cannot open {}", dir.join("log").display()), e)
        })?;
        if let Some(t) = &recovery.truncated {
            tracing::warn!(segment = t.segment, offset = t.offset, bytes = t.bytes_discarded, reason = %t.reason,
                "the log had a damaged tail; it was cut at the last good record");
        }
        let p = Arc::new(Persistence::new(
            store,
            meta,
            recovery.queues.keys().copied(),
        ));
        let broker = Broker::with_defaults(Some(p.clone()), defaults);
        let topology = p.topology();
        for (v, metadata) in &topology.vhosts {
            broker.add_vhost(v)?.set_metadata(metadata.clone());
        }
        for (vhost, spec) in &topology.exchanges {
            broker.add_vhost(vhost)?.restore_exchange(spec);
        }
        for (is_user, owner, limits) in &topology.limits {
            if *is_user {
                broker.user_limits.set(owner, limits.clone());
            } else if let Some(v) = broker.vhost(owner) {
                v.restore_limits(limits.clone());
            }
        }
        for (operator, json) in &topology.policies {
            match Policy::from_json(json, *operator) {
                Ok(p) => broker.add_vhost(&p.vhost)?.restore_policy(p, *operator),
                Err(e) => tracing::warn!(error = %e, "a recorded policy is invalid; skipping it"),
            }
        }
        let mut by_id = std::collections::HashMap::new();
        for q in &topology.queues {
            let queue = broker.add_vhost(&q.vhost)?.restore_queue(q.id, &q.spec);
            by_id.insert(q.id, queue);
        }
        for b in &topology.bindings {
            if let Err(e) = broker.add_vhost(&b.vhost)?.restore_binding(b) {
                tracing::warn!(error = %e, source = %b.source, destination = %b.destination,
                    "a recorded binding refers to something missing; dropping it");
                if let Err(e) = p.delete_binding(b) {
                    tracing::warn!(error = %e, "cannot drop the binding's record");
                }
            }
        }
        let mut recovered_queues = recovery.queues;
        for (vhost, id) in &topology.delayed {
            let messages = recovered_queues.remove(id).unwrap_or_default();
            broker.add_vhost(vhost)?.restore_delayed(*id, &messages);
        }
        let mut restored = 0u64;
        for (id, messages) in recovered_queues {
            let Some(queue) = by_id.get(&id) else {
                // The queue's record is gone (deleted before a crash): so are its messages.
                let _ = p.store.drop_queue(id);
                continue;
            };
            restored += queue.restore(&messages);
        }
        tracing::info!(
            queues = by_id.len(),
            messages = restored,
            from_checkpoint = recovery.from_checkpoint,
            replayed = recovery.replayed_records,
            "recovered durable state"
        );
        Ok(broker)
    }

    /// Flushes and closes the log (a clean shutdown leaves a checkpoint, so the next start is
    /// quick) and the topology store, and releases the data directory: it can be opened again
    /// at once, in this process too, even while queues or connections still hold parts of
    /// this broker (they get errors from the store from now on). Call it once the server has
    /// stopped.
    pub fn close(&self) {
        if let Some(p) = &self.persistence {
            if let Err(e) = p.store.close() {
                tracing::warn!(error = %e, "closing the message log at shutdown failed");
            }
            p.meta.close();
        }
    }

    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.read().get(name).cloned()
    }

    pub fn vhosts(&self) -> Vec<Arc<VHost>> {
        self.vhosts.read().values().cloned().collect()
    }

    /// Adds or replaces a user, durably when the broker persists. Returns whether the user
    /// is new.
    pub fn add_user(
        &self,
        name: &str,
        password: Option<PasswordHash>,
        tags: Vec<String>,
    ) -> Result<bool> {
        let user = User {
            name: name.to_owned(),
            password,
            tags,
        };
        // The record is written under the lock, so the disk and the map agree on the last
        // writer; user changes are rare.
        let mut users = self.users.write();
        if let Some(p) = &self.persistence {
            p.save_user(&user)?;
        }
        Ok(users.insert(name.to_owned(), user).is_none())
    }

    /// Sets a user's rights in a vhost, durably when the broker persists. Both must exist.
    /// Returns whether the user had no rights there before.
    pub fn set_permission(&self, user: &str, vhost: &str, permission: Permission) -> Result<bool> {
        self.check_user_and_vhost(user, vhost)?;
        let mut permissions = self.permissions.write();
        if let Some(p) = &self.persistence {
            p.save_permission(user, vhost, &permission)?;
        }
        Ok(permissions
            .insert((user.to_owned(), vhost.to_owned()), permission)
            .is_none())
    }

    /// NotFound unless both exist (rights are given on something).
    fn check_user_and_vhost(&self, user: &str, vhost: &str) -> Result<()> {
        if !self.users.read().contains_key(user) {
            return Err(BrokerError::NotFound {
                kind: EntityKind::User,
                name: user.to_owned(),
                vhost: vhost.to_owned(),
            });
        }
        if self.vhost(vhost).is_none() {
            return Err(BrokerError::NotFound {
                kind: EntityKind::VHost,
                name: vhost.to_owned(),
                vhost: vhost.to_owned(),
            });
        }
        Ok(())
    }

    pub fn user(&self, name: &str) -> Option<User> {
        self.users.read().get(name).cloned()
    }

    /// Every user, by name.
    pub fn users(&self) -> Vec<User> {
        let mut v: Vec<User> = self.users.read().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Every (user, vhost, rights), by user then vhost.
    pub fn permissions(&self) -> Vec<(String, String, Permission)> {
        let mut v: Vec<(String, String, Permission)> = self
            .permissions
            .read()
            .iter()
            .map(|((u, vh), p)| (u.clone(), vh.clone(), p.clone()))
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    }

    /// A user's rights in a vhost.
    pub fn permission(&self, user: &str, vhost: &str) -> Option<Permission> {
        self.permissions
            .read()
            .get(&(user.to_owned(), vhost.to_owned()))
            .cloned()
    }

    /// Deletes a user and their permissions (`rabbitmqctl delete_user`), durably when the
    /// broker persists; returns whether the user existed. Connections already open keep
    /// running; new logins are refused.
    pub fn delete_user(&self, name: &str) -> Result<bool> {
        let mut users = self.users.write();
        let mut permissions = self.permissions.write();
        let vhosts: Vec<String> = permissions
            .keys()
            .filter(|(u, _)| u == name)
            .map(|(_, v)| v.clone())
            .collect();
        for vhost in vhosts {
            if let Some(p) = &self.persistence {
                p.delete_permission(name, &vhost)?;
            }
            permissions.remove(&(name.to_owned(), vhost));
        }
        let mut topics = self.topic_permissions.write();
        let keys: Vec<_> = topics.keys().filter(|k| k.0 == name).cloned().collect();
        for k in keys {
            if let Some(p) = &self.persistence {
                p.delete_topic_permission(&k.0, &k.1, &k.2)?;
            }
            topics.remove(&k);
        }
        let existed = users.contains_key(name);
        if let Some(p) = &self.persistence {
            p.delete_user(name)?;
            p.save_limits("user_limits", name, &Limits::new())?;
        }
        users.remove(name);
        self.user_limits.forget(name);
        Ok(existed)
    }

    /// Removes a user's rights in a vhost (`rabbitmqctl clear_permissions`), durably when the
    /// broker persists; returns whether there were any.
    pub fn clear_permission(&self, user: &str, vhost: &str) -> Result<bool> {
        let mut permissions = self.permissions.write();
        if let Some(p) = &self.persistence {
            p.delete_permission(user, vhost)?;
        }
        Ok(permissions
            .remove(&(user.to_owned(), vhost.to_owned()))
            .is_some())
    }

    /// Sets a user's topic rights on one exchange of a vhost (`rabbitmqctl
    /// set_topic_permissions`), durably when the broker persists. The user and vhost must
    /// exist. Open connections keep the rules they started with, as for permissions.
    pub fn set_topic_permission(
        &self,
        user: &str,
        vhost: &str,
        permission: TopicPermission,
    ) -> Result<bool> {
        self.check_user_and_vhost(user, vhost)?;
        let mut topics = self.topic_permissions.write();
        if let Some(p) = &self.persistence {
            p.save_topic_permission(user, vhost, &permission)?;
        }
        let key = (
            user.to_owned(),
            vhost.to_owned(),
            permission.exchange.clone(),
        );
        Ok(topics.insert(key, permission).is_none())
    }

    /// Removes a user's topic rights in a vhost, on one exchange or (None) on all; returns
    /// whether there were any.
    pub fn clear_topic_permissions(
        &self,
        user: &str,
        vhost: &str,
        exchange: Option<&str>,
    ) -> Result<bool> {
        let mut topics = self.topic_permissions.write();
        let keys: Vec<_> = topics
            .keys()
            .filter(|(u, v, x)| u == user && v == vhost && exchange.is_none_or(|e| e == x))
            .cloned()
            .collect();
        for k in &keys {
            if let Some(p) = &self.persistence {
                p.delete_topic_permission(&k.0, &k.1, &k.2)?;
            }
            topics.remove(k);
        }
        Ok(!keys.is_empty())
    }

    /// Every (user, vhost, topic rights), by user, vhost, exchange.
    pub fn topic_permissions(&self) -> Vec<(String, String, TopicPermission)> {
        self.topic_permissions
            .read()
            .iter()
            .map(|((u, v, _), t)| (u.clone(), v.clone(), t.clone()))
            .collect()
    }

    /// Checks a username and password. `from_loopback` says whether the peer connected over
    /// a loopback address (guest may only log in that way).
    pub fn authenticate(
        &self,
        username: &str,
        password: &str,
        from_loopback: bool,
    ) -> Result<User> {
        // RabbitMQ's text; the details (which user, why) go to the log, not to the client.
        let refused = || {
            BrokerError::AuthenticationFailed(
                "Login was refused using authentication mechanism PLAIN. For details see the \
                 broker logfile."
                    .into(),
            )
        };
        let user = self
            .users
            .read()
            .get(username)
            .cloned()
            .ok_or_else(refused)?;
        let ok = user.password.as_ref().is_some_and(|h| h.verify(password));
        if !ok {
            return Err(refused());
        }
        if !from_loopback && self.loopback_users.read().iter().any(|u| u == username) {
            return Err(BrokerError::AuthenticationFailed(format!(
                "User '{username}' can only connect via localhost"
            )));
        }
        Ok(user)
    }

    /// SASL EXTERNAL: the user a verified client certificate names. The certificate is the
    /// proof, so no password is checked, only that the user exists (and, for a loopback-only
    /// user, that the peer is local), as RabbitMQ's `rabbit_auth_mechanism_ssl` with the
    /// internal user database does.
    pub fn authenticate_external(&self, username: &str, from_loopback: bool) -> Result<User> {
        let user = self.users.read().get(username).cloned().ok_or_else(|| {
            BrokerError::AuthenticationFailed(format!(
                "user '{username}' named by the client certificate does not exist"
            ))
        })?;
        if !from_loopback && self.loopback_users.read().iter().any(|u| u == username) {
            return Err(BrokerError::AuthenticationFailed(format!(
                "User '{username}' can only connect via localhost"
            )));
        }
        Ok(user)
    }

    /// `connection.open`: a session for `user` in `vhost` on connection `conn` (0 for none),
    /// or 530 NOT_ALLOWED.
    pub fn open_session(&self, user: &User, vhost: &str, conn: ConnectionId) -> Result<Session> {
        if conn != 0 {
            self.check_connection_limits(&user.name, vhost)?;
        }
        let (v, access) = self.open_vhost(user, vhost)?;
        Ok(Session::new(v, access, conn))
    }

    /// RabbitMQ's order at `connection.open`: the node's connection limit, the vhost's, then
    /// the user's (each counts the other open connections).
    fn check_connection_limits(&self, user: &str, vhost: &str) -> Result<()> {
        let node_max = self.connection_max.load(Ordering::Relaxed);
        if node_max != 0 && self.registry.open_count() as u64 >= node_max {
            return Err(BrokerError::NotAllowed(format!(
                "connection refused: node connection limit ({node_max}) is reached"
            )));
        }
        let Some(v) = self.vhost(vhost) else {
            return Err(BrokerError::NotAllowed(format!("vhost {vhost} not found")));
        };
        let (in_vhost, by_user) = self.registry.count(vhost, user);
        if let Some(limit) = limits::get(&v.limits(), "max-connections") {
            if in_vhost >= limit {
                return Err(BrokerError::NotAllowed(format!(
                    "access to vhost '{vhost}' refused for user '{user}': connection limit ({limit}) is reached"
                )));
            }
        }
        if let Some(limit) = limits::get(&self.user_limits.get(user), "max-connections") {
            if by_user >= limit {
                return Err(BrokerError::NotAllowed(format!(
                    "connection refused for user '{user}': user connection limit ({limit}) is reached"
                )));
            }
        }
        Ok(())
    }

    /// Sets (Some) or clears (None) one of a vhost's limits (validated as RabbitMQ does).
    pub fn set_vhost_limit(
        &self,
        vhost: &str,
        name: &str,
        value: Option<&serde_json::Value>,
    ) -> Result<()> {
        let v = self.vhost(vhost).ok_or_else(|| BrokerError::NotFound {
            kind: EntityKind::VHost,
            name: vhost.to_owned(),
            vhost: vhost.to_owned(),
        })?;
        let value = value
            .map(|x| limits::validate(limits::Scope::VHost, name, x))
            .transpose()?;
        v.set_limit(name, value)
    }

    /// Sets (Some) or clears (None) one of a user's limits.
    pub fn set_user_limit(
        &self,
        user: &str,
        name: &str,
        value: Option<&serde_json::Value>,
    ) -> Result<()> {
        let _users = self.users.write();
        if !_users.contains_key(user) {
            return Err(BrokerError::NotFound {
                kind: EntityKind::User,
                name: user.to_owned(),
                vhost: String::new(),
            });
        }
        let value = value
            .map(|x| limits::validate(limits::Scope::User, name, x))
            .transpose()?;
        let mut next = self.user_limits.get(user);
        match value {
            Some(v) => next.insert(name.to_owned(), v),
            None => next.remove(name),
        };
        if let Some(p) = &self.persistence {
            p.save_limits("user_limits", user, &next)?;
        }
        self.user_limits.set(user, next);
        Ok(())
    }

    /// A user's limits.
    pub fn user_limits(&self, user: &str) -> Limits {
        self.user_limits.get(user)
    }

    /// Every user with limits, by name.
    pub fn all_user_limits(&self) -> Vec<(String, Limits)> {
        self.user_limits.all()
    }

    pub(crate) fn open_vhost(&self, user: &User, vhost: &str) -> Result<(Arc<VHost>, Access)> {
        let v = self
            .vhost(vhost)
            .ok_or_else(|| BrokerError::NotAllowed(format!("vhost {vhost} not found")))?;
        let permission = self
            .permissions
            .read()
            .get(&(user.name.clone(), vhost.to_owned()))
            .cloned()
            .ok_or_else(|| {
                BrokerError::NotAllowed(format!(
                    "access to vhost '{vhost}' refused for user '{}'",
                    user.name
                ))
            })?;
        let topics = self
            .topic_permissions
            .read()
            .iter()
            .filter(|((u, vh, _), _)| *u == user.name && vh == vhost)
            .map(|(_, t)| t.compile(&user.name, vhost))
            .collect::<Result<Arc<[_]>>>()?;
        Ok((
            v,
            Access {
                user: user.name.clone(),
                vhost: vhost.to_owned(),
                permission,
                topics,
            },
        ))
    }

    /// Time-driven work (the broker has no timer of its own): expires messages and queues,
    /// and releases delayed messages that are due. The server calls this periodically with
    /// the wall-clock time in ms since the Unix epoch ([`crate::clock::now_ms`]); tests may
    /// pass another time.
    pub fn tick(&self, now: u64) {
        for v in self.vhosts() {
            v.tick(now);
        }
    }

    /// Registers an open connection in `session`'s vhost (the management API lists it and
    /// may close it through `control`); `counters` are the connection's byte counts, which
    /// its front end keeps.
    pub fn register_connection(
        &self,
        session: &Session,
        info: ConnectionInfo,
        counters: Arc<ConnectionCounters>,
        control: Box<dyn ConnectionControl>,
    ) -> Arc<Connection> {
        self.registry.add(
            session.connection(),
            info,
            counters,
            control,
            session.vhost().clone(),
        )
    }

    /// A connection ended: it leaves the registry, and its exclusive queues go with it.
    pub fn connection_closed(&self, conn: ConnectionId) {
        self.registry.remove(conn);
        for v in self.vhosts() {
            v.remove_exclusive_queues(conn);
        }
    }

    /// Live connections, in the order they opened.
    pub fn connections(&self) -> Vec<Arc<Connection>> {
        self.registry.all()
    }

    pub fn connection(&self, name: &str) -> Result<Arc<Connection>> {
        self.registry.by_name(name)
    }

    /// Closes the connection called `name` (RabbitMQ's `peer -> local` name); its client is
    /// told `reason` (AMQP: 320 CONNECTION_FORCED).
    pub fn close_connection(&self, name: &str, reason: &str) -> Result<()> {
        self.registry.by_name(name)?.close(reason);
        Ok(())
    }

    pub fn channels(&self) -> Vec<ChannelSnapshot> {
        self.registry.channels()
    }

    pub fn consumers(&self) -> Vec<ConsumerSnapshot> {
        self.registry.consumers()
    }

    /// Objects opened and closed since the start.
    pub fn churn(&self) -> ChurnStats {
        self.churn.snapshot()
    }

    /// Message counts for one vhost (or all: None), summed over every channel that ever
    /// published or consumed there.
    pub fn totals(&self, vhost: Option<&str>) -> Totals {
        let (mut messages, mut sizes, publishers) = self.registry.live_stats(vhost);
        for v in self.vhosts() {
            if vhost.is_some_and(|n| n != &*v.name) {
                continue;
            }
            let (m, s) = v.retired_stats();
            messages.add(&m);
            sizes.add(&s);
        }
        Totals {
            messages,
            sizes,
            publishers,
        }
    }

    /// An exchange's `publish_in` / `publish_out`, over every channel that published to it.
    pub fn exchange_stats(&self, x: &Arc<Exchange>) -> ExchangeStats {
        let mut s = x.retired_stats();
        for c in self.registry.all() {
            for ch in c.channels() {
                if let Some(e) = ch.exchange_stats(x) {
                    s.add(&e);
                }
            }
        }
        s
    }
}
