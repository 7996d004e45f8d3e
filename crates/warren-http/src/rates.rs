//! Rates (`*_details.rate`): every few seconds the sampler reads the broker's counters and
//! keeps, per object, the last reading and the per-second change since the one before. Nothing
//! is done per message; reading the API never waits for the sampler.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use warren_broker::stats::MessageStats;

/// The last reading of one object's counters and their rates.
struct Sample {
    at: Instant,
    values: Vec<u64>,
    rates: Vec<f64>,
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
        let mut samples = self.samples.lock();
        match samples.get_mut(&key) {
            Some(s) => {
                let dt = now.duration_since(s.at).as_secs_f64();
                if dt > 0.0 && s.values.len() == values.len() {
                    s.rates = values
                        .iter()
                        .zip(&s.values)
                        .map(|(v, p)| (*v as f64 - *p as f64) / dt)
                        .collect();
                }
                s.values = values;
                s.at = now;
                s.seen = pass;
            }
            None => {
                let n = values.len();
                samples.insert(
                    key,
                    Sample {
                        at: now,
                        values,
                        rates: vec![0.0; n],
                        seen: pass,
                    },
                );
            }
        }
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

/// `{"rate": r}`, rounded as RabbitMQ shows it (one decimal).
pub fn details(rate: f64) -> Value {
    json!({ "rate": round(rate) })
}

/// A `message_stats` object: each field with its `_details`. None when nothing happened yet
/// (RabbitMQ leaves `message_stats` out until the object has seen activity).
pub fn message_stats(names: &[&str], values: &[u64], rates: &[f64]) -> Option<Value> {
    if values.iter().all(|v| *v == 0) {
        return None;
    }
    let mut m = Map::new();
    for (i, name) in names.iter().enumerate() {
        m.insert((*name).to_owned(), Value::from(values[i]));
        m.insert(
            format!("{name}_details"),
            details(rates.get(i).copied().unwrap_or(0.0)),
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
        assert!(message_stats(QUEUE_FIELDS, &[0; 9], &[]).is_none());
        let s = MessageStats {
            publish: 3,
            deliver: 1,
            ..MessageStats::default()
        };
        let v = message_stats(QUEUE_FIELDS, &values(&s, QUEUE_FIELDS), &[]).expect("stats");
        assert_eq!(v["publish"], 3);
        assert_eq!(v["deliver_get"], 1);
        assert_eq!(v["publish_details"]["rate"], 0.0);
    }
}
