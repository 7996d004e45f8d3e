//! Property tests: random operation sequences against a model of what must survive.
//!
//! - Every reopen (clean close, or crash after the last operation was durable) recovers exactly
//!   the model's live messages, per queue in publish order, with their delivery counts, and
//!   every body reads back intact: through checkpoints, segment deletion and compaction.
//! - Recovery from checkpoint + tail equals recovery by replaying the whole log.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bytes::Bytes;
use common::{body, config, flatten, ids};
use proptest::prelude::*;
use warren_store::{Recovery, Store, StoreConfig, StoreError};

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

/// What must survive, learnt from the store's answers (message ids come from `publish`).
#[derive(Default)]
struct Model {
    /// msg_id -> (queue -> delivery count), for live messages only.
    live: BTreeMap<u64, BTreeMap<u64, u32>>,
    /// Every id `publish` returned, in order, with its body.
    published: Vec<u64>,
    bodies: HashMap<u64, Bytes>,
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

    /// An id to settle or mark: mostly one that was published (live or not), sometimes one
    /// that was not (yet): the store must ignore it, even once `publish` hands it out.
    fn pick(&self, p: u16) -> u64 {
        let i = usize::from(p) % (self.published.len() + 1);
        match self.published.get(i) {
            Some(&id) => id,
            None => self.published.last().map_or(1, |&id| id + 1),
        }
    }
}

/// The running store reads every live message back by id, and no dead one.
fn check_reads(model: &Model, store: &Store) {
    for id in &model.published {
        match (model.live.contains_key(id), store.read(*id)) {
            (true, Ok(b)) => assert_eq!(b, model.bodies[id], "body of {id}"),
            (false, Err(StoreError::NotFound { msg_id })) => assert_eq!(msg_id, *id),
            (live, r) => panic!("read({id}) of a message live={live}: {r:?}"),
        }
    }
}

fn check(rec: &Recovery, model: &Model, store: &Store) {
    assert_eq!(flatten(rec), model.expected());
    for q in 1..=3u64 {
        let got = ids(rec, q);
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(got, sorted, "queue {q} not in publish order");
        if let Some(rq) = rec.queues.get(&q) {
            assert_eq!(rq.len(), got.len());
            assert!(!rq.is_empty());
            for m in rq.iter() {
                assert_eq!(m.delivered, m.delivery_count > 0);
                assert!(rq.ids.contains(m.msg_id));
            }
        }
    }
    for ms in rec.queues.values() {
        for m in ms.iter() {
            assert_eq!(store.read(m.msg_id).unwrap(), model.bodies[&m.msg_id]);
        }
    }
    check_reads(model, store);
}

fn run(steps: &[Step], cfg: StoreConfig) -> (Model, Store) {
    let mut model = Model::default();
    let (mut store, _) = Store::open(cfg.clone()).unwrap();
    let mut last = 0;
    for s in steps {
        match s {
            Step::Publish(mask) => {
                let queues: Vec<u64> = (1..=3).filter(|q| mask & (1 << (q - 1)) != 0).collect();
                // The body is chosen before the id is known: it is keyed by the returned id.
                let b = body(model.published.len() as u64 * 7 + 3);
                let p = store.publish(&queues, b.clone()).unwrap();
                // Ids follow publish order, one apart, across restarts too.
                let want = model.published.last().map_or(1, |&id| id + 1);
                assert_eq!(p.msg_id, want);
                last = p.lsn;
                model.published.push(p.msg_id);
                model.bodies.insert(p.msg_id, b);
                model
                    .live
                    .insert(p.msg_id, queues.iter().map(|&q| (q, 0)).collect());
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
                    assert_ne!(r.old.segment, r.new.segment);
                    if model.live.contains_key(&r.msg_id) {
                        assert_eq!(store.read(r.msg_id).unwrap(), model.bodies[&r.msg_id]);
                    }
                }
                // Compaction is transparent: every live body still reads back by its id.
                check_reads(&model, &store);
            }
            Step::CloseReopen | Step::CrashReopen => {
                store.wait_durable_blocking(last).unwrap();
                if matches!(s, Step::CloseReopen) {
                    store.close().unwrap();
                } else {
                    store.crash_for_test();
                }
                let (s2, rec) = Store::open(cfg.clone()).unwrap();
                assert!(rec.truncated.is_none(), "{:?}", rec.truncated);
                check(&rec, &model, &s2);
                store = s2;
            }
        }
    }
    store.wait_durable_blocking(last).unwrap();
    check_reads(&model, &store);
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
        check(&rec, &model, &store);
        // Ids go on after the largest one ever published.
        let next = model.published.last().map_or(1, |&id| id + 1);
        prop_assert_eq!(store.publish(&[1], body(0)).unwrap().msg_id, next);
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
        }
        // The same ids, delivery counts and bodies (read by id in each store).
        prop_assert_eq!(&rec_a.queues, &rec_b.queues);
        for ms in rec_a.queues.values() {
            for m in ms.iter() {
                prop_assert_eq!(a.read(m.msg_id).unwrap(), b.read(m.msg_id).unwrap());
            }
        }
        check(&rec_a, &model, &a);
        check(&rec_b, &model, &b);
        // Both continue with the same next id.
        let next = model.published.last().map_or(1, |&id| id + 1);
        prop_assert_eq!(a.publish(&[1], body(0)).unwrap().msg_id, next);
        prop_assert_eq!(b.publish(&[1], body(0)).unwrap().msg_id, next);
        a.close().unwrap();
        b.close().unwrap();
    }
}
