//! Resource alarms: a raised alarm blocks publishing connections (`connection.blocked`), not
//! consuming ones, and clearing it resumes them (`connection.unblocked`).
//!
//! The disk alarm is driven for real: the data directory's free space is compared with a
//! limit no disk can meet, and removing the directory (nothing to measure) clears it.

mod common;

use std::time::Duration;

use common::raw::{Handshake, RawClient};
use common::*;
use warren_codec::{basic, queue, FieldTable, FieldValue, FrameType, Method, ShortString};
use warren_server::alarm::{AlarmConfig, Watermark};
use warren_server::ServerConfig;

fn disk_alarm_config(dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        alarms: AlarmConfig {
            memory_high_watermark: Watermark::Absolute(u64::MAX),
            disk_free_limit: u64::MAX,
            data_dir: Some(dir.to_path_buf()),
            interval: Duration::from_millis(20),
        },
        ..ServerConfig::default()
    }
}

fn blocked_capable() -> Handshake {
    Handshake {
        client_properties: FieldTable::from([(
            "capabilities",
            FieldValue::Table(FieldTable::from([(
                "connection.blocked",
                FieldValue::Bool(true),
            )])),
        )]),
        ..Handshake::default()
    }
}

async fn publish_raw(c: &mut RawClient, queue: &str, body: &[u8]) {
    c.send_method(
        1,
        basic::Publish {
            exchange: ShortString::empty(),
            routing_key: ShortString::try_from(queue).unwrap(),
            mandatory: false,
            immediate: false,
        },
    )
    .await;
    c.send_content_header(1, body.len() as u64).await;
    c.send_frame(FrameType::Body, 1, body).await;
}

fn ready_count(broker: &TestBroker, queue: &str) -> u32 {
    broker
        .broker()
        .vhost("/")
        .and_then(|v| v.queue(queue).ok())
        .map_or(0, |q| q.counts().messages)
}

#[tokio::test]
async fn disk_alarm_blocks_a_publisher_until_it_clears() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let broker = TestBroker::with_config(disk_alarm_config(&data)).await;

    let mut c = RawClient::open_with(broker.addr(), blocked_capable()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        queue::Declare {
            queue: ShortString::from_static("alarmed"),
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(
        c.read_method().await,
        Some((1, Method::QueueDeclareOk(_)))
    ));

    // The first publish is taken; then the connection is told it is blocked.
    // RabbitMQ blocks a connection that publishes while an alarm is raised: let the monitor
    // take its first sample before publishing.
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish_raw(&mut c, "alarmed", b"one").await;
    match c.read_method().await {
        Some((0, Method::ConnectionBlocked(b))) => assert_eq!(b.reason.as_str(), "low on disk"),
        other => panic!("expected connection.blocked, got {other:?}"),
    }
    // While blocked nothing more is read from this connection.
    publish_raw(&mut c, "alarmed", b"two").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ready_count(&broker, "alarmed"), 1);

    // Clearing the alarm unblocks the connection and the held publish goes through.
    std::fs::remove_dir(&data).unwrap();
    assert!(matches!(
        c.read_method().await,
        Some((0, Method::ConnectionUnblocked(_)))
    ));
    eventually(|| ready_count(&broker, "alarmed") == 2).await;
}

#[tokio::test]
async fn alarm_does_not_block_a_connection_that_does_not_publish() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::with_config(disk_alarm_config(dir.path())).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_conn, ch) = broker.channel().await;
    // Declares and gets are still served while the alarm is raised.
    let q = temp_queue(&ch).await;
    assert!(get(&ch, &q, true).await.is_none());
}

/// Issue 12, fault 1: a publisher in the middle of a large message is blocked part-way (not
/// read to the end), and when its client leaves while blocked, the connection ends and lets
/// go of the partial body although nothing is read from it.
#[tokio::test]
async fn a_blocked_publisher_mid_message_is_not_read_on_and_is_let_go_when_its_client_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let broker = TestBroker::with_config(disk_alarm_config(&data)).await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        basic::Publish {
            exchange: ShortString::empty(),
            routing_key: ShortString::from_static("anywhere"),
            mandatory: false,
            immediate: false,
        },
    )
    .await;
    let size: usize = 15 * 1024 * 1024;
    c.send_content_header(1, size as u64).await;
    // The whole body but one byte, in frame_max-sized frames, from a task of its own: the
    // broker must stop taking it long before the end.
    let chunk = vec![7u8; c.frame_max as usize - 8];
    let sender = tokio::spawn(async move {
        let mut left = size - 1;
        while left > 0 {
            let n = left.min(chunk.len());
            c.send_frame(FrameType::Body, 1, &chunk[..n]).await;
            left -= n;
        }
        c
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !sender.is_finished(),
        "the broker read a 15 MiB body through a raised alarm"
    );
    assert_eq!(broker.broker().connections().len(), 1);
    // The client leaves (its task and socket are dropped) while the alarm still stands.
    sender.abort();
    let _ = sender.await;
    let start = std::time::Instant::now();
    while !broker.broker().connections().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "a blocked connection whose client left was kept"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
