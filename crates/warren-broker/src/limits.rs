//! Vhost limits (`max-connections`, `max-queues`) and user limits (`max-connections`,
//! `max-channels`), with RabbitMQ 3.10's validation texts and meanings: a missing or negative
//! value is no limit, 0 allows nothing, N allows N.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;
use serde_json::Value;

use crate::error::{BrokerError, Result};

/// One object's limits, by name.
pub type Limits = BTreeMap<String, i64>;

/// Which limits an object takes, and how RabbitMQ names them in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    VHost,
    User,
}

impl Scope {
    fn keys(self) -> &'static [&'static str] {
        match self {
            Scope::VHost => &["max-connections", "max-queues"],
            Scope::User => &["max-connections", "max-channels"],
        }
    }
}

/// Checks one limit's value, with RabbitMQ's texts (vhost ones wrapped in "Validation
/// failed", user ones not).
pub fn validate(scope: Scope, name: &str, value: &Value) -> Result<i64> {
    let wrap = |text: String| match scope {
        Scope::VHost => BrokerError::Invalid(format!("Validation failed\n\n{text}\n")),
        Scope::User => BrokerError::Invalid(text),
    };
    if !scope.keys().contains(&name) {
        let shown = match value {
            Value::String(s) => format!("<<\"{s}\">>"),
            other => other.to_string(),
        };
        let what = match scope {
            Scope::VHost => "limits",
            Scope::User => "user-limits",
        };
        return Err(wrap(format!(
            "Unrecognised terms [{{<<\"{name}\">>,{shown}}}] in {what}"
        )));
    }
    value.as_i64().ok_or_else(|| {
        let shown = match value {
            Value::String(s) => format!("<<\"{s}\">>"),
            other => other.to_string(),
        };
        wrap(format!("{name} should be a number, actually was {shown}"))
    })
}

/// The limit `name` in `limits`: None for no limit (missing or negative).
pub fn get(limits: &Limits, name: &str) -> Option<u64> {
    limits
        .get(name)
        .copied()
        .filter(|v| *v >= 0)
        .map(|v| v as u64)
}

/// Limits as a JSON object.
pub fn to_json(limits: &Limits) -> Value {
    Value::Object(
        limits
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(*v)))
            .collect(),
    )
}

/// Users' limits and how many channels each user has open (across their connections), shared
/// by the broker and its registry: channel opens check it without walking every connection.
#[derive(Debug, Default)]
pub(crate) struct UserLimits {
    limits: Mutex<HashMap<String, Limits>>,
    channels: Mutex<HashMap<String, usize>>,
}

impl UserLimits {
    pub fn get(&self, user: &str) -> Limits {
        self.limits.lock().get(user).cloned().unwrap_or_default()
    }

    pub fn all(&self) -> Vec<(String, Limits)> {
        let mut v: Vec<(String, Limits)> = self
            .limits
            .lock()
            .iter()
            .filter(|(_, l)| !l.is_empty())
            .map(|(u, l)| (u.clone(), l.clone()))
            .collect();
        v.sort();
        v
    }

    pub fn set(&self, user: &str, limits: Limits) {
        self.limits.lock().insert(user.to_owned(), limits);
    }

    pub fn forget(&self, user: &str) {
        self.limits.lock().remove(user);
    }

    /// Counts a channel `user` opens, unless their `max-channels` is reached.
    pub fn open_channel(&self, user: &str) -> Result<()> {
        let limit = get(&self.get(user), "max-channels");
        let mut open = self.channels.lock();
        let n = open.entry(user.to_owned()).or_default();
        if let Some(limit) = limit {
            if *n as u64 >= limit {
                return Err(BrokerError::NotAllowed(format!(
                    "number of channels opened for user '{user}' has reached the maximum \
                     allowed user limit of ({limit})"
                )));
            }
        }
        *n += 1;
        Ok(())
    }

    pub fn close_channel(&self, user: &str) {
        let mut open = self.channels.lock();
        if let Some(n) = open.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_checked_with_rabbitmq_texts() {
        assert_eq!(validate(Scope::VHost, "max-queues", &json!(5)).unwrap(), 5);
        assert_eq!(
            validate(Scope::VHost, "max-queues", &json!(-1)).unwrap(),
            -1
        );
        let e = validate(Scope::VHost, "max-queues", &json!(1.5)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Validation failed\n\nmax-queues should be a number, actually was 1.5\n"
        );
        let e = validate(Scope::VHost, "max-foo", &json!(5)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Validation failed\n\nUnrecognised terms [{<<\"max-foo\">>,5}] in limits\n"
        );
        let e = validate(Scope::User, "max-channels", &json!("2")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "max-channels should be a number, actually was <<\"2\">>"
        );
    }

    #[test]
    fn negative_is_unlimited_and_zero_allows_nothing() {
        let u = UserLimits::default();
        u.set("a", Limits::from([("max-channels".to_owned(), -1)]));
        for _ in 0..10 {
            u.open_channel("a").unwrap();
        }
        u.set("b", Limits::from([("max-channels".to_owned(), 0)]));
        assert!(u.open_channel("b").is_err());
        u.set("c", Limits::from([("max-channels".to_owned(), 1)]));
        u.open_channel("c").unwrap();
        assert!(u.open_channel("c").is_err());
        u.close_channel("c");
        u.open_channel("c").unwrap();
    }
}
