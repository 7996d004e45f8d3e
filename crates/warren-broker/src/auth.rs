//! Users, password hashes in RabbitMQ's format, and configure/write/read permissions.
//!
//! A RabbitMQ password hash is `base64(salt ++ H(salt ++ password))` with a 4-byte random
//! salt; `H` is SHA-256 by default (`rabbit_password_hashing_sha256`) or SHA-512. Hashes
//! exported from RabbitMQ therefore work here unchanged, and the other way round.

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
    configure_re: Option<Regex>,
    write_re: Option<Regex>,
    read_re: Option<Regex>,
}

/// The three kinds of access RabbitMQ checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKind {
    Configure,
    Write,
    Read,
}

fn compile(pattern: &str) -> Result<Option<Regex>> {
    // RabbitMQ: an empty pattern grants nothing (it is not "match the empty name").
    if pattern.is_empty() {
        return Ok(None);
    }
    Regex::new(pattern)
        .map(Some)
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
        re.as_ref().is_some_and(|r| r.is_match(name))
    }
}

/// A logged-in user's rights in the vhost their connection opened; every operation asks it.
#[derive(Debug, Clone)]
pub struct Access {
    pub user: String,
    pub vhost: String,
    pub permission: Permission,
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
    fn empty_permission_grants_nothing() {
        let p = Permission::new("", "^$", ".*").unwrap();
        assert!(!p.allows(AccessKind::Configure, ""));
        assert!(p.allows(AccessKind::Write, ""));
        assert!(!p.allows(AccessKind::Write, "amq.direct"));
        assert!(p.allows(AccessKind::Read, "anything"));
    }
}
