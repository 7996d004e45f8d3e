//! Loading a RabbitMQ definitions file (the JSON `rabbitmqctl export_definitions` writes):
//! users, vhosts, permissions, exchanges, queues and bindings.
//!
//! As in RabbitMQ, importing writes into the broker's own state: on a persistent broker the
//! users, permissions, vhosts and durable entities are recorded, so they are still there after
//! a restart without the file. Importing again replaces users and permissions of the same name.

use serde::Deserialize;
use serde_json::Value;
use warren_codec::{FieldTable, FieldValue, LongString, ShortString};

use crate::auth::{HashAlgorithm, PasswordHash, Permission};
use crate::broker::Broker;
use crate::exchange::{ExchangeKind, ExchangeSpec};
use crate::queue::QueueSpec;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Definitions {
    pub users: Vec<UserDef>,
    pub vhosts: Vec<VHostDef>,
    pub permissions: Vec<PermissionDef>,
    pub exchanges: Vec<ExchangeDef>,
    pub queues: Vec<QueueDef>,
    pub bindings: Vec<BindingDef>,
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
}

/// RabbitMQ writes tags as a list (4.x) or a comma-separated string (3.x).
#[derive(Debug, Default, Deserialize)]
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
}

#[derive(Debug, Deserialize)]
pub struct PermissionDef {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
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

pub fn json_to_table(o: &serde_json::Map<String, Value>) -> Result<FieldTable, String> {
    let mut t = FieldTable::new();
    for (k, v) in o {
        let key = ShortString::try_from(k.as_str()).map_err(|e| format!("key '{k}': {e}"))?;
        t.insert(key, json_to_field(v));
    }
    Ok(t)
}

fn short(s: &str) -> Result<ShortString, String> {
    ShortString::try_from(s).map_err(|e| format!("name '{s}': {e}"))
}

impl Definitions {
    pub fn parse(json: &str) -> Result<Self, String> {
        serde_json::from_str(json).map_err(|e| format!("invalid definitions: {e}"))
    }

    /// Applies the definitions to `broker`. Errors name the offending entry.
    pub fn apply(self, broker: &Broker) -> Result<(), String> {
        for v in &self.vhosts {
            broker.add_vhost(&v.name);
        }
        for u in self.users {
            let algorithm = match u.hashing_algorithm.as_deref() {
                None => HashAlgorithm::Sha256,
                Some(a) => HashAlgorithm::parse(a).ok_or_else(|| {
                    format!("user '{}': unsupported hashing_algorithm '{a}'", u.name)
                })?,
            };
            let hash = match (&u.password_hash, &u.password) {
                (Some(h), _) if !h.is_empty() => Some(
                    PasswordHash::from_base64(h, algorithm)
                        .map_err(|e| format!("user '{}': {e}", u.name))?,
                ),
                (_, Some(p)) => Some(PasswordHash::new(p, algorithm)),
                _ => None,
            };
            broker.add_user(&u.name, hash, u.tags.into_vec());
        }
        for p in &self.permissions {
            let perm = Permission::new(&p.configure, &p.write, &p.read)
                .map_err(|e| format!("permission for '{}' on '{}': {e}", p.user, p.vhost))?;
            broker.set_permission(&p.user, &p.vhost, perm);
        }
        for x in &self.exchanges {
            let vhost = broker
                .vhost(&x.vhost)
                .ok_or_else(|| format!("exchange '{}': no vhost '{}'", x.name, x.vhost))?;
            let kind = ExchangeKind::parse(&x.kind)
                .ok_or_else(|| format!("exchange '{}': unknown type '{}'", x.name, x.kind))?;
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
                .map_err(|e| format!("exchange '{}': {e}", x.name))?;
        }
        for q in &self.queues {
            let vhost = broker
                .vhost(&q.vhost)
                .ok_or_else(|| format!("queue '{}': no vhost '{}'", q.name, q.vhost))?;
            let spec = QueueSpec {
                name: short(&q.name)?,
                durable: q.durable,
                exclusive: false,
                auto_delete: q.auto_delete,
                arguments: json_to_table(&q.arguments)?,
            };
            vhost
                .declare_queue(&spec, false, 0)
                .map_err(|e| format!("queue '{}': {e}", q.name))?;
        }
        for b in &self.bindings {
            let vhost = broker
                .vhost(&b.vhost)
                .ok_or_else(|| format!("binding from '{}': no vhost '{}'", b.source, b.vhost))?;
            let args = json_to_table(&b.arguments)?;
            let key = short(&b.routing_key)?;
            let r = match b.destination_type.as_str() {
                "queue" => vhost.bind_queue(&b.destination, &b.source, key, args, 0),
                "exchange" => vhost.bind_exchange(&b.destination, &b.source, key, args),
                other => return Err(format!("binding: unknown destination_type '{other}'")),
            };
            r.map_err(|e| format!("binding '{}' → '{}': {e}", b.source, b.destination))?;
        }
        Ok(())
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
        assert!(err.contains("nope"), "{err}");
    }
}
