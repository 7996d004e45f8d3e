//! A small AMQP 0-9-1 client built for throughput, on `warren-codec` and tokio.
//!
//! One [`Connection`] is one TCP connection used by one task, with channel 1 for its work. Set-up
//! (handshake, declarations, `basic.consume`, `confirm.select`) goes through [`Connection::rpc`],
//! which decodes each frame with `warren-codec`. The data path does not: publishers append
//! pre-encoded messages to [`Connection::wbuf`] and write them with one [`Connection::flush`];
//! incoming frames are read into one large buffer and scanned by [`FrameParser`] into an
//! [`Events`] sink, many frames per read, with no allocation per message.
//!
//! Writes never deadlock against a broker that is itself blocked writing to us: while a flush
//! waits for the socket to drain it also reads whatever the broker sends.

use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use thiserror::Error;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::watch;
use warren_codec::frame::{
    decode_frame, write_body, write_content_header, FrameType, PROTOCOL_HEADER,
};
use warren_codec::{
    basic, channel, confirm, connection, constants, exchange, queue, write_method_frame,
    CodecError, FieldTable, FieldValue, LongString, Method, ShortString, CLASS_BASIC,
};

use crate::parser::{Events, FrameParser};
use crate::uri::AmqpUri;

/// The channel every task works on.
pub const CHANNEL: u16 = 1;
/// Bytes asked of each socket read: large, so one read carries many frames.
const READ_CHUNK: usize = 256 * 1024;
/// What we propose if the broker leaves frame_max unlimited.
const DEFAULT_FRAME_MAX: u32 = 128 * 1024;
/// How long a graceful close waits for `close-ok`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("invalid URI {uri:?}: {reason}")]
    Uri { uri: String, reason: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("malformed data from the broker: {0}")]
    Codec(#[from] CodecError),
    #[error(
        "broker closed the connection: {code} {text} (in reply to method {class_id}.{method_id})"
    )]
    ConnectionClosed {
        code: u16,
        text: String,
        class_id: u16,
        method_id: u16,
    },
    #[error("broker closed channel {channel}: {code} {text} (in reply to method {class_id}.{method_id})")]
    ChannelClosed {
        channel: u16,
        code: u16,
        text: String,
        class_id: u16,
        method_id: u16,
    },
    #[error("broker closed the TCP connection without connection.close")]
    Eof,
    #[error("unexpected from the broker: {0}")]
    Unexpected(String),
    #[error("broker does not offer the PLAIN mechanism (it offers {0:?})")]
    NoPlain(String),
    #[error("{what} timed out after {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("broker cancelled consumer {0:?}")]
    ConsumerCancelled(String),
    /// The run is over: a wait was cut short by the stop signal. Not a failure.
    #[error("stopped")]
    Stopped,
}

impl ClientError {
    fn unexpected(what: &str, got: &Method) -> Self {
        ClientError::Unexpected(format!("{} while waiting for {what}", got.name()))
    }
}

fn short(s: &str) -> Result<ShortString, ClientError> {
    Ok(ShortString::try_from(s)?)
}

/// Runs `f` unless the stop signal (if any) fires first.
async fn or_stop<F: Future>(
    stop: &mut Option<watch::Receiver<bool>>,
    f: F,
) -> Result<F::Output, ClientError> {
    match stop {
        None => Ok(f.await),
        Some(rx) => tokio::select! {
            biased;
            v = f => Ok(v),
            _ = rx.wait_for(|stopped| *stopped) => Err(ClientError::Stopped),
        },
    }
}

/// Wraps a task's sink: the methods that end a connection or a consumer are handled here, the
/// same way for every task.
struct Guard<'a, E> {
    inner: &'a mut E,
    wbuf: &'a mut BytesMut,
}

impl<E: Events> Events for Guard<'_, E> {
    #[inline]
    fn deliver(&mut self, delivery_tag: u64, timestamp: Option<u64>) {
        self.inner.deliver(delivery_tag, timestamp);
    }

    #[inline]
    fn confirm(&mut self, delivery_tag: u64, multiple: bool, ack: bool) {
        self.inner.confirm(delivery_tag, multiple, ack);
    }

    fn returned(&mut self) {
        self.inner.returned();
    }

    fn method(&mut self, channel: u16, method: Method) -> Result<(), ClientError> {
        closing_method(self.wbuf, channel, &method)?;
        match method {
            Method::BasicCancel(c) => {
                Err(ClientError::ConsumerCancelled(c.consumer_tag.to_string()))
            }
            Method::ConnectionBlocked(b) => {
                eprintln!(
                    "warren-perf: connection blocked by the broker: {}",
                    b.reason
                );
                Ok(())
            }
            Method::ConnectionUnblocked(_) => {
                eprintln!("warren-perf: connection unblocked");
                Ok(())
            }
            // Anything else (a late consume-ok, channel.flow, ...) does not concern the data path.
            _ => Ok(()),
        }
    }
}

/// Turns `connection.close` / `channel.close` from the broker into an error, queueing the
/// `close-ok` the spec asks for.
fn closing_method(wbuf: &mut BytesMut, channel: u16, method: &Method) -> Result<(), ClientError> {
    match method {
        Method::ConnectionClose(c) => {
            write_method_frame(wbuf, 0, &Method::ConnectionCloseOk(connection::CloseOk {}));
            Err(ClientError::ConnectionClosed {
                code: c.reply_code,
                text: c.reply_text.to_string(),
                class_id: c.class_id,
                method_id: c.method_id,
            })
        }
        Method::ChannelClose(c) => {
            write_method_frame(wbuf, channel, &Method::ChannelCloseOk(channel::CloseOk {}));
            Err(ClientError::ChannelClosed {
                channel,
                code: c.reply_code,
                text: c.reply_text.to_string(),
                class_id: c.class_id,
                method_id: c.method_id,
            })
        }
        _ => Ok(()),
    }
}

pub struct Connection {
    stream: TcpStream,
    rbuf: BytesMut,
    /// Frames waiting to be written by the next [`Connection::flush`].
    pub wbuf: BytesMut,
    parser: FrameParser,
    frame_max: u32,
    stop: Option<watch::Receiver<bool>>,
}

impl Connection {
    /// Connects, authenticates with PLAIN, tunes (no heartbeats) and opens the vhost, all
    /// within `timeout` (a broker out of file descriptors accepts nothing and says nothing).
    pub async fn open(
        uri: &AmqpUri,
        name: &str,
        timeout: Duration,
    ) -> Result<Connection, ClientError> {
        match tokio::time::timeout(timeout, Self::handshake(uri, name)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                what: "connection handshake",
                after: timeout,
            }),
        }
    }

    async fn handshake(uri: &AmqpUri, name: &str) -> Result<Connection, ClientError> {
        let addr = uri.address();
        let stream = TcpStream::connect(&addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.clone(),
                source,
            })?;
        stream.set_nodelay(true)?;
        let mut c = Connection {
            stream,
            rbuf: BytesMut::with_capacity(4 * READ_CHUNK),
            wbuf: BytesMut::with_capacity(256 * 1024),
            parser: FrameParser::new(DEFAULT_FRAME_MAX),
            frame_max: DEFAULT_FRAME_MAX,
            stop: None,
        };
        c.wbuf.extend_from_slice(PROTOCOL_HEADER);
        c.flush().await?;

        let start = match c.next_method(0).await? {
            Method::ConnectionStart(s) => s,
            other => return Err(ClientError::unexpected("connection.start", &other)),
        };
        let mechanisms = String::from_utf8_lossy(start.mechanisms.as_bytes()).into_owned();
        if !mechanisms.split_whitespace().any(|m| m == "PLAIN") {
            return Err(ClientError::NoPlain(mechanisms));
        }
        let mut response = Vec::with_capacity(uri.user.len() + uri.password.len() + 2);
        response.push(0);
        response.extend_from_slice(uri.user.as_bytes());
        response.push(0);
        response.extend_from_slice(uri.password.as_bytes());
        c.send(
            0,
            &Method::ConnectionStartOk(connection::StartOk {
                client_properties: client_properties(name),
                mechanism: ShortString::from_static("PLAIN"),
                response: LongString::from(response),
                locale: ShortString::from_static("en_US"),
            }),
        );
        c.flush().await?;

        let tune = match c.next_method(0).await? {
            Method::ConnectionTune(t) => t,
            other => return Err(ClientError::unexpected("connection.tune", &other)),
        };
        let frame_max = match tune.frame_max {
            0 => DEFAULT_FRAME_MAX,
            n => n,
        };
        c.send(
            0,
            &Method::ConnectionTuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max,
                // The load generator's tasks can be busy for long stretches; heartbeats would only
                // add false alarms. The spec lets the client refuse them.
                heartbeat: 0,
            }),
        );
        c.frame_max = frame_max;
        c.parser.set_frame_max(frame_max);
        c.send(
            0,
            &Method::ConnectionOpen(connection::Open {
                virtual_host: short(&uri.vhost)?,
            }),
        );
        c.flush().await?;
        match c.next_method(0).await? {
            Method::ConnectionOpenOk(_) => {}
            other => return Err(ClientError::unexpected("connection.open-ok", &other)),
        }
        Ok(c)
    }

    pub fn frame_max(&self) -> u32 {
        self.frame_max
    }

    /// From now on, waits on the socket end with [`ClientError::Stopped`] once `stop` is true.
    pub fn set_stop(&mut self, stop: watch::Receiver<bool>) {
        self.stop = Some(stop);
    }

    /// Queues a method frame (written by the next flush).
    pub fn send(&mut self, channel: u16, method: &Method) {
        write_method_frame(&mut self.wbuf, channel, method);
    }

    /// Writes everything queued. While the socket is full, keeps reading what the broker sends
    /// (into the read buffer, parsed later), so neither side can block the other for good.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        while !self.wbuf.is_empty() {
            match self.stream.try_write(&self.wbuf) {
                Ok(0) => return Err(ClientError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.wbuf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let ready = or_stop(
                        &mut self.stop,
                        self.stream.ready(Interest::READABLE | Interest::WRITABLE),
                    )
                    .await??;
                    if ready.is_readable() {
                        self.try_fill()?;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Writes `parts` after whatever is in [`Connection::wbuf`], without copying them: large
    /// messages go out from their templates in one `writev`, so the generator does not spend
    /// a core copying bodies it never changes.
    pub async fn flush_slices(&mut self, parts: &[&[u8]]) -> Result<(), ClientError> {
        self.flush().await?;
        let mut slices: Vec<io::IoSlice<'_>> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
        let mut bufs = &mut slices[..];
        while !bufs.is_empty() {
            match self.stream.try_write_vectored(bufs) {
                Ok(0) => return Err(ClientError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => io::IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let ready = or_stop(
                        &mut self.stop,
                        self.stream.ready(Interest::READABLE | Interest::WRITABLE),
                    )
                    .await??;
                    if ready.is_readable() {
                        self.try_fill()?;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Reads whatever is available without waiting. Returns whether anything was read.
    pub fn try_fill(&mut self) -> Result<bool, ClientError> {
        self.rbuf.reserve(READ_CHUNK);
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => Err(ClientError::Eof),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until at least one more byte has been read (or the stop signal fires).
    pub async fn fill(&mut self) -> Result<(), ClientError> {
        loop {
            or_stop(&mut self.stop, self.stream.readable()).await??;
            if self.try_fill()? {
                return Ok(());
            }
        }
    }

    /// Scans every whole frame read so far into `events`. Broker-initiated closes become
    /// errors (their `close-ok` is queued: flush before dropping the connection).
    pub fn drain(&mut self, events: &mut impl Events) -> Result<(), ClientError> {
        let mut guard = Guard {
            inner: events,
            wbuf: &mut self.wbuf,
        };
        let n = self.parser.parse(&self.rbuf, &mut guard)?;
        self.rbuf.advance(n);
        Ok(())
    }

    /// The next method on `channel` (or on 0 for connection-level ones), skipping heartbeats,
    /// content frames and other channels' methods. For set-up and teardown, not the data path.
    async fn next_method(&mut self, channel: u16) -> Result<Method, ClientError> {
        loop {
            let Some(frame) = decode_frame(&mut self.rbuf, self.frame_max)? else {
                self.fill().await?;
                continue;
            };
            if frame.kind != FrameType::Method {
                continue;
            }
            let method = Method::decode(frame.payload)?;
            if let Err(e) = closing_method(&mut self.wbuf, frame.channel, &method) {
                // Best effort: the close-ok is a courtesy, the error is what matters.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.flush()).await;
                return Err(e);
            }
            if frame.channel == channel || frame.channel == 0 {
                return Ok(method);
            }
        }
    }

    /// Sends `method` and waits for the reply `accept` recognises, ignoring anything else
    /// (deliveries racing a set-up call, `connection.blocked`, ...).
    pub async fn rpc(
        &mut self,
        channel: u16,
        method: Method,
        accept: impl Fn(&Method) -> bool,
    ) -> Result<Method, ClientError> {
        self.send(channel, &method);
        self.flush().await?;
        loop {
            let reply = self.next_method(channel).await?;
            if accept(&reply) {
                return Ok(reply);
            }
        }
    }

    pub async fn open_channel(&mut self, ch: u16) -> Result<(), ClientError> {
        self.rpc(ch, Method::ChannelOpen(channel::Open {}), |m| {
            matches!(m, Method::ChannelOpenOk(_))
        })
        .await?;
        Ok(())
    }

    /// Declares a queue; returns the number of messages it holds.
    pub async fn declare_queue(
        &mut self,
        ch: u16,
        name: &str,
        durable: bool,
        auto_delete: bool,
    ) -> Result<u32, ClientError> {
        let m = Method::QueueDeclare(queue::Declare {
            queue: short(name)?,
            passive: false,
            durable,
            exclusive: false,
            auto_delete,
            no_wait: false,
            arguments: FieldTable::new(),
        });
        match self
            .rpc(ch, m, |m| matches!(m, Method::QueueDeclareOk(_)))
            .await?
        {
            Method::QueueDeclareOk(ok) => Ok(ok.message_count),
            other => Err(ClientError::unexpected("queue.declare-ok", &other)),
        }
    }

    pub async fn declare_exchange(
        &mut self,
        ch: u16,
        name: &str,
        kind: &str,
        durable: bool,
    ) -> Result<(), ClientError> {
        let m = Method::ExchangeDeclare(exchange::Declare {
            exchange: short(name)?,
            kind: short(kind)?,
            passive: false,
            durable,
            auto_delete: false,
            internal: false,
            no_wait: false,
            arguments: FieldTable::new(),
        });
        self.rpc(ch, m, |m| matches!(m, Method::ExchangeDeclareOk(_)))
            .await?;
        Ok(())
    }

    pub async fn bind_queue(
        &mut self,
        ch: u16,
        queue: &str,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), ClientError> {
        let m = Method::QueueBind(queue::Bind {
            queue: short(queue)?,
            exchange: short(exchange)?,
            routing_key: short(routing_key)?,
            no_wait: false,
            arguments: FieldTable::new(),
        });
        self.rpc(ch, m, |m| matches!(m, Method::QueueBindOk(_)))
            .await?;
        Ok(())
    }

    pub async fn delete_queue(&mut self, ch: u16, name: &str) -> Result<(), ClientError> {
        let m = Method::QueueDelete(queue::Delete {
            queue: short(name)?,
            if_unused: false,
            if_empty: false,
            no_wait: false,
        });
        self.rpc(ch, m, |m| matches!(m, Method::QueueDeleteOk(_)))
            .await?;
        Ok(())
    }

    pub async fn delete_exchange(&mut self, ch: u16, name: &str) -> Result<(), ClientError> {
        let m = Method::ExchangeDelete(exchange::Delete {
            exchange: short(name)?,
            if_unused: false,
            no_wait: false,
        });
        self.rpc(ch, m, |m| matches!(m, Method::ExchangeDeleteOk(_)))
            .await?;
        Ok(())
    }

    pub async fn qos(&mut self, ch: u16, prefetch_count: u16) -> Result<(), ClientError> {
        let m = Method::BasicQos(basic::Qos {
            prefetch_size: 0,
            prefetch_count,
            global: false,
        });
        self.rpc(ch, m, |m| matches!(m, Method::BasicQosOk(_)))
            .await?;
        Ok(())
    }

    pub async fn consume(
        &mut self,
        ch: u16,
        queue: &str,
        consumer_tag: &str,
        no_ack: bool,
    ) -> Result<(), ClientError> {
        let m = Method::BasicConsume(basic::Consume {
            queue: short(queue)?,
            consumer_tag: short(consumer_tag)?,
            no_local: false,
            no_ack,
            exclusive: false,
            no_wait: false,
            arguments: FieldTable::new(),
        });
        self.rpc(ch, m, |m| matches!(m, Method::BasicConsumeOk(_)))
            .await?;
        Ok(())
    }

    pub async fn confirm_select(&mut self, ch: u16) -> Result<(), ClientError> {
        let m = Method::ConfirmSelect(confirm::Select { nowait: false });
        self.rpc(ch, m, |m| matches!(m, Method::ConfirmSelectOk(_)))
            .await?;
        Ok(())
    }

    /// Closes gracefully: flushes what is queued, sends `connection.close` and waits (briefly)
    /// for `close-ok`. Not interrupted by the stop signal.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.stop = None;
        self.send(
            0,
            &Method::ConnectionClose(connection::Close {
                reply_code: constants::REPLY_SUCCESS,
                reply_text: ShortString::from_static("warren-perf done"),
                class_id: 0,
                method_id: 0,
            }),
        );
        let wait = async {
            self.flush().await?;
            loop {
                let Some(frame) = decode_frame(&mut self.rbuf, self.frame_max)? else {
                    self.fill().await?;
                    continue;
                };
                if frame.kind != FrameType::Method || frame.channel != 0 {
                    continue;
                }
                match Method::decode(frame.payload)? {
                    Method::ConnectionCloseOk(_) => return Ok(()),
                    // Both sides closed at once: the spec says to treat theirs as our close-ok.
                    Method::ConnectionClose(_) => return Ok(()),
                    _ => continue,
                }
            }
        };
        match tokio::time::timeout(CLOSE_TIMEOUT, wait).await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }

    /// Writes what is queued (typically a `close-ok` after the broker closed us), briefly and
    /// ignoring failure, then drops the connection.
    pub async fn abandon(mut self) {
        self.stop = None;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.flush()).await;
    }
}

fn client_properties(name: &str) -> FieldTable {
    let capabilities = FieldTable(
        [
            "publisher_confirms",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "exchange_exchange_bindings",
            "authentication_failure_close",
        ]
        .into_iter()
        .map(|c| (ShortString::from_static(c), FieldValue::Bool(true)))
        .collect(),
    );
    let mut t = FieldTable::new();
    let s = |v: &str| FieldValue::LongString(LongString::from(v));
    t.insert(ShortString::from_static("product"), s("warren-perf"));
    t.insert(
        ShortString::from_static("version"),
        s(env!("CARGO_PKG_VERSION")),
    );
    t.insert(ShortString::from_static("platform"), s("Rust"));
    t.insert(ShortString::from_static("connection_name"), s(name));
    t.insert(
        ShortString::from_static("capabilities"),
        FieldValue::Table(capabilities),
    );
    t
}

/// One message as it goes on the wire: `basic.publish`, content header, body frame(s). The
/// body's first eight bytes (from [`Self::timestamp_offset`]) are overwritten per message.
#[derive(Debug, Clone)]
pub struct MessageTemplate {
    pub bytes: Vec<u8>,
    /// Where the body starts in `bytes`, if the first body frame is at least 8 bytes long.
    pub timestamp_offset: Option<usize>,
}

impl MessageTemplate {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        channel: u16,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        raw_properties: &[u8],
        body: &[u8],
        frame_max: u32,
    ) -> Result<Self, ClientError> {
        let mut buf = BytesMut::new();
        write_method_frame(
            &mut buf,
            channel,
            &Method::BasicPublish(basic::Publish {
                exchange: short(exchange)?,
                routing_key: short(routing_key)?,
                mandatory,
                immediate: false,
            }),
        );
        write_content_header(
            &mut buf,
            channel,
            CLASS_BASIC,
            body.len() as u64,
            raw_properties,
        );
        let body_start = buf.len() + warren_codec::frame::FRAME_HEADER_SIZE;
        write_body(&mut buf, channel, body, frame_max);
        let first_frame_len = (frame_max as usize)
            .saturating_sub(warren_codec::frame::FRAME_OVERHEAD)
            .min(body.len());
        let timestamp_offset = (first_frame_len >= 8).then_some(body_start);
        Ok(MessageTemplate {
            bytes: buf.to_vec(),
            timestamp_offset,
        })
    }
}

/// Queues a `basic.ack`.
pub fn write_ack(buf: &mut BytesMut, channel: u16, delivery_tag: u64, multiple: bool) {
    write_method_frame(
        buf,
        channel,
        &Method::BasicAck(basic::Ack {
            delivery_tag,
            multiple,
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Seen(Vec<(u64, Option<u64>)>);
    impl Events for Seen {
        fn deliver(&mut self, tag: u64, ts: Option<u64>) {
            self.0.push((tag, ts));
        }
        fn confirm(&mut self, _: u64, _: bool, _: bool) {}
        fn returned(&mut self) {}
        fn method(&mut self, _: u16, _: Method) -> Result<(), ClientError> {
            Ok(())
        }
    }

    #[test]
    fn template_round_trips_through_the_parser_as_a_delivery() {
        // A publish template, re-headed as a deliver, parses back with its timestamp.
        let body = [0u8; 16];
        let t = MessageTemplate::new(1, "", "q", false, &[0, 0], &body, 4096).unwrap();
        let off = t.timestamp_offset.unwrap();
        let mut bytes = t.bytes.clone();
        bytes[off..off + 8].copy_from_slice(&99u64.to_le_bytes());
        // Swap the publish method frame for a deliver.
        let publish_len = 7 + u32::from_be_bytes(bytes[3..7].try_into().unwrap()) as usize + 1;
        let mut buf = BytesMut::new();
        write_method_frame(
            &mut buf,
            1,
            &Method::BasicDeliver(basic::Deliver {
                consumer_tag: ShortString::from_static("c"),
                delivery_tag: 4,
                redelivered: false,
                exchange: ShortString::empty(),
                routing_key: ShortString::from_static("q"),
            }),
        );
        buf.extend_from_slice(&bytes[publish_len..]);
        let mut seen = Seen::default();
        FrameParser::new(4096).parse(&buf, &mut seen).unwrap();
        assert_eq!(seen.0, vec![(4, Some(99))]);
    }

    #[test]
    fn small_bodies_carry_no_timestamp() {
        let t = MessageTemplate::new(1, "", "q", false, &[0, 0], &[0; 4], 4096).unwrap();
        assert_eq!(t.timestamp_offset, None);
    }

    #[test]
    fn broker_close_becomes_an_error_and_queues_close_ok() {
        let mut wbuf = BytesMut::new();
        let close = Method::ChannelClose(channel::Close {
            reply_code: 404,
            reply_text: ShortString::from_static("NOT_FOUND - no queue 'x'"),
            class_id: 60,
            method_id: 20,
        });
        let err = closing_method(&mut wbuf, 1, &close).unwrap_err();
        assert!(matches!(err, ClientError::ChannelClosed { code: 404, .. }));
        assert!(err.to_string().contains("NOT_FOUND - no queue 'x'"));
        let frame = decode_frame(&mut wbuf, 0).unwrap().unwrap();
        assert!(matches!(
            Method::decode(frame.payload).unwrap(),
            Method::ChannelCloseOk(_)
        ));
    }
}
