//! Frame-level protocol violations, committed with the raw client (a real client library
//! refuses to): each closes the connection with the exact hard-error code RabbitMQ uses.

mod common;

use bytes::BytesMut;
use common::raw::{Handshake, Opened, RawClient};
use common::*;
use warren_codec::{basic, channel, frame, queue, FieldTable, FrameType, Method, ShortString};
use warren_server::ServerConfig;

fn s(v: &str) -> ShortString {
    ShortString::try_from(v).expect("shortstr")
}

fn publish_to(queue: &str) -> basic::Publish {
    basic::Publish {
        exchange: ShortString::empty(),
        routing_key: s(queue),
        mandatory: false,
        immediate: false,
    }
}

#[tokio::test]
async fn frame_larger_than_frame_max_closes_connection_with_501() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open_with(
        broker.addr(),
        Handshake {
            frame_max: Some(4096),
            ..Handshake::default()
        },
    )
    .await;
    c.open_channel(1).await;
    c.send_frame(FrameType::Body, 1, &[0u8; 5000]).await;
    assert_eq!(c.expect_close().await, (501, 0, 0));
}

/// RabbitMQ accepts a frame payload of up to `frame_max` bytes (a frame 8 bytes longer), and
/// pika fills body frames to exactly that: such a message must arrive whole.
#[tokio::test]
async fn body_frames_with_a_payload_of_frame_max_are_accepted() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open_with(
        broker.addr(),
        Handshake {
            frame_max: Some(4096),
            ..Handshake::default()
        },
    )
    .await;
    c.open_channel(1).await;
    c.send_method(
        1,
        queue::Declare {
            queue: s("fudge"),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            no_wait: false,
            arguments: FieldTable::new(),
        },
    )
    .await;
    assert!(matches!(
        c.read_method().await,
        Some((1, Method::QueueDeclareOk(_)))
    ));
    c.send_method(1, publish_to("fudge")).await;
    c.send_content_header(1, 8192).await;
    c.send_frame(FrameType::Body, 1, &[7u8; 4096]).await;
    c.send_frame(FrameType::Body, 1, &[7u8; 4096]).await;
    c.send_method(
        1,
        basic::Get {
            queue: s("fudge"),
            no_ack: true,
        },
    )
    .await;
    let got = c.read_method().await;
    assert!(matches!(got, Some((1, Method::BasicGetOk(_)))), "{got:?}");
    let header = c.read_frame().await.expect("content header");
    assert_eq!(header.kind, FrameType::Header);
    let mut body = 0;
    while body < 8192 {
        let f = c.read_frame().await.expect("body frame");
        assert_eq!(f.kind, FrameType::Body);
        body += f.payload.len();
    }
    assert_eq!(body, 8192, "the whole message arrived");
    // One byte more than that is a frame error.
    c.send_method(1, publish_to("fudge")).await;
    c.send_content_header(1, 4097).await;
    c.send_frame(FrameType::Body, 1, &[7u8; 4097]).await;
    assert_eq!(c.expect_close().await.0, 501);
}

#[tokio::test]
async fn heartbeat_with_a_payload_closes_connection_with_501() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.send_frame(FrameType::Heartbeat, 0, &[1, 2, 3]).await;
    assert_eq!(c.expect_close().await, (501, 0, 0));
}

#[tokio::test]
async fn content_header_with_a_weight_closes_connection_with_505() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(1, publish_to("anywhere")).await;
    // class 60, weight 1, body size 0, no properties.
    let mut header = vec![0, 60, 0, 1];
    header.extend_from_slice(&0u64.to_be_bytes());
    header.extend_from_slice(&[0, 0]);
    c.send_frame(FrameType::Header, 1, &header).await;
    assert_eq!(c.expect_close().await.0, 505);
}

#[tokio::test]
async fn server_closes_the_socket_once_its_close_is_answered() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.send_frame(FrameType::Heartbeat, 1, &[]).await;
    assert_eq!(c.expect_close().await.0, 505);
    // close-ok was sent by expect_close: the server, having received it, closes the socket.
    assert!(c.read_to_eof(WAIT).await.is_some());
}

#[tokio::test]
async fn bad_frame_end_closes_connection_with_501() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    let mut buf = BytesMut::new();
    warren_codec::write_method_frame(&mut buf, 1, &Method::from(channel::Flow { active: true }));
    let last = buf.len() - 1;
    buf[last] = 0;
    c.send_bytes(&buf).await;
    assert_eq!(c.expect_close().await, (501, 0, 0));
}

#[tokio::test]
async fn unknown_frame_type_closes_connection_with_501() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.send_bytes(&[7, 0, 0, 0, 0, 0, 0, frame::FRAME_END]).await;
    assert_eq!(c.expect_close().await, (501, 0, 0));
}

#[tokio::test]
async fn unknown_method_id_closes_connection_with_503() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    // basic (60), method 999.
    c.send_frame(FrameType::Method, 1, &[0, 60, 0x03, 0xE7])
        .await;
    assert_eq!(c.expect_close().await.0, 503);
}

#[tokio::test]
async fn unknown_class_id_closes_connection_with_503() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_frame(FrameType::Method, 1, &[0x03, 0xE7, 0, 10])
        .await;
    assert_eq!(c.expect_close().await.0, 503);
}

#[tokio::test]
async fn method_on_unopened_channel_closes_connection_with_504() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.send_method(
        5,
        queue::Declare {
            queue: s("q"),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            no_wait: false,
            arguments: FieldTable::new(),
        },
    )
    .await;
    assert_eq!(c.expect_close().await, (504, 50, 10));
}

#[tokio::test]
async fn channel_close_on_unopened_channel_closes_connection_with_504() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.send_method(
        3,
        channel::Close {
            reply_code: 200,
            reply_text: s("bye"),
            class_id: 0,
            method_id: 0,
        },
    )
    .await;
    assert_eq!(c.expect_close().await, (504, 20, 40));
}

#[tokio::test]
async fn second_channel_open_on_same_id_closes_connection_with_504() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(1, channel::Open {}).await;
    assert_eq!(c.expect_close().await, (504, 20, 10));
}

#[tokio::test]
async fn channel_method_on_channel_0_closes_connection_with_504() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.send_method(0, channel::Open {}).await;
    assert_eq!(c.expect_close().await, (504, 20, 10));
}

#[tokio::test]
async fn queue_method_on_channel_0_closes_connection_with_504() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.send_method(
        0,
        basic::Get {
            queue: s("q"),
            no_ack: true,
        },
    )
    .await;
    assert_eq!(c.expect_close().await, (504, 60, 70));
}

#[tokio::test]
async fn content_header_without_publish_closes_connection_with_505() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_content_header(1, 0).await;
    assert_eq!(c.expect_close().await, (505, 0, 0));
}

#[tokio::test]
async fn content_body_without_publish_closes_connection_with_505() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_frame(FrameType::Body, 1, b"abc").await;
    assert_eq!(c.expect_close().await, (505, 0, 0));
}

#[tokio::test]
async fn method_instead_of_content_header_closes_connection_with_505() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(1, publish_to("q")).await;
    c.send_method(1, channel::Flow { active: true }).await;
    assert_eq!(c.expect_close().await, (505, 60, 40));
}

#[tokio::test]
async fn content_header_on_channel_0_closes_connection_with_505() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.send_content_header(0, 0).await;
    assert_eq!(c.expect_close().await, (505, 0, 0));
}

#[tokio::test]
async fn heartbeat_on_a_channel_closes_connection_with_505() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_frame(FrameType::Heartbeat, 1, &[]).await;
    assert_eq!(c.expect_close().await, (505, 0, 0));
}

#[tokio::test]
async fn publish_with_immediate_closes_connection_with_540() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        basic::Publish {
            immediate: true,
            ..publish_to("q")
        },
    )
    .await;
    c.send_content_header(1, 0).await;
    assert_eq!(c.expect_close().await, (540, 60, 40));
}

#[tokio::test]
async fn opening_more_channels_than_channel_max_closes_connection_with_530() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::connect(broker.addr()).await;
    let r = c
        .handshake(Handshake {
            channel_max: Some(2),
            ..Handshake::default()
        })
        .await;
    assert!(matches!(r, Opened::Open { channel_max: 2, .. }), "{r:?}");
    c.open_channel(1).await;
    c.open_channel(2).await;
    c.send_method(3, channel::Open {}).await;
    assert_eq!(c.expect_close().await, (530, 0, 0));
}

#[tokio::test]
async fn channel_max_counts_open_channels_not_ids() {
    // As RabbitMQ: the limit is on how many channels are open at once.
    let broker = TestBroker::start().await;
    let mut c = RawClient::open_with(
        broker.addr(),
        Handshake {
            channel_max: Some(2),
            ..Handshake::default()
        },
    )
    .await;
    c.open_channel(1).await;
    c.open_channel(5).await;
    c.send_method(
        1,
        channel::Close {
            reply_code: 200,
            reply_text: s("bye"),
            class_id: 0,
            method_id: 0,
        },
    )
    .await;
    assert!(matches!(
        c.read_method().await,
        Some((1, Method::ChannelCloseOk(_)))
    ));
    c.open_channel(7).await;
}

#[tokio::test]
async fn channel_max_from_server_config_is_offered_in_tune() {
    let broker = TestBroker::with_config(ServerConfig {
        channel_max: 3,
        ..ServerConfig::default()
    })
    .await;
    let mut c = RawClient::connect(broker.addr()).await;
    let r = c.handshake(Handshake::default()).await;
    assert!(matches!(r, Opened::Open { channel_max: 3, .. }), "{r:?}");
    for id in 1..=3 {
        c.open_channel(id).await;
    }
    c.send_method(4, channel::Open {}).await;
    assert_eq!(c.expect_close().await.0, 530);
}

#[tokio::test]
async fn channel_flow_active_false_closes_connection_with_540() {
    // As RabbitMQ: clients cannot pause deliveries with channel.flow; active=true is answered.
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(1, channel::Flow { active: true }).await;
    match c.read_method().await {
        Some((1, Method::ChannelFlowOk(ok))) => assert!(ok.active),
        other => panic!("expected flow-ok, got {other:?}"),
    }
    c.send_method(1, channel::Flow { active: false }).await;
    assert_eq!(c.expect_close().await, (540, 20, 20));
}

#[tokio::test]
async fn body_larger_than_declared_size_closes_connection_with_505() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(1, publish_to("q")).await;
    c.send_content_header(1, 2).await;
    c.send_frame(FrameType::Body, 1, b"abc").await;
    assert_eq!(c.expect_close().await.0, 505);
}

#[tokio::test]
async fn handshake_that_never_completes_is_dropped_after_the_timeout() {
    let broker = TestBroker::with_config(ServerConfig {
        handshake_timeout: std::time::Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let mut c = RawClient::connect(broker.addr()).await;
    c.send_bytes(frame::PROTOCOL_HEADER).await;
    // connection.start arrives, then nothing more is sent: the server gives up.
    let got = c.read_to_eof(WAIT).await.expect("socket closed");
    assert!(!got.is_empty());
}

#[tokio::test]
async fn frames_after_a_channel_error_are_discarded_until_close_ok() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        basic::Get {
            queue: s("no-such-queue"),
            no_ack: true,
        },
    )
    .await;
    assert_eq!(c.expect_channel_close(1).await, (404, 60, 70));
    // Ignored: the channel is closing.
    c.send_method(
        1,
        basic::Get {
            queue: s("no-such-queue"),
            no_ack: true,
        },
    )
    .await;
    c.send_method(1, channel::CloseOk {}).await;
    c.open_channel(1).await;
}

/// A header table nested `depth` levels deep through arrays (5 bytes a level: the cheapest
/// nesting a client can send).
fn deeply_nested_headers(depth: usize) -> Vec<u8> {
    let mut value = vec![b'A', 0, 0, 0, 0];
    for _ in 1..depth {
        let mut outer = vec![b'A'];
        outer.extend_from_slice(&(value.len() as u32).to_be_bytes());
        outer.extend_from_slice(&value);
        value = outer;
    }
    let mut table = vec![1, b'h'];
    table.extend_from_slice(&value);
    let mut props = 0x2000u16.to_be_bytes().to_vec(); // headers present
    props.extend_from_slice(&(table.len() as u32).to_be_bytes());
    props.extend_from_slice(&table);
    props
}

#[tokio::test]
async fn deeply_nested_header_tables_are_refused_without_crashing_the_broker() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        basic::Publish {
            exchange: ShortString::from_static(""),
            routing_key: ShortString::from_static("nowhere"),
            mandatory: false,
            immediate: false,
        },
    )
    .await;
    // ~25,000 levels in one 128 KB frame: decoded by recursion, this would overflow a worker
    // thread's stack and abort the whole broker.
    let mut buf = BytesMut::new();
    frame::write_content_header(&mut buf, 1, 60, 0, &deeply_nested_headers(25_000));
    c.send_bytes(&buf).await;
    let (code, _, _) = c.expect_close().await;
    assert_eq!(code, 502, "a syntax error closes the connection");
    // The broker is still there for everyone else.
    let (conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    publish(&ch, "", &q, b"still up").await;
    assert!(get(&ch, &q, true).await.is_some());
    drop(conn);
}

#[tokio::test]
async fn moderately_nested_header_tables_are_accepted() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        queue::Declare {
            queue: ShortString::from_static("nested"),
            ..Default::default()
        },
    )
    .await;
    let _ = c.read_method().await;
    c.send_method(
        1,
        basic::Publish {
            exchange: ShortString::from_static(""),
            routing_key: ShortString::from_static("nested"),
            mandatory: false,
            immediate: false,
        },
    )
    .await;
    let mut buf = BytesMut::new();
    frame::write_content_header(&mut buf, 1, 60, 0, &deeply_nested_headers(32));
    c.send_bytes(&buf).await;
    let (_conn, ch) = broker.channel().await;
    let mut queued = 0;
    for _ in 0..200 {
        queued = queue_counts(&ch, "nested").await.0;
        if queued == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(queued, 1, "the message with 32 levels of nesting is queued");
}
