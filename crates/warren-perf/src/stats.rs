//! Counters shared by every producer and consumer task, and a log-linear latency histogram.
//!
//! Tasks add to the counters once per batch (never per message), and each consumer records
//! latencies into its own histogram behind a mutex it takes once per read: the reporter is the
//! only other party, once per interval, so the lock is never contended in practice.

use std::sync::atomic::{AtomicU64, Ordering};

/// Significant bits kept per value: 2^7 sub-buckets per power of two, half of them distinct
/// above the first range, so a recorded value is off by at most 1/64 (about 1.6 %).
const SUB_BUCKET_BITS: u32 = 7;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS; // 128
const HALF: u64 = SUB_BUCKETS / 2; // 64
/// Values below 128 get a bucket each; above, each power of two gets 64 buckets. The largest
/// shift is 63 - 6 = 57, so the last index is 128 + 56 * 64 + 63.
const BUCKETS: usize = (SUB_BUCKETS + (64 - SUB_BUCKET_BITS as u64) * HALF) as usize;

/// A fixed-size log-linear histogram of `u64` values (nanoseconds here), in the spirit of
/// HdrHistogram: constant-time record, bounded relative error, mergeable.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.total)
            .field("min", &self.min())
            .field("max", &self.max)
            .finish()
    }
}

fn bucket_index(v: u64) -> usize {
    if v < SUB_BUCKETS {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros(); // >= 7
    let shift = msb - (SUB_BUCKET_BITS - 1); // >= 1
    let mantissa = v >> shift; // in [64, 128)
    (SUB_BUCKETS + u64::from(shift - 1) * HALF + (mantissa - HALF)) as usize
}

/// The smallest value that lands in bucket `i`, and the bucket's width.
fn bucket_bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB_BUCKETS {
        return (i, 1);
    }
    let shift = (i - SUB_BUCKETS) / HALF + 1;
    let mantissa = (i - SUB_BUCKETS) % HALF + HALF;
    (mantissa << shift, 1u64 << shift)
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    #[inline]
    pub fn record(&mut self, v: u64) {
        self.counts[bucket_index(v)] += 1;
        self.total += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The smallest recorded value (0 when empty).
    pub fn min(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            self.min
        }
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.total == 0 {
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += *b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn reset(&mut self) {
        if self.total == 0 {
            return;
        }
        self.counts.fill(0);
        self.total = 0;
        self.min = u64::MAX;
        self.max = 0;
    }

    /// The value at quantile `q` (0.0..=1.0): the middle of the bucket holding the
    /// `ceil(q * count)`-th smallest value, clamped to the recorded min and max. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        if rank >= self.total {
            return self.max;
        }
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = bucket_bounds(i);
                let mid = low + (width - 1) / 2;
                return mid.clamp(self.min, self.max);
            }
        }
        self.max
    }
}

/// Totals since the start of the run, added to by every task.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub confirmed: AtomicU64,
    pub nacked: AtomicU64,
    pub returned: AtomicU64,
    pub received: AtomicU64,
    /// Nanoseconds after the start of the measured phase at which the last delivery was read.
    pub last_delivery_ns: AtomicU64,
}

/// A copy of the counters at one instant, for computing rates between two instants.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub sent: u64,
    pub confirmed: u64,
    pub nacked: u64,
    pub returned: u64,
    pub received: u64,
}

impl Counters {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            sent: self.sent.load(Ordering::Relaxed),
            confirmed: self.confirmed.load(Ordering::Relaxed),
            nacked: self.nacked.load(Ordering::Relaxed),
            returned: self.returned.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
        }
    }
}

/// `n` events over `secs` seconds, as a rate (0 for an empty interval).
pub fn rate(n: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        0.0
    } else {
        n as f64 / secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 0..128 {
            h.record(v);
        }
        assert_eq!(h.count(), 128);
        assert_eq!(h.min(), 0);
        assert_eq!(h.max(), 127);
        assert_eq!(h.quantile(0.5), 63);
        assert_eq!(h.quantile(1.0), 127);
    }

    #[test]
    fn bucket_index_and_bounds_agree_everywhere() {
        let mut probes = vec![
            0u64,
            1,
            127,
            128,
            129,
            255,
            256,
            1000,
            123_456_789,
            u64::MAX,
        ];
        probes.extend((0..64).map(|s| 1u64 << s));
        probes.extend((1..64).map(|s| (1u64 << s) - 1));
        for v in probes {
            let i = bucket_index(v);
            assert!(i < BUCKETS, "index {i} for {v}");
            let (low, width) = bucket_bounds(i);
            assert!(low <= v, "{v} below bucket {i} low {low}");
            assert!(v - low < width, "{v} beyond bucket {i} [{low}, +{width})");
        }
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn relative_error_is_bounded() {
        let mut v = 1u64;
        while v < 1 << 50 {
            let mut h = Histogram::new();
            h.record(v);
            h.record(v.saturating_mul(3));
            let got = h.quantile(0.5);
            let err = got.abs_diff(v) as f64 / v as f64;
            assert!(err <= 1.0 / 64.0, "value {v} read back as {got}");
            v = v * 7 / 3 + 1;
        }
    }

    #[test]
    fn quantiles_of_a_uniform_spread() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (q, want) in [(0.5, 50_000.0), (0.95, 95_000.0), (0.99, 99_000.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.02, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), 100_000);
        assert_eq!(h.quantile(0.0), 1);
    }

    #[test]
    fn merge_and_reset() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(10);
        b.record(1_000_000);
        b.record(5);
        a.merge(&b);
        assert_eq!((a.count(), a.min(), a.max()), (3, 5, 1_000_000));
        a.reset();
        assert_eq!((a.count(), a.min(), a.max(), a.quantile(0.5)), (0, 0, 0, 0));
        a.merge(&Histogram::new());
        assert_eq!(a.count(), 0);
    }

    #[test]
    fn rate_of_empty_interval_is_zero() {
        assert_eq!(rate(10, 0.0), 0.0);
        assert_eq!(rate(10, 2.0), 5.0);
    }
}
