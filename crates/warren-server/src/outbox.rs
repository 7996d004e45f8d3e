//! A connection's outgoing side: a queue of things to send, and the writer task that turns them
//! into frames.
//!
//! Producers (the connection's own reader task, and queues delivering from other tasks) push
//! under a short mutex; the writer swaps the whole batch out, encodes it into one buffer (large
//! bodies excepted: they are written from the message, not copied) and writes it with as few
//! syscalls as the batch allows. When more than a high watermark of bytes
//! is waiting, the outbox reports itself congested and queues stop delivering to it; once the
//! writer has drained below the low watermark it wakes the reader task to resume them.

use std::io::IoSlice;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use warren_broker::stats::ConnectionCounters;
use warren_broker::{Message, Outbound, Outbox};
use warren_codec::{
    basic, connection, frame, write_method_frame, FrameType, Method, ShortString, CLASS_BASIC,
};

/// Bytes waiting to be written above which deliveries to this connection pause.
const HIGH_WATERMARK: usize = 4 * 1024 * 1024;
/// Bytes waiting below which paused deliveries resume.
const LOW_WATERMARK: usize = 1024 * 1024;
/// Flush the write buffer once it holds this much, even mid-batch.
const WRITE_CHUNK: usize = 256 * 1024;

/// One thing to send.
#[derive(Debug)]
pub enum OutItem {
    /// From the broker: deliveries, get-ok, server-side cancels.
    Broker(Outbound),
    /// A method frame from the connection itself.
    Method(u16, Box<Method>),
    /// `basic.return` with its content.
    Return {
        channel: u16,
        reply_code: u16,
        reply_text: ShortString,
        message: Arc<Message>,
    },
    /// A heartbeat frame now: a probe that finds a peer gone while its connection is not
    /// being read (a write to a closed socket fails).
    Heartbeat,
    /// Write everything before this, then close the socket.
    Shutdown,
}

fn item_cost(item: &OutItem) -> usize {
    const OVERHEAD: usize = 64;
    match item {
        OutItem::Broker(Outbound::Deliver { message, .. })
        | OutItem::Broker(Outbound::GetOk { message, .. })
        | OutItem::Return { message, .. } => OVERHEAD + message.size(),
        _ => OVERHEAD,
    }
}

pub struct ConnOutbox {
    items: Mutex<Vec<OutItem>>,
    wake_writer: Notify,
    /// Bytes pushed and not yet written.
    pending: AtomicUsize,
    congested: AtomicBool,
    /// Set when the writer leaves the congested state: the reader resumes its channels.
    pub resume: Notify,
    /// The writer has stopped (socket gone); pushes are dropped.
    closed: AtomicBool,
    /// Notified when the writer stops.
    pub gone: Notify,
    /// Whether the client understands server-sent `basic.cancel`.
    consumer_cancel_notify: AtomicBool,
    /// While a channel deletes a queue, the cancels for that channel's own consumers wait
    /// here, so that `queue.delete-ok` goes out first: RabbitMQ's order, which py-amqp
    /// (Celery, kombu) relies on — it raises `ConsumerCancelled` out of `queue_delete`
    /// otherwise.
    held_cancels: Mutex<Option<(u16, Vec<OutItem>)>>,
}

impl Default for ConnOutbox {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnOutbox {
    pub fn new() -> Self {
        ConnOutbox {
            items: Mutex::new(Vec::with_capacity(64)),
            wake_writer: Notify::new(),
            pending: AtomicUsize::new(0),
            congested: AtomicBool::new(false),
            resume: Notify::new(),
            closed: AtomicBool::new(false),
            gone: Notify::new(),
            consumer_cancel_notify: AtomicBool::new(false),
            held_cancels: Mutex::new(None),
        }
    }

    /// Holds back cancels for `channel` until [`ConnOutbox::release_cancels`].
    pub fn hold_cancels(&self, channel: u16) {
        *self.held_cancels.lock() = Some((channel, Vec::new()));
    }

    /// Sends the cancels held since [`ConnOutbox::hold_cancels`], after what was sent
    /// meanwhile.
    pub fn release_cancels(&self) {
        let held = self.held_cancels.lock().take();
        for item in held.into_iter().flat_map(|(_, items)| items) {
            self.send(item);
        }
    }

    pub fn set_consumer_cancel_notify(&self, on: bool) {
        self.consumer_cancel_notify.store(on, Ordering::Relaxed);
    }

    pub fn send(&self, item: OutItem) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let cost = item_cost(&item);
        let was_empty = {
            let mut items = self.items.lock();
            items.push(item);
            items.len() == 1
        };
        let pending = self.pending.fetch_add(cost, Ordering::Relaxed) + cost;
        if pending > HIGH_WATERMARK {
            self.congested.store(true, Ordering::Relaxed);
        }
        // One wake-up per batch: the writer takes everything queued when it runs.
        if was_empty {
            self.wake_writer.notify_one();
        }
    }

    pub fn method(&self, channel: u16, method: impl Into<Method>) {
        self.send(OutItem::Method(channel, Box::new(method.into())));
    }

    pub(crate) fn take(&self) -> Vec<OutItem> {
        std::mem::take(&mut *self.items.lock())
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

impl Outbox for ConnOutbox {
    fn push(&self, item: Outbound) {
        if let Outbound::Cancel { channel, .. } = item {
            if !self.consumer_cancel_notify.load(Ordering::Relaxed) {
                return;
            }
            if let Some((held_for, items)) = &mut *self.held_cancels.lock() {
                if *held_for == channel {
                    items.push(OutItem::Broker(item));
                    return;
                }
            }
        }
        self.send(OutItem::Broker(item));
    }

    fn is_congested(&self) -> bool {
        self.congested.load(Ordering::Relaxed)
    }
}

/// Frame limits the writer needs, settled during the handshake.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    pub frame_max: u32,
    /// Send a heartbeat when nothing was written for this long (None: no heartbeats).
    pub heartbeat: Option<Duration>,
}

/// Bodies at least this long are not copied into the write buffer: the batch writes them from
/// the message itself (`writev`). Below it, a copy costs less than one more I/O slice.
const SPLICE_MIN: usize = 4 * 1024;

/// Frames on their way to the socket. Everything is encoded into `buf` except the slices of
/// large bodies, which stay in their messages and go out with the same `writev`.
#[derive(Default)]
struct Batch {
    buf: BytesMut,
    /// Body slices, each written after `buf[..at]` (in order of `at`).
    spliced: Vec<Spliced>,
    spliced_len: usize,
}

struct Spliced {
    at: usize,
    message: Arc<Message>,
    range: Range<usize>,
}

impl Batch {
    fn len(&self) -> usize {
        self.buf.len() + self.spliced_len
    }

    /// Counts a written batch: its bytes, and one send (RabbitMQ's `send_cnt` counts socket
    /// writes).
    fn count(&self, counters: &ConnectionCounters) {
        counters.send_oct.add(self.len() as u64);
        counters.send_cnt.inc();
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.spliced.clear();
        self.spliced_len = 0;
    }

    /// Body frames for `message`, each at most `frame_max` long; an empty body gets none.
    fn write_body(&mut self, channel: u16, message: &Arc<Message>, frame_max: u32) {
        let body = &message.body;
        if body.len() < SPLICE_MIN {
            frame::write_body(&mut self.buf, channel, body, frame_max);
            return;
        }
        let chunk = frame::body_chunk_size(frame_max);
        let mut start = 0;
        while start < body.len() {
            let end = body.len().min(start.saturating_add(chunk));
            frame::write_frame_header(
                &mut self.buf,
                FrameType::Body,
                channel,
                (end - start) as u32,
            );
            self.spliced.push(Spliced {
                at: self.buf.len(),
                message: message.clone(),
                range: start..end,
            });
            self.spliced_len += end - start;
            self.buf.put_u8(frame::FRAME_END);
            start = end;
        }
    }

    fn write_content(&mut self, channel: u16, message: &Arc<Message>, frame_max: u32) {
        frame::write_content_header(
            &mut self.buf,
            channel,
            CLASS_BASIC,
            message.body.len() as u64,
            &message.raw_properties,
        );
        self.write_body(channel, message, frame_max);
    }

    async fn write_to<W: AsyncWrite + Unpin>(&self, socket: &mut W) -> std::io::Result<()> {
        if self.spliced.is_empty() {
            return socket.write_all(&self.buf).await;
        }
        let mut slices = Vec::with_capacity(2 * self.spliced.len() + 1);
        let mut from = 0;
        for s in &self.spliced {
            slices.push(IoSlice::new(&self.buf[from..s.at]));
            slices.push(IoSlice::new(&s.message.body[s.range.clone()]));
            from = s.at;
        }
        slices.push(IoSlice::new(&self.buf[from..]));
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            let n = socket.write_vectored(slices).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut slices, n);
        }
        Ok(())
    }
}

/// Encodes one item; false for [`OutItem::Shutdown`].
fn encode(batch: &mut Batch, item: OutItem, frame_max: u32) -> bool {
    let buf = &mut batch.buf;
    match item {
        OutItem::Broker(Outbound::Deliver {
            channel,
            consumer_tag,
            delivery_tag,
            redelivered,
            message,
        }) => {
            frame::write_deliver(
                buf,
                channel,
                &consumer_tag,
                delivery_tag,
                redelivered,
                &message.exchange,
                &message.routing_key,
            );
            batch.write_content(channel, &message, frame_max);
        }
        OutItem::Broker(Outbound::GetOk {
            channel,
            delivery_tag,
            redelivered,
            message_count,
            message,
        }) => {
            let m = Method::BasicGetOk(basic::GetOk {
                delivery_tag,
                redelivered,
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
                message_count,
            });
            write_method_frame(buf, channel, &m);
            batch.write_content(channel, &message, frame_max);
        }
        OutItem::Broker(Outbound::Cancel {
            channel,
            consumer_tag,
        }) => {
            let m = Method::BasicCancel(basic::Cancel {
                consumer_tag,
                no_wait: true,
            });
            write_method_frame(buf, channel, &m);
        }
        OutItem::Return {
            channel,
            reply_code,
            reply_text,
            message,
        } => {
            let m = Method::BasicReturn(basic::Return {
                reply_code,
                reply_text,
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
            });
            write_method_frame(buf, channel, &m);
            batch.write_content(channel, &message, frame_max);
        }
        OutItem::Method(channel, m) => write_method_frame(buf, channel, &m),
        OutItem::Heartbeat => frame::write_heartbeat(buf),
        OutItem::Shutdown => return false,
    }
    true
}

/// Writes everything pushed to `outbox` until the connection ends. Returns when the socket
/// fails or a [`OutItem::Shutdown`] has been written.
pub async fn run_writer<W: AsyncWrite + Unpin>(
    mut socket: W,
    outbox: Arc<ConnOutbox>,
    config: tokio::sync::watch::Receiver<WriterConfig>,
    counters: Arc<ConnectionCounters>,
) {
    // Grows with the batches written; dropped again after a large one (see below).
    let mut batch = Batch::default();
    let mut last_write = tokio::time::Instant::now();
    loop {
        let cfg = *config.borrow();
        let items = outbox.take();
        if items.is_empty() {
            // Heartbeats: RabbitMQ sends one every half interval of silence.
            let wait = cfg.heartbeat.map(|h| h / 2);
            match wait {
                Some(w) => {
                    let deadline = last_write + w;
                    tokio::select! {
                        _ = outbox.wake_writer.notified() => continue,
                        _ = tokio::time::sleep_until(deadline) => {
                            frame::write_heartbeat(&mut batch.buf);
                        }
                    }
                }
                None => {
                    outbox.wake_writer.notified().await;
                    continue;
                }
            }
        }
        let mut cost = 0;
        let mut keep_going = true;
        for item in items {
            cost += item_cost(&item);
            if !encode(&mut batch, item, cfg.frame_max) {
                keep_going = false;
                break;
            }
            if batch.len() >= WRITE_CHUNK {
                if batch.write_to(&mut socket).await.is_err() {
                    return close(&outbox);
                }
                batch.count(&counters);
                batch.clear();
            }
        }
        if batch.len() > 0 {
            if batch.write_to(&mut socket).await.is_err() {
                return close(&outbox);
            }
            batch.count(&counters);
            batch.clear();
            if batch.buf.capacity() > 2 * WRITE_CHUNK {
                // Do not keep a huge buffer around after one large message.
                batch.buf = BytesMut::new();
            }
        }
        last_write = tokio::time::Instant::now();
        let before = outbox.pending.fetch_sub(cost, Ordering::Relaxed);
        if before - cost.min(before) < LOW_WATERMARK
            && outbox.congested.swap(false, Ordering::Relaxed)
        {
            outbox.resume.notify_one();
        }
        if !keep_going {
            let _ = socket.flush().await;
            let _ = socket.shutdown().await;
            return close(&outbox);
        }
    }
}

fn close(outbox: &ConnOutbox) {
    outbox.closed.store(true, Ordering::Relaxed);
    outbox.take();
    outbox.gone.notify_one();
}

/// `connection.close` for a hard error or a shutdown, followed by closing the socket once the
/// peer answers (or the reader gives up waiting).
pub fn connection_close(code: u16, text: String, class_id: u16, method_id: u16) -> Method {
    Method::ConnectionClose(connection::Close {
        reply_code: code,
        reply_text: ShortString::try_from(text).unwrap_or_default(),
        class_id,
        method_id,
    })
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use warren_codec::BasicProperties;

    use super::*;

    /// A socket that takes at most `max` bytes per write, across slices.
    struct Trickle {
        out: Vec<u8>,
        max: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.max - n);
                self.out.extend_from_slice(&b[..take]);
                n += take;
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn delivery(tag: u64, body: Vec<u8>) -> OutItem {
        let message = Message::new(
            ShortString::from_static("x"),
            ShortString::from_static("key"),
            BasicProperties::default().to_raw(),
            Bytes::from(body),
            &BasicProperties::default(),
        );
        OutItem::Broker(Outbound::Deliver {
            channel: 1,
            consumer_tag: ShortString::from_static("ctag"),
            delivery_tag: tag,
            redelivered: false,
            message: Arc::new(message),
        })
    }

    /// The frames as written with every body copied into one buffer.
    fn copied(items: &[(u64, Vec<u8>)], frame_max: u32) -> Vec<u8> {
        let mut buf = BytesMut::new();
        for (tag, body) in items {
            let m = Method::BasicDeliver(basic::Deliver {
                consumer_tag: ShortString::from_static("ctag"),
                delivery_tag: *tag,
                redelivered: false,
                exchange: ShortString::from_static("x"),
                routing_key: ShortString::from_static("key"),
            });
            write_method_frame(&mut buf, 1, &m);
            let raw = BasicProperties::default().to_raw();
            frame::write_content_header(&mut buf, 1, CLASS_BASIC, body.len() as u64, &raw);
            frame::write_body(&mut buf, 1, body, frame_max);
        }
        buf.to_vec()
    }

    #[tokio::test]
    async fn spliced_bodies_are_written_as_if_copied() {
        let frame_max = 8192;
        let items = vec![
            (1, vec![1u8; 16]),
            (2, (0..20_000).map(|i| (i % 251) as u8).collect()),
            (3, vec![3u8; SPLICE_MIN]),
            (4, vec![]),
            (5, vec![5u8; SPLICE_MIN - 1]),
        ];
        let mut batch = Batch::default();
        for (tag, body) in &items {
            assert!(encode(&mut batch, delivery(*tag, body.clone()), frame_max));
        }
        assert!(!batch.spliced.is_empty());
        let want = copied(&items, frame_max);
        assert_eq!(batch.len(), want.len());
        // Partial writes that end inside slices and on their edges.
        for max in [1000, 4096, 7, usize::MAX] {
            let mut socket = Trickle {
                out: Vec::new(),
                max,
            };
            batch.write_to(&mut socket).await.unwrap();
            assert!(socket.out == want, "max {max}");
        }
    }
}
