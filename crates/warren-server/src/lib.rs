//! `warren-server`: the AMQP 0-9-1 server.
//!
//! Owns: TCP and TLS listeners ([`tls`]: rustls configurations from PEM files, reloaded when
//! the files change), the connection handshake (SASL PLAIN, AMQPLAIN and EXTERNAL, tuning),
//! heartbeats, one task per connection with its channel state machines, the mapping of AMQP
//! methods onto `warren-broker`, and the mapping of broker errors onto reply codes
//! ([`error`]).
//!
//! Must not know: HTTP. It does not implement routing or queueing itself: the broker does.

pub mod alarm;
pub mod basic;
pub mod channel;
pub mod connection;
pub mod driven;
pub mod error;
pub mod exchange;
pub mod outbox;
pub mod queue;
pub mod tls;
pub mod tx;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info};
use warren_broker::Broker;

pub use error::AmqpError;

/// Server settings; the defaults are RabbitMQ's.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub frame_max: u32,
    pub channel_max: u16,
    /// Heartbeat interval proposed to clients, in seconds (0 disables).
    pub heartbeat: u16,
    pub handshake_timeout: Duration,
    /// Largest message body accepted (RabbitMQ 4's default: 16 MiB).
    pub max_message_size: u64,
    pub cluster_name: String,
    /// Memory and disk alarms that block publishers.
    pub alarms: alarm::AlarmConfig,
    /// How often the broker's time-driven work runs ([`Broker::tick`]: message TTL, queue
    /// expiry, delayed messages). Also bounds how late that work can be.
    pub tick_interval: Duration,
    /// How long a delivery may stay unacknowledged before its channel is closed with 406
    /// (RabbitMQ's `consumer_timeout`, 30 minutes by default; None disables it). A queue's
    /// `x-consumer-timeout` overrides it for that queue's deliveries.
    pub consumer_timeout: Option<Duration>,
    /// How often each connection checks its channels against the consumer timeout (a
    /// timeout fires up to this much late; RabbitMQ checks about once a minute).
    pub consumer_timeout_check: Duration,
    /// SASL mechanisms offered, in this order (RabbitMQ's `auth_mechanisms`). EXTERNAL is
    /// offered only on TLS connections whose client sent a verified certificate.
    pub auth_mechanisms: Vec<AuthMechanism>,
    /// Where EXTERNAL finds the user's name in a client certificate.
    pub cert_login: tls::CertLogin,
}

/// A SASL mechanism Warren can offer in `connection.start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMechanism {
    Plain,
    Amqplain,
    /// The user named by the client's TLS certificate.
    External,
}

impl AuthMechanism {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            AuthMechanism::Plain => "PLAIN",
            AuthMechanism::Amqplain => "AMQPLAIN",
            AuthMechanism::External => "EXTERNAL",
        }
    }

    /// The mechanism a name (as in `auth_mechanisms.1 = PLAIN`) stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Plain, Self::Amqplain, Self::External]
            .into_iter()
            .find(|m| m.name() == name)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            handshake_timeout: Duration::from_secs(10),
            max_message_size: 16 * 1024 * 1024,
            cluster_name: "warren".into(),
            alarms: alarm::AlarmConfig::default(),
            tick_interval: Duration::from_millis(50),
            consumer_timeout: Some(Duration::from_millis(
                warren_broker::queue_args::DEFAULT_CONSUMER_TIMEOUT_MS,
            )),
            consumer_timeout_check: Duration::from_secs(5),
            // RabbitMQ's PLAIN and AMQPLAIN, and EXTERNAL as its rabbitmq_auth_mechanism_ssl
            // plugin adds it (offered only where a client certificate was verified).
            auth_mechanisms: vec![
                AuthMechanism::Plain,
                AuthMechanism::Amqplain,
                AuthMechanism::External,
            ],
            cert_login: tls::CertLogin::default(),
        }
    }
}

/// A bound listening socket; a TLS one has the configuration its connections start from
/// (the latest, as [`tls::Reloader`] publishes it).
struct Bound {
    socket: TcpListener,
    tls: Option<watch::Receiver<tls::TlsConfig>>,
}

/// Bound listeners, ready to serve.
pub struct Server {
    listeners: Vec<Bound>,
    broker: Arc<Broker>,
    config: Arc<ServerConfig>,
    alarms: (
        watch::Sender<alarm::AlarmState>,
        watch::Receiver<alarm::AlarmState>,
    ),
}

impl Server {
    /// Binds every address (fails if any is taken).
    pub async fn bind(
        addrs: &[SocketAddr],
        broker: Arc<Broker>,
        config: ServerConfig,
    ) -> std::io::Result<Self> {
        let mut server = Server {
            listeners: Vec::new(),
            broker,
            config: Arc::new(config),
            alarms: watch::channel(alarm::AlarmState::default()),
        };
        server.bind_more(addrs, None)?;
        Ok(server)
    }

    /// Adds AMQPS listeners (RabbitMQ's `listeners.ssl`): each accepted socket does a TLS
    /// handshake with the configuration `tls` holds at that moment.
    pub fn bind_tls(
        &mut self,
        addrs: &[SocketAddr],
        tls: watch::Receiver<tls::TlsConfig>,
    ) -> std::io::Result<()> {
        self.bind_more(addrs, Some(tls))
    }

    fn bind_more(
        &mut self,
        addrs: &[SocketAddr],
        tls: Option<watch::Receiver<tls::TlsConfig>>,
    ) -> std::io::Result<()> {
        for addr in addrs {
            let socket = listen(*addr).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
            })?;
            self.listeners.push(Bound {
                socket,
                tls: tls.clone(),
            });
        }
        Ok(())
    }

    /// The resource alarms as they change (the management API reports them).
    pub fn alarms(&self) -> watch::Receiver<alarm::AlarmState> {
        self.alarms.1.clone()
    }

    /// The memory limit the alarm enforces, in bytes.
    pub fn memory_limit(&self) -> u64 {
        self.config.alarms.memory_limit()
    }

    /// The plain AMQP addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs(false)
    }

    /// The AMQPS addresses actually bound.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.addrs(true)
    }

    fn addrs(&self, tls: bool) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter(|l| l.tls.is_some() == tls)
            .filter_map(|l| l.socket.local_addr().ok())
            .collect()
    }

    /// Accepts and serves connections until `shutdown` turns true; then every connection is
    /// closed with 320 CONNECTION_FORCED and this returns once they are gone.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut accept_tasks = JoinSet::new();
        let (conn_shutdown_tx, conn_shutdown_rx) = watch::channel(false);
        let (alarm_tx, alarm_rx) = self.alarms;
        let log_full = {
            let broker = self.broker.clone();
            move || broker.log_full()
        };
        let monitor = tokio::spawn(alarm::monitor(
            self.config.alarms.clone(),
            log_full,
            alarm_tx,
        ));
        let ticker = tokio::spawn(tick(self.broker.clone(), self.config.tick_interval));
        for listener in self.listeners {
            let broker = self.broker.clone();
            let config = self.config.clone();
            let signals = connection::Signals {
                shutdown: conn_shutdown_rx.clone(),
                alarms: alarm_rx.clone(),
            };
            accept_tasks.spawn(accept_loop(listener, broker, config, signals));
        }
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        info!("shutting down: closing client connections");
        let _ = conn_shutdown_tx.send(true);
        while accept_tasks.join_next().await.is_some() {}
        monitor.abort();
        ticker.abort();
    }
}

/// Drives the broker's time-driven work: one timer for the whole broker, whatever the number
/// of messages or queues waiting on time.
async fn tick(broker: Arc<Broker>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        broker.tick(warren_broker::clock::now_ms());
    }
}

/// Raises the open-file limit to the hard limit: every connection is a descriptor, and past
/// the soft limit (often 1024) accept fails and new clients wait. Returns the limit now in
/// force.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current != now.maximum {
        let raised = Rlimit {
            current: now.maximum,
            maximum: now.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// A listening socket. IPv6 sockets are v6-only so that `0.0.0.0:P` and `[::]:P` can both be
/// bound, whatever the system's `bindv6only` default.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

async fn accept_loop(
    listener: Bound,
    broker: Arc<Broker>,
    config: Arc<ServerConfig>,
    signals: connection::Signals,
) {
    let mut shutdown = signals.shutdown.clone();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.socket.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    match &listener.tls {
                        None => conns.spawn(connection::serve(
                            stream,
                            peer,
                            broker.clone(),
                            config.clone(),
                            signals.clone(),
                        )),
                        // The handshake runs in the connection's task: a slow client must
                        // not hold up the next accept.
                        Some(tls) => conns.spawn(tls::serve(
                            stream,
                            peer,
                            tls.borrow().clone(),
                            broker.clone(),
                            config.clone(),
                            signals.clone(),
                        )),
                    };
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    // Connections see the same shutdown signal and close themselves; wait (bounded) for them.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}
