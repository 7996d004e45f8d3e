//! Shared harness for the integration tests: a real Warren server on `127.0.0.1:0`, run
//! in-process on the test's tokio runtime, plus helpers for lapin.
//!
//! Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

pub mod raw;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use warren_broker::{Broker, HashAlgorithm, PasswordHash, Permission, SyncMode};
use warren_server::{Server, ServerConfig};

/// A field table (queue, consumer or binding arguments) from key-value pairs.
pub fn args(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

/// A long-string field value.
pub fn text(v: &str) -> AMQPValue {
    AMQPValue::LongString(v.into())
}

/// How long any single wait in a test may take before the test fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(5);

/// A Warren server listening on an ephemeral loopback port; stopped on drop.
pub struct TestBroker {
    addr: SocketAddr,
    broker: Arc<Broker>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    /// Where a durable broker keeps its data; `restart()` reopens it.
    data_dir: Option<PathBuf>,
}

impl TestBroker {
    /// The default broker (vhost `/`, guest/guest) with the default configuration.
    pub async fn start() -> Self {
        Self::start_with(Arc::new(Broker::new()), ServerConfig::default()).await
    }

    /// The default broker with a custom configuration.
    pub async fn with_config(config: ServerConfig) -> Self {
        Self::start_with(Arc::new(Broker::new()), config).await
    }

    pub async fn start_with(broker: Arc<Broker>, config: ServerConfig) -> Self {
        let addrs = ["127.0.0.1:0".parse().expect("loopback address")];
        let server = Server::bind(&addrs, broker.clone(), config)
            .await
            .expect("bind an ephemeral port");
        let addr = server.local_addrs()[0];
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(server.run(rx));
        TestBroker {
            addr,
            broker,
            shutdown,
            task: Some(task),
            data_dir: None,
        }
    }

    /// A broker keeping its data in `dir` (fsync on every commit), as `warren --data-dir`.
    pub async fn start_durable(dir: &Path) -> Self {
        let broker = Broker::open(dir, SyncMode::Fsync).expect("open the data directory");
        Self::start_durable_with(Arc::new(broker), dir).await
    }

    /// A broker already opened on `dir` (e.g. with definitions applied), served so that
    /// `restart()` reopens the same directory.
    pub async fn start_durable_with(broker: Arc<Broker>, dir: &Path) -> Self {
        let mut b = Self::start_with(broker, ServerConfig::default()).await;
        b.data_dir = Some(dir.to_owned());
        b
    }

    /// Stops the server cleanly (connections are closed with 320 and their unacked messages
    /// requeued), closes the broker's store, and opens the same data directory again on a
    /// new port. Whatever the old broker still holds, its directory locks are released by
    /// `Broker::close`, so the reopen cannot trip over them.
    pub async fn restart(mut self) -> TestBroker {
        let dir = self
            .data_dir
            .take()
            .expect("restart() needs a broker from start_durable()");
        let broker = self.broker.clone();
        self.shutdown().await;
        broker.close();
        drop(broker);
        Self::start_durable(&dir).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn amqp_url(&self) -> String {
        self.url_for("guest", "guest", "/")
    }

    /// A URL for another user or vhost (the vhost is percent-encoded).
    pub fn url_for(&self, user: &str, password: &str, vhost: &str) -> String {
        let vhost = vhost.replace('%', "%25").replace('/', "%2F");
        format!(
            "amqp://{user}:{password}@127.0.0.1:{}/{vhost}",
            self.addr.port()
        )
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// A lapin connection as guest to `/`.
    pub async fn connect(&self) -> Connection {
        connect_url(&self.amqp_url())
            .await
            .expect("connect as guest")
    }

    /// A connection and one channel on it.
    pub async fn channel(&self) -> (Connection, Channel) {
        let conn = self.connect().await;
        let ch = within(conn.create_channel()).await.expect("open a channel");
        (conn, ch)
    }

    /// Adds a user with a password (and, if `vhost` is given, full rights there).
    pub fn add_user(&self, name: &str, password: &str, vhost: Option<&str>) {
        self.broker
            .add_user(
                name,
                Some(PasswordHash::new(password, HashAlgorithm::Sha256)),
                Vec::new(),
            )
            .expect("add user");
        if let Some(v) = vhost {
            self.broker
                .set_permission(name, v, Permission::full())
                .expect("set permission");
        }
    }

    /// Stops the server: connections are closed with 320 and this waits until they are gone.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

pub async fn connect_url(url: &str) -> lapin::Result<Connection> {
    within(Connection::connect(url, ConnectionProperties::default())).await
}

/// Awaits `f`, failing the test if it takes longer than [`WAIT`].
pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .expect("timed out waiting")
}

/// The AMQP reply code carried by a lapin error (channel or connection close).
pub fn reply_code(err: &lapin::Error) -> Option<u16> {
    match err {
        lapin::Error::ProtocolError(e) => Some(e.get_id()),
        _ => None,
    }
}

/// The reply code of an operation expected to fail with a protocol error.
pub fn code_of<T: std::fmt::Debug>(result: lapin::Result<T>) -> u16 {
    match result {
        Ok(v) => panic!("expected a protocol error, got Ok({v:?})"),
        Err(e) => reply_code(&e).unwrap_or_else(|| panic!("expected a protocol error, got {e:?}")),
    }
}

/// Watches `ch` for the `channel.close` a fire-and-forget method (a publish, an ack) should
/// provoke. Call it before that method: lapin reports the close once, to the handler set then.
pub fn watch_close(ch: &Channel) -> CloseWatch {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    ch.on_error(move |e| {
        if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
            let _ = tx.send(e);
        }
    });
    CloseWatch(rx)
}

pub struct CloseWatch(tokio::sync::oneshot::Receiver<lapin::Error>);

impl CloseWatch {
    /// The reply code of the close, failing the test if none comes within [`WAIT`].
    pub async fn code(self) -> u16 {
        let e = within(self.0).await.expect("the channel was closed");
        reply_code(&e).unwrap_or_else(|| panic!("expected a protocol error, got {e:?}"))
    }
}

/// Declares a server-named, exclusive queue and returns its name.
pub async fn temp_queue(ch: &Channel) -> String {
    let q = within(ch.queue_declare(
        "",
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .expect("declare a server-named queue");
    q.name().as_str().to_owned()
}

/// Declares a named, non-exclusive queue (unique per test by the caller's choice of name).
pub async fn named_queue(ch: &Channel, name: &str) {
    within(ch.queue_declare(name, QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .expect("declare a queue");
}

/// Publishes `body` with no properties.
pub async fn publish(ch: &Channel, exchange: &str, routing_key: &str, body: &[u8]) {
    publish_with(ch, exchange, routing_key, body, BasicProperties::default()).await;
}

pub async fn publish_with(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) {
    within(ch.basic_publish(
        exchange,
        routing_key,
        BasicPublishOptions::default(),
        body,
        props,
    ))
    .await
    .expect("send a publish");
}

/// Consumes from `queue` with a server-generated tag.
pub async fn consume(ch: &Channel, queue: &str, no_ack: bool) -> Consumer {
    within(ch.basic_consume(
        queue,
        "",
        BasicConsumeOptions {
            no_ack,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .expect("start a consumer")
}

/// The next delivery from `consumer`, failing the test after [`WAIT`].
pub async fn next_delivery(consumer: &mut Consumer) -> lapin::message::Delivery {
    use futures_lite::StreamExt;
    within(consumer.next())
        .await
        .expect("consumer stream ended")
        .expect("delivery error")
}

/// Asserts that `consumer` receives nothing for a short while.
pub async fn assert_no_delivery(consumer: &mut Consumer) {
    use futures_lite::StreamExt;
    let r = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await;
    if let Ok(Some(d)) = r {
        panic!("unexpected delivery: {d:?}");
    }
}

/// Fetches one message with `basic.get`, or None on get-empty.
pub async fn get(
    ch: &Channel,
    queue: &str,
    no_ack: bool,
) -> Option<lapin::message::BasicGetMessage> {
    within(ch.basic_get(queue, lapin::options::BasicGetOptions { no_ack }))
        .await
        .expect("basic.get")
}

/// A queue's (message count, consumer count) via a passive declare.
pub async fn queue_counts(ch: &Channel, queue: &str) -> (u32, u32) {
    let q = within(ch.queue_declare(
        queue,
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .expect("passive declare");
    (q.message_count(), q.consumer_count())
}

/// Polls `cond` until it holds, failing after [`WAIT`].
pub async fn eventually(mut cond: impl FnMut() -> bool) {
    within(async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
