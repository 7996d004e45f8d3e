//! Resource alarms: when the broker's memory use rises above the high watermark or the free
//! disk space of its data directory falls below the limit, publishing connections are blocked
//! (RabbitMQ's `connection.blocked`) instead of the broker running out of memory or disk.
//!
//! A monitor task samples both once a second and publishes an [`AlarmState`]; each connection
//! watches it.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

/// Which alarms are raised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlarmState {
    pub memory: bool,
    pub disk: bool,
}

impl AlarmState {
    /// The reason given in `connection.blocked`, as RabbitMQ words it; None when clear.
    pub fn reason(&self) -> Option<&'static str> {
        match (self.memory, self.disk) {
            (true, _) => Some("low on memory"),
            (false, true) => Some("low on disk"),
            _ => None,
        }
    }
}

/// The memory high watermark: a fraction of the machine's (or cgroup's) memory, or bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Watermark {
    Relative(f64),
    Absolute(u64),
}

#[derive(Debug, Clone)]
pub struct AlarmConfig {
    /// RabbitMQ 4's default: 0.6 of available memory.
    pub memory_high_watermark: Watermark,
    /// RabbitMQ's default: 50 MB.
    pub disk_free_limit: u64,
    /// Where the data lives (the disk that is checked); None: no disk alarm.
    pub data_dir: Option<PathBuf>,
    pub interval: Duration,
}

impl Default for AlarmConfig {
    fn default() -> Self {
        AlarmConfig {
            memory_high_watermark: Watermark::Relative(0.6),
            disk_free_limit: 50_000_000,
            data_dir: None,
            interval: Duration::from_secs(1),
        }
    }
}

/// Resident memory of this process, in bytes.
pub fn resident_memory() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * rustix::param::page_size() as u64
}

/// Memory available to this process: the machine's, or its cgroup's limit if lower.
pub fn total_memory() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let machine = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(u64::MAX, |kb| kb * 1024);
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    machine.min(cgroup)
}

/// Bytes free for unprivileged writers on the filesystem holding `dir`.
pub fn free_disk(dir: &std::path::Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

impl AlarmConfig {
    pub fn memory_limit(&self) -> u64 {
        match self.memory_high_watermark {
            Watermark::Absolute(b) => b,
            Watermark::Relative(f) => (total_memory() as f64 * f) as u64,
        }
    }

    /// One sample of both alarms.
    pub fn sample(&self, limit: u64) -> AlarmState {
        self.sample_with_headroom(limit).0
    }

    /// One sample, and the free disk space above the limit (None: no disk to watch).
    fn sample_with_headroom(&self, limit: u64) -> (AlarmState, Option<u64>) {
        let free = self.data_dir.as_deref().and_then(free_disk);
        let state = AlarmState {
            memory: resident_memory() > limit,
            disk: free.is_some_and(|free| free < self.disk_free_limit),
        };
        (state, free.map(|f| f.saturating_sub(self.disk_free_limit)))
    }

    /// When to look again: every `interval`, but sooner the closer the disk is to its limit,
    /// so that a fast publisher cannot fill the disk between two looks (a second at 1 GB/s
    /// is a gigabyte). The check is one `statvfs`.
    fn next_check(&self, headroom: Option<u64>) -> Duration {
        match headroom {
            Some(h) => self
                .interval
                .min(Duration::from_secs_f64(h as f64 / DISK_WRITE_RATE_BOUND))
                .max(MIN_DISK_CHECK),
            None => self.interval,
        }
    }
}

/// The fastest the log is assumed to fill a disk, bytes per second: what sets how often the
/// free space is checked when it runs low.
const DISK_WRITE_RATE_BOUND: f64 = 2e9;
/// The most often the free space is checked.
const MIN_DISK_CHECK: Duration = Duration::from_millis(5);

/// Samples the alarms until every receiver is gone, publishing changes to `tx`. `log_full`
/// says whether the message log has found its disk full: that raises the disk alarm too,
/// whatever the free space reads (a quota, reserved blocks, a limit set too low), so that
/// publishers are told (`connection.blocked`) rather than left waiting for confirms.
pub async fn monitor(
    config: AlarmConfig,
    log_full: impl Fn() -> bool + Send + 'static,
    tx: watch::Sender<AlarmState>,
) {
    let limit = config.memory_limit();
    let mut next = Duration::ZERO;
    loop {
        tokio::time::sleep(next).await;
        let (mut state, headroom) = config.sample_with_headroom(limit);
        next = config.next_check(headroom);
        if log_full() {
            state.disk = true;
            next = next.min(MIN_DISK_CHECK * 20);
        }
        let previous = *tx.borrow();
        if state != previous {
            if state.memory != previous.memory {
                if state.memory {
                    warn!(
                        limit,
                        rss = resident_memory(),
                        "memory alarm set: blocking publishers"
                    );
                } else {
                    info!("memory alarm cleared");
                }
            }
            if state.disk != previous.disk {
                if state.disk {
                    warn!(
                        limit = config.disk_free_limit,
                        "disk alarm set: blocking publishers"
                    );
                } else {
                    info!("disk alarm cleared");
                }
            }
            if tx.send(state).is_err() {
                return;
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_readings_are_plausible() {
        let rss = resident_memory();
        assert!(rss > 0 && rss < total_memory());
    }

    #[test]
    fn tiny_watermark_raises_the_memory_alarm() {
        let cfg = AlarmConfig {
            memory_high_watermark: Watermark::Absolute(1),
            ..AlarmConfig::default()
        };
        let state = cfg.sample(cfg.memory_limit());
        assert!(state.memory);
        assert_eq!(state.reason(), Some("low on memory"));
    }

    #[test]
    fn the_disk_is_checked_sooner_as_it_fills() {
        let cfg = AlarmConfig::default();
        assert_eq!(cfg.next_check(None), cfg.interval);
        assert_eq!(cfg.next_check(Some(100_000_000_000)), cfg.interval);
        // 200 MB above the limit: at 2 GB/s that is 100 ms away.
        assert_eq!(
            cfg.next_check(Some(200_000_000)),
            Duration::from_millis(100)
        );
        assert_eq!(cfg.next_check(Some(0)), MIN_DISK_CHECK);
    }

    #[test]
    fn huge_disk_limit_raises_the_disk_alarm() {
        let cfg = AlarmConfig {
            memory_high_watermark: Watermark::Absolute(u64::MAX),
            disk_free_limit: u64::MAX,
            data_dir: Some(std::env::temp_dir()),
            ..AlarmConfig::default()
        };
        let state = cfg.sample(cfg.memory_limit());
        assert!(!state.memory);
        assert!(state.disk);
        assert_eq!(state.reason(), Some("low on disk"));
    }
}
