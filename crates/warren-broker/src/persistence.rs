//! What the broker keeps on disk, and how it comes back: durable topology in a [`MetaStore`],
//! persistent messages of durable queues in the [`Store`]'s log.
//!
//! The store knows nothing of AMQP: here the broker turns its records into bytes. Topology
//! records and message payloads are AMQP field tables and plain length-prefixed fields, so
//! the codec that reads the wire also reads the disk.
//!
//! Durability: `MetaStore` calls fsync before returning, so a `declare-ok` sent after
//! `persist_*` returns describes something on disk. Message publishes return the log position
//! (LSN) to wait for before confirming.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tracing::warn;
use warren_codec::{FieldTable, FieldValue, LongString, Reader, ShortString};
use warren_store::{MetaStore, Store};

use crate::auth::{HashAlgorithm, PasswordHash, Permission, TopicPermission, User};
use crate::durability::Ticket;
use crate::error::BrokerError;
use crate::message::Message;
use crate::spec::{ExchangeKind, ExchangeSpec, QueueSpec, VHostMetadata};

/// The broker's handle on its disk.
pub struct Persistence {
    pub store: Store,
    pub meta: MetaStore,
    next_queue_id: AtomicU64,
}

impl std::fmt::Debug for Persistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistence").finish()
    }
}

/// A durable queue as recorded.
#[derive(Debug, Clone)]
pub struct QueueRecord {
    pub vhost: String,
    pub id: u64,
    pub spec: QueueSpec,
}

/// A durable binding as recorded.
#[derive(Debug, Clone)]
pub struct BindingRecord {
    pub vhost: String,
    pub source: String,
    pub destination: String,
    pub to_queue: bool,
    pub routing_key: ShortString,
    pub arguments: FieldTable,
}

/// Everything the meta store held at start-up.
#[derive(Debug, Default)]
pub struct Topology {
    pub vhosts: Vec<(String, VHostMetadata)>,
    pub exchanges: Vec<(String, ExchangeSpec)>,
    pub queues: Vec<QueueRecord>,
    pub bindings: Vec<BindingRecord>,
    /// (vhost, log id) of each vhost's delayed messages.
    pub delayed: Vec<(String, u64)>,
    /// Policies as their JSON records, and whether each is an operator policy.
    pub policies: Vec<(bool, serde_json::Value)>,
    /// (is a user's, vhost or user name, limits).
    pub limits: Vec<(bool, String, crate::limits::Limits)>,
}

fn text(v: &str) -> FieldValue {
    FieldValue::LongString(LongString::from(v))
}

fn encode_table(t: &FieldTable) -> Vec<u8> {
    let mut buf = BytesMut::with_capacity(t.encoded_len());
    t.encode(&mut buf);
    buf.to_vec()
}

fn decode_table(bytes: &[u8]) -> Option<FieldTable> {
    FieldTable::decode(&mut Reader::new(Bytes::copy_from_slice(bytes))).ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A key that names a record by the fields that identify it, whatever characters they hold.
fn key(kind: &str, parts: &[&str]) -> String {
    let t = FieldTable(
        parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    ShortString::try_from(i.to_string()).unwrap_or_default(),
                    text(p),
                )
            })
            .collect(),
    );
    format!("{kind}/{}", hex(&encode_table(&t)))
}

fn get_text(t: &FieldTable, k: &str) -> Option<String> {
    t.get(k).and_then(FieldValue::as_str).map(str::to_owned)
}

fn get_bool(t: &FieldTable, k: &str) -> bool {
    t.get(k).and_then(FieldValue::as_bool).unwrap_or(false)
}

fn get_table(t: &FieldTable, k: &str) -> FieldTable {
    match t.get(k) {
        Some(FieldValue::Table(t)) => t.clone(),
        _ => FieldTable::new(),
    }
}

/// A message as stored: exchange, routing key, raw properties, body (the layout
/// [`Message`]'s [`warren_store::Payload`] writes).
pub fn encode_message(m: &Message) -> Bytes {
    use warren_store::Payload;
    let mut buf = Vec::with_capacity(m.len());
    m.write_head(&mut buf);
    buf.extend_from_slice(m.tail());
    Bytes::from(buf)
}

/// The store writes a persistent message straight from the `Message` (on its writer thread)
/// in [`encode_message`]'s layout, so publishing neither allocates nor copies it.
impl warren_store::Payload for Message {
    fn len(&self) -> usize {
        2 + self.exchange.len()
            + self.routing_key.len()
            + 4
            + self.raw_properties.len()
            + self.body.len()
    }

    fn write_head(&self, out: &mut Vec<u8>) {
        out.push(self.exchange.len() as u8);
        out.extend_from_slice(self.exchange.as_bytes());
        out.push(self.routing_key.len() as u8);
        out.extend_from_slice(self.routing_key.as_bytes());
        out.extend_from_slice(&(self.raw_properties.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.raw_properties);
    }

    fn tail(&self) -> &[u8] {
        &self.body
    }
}

/// The inverse of [`encode_message`]; the body is a slice of `payload` (no copy).
pub fn decode_message(id: u64, payload: Bytes) -> Option<Message> {
    let mut r = Reader::new(payload);
    let exchange = ShortString::decode(&mut r).ok()?;
    let routing_key = ShortString::decode(&mut r).ok()?;
    let props_len = r.get_u32().ok()? as usize;
    let raw_properties = r.take(props_len).ok()?;
    let body = r.rest();
    let props = warren_codec::BasicProperties::decode(raw_properties.clone()).ok()?;
    let m = Message::new(exchange, routing_key, raw_properties, body, &props);
    m.set_id(id);
    Some(m)
}

impl Persistence {
    /// `log_queues` are the queue ids the log holds messages for: new ids start above them
    /// and above every recorded queue.
    pub fn new(store: Store, meta: MetaStore, log_queues: impl Iterator<Item = u64>) -> Self {
        let max_logged = log_queues.max().unwrap_or(0) as i64;
        let max_queue = meta
            .iter()
            .into_iter()
            .filter(|(k, _)| k.starts_with("queue/") || k.starts_with("delayed/"))
            .filter_map(|(_, v)| decode_table(&v))
            .filter_map(|t| t.get("id").and_then(FieldValue::as_i64))
            .max()
            .unwrap_or(0)
            .max(max_logged);
        Persistence {
            store,
            meta,
            next_queue_id: AtomicU64::new(max_queue as u64 + 1),
        }
    }

    pub fn next_queue_id(&self) -> u64 {
        self.next_queue_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Durability: returns once the record is fsynced; an error means it is not on disk and
    /// the change it describes must not be reported as done.
    fn put(&self, key: &str, t: &FieldTable) -> Result<(), BrokerError> {
        self.meta
            .put(key, &encode_table(t))
            .map_err(|e| BrokerError::storage("cannot record the change", e))
    }

    fn delete(&self, key: &str) -> Result<(), BrokerError> {
        self.meta
            .delete(key)
            .map_err(|e| BrokerError::storage("cannot record the change", e))
    }

    pub fn save_vhost(&self, name: &str, m: &VHostMetadata) -> Result<(), BrokerError> {
        let mut t = FieldTable::from([
            ("name", text(name)),
            ("description", text(&m.description)),
            (
                "tags",
                FieldValue::Array(m.tags.iter().map(|t| text(t)).collect()),
            ),
        ]);
        if let Some(q) = &m.default_queue_type {
            t.insert(ShortString::from_static("default_queue_type"), text(q));
        }
        self.put(&key("vhost", &[name]), &t)
    }

    /// Records a policy (its JSON, as the API shows it).
    pub fn save_policy(
        &self,
        operator: bool,
        vhost: &str,
        name: &str,
        json: &serde_json::Value,
    ) -> Result<(), BrokerError> {
        let kind = if operator {
            "operator_policy"
        } else {
            "policy"
        };
        let t = FieldTable::from([
            ("vhost", text(vhost)),
            ("name", text(name)),
            ("json", text(&json.to_string())),
        ]);
        self.put(&key(kind, &[vhost, name]), &t)
    }

    pub fn delete_policy(
        &self,
        operator: bool,
        vhost: &str,
        name: &str,
    ) -> Result<(), BrokerError> {
        let kind = if operator {
            "operator_policy"
        } else {
            "policy"
        };
        self.delete(&key(kind, &[vhost, name]))
    }

    /// Records a vhost's or user's limits (`kind`: `vhost_limits` or `user_limits`); empty
    /// limits remove the record.
    pub fn save_limits(
        &self,
        kind: &str,
        owner: &str,
        limits: &crate::limits::Limits,
    ) -> Result<(), BrokerError> {
        if limits.is_empty() {
            return self.delete(&key(kind, &[owner]));
        }
        let t = FieldTable::from([
            ("owner", text(owner)),
            ("json", text(&crate::limits::to_json(limits).to_string())),
        ]);
        self.put(&key(kind, &[owner]), &t)
    }

    pub fn delete_vhost(&self, name: &str) -> Result<(), BrokerError> {
        self.delete(&key("vhost", &[name]))
    }

    /// Forgets a vhost's delayed messages (the vhost is being deleted).
    pub fn delete_delayed(&self, vhost: &str, id: u64) -> Result<(), BrokerError> {
        self.delete(&key("delayed", &[vhost]))?;
        if let Err(e) = self.store.drop_queue(id) {
            warn!(error = %e, vhost, "cannot drop the delayed messages from the log");
        }
        Ok(())
    }

    pub fn save_exchange(&self, vhost: &str, spec: &ExchangeSpec) -> Result<(), BrokerError> {
        let t = FieldTable::from([
            ("vhost", text(vhost)),
            ("name", text(spec.name.as_str())),
            ("type", text(spec.kind.as_str())),
            ("auto_delete", FieldValue::Bool(spec.auto_delete)),
            ("internal", FieldValue::Bool(spec.internal)),
            ("arguments", FieldValue::Table(spec.arguments.clone())),
        ]);
        self.put(&key("exchange", &[vhost, spec.name.as_str()]), &t)
    }

    pub fn delete_exchange(&self, vhost: &str, name: &str) -> Result<(), BrokerError> {
        self.delete(&key("exchange", &[vhost, name]))
    }

    pub fn save_queue(&self, vhost: &str, id: u64, spec: &QueueSpec) -> Result<(), BrokerError> {
        let t = FieldTable::from([
            ("vhost", text(vhost)),
            ("name", text(spec.name.as_str())),
            ("id", FieldValue::I64(id as i64)),
            ("auto_delete", FieldValue::Bool(spec.auto_delete)),
            ("arguments", FieldValue::Table(spec.arguments.clone())),
        ]);
        self.put(&key("queue", &[vhost, spec.name.as_str()]), &t)
    }

    /// Forgets a durable queue and drops its messages from the log.
    pub fn delete_queue(&self, vhost: &str, name: &str, id: u64) -> Result<(), BrokerError> {
        self.delete(&key("queue", &[vhost, name]))?;
        // The record is gone, so recovery would drop these messages anyway.
        if let Err(e) = self.store.drop_queue(id) {
            warn!(error = %e, queue = name, "cannot drop the queue's messages from the log");
        }
        Ok(())
    }

    /// Records the log id a vhost keeps its delayed messages under.
    pub fn save_delayed(&self, vhost: &str, id: u64) -> Result<(), BrokerError> {
        let t = FieldTable::from([("vhost", text(vhost)), ("id", FieldValue::I64(id as i64))]);
        self.put(&key("delayed", &[vhost]), &t)
    }

    fn binding_key(b: &BindingRecord) -> String {
        let args = hex(&encode_table(&b.arguments));
        let kind = if b.to_queue { "q" } else { "e" };
        key(
            "binding",
            &[
                &b.vhost,
                &b.source,
                kind,
                &b.destination,
                b.routing_key.as_str(),
                &args,
            ],
        )
    }

    pub fn save_binding(&self, b: &BindingRecord) -> Result<(), BrokerError> {
        let t = FieldTable::from([
            ("vhost", text(&b.vhost)),
            ("source", text(&b.source)),
            ("destination", text(&b.destination)),
            ("to_queue", FieldValue::Bool(b.to_queue)),
            ("routing_key", text(b.routing_key.as_str())),
            ("arguments", FieldValue::Table(b.arguments.clone())),
        ]);
        self.put(&Self::binding_key(b), &t)
    }

    pub fn delete_binding(&self, b: &BindingRecord) -> Result<(), BrokerError> {
        self.delete(&Self::binding_key(b))
    }

    /// Appends a persistent message for the given durable queues, which gives the message its
    /// id; returns the LSN to wait for before confirming it.
    pub fn publish(
        &self,
        message: &Arc<Message>,
        queue_ids: &[u64],
    ) -> Result<Ticket, BrokerError> {
        let payload: Arc<dyn warren_store::Payload> = message.clone();
        let published = self.store.publish(queue_ids, payload)?;
        message.set_id(published.msg_id);
        Ok(Ticket::at(published.lsn))
    }

    /// Records that a queue is done with these messages (acked, dropped or purged).
    pub fn settle(&self, queue_id: u64, ids: &[u64]) {
        // A purge of a long backlog settles millions at once: keep each record modest.
        for chunk in ids.chunks(1 << 16) {
            if let Err(e) = self.store.ack(queue_id, chunk) {
                warn!(error = %e, "cannot record acks in the log");
                return;
            }
        }
    }

    /// Settles log entries that may belong to different queue ids.
    pub fn settle_refs(&self, refs: &[crate::spec::LogRef]) {
        let mut by_queue: Vec<(u64, Vec<u64>)> = Vec::new();
        for r in refs {
            match by_queue.iter_mut().find(|(q, _)| *q == r.queue) {
                Some((_, ids)) => ids.push(r.id),
                None => by_queue.push((r.queue, vec![r.id])),
            }
        }
        for (queue, ids) in by_queue {
            self.settle(queue, &ids);
        }
    }

    /// The topology recorded in the meta store.
    pub fn topology(&self) -> Topology {
        let mut t = Topology::default();
        for (k, v) in self.meta.iter() {
            let Some(rec) = decode_table(&v) else {
                warn!(key = k, "unreadable topology record; skipping it");
                continue;
            };
            let kind = k.split('/').next().unwrap_or("");
            let vhost = get_text(&rec, "vhost").unwrap_or_default();
            let name = get_text(&rec, "name").unwrap_or_default();
            match kind {
                "vhost" => {
                    let tags = match rec.get("tags") {
                        Some(FieldValue::Array(a)) => a
                            .iter()
                            .filter_map(FieldValue::as_str)
                            .map(str::to_owned)
                            .collect(),
                        _ => Vec::new(),
                    };
                    let metadata = VHostMetadata {
                        description: get_text(&rec, "description").unwrap_or_default(),
                        tags,
                        default_queue_type: get_text(&rec, "default_queue_type"),
                    };
                    t.vhosts.push((name, metadata));
                }
                "vhost_limits" | "user_limits" => {
                    let owner = get_text(&rec, "owner").unwrap_or_default();
                    let limits = get_text(&rec, "json")
                        .and_then(|j| serde_json::from_str::<crate::limits::Limits>(&j).ok());
                    match limits {
                        Some(l) => t.limits.push((kind == "user_limits", owner, l)),
                        None => warn!(key = k, "unreadable limits record; skipping it"),
                    }
                }
                "policy" | "operator_policy" => {
                    match get_text(&rec, "json").map(|j| serde_json::from_str(&j)) {
                        Some(Ok(v)) => t.policies.push((kind == "operator_policy", v)),
                        _ => warn!(key = k, "unreadable policy record; skipping it"),
                    }
                }
                "exchange" => {
                    let kind = get_text(&rec, "type")
                        .and_then(|k| ExchangeKind::parse(&k))
                        .unwrap_or(ExchangeKind::Direct);
                    let Ok(name) = ShortString::try_from(name) else {
                        continue;
                    };
                    t.exchanges.push((
                        vhost,
                        ExchangeSpec {
                            name,
                            kind,
                            durable: true,
                            auto_delete: get_bool(&rec, "auto_delete"),
                            internal: get_bool(&rec, "internal"),
                            arguments: get_table(&rec, "arguments"),
                        },
                    ));
                }
                "queue" => {
                    let Ok(qname) = ShortString::try_from(name) else {
                        continue;
                    };
                    let id = rec.get("id").and_then(FieldValue::as_i64).unwrap_or(0) as u64;
                    t.queues.push(QueueRecord {
                        vhost,
                        id,
                        spec: QueueSpec {
                            name: qname,
                            durable: true,
                            exclusive: false,
                            auto_delete: get_bool(&rec, "auto_delete"),
                            arguments: get_table(&rec, "arguments"),
                        },
                    });
                }
                "binding" => {
                    let Ok(routing_key) =
                        ShortString::try_from(get_text(&rec, "routing_key").unwrap_or_default())
                    else {
                        continue;
                    };
                    t.bindings.push(BindingRecord {
                        vhost,
                        source: get_text(&rec, "source").unwrap_or_default(),
                        destination: get_text(&rec, "destination").unwrap_or_default(),
                        to_queue: get_bool(&rec, "to_queue"),
                        routing_key,
                        arguments: get_table(&rec, "arguments"),
                    })
                }
                "delayed" => {
                    if let Some(id) = rec.get("id").and_then(FieldValue::as_i64) {
                        t.delayed.push((vhost, id as u64));
                    }
                }
                // Read by `accounts()`.
                "user" | "permission" | DEFAULTS_KEY => {}
                _ => warn!(key = k, "unknown topology record; skipping it"),
            }
        }
        t
    }
}

/// The key of the record saying the default vhost, user and permission were created: they
/// are created once, when a data directory is new, so that an operator may delete them.
const DEFAULTS_KEY: &str = "defaults";

/// Users and permissions recorded in the meta store.
#[derive(Debug, Default)]
pub struct Accounts {
    pub users: Vec<User>,
    /// (user, vhost, rights).
    pub permissions: Vec<(String, String, Permission)>,
    /// (user, vhost, topic rights on one exchange).
    pub topic_permissions: Vec<(String, String, TopicPermission)>,
    /// Whether the defaults (vhost `/`, user guest, guest's rights on `/`) were created in
    /// this data directory already.
    pub defaults_created: bool,
}

// Users and permissions: stored like the topology, read back by `accounts()`.
impl Persistence {
    /// Records a user: name, password hash (salt and digest, as RabbitMQ keeps them) and its
    /// algorithm, and tags.
    pub fn save_user(&self, user: &User) -> Result<(), BrokerError> {
        let mut t = FieldTable::from([
            ("name", text(&user.name)),
            (
                "tags",
                FieldValue::Array(user.tags.iter().map(|t| text(t)).collect()),
            ),
        ]);
        if let Some(h) = &user.password {
            t.insert(
                ShortString::from_static("password_hash"),
                FieldValue::ByteArray(Bytes::copy_from_slice(&h.bytes)),
            );
            t.insert(
                ShortString::from_static("hashing_algorithm"),
                text(h.algorithm.name()),
            );
        }
        self.put(&key("user", &[&user.name]), &t)
    }

    pub fn delete_user(&self, name: &str) -> Result<(), BrokerError> {
        self.delete(&key("user", &[name]))
    }

    pub fn save_permission(
        &self,
        user: &str,
        vhost: &str,
        p: &Permission,
    ) -> Result<(), BrokerError> {
        let t = FieldTable::from([
            ("user", text(user)),
            ("vhost", text(vhost)),
            ("configure", text(&p.configure)),
            ("write", text(&p.write)),
            ("read", text(&p.read)),
        ]);
        self.put(&key("permission", &[user, vhost]), &t)
    }

    pub fn delete_permission(&self, user: &str, vhost: &str) -> Result<(), BrokerError> {
        self.delete(&key("permission", &[user, vhost]))
    }

    pub fn save_topic_permission(
        &self,
        user: &str,
        vhost: &str,
        p: &TopicPermission,
    ) -> Result<(), BrokerError> {
        let t = FieldTable::from([
            ("user", text(user)),
            ("vhost", text(vhost)),
            ("exchange", text(&p.exchange)),
            ("write", text(&p.write)),
            ("read", text(&p.read)),
        ]);
        self.put(&key("topic_permission", &[user, vhost, &p.exchange]), &t)
    }

    pub fn delete_topic_permission(
        &self,
        user: &str,
        vhost: &str,
        exchange: &str,
    ) -> Result<(), BrokerError> {
        self.delete(&key("topic_permission", &[user, vhost, exchange]))
    }

    /// Records that the defaults exist (or existed: deleting guest later must not bring it
    /// back at the next start).
    pub fn mark_defaults_created(&self) -> Result<(), BrokerError> {
        self.put(
            DEFAULTS_KEY,
            &FieldTable::from([("default_user", FieldValue::Bool(true))]),
        )
    }

    /// The users and permissions recorded in the meta store.
    pub fn accounts(&self) -> Accounts {
        let mut a = Accounts::default();
        for (k, v) in self.meta.iter() {
            let kind = k.split('/').next().unwrap_or("");
            if kind == DEFAULTS_KEY {
                a.defaults_created = true;
                continue;
            }
            if kind != "user" && kind != "permission" && kind != "topic_permission" {
                continue;
            }
            let Some(rec) = decode_table(&v) else {
                warn!(key = k, "unreadable user or permission record; skipping it");
                continue;
            };
            if kind == "user" {
                match decode_user(&rec) {
                    Ok(u) => a.users.push(u),
                    Err(reason) => warn!(key = k, reason = %reason, "bad user record; skipping it"),
                }
                continue;
            }
            let (Some(user), Some(vhost)) = (get_text(&rec, "user"), get_text(&rec, "vhost"))
            else {
                warn!(
                    key = k,
                    "permission record without user or vhost; skipping it"
                );
                continue;
            };
            let pattern = |f| get_text(&rec, f).unwrap_or_default();
            if kind == "topic_permission" {
                match TopicPermission::new(
                    &pattern("exchange"),
                    &pattern("write"),
                    &pattern("read"),
                ) {
                    Ok(t) => a.topic_permissions.push((user, vhost, t)),
                    Err(reason) => {
                        warn!(key = k, reason = %reason, "bad topic permission record; skipping it")
                    }
                }
                continue;
            }
            match Permission::new(&pattern("configure"), &pattern("write"), &pattern("read")) {
                Ok(p) => a.permissions.push((user, vhost, p)),
                Err(reason) => {
                    warn!(key = k, reason = %reason, "bad permission record; skipping it")
                }
            }
        }
        a
    }
}

fn decode_user(rec: &FieldTable) -> Result<User, BrokerError> {
    let invalid = |m: &str| BrokerError::Invalid(m.into());
    let name = get_text(rec, "name").ok_or_else(|| invalid("no name"))?;
    let tags = match rec.get("tags") {
        Some(FieldValue::Array(a)) => a
            .iter()
            .filter_map(FieldValue::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let password = match rec.get("password_hash") {
        Some(FieldValue::ByteArray(bytes)) => {
            let algorithm = get_text(rec, "hashing_algorithm")
                .and_then(|a| HashAlgorithm::parse(&a))
                .ok_or_else(|| invalid("unknown hashing algorithm"))?;
            if bytes.len() <= 4 {
                return Err(invalid("password hash too short"));
            }
            Some(PasswordHash {
                algorithm,
                bytes: bytes.to_vec(),
            })
        }
        _ => None,
    };
    Ok(User {
        name,
        password,
        tags,
    })
}

/// Shared handle, as vhosts and queues hold it.
pub type SharedPersistence = Option<Arc<Persistence>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_payload_round_trips() {
        let props = warren_codec::BasicProperties {
            delivery_mode: Some(2),
            ..Default::default()
        };
        let m = Message::new(
            ShortString::from_static("ex"),
            ShortString::from_static("rk"),
            props.to_raw(),
            Bytes::from_static(b"body"),
            &props,
        );
        let back = decode_message(7, encode_message(&m)).unwrap();
        assert_eq!(back.id(), 7);
        assert_eq!(back.exchange, m.exchange);
        assert_eq!(back.routing_key, m.routing_key);
        assert_eq!(back.raw_properties, m.raw_properties);
        assert_eq!(back.body, m.body);
        assert!(back.persistent);
    }

    #[test]
    fn keys_separate_fields_whatever_they_contain() {
        assert_ne!(key("queue", &["a/b", "c"]), key("queue", &["a", "b/c"]));
    }
}
