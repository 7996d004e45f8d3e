//! Power cuts: the store runs a mixed workload (publishes of all sizes across many small
//! segments, acks, deliveries, checkpoints, compaction) on a simulated disk whose power fails
//! at a random operation; the disk then holds only what was fsynced plus torn and reordered
//! pieces of what was not (`SimFs::crash`). Recovery must succeed, every confirmed message
//! must come back (unless its ack was durable too), nothing unknown or corrupt may come back,
//! and the recovered store must take and keep new messages.
//!
//! `POWER_CUTS` sets the number of cuts (default 1000); a failure prints the seed and the
//! cut that reproduce it (`POWER_CUT_SEED`, `POWER_CUT_AT`: an operation number or `end`;
//! the writer thread's timing varies, so a replay may need a few tries).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use warren_store::sim::SimFs;
use warren_store::{Store, StoreConfig, SyncMode};

const QUEUES: [u64; 2] = [1, 2];

fn config(fs: &SimFs) -> StoreConfig {
    let mut c = StoreConfig::new("/warren/store");
    c.fs = Arc::new(fs.clone());
    c.sync = SyncMode::Fsync;
    c.segment_size = 16 << 10;
    c.checkpoint_bytes = 24 << 10;
    c.checkpoint_interval = Duration::from_millis(20);
    c.compact_threshold = 0.6;
    c.retry_interval = Duration::from_millis(2);
    c
}

/// A body that names its message: `tag` repeated, `len` bytes (so a torn or misplaced body
/// cannot pass for another).
fn body(tag: u64, len: usize) -> Bytes {
    let pattern = tag.to_le_bytes();
    Bytes::from(
        (0..len)
            .map(|i| pattern[i % 8] ^ (i as u8))
            .collect::<Vec<u8>>(),
    )
}

#[derive(Default)]
struct Model {
    /// msg id → (tag, length, queues, publish LSN)
    published: HashMap<u64, (u64, usize, Vec<u64>, u64)>,
    /// (queue, msg id) → ack LSN
    acked: HashMap<(u64, u64), u64>,
    /// Highest LSN a wait reported durable.
    durable: u64,
}

/// Runs the workload until it is done or the power fails; returns what the store promised.
fn workload(store: &Store, rng: &mut StdRng) -> Model {
    let mut m = Model::default();
    let mut live: Vec<(u64, u64)> = Vec::new();
    let mut tag = 0u64;
    let mut last = 0u64;
    for step in 0..400 {
        let r = rng.gen_range(0..100);
        let ok = if r < 55 {
            tag += 1;
            let len = match rng.gen_range(0..10) {
                0 => 0,
                1..=6 => rng.gen_range(1..600),
                7 | 8 => rng.gen_range(600..4000),
                _ => rng.gen_range(4000..20_000),
            };
            let queues: Vec<u64> = if rng.gen_bool(0.3) {
                QUEUES.to_vec()
            } else {
                vec![QUEUES[rng.gen_range(0..2)]]
            };
            match store.publish(&queues, body(tag, len)) {
                Ok(p) => {
                    for &q in &queues {
                        live.push((q, p.msg_id));
                    }
                    m.published.insert(p.msg_id, (tag, len, queues, p.lsn));
                    last = p.lsn;
                    true
                }
                Err(_) => false,
            }
        } else if r < 75 && !live.is_empty() {
            let (q, id) = live.swap_remove(rng.gen_range(0..live.len()));
            match store.ack(q, &[id]) {
                Ok(lsn) => {
                    m.acked.insert((q, id), lsn);
                    last = lsn;
                    true
                }
                Err(_) => false,
            }
        } else if r < 82 && !live.is_empty() {
            let (q, id) = live[rng.gen_range(0..live.len())];
            store.mark_delivered(q, &[id]).map(|l| last = l).is_ok()
        } else if r < 95 {
            match store.wait_durable_blocking(last) {
                Ok(()) => {
                    m.durable = m.durable.max(last);
                    true
                }
                Err(_) => false,
            }
        } else if r < 98 {
            store.checkpoint().is_ok()
        } else {
            store.compact().is_ok()
        };
        if !ok && step > 0 {
            break;
        }
    }
    // What a wait would have said: every LSN up to here was fsynced.
    m.durable = m.durable.max(store.durable_lsn());
    m
}

/// Recovers the crashed disk and checks every promise; returns a description of the first
/// broken one.
fn check(after: &SimFs, m: &Model) -> Result<(), String> {
    let (store, rec) = Store::open(config(after)).map_err(|e| format!("recovery failed: {e}"))?;
    for q in QUEUES {
        let got: HashSet<u64> = rec
            .queues
            .get(&q)
            .map(|r| r.ids.iter().collect())
            .unwrap_or_default();
        for (&id, (_, _, queues, lsn)) in &m.published {
            let confirmed = *lsn <= m.durable;
            // An ack that was not confirmed may still have reached the disk.
            let acked = m.acked.contains_key(&(q, id));
            if confirmed && queues.contains(&q) && !acked && !got.contains(&id) {
                return Err(format!(
                    "confirmed message {id} (lsn {lsn}, durable {}) lost from queue {q}; recovery: {:?} from checkpoint {} replayed {}",
                    m.durable, rec.truncated, rec.from_checkpoint, rec.replayed_records
                ));
            }
        }
        for &id in &got {
            let Some((tag, len, queues, _)) = m.published.get(&id) else {
                return Err(format!("queue {q} recovered unknown message {id}"));
            };
            if !queues.contains(&q) {
                return Err(format!(
                    "message {id} recovered for queue {q}, never its own"
                ));
            }
            if m.acked.get(&(q, id)).is_some_and(|&a| a <= m.durable) {
                return Err(format!("message {id} acked durably on {q} came back"));
            }
            match store.read(id) {
                Ok(b) if b == body(*tag, *len) => {}
                Ok(_) => return Err(format!("message {id} recovered with the wrong body")),
                Err(e) => return Err(format!("message {id} recovered but unreadable: {e}")),
            }
        }
    }
    // The recovered store takes new messages and keeps them across a clean restart.
    let p = store
        .publish(&[9], body(u64::MAX, 100))
        .map_err(|e| format!("publish after recovery: {e}"))?;
    store
        .wait_durable_blocking(p.lsn)
        .map_err(|e| format!("durability after recovery: {e}"))?;
    store.close().map_err(|e| format!("close: {e}"))?;
    let (again, rec) = Store::open(config(after)).map_err(|e| format!("reopen: {e}"))?;
    if !rec.queues.get(&9).is_some_and(|r| r.ids.contains(p.msg_id)) {
        return Err("a message written after recovery was lost on a clean restart".into());
    }
    again.close().map_err(|e| format!("close: {e}"))?;
    Ok(())
}

/// Where a run loses power: at an operation, or (one run in eight) only at the end, with
/// everything unsynced at risk.
fn cut_for(seed: u64, ops_hint: u64) -> Option<u64> {
    let mut rng = StdRng::seed_from_u64(!seed);
    (rng.gen_range(0..8) != 0).then(|| rng.gen_range(1..=ops_hint.max(2)))
}

fn one_cut(seed: u64, cut: Option<u64>) -> Result<u64, String> {
    let fs = SimFs::new();
    let mut rng = StdRng::seed_from_u64(seed);
    let (store, _) = Store::open(config(&fs)).map_err(|e| format!("open: {e}"))?;
    if let Some(n) = cut {
        fs.cut_power_at(fs.ops() + n);
    }
    let model = workload(&store, &mut rng);
    let ops = fs.ops();
    store.crash_for_test();
    let after = fs.crash(rng.gen());
    check(&after, &model).map_err(|e| format!("{e} (cut at {cut:?}, {ops} ops)"))?;
    Ok(ops)
}

#[test]
fn every_confirmed_message_survives_power_cuts_at_random_points() {
    let runs: u64 = std::env::var("POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    if let Some(seed) = std::env::var("POWER_CUT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        let cut = std::env::var("POWER_CUT_AT")
            .ok()
            .and_then(|v| v.parse().ok());
        one_cut(seed, cut).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        return;
    }
    // How many operations a whole run takes, so that cuts land anywhere in it.
    let mut ops_hint = 0;
    for seed in 0..4 {
        let fs = SimFs::new();
        let (store, _) = Store::open(config(&fs)).unwrap();
        workload(&store, &mut StdRng::seed_from_u64(seed));
        ops_hint = ops_hint.max(fs.ops());
        store.close().unwrap();
    }
    assert!(ops_hint > 100, "the workload does I/O ({ops_hint} ops)");
    let base: u64 = rand::random();
    let mut failures = Vec::new();
    for i in 0..runs {
        let seed = base.wrapping_add(i);
        let cut = cut_for(seed, ops_hint);
        if let Err(e) = one_cut(seed, cut) {
            let at = cut.map_or("end".into(), |n| n.to_string());
            failures.push(format!("POWER_CUT_SEED={seed} POWER_CUT_AT={at}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} power cuts broke a promise:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
}
