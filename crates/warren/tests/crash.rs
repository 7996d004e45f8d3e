//! Crash safety of the real `warren` binary: `kill -9` while clients publish with confirms and
//! consume with acks, then restart on the same data directory and check what came back.
//!
//! The promise checked is RabbitMQ's for persistent messages on durable queues with
//! publisher confirms: every confirmed message is delivered at least once. After each crash
//! every confirmed message is either one whose ack the consumer sent before the crash, or
//! it is in the queue now (an acked message may come back too: acks are not confirmed, so
//! delivery is at-least-once). Nothing comes back corrupt (bodies carry their id, length,
//! a pattern and a checksum), nothing comes back twice at once, and nothing comes back that
//! was never published.
//!
//! `CRASH_CYCLES` sets the number of kill/restart cycles (default 8) and `CRASH_SEED` replays
//! a run's random delays and body sizes (the seed is printed).

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::time::timeout;

/// A durable fanout to two durable queues: each keeps its own copy, settled on its own.
const EXCHANGE: &str = "crash-fanout";
const QUEUES: [&str; 2] = ["crash-a", "crash-b"];
/// How long any single wait may take before the test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Bodies that prove their own integrity:
// `"WRNB" | id:u64 | len:u32 | payload (len bytes, a pattern of id) | fnv1a(id, payload):u32`

const MAGIC: &[u8; 4] = b"WRNB";
const BODY_OVERHEAD: usize = 4 + 8 + 4 + 4;

fn pattern(id: u64, i: usize) -> u8 {
    (id.wrapping_mul(31).wrapping_add(i as u64) % 251) as u8
}

fn fnv1a(id: u64, payload: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.to_le_bytes().iter().chain(payload) {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn make_body(id: u64, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| pattern(id, i)).collect();
    let mut b = Vec::with_capacity(BODY_OVERHEAD + len);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&(len as u32).to_le_bytes());
    b.extend_from_slice(&payload);
    b.extend_from_slice(&fnv1a(id, &payload).to_le_bytes());
    b
}

/// The id a body carries, or what is wrong with it.
fn check_body(b: &[u8]) -> Result<u64, String> {
    if b.len() < BODY_OVERHEAD || &b[0..4] != MAGIC {
        return Err(format!("bad header in a {}-byte body", b.len()));
    }
    let id = u64::from_le_bytes(b[4..12].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(b[12..16].try_into().expect("4 bytes")) as usize;
    if b.len() != BODY_OVERHEAD + len {
        return Err(format!(
            "id {id}: body of {} bytes, header says {len}",
            b.len()
        ));
    }
    let payload = &b[16..16 + len];
    if payload
        .iter()
        .enumerate()
        .any(|(i, x)| *x != pattern(id, i))
    {
        return Err(format!("id {id}: payload pattern damaged"));
    }
    let sum = u32::from_le_bytes(b[16 + len..].try_into().expect("4 bytes"));
    if sum != fnv1a(id, payload) {
        return Err(format!("id {id}: checksum mismatch"));
    }
    Ok(id)
}

/// Where each body lies in a log segment: (id, offset of the body's first byte, offset just
/// past its last byte). The body is the last part of its record, so a record is whole iff
/// its body ends within the file.
fn bodies_in(segment: &[u8]) -> Vec<(u64, usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + BODY_OVERHEAD <= segment.len() {
        if &segment[i..i + 4] == MAGIC {
            let id = u64::from_le_bytes(segment[i + 4..i + 12].try_into().expect("8 bytes"));
            let len =
                u32::from_le_bytes(segment[i + 12..i + 16].try_into().expect("4 bytes")) as usize;
            out.push((id, i, i + BODY_OVERHEAD + len));
            i += 4;
        } else {
            i += 1;
        }
    }
    out
}

/// A small deterministic generator (xorshift64*): reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

fn seed() -> u64 {
    std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

// ---------------------------------------------------------------------------------------
// The broker process

/// A running `warren`; killed with SIGKILL when dropped (so a failing test leaves nothing).
struct Warren {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Warren {
    /// Starts the binary on an ephemeral loopback port and waits until it listens.
    async fn start(dir: &Path) -> Warren {
        Self::start_with(dir, &[]).await
    }

    async fn start_with(dir: &Path, args: &[&str]) -> Warren {
        let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
            .arg("--amqp-listen")
            .arg("127.0.0.1:0")
            .args(["--management-listen", "none", "--prometheus-listen", "none"])
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the warren binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let line = strip_ansi(&line);
                if line.contains("listening for AMQP") {
                    let addr = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                    if let (Some(addr), Some(tx)) = (addr, tx.take()) {
                        let _ = tx.send(addr);
                    }
                }
                lines.lock().expect("log lines").push(line);
            }
        });
        let addr = match timeout(WAIT, rx).await {
            Ok(Ok(addr)) => addr,
            _ => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "warren did not start listening ({status:?}); its log:\n{}",
                    log.lock().expect("log lines").join("\n")
                );
            }
        };
        Warren { child, addr, log }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2F", self.addr)
    }

    /// SIGKILL: no shutdown, no final checkpoint, nothing flushed by the broker.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_contains(&self, needle: &str) -> bool {
        self.log
            .lock()
            .expect("log lines")
            .iter()
            .any(|l| l.contains(needle))
    }
}

impl Drop for Warren {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn connect(url: &str) -> lapin::Result<Connection> {
    match timeout(
        WAIT,
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => panic!("connecting to {url} timed out"),
    }
}

/// Declares the exchange, both queues and their bindings (all durable); returns the queues'
/// message counts.
async fn declare(ch: &Channel) -> lapin::Result<[u32; 2]> {
    timeout(
        WAIT,
        ch.exchange_declare(
            EXCHANGE,
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("exchange.declare timed out")?;
    let mut counts = [0; 2];
    for (i, q) in QUEUES.iter().enumerate() {
        let declared = timeout(
            WAIT,
            ch.queue_declare(
                q,
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .expect("queue.declare timed out")?;
        counts[i] = declared.message_count();
        timeout(
            WAIT,
            ch.queue_bind(
                q,
                EXCHANGE,
                "",
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .expect("queue.bind timed out")?;
    }
    Ok(counts)
}

// ---------------------------------------------------------------------------------------
// What the clients saw

#[derive(Default)]
struct Ledger {
    /// Ids handed to `basic.publish` (whether or not the frame got out).
    published: HashSet<u64>,
    /// Those of them published as transient (delivery mode 1): gone after any restart.
    transient: HashSet<u64>,
    /// Ids the broker acked (confirmed).
    confirmed: BTreeSet<u64>,
    /// Per queue, ids whose ack (or auto-ack delivery) the broker was sent.
    acked: [HashSet<u64>; 2],
    /// Everything that looked wrong, reported at the end.
    failures: Vec<String>,
    nacked: u64,
    recovered: u64,
    recovered_after_ack: u64,
}

type Shared = Arc<Mutex<Ledger>>;

fn fail(ledger: &Shared, what: String) {
    ledger.lock().expect("ledger").failures.push(what);
}

/// Publishes persistent messages in windows of 32 with confirms until the connection dies.
async fn publisher(url: String, ledger: Shared, next_id: Arc<AtomicU64>, seed: u64) {
    let mut rng = Rng::new(seed);
    let Ok(conn) = connect(&url).await else {
        return;
    };
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    if ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .is_err()
        || declare(&ch).await.is_err()
    {
        return;
    }
    loop {
        let mut window = Vec::with_capacity(32);
        for _ in 0..32 {
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            // Mostly small bodies, now and then one that spans several frames.
            let len = if rng.below(50) == 0 {
                100_000 + rng.below(200_000) as usize
            } else {
                rng.below(2048) as usize
            };
            ledger.lock().expect("ledger").published.insert(id);
            let sent = ch
                .basic_publish(
                    EXCHANGE,
                    "",
                    BasicPublishOptions::default(),
                    &make_body(id, len),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await;
            match sent {
                Ok(confirm) => window.push((id, confirm)),
                Err(_) => break,
            }
        }
        let full = window.len() == 32;
        for (id, confirm) in window {
            match timeout(WAIT, confirm).await {
                Ok(Ok(c)) if c.is_ack() => {
                    ledger.lock().expect("ledger").confirmed.insert(id);
                }
                Ok(Ok(_)) => ledger.lock().expect("ledger").nacked += 1,
                // The connection died: whatever was not confirmed may or may not be stored.
                Ok(Err(_)) => return,
                Err(_) => {
                    fail(&ledger, format!("no confirm for id {id} within {WAIT:?}"));
                    return;
                }
            }
        }
        if !full {
            return;
        }
    }
}

/// Consumes queue `qi` with manual acks, pausing every `pause_every` messages so that a
/// backlog builds, and records each id once its ack has been sent.
async fn consumer(url: String, ledger: Shared, qi: usize, pause_every: u64) {
    let Ok(conn) = connect(&url).await else {
        return;
    };
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    if ch.basic_qos(64, BasicQosOptions::default()).await.is_err() || declare(&ch).await.is_err() {
        return;
    }
    let Ok(mut deliveries) = ch
        .basic_consume(
            QUEUES[qi],
            "crash-consumer",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    else {
        return;
    };
    let mut n = 0u64;
    while let Ok(Some(Ok(d))) = timeout(WAIT, deliveries.next()).await {
        match check_body(&d.data) {
            Ok(id) => {
                let mut l = ledger.lock().expect("ledger");
                if !l.published.contains(&id) {
                    l.failures
                        .push(format!("delivered id {id} was never published"));
                }
            }
            Err(e) => fail(&ledger, format!("corrupt delivery: {e}")),
        }
        if d.acker.ack(BasicAckOptions::default()).await.is_err() {
            return;
        }
        if let Ok(id) = check_body(&d.data) {
            ledger.lock().expect("ledger").acked[qi].insert(id);
        }
        n += 1;
        if n % pause_every == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// After a restart: takes every message in both queues (auto-ack) and checks them against
/// the ledger. Returns how many each queue held.
async fn drain_and_check(warren: &Warren, ledger: &Shared, context: &str) -> [usize; 2] {
    let conn = connect(&warren.url()).await.expect("connect to drain");
    let ch = conn.create_channel().await.expect("open a channel");
    let expected = declare(&ch).await.expect("declare the queues");
    let mut counts = [0; 2];
    for (qi, queue) in QUEUES.iter().enumerate() {
        let context = format!("{context}, queue {queue}");
        let mut deliveries = ch
            .basic_consume(
                queue,
                &format!("drain-{queue}"),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume to drain");
        let mut present = HashSet::new();
        for _ in 0..expected[qi] {
            let d = match timeout(WAIT, deliveries.next()).await {
                Ok(Some(Ok(d))) => d,
                other => panic!(
                    "{context}: drain stopped after {} of {}: {other:?}",
                    present.len(),
                    expected[qi]
                ),
            };
            match check_body(&d.data) {
                Ok(id) => {
                    if !present.insert(id) {
                        fail(ledger, format!("{context}: id {id} is in the queue twice"));
                    }
                    if !d.redelivered {
                        fail(
                            ledger,
                            format!("{context}: recovered id {id} not marked redelivered"),
                        );
                    }
                }
                Err(e) => fail(ledger, format!("{context}: corrupt message: {e}")),
            }
        }
        let mut l = ledger.lock().expect("ledger");
        for id in &present {
            if !l.published.contains(id) {
                l.failures.push(format!(
                    "{context}: id {id} came back but was never published"
                ));
            } else if l.transient.contains(id) {
                l.failures
                    .push(format!("{context}: transient id {id} survived a restart"));
            }
        }
        let lost: Vec<u64> = l
            .confirmed
            .iter()
            .filter(|id| !l.acked[qi].contains(id) && !present.contains(id))
            .copied()
            .collect();
        if !lost.is_empty() {
            let shown: Vec<u64> = lost.iter().take(20).copied().collect();
            l.failures.push(format!(
                "{context}: {} confirmed, never-acked messages are missing, e.g. {shown:?}",
                lost.len()
            ));
        }
        l.recovered += present.len() as u64;
        l.recovered_after_ack +=
            present.iter().filter(|id| l.acked[qi].contains(id)).count() as u64;
        // They were delivered with auto-ack: settled now (they may still come back after the
        // next crash if that settlement had not reached the disk).
        l.acked[qi].extend(present.iter().copied());
        counts[qi] = present.len();
    }
    let _ = conn.close(200, "drained").await;
    counts
}

fn report(ledger: &Shared) {
    let l = ledger.lock().expect("ledger");
    eprintln!(
        "crash test: published {}, confirmed {}, nacked {}, acked {:?}, recovered {} \
         ({} of them already acked)",
        l.published.len(),
        l.confirmed.len(),
        l.nacked,
        l.acked.iter().map(HashSet::len).collect::<Vec<_>>(),
        l.recovered,
        l.recovered_after_ack
    );
    assert!(
        l.failures.is_empty(),
        "{} problems:\n{}",
        l.failures.len(),
        l.failures.join("\n")
    );
}

fn cycles(default: usize) -> usize {
    std::env::var("CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Runs publisher and consumers against `warren <args>`, kills it after a random delay,
/// restarts it and checks the queues, `cycles` times.
async fn crash_loop(args: &[&str], cycles: usize) {
    let seed = seed();
    eprintln!("crash test {args:?}: {cycles} cycles, CRASH_SEED={seed}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("temporary data directory");
    let ledger: Shared = Arc::default();
    let next_id = Arc::new(AtomicU64::new(1));
    for cycle in 0..cycles {
        let mut warren = Warren::start_with(dir.path(), args).await;
        drain_and_check(&warren, &ledger, &format!("cycle {cycle}, after restart")).await;
        let url = warren.url();
        let p = tokio::spawn(publisher(
            url.clone(),
            ledger.clone(),
            next_id.clone(),
            rng.next_u64(),
        ));
        // Queue a is consumed briskly, queue b slowly: acks in one must not settle the other.
        let a = tokio::spawn(consumer(url.clone(), ledger.clone(), 0, 16));
        let b = tokio::spawn(consumer(url, ledger.clone(), 1, 2));
        tokio::time::sleep(Duration::from_millis(100 + rng.below(701))).await;
        warren.kill9();
        for (name, task) in [("publisher", p), ("consumer a", a), ("consumer b", b)] {
            match timeout(WAIT, task).await {
                Ok(r) => r.unwrap_or_else(|e| panic!("{name} task failed: {e}")),
                Err(_) => panic!("cycle {cycle}: the {name} did not notice the broker died"),
            }
        }
    }
    let warren = Warren::start_with(dir.path(), args).await;
    drain_and_check(&warren, &ledger, "after the last restart").await;
    {
        let l = ledger.lock().expect("ledger");
        assert!(
            l.confirmed.len() >= cycles,
            "too few confirms ({}) for the test to mean anything",
            l.confirmed.len()
        );
    }
    report(&ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_a_loop_loses_no_confirmed_message() {
    crash_loop(&[], cycles(8)).await;
}

/// In page-cache mode a confirm means "written to the OS": a crash of the broker (not of the
/// machine) still loses nothing confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_a_loop_loses_no_confirmed_message_in_page_cache_mode() {
    crash_loop(&["--persist-mode", "page-cache"], cycles(8).div_ceil(2)).await;
}

// ---------------------------------------------------------------------------------------
// A backlog larger than a queue keeps in memory

/// Publishes persistent messages `ids` of 1–3000 bytes with confirms (all must be acked).
async fn publish_all(warren: &Warren, ids: std::ops::Range<u64>, ledger: &Shared) {
    publish_many(warren, ids, ledger, |id| ((id as usize * 37) % 3000, false)).await;
}

/// Publishes `ids` with confirms, each with the (body length, transient) `shape` says.
async fn publish_many(
    warren: &Warren,
    ids: std::ops::Range<u64>,
    ledger: &Shared,
    shape: impl Fn(u64) -> (usize, bool),
) {
    let conn = connect(&warren.url()).await.expect("connect to publish");
    let ch = conn.create_channel().await.expect("open a channel");
    timeout(WAIT, ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .expect("confirm.select timed out")
        .expect("confirm.select");
    declare(&ch).await.expect("declare the queue");
    let mut confirms = Vec::new();
    for id in ids {
        let (len, transient) = shape(id);
        {
            let mut l = ledger.lock().expect("ledger");
            l.published.insert(id);
            if transient {
                l.transient.insert(id);
            }
        }
        let mode = if transient { 1 } else { 2 };
        let c = timeout(
            WAIT,
            ch.basic_publish(
                EXCHANGE,
                "",
                BasicPublishOptions::default(),
                &make_body(id, len),
                BasicProperties::default().with_delivery_mode(mode),
            ),
        )
        .await
        .expect("publish timed out")
        .expect("publish");
        confirms.push((id, transient, c));
    }
    for (id, transient, c) in confirms {
        let c = timeout(WAIT, c)
            .await
            .expect("confirm timed out")
            .expect("confirm");
        assert!(c.is_ack(), "id {id} nacked");
        if !transient {
            ledger.lock().expect("ledger").confirmed.insert(id);
        }
    }
}

/// Past a queue's memory budget (32 MiB) its backlog is paged to the log: persistent
/// messages by position, transient ones as page copies under a private id. After a crash
/// the former come back and the latter must not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_a_paged_backlog_loses_no_confirmed_message_and_revives_no_transient_one() {
    let seed = seed();
    eprintln!("paged crash test: CRASH_SEED={seed}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("temporary data directory");
    let ledger: Shared = Arc::default();
    let mut warren = Warren::start(dir.path()).await;
    // 160 bodies of 256 KiB: 40 MiB in each queue; every fifth one transient.
    publish_many(&warren, 1..161, &ledger, |id| (256 * 1024, id % 5 == 0)).await;
    // Queue a is being consumed (its paged tail read back) when the broker dies.
    let a = tokio::spawn(consumer(warren.url(), ledger.clone(), 0, 4));
    tokio::time::sleep(Duration::from_millis(100 + rng.below(400))).await;
    warren.kill9();
    match timeout(WAIT, a).await {
        Ok(r) => r.expect("consumer task"),
        Err(_) => panic!("the consumer did not notice the broker died"),
    }
    let warren = Warren::start(dir.path()).await;
    let n = drain_and_check(&warren, &ledger, "paged backlog").await;
    assert_eq!(n[1], 128, "queue b holds every persistent message");
    report(&ledger);
}

// ---------------------------------------------------------------------------------------
// A damaged log tail

/// The segment file with the highest first LSN.
fn newest_segment(data_dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(data_dir.join("log"))
        .expect("read the log directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seg-") && n.ends_with(".log"))
        })
        .collect();
    segs.sort();
    segs.pop().expect("a log segment")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a directory");
    for e in std::fs::read_dir(from).expect("read a directory") {
        let e = e.expect("a directory entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("a file type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy a file");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_log_tail_after_kill_9_keeps_every_message_before_the_damage() {
    let garbage_dir = tempfile::tempdir().expect("temporary data directory");
    let ledger: Shared = Arc::default();
    // Two lives, so that the log has a checkpoint (written at the restart) and a tail after it.
    let mut warren = Warren::start(garbage_dir.path()).await;
    publish_all(&warren, 1..201, &ledger).await;
    warren.kill9();
    let mut warren = Warren::start(garbage_dir.path()).await;
    publish_all(&warren, 201..401, &ledger).await;
    warren.kill9();
    drop(warren);

    // A second copy, to be cut in the middle of its last record.
    let torn = tempfile::tempdir().expect("temporary data directory");
    copy_dir(garbage_dir.path(), torn.path());

    // 1. Garbage after the last record (a torn write of a record that never completed).
    {
        use std::io::Write;
        let seg = newest_segment(garbage_dir.path());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&seg)
            .expect("open the newest segment");
        let mut rng = Rng::new(7);
        let junk: Vec<u8> = (0..777).map(|_| rng.next_u64() as u8).collect();
        f.write_all(&junk).expect("append garbage");
    }
    let warren = Warren::start(garbage_dir.path()).await;
    let n = drain_and_check(&warren, &ledger, "garbage tail").await;
    assert_eq!(
        n,
        [400, 400],
        "every confirmed message is before the garbage"
    );
    assert!(
        warren.log_contains("damaged tail"),
        "the broker did not report cutting the damaged tail"
    );
    drop(warren);
    report(&ledger);

    // 2. The last record cut in half: it is gone, everything before it is there, and the log
    //    takes new messages after the cut.
    let seg = newest_segment(torn.path());
    let bytes = std::fs::read(&seg).expect("read the newest segment");
    let (last_id, start, end) = *bodies_in(&bytes).last().expect("bodies in the segment");
    assert_eq!(end, bytes.len(), "the newest segment ends with a publish");
    let cut = start + (end - start) / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open the newest segment")
        .set_len(cut as u64)
        .expect("truncate the segment");
    let ledger: Shared = Arc::default();
    {
        let mut l = ledger.lock().expect("ledger");
        l.published.extend(1..401);
        // Only the messages wholly before the cut were promised to survive the damage.
        l.confirmed.extend((1..401).filter(|id| *id != last_id));
    }
    let mut warren = Warren::start(torn.path()).await;
    let n = drain_and_check(&warren, &ledger, "torn record").await;
    assert_eq!(n, [399, 399], "all but the torn message (id {last_id})");
    assert!(warren.log_contains("damaged tail"));
    // The log goes on from the cut.
    publish_all(&warren, 1001..1051, &ledger).await;
    warren.kill9();
    let warren = Warren::start(torn.path()).await;
    let n = drain_and_check(&warren, &ledger, "after writing past the cut").await;
    assert_eq!(n, [50, 50]);
    report(&ledger);
}

// ---------------------------------------------------------------------------------------
// A clean stop

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_leaving_a_checkpoint_and_every_message() {
    let dir = tempfile::tempdir().expect("temporary data directory");
    let ledger: Shared = Arc::default();
    let mut warren = Warren::start(dir.path()).await;
    publish_all(&warren, 1..101, &ledger).await;
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(warren.child.id().to_string())
        .status()
        .expect("run kill -TERM");
    assert!(status.success());
    let exited = timeout(WAIT, async {
        loop {
            if let Some(status) = warren.child.try_wait().expect("wait for warren") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("warren did not exit within 10 s of SIGTERM");
    assert!(exited.success(), "warren exited with {exited}");
    drop(warren);
    let warren = Warren::start(dir.path()).await;
    // Everything was checkpointed at the stop: nothing to replay.
    assert!(
        warren.log_contains("from_checkpoint=true replayed=0"),
        "the restart replayed the log"
    );
    let n = drain_and_check(&warren, &ledger, "after SIGTERM").await;
    assert_eq!(n, [100, 100]);
    report(&ledger);
}

// ---------------------------------------------------------------------------------------
// Users and permissions from definitions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_from_definitions_survive_kill_9_and_a_restart_without_the_file() {
    let dir = tempfile::tempdir().expect("temporary data directory");
    let files = tempfile::tempdir().expect("temporary directory for the definitions");
    let defs = files.path().join("definitions.json");
    std::fs::write(
        &defs,
        r#"{
            "users": [{"name": "app", "password": "app-secret", "tags": ""}],
            "vhosts": [{"name": "prod"}],
            "permissions": [{"user": "app", "vhost": "prod",
                             "configure": "^app\\.", "write": ".*", "read": ".*"}]
        }"#,
    )
    .expect("write the definitions file");
    let mut warren = Warren::start_with(
        dir.path(),
        &["--definitions", defs.to_str().expect("utf-8 path")],
    )
    .await;
    let app_url = |w: &Warren| format!("amqp://app:app-secret@{}/prod", w.addr);
    {
        let conn = connect(&app_url(&warren)).await.expect("app logs in");
        let ch = timeout(WAIT, conn.create_channel())
            .await
            .expect("channel in time")
            .expect("channel");
        timeout(WAIT, ch.confirm_select(ConfirmSelectOptions::default()))
            .await
            .expect("confirm.select in time")
            .expect("confirm.select");
        timeout(
            WAIT,
            ch.queue_declare(
                "app.q",
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .expect("declare in time")
        .expect("app may declare app.*");
        let confirm = timeout(
            WAIT,
            ch.basic_publish(
                "",
                "app.q",
                BasicPublishOptions::default(),
                b"kept",
                BasicProperties::default().with_delivery_mode(2),
            ),
        )
        .await
        .expect("publish in time")
        .expect("publish");
        let confirmed = timeout(WAIT, confirm)
            .await
            .expect("confirm in time")
            .expect("confirmation");
        assert!(confirmed.is_ack());
    }
    warren.kill9();
    drop(warren);

    // No --definitions this time: the user, the vhost and the rights come from the data
    // directory.
    let warren = Warren::start(dir.path()).await;
    let conn = connect(&app_url(&warren))
        .await
        .expect("app logs in after kill -9 without the definitions file");
    let ch = timeout(WAIT, conn.create_channel())
        .await
        .expect("channel in time")
        .expect("channel");
    let got = timeout(
        WAIT,
        ch.basic_get("app.q", lapin::options::BasicGetOptions { no_ack: true }),
    )
    .await
    .expect("get in time")
    .expect("basic.get")
    .expect("the confirmed message is there");
    assert_eq!(got.delivery.data, b"kept");
    let refused = timeout(
        WAIT,
        ch.queue_declare(
            "other",
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("declare in time");
    match refused {
        Err(lapin::Error::ProtocolError(e)) => assert_eq!(e.get_id(), 403, "{e:?}"),
        other => panic!("app may configure only app.*, got {other:?}"),
    }
    // guest was created with the directory and is still there.
    let guest = connect(&warren.url()).await.expect("guest logs in");
    let _ = timeout(WAIT, guest.close(200, "bye")).await;
}
