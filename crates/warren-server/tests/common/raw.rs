//! A raw-frame AMQP client built on `warren_codec`, for protocol violations that a real
//! client library refuses to commit. Every read has a timeout, so a test never hangs.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_codec::{
    channel, connection, frame, write_method_frame, FieldTable, FieldValue, Frame, FrameType,
    LongString, Method, ShortString,
};

use super::WAIT;

/// What the client says in `start-ok` and `tune-ok`.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub mechanism: &'static str,
    pub response: Vec<u8>,
    pub vhost: String,
    pub heartbeat: u16,
    /// None: accept the server's.
    pub frame_max: Option<u32>,
    /// None: accept the server's.
    pub channel_max: Option<u16>,
    pub client_properties: FieldTable,
}

impl Default for Handshake {
    fn default() -> Self {
        Handshake {
            mechanism: "PLAIN",
            response: plain("guest", "guest"),
            vhost: "/".into(),
            heartbeat: 0,
            frame_max: None,
            channel_max: None,
            // As pika and lapin do: ask for connection.close on a failed login.
            client_properties: FieldTable::from([(
                "capabilities",
                FieldValue::Table(FieldTable::from([
                    ("authentication_failure_close", FieldValue::Bool(true)),
                    ("consumer_cancel_notify", FieldValue::Bool(true)),
                ])),
            )]),
        }
    }
}

/// A SASL PLAIN response.
pub fn plain(user: &str, password: &str) -> Vec<u8> {
    format!("\0{user}\0{password}").into_bytes()
}

/// An AMQPLAIN response: a field table without its length prefix.
pub fn amqplain(user: &str, password: &str) -> Vec<u8> {
    let table = FieldTable::from([
        ("LOGIN", FieldValue::LongString(LongString::from(user))),
        (
            "PASSWORD",
            FieldValue::LongString(LongString::from(password)),
        ),
    ]);
    let mut buf = BytesMut::new();
    table.encode_fields(&mut buf);
    buf.to_vec()
}

/// The outcome of a handshake attempt.
#[derive(Debug)]
pub enum Opened {
    /// `connection.open-ok` arrived; the values are what was negotiated.
    Open { frame_max: u32, channel_max: u16 },
    /// The server sent `connection.close` (reply code, class, method).
    Closed(u16, u16, u16),
    /// The socket closed without a `connection.close`.
    Dropped,
}

pub struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
    /// The frame size limit for decoding what the server sends.
    pub frame_max: u32,
}

impl RawClient {
    /// A TCP connection; nothing sent yet.
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        RawClient {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            frame_max: 0,
        }
    }

    /// Connected and opened as guest on `/`, ready for `channel.open`.
    pub async fn open(addr: SocketAddr) -> Self {
        Self::open_with(addr, Handshake::default()).await
    }

    pub async fn open_with(addr: SocketAddr, hs: Handshake) -> Self {
        let mut c = Self::connect(addr).await;
        match c.handshake(hs).await {
            Opened::Open { .. } => c,
            other => panic!("handshake failed: {other:?}"),
        }
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    pub async fn send_method(&mut self, channel: u16, method: impl Into<Method>) {
        let mut buf = BytesMut::new();
        write_method_frame(&mut buf, channel, &method.into());
        self.send_bytes(&buf).await;
    }

    pub async fn send_frame(&mut self, kind: FrameType, channel: u16, payload: &[u8]) {
        let mut buf = BytesMut::new();
        frame::write_frame(&mut buf, kind, channel, payload);
        self.send_bytes(&buf).await;
    }

    /// A content header frame for class 60 with no properties.
    pub async fn send_content_header(&mut self, channel: u16, body_size: u64) {
        let mut buf = BytesMut::new();
        frame::write_content_header(&mut buf, channel, 60, body_size, &[0, 0]);
        self.send_bytes(&buf).await;
    }

    /// The next frame, or None if the socket closed (or the wait ran out).
    pub async fn read_frame_within(&mut self, wait: Duration) -> Option<Frame> {
        tokio::time::timeout(wait, async {
            loop {
                if let Some(f) = frame::decode_frame(&mut self.buf, self.frame_max)
                    .expect("server sent a malformed frame")
                {
                    return Some(f);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    pub async fn read_frame(&mut self) -> Option<Frame> {
        self.read_frame_within(WAIT).await
    }

    /// The next method frame (heartbeats skipped): (channel, method).
    pub async fn read_method(&mut self) -> Option<(u16, Method)> {
        loop {
            let f = self.read_frame().await?;
            match f.kind {
                FrameType::Heartbeat => continue,
                FrameType::Method => {
                    return Some((f.channel, Method::decode(f.payload).expect("method")))
                }
                _ => panic!("expected a method frame, got {f:?}"),
            }
        }
    }

    /// Everything the server sends until the socket closes, or None if it stays open.
    pub async fn read_to_eof(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let mut all = self.buf.split().to_vec();
        let r = tokio::time::timeout(wait, async {
            let mut chunk = [0u8; 4096];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => all.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        r.ok().map(|_| all)
    }

    /// Protocol header, start-ok, tune-ok, open.
    pub async fn handshake(&mut self, hs: Handshake) -> Opened {
        self.send_bytes(frame::PROTOCOL_HEADER).await;
        match self.read_method().await {
            Some((0, Method::ConnectionStart(_))) => {}
            other => panic!("expected connection.start, got {other:?}"),
        }
        self.send_method(
            0,
            connection::StartOk {
                client_properties: hs.client_properties.clone(),
                mechanism: ShortString::try_from(hs.mechanism).expect("mechanism"),
                response: LongString::from(hs.response.clone()),
                locale: ShortString::from_static("en_US"),
            },
        )
        .await;
        let tune = match self.read_method().await {
            Some((0, Method::ConnectionTune(t))) => t,
            Some((0, Method::ConnectionClose(c))) => {
                return Opened::Closed(c.reply_code, c.class_id, c.method_id)
            }
            None => return Opened::Dropped,
            other => panic!("expected connection.tune, got {other:?}"),
        };
        let frame_max = hs.frame_max.unwrap_or(tune.frame_max);
        let channel_max = hs.channel_max.unwrap_or(tune.channel_max);
        self.send_method(
            0,
            connection::TuneOk {
                channel_max,
                frame_max,
                heartbeat: hs.heartbeat,
            },
        )
        .await;
        self.send_method(
            0,
            connection::Open {
                virtual_host: ShortString::try_from(hs.vhost.as_str()).expect("vhost"),
            },
        )
        .await;
        match self.read_method().await {
            Some((0, Method::ConnectionOpenOk(_))) => {
                self.frame_max = frame_max;
                Opened::Open {
                    frame_max,
                    channel_max,
                }
            }
            Some((0, Method::ConnectionClose(c))) => {
                Opened::Closed(c.reply_code, c.class_id, c.method_id)
            }
            None => Opened::Dropped,
            other => panic!("expected connection.open-ok, got {other:?}"),
        }
    }

    /// Opens channel `id` and waits for open-ok.
    pub async fn open_channel(&mut self, id: u16) {
        self.send_method(id, channel::Open {}).await;
        match self.read_method().await {
            Some((ch, Method::ChannelOpenOk(_))) if ch == id => {}
            other => panic!("expected channel.open-ok on {id}, got {other:?}"),
        }
    }

    /// Waits for `connection.close` (skipping anything else), answers close-ok, and returns
    /// (reply code, class id, method id).
    pub async fn expect_close(&mut self) -> (u16, u16, u16) {
        let close = loop {
            match self.read_method().await {
                Some((0, Method::ConnectionClose(c))) => break c,
                Some(_) => continue,
                None => panic!("connection ended without connection.close"),
            }
        };
        self.send_method(0, connection::CloseOk {}).await;
        (close.reply_code, close.class_id, close.method_id)
    }

    /// Waits for `channel.close` on `id` and returns (reply code, class id, method id).
    pub async fn expect_channel_close(&mut self, id: u16) -> (u16, u16, u16) {
        loop {
            match self.read_method().await {
                Some((ch, Method::ChannelClose(c))) if ch == id => {
                    return (c.reply_code, c.class_id, c.method_id)
                }
                Some((0, Method::ConnectionClose(c))) => panic!(
                    "expected channel.close, got connection.close {} {}",
                    c.reply_code, c.reply_text
                ),
                Some(_) => continue,
                None => panic!("connection ended without channel.close"),
            }
        }
    }
}
