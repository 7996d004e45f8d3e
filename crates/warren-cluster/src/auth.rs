//! Who may speak on the cluster link: nodes that know the cluster's shared secret (RabbitMQ's
//! Erlang cookie plays this part). Anyone who can reach an unauthenticated Raft port could
//! vote, append entries or install a snapshot: rewrite the cluster's metadata.
//!
//! Each connection starts with a mutual challenge-response (HMAC-SHA256 of both ends' random
//! challenges, so that no proof can be replayed on another connection):
//!
//! 1. the listener sends `Challenge { a }` (32 random bytes);
//! 2. the connecting node sends `Hello { b, HMAC(secret, "warren-cluster-dialer" | a | b) }`;
//! 3. the listener checks it (in constant time) and sends
//!    `Welcome { HMAC(secret, "warren-cluster-listener" | b | a) }`, or closes the connection.
//!
//! The secret is not sent; the link is not encrypted (the cluster network is trusted for
//! confidentiality, as Erlang distribution without TLS is).

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes in a challenge.
pub(crate) const CHALLENGE_LEN: usize = 32;
/// Bytes in a proof (HMAC-SHA256).
pub(crate) const PROOF_LEN: usize = 32;

/// The cluster's shared secret. Every node of a cluster is given the same one.
#[derive(Clone)]
pub struct ClusterSecret(hmac::Key);

impl ClusterSecret {
    pub fn new(secret: &[u8]) -> Self {
        ClusterSecret(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The proof a node dialing in gives for challenges `a` (the listener's) and `b` (its own).
    pub(crate) fn dialer_proof(&self, a: &[u8], b: &[u8]) -> Vec<u8> {
        self.sign(b"warren-cluster-dialer", a, b)
    }

    /// The proof the listener gives back (the challenges the other way round).
    pub(crate) fn listener_proof(&self, a: &[u8], b: &[u8]) -> Vec<u8> {
        self.sign(b"warren-cluster-listener", b, a)
    }

    /// Whether `proof` is the dialer's proof for `a`, `b` (constant time).
    pub(crate) fn check_dialer(&self, a: &[u8], b: &[u8], proof: &[u8]) -> bool {
        hmac::verify(&self.0, &message(b"warren-cluster-dialer", a, b), proof).is_ok()
    }

    /// Whether `proof` is the listener's proof for `a`, `b` (constant time).
    pub(crate) fn check_listener(&self, a: &[u8], b: &[u8], proof: &[u8]) -> bool {
        hmac::verify(&self.0, &message(b"warren-cluster-listener", b, a), proof).is_ok()
    }

    fn sign(&self, role: &[u8], x: &[u8], y: &[u8]) -> Vec<u8> {
        hmac::sign(&self.0, &message(role, x, y)).as_ref().to_vec()
    }
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

fn message(role: &[u8], x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(role.len() + 1 + x.len() + y.len());
    m.extend_from_slice(role);
    m.push(b'|');
    m.extend_from_slice(x);
    m.extend_from_slice(y);
    m
}

/// A fresh random challenge.
pub(crate) fn challenge() -> Result<[u8; CHALLENGE_LEN], String> {
    let mut c = [0u8; CHALLENGE_LEN];
    SystemRandom::new()
        .fill(&mut c)
        .map_err(|_| "no randomness for a challenge".to_string())?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_check_only_with_the_same_secret_and_challenges() {
        let s = ClusterSecret::new(b"cookie");
        let (a, b) = (challenge().unwrap(), challenge().unwrap());
        assert_ne!(a, b);
        let d = s.dialer_proof(&a, &b);
        assert!(s.check_dialer(&a, &b, &d));
        assert!(!s.check_dialer(&b, &a, &d), "challenges swapped");
        assert!(!ClusterSecret::new(b"other").check_dialer(&a, &b, &d));
        // A dialer's proof is not a listener's: a listener cannot reflect it back.
        assert!(!s.check_listener(&a, &b, &d));
        let l = s.listener_proof(&a, &b);
        assert!(s.check_listener(&a, &b, &l));
        assert!(!s.check_dialer(&a, &b, &l));
        assert_eq!(d.len(), PROOF_LEN);
    }
}
