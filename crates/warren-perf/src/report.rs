//! What a run prints: progress lines in PerfTest's shape, a human summary, and the JSON line.

use serde::Serialize;

use crate::stats::{rate, Histogram, Snapshot};

/// Where progress and summaries go: stdout normally; stderr with `--json`, so that stdout
/// carries exactly the one JSON line.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub json: bool,
    pub quiet: bool,
}

impl Printer {
    pub fn progress(&self, line: &str) {
        if !self.quiet {
            self.text(line);
        }
    }

    pub fn text(&self, line: &str) {
        if self.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }

    pub fn json_line(&self, value: &impl Serialize) {
        if self.json {
            match serde_json::to_string(value) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("warren-perf: cannot encode the JSON report: {e}"),
            }
        }
    }
}

/// Latency quantiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    pub samples: u64,
    pub min: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

fn us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

impl Latency {
    pub fn of(h: &Histogram) -> Self {
        Latency {
            samples: h.count(),
            min: us(h.min()),
            p50: us(h.quantile(0.5)),
            p75: us(h.quantile(0.75)),
            p95: us(h.quantile(0.95)),
            p99: us(h.quantile(0.99)),
            max: us(h.max()),
        }
    }

    fn brief(&self) -> String {
        format!(
            "{:.0}/{:.0}/{:.0}/{:.0}/{:.0} µs",
            self.min, self.p50, self.p75, self.p95, self.p99
        )
    }
}

/// What the run's options say about which columns to show.
#[derive(Debug, Clone, Copy)]
pub struct Columns {
    pub confirms: bool,
    pub returns: bool,
    pub latency: bool,
}

/// One progress line, PerfTest style:
/// `time: 1.000s, sent: 512345 msg/s, received: 498765 msg/s, min/median/75th/95th/99th consumer latency: ...`
pub fn progress_line(
    elapsed_s: f64,
    delta: Snapshot,
    secs: f64,
    cols: Columns,
    latency: &Histogram,
    cpu_pct: f64,
) -> String {
    let mut s = format!(
        "time: {elapsed_s:.3}s, sent: {:.0} msg/s",
        rate(delta.sent, secs)
    );
    if cols.confirms {
        s += &format!(
            ", confirmed: {:.0} msg/s, nacked: {:.0} msg/s",
            rate(delta.confirmed, secs),
            rate(delta.nacked, secs)
        );
    }
    if cols.returns {
        s += &format!(", returned: {:.0} msg/s", rate(delta.returned, secs));
    }
    s += &format!(", received: {:.0} msg/s", rate(delta.received, secs));
    if cols.latency && latency.count() > 0 {
        s += &format!(
            ", min/median/75th/95th/99th consumer latency: {}",
            Latency::of(latency).brief()
        );
    }
    s += &format!(", perf cpu: {cpu_pct:.0}%");
    s
}

/// The JSON line of a producer/consumer run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub scenario: Option<String>,
    pub ok: bool,
    pub error: Option<String>,
    pub producers: usize,
    pub consumers: usize,
    pub size: usize,
    pub confirm: Option<u32>,
    pub qos: u16,
    pub autoack: bool,
    pub send_rate: f64,
    pub recv_rate: f64,
    pub confirm_rate: f64,
    pub sent: u64,
    pub received: u64,
    pub confirmed: u64,
    pub nacked: u64,
    pub returned: u64,
    pub latency_us: Latency,
    /// Publish-to-confirm times: how long a confirming publisher waits for each message.
    pub confirm_latency_us: Latency,
    pub duration_s: f64,
    pub perf_cpu_s: f64,
    pub perf_cpu_pct: f64,
}

impl RunReport {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "summary: {:.3}s, sent {} ({:.0} msg/s)",
            self.duration_s, self.sent, self.send_rate
        );
        if self.confirm.is_some() {
            s += &format!(
                ", confirmed {} ({:.0} msg/s), nacked {}",
                self.confirmed, self.confirm_rate, self.nacked
            );
        }
        if self.returned > 0 {
            s += &format!(", returned {}", self.returned);
        }
        s += &format!(", received {} ({:.0} msg/s)", self.received, self.recv_rate);
        let l = &self.latency_us;
        if l.samples > 0 {
            s += &format!(
                "\nconsumer latency min/median/75th/95th/99th/max: {}/{}/{}/{}/{}/{} µs ({} samples)",
                l.min, l.p50, l.p75, l.p95, l.p99, l.max, l.samples
            );
        }
        let c = &self.confirm_latency_us;
        if c.samples > 0 {
            s += &format!(
                "\nconfirm latency min/median/75th/95th/99th/max: {}/{}/{}/{}/{}/{} µs ({} samples)",
                c.min, c.p50, c.p75, c.p95, c.p99, c.max, c.samples
            );
        }
        s += &format!(
            "\nwarren-perf cpu: {:.2}s ({:.0}% of one core)",
            self.perf_cpu_s, self.perf_cpu_pct
        );
        s
    }
}

/// The JSON line of an `--idle-connections` run.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    pub scenario: Option<String>,
    pub ok: bool,
    pub error: Option<String>,
    pub requested: usize,
    pub idle_connections: usize,
    pub failed: usize,
    pub connect_s: f64,
    pub held_s: f64,
    pub broker_rss_kib_before: Option<u64>,
    pub broker_rss_kib_after: Option<u64>,
    pub broker_kib_per_connection: Option<f64>,
    pub perf_cpu_s: f64,
    pub perf_cpu_pct: f64,
}

impl IdleReport {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "summary: {} of {} connections open in {:.3}s, held {:.1}s, {} failed",
            self.idle_connections, self.requested, self.connect_s, self.held_s, self.failed
        );
        if let (Some(b), Some(a), Some(per)) = (
            self.broker_rss_kib_before,
            self.broker_rss_kib_after,
            self.broker_kib_per_connection,
        ) {
            s += &format!("\nbroker RSS {b} KiB -> {a} KiB: {per:.1} KiB per connection");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_reads_like_perftest() {
        let mut h = Histogram::new();
        for v in [100_000u64, 200_000, 300_000] {
            h.record(v);
        }
        let delta = Snapshot {
            sent: 1000,
            confirmed: 900,
            nacked: 0,
            returned: 0,
            received: 800,
        };
        let cols = Columns {
            confirms: true,
            returns: false,
            latency: true,
        };
        let line = progress_line(1.0, delta, 0.5, cols, &h, 42.4);
        assert_eq!(
            line,
            "time: 1.000s, sent: 2000 msg/s, confirmed: 1800 msg/s, nacked: 0 msg/s, \
             received: 1600 msg/s, min/median/75th/95th/99th consumer latency: \
             100/200/300/300/300 µs, perf cpu: 42%"
        );
    }

    #[test]
    fn json_report_has_the_documented_fields() {
        let r = RunReport {
            scenario: Some("s".into()),
            ok: true,
            error: None,
            producers: 1,
            consumers: 1,
            size: 16,
            confirm: None,
            qos: 0,
            autoack: true,
            send_rate: 1.0,
            recv_rate: 1.0,
            confirm_rate: 0.0,
            sent: 1,
            received: 1,
            confirmed: 0,
            nacked: 0,
            returned: 0,
            latency_us: Latency::default(),
            confirm_latency_us: Latency::default(),
            duration_s: 1.0,
            perf_cpu_s: 0.1,
            perf_cpu_pct: 10.0,
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for key in [
            "scenario",
            "send_rate",
            "recv_rate",
            "confirm_rate",
            "sent",
            "received",
            "duration_s",
            "perf_cpu_s",
            "perf_cpu_pct",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        for key in ["p50", "p95", "p99", "max"] {
            assert!(
                v["latency_us"].get(key).is_some(),
                "missing latency_us.{key}"
            );
        }
    }
}
