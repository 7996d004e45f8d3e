//! `warren`: run the broker.
//!
//! With no arguments it listens for AMQP on port 5672 on every IPv4 and IPv6 interface and
//! keeps its data in `./warren-data`. Logs go to stderr (`RUST_LOG` filters them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
use warren_broker::{Broker, Defaults, SyncMode};
use warren_http::{Http, NodeInfo};
use warren_server::alarm::Watermark;
use warren_server::tls::{self, TlsOptions};
use warren_server::{Server, ServerConfig};

use warren::config::{self, Settings, Threshold, MAX_MESSAGE_SIZE_LIMIT};

/// Read when it exists and neither `--config` nor `WARREN_CONFIG_FILE` names a file.
const DEFAULT_CONFIG_FILE: &str = "/etc/warren/warren.conf";

#[derive(Debug, Parser)]
#[command(
    name = "warren",
    version,
    about = "An AMQP 0-9-1 message broker compatible with RabbitMQ clients"
)]
struct Cli {
    /// A configuration file in rabbitmq.conf's format (see docs/configuration.md). Default:
    /// $WARREN_CONFIG_FILE, else /etc/warren/warren.conf if it exists. Flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address to accept AMQP connections on (repeatable). Default: 0.0.0.0:5672 and [::]:5672.
    #[arg(long = "amqp-listen", value_name = "ADDR:PORT")]
    amqp_listen: Vec<SocketAddr>,

    /// Address to accept AMQPS (AMQP over TLS) connections on (repeatable), with the
    /// certificates of the config file's `ssl_options`. Default: the file's `listeners.ssl`.
    #[arg(long = "amqps-listen", value_name = "ADDR:PORT")]
    amqps_listen: Vec<SocketAddr>,

    /// Directory for the broker's data.
    #[arg(long, value_name = "DIR", default_value = "warren-data")]
    data_dir: PathBuf,

    /// RabbitMQ-format definitions (users, vhosts, permissions, exchanges, queues, bindings)
    /// to import into the data directory at start-up; they stay there for later starts.
    #[arg(long, value_name = "FILE")]
    definitions: Option<PathBuf>,

    /// Memory use above which publishers are blocked: a fraction of RAM (default 0.6) or
    /// bytes.
    #[arg(long, value_name = "FRACTION|BYTES")]
    memory_high_watermark: Option<f64>,

    /// When a persistent message counts as stored: `fsync` (on disk before it is confirmed)
    /// or `page-cache` (written to the OS, as RabbitMQ's classic queues do).
    #[arg(long, value_name = "MODE", default_value = "fsync", value_parser = ["fsync", "page-cache"])]
    persist_mode: String,

    /// Free disk space (bytes) below which publishers are blocked. Default: 50000000.
    #[arg(long, value_name = "BYTES")]
    disk_free_limit: Option<u64>,

    /// Largest message body accepted, in bytes (RabbitMQ's `max_message_size`; default 16
    /// MiB, at most 536870912, 512 MiB). Larger publishes close their channel with 406.
    #[arg(long, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..=MAX_MESSAGE_SIZE_LIMIT))]
    max_message_size: Option<u64>,

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
        return Ok(config::every_interface(port));
    }
    given
        .iter()
        .map(|g| {
            g.parse()
                .with_context(|| format!("'{g}' is not an ADDR:PORT (or none)"))
        })
        .collect()
}

/// Binds HTTP listeners; when `tolerant`, a machine without IPv6 keeps the IPv4 ones.
async fn bind_http(addrs: &[SocketAddr], what: &str, tolerant: bool) -> Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for a in addrs {
        match warren_server::listen(*a) {
            Ok(l) => out.push(l),
            Err(e)
                if tolerant
                    && a.is_ipv6()
                    && a.ip().is_unspecified()
                    && e.kind() != std::io::ErrorKind::AddrInUse =>
            {
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

fn build_broker(
    data_dir: &Path,
    sync: SyncMode,
    defaults: &Defaults,
    definitions: Option<&Path>,
) -> Result<Broker> {
    let broker = Broker::open_with(data_dir, sync, defaults)?;
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

/// The file `--config`, `WARREN_CONFIG_FILE` or the default path names (None: no file).
fn config_file(cli: &Cli) -> Option<PathBuf> {
    if let Some(p) = &cli.config {
        return Some(p.clone());
    }
    if let Some(p) = std::env::var_os("WARREN_CONFIG_FILE") {
        return Some(PathBuf::from(p));
    }
    let default = PathBuf::from(DEFAULT_CONFIG_FILE);
    default.exists().then_some(default)
}

/// A memory or disk threshold in bytes, or as RabbitMQ's fraction of RAM.
fn watermark(t: Threshold) -> Watermark {
    match t {
        Threshold::Relative(f) => Watermark::Relative(f),
        Threshold::Absolute(b) => Watermark::Absolute(b),
    }
}

/// The server's settings: defaults, then the file and environment (`s`), then flags.
fn server_config(cli: &Cli, s: &Settings) -> ServerConfig {
    let mut config = ServerConfig::default();
    if let Some(t) = s.memory_high_watermark {
        config.alarms.memory_high_watermark = watermark(t);
    }
    if let Some(f) = cli.memory_high_watermark {
        config.alarms.memory_high_watermark = if f <= 1.0 {
            Watermark::Relative(f)
        } else {
            Watermark::Absolute(f as u64)
        };
    }
    match s.disk_free_limit {
        Some(Threshold::Absolute(b)) => config.alarms.disk_free_limit = b,
        // RabbitMQ's `disk_free_limit.relative`: a multiple of the machine's RAM.
        Some(Threshold::Relative(f)) => {
            config.alarms.disk_free_limit = (warren_server::alarm::total_memory() as f64 * f) as u64
        }
        None => {}
    }
    if let Some(b) = cli.disk_free_limit {
        config.alarms.disk_free_limit = b;
    }
    config.alarms.data_dir = Some(cli.data_dir.clone());
    if let Some(m) = cli.max_message_size.or(s.max_message_size) {
        config.max_message_size = m;
    }
    if let Some(h) = s.heartbeat {
        config.heartbeat = h;
    }
    if let Some(f) = s.frame_max {
        config.frame_max = f;
    }
    if let Some(c) = s.channel_max {
        config.channel_max = c;
    }
    if let Some(t) = s.consumer_timeout {
        config.consumer_timeout = t;
    }
    if let Some(t) = s.handshake_timeout {
        config.handshake_timeout = t;
    }
    if let Some(m) = &s.auth_mechanisms {
        config.auth_mechanisms = m.clone();
    }
    config.cert_login = s.cert_login;
    config
}

/// How often certificate files are checked for changes (SIGHUP checks at once).
const TLS_RELOAD_CHECK: Duration = Duration::from_secs(5);

/// The TLS configuration of a listener family: loaded now (a bad file stops the start) and
/// kept in step with its files. None when the family has no TLS listener; an error when its
/// options are set but no listener is, since they would silently do nothing.
fn tls_reloader(
    prefix: &str,
    listeners: &[SocketAddr],
    options: &TlsOptions,
    listener_key: &str,
) -> Result<Option<Arc<tls::Reloader>>> {
    if listeners.is_empty() {
        if options.is_set() && listener_key != "listeners.ssl" {
            bail!("{prefix}.* options are set but {listener_key} is not");
        }
        return Ok(None);
    }
    Ok(Some(tls::Reloader::new(prefix, options.clone())?))
}

/// Listener addresses: a flag's, else the file's, else every interface on `port` (none
/// when `tls_only`: as RabbitMQ, an HTTPS listener configured alone replaces the default
/// HTTP one); and whether an IPv6 "any" address among them may be skipped on a machine
/// without IPv6.
fn listener_addrs(
    flag: &[String],
    file: Option<&Vec<SocketAddr>>,
    port: u16,
    tls_only: bool,
) -> Result<(Vec<SocketAddr>, bool)> {
    let addrs = if !flag.is_empty() {
        http_addrs(flag, port)?
    } else if let Some(f) = file {
        f.clone()
    } else if tls_only {
        Vec::new()
    } else {
        config::every_interface(port)
    };
    let tolerant = addrs.iter().any(|a| a.is_ipv6() && a.ip().is_unspecified());
    Ok((addrs, tolerant))
}

async fn run(cli: Cli, settings: Settings) -> Result<()> {
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
    let defaults = Defaults {
        user: settings
            .default_user
            .clone()
            .unwrap_or(Defaults::default().user),
        password: settings
            .default_pass
            .clone()
            .unwrap_or(Defaults::default().password),
        vhost: settings
            .default_vhost
            .clone()
            .unwrap_or(Defaults::default().vhost),
    };
    let definitions = cli
        .definitions
        .clone()
        .or_else(|| settings.load_definitions.clone());
    let broker = Arc::new(build_broker(
        &cli.data_dir,
        sync,
        &defaults,
        definitions.as_deref(),
    )?);
    if let Some(users) = &settings.loopback_users {
        broker.set_loopback_users(users.clone());
    }
    if let Some(max) = settings.connection_max {
        broker.set_connection_max(max.map(|m| m as u64));
    }
    let fd_limit = warren_server::raise_fd_limit();
    info!(limit = fd_limit, "open-file limit");
    let config = server_config(&cli, &settings);
    let disk_free_limit = config.alarms.disk_free_limit;
    let management_tls_addrs = settings
        .management_tls_listeners
        .clone()
        .unwrap_or_default();
    let prometheus_tls_addrs = settings
        .prometheus_tls_listeners
        .clone()
        .unwrap_or_default();
    let (management_addrs, management_defaults) = listener_addrs(
        &cli.management_listen,
        settings.management_listeners.as_ref(),
        15672,
        !management_tls_addrs.is_empty(),
    )?;
    let (prometheus_addrs, prometheus_defaults) = listener_addrs(
        &cli.prometheus_listen,
        settings.prometheus_listeners.as_ref(),
        15692,
        !prometheus_tls_addrs.is_empty(),
    )?;
    let amqps_addrs = if cli.amqps_listen.is_empty() {
        settings.amqps_listeners.clone().unwrap_or_default()
    } else {
        cli.amqps_listen.clone()
    };
    // Certificates are read before anything listens: a bad path stops the start here.
    let amqps_tls = tls_reloader(
        "ssl_options",
        &amqps_addrs,
        &settings.ssl_options,
        "listeners.ssl",
    )?;
    let management_tls = tls_reloader(
        "management.ssl",
        &management_tls_addrs,
        &settings.management_tls,
        "management.ssl.port",
    )?;
    let prometheus_tls = tls_reloader(
        "prometheus.ssl",
        &prometheus_tls_addrs,
        &settings.prometheus_tls,
        "prometheus.ssl.port",
    )?;
    if amqps_tls.is_none() && settings.ssl_options.is_set() {
        warn!("ssl_options are set but no AMQPS listener is (listeners.ssl)");
    }
    let tolerant =
        |addrs: &[SocketAddr]| addrs.iter().any(|a| a.is_ipv6() && a.ip().is_unspecified());
    let management = bind_http(&management_addrs, "management", management_defaults).await?;
    let prometheus = bind_http(&prometheus_addrs, "Prometheus", prometheus_defaults).await?;
    let management_https = bind_http(
        &management_tls_addrs,
        "management (HTTPS)",
        tolerant(&management_tls_addrs),
    )
    .await?;
    let prometheus_https = bind_http(
        &prometheus_tls_addrs,
        "Prometheus (HTTPS)",
        tolerant(&prometheus_tls_addrs),
    )
    .await?;
    let amqp_addrs = if cli.amqp_listen.is_empty() {
        settings
            .amqp_listeners
            .clone()
            .unwrap_or_else(|| config::every_interface(5672))
    } else {
        cli.amqp_listen.clone()
    };
    let mut server = match Server::bind(&amqp_addrs, broker.clone(), config.clone()).await {
        Ok(s) => s,
        // Every interface of both families: a machine without IPv6 still gets IPv4.
        Err(e)
            if e.kind() != std::io::ErrorKind::AddrInUse
                && amqp_addrs
                    .iter()
                    .any(|a| a.is_ipv6() && a.ip().is_unspecified()) =>
        {
            warn!(error = %e, "IPv6 listener unavailable; listening on IPv4 only");
            let v4: Vec<SocketAddr> = amqp_addrs
                .iter()
                .copied()
                .filter(SocketAddr::is_ipv4)
                .collect();
            Server::bind(&v4, broker.clone(), config).await?
        }
        Err(e) => bail!("{e}"),
    };
    if let Some(tls) = &amqps_tls {
        for a in &amqps_addrs {
            match server.bind_tls(std::slice::from_ref(a), tls.subscribe()) {
                Ok(()) => {}
                Err(e)
                    if tolerant(std::slice::from_ref(a))
                        && e.kind() != std::io::ErrorKind::AddrInUse =>
                {
                    warn!(error = %e, "IPv6 AMQPS listener unavailable");
                }
                Err(e) => bail!("{e}"),
            }
        }
    }
    for addr in server.local_addrs() {
        info!(%addr, "listening for AMQP 0-9-1");
    }
    for addr in server.tls_addrs() {
        info!(%addr, "listening for AMQP 0-9-1 over TLS");
    }
    let mut node = NodeInfo::new(&ServerConfig::default().cluster_name);
    node.amqp_listeners = server.local_addrs();
    node.amqps_listeners = server.tls_addrs();
    node.management_listener = management.first().and_then(|l| l.local_addr().ok());
    node.prometheus_listener = prometheus.first().and_then(|l| l.local_addr().ok());
    node.management_tls_listener = management_https.first().and_then(|l| l.local_addr().ok());
    node.prometheus_tls_listener = prometheus_https.first().and_then(|l| l.local_addr().ok());
    node.memory_limit = server.memory_limit();
    node.disk_free_limit = disk_free_limit;
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
    let https = [
        (
            management_https,
            &management_tls,
            http.management_router(),
            "management API (HTTPS)",
        ),
        (
            prometheus_https,
            &prometheus_tls,
            http.prometheus_router(),
            "Prometheus metrics (HTTPS)",
        ),
    ];
    for (listeners, tls, router, what) in https {
        let Some(tls) = tls else { continue };
        for l in listeners {
            if let Ok(addr) = l.local_addr() {
                info!(%addr, "{what} listening");
            }
            http_tasks.push(tokio::spawn(warren_http::serve_tls(
                l,
                tls.subscribe(),
                router.clone(),
                rx.clone(),
            )));
        }
    }
    let reloaders: Vec<Arc<tls::Reloader>> = [amqps_tls, management_tls, prometheus_tls]
        .into_iter()
        .flatten()
        .collect();
    if !reloaders.is_empty() {
        http_tasks.push(tokio::spawn(tls::watch_files(
            reloaders.clone(),
            TLS_RELOAD_CHECK,
            rx.clone(),
        )));
        // SIGHUP: check the certificate files now rather than at the next poll.
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        info!("SIGHUP received: checking TLS certificate files");
                        let rs = reloaders.clone();
                        let _ = tokio::task::spawn_blocking(move || {
                            rs.iter().for_each(|r| r.reload_logged())
                        })
                        .await;
                    }
                });
            }
            Err(e) => warn!(error = %e, "cannot handle SIGHUP"),
        }
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
    let cli = Cli::parse();
    // The file is read before logging starts: its `log.console.level` chooses the level
    // (RUST_LOG, when set, still wins).
    let settings = match Settings::load(config_file(&cli).as_deref(), std::env::vars()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warren: {e:#}");
            std::process::exit(1);
        }
    };
    let level = settings.log_level.clone().unwrap_or_else(|| "info".into());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .init();
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
    if let Err(e) = runtime.block_on(run(cli, settings)) {
        eprintln!("warren: {e:#}");
        std::process::exit(1);
    }
}
