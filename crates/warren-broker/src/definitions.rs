//! Loading a RabbitMQ definitions file (the JSON `rabbitmqctl export_definitions` writes):
//! users, vhosts, permissions, topic permissions, policies, limits, exchanges, queues and
//! bindings.
//!
//! As in RabbitMQ, importing writes into the broker's own state: on a persistent broker the
//! users, permissions, vhosts and durable entities are recorded, so they are still there after
//! a restart without the file. Importing again replaces users and permissions of the same name.

use serde::Deserialize;
use serde_json::{json, Value};
use warren_codec::{FieldTable, FieldValue, LongString, ShortString};

use crate::auth::{HashAlgorithm, PasswordHash, Permission, TopicPermission};
use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::exchange::Destination;
use crate::spec::{ExchangeKind, ExchangeSpec, QueueSpec, VHostMetadata};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Definitions {
    pub users: Vec<UserDef>,
    pub vhosts: Vec<VHostDef>,
    pub permissions: Vec<PermissionDef>,
    pub topic_permissions: Vec<TopicPermissionDef>,
    pub exchanges: Vec<ExchangeDef>,
    pub queues: Vec<QueueDef>,
    pub bindings: Vec<BindingDef>,
    /// `{"vhost","name","pattern","apply-to","definition","priority"}` records.
    pub policies: Vec<Value>,
    /// Runtime parameters; Warren takes the `operator_policy` ones.
    pub parameters: Vec<Value>,
}

#[derive(Debug, Deserialize)]
pub struct UserDef {
    pub name: String,
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Not in RabbitMQ's export, but handy for hand-written files.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub hashing_algorithm: Option<String>,
    #[serde(default)]
    pub tags: Tags,
    /// `max-connections`, `max-channels`.
    #[serde(default)]
    pub limits: serde_json::Map<String, Value>,
}

/// RabbitMQ writes tags as a list (4.x) or a comma-separated string (3.x).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(untagged)]
pub enum Tags {
    #[default]
    None,
    List(Vec<String>),
    Text(String),
}

impl Tags {
    fn into_vec(self) -> Vec<String> {
        match self {
            Tags::None => Vec::new(),
            Tags::List(v) => v,
            Tags::Text(s) => s
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct VHostDef {
    pub name: String,
    /// RabbitMQ 3.11+ writes `metadata: {description, tags}`; older exports and hand-written
    /// files put `description` and `tags` beside the name.
    #[serde(default)]
    pub metadata: Option<VHostMetadataDef>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Tags,
    #[serde(default)]
    pub default_queue_type: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct VHostMetadataDef {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Tags,
    #[serde(default)]
    pub default_queue_type: Option<String>,
}

impl VHostDef {
    fn metadata(&self) -> VHostMetadata {
        let m = self.metadata.as_ref();
        let tags = match m.map(|m| &m.tags) {
            Some(t) if !matches!(t, Tags::None) => t.clone().into_vec(),
            _ => self.tags.clone().into_vec(),
        };
        VHostMetadata {
            description: m
                .and_then(|m| m.description.clone())
                .or_else(|| self.description.clone())
                .unwrap_or_default(),
            tags,
            default_queue_type: m
                .and_then(|m| m.default_queue_type.clone())
                .or_else(|| self.default_queue_type.clone()),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct PermissionDef {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

#[derive(Debug, Deserialize)]
pub struct TopicPermissionDef {
    pub user: String,
    pub vhost: String,
    pub exchange: String,
    pub write: String,
    pub read: String,
}

/// A vhost's `metadata` as RabbitMQ shows it (`default_queue_type` only when set, as 3.10
/// has no such field).
pub fn metadata_json(m: &VHostMetadata) -> Value {
    let mut o = json!({"description": m.description, "tags": m.tags});
    if let (Some(t), Value::Object(map)) = (&m.default_queue_type, &mut o) {
        map.insert("default_queue_type".into(), json!(t));
    }
    o
}

/// A topic permission as the API and definitions show it.
pub fn topic_permission_json(user: &str, vhost: &str, t: &TopicPermission) -> Value {
    json!({
        "user": user, "vhost": vhost, "exchange": t.exchange,
        "write": t.write, "read": t.read,
    })
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
pub struct ExchangeDef {
    pub name: String,
    pub vhost: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default = "default_true")]
    pub durable: bool,
    #[serde(default)]
    pub auto_delete: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub arguments: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
pub struct QueueDef {
    pub name: String,
    pub vhost: String,
    #[serde(default = "default_true")]
    pub durable: bool,
    #[serde(default)]
    pub auto_delete: bool,
    #[serde(default)]
    pub arguments: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
pub struct BindingDef {
    pub source: String,
    pub vhost: String,
    pub destination: String,
    pub destination_type: String,
    #[serde(default)]
    pub routing_key: String,
    #[serde(default)]
    pub arguments: serde_json::Map<String, Value>,
}

/// A JSON value as a field value, the way RabbitMQ's HTTP API maps them.
pub fn json_to_field(v: &Value) -> FieldValue {
    match v {
        Value::Null => FieldValue::Void,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::I64(i),
            None => FieldValue::F64(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => FieldValue::LongString(LongString::from(s.as_str())),
        Value::Array(a) => FieldValue::Array(a.iter().map(json_to_field).collect()),
        Value::Object(o) => FieldValue::Table(json_to_table(o).unwrap_or_default()),
    }
}

pub fn json_to_table(o: &serde_json::Map<String, Value>) -> Result<FieldTable> {
    let mut t = FieldTable::new();
    for (k, v) in o {
        let key = ShortString::try_from(k.as_str())
            .map_err(|e| BrokerError::Invalid(format!("key '{k}': {e}")))?;
        t.insert(key, json_to_field(v));
    }
    Ok(t)
}

/// A field value as JSON, the way RabbitMQ's HTTP API shows arguments and headers.
pub fn field_to_json(v: &FieldValue) -> Value {
    match v {
        FieldValue::Void => Value::Null,
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::F32(f) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number)
        }
        FieldValue::F64(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        FieldValue::Table(t) => Value::Object(table_to_json(t)),
        FieldValue::Array(a) => Value::Array(a.iter().map(field_to_json).collect()),
        FieldValue::LongString(s) => {
            Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        FieldValue::ByteArray(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        other => match other.as_i64() {
            Some(i) => Value::from(i),
            None => Value::String(format!("{other:?}")),
        },
    }
}

/// A field table as a JSON object (`{}` when empty, never `[]`).
pub fn table_to_json(t: &FieldTable) -> serde_json::Map<String, Value> {
    t.iter()
        .map(|(k, v)| (k.as_str().to_owned(), field_to_json(v)))
        .collect()
}

fn short(s: &str) -> Result<ShortString> {
    ShortString::try_from(s).map_err(|e| BrokerError::Invalid(format!("name '{s}': {e}")))
}

/// Prefixes an error with the entry it came from.
fn about(what: String) -> impl FnOnce(BrokerError) -> BrokerError {
    move |e| match e {
        BrokerError::Invalid(m) => BrokerError::Invalid(format!("{what}: {m}")),
        BrokerError::PreconditionFailed(m) => BrokerError::Invalid(format!("{what}: {m}")),
        BrokerError::NotFound { .. } | BrokerError::AccessRefused(_) => {
            BrokerError::Invalid(format!("{what}: {e}"))
        }
        other => other,
    }
}

/// Sets a policy from its definitions record.
fn set_policy(broker: &Broker, p: &Value, operator: bool) -> Result<()> {
    let text = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or_default();
    let what = format!("policy '{}' in vhost '{}'", text("name"), text("vhost"));
    broker
        .set_policy(
            operator,
            crate::broker::PolicyFields {
                vhost: text("vhost"),
                name: text("name"),
                pattern: p.get("pattern").unwrap_or(&Value::Null),
                apply_to: p.get("apply-to"),
                priority: p.get("priority"),
                definition: p.get("definition").unwrap_or(&Value::Null),
            },
        )
        .map(drop)
        .map_err(about(what))
}

/// The RabbitMQ version whose definitions format Warren reads and writes.
pub const RABBIT_VERSION: &str = "3.10.8";

impl Definitions {
    pub fn parse(json: &str) -> Result<Self> {
        serde_json::from_str(json)
            .map_err(|e| BrokerError::Invalid(format!("invalid definitions: {e}")))
    }

    /// Applies the definitions to `broker`. Errors name the offending entry.
    pub fn apply(self, broker: &Broker) -> Result<()> {
        for v in &self.vhosts {
            broker
                .put_vhost(&v.name, v.metadata())
                .map_err(about(format!("vhost '{}'", v.name)))?;
        }
        for u in self.users {
            let algorithm = match u.hashing_algorithm.as_deref() {
                None => HashAlgorithm::Sha256,
                Some(a) => HashAlgorithm::parse(a).ok_or_else(|| {
                    BrokerError::Invalid(format!(
                        "user '{}': unsupported hashing_algorithm '{a}'",
                        u.name
                    ))
                })?,
            };
            let hash = match (&u.password_hash, &u.password) {
                (Some(h), _) if !h.is_empty() => Some(
                    PasswordHash::from_base64(h, algorithm)
                        .map_err(about(format!("user '{}'", u.name)))?,
                ),
                (_, Some(p)) => Some(PasswordHash::new(p, algorithm)),
                _ => None,
            };
            broker.add_user(&u.name, hash, u.tags.into_vec())?;
            for (k, v) in &u.limits {
                broker
                    .set_user_limit(&u.name, k, Some(v))
                    .map_err(about(format!("user '{}'", u.name)))?;
            }
        }
        for p in &self.permissions {
            let what = format!("permission for '{}' on '{}'", p.user, p.vhost);
            let perm =
                Permission::new(&p.configure, &p.write, &p.read).map_err(about(what.clone()))?;
            broker
                .set_permission(&p.user, &p.vhost, perm)
                .map_err(about(what))?;
        }
        for t in &self.topic_permissions {
            let what = format!(
                "topic permission for '{}' on '{}' in '{}'",
                t.user, t.exchange, t.vhost
            );
            let perm = TopicPermission::new(&t.exchange, &t.write, &t.read)
                .map_err(about(what.clone()))?;
            broker
                .set_topic_permission(&t.user, &t.vhost, perm)
                .map_err(about(what))?;
        }
        for p in &self.policies {
            set_policy(broker, p, false)?;
        }
        for p in &self.parameters {
            if p.get("component").and_then(Value::as_str) == Some("vhost-limits") {
                let vhost = p.get("vhost").and_then(Value::as_str).unwrap_or_default();
                if let Some(Value::Object(limits)) = p.get("value") {
                    for (k, v) in limits {
                        broker
                            .set_vhost_limit(vhost, k, Some(v))
                            .map_err(about(format!("limits of vhost '{vhost}'")))?;
                    }
                }
            }
            if p.get("component").and_then(Value::as_str) == Some("operator_policy") {
                // Its fields sit under "value"; the name and vhost beside it.
                let mut record = p.get("value").cloned().unwrap_or(Value::Null);
                if let Value::Object(o) = &mut record {
                    for k in ["vhost", "name"] {
                        if let Some(v) = p.get(k) {
                            o.insert(k.into(), v.clone());
                        }
                    }
                }
                set_policy(broker, &record, true)?;
            }
        }
        for x in &self.exchanges {
            let vhost = broker.vhost(&x.vhost).ok_or_else(|| {
                BrokerError::Invalid(format!("exchange '{}': no vhost '{}'", x.name, x.vhost))
            })?;
            let kind = ExchangeKind::parse(&x.kind).ok_or_else(|| {
                BrokerError::Invalid(format!("exchange '{}': unknown type '{}'", x.name, x.kind))
            })?;
            let spec = ExchangeSpec {
                name: short(&x.name)?,
                kind,
                durable: x.durable,
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: json_to_table(&x.arguments)?,
            };
            vhost
                .declare_exchange(&spec)
                .map_err(about(format!("exchange '{}'", x.name)))?;
        }
        for q in &self.queues {
            let vhost = broker.vhost(&q.vhost).ok_or_else(|| {
                BrokerError::Invalid(format!("queue '{}': no vhost '{}'", q.name, q.vhost))
            })?;
            let spec = QueueSpec {
                name: short(&q.name)?,
                durable: q.durable,
                exclusive: false,
                auto_delete: q.auto_delete,
                arguments: json_to_table(&q.arguments)?,
            };
            vhost
                .declare_queue(&spec, false, 0)
                .map_err(about(format!("queue '{}'", q.name)))?;
        }
        for b in &self.bindings {
            let vhost = broker.vhost(&b.vhost).ok_or_else(|| {
                BrokerError::Invalid(format!(
                    "binding from '{}': no vhost '{}'",
                    b.source, b.vhost
                ))
            })?;
            let args = json_to_table(&b.arguments)?;
            let key = short(&b.routing_key)?;
            let what = format!("binding '{}' → '{}'", b.source, b.destination);
            let r = match b.destination_type.as_str() {
                "queue" => vhost.bind_queue(&b.destination, &b.source, key, args, 0),
                "exchange" => vhost.bind_exchange(&b.destination, &b.source, key, args),
                other => {
                    return Err(BrokerError::Invalid(format!(
                        "binding: unknown destination_type '{other}'"
                    )))
                }
            };
            r.map_err(about(what))?;
        }
        Ok(())
    }

    /// The broker's definitions (the inverse of [`Definitions::apply`]), in RabbitMQ's
    /// export format: users with their password hashes, vhosts, permissions, policies, and,
    /// as RabbitMQ 3.10 exports them, the exchanges but the standard ones, the queues but the
    /// exclusive ones (durable or not), and the bindings between them.
    pub fn export(broker: &Broker, only_vhost: Option<&str>) -> Value {
        let in_scope = |v: &str| only_vhost.is_none_or(|o| o == v);
        let mut users = Vec::new();
        let mut vhosts = Vec::new();
        let mut permissions = Vec::new();
        if only_vhost.is_none() {
            for u in broker.users() {
                let (hash, algorithm) = match &u.password {
                    Some(h) => (h.to_base64(), h.algorithm.name()),
                    None => (String::new(), HashAlgorithm::Sha256.name()),
                };
                users.push(json!({
                    "name": u.name,
                    "password_hash": hash,
                    "hashing_algorithm": algorithm,
                    "tags": u.tags,
                    "limits": crate::limits::to_json(&broker.user_limits(&u.name)),
                }));
            }
            let mut all = broker.vhosts();
            all.sort_by(|a, b| a.name.cmp(&b.name));
            for v in all {
                vhosts.push(json!({
                    "name": v.name.to_string(),
                    "limits": [],
                    "metadata": metadata_json(&v.metadata()),
                }));
            }
            for (user, vhost, p) in broker.permissions() {
                permissions.push(json!({
                    "user": user, "vhost": vhost,
                    "configure": p.configure, "write": p.write, "read": p.read,
                }));
            }
        }
        let mut exchanges = Vec::new();
        let mut queues = Vec::new();
        let mut bindings = Vec::new();
        let mut vs = broker.vhosts();
        vs.sort_by(|a, b| a.name.cmp(&b.name));
        for v in vs.iter().filter(|v| in_scope(&v.name)) {
            let vhost_field = |mut o: serde_json::Map<String, Value>| {
                if only_vhost.is_none() {
                    o.insert("vhost".into(), Value::from(v.name.to_string()));
                }
                Value::Object(o)
            };
            let mut xs = v.exchanges();
            xs.sort_by(|a, b| a.name.cmp(&b.name));
            for x in &xs {
                if x.name.is_empty() || x.name.as_str().starts_with("amq.") {
                    continue;
                }
                let mut o = serde_json::Map::new();
                o.insert("name".into(), Value::from(x.name.as_str()));
                o.insert("type".into(), Value::from(x.kind.as_str()));
                o.insert("durable".into(), Value::from(x.durable));
                o.insert("auto_delete".into(), Value::from(x.auto_delete));
                o.insert("internal".into(), Value::from(x.internal));
                o.insert(
                    "arguments".into(),
                    Value::Object(table_to_json(&x.arguments)),
                );
                exchanges.push(vhost_field(o));
            }
            let mut qs = v.queues();
            qs.sort_by(|a, b| a.name.cmp(&b.name));
            for q in qs.iter().filter(|q| !q.is_exclusive()) {
                let mut o = serde_json::Map::new();
                o.insert("name".into(), Value::from(q.name.as_str()));
                o.insert("durable".into(), Value::from(q.durable));
                o.insert("auto_delete".into(), Value::from(q.auto_delete));
                o.insert(
                    "arguments".into(),
                    Value::Object(table_to_json(&q.arguments)),
                );
                queues.push(vhost_field(o));
            }
            for x in &xs {
                if x.name.is_empty() {
                    continue;
                }
                for b in x.bindings() {
                    let (destination, kind, exported) = match &b.destination {
                        Destination::Queue(q) => (q.name.to_string(), "queue", !q.is_exclusive()),
                        Destination::Exchange(d) => (d.name.to_string(), "exchange", true),
                    };
                    if !exported {
                        continue;
                    }
                    let mut o = serde_json::Map::new();
                    o.insert("source".into(), Value::from(x.name.as_str()));
                    o.insert("destination".into(), Value::from(destination));
                    o.insert("destination_type".into(), Value::from(kind));
                    o.insert("routing_key".into(), Value::from(b.routing_key.as_str()));
                    o.insert(
                        "arguments".into(),
                        Value::Object(table_to_json(&b.arguments)),
                    );
                    bindings.push(vhost_field(o));
                }
            }
        }
        let mut out = json!({
            "rabbit_version": RABBIT_VERSION,
            "rabbitmq_version": RABBIT_VERSION,
            "product_name": "Warren",
            "product_version": env!("CARGO_PKG_VERSION"),
        });
        if let Value::Object(o) = &mut out {
            if only_vhost.is_none() {
                o.insert("users".into(), Value::Array(users));
                o.insert("vhosts".into(), Value::Array(vhosts));
                o.insert("permissions".into(), Value::Array(permissions));
                let topic_permissions = broker
                    .topic_permissions()
                    .into_iter()
                    .map(|(user, vhost, t)| topic_permission_json(&user, &vhost, &t))
                    .collect();
                o.insert("topic_permissions".into(), Value::Array(topic_permissions));
                o.insert("global_parameters".into(), Value::Array(vec![]));
            }
            let with_vhost = only_vhost.is_none();
            let policies = broker
                .policies(false, only_vhost)
                .iter()
                .map(|p| p.to_json(with_vhost))
                .collect();
            // Vhost limits and operator policies are runtime parameters in RabbitMQ's export.
            let mut parameters: Vec<Value> = Vec::new();
            for v in vs.iter().filter(|v| in_scope(&v.name)) {
                let limits = v.limits();
                if limits.is_empty() {
                    continue;
                }
                let mut o = serde_json::Map::new();
                o.insert("value".into(), crate::limits::to_json(&limits));
                if with_vhost {
                    o.insert("vhost".into(), Value::from(v.name.to_string()));
                }
                o.insert("component".into(), Value::from("vhost-limits"));
                o.insert("name".into(), Value::from("limits"));
                parameters.push(Value::Object(o));
            }
            for p in broker.policies(true, only_vhost) {
                let mut value = p.to_json(false);
                if let Value::Object(v) = &mut value {
                    v.remove("name");
                }
                let mut o = serde_json::Map::new();
                o.insert("value".into(), value);
                if with_vhost {
                    o.insert("vhost".into(), Value::from(p.vhost.clone()));
                }
                o.insert("component".into(), Value::from("operator_policy"));
                o.insert("name".into(), Value::from(p.name.clone()));
                parameters.push(Value::Object(o));
            }
            o.insert("parameters".into(), Value::Array(parameters));
            o.insert("policies".into(), Value::Array(policies));
            o.insert("queues".into(), Value::Array(queues));
            o.insert("exchanges".into(), Value::Array(exchanges));
            o.insert("bindings".into(), Value::Array(bindings));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmq_export_is_applied() {
        let json = r#"{
          "rabbit_version": "3.12.1",
          "users": [{"name": "app", "password_hash": "", "password": "pw",
                     "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "monitoring,management"}],
          "vhosts": [{"name": "prod"}],
          "permissions": [{"user": "app", "vhost": "prod", "configure": "^app\\.", "write": ".*", "read": ".*"}],
          "exchanges": [{"name": "events", "vhost": "prod", "type": "topic", "durable": true,
                         "auto_delete": false, "internal": false, "arguments": {}}],
          "queues": [{"name": "app.q", "vhost": "prod", "durable": true, "auto_delete": false,
                      "arguments": {"x-queue-type": "classic"}}],
          "bindings": [{"source": "events", "vhost": "prod", "destination": "app.q",
                        "destination_type": "queue", "routing_key": "a.#", "arguments": {}}]
        }"#;
        let broker = Broker::empty();
        Definitions::parse(json).unwrap().apply(&broker).unwrap();
        let user = broker.authenticate("app", "pw", false).unwrap();
        assert_eq!(user.tags, vec!["monitoring", "management"]);
        let (vhost, access) = broker.open_vhost(&user, "prod").unwrap();
        assert!(access
            .check(crate::auth::AccessKind::Configure, "queue", "app.x")
            .is_ok());
        assert!(access
            .check(crate::auth::AccessKind::Configure, "queue", "other")
            .is_err());
        let x = vhost.exchange("events").unwrap();
        assert_eq!(x.bindings().len(), 1);
        assert!(vhost.queue("app.q").unwrap().durable);
    }

    #[test]
    fn binding_to_missing_queue_is_reported() {
        let json = r#"{"vhosts":[{"name":"/"}],
            "bindings":[{"source":"amq.direct","vhost":"/","destination":"nope",
                         "destination_type":"queue","routing_key":"k","arguments":{}}]}"#;
        let broker = Broker::empty();
        let err = Definitions::parse(json)
            .unwrap()
            .apply(&broker)
            .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
