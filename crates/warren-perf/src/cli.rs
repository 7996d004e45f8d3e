//! Command-line options, with RabbitMQ PerfTest's letters where PerfTest has them.

use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

pub const DEFAULT_URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2F";
/// How long a run lasts when neither a duration nor a message count is given.
pub const DEFAULT_TIME_S: f64 = 10.0;
/// What a time-bounded run may take beyond its duration (set-up, draining, teardown) before it
/// is cut short and reported as failed.
pub const GRACE_S: f64 = 30.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Flag {
    /// delivery_mode 2.
    Persistent,
    /// basic.publish with mandatory set (unroutable messages come back as basic.return).
    Mandatory,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "warren-perf",
    version,
    about = "AMQP 0-9-1 load generator in the spirit of RabbitMQ PerfTest",
    disable_help_flag = true
)]
pub struct Options {
    /// Print help.
    #[arg(short = '?', long, action = ArgAction::Help)]
    help: Option<bool>,

    /// Broker URI.
    #[arg(short = 'h', long, default_value = DEFAULT_URI)]
    pub uri: String,

    /// Producers, each on its own connection.
    #[arg(short = 'x', long, default_value_t = 1)]
    pub producers: usize,

    /// Consumers (per queue with --queue-pattern / --fanout-queues), each on its own connection.
    #[arg(short = 'y', long, default_value_t = 1)]
    pub consumers: usize,

    /// Message body size in bytes (at least 8 to carry the latency timestamp).
    #[arg(short = 's', long, default_value_t = 16)]
    pub size: usize,

    /// Run for this many seconds (default 10 unless -C or -D is given).
    #[arg(short = 'z', long = "time", value_name = "SECONDS")]
    pub time: Option<f64>,

    /// Messages each producer publishes, then stops.
    #[arg(short = 'C', long, value_name = "N")]
    pub pmessages: Option<u64>,

    /// Messages each consumer consumes, then stops.
    #[arg(short = 'D', long, value_name = "N")]
    pub cmessages: Option<u64>,

    /// Publisher confirms, at most N unconfirmed per producer (0: no confirms).
    #[arg(short = 'c', long = "confirm", value_name = "N")]
    pub confirm: Option<u32>,

    /// Consumer prefetch (basic.qos); 0 means unlimited.
    #[arg(short = 'q', long, default_value_t = 0)]
    pub qos: u16,

    /// Consume with no_ack (automatic acknowledgement).
    #[arg(short = 'a', long)]
    pub autoack: bool,

    /// Ack with multiple=true once this many deliveries are unacked
    /// (default: qos/2, or 1, meaning one ack per message, without qos).
    #[arg(short = 'A', long = "multi-ack-every", value_name = "N")]
    pub multi_ack_every: Option<u32>,

    /// Message flags (repeatable): persistent, mandatory.
    #[arg(short = 'f', long = "flag", value_enum)]
    pub flags: Vec<Flag>,

    /// Declare durable queues and exchanges.
    #[arg(long)]
    pub durable: bool,

    /// Keep the queues and exchanges this run created (not auto-delete, not deleted at the end).
    #[arg(long)]
    pub keep: bool,

    /// Publishing rate limit per producer, in messages per second (0: unlimited).
    #[arg(short = 'r', long, default_value_t = 0.0)]
    pub rate: f64,

    /// Exchange type.
    #[arg(short = 't', long = "type", default_value = "direct")]
    pub exchange_type: String,

    /// Exchange to publish to (default: the default exchange "" for type direct, else one
    /// named after the run and the type).
    #[arg(short = 'e', long)]
    pub exchange: Option<String>,

    /// Routing key (default: the queue name).
    #[arg(short = 'k', long = "routing-key")]
    pub routing_key: Option<String>,

    /// Queue name (default: a generated name).
    #[arg(short = 'u', long, conflicts_with_all = ["queue_pattern"])]
    pub queue: Option<String>,

    /// Many queues named from a pattern with %d, e.g. 'perf-%d'.
    #[arg(
        long = "queue-pattern",
        value_name = "PATTERN",
        requires = "queue_pattern_to"
    )]
    pub queue_pattern: Option<String>,

    /// First number substituted into --queue-pattern.
    #[arg(long = "queue-pattern-from", default_value_t = 1, value_name = "N")]
    pub queue_pattern_from: u32,

    /// Last number substituted into --queue-pattern (inclusive).
    #[arg(long = "queue-pattern-to", value_name = "N")]
    pub queue_pattern_to: Option<u32>,

    /// A fanout exchange bound to N queues, each with -y consumers.
    #[arg(long = "fanout-queues", value_name = "N", conflicts_with = "queue")]
    pub fanout_queues: Option<usize>,

    /// Producer connections for fan-in (same as -x N).
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,

    /// Only open N connections (one channel each), hold them for -z seconds, and report.
    #[arg(long = "idle-connections", value_name = "N")]
    pub idle_connections: Option<usize>,

    /// With --idle-connections: the broker's pid, to report its memory per connection.
    #[arg(long = "broker-pid", value_name = "PID")]
    pub broker_pid: Option<u32>,

    /// Declare nothing: queues and exchanges already exist.
    #[arg(short = 'p', long)]
    pub predeclared: bool,

    /// Print one JSON line of results on stdout (progress lines go to stderr).
    #[arg(long)]
    pub json: bool,

    /// No per-interval progress lines.
    #[arg(long)]
    pub quiet: bool,

    /// Measure end-to-end latency (the default): a timestamp in the first 8 body bytes.
    #[arg(long, overrides_with = "no_latency")]
    pub latency: bool,

    /// Do not write or read latency timestamps.
    #[arg(long = "no-latency", overrides_with = "latency")]
    pub no_latency: bool,

    /// Seconds between progress lines.
    #[arg(short = 'i', long, default_value_t = 1.0)]
    pub interval: f64,

    /// Scenario name, copied into the JSON line.
    #[arg(long)]
    pub label: Option<String>,

    /// Seconds a connection may take to connect, authenticate and open its vhost.
    #[arg(
        long = "connect-timeout",
        default_value_t = 15.0,
        value_name = "SECONDS"
    )]
    pub connect_timeout: f64,

    /// Hard limit in seconds for runs bounded by message counts (-C/-D) rather than -z.
    #[arg(long = "max-time", default_value_t = 600.0, value_name = "SECONDS")]
    pub max_time: f64,
}

impl Options {
    /// Checks combinations clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |v: f64, what: &str| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("{what} must be a positive number of seconds"))
            }
        };
        if let Some(t) = self.time {
            positive(t, "-z/--time")?;
        }
        positive(self.interval, "-i/--interval")?;
        positive(self.max_time, "--max-time")?;
        positive(self.connect_timeout, "--connect-timeout")?;
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            return Err("-r/--rate must be >= 0".into());
        }
        if let Some(p) = &self.queue_pattern {
            if !p.contains("%d") {
                return Err("--queue-pattern must contain %d".into());
            }
            let to = self.queue_pattern_to.unwrap_or(0);
            if to < self.queue_pattern_from {
                return Err("--queue-pattern-to must be >= --queue-pattern-from".into());
            }
            if let Some(n) = self.fanout_queues {
                if n != self.queue_names("").len() {
                    return Err(
                        "--fanout-queues N and --queue-pattern name different numbers of queues"
                            .into(),
                    );
                }
            }
        }
        if self.fanout_queues == Some(0) {
            return Err("--fanout-queues needs at least one queue".into());
        }
        if self.qos > 0 {
            if let Some(n) = self.multi_ack_every {
                if n > u32::from(self.qos) {
                    return Err(format!(
                        "-A {n} exceeds -q {}: the broker would stop delivering before the first ack",
                        self.qos
                    ));
                }
            }
        }
        if self.multi_ack_every == Some(0) {
            return Err("-A/--multi-ack-every must be at least 1".into());
        }
        let needs_queue = self.consumer_count() > 0
            || (self.producer_count() > 0 && self.publishes_to_default_exchange());
        if self.predeclared && needs_queue && self.queue.is_none() && self.queue_pattern.is_none() {
            return Err(
                "--predeclared needs the queue's name: -u/--queue or --queue-pattern".into(),
            );
        }
        if self.idle_connections == Some(0) {
            return Err("--idle-connections needs at least one connection".into());
        }
        Ok(())
    }

    pub fn producer_count(&self) -> usize {
        self.connections.unwrap_or(self.producers)
    }

    /// Every consumer, across all queues.
    pub fn consumer_count(&self) -> usize {
        self.consumers * self.queue_names("").len()
    }

    pub fn confirm_window(&self) -> u32 {
        self.confirm.unwrap_or(0)
    }

    pub fn persistent(&self) -> bool {
        self.flags.contains(&Flag::Persistent)
    }

    pub fn mandatory(&self) -> bool {
        self.flags.contains(&Flag::Mandatory)
    }

    /// Timestamps need eight body bytes.
    pub fn latency_enabled(&self) -> bool {
        !self.no_latency && self.size >= 8
    }

    /// Ack every this many deliveries (1: one single ack per message; more: multiple=true).
    pub fn ack_every(&self) -> u64 {
        match (self.multi_ack_every, self.qos) {
            (Some(n), _) => u64::from(n.max(1)),
            (None, 0) => 1,
            (None, q) => u64::from(q / 2).max(1),
        }
    }

    /// The exchange producers publish to: "" (default exchange) unless named, or implied by
    /// the exchange type or --fanout-queues (then named after the run, `run_id`).
    pub fn exchange_name(&self, run_id: &str) -> String {
        if let Some(e) = &self.exchange {
            return e.clone();
        }
        if self.fanout_queues.is_none() && self.exchange_type == "direct" {
            return String::new();
        }
        format!("{run_id}-{}", self.exchange_kind())
    }

    /// Whether the exchange is this run's own (named after it), so it may delete it.
    pub fn exchange_is_generated(&self) -> bool {
        self.exchange.is_none() && !self.publishes_to_default_exchange()
    }

    pub fn exchange_kind(&self) -> &str {
        if self.fanout_queues.is_some() {
            "fanout"
        } else {
            &self.exchange_type
        }
    }

    pub fn publishes_to_default_exchange(&self) -> bool {
        self.exchange_name("run").is_empty()
    }

    /// The queues of this run; `generated` is the name used when none is given.
    pub fn queue_names(&self, generated: &str) -> Vec<String> {
        if let Some(p) = &self.queue_pattern {
            let to = self.queue_pattern_to.unwrap_or(self.queue_pattern_from);
            return (self.queue_pattern_from..=to)
                .map(|i| p.replace("%d", &i.to_string()))
                .collect();
        }
        if let Some(n) = self.fanout_queues {
            return (1..=n).map(|i| format!("{generated}-{i}")).collect();
        }
        match &self.queue {
            Some(q) => vec![q.clone()],
            None => vec![generated.to_owned()],
        }
    }

    /// Whether the queue names are this run's own (generated), so it may delete them.
    pub fn queues_are_generated(&self) -> bool {
        self.queue.is_none() && self.queue_pattern.is_none()
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout)
    }

    /// How long the measured phase lasts, if bounded by time.
    pub fn run_time(&self) -> Option<Duration> {
        match (
            self.time,
            self.pmessages,
            self.cmessages,
            self.idle_connections,
        ) {
            (Some(t), ..) => Some(Duration::from_secs_f64(t)),
            (None, None, None, _) | (None, _, _, Some(_)) => {
                Some(Duration::from_secs_f64(DEFAULT_TIME_S))
            }
            _ => None,
        }
    }

    /// The hard upper bound on the whole process, after which it reports and exits non-zero.
    pub fn hard_limit(&self) -> Duration {
        let base = match (self.time, self.run_time()) {
            (None, _) if self.pmessages.is_some() || self.cmessages.is_some() => self.max_time,
            (_, Some(t)) => t.as_secs_f64() + GRACE_S,
            (_, None) => self.max_time,
        };
        // Opening many idle connections takes time of its own.
        let idle = self.idle_connections.unwrap_or(0) as f64 * 0.01;
        Duration::from_secs_f64(base + idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Options {
        let mut all = vec!["warren-perf"];
        all.extend_from_slice(args);
        let o = Options::try_parse_from(all).unwrap();
        o.validate().unwrap();
        o
    }

    fn invalid(args: &[&str]) -> bool {
        let mut all = vec!["warren-perf"];
        all.extend_from_slice(args);
        match Options::try_parse_from(all) {
            Err(_) => true,
            Ok(o) => o.validate().is_err(),
        }
    }

    #[test]
    fn defaults_match_perftest() {
        let o = parse(&[]);
        assert_eq!(o.uri, DEFAULT_URI);
        assert_eq!((o.producer_count(), o.consumer_count(), o.size), (1, 1, 16));
        assert_eq!(o.confirm_window(), 0);
        assert_eq!(o.ack_every(), 1);
        assert!(o.latency_enabled());
        assert!(o.publishes_to_default_exchange());
        assert_eq!(o.run_time(), Some(Duration::from_secs(10)));
        assert_eq!(o.hard_limit(), Duration::from_secs(40));
    }

    #[test]
    fn perftest_letters() {
        let o = parse(&[
            "-h",
            "amqp://u:p@h:1/v",
            "-x",
            "2",
            "-y",
            "3",
            "-s",
            "100",
            "-z",
            "5",
            "-c",
            "1000",
            "-q",
            "500",
            "-f",
            "persistent",
            "-f",
            "mandatory",
            "-r",
            "1000",
            "-u",
            "q1",
            "-k",
            "rk",
            "-e",
            "ex",
            "-t",
            "topic",
        ]);
        assert_eq!(o.uri, "amqp://u:p@h:1/v");
        assert_eq!((o.producers, o.consumers, o.size), (2, 3, 100));
        assert_eq!(o.time, Some(5.0));
        assert_eq!(o.confirm_window(), 1000);
        assert_eq!(o.ack_every(), 250);
        assert!(o.persistent() && o.mandatory());
        assert_eq!(o.rate, 1000.0);
        assert_eq!(o.queue_names("gen"), vec!["q1"]);
        assert!(!o.queues_are_generated());
        assert_eq!(
            (o.exchange_name("r"), o.exchange_kind()),
            ("ex".into(), "topic")
        );
        assert!(!o.exchange_is_generated());
        assert_eq!(o.routing_key.as_deref(), Some("rk"));
        assert_eq!(o.hard_limit(), Duration::from_secs(35));
    }

    #[test]
    fn counts_bound_the_run_instead_of_time() {
        let o = parse(&["-x", "0", "-y", "1", "-D", "1000000", "-u", "backlog"]);
        assert_eq!(o.run_time(), None);
        assert_eq!(o.hard_limit(), Duration::from_secs(600));
        let o = parse(&["-y", "0", "-C", "10", "--max-time", "20"]);
        assert_eq!(o.hard_limit(), Duration::from_secs(20));
    }

    #[test]
    fn queue_pattern_and_fanout() {
        let o = parse(&[
            "--queue-pattern",
            "perf-%d",
            "--queue-pattern-from",
            "3",
            "--queue-pattern-to",
            "5",
            "-y",
            "2",
        ]);
        assert_eq!(o.queue_names("g"), vec!["perf-3", "perf-4", "perf-5"]);
        assert_eq!(o.consumer_count(), 6);
        let o = parse(&["--fanout-queues", "4"]);
        assert_eq!(o.queue_names("g"), vec!["g-1", "g-2", "g-3", "g-4"]);
        assert_eq!(
            (o.exchange_name("r").as_str(), o.exchange_kind()),
            ("r-fanout", "fanout")
        );
        assert!(o.exchange_is_generated());
        assert!(o.queues_are_generated());
    }

    #[test]
    fn ack_policy() {
        assert_eq!(parse(&["-q", "1"]).ack_every(), 1);
        assert_eq!(parse(&["-q", "1000", "-A", "100"]).ack_every(), 100);
        assert_eq!(parse(&["-A", "50"]).ack_every(), 50);
    }

    #[test]
    fn latency_needs_eight_bytes_and_can_be_turned_off() {
        assert!(!parse(&["-s", "4"]).latency_enabled());
        assert!(!parse(&["--no-latency"]).latency_enabled());
        assert!(parse(&["--no-latency", "--latency"]).latency_enabled());
    }

    #[test]
    fn connections_is_an_alias_for_producers() {
        assert_eq!(parse(&["--connections", "50"]).producer_count(), 50);
    }

    #[test]
    fn rejects_bad_combinations() {
        assert!(invalid(&["-q", "10", "-A", "11"]));
        assert!(invalid(&[
            "--queue-pattern",
            "perf",
            "--queue-pattern-to",
            "3"
        ]));
        assert!(invalid(&["--queue-pattern", "perf-%d"]));
        assert!(invalid(&[
            "-u",
            "a",
            "--queue-pattern",
            "p-%d",
            "--queue-pattern-to",
            "2"
        ]));
        assert!(invalid(&["--predeclared"]));
        assert!(invalid(&["-z", "0"]));
        assert!(invalid(&["-r", "-1"]));
        assert!(invalid(&["-f", "sticky"]));
        assert!(invalid(&["--fanout-queues", "0"]));
        assert!(invalid(&["--idle-connections", "0"]));
        assert!(!invalid(&["--predeclared", "-u", "q"]));
    }
}
