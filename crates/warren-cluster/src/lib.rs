//! Warren's cluster (issue 13; the plan is `docs/dev/cluster-plan.md`, the user's view
//! `docs/clustering.md`).
//!
//! Replication is openraft's, pinned to one exact version: Warren supplies the pieces Raft
//! leaves to its user.
//!
//! - [`types`]: the type configuration ([`Warren`]) shared by every group: node ids, [`Peer`]s
//!   and the [`Command`]s a group's log carries.
//! - [`MemLog`]: a Raft log kept in memory (tests; the store-backed log replaces it for real
//!   nodes, since an in-memory log forgets votes and entries on a crash).
//! - [`MetaMachine`]: the metadata state machine: applied commands update a key → record map
//!   that every node ends up holding identically.
//! - [`LocalNet`]: Raft RPCs between groups in one process, with links that can be cut, for
//!   tests of elections, failover and partitions without sockets.
//! - [`Transport`] and [`serve`]: the same RPCs between processes over TCP (one connection per
//!   peer shared by every group; checksummed frames, `wire.rs`), with links a test can cut.
//!   A connection is used only after both ends proved they know the [`ClusterSecret`]
//!   (`auth.rs`). Links can be cut one way or delayed, for fault tests.
//! - [`Detector`]: node-level failure detection, one probe per peer over the link.
//!
//! Still to come, in the plan's order: Raft records in `warren-store` (one group commit and
//! fsync for every group), the metadata group wired to the broker, and quorum queues.

mod auth;
mod detector;
mod log_mem;
mod machine;
mod net_local;
mod transport;
pub mod types;
pub mod wire;

pub use auth::ClusterSecret;
pub use detector::{Detector, DetectorConfig, PeerHealth};
pub use log_mem::MemLog;
pub use machine::MetaMachine;
pub use net_local::{LocalNet, LocalNetwork};
pub use transport::{decode_request, serve, Groups, Request, TcpNetwork, Transport};
pub use types::{Command, NodeId, Peer, Reply, Warren};

/// A metadata Raft group's handle.
pub type MetaRaft = openraft::Raft<Warren, MetaMachine>;

/// The openraft crate, re-exported so users name exactly the version Warren pins.
pub use openraft;
