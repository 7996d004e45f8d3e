//! Counters, gauges and the registry, checked exactly after a known sequence of publishes,
//! returns, gets, deliveries, acks and a redelivery through real lapin clients; and closing a
//! connection by name, which its client hears as 320.

mod common;

use common::*;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use warren_broker::stats::{MessageStats, SIZE_BUCKETS};
use warren_broker::ChannelMode;

const BODY: [u8; 100] = [7u8; 100];

async fn publish_confirmed(ch: &lapin::Channel, exchange: &str, key: &str, mandatory: bool) {
    let confirm = within(ch.basic_publish(
        exchange,
        key,
        BasicPublishOptions {
            mandatory,
            ..Default::default()
        },
        &BODY,
        BasicProperties::default(),
    ))
    .await
    .expect("publish");
    within(confirm).await.expect("confirmation");
}

#[tokio::test]
async fn counters_gauges_and_registry_match_what_clients_did() {
    let broker = TestBroker::start().await;
    let b = broker.broker().clone();

    // The publisher: confirm mode, 12 routed messages, 2 returned, 1 dropped.
    let (pub_conn, p) = broker.channel().await;
    within(p.confirm_select(ConfirmSelectOptions::default()))
        .await
        .expect("confirm.select");
    for q in ["s.q", "s.auto", "s.empty"] {
        named_queue(&p, q).await;
    }
    for _ in 0..10 {
        publish_confirmed(&p, "", "s.q", false).await;
    }
    for _ in 0..2 {
        publish_confirmed(&p, "", "s.auto", false).await;
    }
    for _ in 0..2 {
        publish_confirmed(&p, "amq.direct", "nowhere", true).await;
    }
    publish_confirmed(&p, "amq.direct", "nowhere", false).await;

    // The consumer's connection: gets on one channel, a manual-ack consumer with prefetch 3
    // on another, an auto-ack consumer on a third.
    let cons_conn = broker.connect().await;
    let g = within(cons_conn.create_channel()).await.expect("channel");
    let got = get(&g, "s.q", false).await.expect("a message");
    within(got.delivery.acker.ack(BasicAckOptions::default()))
        .await
        .expect("ack");
    assert!(get(&g, "s.q", true).await.is_some());
    assert!(get(&g, "s.empty", false).await.is_none());

    let m = within(cons_conn.create_channel()).await.expect("channel");
    within(m.basic_qos(3, BasicQosOptions::default()))
        .await
        .expect("qos");
    let mut manual = within(m.basic_consume(
        "s.q",
        "manual",
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("consume");
    let d1 = next_delivery(&mut manual).await;
    let d2 = next_delivery(&mut manual).await;
    let d3 = next_delivery(&mut manual).await;
    within(d1.acker.ack(BasicAckOptions::default()))
        .await
        .expect("ack");
    within(d2.acker.ack(BasicAckOptions::default()))
        .await
        .expect("ack");
    let _d4 = next_delivery(&mut manual).await;
    let _d5 = next_delivery(&mut manual).await;
    within(d3.acker.nack(BasicNackOptions {
        requeue: true,
        ..Default::default()
    }))
    .await
    .expect("nack");
    let again = next_delivery(&mut manual).await;
    assert!(again.redelivered);

    let a = within(cons_conn.create_channel()).await.expect("channel");
    let mut args = FieldTable::default();
    args.insert("x-priority".into(), AMQPValue::LongInt(5));
    let mut auto = within(a.basic_consume(
        "s.auto",
        "auto",
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
        args,
    ))
    .await
    .expect("consume");
    next_delivery(&mut auto).await;
    next_delivery(&mut auto).await;
    // Acks travel asynchronously: sync on a round trip before reading the counters.
    queue_counts(&g, "s.q").await;
    queue_counts(&m, "s.q").await;

    let want = MessageStats {
        publish: 15,
        publish_confirm: 15,
        routed: 12,
        confirm: 15,
        nack: 0,
        return_unroutable: 2,
        drop_unroutable: 1,
        deliver: 6,
        deliver_no_ack: 2,
        get: 1,
        get_no_ack: 1,
        get_empty: 1,
        redeliver: 1,
        ack: 3,
    };
    let totals = b.totals(Some("/"));
    assert_eq!(totals.messages, want);
    assert_eq!(b.totals(None).messages, want);
    assert_eq!(totals.messages.deliver_get(), 10);
    assert_eq!(totals.publishers, 1);
    // Every body was 100 bytes: the first bucket, up to 100 inclusive.
    assert_eq!(totals.sizes.count(), 15);
    assert_eq!(totals.sizes.sum, 1500);
    assert_eq!(totals.sizes.buckets[0], 15);
    assert_eq!(SIZE_BUCKETS[0], 100);

    // Queues: depth and their own counts.
    let vhost = b.vhost("/").expect("vhost");
    let sq = vhost.queue("s.q").expect("s.q").snapshot();
    assert_eq!(sq.messages_ready, 3);
    assert_eq!(sq.messages_unacknowledged, 3);
    assert_eq!(sq.message_bytes_ready, 300);
    assert_eq!(sq.consumers, 1);
    assert_eq!(
        sq.stats,
        MessageStats {
            publish: 10,
            deliver: 6,
            get: 1,
            get_no_ack: 1,
            redeliver: 1,
            ack: 3,
            ..MessageStats::default()
        }
    );
    let auto_q = vhost.queue("s.auto").expect("s.auto").snapshot();
    assert_eq!(
        (auto_q.messages_ready, auto_q.messages_unacknowledged),
        (0, 0)
    );
    assert_eq!(auto_q.stats.publish, 2);
    assert_eq!(auto_q.stats.deliver_no_ack, 2);
    assert_eq!(
        vhost.queue("s.empty").expect("s.empty").snapshot().stats,
        MessageStats {
            get_empty: 1,
            ..MessageStats::default()
        }
    );

    // Exchanges: what was published to each and what left it for a queue.
    let default = vhost.exchange("").expect("default exchange");
    let direct = vhost.exchange("amq.direct").expect("amq.direct");
    let s = b.exchange_stats(&default);
    assert_eq!((s.publish_in, s.publish_out), (12, 12));
    let s = b.exchange_stats(&direct);
    assert_eq!((s.publish_in, s.publish_out), (3, 0));

    // The registry: two connections, their channels and consumers.
    let conns = b.connections();
    assert_eq!(conns.len(), 2);
    let (pc, cc) = (&conns[0], &conns[1]);
    for c in [pc, cc] {
        let snap = c.snapshot();
        assert_eq!(snap.info.user, "guest");
        assert_eq!(snap.info.vhost, "/");
        assert_eq!(snap.info.protocol, "AMQP 0-9-1");
        assert_eq!(snap.state, "running");
        assert_eq!(
            snap.info.name,
            format!("{} -> {}", snap.info.peer, broker.addr())
        );
        assert!(snap.info.client_properties.get("product").is_some());
        assert!(snap.recv_oct > 0 && snap.send_oct > 0);
        assert!(snap.recv_cnt > 0 && snap.send_cnt > 0);
    }
    assert_eq!(pc.snapshot().channels, 1);
    assert_eq!(cc.snapshot().channels, 3);

    let channels = b.channels();
    assert_eq!(channels.len(), 4);
    let pch = channels
        .iter()
        .find(|c| c.connection == pc.info.name)
        .expect("publisher's channel");
    assert_eq!(pch.mode, ChannelMode::Confirm);
    assert_eq!(pch.messages_unconfirmed, 0);
    assert_eq!(pch.stats.publish, 15);
    assert_eq!(pch.name, format!("{} (1)", pc.info.name));
    let mch = channels
        .iter()
        .find(|c| c.connection == cc.info.name && c.prefetch_count == 3)
        .expect("the manual consumer's channel");
    assert_eq!(mch.mode, ChannelMode::Normal);
    assert_eq!(mch.messages_unacknowledged, 3);
    assert_eq!(mch.consumer_count, 1);
    assert_eq!(
        (mch.stats.deliver, mch.stats.redeliver, mch.stats.ack),
        (6, 1, 2)
    );

    let consumers = b.consumers();
    assert_eq!(consumers.len(), 2);
    let manual_c = consumers
        .iter()
        .find(|c| c.tag == "manual")
        .expect("manual");
    assert_eq!(manual_c.queue, "s.q");
    assert!(manual_c.ack_required);
    assert_eq!(manual_c.prefetch_count, 3);
    assert!(manual_c.active);
    assert_eq!(manual_c.connection, cc.info.name);
    let auto_c = consumers.iter().find(|c| c.tag == "auto").expect("auto");
    assert!(!auto_c.ack_required);
    assert_eq!(auto_c.priority, 5);
    assert!(auto_c.arguments.get("x-priority").is_some());

    let churn = b.churn();
    assert_eq!(churn.connections_opened, 2);
    assert_eq!(churn.channels_opened, 4);
    assert_eq!(churn.queues_created, 3);
    assert_eq!(churn.queues_declared, 3);
    assert_eq!((churn.connections_closed, churn.channels_closed), (0, 0));

    // A channel that closes keeps its counts in the totals.
    within(a.close(200, "done")).await.expect("close");
    eventually(|| b.churn().channels_closed == 1).await;
    assert_eq!(b.totals(None).messages, want);
    assert_eq!(b.consumers().len(), 1);

    within(pub_conn.close(200, "bye")).await.expect("close");
    eventually(|| b.connections().len() == 1).await;
    assert_eq!(b.totals(None).messages, want);
    assert_eq!(b.exchange_stats(&default).publish_in, 12);
    assert_eq!(b.churn().connections_closed, 1);
    drop(cons_conn);
}

#[tokio::test]
async fn closing_a_connection_by_name_tells_its_client_320() {
    let broker = TestBroker::start().await;
    let (conn, _ch) = broker.channel().await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    conn.on_error(move |e| {
        if let Some(tx) = tx.lock().expect("lock").take() {
            let _ = tx.send((reply_code(&e), e.to_string()));
        }
    });
    let b = broker.broker().clone();
    let name = b.connections()[0].info.name.clone();
    b.close_connection(&name, "Closed via management plugin")
        .expect("the connection is registered");
    let (code, text) = within(rx).await.expect("error reported");
    assert_eq!(code, Some(320));
    assert!(text.contains("Closed via management plugin"), "{text}");
    eventually(|| b.connections().is_empty()).await;
    assert_eq!(b.churn().connections_closed, 1);

    let missing = b.close_connection("nobody -> nowhere", "x");
    assert!(
        matches!(missing, Err(warren_broker::BrokerError::NotFound { .. })),
        "{missing:?}"
    );
}
