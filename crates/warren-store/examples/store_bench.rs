//! Store micro-benchmark: appends/s with fsync (16 B and 1 KB payloads) and restart time with
//! 1,000,000 live messages.
//!
//! `cargo run --release -p warren-store --example store_bench [-- --messages N]`
//! (set `WARREN_BENCH_DIR` to run on another filesystem than the temp dir's).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use warren_store::{Store, StoreConfig, SyncMode};

fn config(dir: &std::path::Path, sync: SyncMode) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.sync = sync;
    // Only explicit checkpoints (close), so the crash case replays the whole log.
    c.checkpoint_interval = Duration::from_secs(3600);
    c.checkpoint_bytes = u64::MAX;
    c
}

fn tempdir() -> Result<tempfile::TempDir> {
    Ok(match std::env::var_os("WARREN_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    })
}

/// One publisher keeping `window` unconfirmed messages in flight (like an AMQP client with
/// publisher confirms), for `secs` seconds.
fn windowed(sync: SyncMode, size: usize, window: usize, secs: f64) -> Result<(f64, f64)> {
    let dir = tempdir()?;
    let (store, _) = Store::open(config(dir.path(), sync))?;
    let payload = Bytes::from(vec![0x42u8; size]);
    let mut inflight = VecDeque::with_capacity(window + 1);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..256 {
            n += 1;
            let lsn = store.publish(&[1], payload.clone())?.lsn;
            inflight.push_back(lsn);
            if inflight.len() > window {
                if let Some(l) = inflight.pop_front() {
                    store.wait_durable_blocking(l)?;
                }
            }
        }
    }
    if let Some(&l) = inflight.back() {
        store.wait_durable_blocking(l)?;
    }
    let el = start.elapsed().as_secs_f64();
    let s = store.stats();
    store.close()?;
    Ok((n as f64 / el, s.fsyncs as f64 / s.records as f64))
}

/// `threads` publishers, each waiting for its confirm before the next publish.
fn confirm_each(threads: u64, size: usize, secs: f64) -> Result<(f64, f64)> {
    let dir = tempdir()?;
    let (store, _) = Store::open(config(dir.path(), SyncMode::Fsync))?;
    let payload = Bytes::from(vec![0x42u8; size]);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            let payload = payload.clone();
            std::thread::spawn(move || -> Result<()> {
                while start.elapsed().as_secs_f64() < secs {
                    let lsn = store.publish(&[t], payload.clone())?.lsn;
                    store.wait_durable_blocking(lsn)?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("publisher panicked"))??;
    }
    let el = start.elapsed().as_secs_f64();
    let s = store.stats();
    store.close()?;
    Ok((s.records as f64 / el, s.fsyncs as f64 / s.records as f64))
}

fn restart(messages: u64) -> Result<()> {
    let dir = tempdir()?;
    let (store, _) = Store::open(config(dir.path(), SyncMode::Fsync))?;
    let payload = Bytes::from(vec![7u8; 16]);
    let t = Instant::now();
    let mut last = 0;
    for id in 1..=messages {
        last = store.publish(&[id % 10], payload.clone())?.lsn;
    }
    store.wait_durable_blocking(last)?;
    // A tenth of them delivered once, so the index carries some state.
    let marked: Vec<u64> = (1..=messages).step_by(10).collect();
    for chunk in marked.chunks(1000) {
        last = store.mark_delivered(chunk[0] % 10, chunk)?;
    }
    store.wait_durable_blocking(last)?;
    println!(
        "  wrote {messages} messages (16 B) in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    // Crash: no checkpoint, the whole log is replayed.
    store.crash_for_test();
    let t = Instant::now();
    let (store, rec) = Store::open(config(dir.path(), SyncMode::Fsync))?;
    let el = t.elapsed();
    let live: usize = rec.queues.values().map(|q| q.len()).sum();
    println!(
        "  restart after crash (full log replay, {} records): {:.3} s, {live} live",
        rec.replayed_records,
        el.as_secs_f64()
    );
    // Recovery wrote a checkpoint in the background; close writes the final one.
    let t = Instant::now();
    store.checkpoint()?;
    println!(
        "  checkpoint of {live} messages: {:.3} s, of which the writer paused {:.3} s",
        t.elapsed().as_secs_f64(),
        store.stats().last_checkpoint_snapshot_micros as f64 / 1e6
    );
    let t = Instant::now();
    store.close()?;
    println!(
        "  close (final checkpoint of {live} messages): {:.3} s, checkpoint {} MB",
        t.elapsed().as_secs_f64(),
        std::fs::metadata(dir.path().join("checkpoint"))?.len() / 1_000_000
    );
    let t = Instant::now();
    let (store, rec) = Store::open(config(dir.path(), SyncMode::Fsync))?;
    let el = t.elapsed();
    let live: usize = rec.queues.values().map(|q| q.len()).sum();
    println!(
        "  restart after clean close (checkpoint, {} tail records): {:.3} s, {live} live",
        rec.replayed_records,
        el.as_secs_f64()
    );
    store.close()?;
    Ok(())
}

fn main() -> Result<()> {
    let mut messages = 1_000_000u64;
    let mut secs = 3.0;
    let args: Vec<String> = std::env::args().collect();
    for w in args.windows(2) {
        match w[0].as_str() {
            "--messages" => messages = w[1].parse()?,
            "--secs" => secs = w[1].parse()?,
            _ => {}
        }
    }
    println!("appends/s, SyncMode::Fsync:");
    for size in [16usize, 1024] {
        let (rate, ratio) = confirm_each(1, size, secs)?;
        println!("  {size:>5} B, 1 publisher waiting for each confirm:   {rate:>9.0}/s  ({ratio:.3} fsyncs/record)");
        let (rate, ratio) = confirm_each(32, size, secs)?;
        println!("  {size:>5} B, 32 publishers waiting for each confirm: {rate:>9.0}/s  ({ratio:.4} fsyncs/record)");
        let (rate, ratio) = windowed(SyncMode::Fsync, size, 10_000, secs)?;
        println!("  {size:>5} B, 1 publisher, 10k confirms in flight:   {rate:>9.0}/s  ({ratio:.4} fsyncs/record)");
    }
    println!("appends/s, SyncMode::PageCache:");
    for size in [16usize, 1024] {
        let (rate, _) = windowed(SyncMode::PageCache, size, 10_000, secs)?;
        println!("  {size:>5} B, 1 publisher, 10k in flight:            {rate:>9.0}/s");
    }
    println!("restart with {messages} live messages:");
    restart(messages)?;
    Ok(())
}
