//! Node-level failure detection: each node probes each peer over the cluster link and
//! suspects one that has not answered for a while.
//!
//! Why a detector of its own, when Raft has election timeouts: with thousands of quorum-queue
//! groups, per-group election timers and heartbeats cost whole cores (the cluster plan, §3).
//! Idle groups will run without them, as RabbitMQ's Ra does with its Aten detector; what one
//! node learns about a peer here is what wakes every group that peer led. One probe per peer,
//! whatever the number of groups.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::transport::Transport;
use crate::types::{NodeId, Peer};

/// How often peers are probed and when one is suspected.
#[derive(Debug, Clone, Copy)]
pub struct DetectorConfig {
    /// Time between two probes of a peer (default 100 ms).
    pub interval: Duration,
    /// A peer that answered no probe for this long is suspected (default 600 ms: several
    /// probes, so one lost packet or a slow moment is not a failure).
    pub suspect_after: Duration,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            interval: Duration::from_millis(100),
            suspect_after: Duration::from_millis(600),
        }
    }
}

/// What this node currently thinks of each peer it watches: true = up, false = suspected.
pub type PeerHealth = BTreeMap<NodeId, bool>;

/// Probes peers and publishes their health. Dropping it stops the probes.
pub struct Detector {
    health: watch::Sender<PeerHealth>,
    probes: Mutex<BTreeMap<NodeId, JoinHandle<()>>>,
    transport: Arc<Transport>,
    config: DetectorConfig,
}

impl Detector {
    pub fn new(transport: Arc<Transport>, config: DetectorConfig) -> Arc<Self> {
        Arc::new(Detector {
            health: watch::Sender::new(PeerHealth::new()),
            probes: Mutex::new(BTreeMap::new()),
            transport,
            config,
        })
    }

    /// Starts watching `node` (at `peer`'s address); it counts as up until it misses probes.
    pub fn watch(self: &Arc<Self>, node: NodeId, peer: Peer) {
        let weak = Arc::downgrade(self);
        let task = tokio::spawn(probe(weak, node, peer));
        if let Some(old) = self.probes.lock().insert(node, task) {
            old.abort();
        }
        self.set(node, true);
    }

    /// Stops watching `node` (it left the cluster).
    pub fn forget(&self, node: NodeId) {
        if let Some(task) = self.probes.lock().remove(&node) {
            task.abort();
        }
        self.health.send_modify(|h| {
            h.remove(&node);
        });
    }

    /// The current view.
    pub fn health(&self) -> PeerHealth {
        self.health.borrow().clone()
    }

    /// Changes of the view, as they happen.
    pub fn subscribe(&self) -> watch::Receiver<PeerHealth> {
        self.health.subscribe()
    }

    fn set(&self, node: NodeId, up: bool) {
        self.health
            .send_if_modified(|h| h.insert(node, up) != Some(up));
    }
}

impl Drop for Detector {
    fn drop(&mut self) {
        for (_, task) in std::mem::take(&mut *self.probes.lock()) {
            task.abort();
        }
    }
}

/// One peer's probe loop; ends when the detector is dropped.
async fn probe(detector: Weak<Detector>, node: NodeId, peer: Peer) {
    let mut last_answer = Instant::now();
    loop {
        let (transport, config) = match detector.upgrade() {
            Some(d) => (d.transport.clone(), d.config),
            None => return,
        };
        let started = Instant::now();
        // A probe may take up to an interval; a peer that does not answer in time missed it.
        if transport.ping(node, &peer, config.interval).await {
            last_answer = Instant::now();
        }
        let up = last_answer.elapsed() < config.suspect_after;
        match detector.upgrade() {
            Some(d) => d.set(node, up),
            None => return,
        }
        tokio::time::sleep(config.interval.saturating_sub(started.elapsed())).await;
    }
}
