//! Counters with RabbitMQ's meanings, kept where the work already happens and summed when read.
//!
//! Nothing here adds a lock or a shared cache line to the message path: a channel's publish
//! counters are written only by the task that owns the channel, its delivery counters under
//! the channel lock that a delivery takes anyway, a queue's counters under the queue lock, a
//! connection's byte counts by its reader and writer tasks. Readers (the management API,
//! metrics) load them from any thread and add them up; a channel that closes folds its totals
//! into its vhost's (and each exchange's), so the sums only ever grow.

use std::sync::atomic::{AtomicU64, Ordering};

/// A counter with one writer at a time (one task, or whoever holds a lock around it): an
/// increment is a plain load and store, not a locked read-modify-write, and readers on other
/// threads see the value a moment later.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. The caller is the counter's only writer at this moment (see the type's doc).
    #[inline]
    pub fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Message counts, as RabbitMQ's management API reports them in `message_stats` (per
/// channel, queue, vhost and node) and as its global counters report them to Prometheus.
/// Each field counts messages, not frames.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MessageStats {
    /// Messages published (`publish`; the global `messages_received_total`). For a queue:
    /// messages enqueued.
    pub publish: u64,
    /// ... of which on a channel in confirm mode (`messages_received_confirm_total`).
    pub publish_confirm: u64,
    /// Queues published messages were routed to: a message routed to three queues counts
    /// three, as RabbitMQ's `messages_routed_total` does.
    pub routed: u64,
    /// Publisher confirms (acks) sent (`confirm`; `messages_confirmed_total`).
    pub confirm: u64,
    /// Publisher nacks sent (a queue refused the message).
    pub nack: u64,
    /// Mandatory messages returned unroutable (`return_unroutable`).
    pub return_unroutable: u64,
    /// Messages routed nowhere and dropped (`drop_unroutable`).
    pub drop_unroutable: u64,
    /// Delivered to consumers that acknowledge (`deliver`).
    pub deliver: u64,
    /// Delivered to auto-ack consumers (`deliver_no_ack`).
    pub deliver_no_ack: u64,
    /// Fetched with `basic.get`, to be acknowledged (`get`).
    pub get: u64,
    /// Fetched with `basic.get` in auto-ack mode (`get_no_ack`).
    pub get_no_ack: u64,
    /// `basic.get` that found the queue empty (`get_empty`).
    pub get_empty: u64,
    /// Deliveries and gets of messages delivered before (`redeliver`).
    pub redeliver: u64,
    /// Acknowledged by clients (`ack`).
    pub ack: u64,
}

impl MessageStats {
    /// RabbitMQ's `deliver_get`: every delivery and get, in both ack modes.
    pub fn deliver_get(&self) -> u64 {
        self.deliver + self.deliver_no_ack + self.get + self.get_no_ack
    }

    pub fn add(&mut self, o: &MessageStats) {
        self.publish += o.publish;
        self.publish_confirm += o.publish_confirm;
        self.routed += o.routed;
        self.confirm += o.confirm;
        self.nack += o.nack;
        self.return_unroutable += o.return_unroutable;
        self.drop_unroutable += o.drop_unroutable;
        self.deliver += o.deliver;
        self.deliver_no_ack += o.deliver_no_ack;
        self.get += o.get;
        self.get_no_ack += o.get_no_ack;
        self.get_empty += o.get_empty;
        self.redeliver += o.redeliver;
        self.ack += o.ack;
    }
}

/// Upper bounds (bytes, inclusive) of the message size histogram, as RabbitMQ's
/// `rabbitmq_message_size_bytes` buckets; a last, unbounded bucket follows.
pub const SIZE_BUCKETS: [u64; 8] = [
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
];

/// Which bucket a body of `size` bytes falls in (at most eight comparisons; most messages
/// stop at the first or second).
fn bucket_of(size: u64) -> usize {
    SIZE_BUCKETS
        .iter()
        .position(|b| size <= *b)
        .unwrap_or(SIZE_BUCKETS.len())
}

/// Counts of published message sizes, per bucket (not cumulative), and their sum.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SizeHistogram {
    pub buckets: [u64; SIZE_BUCKETS.len() + 1],
    pub sum: u64,
}

impl SizeHistogram {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn add(&mut self, o: &SizeHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets.iter()) {
            *a += b;
        }
        self.sum += o.sum;
    }

    pub(crate) fn observe(&mut self, size: u64) {
        self.buckets[bucket_of(size)] += 1;
        self.sum += size;
    }
}

/// A channel's live counters. The publish side is written by the channel's own task; the
/// delivery side under the channel's lock.
#[derive(Debug, Default)]
pub(crate) struct ChannelCounters {
    pub publish: Counter,
    pub publish_confirm: Counter,
    pub routed: Counter,
    pub confirm: Counter,
    pub nack: Counter,
    pub return_unroutable: Counter,
    pub drop_unroutable: Counter,
    pub deliver: Counter,
    pub deliver_no_ack: Counter,
    pub get: Counter,
    pub get_no_ack: Counter,
    pub get_empty: Counter,
    pub redeliver: Counter,
    pub ack: Counter,
    pub sizes: [Counter; SIZE_BUCKETS.len() + 1],
    pub size_sum: Counter,
}

impl ChannelCounters {
    pub fn observe_size(&self, size: u64) {
        self.sizes[bucket_of(size)].inc();
        self.size_sum.add(size);
    }

    pub fn snapshot(&self) -> MessageStats {
        MessageStats {
            publish: self.publish.get(),
            publish_confirm: self.publish_confirm.get(),
            routed: self.routed.get(),
            confirm: self.confirm.get(),
            nack: self.nack.get(),
            return_unroutable: self.return_unroutable.get(),
            drop_unroutable: self.drop_unroutable.get(),
            deliver: self.deliver.get(),
            deliver_no_ack: self.deliver_no_ack.get(),
            get: self.get.get(),
            get_no_ack: self.get_no_ack.get(),
            get_empty: self.get_empty.get(),
            redeliver: self.redeliver.get(),
            ack: self.ack.get(),
        }
    }

    pub fn sizes(&self) -> SizeHistogram {
        let mut h = SizeHistogram::default();
        for (out, c) in h.buckets.iter_mut().zip(self.sizes.iter()) {
            *out = c.get();
        }
        h.sum = self.size_sum.get();
        h
    }
}

/// Messages published to an exchange (`publish_in`) and routed from it to at least one queue
/// (`publish_out`), as RabbitMQ's exchange `message_stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeStats {
    pub publish_in: u64,
    pub publish_out: u64,
}

impl ExchangeStats {
    pub fn add(&mut self, o: &ExchangeStats) {
        self.publish_in += o.publish_in;
        self.publish_out += o.publish_out;
    }
}

/// One channel's counts for one exchange, written by the channel's task.
#[derive(Debug, Default)]
pub(crate) struct ExchangeCounters {
    pub publish_in: Counter,
    pub publish_out: Counter,
}

impl ExchangeCounters {
    pub fn snapshot(&self) -> ExchangeStats {
        ExchangeStats {
            publish_in: self.publish_in.get(),
            publish_out: self.publish_out.get(),
        }
    }
}

/// Bytes and frames a connection read and wrote (`recv_oct`, `recv_cnt`, `send_oct`,
/// `send_cnt`). The reader task writes the first two, the writer task the others.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    pub recv_oct: Counter,
    pub recv_cnt: Counter,
    pub send_oct: Counter,
    pub send_cnt: Counter,
}

/// Objects created and removed since the broker started (RabbitMQ's churn metrics). These
/// change once per operation, not per message, so plain shared atomics are fine.
#[derive(Debug, Default)]
pub struct Churn {
    pub connections_opened: AtomicU64,
    pub connections_closed: AtomicU64,
    pub channels_opened: AtomicU64,
    pub channels_closed: AtomicU64,
    /// Every `queue.declare` that succeeded, new queue or not.
    pub queues_declared: AtomicU64,
    pub queues_created: AtomicU64,
    pub queues_deleted: AtomicU64,
}

/// A copy of [`Churn`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChurnStats {
    pub connections_opened: u64,
    pub connections_closed: u64,
    pub channels_opened: u64,
    pub channels_closed: u64,
    pub queues_declared: u64,
    pub queues_created: u64,
    pub queues_deleted: u64,
}

impl Churn {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ChurnStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ChurnStats {
            connections_opened: g(&self.connections_opened),
            connections_closed: g(&self.connections_closed),
            channels_opened: g(&self.channels_opened),
            channels_closed: g(&self.channels_closed),
            queues_declared: g(&self.queues_declared),
            queues_created: g(&self.queues_created),
            queues_deleted: g(&self.queues_deleted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_fall_in_rabbitmq_buckets() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(100), 0);
        assert_eq!(bucket_of(101), 1);
        assert_eq!(bucket_of(u64::MAX), SIZE_BUCKETS.len());
        for (i, bound) in SIZE_BUCKETS.iter().enumerate() {
            assert_eq!(bucket_of(*bound), i, "bound {bound}");
            assert_eq!(bucket_of(bound + 1), i + 1, "bound {bound} + 1");
        }
    }

    #[test]
    fn histogram_counts_and_sums() {
        let c = ChannelCounters::default();
        c.observe_size(10);
        c.observe_size(1000);
        c.observe_size(1000);
        let h = c.sizes();
        assert_eq!(h.count(), 3);
        assert_eq!(h.sum, 2010);
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[1], 2);
    }

    #[test]
    fn deliver_get_sums_every_delivery() {
        let s = MessageStats {
            deliver: 1,
            deliver_no_ack: 2,
            get: 3,
            get_no_ack: 4,
            get_empty: 100,
            ..MessageStats::default()
        };
        assert_eq!(s.deliver_get(), 10);
    }
}
