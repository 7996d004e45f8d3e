//! The Raft type configuration every Warren group shares, and the values it carries.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node of the cluster as Raft sees it: its name (`warren@host`, as RabbitMQ's node names)
/// and the address of its cluster listener. Node ids are random numbers made once per data
/// directory (never reused, as openraft requires), so the name is what operators read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub name: String,
    pub addr: String,
}

impl Peer {
    pub fn new(name: impl Into<String>, addr: impl Into<String>) -> Self {
        Peer {
            name: name.into(),
            addr: addr.into(),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

/// A change to the replicated metadata: the broker's topology records (vhosts, users,
/// exchanges, bindings, queue definitions …) by key, exactly as the single-node metadata store
/// keeps them, so a record means the same thing whether it came from Raft or from disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Put { key, value } => write!(f, "put {key} ({} bytes)", value.len()),
            Command::Delete { key } => write!(f, "delete {key}"),
        }
    }
}

/// What applying a command answers: the log index it was applied at, which a node waits to
/// have applied itself before it tells a client its declare is done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub index: u64,
}

openraft::declare_raft_types!(
    /// Warren's Raft types: u64 node ids, [`Peer`] nodes, [`Command`] entries.
    pub Warren:
        D = Command,
        R = Reply,
        NodeId = u64,
        Node = Peer,
);

/// A node id.
pub type NodeId = u64;
