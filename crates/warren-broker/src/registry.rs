//! The registry of live connections, their channels and consumers, readable by any front end
//! (the management API lists them, closes a connection by name) without touching the message
//! path: entries change when a connection or channel opens or closes, never per message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::channel::{Channel, ChannelSnapshot, ConsumerSnapshot};
use crate::error::{BrokerError, EntityKind, Result};
use crate::limits::UserLimits;
use crate::outbox::Outbox;
use crate::spec::{ConnectionId, ConnectionInfo};
use crate::stats::{Churn, ConnectionCounters, MessageStats, SizeHistogram};
use crate::vhost::VHost;

/// How the broker asks a front end to close one of its connections (the management API's
/// "close connection"). The front end tells the client (AMQP: 320 CONNECTION_FORCED with
/// `reason`) and then closes.
pub trait ConnectionControl: Send + Sync {
    fn close(&self, reason: &str);
}

/// A live connection, as the registry keeps it.
pub struct Connection {
    pub id: ConnectionId,
    pub info: ConnectionInfo,
    counters: Arc<ConnectionCounters>,
    /// Open channels, in the order they opened. Changed on channel open and close only.
    channels: Mutex<Vec<Arc<Channel>>>,
    control: Box<dyn ConnectionControl>,
    vhost: Arc<VHost>,
    churn: Arc<Churn>,
    user_limits: Arc<UserLimits>,
    /// Reading is paused by a resource alarm.
    blocked: AtomicBool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("name", &self.info.name)
            .finish()
    }
}

/// A connection's state as the management API shows it.
#[derive(Debug, Clone)]
pub struct ConnectionSnapshot {
    pub id: ConnectionId,
    pub info: ConnectionInfo,
    /// "running", or "blocked" while a resource alarm holds its publishers.
    pub state: &'static str,
    pub channels: usize,
    pub recv_oct: u64,
    pub recv_cnt: u64,
    pub send_oct: u64,
    pub send_cnt: u64,
}

impl Connection {
    /// Bytes and frames this connection moved; its reader and writer tasks add to them.
    pub fn counters(&self) -> &ConnectionCounters {
        &self.counters
    }

    pub fn vhost(&self) -> &Arc<VHost> {
        &self.vhost
    }

    /// Opens channel `id` on this connection; deliveries for it go to `outbox`. Refused
    /// (530 on AMQP, closing the connection) once the user's `max-channels` are open.
    pub fn open_channel(&self, id: u16, outbox: Arc<dyn Outbox>) -> Result<Arc<Channel>> {
        self.user_limits.open_channel(&self.info.user)?;
        let ch = Arc::new(Channel::new(id, self.id, outbox));
        self.channels.lock().push(ch.clone());
        Churn::bump(&self.churn.channels_opened);
        Ok(ch)
    }

    /// The channel is closed (the caller closed the broker channel: consumers cancelled,
    /// unacked messages returned). Its counts are kept in its vhost's and exchanges' totals.
    pub fn close_channel(&self, ch: &Arc<Channel>) {
        let removed = {
            let mut channels = self.channels.lock();
            let before = channels.len();
            channels.retain(|c| !Arc::ptr_eq(c, ch));
            before != channels.len()
        };
        if removed {
            ch.retire(&self.vhost);
            self.user_limits.close_channel(&self.info.user);
            Churn::bump(&self.churn.channels_closed);
        }
    }

    pub fn channels(&self) -> Vec<Arc<Channel>> {
        self.channels.lock().clone()
    }

    pub fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ConnectionSnapshot {
        ConnectionSnapshot {
            id: self.id,
            info: self.info.clone(),
            state: if self.blocked.load(Ordering::Relaxed) {
                "blocked"
            } else {
                "running"
            },
            channels: self.channels.lock().len(),
            recv_oct: self.counters.recv_oct.get(),
            recv_cnt: self.counters.recv_cnt.get(),
            send_oct: self.counters.send_oct.get(),
            send_cnt: self.counters.send_cnt.get(),
        }
    }

    /// Asks the front end to close this connection, telling the client `reason`.
    pub fn close(&self, reason: &str) {
        self.control.close(reason);
    }
}

/// Every live connection, with the churn counts and user limits they share.
pub(crate) struct Registry {
    connections: RwLock<HashMap<ConnectionId, Arc<Connection>>>,
    churn: Arc<Churn>,
    user_limits: Arc<UserLimits>,
}

impl Registry {
    pub fn new(churn: Arc<Churn>, user_limits: Arc<UserLimits>) -> Self {
        Registry {
            connections: RwLock::new(HashMap::new()),
            churn,
            user_limits,
        }
    }

    pub fn add(
        &self,
        id: ConnectionId,
        info: ConnectionInfo,
        counters: Arc<ConnectionCounters>,
        control: Box<dyn ConnectionControl>,
        vhost: Arc<VHost>,
    ) -> Arc<Connection> {
        let (churn, user_limits) = (self.churn.clone(), self.user_limits.clone());
        let c = Arc::new(Connection {
            id,
            info,
            counters,
            channels: Mutex::new(Vec::new()),
            control,
            vhost,
            churn: churn.clone(),
            user_limits,
            blocked: AtomicBool::new(false),
        });
        self.connections.write().insert(id, c.clone());
        Churn::bump(&churn.connections_opened);
        c
    }

    /// Forgets a connection whose channels are all closed.
    pub fn remove(&self, id: ConnectionId) {
        let removed = self.connections.write().remove(&id);
        if let Some(c) = removed {
            // Channels the front end did not close one by one (it normally does).
            for ch in c.channels() {
                c.close_channel(&ch);
            }
            Churn::bump(&self.churn.connections_closed);
        }
    }

    /// How many connections are open to `vhost`, and by `user`.
    pub fn count(&self, vhost: &str, user: &str) -> (u64, u64) {
        let conns = self.connections.read();
        let in_vhost = conns.values().filter(|c| c.info.vhost == vhost).count();
        let by_user = conns.values().filter(|c| c.info.user == user).count();
        (in_vhost as u64, by_user as u64)
    }

    /// Open connections on the node.
    pub fn open_count(&self) -> usize {
        self.connections.read().len()
    }

    pub fn all(&self) -> Vec<Arc<Connection>> {
        let mut v: Vec<Arc<Connection>> = self.connections.read().values().cloned().collect();
        v.sort_by_key(|c| c.id);
        v
    }

    pub fn by_name(&self, name: &str) -> Result<Arc<Connection>> {
        self.connections
            .read()
            .values()
            .find(|c| c.info.name == name)
            .cloned()
            .ok_or_else(|| BrokerError::NotFound {
                kind: EntityKind::Connection,
                name: name.to_owned(),
                vhost: String::new(),
            })
    }

    pub fn channels(&self) -> Vec<ChannelSnapshot> {
        self.all()
            .iter()
            .flat_map(|c| {
                c.channels()
                    .into_iter()
                    .map(move |ch| ch.snapshot(&c.info))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub fn consumers(&self) -> Vec<ConsumerSnapshot> {
        self.all()
            .iter()
            .flat_map(|c| {
                c.channels()
                    .into_iter()
                    .flat_map(|ch| ch.consumer_snapshots(&c.info))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The message counts of the live channels in `vhost` (all vhosts: None), with their
    /// size histograms.
    pub fn live_stats(&self, vhost: Option<&str>) -> (MessageStats, SizeHistogram, usize) {
        let mut stats = MessageStats::default();
        let mut sizes = SizeHistogram::default();
        let mut publishers = 0;
        for c in self.all() {
            if vhost.is_some_and(|v| v != c.info.vhost) {
                continue;
            }
            for ch in c.channels() {
                let s = ch.stats();
                if s.publish > 0 {
                    publishers += 1;
                }
                stats.add(&s);
                sizes.add(&ch.sizes());
            }
        }
        (stats, sizes, publishers)
    }
}
