//! Property tests: random operation sequences against a model of what must survive.
//!
//! - Every reopen (clean close, or crash after the last operation was durable) recovers exactly
//!   the model's live messages, per queue in publish order, with their delivery counts, and
//!   every body reads back intact: through checkpoints, segment deletion and compaction.
//! - Recovery from checkpoint + tail equals recovery by replaying the whole log.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use common::{body, config, flatten, ids};
use proptest::prelude::*;
use warren_store::{Location, Recovery, Store, StoreConfig};

#[derive(Debug, Clone)]
enum Step {
    Publish(u8),
    Ack(u8, Vec<u16>),
    Mark(u8, Vec<u16>),
    DropQueue(u8),
    Checkpoint,
    Compact,
    CloseReopen,
    CrashReopen,
}

fn step() -> impl Strategy<Value = Step> {
    let picks = || prop::collection::vec(any::<u16>(), 1..6);
    prop_oneof![
        10 => (1u8..8).prop_map(Step::Publish),
        6 => (1u8..4, picks()).prop_map(|(q, p)| Step::Ack(q, p)),
        3 => (1u8..4, picks()).prop_map(|(q, p)| Step::Mark(q, p)),
        1 => (1u8..4).prop_map(Step::DropQueue),
        1 => Just(Step::Checkpoint),
        1 => Just(Step::Compact),
        1 => Just(Step::CloseReopen),
        1 => Just(Step::CrashReopen),
    ]
}

/// msg_id -> (queue -> delivery count), for live messages only.
#[derive(Default)]
struct Model {
    live: BTreeMap<u64, BTreeMap<u64, u32>>,
    published: u64,
}

impl Model {
    fn expected(&self) -> Vec<(u64, u64, u32)> {
        let mut v: Vec<(u64, u64, u32)> = self
            .live
            .iter()
            .flat_map(|(&id, qs)| qs.iter().map(move |(&q, &c)| (q, id, c)))
            .collect();
        v.sort_unstable();
        v
    }
    fn pick(&self, p: u16) -> u64 {
        u64::from(p) % self.published.max(1) + 1
    }
}

fn check(rec: &Recovery, model: &Model, store: &Store, locs: &mut HashMap<u64, Location>) {
    assert_eq!(flatten(rec), model.expected());
    for q in 1..=3u64 {
        let got = ids(rec, q);
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(got, sorted, "queue {q} not in publish order");
    }
    for ms in rec.queues.values() {
        for m in ms {
            assert_eq!(store.read(&m.location).unwrap(), body(m.msg_id));
            locs.insert(m.msg_id, m.location);
        }
    }
    assert!(rec.next_msg_id > model.published);
}

fn run(steps: &[Step], cfg: StoreConfig) -> (Model, Store) {
    let mut model = Model::default();
    let mut locs = HashMap::new();
    let (mut store, _) = Store::open(cfg.clone()).unwrap();
    let mut last = 0;
    for s in steps {
        match s {
            Step::Publish(mask) => {
                model.published += 1;
                let id = model.published;
                let queues: Vec<u64> = (1..=3).filter(|q| mask & (1 << (q - 1)) != 0).collect();
                let (lsn, loc) = store.publish(id, &queues, body(id)).unwrap();
                last = lsn;
                locs.insert(id, loc);
                model
                    .live
                    .insert(id, queues.iter().map(|&q| (q, 0)).collect());
            }
            Step::Ack(q, picks) => {
                let q = u64::from(*q);
                let picked: Vec<u64> = picks.iter().map(|&p| model.pick(p)).collect();
                last = store.ack(q, &picked).unwrap();
                for id in picked {
                    if let Some(qs) = model.live.get_mut(&id) {
                        qs.remove(&q);
                        if qs.is_empty() {
                            model.live.remove(&id);
                        }
                    }
                }
            }
            Step::Mark(q, picks) => {
                let q = u64::from(*q);
                let picked: Vec<u64> = picks.iter().map(|&p| model.pick(p)).collect();
                last = store.mark_delivered(q, &picked).unwrap();
                for id in picked {
                    if let Some(c) = model.live.get_mut(&id).and_then(|qs| qs.get_mut(&q)) {
                        *c += 1;
                    }
                }
            }
            Step::DropQueue(q) => {
                let q = u64::from(*q);
                last = store.drop_queue(q).unwrap();
                model.live.retain(|_, qs| {
                    qs.remove(&q);
                    !qs.is_empty()
                });
            }
            Step::Checkpoint => store.checkpoint().unwrap(),
            Step::Compact => {
                for r in store.compact().unwrap() {
                    if model.live.contains_key(&r.msg_id) {
                        assert_eq!(locs[&r.msg_id], r.old);
                        assert_eq!(store.read(&r.new).unwrap(), body(r.msg_id));
                    }
                    locs.insert(r.msg_id, r.new);
                }
            }
            Step::CloseReopen | Step::CrashReopen => {
                store.wait_durable_blocking(last).unwrap();
                if matches!(s, Step::CloseReopen) {
                    store.close().unwrap();
                } else {
                    store.crash_for_test();
                }
                let (s2, rec) = Store::open(cfg.clone()).unwrap();
                assert!(rec.truncated.is_none());
                check(&rec, &model, &s2, &mut locs);
                store = s2;
            }
        }
    }
    store.wait_durable_blocking(last).unwrap();
    (model, store)
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Small segments: rollover, dead-segment deletion and compaction all happen.
    #[test]
    fn recovery_matches_the_model(steps in prop::collection::vec(step(), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.segment_size = 600;
        let (model, store) = run(&steps, cfg.clone());
        store.crash_for_test();
        let (store, rec) = Store::open(cfg).unwrap();
        check(&rec, &model, &store, &mut HashMap::new());
        store.close().unwrap();
    }

    /// One segment that is never deleted: the whole log is there, so replaying all of it must
    /// give exactly what checkpoint + tail gives.
    #[test]
    fn checkpoint_plus_tail_equals_full_replay(steps in prop::collection::vec(step(), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let (model, store) = run(&steps, config(dir.path()));
        store.crash_for_test();
        let full = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), full.path());
        let _ = std::fs::remove_file(full.path().join("checkpoint"));

        let (a, rec_a) = Store::open(config(dir.path())).unwrap();
        let (b, rec_b) = Store::open(config(full.path())).unwrap();
        prop_assert!(!rec_b.from_checkpoint);
        prop_assert_eq!(flatten(&rec_a), flatten(&rec_b));
        for q in 1..=3 {
            prop_assert_eq!(ids(&rec_a, q), ids(&rec_b, q));
            let la: Vec<Location> = rec_a.queues.get(&q).map(|v| v.iter().map(|m| m.location).collect()).unwrap_or_default();
            let lb: Vec<Location> = rec_b.queues.get(&q).map(|v| v.iter().map(|m| m.location).collect()).unwrap_or_default();
            prop_assert_eq!(la, lb);
        }
        prop_assert_eq!(rec_a.next_msg_id, rec_b.next_msg_id);
        check(&rec_a, &model, &a, &mut HashMap::new());
        a.close().unwrap();
        b.close().unwrap();
    }
}
