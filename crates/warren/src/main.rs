//! `warren`: run the broker.
//!
//! With no arguments it listens for AMQP on port 5672 on every IPv4 and IPv6 interface and
//! keeps its data in `./warren-data`. Logs go to stderr (`RUST_LOG` filters them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

// Every message allocates (its Arc, queue entry, frames); mimalloc made one queue ~14% faster
// than glibc's malloc in warren-perf (1.42 M -> 1.62 M msgs/s, 16 B, auto-ack).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};
use warren_broker::definitions::Definitions;
use warren_broker::{Broker, SyncMode};
use warren_http::{Http, NodeInfo};
use warren_server::alarm::Watermark;
use warren_server::{Server, ServerConfig};

/// RabbitMQ's ceiling for `max_message_size` (512 MiB).
const MAX_MESSAGE_SIZE_LIMIT: u64 = 512 * 1024 * 1024;

#[derive(Debug, Parser)]
#[command(
    name = "warren",
    version,
    about = "An AMQP 0-9-1 message broker compatible with RabbitMQ clients"
)]
struct Cli {
    /// Address to accept AMQP connections on (repeatable). Default: 0.0.0.0:5672 and [::]:5672.
    #[arg(long = "amqp-listen", value_name = "ADDR:PORT")]
    amqp_listen: Vec<SocketAddr>,

    /// Directory for the broker's data.
    #[arg(long, value_name = "DIR", default_value = "warren-data")]
    data_dir: PathBuf,

    /// RabbitMQ-format definitions (users, vhosts, permissions, exchanges, queues, bindings)
    /// to import into the data directory at start-up; they stay there for later starts.
    #[arg(long, value_name = "FILE")]
    definitions: Option<PathBuf>,

    /// Memory use above which publishers are blocked: a fraction of RAM (0.6) or bytes.
    #[arg(long, value_name = "FRACTION|BYTES", default_value = "0.6")]
    memory_high_watermark: f64,

    /// When a persistent message counts as stored: `fsync` (on disk before it is confirmed)
    /// or `page-cache` (written to the OS, as RabbitMQ's classic queues do).
    #[arg(long, value_name = "MODE", default_value = "fsync", value_parser = ["fsync", "page-cache"])]
    persist_mode: String,

    /// Free disk space (bytes) below which publishers are blocked.
    #[arg(long, value_name = "BYTES", default_value_t = 50_000_000)]
    disk_free_limit: u64,

    /// Largest message body accepted, in bytes (RabbitMQ's `max_message_size`; at most
    /// 536870912, 512 MiB). Larger publishes close their channel with 406.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=MAX_MESSAGE_SIZE_LIMIT))]
    max_message_size: u64,

    /// Where the management HTTP API listens (repeatable), or `none`. Default: 0.0.0.0:15672
    /// and [::]:15672.
    #[arg(long = "management-listen", value_name = "ADDR:PORT|none")]
    management_listen: Vec<String>,

    /// Where Prometheus metrics are served (repeatable), or `none`. Default: 0.0.0.0:15692
    /// and [::]:15692.
    #[arg(long = "prometheus-listen", value_name = "ADDR:PORT|none")]
    prometheus_listen: Vec<String>,
}

/// The addresses an HTTP listener flag names: the defaults on port `port` when not given,
/// none for `none`.
fn http_addrs(given: &[String], port: u16) -> Result<Vec<SocketAddr>> {
    if given.iter().any(|g| g == "none") {
        if given.len() > 1 {
            bail!("`none` cannot be combined with addresses");
        }
        return Ok(Vec::new());
    }
    if given.is_empty() {
        return Ok(vec![
            SocketAddr::from(([0, 0, 0, 0], port)),
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
        ]);
    }
    given
        .iter()
        .map(|g| {
            g.parse()
                .with_context(|| format!("'{g}' is not an ADDR:PORT (or none)"))
        })
        .collect()
}

/// Binds HTTP listeners; with the default addresses, a machine without IPv6 keeps IPv4.
async fn bind_http(addrs: &[SocketAddr], what: &str, defaults: bool) -> Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for a in addrs {
        match warren_server::listen(*a) {
            Ok(l) => out.push(l),
            Err(e) if defaults && a.is_ipv6() && e.kind() != std::io::ErrorKind::AddrInUse => {
                warn!(error = %e, "IPv6 {what} listener unavailable");
            }
            Err(e) => bail!("cannot listen for {what} on {a}: {e}"),
        }
    }
    Ok(out)
}

/// The server's alarm state, as the management API reads it.
struct AlarmView {
    state: watch::Receiver<warren_server::alarm::AlarmState>,
    data_dir: PathBuf,
}

impl warren_http::Alarms for AlarmView {
    fn raised(&self) -> (bool, bool) {
        let s = *self.state.borrow();
        (s.memory, s.disk)
    }

    fn disk_free(&self) -> Option<u64> {
        warren_server::alarm::free_disk(&self.data_dir)
    }
}

/// Creates the data directory if needed and proves it is writable.
fn prepare_data_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let probe = dir.join(".warren-write-test");
    std::fs::write(&probe, b"ok")
        .with_context(|| format!("data directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

fn build_broker(data_dir: &Path, sync: SyncMode, definitions: Option<&Path>) -> Result<Broker> {
    let broker = Broker::open(data_dir, sync)?;
    if let Some(path) = definitions {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read definitions file {}", path.display()))?;
        let defs = Definitions::parse(&text)?;
        defs.apply(&broker)
            .map_err(|e| anyhow::anyhow!("definitions file {}: {e}", path.display()))?;
        info!(file = %path.display(), "definitions loaded");
    }
    Ok(broker)
}

async fn run(cli: Cli) -> Result<()> {
    // Signal handlers first: a SIGTERM that arrives once a listener is up must stop the
    // broker cleanly, not kill it with the default action.
    let (tx, rx) = watch::channel(false);
    let signals = Signals::install()?;
    tokio::spawn(async move {
        signals.wait().await;
        let _ = tx.send(true);
    });
    prepare_data_dir(&cli.data_dir)?;
    let sync = if cli.persist_mode == "page-cache" {
        SyncMode::PageCache
    } else {
        SyncMode::Fsync
    };
    let broker = Arc::new(build_broker(
        &cli.data_dir,
        sync,
        cli.definitions.as_deref(),
    )?);
    let mut config = ServerConfig::default();
    config.alarms.memory_high_watermark = if cli.memory_high_watermark <= 1.0 {
        Watermark::Relative(cli.memory_high_watermark)
    } else {
        Watermark::Absolute(cli.memory_high_watermark as u64)
    };
    config.alarms.disk_free_limit = cli.disk_free_limit;
    config.max_message_size = cli.max_message_size;
    config.alarms.data_dir = Some(cli.data_dir.clone());
    let management_addrs = http_addrs(&cli.management_listen, 15672)?;
    let prometheus_addrs = http_addrs(&cli.prometheus_listen, 15692)?;
    let management = bind_http(
        &management_addrs,
        "management",
        cli.management_listen.is_empty(),
    )
    .await?;
    let prometheus = bind_http(
        &prometheus_addrs,
        "Prometheus",
        cli.prometheus_listen.is_empty(),
    )
    .await?;
    let server = if cli.amqp_listen.is_empty() {
        // Both families by default; a machine without IPv6 still gets IPv4.
        let v4: SocketAddr = "0.0.0.0:5672".parse()?;
        let v6: SocketAddr = "[::]:5672".parse()?;
        match Server::bind(&[v4, v6], broker.clone(), config.clone()).await {
            Ok(s) => s,
            Err(e) if e.kind() != std::io::ErrorKind::AddrInUse => {
                warn!(error = %e, "IPv6 listener unavailable; listening on IPv4 only");
                Server::bind(&[v4], broker.clone(), config).await?
            }
            Err(e) => bail!("{e}"),
        }
    } else {
        Server::bind(&cli.amqp_listen, broker.clone(), config).await?
    };
    for addr in server.local_addrs() {
        info!(%addr, "listening for AMQP 0-9-1");
    }
    let mut node = NodeInfo::new(&ServerConfig::default().cluster_name);
    node.amqp_listeners = server.local_addrs();
    node.management_listener = management.first().and_then(|l| l.local_addr().ok());
    node.prometheus_listener = prometheus.first().and_then(|l| l.local_addr().ok());
    node.memory_limit = server.memory_limit();
    node.disk_free_limit = cli.disk_free_limit;
    let alarms = AlarmView {
        state: server.alarms(),
        data_dir: cli.data_dir.clone(),
    };
    let http = Http::with_alarms(broker.clone(), node, Box::new(alarms));
    let mut http_tasks = Vec::new();
    for l in management {
        if let Ok(addr) = l.local_addr() {
            info!(%addr, "management API listening");
        }
        http_tasks.push(tokio::spawn(warren_http::serve(
            l,
            http.management_router(),
            rx.clone(),
        )));
    }
    for l in prometheus {
        if let Ok(addr) = l.local_addr() {
            info!(%addr, "Prometheus metrics listening");
        }
        http_tasks.push(tokio::spawn(warren_http::serve(
            l,
            http.prometheus_router(),
            rx.clone(),
        )));
    }
    http_tasks.push(tokio::spawn(warren_http::run_sampler(
        http.clone(),
        warren_http::SAMPLE_INTERVAL,
        rx.clone(),
    )));
    server.run(rx).await;
    for t in http_tasks {
        let _ = t.await;
    }
    broker.close();
    info!("stopped");
    Ok(())
}

/// SIGTERM and SIGINT, registered when created.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => info!("SIGTERM received"),
            _ = self.int.recv() => info!("SIGINT received"),
        }
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warren: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("warren: {e:#}");
        std::process::exit(1);
    }
}
