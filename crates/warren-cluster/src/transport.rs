//! Raft RPCs between processes over TCP.
//!
//! Each node listens on its cluster address ([`serve`]) and keeps one connection to each
//! peer ([`Link`]), opened on first use and again after it fails. Requests from every group
//! share it, told apart by group id and answered by correlation number, so a slow snapshot
//! does not hold up a heartbeat: the server handles each request in a task of its own.
//! Links can be cut from outside ([`Transport::cut`]) for fault tests.

use std::collections::HashMap;
use std::future::Future;
use std::io::Cursor;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::storage::Snapshot;
use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::auth::{self, ClusterSecret, CHALLENGE_LEN, PROOF_LEN};
use crate::types::{NodeId, Peer, Warren};
use crate::wire::{Frame, Kind, WireError};
use crate::MetaRaft;

/// How long opening a connection to a peer may take before the RPC counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a connection's handshake may take (either end gives up after it).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// The groups a node serves, by group id.
#[derive(Default)]
pub struct Groups {
    meta: RwLock<HashMap<u64, MetaRaft>>,
}

impl Groups {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn add(&self, group: u64, raft: MetaRaft) {
        self.meta.write().insert(group, raft);
    }

    pub fn remove(&self, group: u64) -> Option<MetaRaft> {
        self.meta.write().remove(&group)
    }

    fn get(&self, group: u64) -> Option<MetaRaft> {
        self.meta.read().get(&group).cloned()
    }
}

/// Accepts peers' connections and answers their requests until the task is dropped or
/// aborted (which closes every connection it accepted: they live in its `JoinSet`). A
/// connection is served only once its peer has proven it knows `secret` (`auth.rs`).
pub async fn serve(listener: TcpListener, groups: Arc<Groups>, secret: ClusterSecret) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tracing::debug!(%peer, "cluster peer connected");
                    connections.spawn(answer(stream, groups.clone(), secret.clone()));
                }
                Err(e) => {
                    tracing::warn!("cluster listener: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> Result<Frame, std::io::Error> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix).await?;
    let len = Frame::rest_len(prefix).map_err(invalid)?;
    let mut rest = vec![0u8; len];
    r.read_exact(&mut rest).await?;
    Frame::decode(&rest).map_err(invalid)
}

async fn write_frame(
    w: &mut (impl AsyncWriteExt + Unpin),
    kind: Kind,
    body: Vec<u8>,
) -> Result<(), String> {
    let frame = Frame {
        kind,
        group: 0,
        corr: 0,
        body,
    };
    w.write_all(&frame.encode())
        .await
        .map_err(|e| format!("sending {kind:?}: {e}"))
}

async fn expect_frame(
    r: &mut (impl AsyncReadExt + Unpin),
    kind: Kind,
    len: usize,
) -> Result<Vec<u8>, String> {
    let f = read_frame(r)
        .await
        .map_err(|e| format!("waiting for {kind:?}: {e}"))?;
    if f.kind != kind || f.body.len() != len {
        return Err(format!(
            "expected {kind:?} ({len} bytes), got {:?} ({} bytes)",
            f.kind,
            f.body.len()
        ));
    }
    Ok(f.body)
}

/// The listener's side of the handshake (`auth.rs`).
async fn greet(
    r: &mut (impl AsyncReadExt + Unpin),
    w: &mut (impl AsyncWriteExt + Unpin),
    secret: &ClusterSecret,
) -> Result<(), String> {
    let a = auth::challenge()?;
    write_frame(w, Kind::Challenge, a.to_vec()).await?;
    let hello = expect_frame(r, Kind::Hello, CHALLENGE_LEN + PROOF_LEN).await?;
    let (b, proof) = hello.split_at(CHALLENGE_LEN);
    if !secret.check_dialer(&a, b, proof) {
        return Err("the peer does not know the cluster secret".into());
    }
    write_frame(w, Kind::Welcome, secret.listener_proof(&a, b)).await
}

/// The dialing side of the handshake (`auth.rs`).
async fn dial(
    r: &mut (impl AsyncReadExt + Unpin),
    w: &mut (impl AsyncWriteExt + Unpin),
    secret: &ClusterSecret,
) -> Result<(), String> {
    let a = expect_frame(r, Kind::Challenge, CHALLENGE_LEN).await?;
    let b = auth::challenge()?;
    let mut hello = b.to_vec();
    hello.extend_from_slice(&secret.dialer_proof(&a, &b));
    write_frame(w, Kind::Hello, hello).await?;
    let proof = expect_frame(r, Kind::Welcome, PROOF_LEN).await?;
    if !secret.check_listener(&a, &b, &proof) {
        return Err("the peer does not know the cluster secret".into());
    }
    Ok(())
}

fn invalid(e: WireError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

/// One peer's connection: requests in, each answered by a task of its own, responses out
/// through one writer.
async fn answer(stream: TcpStream, groups: Arc<Groups>, secret: ClusterSecret) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (mut r, mut w) = stream.into_split();
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, greet(&mut r, &mut w, &secret)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(%peer, "cluster connection refused: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "cluster connection refused: no handshake in {HANDSHAKE_TIMEOUT:?}");
            return;
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if w.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut handlers = JoinSet::new();
    loop {
        let frame = match read_frame(&mut r).await {
            Ok(f) => f,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::warn!("cluster peer dropped: {e}");
                }
                break;
            }
        };
        let (groups, tx) = (groups.clone(), tx.clone());
        handlers.spawn(async move {
            let body = handle(&groups, &frame).await;
            let response = Frame {
                kind: Kind::Response,
                group: frame.group,
                corr: frame.corr,
                body,
            };
            let _ = tx.send(response.encode());
        });
        while handlers.try_join_next().is_some() {}
    }
    writer.abort();
}

/// A request as a peer sent it, decoded.
#[derive(Debug)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<Warren>),
    Vote(VoteRequest<Warren>),
    PreVote(VoteRequest<Warren>),
    Snapshot(SnapshotMessage),
    TransferLeader(TransferLeaderRequest<Warren>),
    Ping,
}

/// Decodes a request frame's body by its kind. Peers' bytes are untrusted: anything that is
/// not a well-formed request is an error (answered as such), never a panic (fuzzed:
/// `warren_fuzz::cluster_frames`).
pub fn decode_request(frame: &Frame) -> Result<Request, String> {
    Ok(match frame.kind {
        Kind::AppendEntries => Request::AppendEntries(decode(&frame.body)?),
        Kind::Vote => Request::Vote(decode(&frame.body)?),
        Kind::PreVote => Request::PreVote(decode(&frame.body)?),
        Kind::Snapshot => Request::Snapshot(decode(&frame.body)?),
        Kind::TransferLeader => Request::TransferLeader(decode(&frame.body)?),
        Kind::Ping => Request::Ping,
        Kind::Response | Kind::Challenge | Kind::Hello | Kind::Welcome => {
            return Err(format!("a {:?} frame is not a request", frame.kind))
        }
    })
}

/// A request's answer: bincode of `Result<response, String>`.
async fn handle(groups: &Groups, frame: &Frame) -> Vec<u8> {
    if frame.kind == Kind::Ping {
        return reply::<()>(Ok(()));
    }
    let Some(raft) = groups.get(frame.group) else {
        return reply::<()>(Err(format!("no group {} on this node", frame.group)));
    };
    let request = match decode_request(frame) {
        Ok(r) => r,
        Err(e) => return reply::<()>(Err(e)),
    };
    match request {
        Request::AppendEntries(req) => {
            reply(raft.append_entries(req).await.map_err(|e| e.to_string()))
        }
        Request::Vote(req) => reply(raft.vote(req).await.map_err(|e| e.to_string())),
        Request::PreVote(req) => reply(raft.pre_vote(req).await.map_err(|e| e.to_string())),
        Request::Snapshot((vote, meta, data)) => {
            let snapshot = Snapshot {
                meta,
                snapshot: Cursor::new(data),
            };
            reply(
                raft.install_full_snapshot(vote, snapshot)
                    .await
                    .map_err(|e| e.to_string()),
            )
        }
        Request::TransferLeader(req) => reply(
            raft.handle_transfer_leader(req)
                .await
                .map_err(|e| e.to_string()),
        ),
        Request::Ping => reply::<()>(Ok(())),
    }
}

/// A snapshot as it travels: the sender's vote, the snapshot's meta and its bytes.
pub type SnapshotMessage = (VoteOf<Warren>, SnapshotMetaOf<Warren>, Vec<u8>);

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    bincode::deserialize(body).map_err(|e| format!("undecodable request: {e}"))
}

fn reply<T: Serialize>(result: Result<T, String>) -> Vec<u8> {
    bincode::serialize(&result).unwrap_or_else(|e| {
        bincode::serialize(&Err::<(), String>(format!("unencodable response: {e}")))
            .unwrap_or_default()
    })
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>;

/// An open connection to a peer: a writer channel and the requests awaiting answers.
struct Connection {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    pending: Pending,
    alive: Arc<AtomicBool>,
}

/// This node's link to one peer.
pub struct Link {
    addr: String,
    secret: ClusterSecret,
    connection: tokio::sync::Mutex<Option<Connection>>,
    next_corr: AtomicU64,
    cut: AtomicBool,
    /// Fault injection: every request waits this long (ms) before it is sent.
    delay_ms: AtomicU64,
}

impl Link {
    fn new(addr: String, secret: ClusterSecret) -> Self {
        Link {
            addr,
            secret,
            connection: tokio::sync::Mutex::new(None),
            next_corr: AtomicU64::new(1),
            cut: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
        }
    }

    async fn connect(&self) -> Result<Connection, String> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| format!("connecting to {} timed out", self.addr))?
            .map_err(|e| format!("connecting to {}: {e}", self.addr))?;
        let _ = stream.set_nodelay(true);
        let (mut r, mut w) = stream.into_split();
        tokio::time::timeout(HANDSHAKE_TIMEOUT, dial(&mut r, &mut w, &self.secret))
            .await
            .map_err(|_| format!("no handshake from {} in {HANDSHAKE_TIMEOUT:?}", self.addr))?
            .map_err(|e| format!("handshake with {}: {e}", self.addr))?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let pending: Pending = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let (p, a) = (pending.clone(), alive.clone());
        tokio::spawn(async move {
            let reader = async {
                while let Ok(frame) = read_frame(&mut r).await {
                    if let Some(waiter) = p.lock().remove(&frame.corr) {
                        let _ = waiter.send(frame.body);
                    }
                }
            };
            let writer = async {
                while let Some(bytes) = rx.recv().await {
                    if w.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
            };
            // Either side ending ends the connection; waiting requests fail (their senders
            // drop) and the next call reconnects.
            tokio::select! { _ = reader => {}, _ = writer => {} }
            a.store(false, Ordering::Release);
            p.lock().clear();
        });
        Ok(Connection { tx, pending, alive })
    }

    /// Sends a request and waits for its answer's body.
    async fn call(&self, kind: Kind, group: u64, body: Vec<u8>) -> Result<Vec<u8>, String> {
        let delay = self.delay_ms.load(Ordering::Acquire);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.cut.load(Ordering::Acquire) {
            return Err(format!("link to {} is cut", self.addr));
        }
        let corr = self.next_corr.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut slot = self.connection.lock().await;
            if !slot
                .as_ref()
                .is_some_and(|c| c.alive.load(Ordering::Acquire))
            {
                *slot = Some(self.connect().await?);
            }
            let c = slot.as_ref().ok_or("no connection")?;
            c.pending.lock().insert(corr, tx);
            let frame = Frame {
                kind,
                group,
                corr,
                body,
            };
            if c.tx.send(frame.encode()).is_err() {
                c.pending.lock().remove(&corr);
                return Err(format!("connection to {} closed", self.addr));
            }
        }
        rx.await
            .map_err(|_| format!("connection to {} closed before the answer", self.addr))
    }

    async fn rpc<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        kind: Kind,
        group: u64,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, Unreachable<Warren>> {
        let body = bincode::serialize(req).map_err(Unreachable::from_string)?;
        let answer = tokio::time::timeout(ttl, self.call(kind, group, body))
            .await
            .map_err(|_| {
                Unreachable::from_string(format!("no answer from {} in {ttl:?}", self.addr))
            })?
            .map_err(Unreachable::from_string)?;
        let result: Result<Resp, String> = bincode::deserialize(&answer)
            .map_err(|e| Unreachable::from_string(format!("undecodable answer: {e}")))?;
        result.map_err(Unreachable::from_string)
    }
}

/// A node's links to its peers, made on first use from the addresses Raft's membership gives.
pub struct Transport {
    links: RwLock<HashMap<NodeId, Arc<Link>>>,
    secret: ClusterSecret,
}

impl Transport {
    /// Links that prove knowledge of `secret` to the peers they dial (and check theirs).
    pub fn new(secret: ClusterSecret) -> Arc<Self> {
        Arc::new(Transport {
            links: RwLock::new(HashMap::new()),
            secret,
        })
    }

    /// The network factory for group `group`.
    pub fn network(self: &Arc<Self>, group: u64) -> TcpNetwork {
        TcpNetwork {
            transport: self.clone(),
            group,
            link: None,
        }
    }

    fn link(&self, node: NodeId, peer: &Peer) -> Arc<Link> {
        if let Some(l) = self.links.read().get(&node) {
            if l.addr == peer.addr {
                return l.clone();
            }
        }
        let link = Arc::new(Link::new(peer.addr.clone(), self.secret.clone()));
        self.links.write().insert(node, link.clone());
        link
    }

    /// Cuts (or restores) this node's outgoing link to `node`: its RPCs fail at once. The
    /// other direction is untouched (a one-way cut); cut both for a partition.
    pub fn cut(&self, node: NodeId, cut: bool) {
        if let Some(l) = self.links.read().get(&node) {
            l.cut.store(cut, Ordering::Release);
        }
    }

    /// Delays every request on this node's outgoing link to `node` by `delay` (zero: none).
    pub fn delay(&self, node: NodeId, delay: Duration) {
        if let Some(l) = self.links.read().get(&node) {
            l.delay_ms
                .store(delay.as_millis() as u64, Ordering::Release);
        }
    }

    /// Probes `node`'s liveness once: true if it answered within `timeout`.
    pub(crate) async fn ping(&self, node: NodeId, peer: &Peer, timeout: Duration) -> bool {
        let link = self.link(node, peer);
        matches!(
            tokio::time::timeout(timeout, link.call(Kind::Ping, 0, Vec::new())).await,
            Ok(Ok(_))
        )
    }
}

/// Raft's handle on one peer for one group (and the factory that makes such handles).
pub struct TcpNetwork {
    transport: Arc<Transport>,
    group: u64,
    link: Option<Arc<Link>>,
}

impl TcpNetwork {
    fn link(&self) -> Result<&Arc<Link>, Unreachable<Warren>> {
        self.link
            .as_ref()
            .ok_or_else(|| Unreachable::from_string("a factory is not a peer handle"))
    }
}

impl RaftNetworkFactory<Warren> for TcpNetwork {
    type Network = TcpNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Peer) -> Self::Network {
        TcpNetwork {
            transport: self.transport.clone(),
            group: self.group,
            link: Some(self.transport.link(target, node)),
        }
    }
}

impl RaftNetworkV2<Warren> for TcpNetwork {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Warren>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<Warren>, RPCError<Warren>> {
        let ttl = option.hard_ttl();
        Ok(self
            .link()?
            .rpc(Kind::AppendEntries, self.group, &rpc, ttl)
            .await?)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<Warren>,
        option: RPCOption,
    ) -> Result<VoteResponse<Warren>, RPCError<Warren>> {
        let ttl = option.hard_ttl();
        Ok(self.link()?.rpc(Kind::Vote, self.group, &rpc, ttl).await?)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<Warren>,
        option: RPCOption,
    ) -> Result<VoteResponse<Warren>, RPCError<Warren>> {
        let ttl = option.hard_ttl();
        Ok(self
            .link()?
            .rpc(Kind::PreVote, self.group, &rpc, ttl)
            .await?)
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<Warren>,
        snapshot: SnapshotOf<Warren, Self::SnapshotData>,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<Warren>, StreamingError<Warren>> {
        let message: SnapshotMessage = (vote, snapshot.meta, snapshot.snapshot.into_inner());
        let ttl = option.hard_ttl();
        Ok(self
            .link()?
            .rpc(Kind::Snapshot, self.group, &message, ttl)
            .await?)
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<Warren>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<Warren>, RPCError<Warren>> {
        let ttl = option.hard_ttl();
        Ok(self
            .link()?
            .rpc(Kind::TransferLeader, self.group, &req, ttl)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openraft_messages_survive_bincode() {
        let vote = VoteOf::<Warren>::new(3, 2);
        let req = VoteRequest::<Warren>::new(vote, None);
        let bytes = bincode::serialize(&req).expect("encodes");
        let back: VoteRequest<Warren> = bincode::deserialize(&bytes).expect("decodes");
        assert_eq!(back, req);
        let answer: Result<VoteResponse<Warren>, String> = Ok(VoteResponse::new(vote, None, true));
        let bytes = bincode::serialize(&answer).expect("encodes");
        let back: Result<VoteResponse<Warren>, String> =
            bincode::deserialize(&bytes).expect("decodes");
        assert_eq!(back, answer);
    }
}
