//! Three metadata groups, connected in one process by `LocalNet` and over real TCP on
//! 127.0.0.1, .2 and .3 (one port, as three machines would use it): elections, replication,
//! failover after a leader is killed, a restarted node catching up (by log or by snapshot),
//! and a partitioned leader that commits nothing. Every scenario runs on both wirings.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use warren_cluster::openraft::{Config, SnapshotPolicy};
use warren_cluster::wire::{Frame, Kind};
use warren_cluster::{
    serve, ClusterSecret, Command, Detector, DetectorConfig, Groups, LocalNet, MemLog, MetaMachine,
    MetaRaft, NodeId, Peer, PeerHealth, Transport,
};

/// Every node of the test clusters knows it.
const SECRET: &[u8] = b"the cluster's secret";

const NODES: [NodeId; 3] = [1, 2, 3];

/// What survives a node's "crash" here: its log and its applied state (an in-memory stand-in
/// for the disk a real node keeps them on).
struct Node {
    log: MemLog,
    machine: MetaMachine,
    raft: Option<MetaRaft>,
    /// Over TCP: this incarnation's links to its peers, and its listener's task.
    tcp: Option<(Arc<Transport>, JoinHandle<()>)>,
}

#[derive(Clone, Copy, Debug)]
enum Wiring {
    Local,
    Tcp,
}

struct Cluster {
    wiring: Wiring,
    net: Arc<LocalNet>,
    /// The cluster port every node listens on, at 127.0.0.<id>.
    port: u16,
    config: Arc<Config>,
    nodes: BTreeMap<NodeId, Node>,
}

fn put(key: &str, value: &str) -> Command {
    Command::Put {
        key: key.to_owned(),
        value: value.as_bytes().to_vec(),
    }
}

/// The metadata group's id on the cluster link.
const META: u64 = 0;

fn addr(id: NodeId, port: u16) -> String {
    format!("127.0.0.{id}:{port}")
}

/// A port free on all three loopback addresses.
async fn free_port() -> Result<u16> {
    for _ in 0..20 {
        let port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
        let mut free = true;
        for id in NODES {
            free &= TcpListener::bind(addr(id, port)).await.is_ok();
        }
        if free {
            return Ok(port);
        }
    }
    bail!("no port free on 127.0.0.1-3")
}

impl Cluster {
    /// Three nodes, every one a voter; node 1 initializes the membership.
    async fn form(wiring: Wiring) -> Result<Cluster> {
        let config = Config {
            heartbeat_interval: 50,
            election_timeout_min: 300,
            election_timeout_max: 600,
            // Small, so a node that misses a few dozen entries is sent a snapshot.
            snapshot_policy: SnapshotPolicy::LogsSinceLast(40),
            max_in_snapshot_log_to_keep: 0,
            enable_pre_vote: Some(true),
            ..Default::default()
        };
        let mut cluster = Cluster {
            wiring,
            net: LocalNet::new(),
            port: free_port().await?,
            config: Arc::new(config.validate()?),
            nodes: BTreeMap::new(),
        };
        for id in NODES {
            cluster.nodes.insert(
                id,
                Node {
                    log: MemLog::new(),
                    machine: MetaMachine::new(),
                    raft: None,
                    tcp: None,
                },
            );
            cluster.start(id).await?;
        }
        let members: BTreeMap<NodeId, Peer> = NODES
            .iter()
            .map(|&id| {
                (
                    id,
                    Peer::new(format!("warren@n{id}"), addr(id, cluster.port)),
                )
            })
            .collect();
        cluster.raft(1)?.initialize(members).await?;
        Ok(cluster)
    }

    async fn start(&mut self, id: NodeId) -> Result<()> {
        let (config, port) = (self.config.clone(), self.port);
        let node = self.nodes.get_mut(&id).context("no such node")?;
        let (log, machine) = (node.log.clone(), node.machine.clone());
        let raft = match self.wiring {
            Wiring::Local => {
                let raft = MetaRaft::new(id, config, self.net.network(id), log, machine).await?;
                self.net.add(id, raft.clone());
                raft
            }
            Wiring::Tcp => {
                let transport = Transport::new(ClusterSecret::new(SECRET));
                let raft = MetaRaft::new(id, config, transport.network(META), log, machine).await?;
                let groups = Groups::new();
                groups.add(META, raft.clone());
                let listener = TcpListener::bind(addr(id, port)).await?;
                let server = serve(listener, groups, ClusterSecret::new(SECRET));
                node.tcp = Some((transport, tokio::spawn(server)));
                raft
            }
        };
        node.raft = Some(raft);
        Ok(())
    }

    /// As `kill -9`: off the network at once (over TCP: its listener and every connection
    /// closed), its tasks stopped; its log and state stay.
    async fn kill(&mut self, id: NodeId) -> Result<()> {
        self.net.remove(id);
        let node = self.nodes.get_mut(&id).context("no such node")?;
        if let Some((_, server)) = node.tcp.take() {
            server.abort();
            let _ = server.await;
        }
        if let Some(raft) = node.raft.take() {
            raft.shutdown()
                .await
                .map_err(|e| anyhow!("shutdown: {e}"))?;
        }
        Ok(())
    }

    /// Cuts `id` off from the others, both ways (or restores its links).
    fn isolate(&self, id: NodeId, cut: bool) {
        match self.wiring {
            Wiring::Local if cut => self.net.isolate(id),
            Wiring::Local => self.net.heal(),
            Wiring::Tcp => {
                for other in NODES.into_iter().filter(|&o| o != id) {
                    for (from, to) in [(id, other), (other, id)] {
                        if let Some((t, _)) = &self.nodes[&from].tcp {
                            t.cut(to, cut);
                        }
                    }
                }
            }
        }
    }

    fn raft(&self, id: NodeId) -> Result<&MetaRaft> {
        self.nodes
            .get(&id)
            .and_then(|n| n.raft.as_ref())
            .with_context(|| format!("node {id} is not running"))
    }

    fn running(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raft.is_some())
            .map(|(&id, _)| id)
            .collect()
    }

    /// Waits until the running nodes in `among` agree on a leader (one of them), other than
    /// `not`.
    async fn leader(&self, among: &[NodeId], not: Option<NodeId>) -> Result<NodeId> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut leaders = BTreeSet::new();
            for raft in among.iter().filter_map(|id| self.raft(*id).ok()) {
                leaders.insert(raft.current_leader().await);
            }
            if let [Some(l)] = leaders.iter().copied().collect::<Vec<_>>()[..] {
                if among.contains(&l) && Some(l) != not && self.raft(l)?.is_leader() {
                    return Ok(l);
                }
            }
            if Instant::now() > deadline {
                bail!("no agreed leader among {among:?} (saw {leaders:?})");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes through the leader of `among`, following it when leadership moves mid-way (a
    /// write a follower refuses was never proposed, so trying again cannot apply it twice).
    async fn put(&self, among: &[NodeId], key: &str, value: &str) -> Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let leader = self.leader(among, None).await?;
            match self.raft(leader)?.client_write(put(key, value)).await {
                Ok(reply) => return Ok(reply.data.index),
                Err(e) if e.forward_to_leader().is_some() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits until every node in `ids` has applied `index`, then checks they hold the same
    /// records.
    async fn converge(&self, ids: &[NodeId], index: u64) -> Result<BTreeMap<String, Vec<u8>>> {
        for id in ids {
            self.raft(*id)?
                .wait(Some(Duration::from_secs(10)))
                .applied_index_at_least(Some(index), format!("node {id} applies {index}"))
                .await?;
        }
        let first = self.nodes[&ids[0]].machine.records();
        for id in &ids[1..] {
            let other = self.nodes[id].machine.records();
            if other != first {
                bail!(
                    "node {id} diverged from node {}: {other:?} vs {first:?}",
                    ids[0]
                );
            }
        }
        Ok(first)
    }

    async fn stop(mut self) -> Result<()> {
        for id in self.running() {
            self.kill(id).await?;
        }
        Ok(())
    }
}

async fn elect_and_replicate(wiring: Wiring) -> Result<()> {
    let cluster = Cluster::form(wiring).await?;
    for i in 0..100 {
        cluster
            .put(&NODES, &format!("queue/{i:02x}"), &format!("def {i}"))
            .await?;
    }
    let last = cluster.put(&NODES, "queue/00", "redeclared").await?;
    let records = cluster.converge(&NODES, last).await?;
    assert_eq!(records.len(), 100);
    assert_eq!(records["queue/00"], b"redeclared");
    assert_eq!(records["queue/63"], b"def 99");

    // A follower refuses a write and names the leader, so a node can forward it.
    let leader = cluster.leader(&NODES, None).await?;
    let follower = NODES
        .into_iter()
        .find(|&n| n != leader)
        .context("a follower")?;
    let err = cluster
        .raft(follower)?
        .client_write(Command::Delete {
            key: "queue/00".into(),
        })
        .await
        .expect_err("a follower does not accept writes");
    let forward = err
        .forward_to_leader()
        .context("a forward-to-leader error")?;
    assert_eq!(forward.leader_id, Some(leader));
    cluster.stop().await
}

async fn fail_over_and_catch_up(wiring: Wiring) -> Result<()> {
    let mut cluster = Cluster::form(wiring).await?;
    cluster.leader(&NODES, None).await?;
    let mut written = 0u32;
    let mut last = 0;
    for cycle in 0..5 {
        for _ in 0..30 {
            last = cluster
                .put(&NODES, &format!("key/{written}"), &format!("cycle {cycle}"))
                .await?;
            written += 1;
        }
        let killed = cluster.leader(&NODES, None).await?;
        let t = Instant::now();
        cluster.kill(killed).await?;
        let alive = cluster.running();
        cluster.leader(&alive, Some(killed)).await?;
        let elected = t.elapsed();
        assert!(
            elected < Duration::from_secs(5),
            "cycle {cycle}: a new leader took {elected:?}"
        );
        // The survivors carry on: a majority of two commits.
        for _ in 0..30 {
            last = cluster
                .put(&alive, &format!("key/{written}"), &format!("cycle {cycle}"))
                .await?;
            written += 1;
        }
        cluster.converge(&alive, last).await?;
        // The killed node comes back with what it had, and catches up (30 entries behind:
        // by snapshot when the leader has purged them, else by the log).
        cluster.start(killed).await?;
        let records = cluster.converge(&NODES, last).await?;
        assert_eq!(records.len(), written as usize, "cycle {cycle}");
    }
    // A returning node 30 entries behind a leader that snapshots every 40 and keeps no log
    // behind its snapshot is, in some cycles, sent the snapshot.
    let installed: u64 = cluster
        .nodes
        .values()
        .map(|n| n.machine.snapshots_installed())
        .sum();
    assert!(installed > 0, "no node caught up by snapshot");
    cluster.stop().await
}

async fn partition_and_heal(wiring: Wiring) -> Result<()> {
    let cluster = Cluster::form(wiring).await?;
    let old = cluster.leader(&NODES, None).await?;
    let last = cluster.put(&NODES, "before", "the partition").await?;
    cluster.converge(&NODES, last).await?;

    cluster.isolate(old, true);
    // The cut-off leader cannot reach a majority: its write is never committed.
    let lost = tokio::time::timeout(
        Duration::from_secs(2),
        cluster
            .raft(old)?
            .client_write(put("minority", "never committed")),
    )
    .await;
    assert!(
        !matches!(lost, Ok(Ok(_))),
        "a minority leader committed a write: {lost:?}"
    );
    let majority: Vec<NodeId> = NODES.into_iter().filter(|&n| n != old).collect();
    // The majority elects a leader of its own.
    cluster.leader(&majority, Some(old)).await?;
    let mut last = 0;
    for i in 0..20 {
        last = cluster
            .put(&majority, &format!("majority/{i}"), "committed")
            .await?;
    }

    cluster.isolate(old, false);
    let records = cluster.converge(&NODES, last).await?;
    assert!(
        !records.contains_key("minority"),
        "the minority's write survived"
    );
    assert_eq!(records.len(), 21);
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_three_nodes_elect_one_leader_and_apply_the_same_records() -> Result<()> {
    elect_and_replicate(Wiring::Local).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_a_killed_leader_is_replaced_and_catches_up_when_it_returns() -> Result<()> {
    fail_over_and_catch_up(Wiring::Local).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_a_partitioned_leader_commits_nothing_and_nothing_diverges() -> Result<()> {
    partition_and_heal(Wiring::Local).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_three_nodes_elect_one_leader_and_apply_the_same_records() -> Result<()> {
    elect_and_replicate(Wiring::Tcp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_a_killed_leader_is_replaced_and_catches_up_when_it_returns() -> Result<()> {
    fail_over_and_catch_up(Wiring::Tcp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_a_partitioned_leader_commits_nothing_and_nothing_diverges() -> Result<()> {
    partition_and_heal(Wiring::Tcp).await
}

/// Reads one frame off a raw connection; None once the peer has closed it.
async fn raw_frame(s: &mut tokio::net::TcpStream) -> Result<Option<Frame>> {
    use tokio::io::AsyncReadExt;
    let mut prefix = [0u8; 4];
    match s.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut rest = vec![0u8; Frame::rest_len(prefix)?];
    s.read_exact(&mut rest).await?;
    Ok(Some(Frame::decode(&rest)?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_a_peer_without_the_secret_is_refused_before_any_request() -> Result<()> {
    use tokio::io::AsyncWriteExt;
    use warren_cluster::openraft::async_runtime::WatchReceiver;
    let cluster = Cluster::form(Wiring::Tcp).await?;
    let leader = cluster.leader(&NODES, None).await?;
    let last = cluster.put(&NODES, "k", "v").await?;
    cluster.converge(&NODES, last).await?;
    let term = cluster
        .raft(leader)?
        .metrics()
        .borrow_watched()
        .current_term;
    let target = addr(leader, cluster.port);
    let frame = |kind, body: Vec<u8>| {
        Frame {
            kind,
            group: META,
            corr: 1,
            body,
        }
        .encode()
    };
    // A forged proof: the listener closes the connection without a word more.
    let mut s = tokio::net::TcpStream::connect(&target).await?;
    let challenge = raw_frame(&mut s).await?.context("no challenge")?;
    assert_eq!(challenge.kind, Kind::Challenge);
    assert_eq!(challenge.body.len(), 32);
    s.write_all(&frame(Kind::Hello, vec![7; 64])).await?;
    let answer = tokio::time::timeout(Duration::from_secs(5), raw_frame(&mut s)).await?;
    assert!(answer?.is_none(), "a forged proof got an answer");
    // A request sent straight away, without the handshake (a vote with a far higher term,
    // which would depose the leader if it were handled): refused, never answered.
    let vote = warren_cluster::openraft::raft::VoteRequest::<warren_cluster::Warren>::new(
        warren_cluster::openraft::alias::VoteOf::<warren_cluster::Warren>::new(term + 100, 9),
        None,
    );
    let mut s = tokio::net::TcpStream::connect(&target).await?;
    s.write_all(&frame(Kind::Vote, bincode::serialize(&vote)?))
        .await?;
    let first = raw_frame(&mut s).await?.context("no challenge")?;
    assert_eq!(first.kind, Kind::Challenge);
    let answer = tokio::time::timeout(Duration::from_secs(5), raw_frame(&mut s)).await?;
    assert!(
        answer?.is_none(),
        "an unauthenticated request got an answer"
    );
    // A node with another secret cannot reach the cluster either (its links fail the
    // handshake), and the cluster goes on under the same leader and term.
    let outsider = Transport::new(ClusterSecret::new(b"another secret"));
    let mut net = outsider.network(META);
    use warren_cluster::openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
    let mut client = net
        .new_client(leader, &Peer::new("n", target.clone()))
        .await;
    let refused = client
        .vote(vote, RPCOption::new(Duration::from_secs(3)))
        .await;
    assert!(
        refused.is_err(),
        "a node with the wrong secret was answered"
    );
    let last = cluster.put(&NODES, "k2", "v2").await?;
    cluster.converge(&NODES, last).await?;
    assert_eq!(cluster.leader(&NODES, None).await?, leader);
    assert_eq!(
        cluster
            .raft(leader)?
            .metrics()
            .borrow_watched()
            .current_term,
        term
    );
    cluster.stop().await
}

/// Waits until `detector` reports `node` as `up` (or fails after `within`); returns how long.
async fn health_becomes(
    detector: &Detector,
    node: NodeId,
    up: bool,
    within: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    let mut rx = detector.subscribe();
    let reached = |h: &PeerHealth| h.get(&node) == Some(&up);
    tokio::time::timeout(within, rx.wait_for(reached))
        .await
        .map_err(|_| {
            anyhow!(
                "node {node} not reported {} within {within:?}",
                if up { "up" } else { "suspected" }
            )
        })??;
    Ok(start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_the_failure_detector_suspects_a_dead_or_cut_off_peer_and_clears_it_when_it_returns(
) -> Result<()> {
    let mut cluster = Cluster::form(Wiring::Tcp).await?;
    let config = DetectorConfig::default();
    let budget = config.suspect_after + Duration::from_millis(900);
    let port = cluster.port;
    let detector_of = |cluster: &Cluster, id: NodeId| -> Result<Arc<Detector>> {
        let (transport, _) = cluster.nodes[&id].tcp.as_ref().context("not on TCP")?;
        let d = Detector::new(transport.clone(), config);
        for other in NODES.into_iter().filter(|&o| o != id) {
            d.watch(other, Peer::new(format!("n{other}"), addr(other, port)));
        }
        Ok(d)
    };
    let d1 = detector_of(&cluster, 1)?;
    let d2 = detector_of(&cluster, 2)?;
    // Everyone answers: nothing is suspected for a while.
    tokio::time::sleep(config.suspect_after * 2).await;
    assert_eq!(d1.health(), PeerHealth::from([(2, true), (3, true)]));
    assert_eq!(d2.health(), PeerHealth::from([(1, true), (3, true)]));

    // Node 3 dies: both others suspect it within the budget.
    cluster.kill(3).await?;
    let t1 = health_becomes(&d1, 3, false, budget).await?;
    let t2 = health_becomes(&d2, 3, false, budget).await?;
    assert!(
        d1.health()[&2],
        "a live peer was suspected with the dead one"
    );
    // It comes back: cleared at its first answer.
    cluster.start(3).await?;
    health_becomes(&d1, 3, true, budget).await?;
    health_becomes(&d2, 3, true, budget).await?;

    // A one-way cut (1 cannot reach 2; 2 still reaches 1): only node 1 suspects.
    let (t, _) = cluster.nodes[&1].tcp.as_ref().context("tcp")?;
    t.cut(2, true);
    health_becomes(&d1, 2, false, budget).await?;
    tokio::time::sleep(budget).await;
    assert!(
        d2.health()[&1],
        "the cut was one way, yet node 2 suspects node 1"
    );
    t.cut(2, false);
    health_becomes(&d1, 2, true, budget).await?;

    // A link slower than the probes allow counts as down too, and recovers with the link.
    t.delay(3, Duration::from_secs(1));
    health_becomes(&d1, 3, false, budget * 2).await?;
    t.delay(3, Duration::ZERO);
    health_becomes(&d1, 3, true, budget * 2).await?;
    eprintln!("dead peer suspected after {t1:?} (node 1) and {t2:?} (node 2)");
    cluster.stop().await
}
