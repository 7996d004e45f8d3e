//! Users, password hashes in RabbitMQ's format, and configure/write/read permissions.
//!
//! A RabbitMQ password hash is `base64(salt ++ H(salt ++ password))` with a 4-byte random
//! salt; `H` is SHA-256 by default (`rabbit_password_hashing_sha256`) or SHA-512. Hashes
//! exported from RabbitMQ therefore work here unchanged, and the other way round.

use std::sync::Arc;

use base64::Engine;
use rand::RngCore;
use regex::Regex;
use sha2::{Digest, Sha256, Sha512};

use crate::error::{BrokerError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    Sha256,
    Sha512,
}

impl HashAlgorithm {
    /// Parses RabbitMQ's `hashing_algorithm` names.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "rabbit_password_hashing_sha256" | "sha256" => Some(HashAlgorithm::Sha256),
            "rabbit_password_hashing_sha512" | "sha512" => Some(HashAlgorithm::Sha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "rabbit_password_hashing_sha256",
            HashAlgorithm::Sha512 => "rabbit_password_hashing_sha512",
        }
    }

    fn digest(self, salt: &[u8], password: &[u8]) -> Vec<u8> {
        match self {
            HashAlgorithm::Sha256 => {
                let mut h = Sha256::new();
                h.update(salt);
                h.update(password);
                h.finalize().to_vec()
            }
            HashAlgorithm::Sha512 => {
                let mut h = Sha512::new();
                h.update(salt);
                h.update(password);
                h.finalize().to_vec()
            }
        }
    }
}

/// A salted password hash, as RabbitMQ stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordHash {
    pub algorithm: HashAlgorithm,
    /// Salt followed by the digest.
    pub bytes: Vec<u8>,
}

impl PasswordHash {
    pub fn new(password: &str, algorithm: HashAlgorithm) -> Self {
        let mut salt = [0u8; 4];
        rand::thread_rng().fill_bytes(&mut salt);
        let mut bytes = salt.to_vec();
        bytes.extend(algorithm.digest(&salt, password.as_bytes()));
        PasswordHash { algorithm, bytes }
    }

    /// Reads a base64 hash from a definitions file.
    pub fn from_base64(encoded: &str, algorithm: HashAlgorithm) -> Result<Self> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| BrokerError::Invalid(format!("password_hash is not base64: {e}")))?;
        if bytes.len() <= 4 {
            return Err(BrokerError::Invalid("password_hash is too short".into()));
        }
        Ok(PasswordHash { algorithm, bytes })
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.bytes)
    }

    pub fn verify(&self, password: &str) -> bool {
        let (salt, digest) = self.bytes.split_at(4);
        let computed = self.algorithm.digest(salt, password.as_bytes());
        // Constant-time comparison: do not leak how many leading bytes matched.
        computed.len() == digest.len()
            && computed
                .iter()
                .zip(digest)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    /// None: the user cannot log in with a password.
    pub password: Option<PasswordHash>,
    pub tags: Vec<String>,
}

/// One user's rights in one vhost: regular expressions over resource names, as in RabbitMQ.
#[derive(Debug, Clone)]
pub struct Permission {
    pub configure: String,
    pub write: String,
    pub read: String,
    configure_re: Regex,
    write_re: Regex,
    read_re: Regex,
}

/// The three kinds of access RabbitMQ checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKind {
    Configure,
    Write,
    Read,
}

fn compile(pattern: &str) -> Result<Regex> {
    // RabbitMQ reads an empty pattern as "^$": it grants only the empty name (the default
    // exchange, an empty routing key), not everything.
    let pattern = if pattern.is_empty() { "^$" } else { pattern };
    Regex::new(pattern)
        .map_err(|e| BrokerError::Invalid(format!("invalid permission regex '{pattern}': {e}")))
}

impl Permission {
    pub fn new(configure: &str, write: &str, read: &str) -> Result<Self> {
        Ok(Permission {
            configure_re: compile(configure)?,
            write_re: compile(write)?,
            read_re: compile(read)?,
            configure: configure.to_owned(),
            write: write.to_owned(),
            read: read.to_owned(),
        })
    }

    pub fn full() -> Self {
        // ".*" always compiles.
        Permission::new(".*", ".*", ".*").unwrap_or_else(|_| unreachable!())
    }

    pub fn allows(&self, kind: AccessKind, name: &str) -> bool {
        let re = match kind {
            AccessKind::Configure => &self.configure_re,
            AccessKind::Write => &self.write_re,
            AccessKind::Read => &self.read_re,
        };
        re.is_match(name)
    }
}

/// One user's topic rights on one topic exchange in one vhost (RabbitMQ's topic
/// authorisation): regular expressions over routing keys, `write` for publishing and `read`
/// for binding. The patterns may name `{username}` and `{vhost}`, filled in when a
/// connection opens.
#[derive(Debug, Clone)]
pub struct TopicPermission {
    pub exchange: String,
    pub write: String,
    pub read: String,
}

impl TopicPermission {
    /// Checks that both patterns compile once their variables are filled in.
    pub fn new(exchange: &str, write: &str, read: &str) -> Result<Self> {
        let p = TopicPermission {
            exchange: exchange.to_owned(),
            write: write.to_owned(),
            read: read.to_owned(),
        };
        p.compile("user", "vhost")?;
        Ok(p)
    }

    /// The rule one connection of `user` in `vhost` applies.
    pub(crate) fn compile(&self, user: &str, vhost: &str) -> Result<TopicRule> {
        let fill = |pattern: &str| {
            pattern
                .replace("{username}", user)
                .replace("{vhost}", vhost)
        };
        Ok(TopicRule {
            exchange: self.exchange.clone(),
            write_re: compile(&fill(&self.write))?,
            read_re: compile(&fill(&self.read))?,
        })
    }
}

/// A [`TopicPermission`] with its variables filled in, compiled.
#[derive(Debug, Clone)]
pub(crate) struct TopicRule {
    exchange: String,
    write_re: Regex,
    read_re: Regex,
}

/// A logged-in user's rights in the vhost their connection opened; every operation asks it.
#[derive(Debug, Clone)]
pub struct Access {
    pub user: String,
    pub vhost: String,
    pub permission: Permission,
    /// Topic rules in this vhost; empty for almost everyone, so the publish path pays one
    /// length check for topic exchanges.
    pub(crate) topics: Arc<[TopicRule]>,
}

impl Access {
    /// 403 ACCESS_REFUSED unless the user has `kind` access to the named resource. `resource`
    /// is "queue" or "exchange", for RabbitMQ's message text.
    pub fn check(&self, kind: AccessKind, resource: &str, name: &str) -> Result<()> {
        if self.permission.allows(kind, name) {
            return Ok(());
        }
        let what = match kind {
            AccessKind::Configure => "configure",
            AccessKind::Write => "write",
            AccessKind::Read => "read",
        };
        Err(BrokerError::AccessRefused(format!(
            "{what} access to {resource} '{name}' in vhost '{}' refused for user '{}'",
            self.vhost, self.user
        )))
    }

    /// RabbitMQ's topic authorisation, for topic exchanges only: with no rule for `exchange`
    /// everything is allowed; with one, `routing_key` must match its `write` (publish) or
    /// `read` (bind, unbind) pattern.
    pub fn check_topic(&self, kind: AccessKind, exchange: &str, routing_key: &str) -> Result<()> {
        let Some(rule) = self.topics.iter().find(|r| r.exchange == exchange) else {
            return Ok(());
        };
        let (re, what) = match kind {
            AccessKind::Write => (&rule.write_re, "write"),
            AccessKind::Read => (&rule.read_re, "read"),
            AccessKind::Configure => return Ok(()),
        };
        if re.is_match(routing_key) {
            return Ok(());
        }
        Err(BrokerError::AccessRefused(format!(
            "{what} access to topic '{routing_key}' in exchange '{exchange}' in vhost '{}' refused for user '{}'",
            self.vhost, self.user
        )))
    }

    /// Whether any topic rule applies in this vhost (so the caller need not look further).
    pub fn has_topic_rules(&self) -> bool {
        !self.topics.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_only_the_right_password() {
        let h = PasswordHash::new("s3cret", HashAlgorithm::Sha256);
        assert!(h.verify("s3cret"));
        assert!(!h.verify("s3cret!"));
        let round = PasswordHash::from_base64(&h.to_base64(), HashAlgorithm::Sha256).unwrap();
        assert!(round.verify("s3cret"));
    }

    #[test]
    fn hash_in_rabbitmq_layout_is_accepted() {
        // RabbitMQ's layout: 4-byte salt, then SHA-256(salt ++ password), base64-encoded.
        let salt = [0x90u8, 0x8d, 0xc6, 0x0a];
        let mut bytes = salt.to_vec();
        bytes.extend(HashAlgorithm::Sha256.digest(&salt, b"guest"));
        let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let h = PasswordHash::from_base64(&encoded, HashAlgorithm::Sha256).unwrap();
        assert!(h.verify("guest"));
    }

    #[test]
    fn empty_permission_grants_only_the_empty_name() {
        let p = Permission::new("", "^$", ".*").unwrap();
        assert!(p.allows(AccessKind::Configure, ""));
        assert!(!p.allows(AccessKind::Configure, "q"));
        assert!(p.allows(AccessKind::Write, ""));
        assert!(!p.allows(AccessKind::Write, "amq.direct"));
        assert!(p.allows(AccessKind::Read, "anything"));
    }

    fn access_with_topics(rules: &[TopicPermission]) -> Access {
        Access {
            user: "alice".into(),
            vhost: "prod".into(),
            permission: Permission::full(),
            topics: rules
                .iter()
                .map(|r| r.compile("alice", "prod").unwrap())
                .collect(),
        }
    }

    #[test]
    fn topic_rules_fill_in_variables_and_apply_to_their_exchange_only() {
        let a = access_with_topics(&[TopicPermission::new(
            "amq.topic",
            "^{username}\\.",
            "^{vhost}\\.",
        )
        .unwrap()]);
        assert!(a
            .check_topic(AccessKind::Write, "amq.topic", "alice.x")
            .is_ok());
        let e = a
            .check_topic(AccessKind::Write, "amq.topic", "bob.x")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "write access to topic 'bob.x' in exchange 'amq.topic' in vhost 'prod' refused for user 'alice'"
        );
        assert!(a
            .check_topic(AccessKind::Read, "amq.topic", "prod.y")
            .is_ok());
        assert!(a
            .check_topic(AccessKind::Read, "amq.topic", "alice.y")
            .is_err());
        // No rule for this exchange: everything is allowed.
        assert!(a.check_topic(AccessKind::Write, "other", "bob.x").is_ok());
    }

    #[test]
    fn bad_topic_pattern_is_invalid() {
        assert!(matches!(
            TopicPermission::new("t", "(", ".*"),
            Err(BrokerError::Invalid(_))
        ));
    }
}
