//! Rates (`*_details.rate`): every few seconds the sampler reads the broker's counters and
//! keeps, per object, the last readings and the per-second change since the one before. Nothing
//! is done per message; reading the API never waits for the sampler.
//!
//! History for charts (RabbitMQ's `msg_rates_age`/`_incr`, `lengths_age`/`_incr` query
//! parameters and the `samples` they add) is kept for [`HISTORY`] readings of the overview and
//! the vhosts, and for the last two readings of everything else: 10,000 queues must not cost
//! a chart's worth of memory each (RabbitMQ's stats database is where its memory goes).

use std::collections::{HashMap, VecDeque};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use warren_broker::stats::MessageStats;

/// Readings kept for the overview and vhosts: ten minutes at the 5-s sampling interval.
pub const HISTORY: usize = 120;

/// The last readings of one object's counters (newest last) and their rates.
struct Sample {
    at: Instant,
    values: Vec<u64>,
    rates: Vec<f64>,
    /// (wall-clock ms, values), oldest first; at most [`HISTORY`] or 2 entries.
    history: VecDeque<(u64, Vec<u64>)>,
    /// Marked by each sampling pass; objects not seen in one are forgotten.
    seen: u64,
}

#[derive(Default)]
pub struct Rates {
    samples: Mutex<HashMap<String, Sample>>,
    pass: Mutex<u64>,
}

impl Rates {
    /// Starts a sampling pass; objects not observed during it are dropped by [`Rates::end`].
    pub fn begin(&self) -> u64 {
        let mut p = self.pass.lock();
        *p += 1;
        *p
    }

    /// Records `values` for `key` at `now`, computing rates against the previous reading.
    pub fn observe(&self, pass: u64, key: String, values: Vec<u64>, now: Instant) {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let keep = if key.starts_with("vhost/") || key.starts_with("overview") {
            HISTORY
        } else {
            2
        };
        let mut samples = self.samples.lock();
        let s = samples.entry(key).or_insert_with(|| Sample {
            at: now,
            values: Vec::new(),
            rates: vec![0.0; values.len()],
            history: VecDeque::new(),
            seen: pass,
        });
        let dt = now.duration_since(s.at).as_secs_f64();
        if dt > 0.0 && s.values.len() == values.len() {
            s.rates = values
                .iter()
                .zip(&s.values)
                .map(|(v, p)| (*v as f64 - *p as f64) / dt)
                .collect();
        }
        if s.history.len() >= keep {
            s.history.pop_front();
        }
        s.history.push_back((wall, values.clone()));
        s.values = values;
        s.at = now;
        s.seen = pass;
    }

    /// Each of `key`'s `n` values at the points `window` asks for, newest first, as
    /// `(wall-clock ms, value)`; a point before the first kept reading is left out.
    pub fn samples(&self, key: &str, n: usize, window: Window) -> Vec<Vec<(u64, u64)>> {
        let samples = self.samples.lock();
        let mut out = vec![Vec::new(); n];
        let Some(s) = samples.get(key) else {
            return out;
        };
        let Some((newest, _)) = s.history.back() else {
            return out;
        };
        // RabbitMQ aligns the points to multiples of the increment; a point stands for the
        // interval it starts, so it shows the last reading taken before the next point.
        let mut t = newest - newest % window.incr_ms;
        let oldest = t.saturating_sub(window.age_ms);
        while t >= oldest {
            let next = t + window.incr_ms;
            let Some((_, vals)) = s.history.iter().rev().find(|(at, _)| *at < next) else {
                break;
            };
            if vals.len() == n {
                for (i, v) in vals.iter().enumerate() {
                    out[i].push((t, *v));
                }
            }
            if t < window.incr_ms {
                break;
            }
            t -= window.incr_ms;
        }
        out
    }

    pub fn end(&self, pass: u64) {
        self.samples.lock().retain(|_, s| s.seen == pass);
    }

    /// The rates of `key` (zeros when it has been sampled less than twice).
    pub fn get(&self, key: &str, n: usize) -> Vec<f64> {
        self.samples
            .lock()
            .get(key)
            .map(|s| s.rates.clone())
            .filter(|r| r.len() == n)
            .unwrap_or_else(|| vec![0.0; n])
    }
}

/// `message_stats` fields, in RabbitMQ's families.
pub const QUEUE_FIELDS: &[&str] = &[
    "publish",
    "deliver",
    "deliver_no_ack",
    "get",
    "get_no_ack",
    "get_empty",
    "deliver_get",
    "redeliver",
    "ack",
];
pub const CHANNEL_FIELDS: &[&str] = &[
    "publish",
    "confirm",
    "return_unroutable",
    "drop_unroutable",
    "ack",
    "deliver",
    "deliver_no_ack",
    "get",
    "get_no_ack",
    "get_empty",
    "deliver_get",
    "redeliver",
];

/// The value of one `message_stats` field.
pub fn field(s: &MessageStats, name: &str) -> u64 {
    match name {
        "publish" => s.publish,
        "confirm" => s.confirm,
        "return_unroutable" => s.return_unroutable,
        "drop_unroutable" => s.drop_unroutable,
        "ack" => s.ack,
        "deliver" => s.deliver,
        "deliver_no_ack" => s.deliver_no_ack,
        "get" => s.get,
        "get_no_ack" => s.get_no_ack,
        "get_empty" => s.get_empty,
        "deliver_get" => s.deliver_get(),
        "redeliver" => s.redeliver,
        _ => 0,
    }
}

pub fn values(s: &MessageStats, fields: &[&str]) -> Vec<u64> {
    fields.iter().map(|f| field(s, f)).collect()
}

fn round(r: f64) -> f64 {
    (r * 10.0).round() / 10.0
}

/// RabbitMQ's `<family>_age` and `<family>_incr` query parameters (seconds): how far back
/// and how far apart the `samples` of a `*_details` object go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub age_ms: u64,
    pub incr_ms: u64,
}

impl Window {
    /// None unless `<family>_age` is given; the increment defaults to 5 s, and the window is
    /// capped at a day so that a request cannot ask for millions of points.
    pub fn from_params(p: &HashMap<String, String>, family: &str) -> Option<Window> {
        let age: u64 = p.get(&format!("{family}_age"))?.parse().ok()?;
        let age = age.min(86_400);
        let incr: u64 = p
            .get(&format!("{family}_incr"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(5);
        // At most 1,000 points per series.
        let incr = incr.max(age / 1000).max(1);
        Some(Window {
            age_ms: age * 1000,
            incr_ms: incr * 1000,
        })
    }
}

/// `{"rate": r}`, rounded as RabbitMQ shows it (one decimal).
pub fn details(rate: f64) -> Value {
    json!({ "rate": round(rate) })
}

/// `details` plus, for a requested window, RabbitMQ's `samples` (newest first), `avg` (their
/// mean) and `avg_rate` (change per second from the oldest to the newest).
pub fn details_with(rate: f64, samples: Option<&[(u64, u64)]>) -> Value {
    let mut d = details(rate);
    let (Some(points), Value::Object(m)) = (samples, &mut d) else {
        return d;
    };
    let list: Vec<Value> = points
        .iter()
        .map(|(t, v)| json!({"sample": v, "timestamp": t}))
        .collect();
    m.insert("samples".into(), Value::Array(list));
    let avg = if points.is_empty() {
        0.0
    } else {
        points.iter().map(|(_, v)| *v as f64).sum::<f64>() / points.len() as f64
    };
    let avg_rate = match (points.first(), points.last()) {
        (Some((t1, v1)), Some((t0, v0))) if t1 > t0 => {
            (*v1 as f64 - *v0 as f64) * 1000.0 / (t1 - t0) as f64
        }
        _ => 0.0,
    };
    m.insert("avg".into(), json!(round(avg)));
    m.insert("avg_rate".into(), json!(round(avg_rate)));
    d
}

/// A `message_stats` object: each field with its `_details` (with `samples` when `history`
/// holds them, one list per field). None when nothing happened yet (RabbitMQ leaves
/// `message_stats` out until the object has seen activity).
pub fn message_stats(
    names: &[&str],
    values: &[u64],
    rates: &[f64],
    history: Option<&[Vec<(u64, u64)>]>,
) -> Option<Value> {
    if values.iter().all(|v| *v == 0) {
        return None;
    }
    let mut m = Map::new();
    for (i, name) in names.iter().enumerate() {
        m.insert((*name).to_owned(), Value::from(values[i]));
        let samples = history.and_then(|h| h.get(i)).map(Vec::as_slice);
        m.insert(
            format!("{name}_details"),
            details_with(rates.get(i).copied().unwrap_or(0.0), samples),
        );
    }
    Some(Value::Object(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates_are_the_change_per_second_between_readings() {
        let r = Rates::default();
        let t0 = Instant::now();
        let p = r.begin();
        r.observe(p, "q".into(), vec![10, 0], t0);
        assert_eq!(r.get("q", 2), vec![0.0, 0.0]);
        let p = r.begin();
        r.observe(p, "q".into(), vec![60, 5], t0 + Duration::from_secs(5));
        r.end(p);
        assert_eq!(r.get("q", 2), vec![10.0, 1.0]);
        let p = r.begin();
        r.end(p);
        assert_eq!(r.get("q", 2), vec![0.0, 0.0], "forgotten once gone");
    }

    #[test]
    fn message_stats_appear_only_with_activity() {
        assert!(message_stats(QUEUE_FIELDS, &[0; 9], &[], None).is_none());
        let s = MessageStats {
            publish: 3,
            deliver: 1,
            ..MessageStats::default()
        };
        let v = message_stats(QUEUE_FIELDS, &values(&s, QUEUE_FIELDS), &[], None).expect("stats");
        assert_eq!(v["publish"], 3);
        assert_eq!(v["deliver_get"], 1);
        assert_eq!(v["publish_details"]["rate"], 0.0);
    }

    #[test]
    fn samples_go_back_by_the_increment_newest_first() {
        let r = Rates::default();
        let t0 = Instant::now();
        for i in 0..4u64 {
            let p = r.begin();
            r.observe(
                p,
                "overview".into(),
                vec![i * 10],
                t0 + Duration::from_secs(i),
            );
            r.end(p);
        }
        let w = Window {
            age_ms: 60_000,
            incr_ms: 1,
        };
        let s = r.samples("overview", 1, w);
        // All four readings were taken within a few ms of wall-clock time; the newest value
        // comes first.
        assert_eq!(s[0].first().map(|p| p.1), Some(30));
        let d = details_with(1.0, Some(&[(2000, 30), (1000, 10)]));
        assert_eq!(d["samples"][0]["sample"], 30);
        assert_eq!(d["avg"], 20.0);
        assert_eq!(d["avg_rate"], 20.0);
    }

    #[test]
    fn windows_come_from_the_family_parameters() {
        let mut p = HashMap::new();
        assert_eq!(Window::from_params(&p, "msg_rates"), None);
        p.insert("msg_rates_age".to_owned(), "60".to_owned());
        p.insert("msg_rates_incr".to_owned(), "10".to_owned());
        assert_eq!(
            Window::from_params(&p, "msg_rates"),
            Some(Window {
                age_ms: 60_000,
                incr_ms: 10_000
            })
        );
    }
}
