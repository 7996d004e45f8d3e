//! A connection's outgoing side: a queue of things to send, and the writer task that turns them
//! into frames.
//!
//! Producers (the connection's own reader task, and queues delivering from other tasks) push
//! under a short mutex; the writer swaps the whole batch out, encodes it into one buffer and
//! writes it with as few syscalls as the batch allows. When more than a high watermark of bytes
//! is waiting, the outbox reports itself congested and queues stop delivering to it; once the
//! writer has drained below the low watermark it wakes the reader task to resume them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use warren_broker::{Message, Outbound, Outbox};
use warren_codec::{
    basic, connection, frame, write_method_frame, Method, ShortString, CLASS_BASIC,
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
    /// Whether the client understands server-sent `basic.cancel`.
    consumer_cancel_notify: AtomicBool,
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
            consumer_cancel_notify: AtomicBool::new(false),
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

    fn take(&self) -> Vec<OutItem> {
        std::mem::take(&mut *self.items.lock())
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

impl Outbox for ConnOutbox {
    fn push(&self, item: Outbound) {
        if matches!(item, Outbound::Cancel { .. })
            && !self.consumer_cancel_notify.load(Ordering::Relaxed)
        {
            return;
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

fn encode_content(
    buf: &mut BytesMut,
    channel: u16,
    method: &Method,
    message: &Message,
    frame_max: u32,
) {
    write_method_frame(buf, channel, method);
    frame::write_content_header(
        buf,
        channel,
        CLASS_BASIC,
        message.body.len() as u64,
        &message.raw_properties,
    );
    frame::write_body(buf, channel, &message.body, frame_max);
}

fn encode(buf: &mut BytesMut, item: OutItem, frame_max: u32) -> bool {
    match item {
        OutItem::Broker(Outbound::Deliver {
            channel,
            consumer_tag,
            delivery_tag,
            redelivered,
            message,
        }) => {
            let m = Method::BasicDeliver(basic::Deliver {
                consumer_tag,
                delivery_tag,
                redelivered,
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
            });
            encode_content(buf, channel, &m, &message, frame_max);
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
            encode_content(buf, channel, &m, &message, frame_max);
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
            encode_content(buf, channel, &m, &message, frame_max);
        }
        OutItem::Method(channel, m) => write_method_frame(buf, channel, &m),
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
) {
    // Grows with the batches written; dropped again after a large one (see below).
    let mut buf = BytesMut::new();
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
                            frame::write_heartbeat(&mut buf);
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
            if !encode(&mut buf, item, cfg.frame_max) {
                keep_going = false;
                break;
            }
            if buf.len() >= WRITE_CHUNK {
                if socket.write_all(&buf).await.is_err() {
                    return close(&outbox);
                }
                buf.clear();
            }
        }
        if !buf.is_empty() {
            if socket.write_all(&buf).await.is_err() {
                return close(&outbox);
            }
            buf.clear();
            if buf.capacity() > 2 * WRITE_CHUNK {
                // Do not keep a huge buffer around after one large message.
                buf = BytesMut::new();
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
