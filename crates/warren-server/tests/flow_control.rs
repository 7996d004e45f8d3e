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
