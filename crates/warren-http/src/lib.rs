//! `warren-http`: RabbitMQ's management HTTP API (`/api`, port 15672 by default) and its
//! Prometheus metrics (port 15692), so that rabbitmqadmin, KEDA, Terraform and the
//! RabbitMQ-Overview dashboard work against Warren unchanged.
//!
//! Owns: HTTP and HTTPS listeners, authentication and the management tags, RabbitMQ's JSON shapes,
//! list sorting and paging, rates sampled from the broker's counters, the Prometheus text,
//! the web UI's files (served at `/`, compiled in).
//! Must not know: AMQP framing, the store. Every read goes through the broker's registry,
//! snapshots and counters; every change through its operations (`Broker`, `Session`), which
//! carry their own validation and permission checks. Broker errors become HTTP answers in one
//! place ([`error`]).

mod api;
mod auth;
mod error;
mod list;
mod metrics;
mod process;
mod rates;
mod tls;
mod ui;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use warren_broker::Broker;

pub use error::ApiError;

/// Facts about this node that the API reports and the broker does not hold.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// RabbitMQ-style node name, `warren@<host>`.
    pub name: String,
    pub cluster_name: String,
    /// Where AMQP clients connect.
    pub amqp_listeners: Vec<SocketAddr>,
    pub management_listener: Option<SocketAddr>,
    pub prometheus_listener: Option<SocketAddr>,
    /// Where AMQPS clients connect.
    pub amqps_listeners: Vec<SocketAddr>,
    /// The HTTPS listeners of the management API and of the metrics.
    pub management_tls_listener: Option<SocketAddr>,
    pub prometheus_tls_listener: Option<SocketAddr>,
    /// Memory use above which publishers are blocked, in bytes.
    pub memory_limit: u64,
    /// Free disk below which publishers are blocked, in bytes.
    pub disk_free_limit: u64,
}

impl NodeInfo {
    /// Every listener as RabbitMQ names its protocol (`amqp`, `amqp/ssl`, `http`, `https`,
    /// `http/prometheus`, `https/prometheus`), with its address.
    pub fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut out: Vec<(&'static str, SocketAddr)> = Vec::new();
        out.extend(self.amqp_listeners.iter().map(|a| ("amqp", *a)));
        out.extend(self.amqps_listeners.iter().map(|a| ("amqp/ssl", *a)));
        out.extend(self.management_listener.map(|a| ("http", a)));
        out.extend(self.management_tls_listener.map(|a| ("https", a)));
        out.extend(self.prometheus_listener.map(|a| ("http/prometheus", a)));
        out.extend(
            self.prometheus_tls_listener
                .map(|a| ("https/prometheus", a)),
        );
        out
    }

    /// The port the management API (the web UI) is reached on: HTTP's, else HTTPS's.
    pub fn management_port(&self) -> u16 {
        self.management_listener
            .or(self.management_tls_listener)
            .map_or(0, |a| a.port())
    }

    /// RabbitMQ's `internal_cluster_id` / `rabbitmq_cluster_permanent_id`.
    pub fn cluster_id(&self) -> String {
        format!("rabbitmq-cluster-id-{}", self.cluster_name)
    }

    pub fn new(cluster_name: &str) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        NodeInfo {
            name: format!("warren@{host}"),
            cluster_name: cluster_name.to_owned(),
            amqp_listeners: Vec::new(),
            management_listener: None,
            prometheus_listener: None,
            amqps_listeners: Vec::new(),
            management_tls_listener: None,
            prometheus_tls_listener: None,
            memory_limit: 0,
            disk_free_limit: 0,
        }
    }
}

/// Resource alarms as the front end that watches them sees them.
pub trait Alarms: Send + Sync {
    /// (memory alarm raised, disk alarm raised)
    fn raised(&self) -> (bool, bool);

    /// Free disk space where the data lives, in bytes (None: unknown).
    fn disk_free(&self) -> Option<u64> {
        None
    }
}

/// No alarm source: nothing is ever raised.
struct NoAlarms;

impl Alarms for NoAlarms {
    fn raised(&self) -> (bool, bool) {
        (false, false)
    }
}

/// What every handler shares.
pub struct Http {
    pub(crate) broker: Arc<Broker>,
    pub(crate) node: NodeInfo,
    pub(crate) rates: rates::Rates,
    pub(crate) started: Instant,
    pub(crate) alarms: Box<dyn Alarms>,
}

impl Http {
    pub fn new(broker: Arc<Broker>, node: NodeInfo) -> Arc<Self> {
        Self::with_alarms(broker, node, Box::new(NoAlarms))
    }

    pub fn with_alarms(broker: Arc<Broker>, node: NodeInfo, alarms: Box<dyn Alarms>) -> Arc<Self> {
        Arc::new(Http {
            broker,
            node,
            rates: rates::Rates::default(),
            started: Instant::now(),
            alarms,
        })
    }

    /// The management API's routes.
    pub fn management_router(self: &Arc<Self>) -> Router {
        ui::router()
            .with_state(Arc::new(ui::Ui::from_env()))
            .merge(api::router().with_state(self.clone()))
    }

    /// The Prometheus endpoints.
    pub fn prometheus_router(self: &Arc<Self>) -> Router {
        metrics::router().with_state(self.clone())
    }
}

/// How often rates are sampled (RabbitMQ's `collect_statistics_interval`).
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Samples the broker's counters for the rates until `shutdown`.
pub async fn run_sampler(http: Arc<Http>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => api::sample(&http),
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

/// One sampling pass now (the sampler runs one every [`SAMPLE_INTERVAL`]).
pub fn sample_now(http: &Http) {
    api::sample(http);
}

/// Serves `router` on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, router: Router, shutdown: watch::Receiver<bool>) {
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stopped(shutdown))
        .await
    {
        tracing::error!(error = %e, "HTTP listener failed");
    }
}

/// Serves `router` over HTTPS on `listener` until `shutdown` turns true; each connection's
/// TLS handshake uses the configuration `tls` holds when it arrives (a reloaded certificate
/// is used from the next connection on).
pub async fn serve_tls(
    listener: TcpListener,
    tls: watch::Receiver<Arc<rustls::ServerConfig>>,
    router: Router,
    shutdown: watch::Receiver<bool>,
) {
    use axum::serve::ListenerExt;
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    // The no-op tap gives axum's `SocketAddr` connect info for a listener of our own (the
    // handlers read the peer's address for loopback-only users).
    let listener = tls::TlsListener::new(listener, tls).tap_io(|_| {});
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stopped(shutdown))
        .await
    {
        tracing::error!(error = %e, "HTTPS listener failed");
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
}
