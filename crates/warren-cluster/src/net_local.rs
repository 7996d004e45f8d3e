//! Raft RPCs between nodes in one process, with links that tests can cut and heal.
//!
//! Each RPC calls the target group's `Raft` directly; a cut link, or a node that is gone or
//! shut down, answers as an unreachable peer would. The TCP transport between processes has
//! the same shape (one handle per target), so what a test shows about elections, failover
//! and partitions here is about Raft and Warren's storage, not about sockets.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::Cursor;
use std::sync::Arc;

use openraft::alias::{SnapshotOf, VoteOf};
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use parking_lot::RwLock;

use crate::types::{NodeId, Peer, Warren};
use crate::MetaRaft;

/// The nodes of an in-process cluster, and which links between them are cut.
#[derive(Default)]
pub struct LocalNet {
    nodes: RwLock<HashMap<NodeId, MetaRaft>>,
    /// Cut links, both directions stored.
    cut: RwLock<HashSet<(NodeId, NodeId)>>,
}

impl LocalNet {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The network factory for `node`'s groups.
    pub fn network(self: &Arc<Self>, node: NodeId) -> LocalNetwork {
        LocalNetwork {
            net: self.clone(),
            from: node,
            to: node,
        }
    }

    /// Makes `raft` reachable as `node`.
    pub fn add(&self, node: NodeId, raft: MetaRaft) {
        self.nodes.write().insert(node, raft);
    }

    /// Takes `node` off the network (as a killed process): RPCs to it fail from now on.
    pub fn remove(&self, node: NodeId) -> Option<MetaRaft> {
        self.nodes.write().remove(&node)
    }

    /// Cuts the link between `a` and `b`, both ways.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        let mut cut = self.cut.write();
        cut.insert((a, b));
        cut.insert((b, a));
    }

    /// Cuts `node` off from every other node it has been added with.
    pub fn isolate(&self, node: NodeId) {
        let others: Vec<NodeId> = self.nodes.read().keys().copied().collect();
        for other in others.into_iter().filter(|&o| o != node) {
            self.cut(node, other);
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.cut.write().clear();
    }

    fn route(&self, from: NodeId, to: NodeId) -> Result<MetaRaft, Unreachable<Warren>> {
        if self.cut.read().contains(&(from, to)) {
            return Err(Unreachable::from_string(format!(
                "link {from} -> {to} is cut"
            )));
        }
        self.nodes
            .read()
            .get(&to)
            .cloned()
            .ok_or_else(|| Unreachable::from_string(format!("node {to} is not running")))
    }
}

/// One node's view of the [`LocalNet`]: the factory openraft asks for a handle per target,
/// and that handle.
#[derive(Clone)]
pub struct LocalNetwork {
    net: Arc<LocalNet>,
    from: NodeId,
    to: NodeId,
}

impl LocalNetwork {
    fn target(&self) -> Result<MetaRaft, Unreachable<Warren>> {
        self.net.route(self.from, self.to)
    }
}

/// A remote node that failed (shut down, or its core stopped) looks unreachable to the caller.
fn unreachable(e: impl std::fmt::Display) -> Unreachable<Warren> {
    Unreachable::from_string(e.to_string())
}

impl RaftNetworkFactory<Warren> for LocalNetwork {
    type Network = LocalNetwork;

    async fn new_client(&mut self, target: NodeId, _node: &Peer) -> Self::Network {
        LocalNetwork {
            net: self.net.clone(),
            from: self.from,
            to: target,
        }
    }
}

impl RaftNetworkV2<Warren> for LocalNetwork {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Warren>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<Warren>, RPCError<Warren>> {
        let raft = self.target()?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| unreachable(e).into())
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<Warren>,
        _option: RPCOption,
    ) -> Result<VoteResponse<Warren>, RPCError<Warren>> {
        let raft = self.target()?;
        raft.vote(rpc).await.map_err(|e| unreachable(e).into())
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<Warren>,
        _option: RPCOption,
    ) -> Result<VoteResponse<Warren>, RPCError<Warren>> {
        let raft = self.target()?;
        raft.pre_vote(rpc).await.map_err(|e| unreachable(e).into())
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<Warren>,
        snapshot: SnapshotOf<Warren, Self::SnapshotData>,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<Warren>, StreamingError<Warren>> {
        let raft = self.target()?;
        raft.install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| unreachable(e).into())
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<Warren>,
        _option: RPCOption,
    ) -> Result<TransferLeaderResponse<Warren>, RPCError<Warren>> {
        let raft = self.target()?;
        raft.handle_transfer_leader(req)
            .await
            .map_err(|e| unreachable(e).into())
    }
}
