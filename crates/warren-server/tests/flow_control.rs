//! Flow control paces publishers to consumers that are taking messages, never to a consumer
//! that has stopped (issue 12, fault 3): the backlog pages to disk instead.

mod common;

use std::time::{Duration, Instant};

use common::*;
use lapin::options::{BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions};

/// A consumer at its prefetch that never acks, behind a queue deep enough to page: each
/// batch a publisher sends used to wait 20 ms for it, so 500 publishes sent one at a time
/// (each waiting for its confirm, so each is a batch of its own) took 10 s or more. Now the
/// consumer is found stuck once and its publishers are not paced again until it moves.
#[tokio::test]
async fn a_stuck_consumer_does_not_pace_its_publishers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::start_durable(dir.path()).await;
    let (_cconn, cch) = broker.channel().await;
    within(cch.queue_declare("stuck", QueueDeclareOptions::default(), Default::default()))
        .await
        .expect("declare");
    within(cch.basic_qos(10, BasicQosOptions::default()))
        .await
        .expect("qos");
    // Kept alive and never read from: ten deliveries, never acked.
    let _consumer = consume(&cch, "stuck", false).await;

    let (_pconn, pch) = broker.channel().await;
    within(pch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .expect("confirms");
    // Past the queue's memory budget (half of 32 MiB, after the ten delivered): the backlog
    // pages, flow control is on.
    let big = vec![5u8; 1 << 20];
    for _ in 0..40 {
        publish(&pch, "", "stuck", &big).await;
    }
    let start = Instant::now();
    for _ in 0..500 {
        let confirm = within(pch.basic_publish(
            "",
            "stuck",
            Default::default(),
            b"small",
            Default::default(),
        ))
        .await
        .expect("publish");
        within(confirm).await.expect("confirmed");
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "500 publishes behind a stuck consumer took {took:?}"
    );
}

/// A publisher that outruns a live consumer is paced within milliseconds (issue 14): the
/// queue stays near [`warren_broker::FLOW_READY_LIMIT`] messages instead of growing until it
/// outgrows memory, so a message waits behind a few thousand others, not a hundred thousand.
/// (The consumer sleeps 2 ms per message: about 500 a second.)
#[tokio::test]
async fn a_publisher_faster_than_its_consumer_keeps_the_queue_short() {
    use futures_lite::StreamExt;
    use lapin::options::BasicAckOptions;

    let broker = TestBroker::start().await;
    let (_cconn, cch) = broker.channel().await;
    within(cch.queue_declare("paced", QueueDeclareOptions::default(), Default::default()))
        .await
        .expect("declare");
    within(cch.basic_qos(10, BasicQosOptions::default()))
        .await
        .expect("qos");
    // A slow consumer: one message, then one ack (of everything so far), every 2 ms.
    let mut consumer = consume(&cch, "paced", false).await;
    let slow = tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let _ = d.acker.ack(BasicAckOptions { multiple: true }).await;
        }
    });

    let (_pconn, pch) = broker.channel().await;
    let queue = broker
        .broker()
        .vhost("/")
        .and_then(|v| v.queue("paced").ok())
        .expect("queue");
    let publisher = tokio::spawn(async move {
        for _ in 0..15_000 {
            publish(&pch, "", "paced", b"m").await;
        }
    });
    // Two seconds: enough for an unpaced publisher to pile up most of its 15,000 messages
    // (14,182 were seen before this change); a paced one adds at most one read per second
    // past the limit, and reads start small (4 KiB) and only double.
    let mut deepest = 0;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        deepest = deepest.max(queue.snapshot().messages_ready);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        deepest > 1_000,
        "the publisher never outran the consumer ({deepest} ready at most): nothing was tested"
    );
    assert!(
        deepest < 6_000,
        "the queue grew to {deepest} ready messages behind a live consumer"
    );
    publisher.abort();
    slow.abort();
}
