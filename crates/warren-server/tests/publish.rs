//! Publishing: routing failures, limits, mandatory returns, and messages (properties and
//! bodies of every size) arriving exactly as sent.

mod common;

use bytes::BytesMut;
use common::raw::RawClient;
use common::*;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldArray, FieldTable, ShortString};
use lapin::BasicProperties;
use warren_codec::{basic, frame, queue, FrameType, Method};
use warren_server::ServerConfig;

#[tokio::test]
async fn publish_to_missing_exchange_closes_channel_with_404() {
    let broker = TestBroker::start().await;
    let (conn, ch) = broker.channel().await;
    let closed = watch_close(&ch);
    publish(&ch, "no-such-exchange", "k", b"lost").await;
    assert_eq!(closed.code().await, 404);
    assert!(conn.status().connected(), "only the channel closes");
}

#[tokio::test]
async fn publish_to_missing_exchange_names_basic_publish_in_the_close() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        basic::Publish {
            exchange: "no-such-exchange".try_into().expect("shortstr"),
            routing_key: "k".try_into().expect("shortstr"),
            mandatory: false,
            immediate: false,
        },
    )
    .await;
    c.send_content_header(1, 0).await;
    assert_eq!(c.expect_channel_close(1).await, (404, 60, 40));
}

#[tokio::test]
async fn message_larger_than_max_message_size_closes_channel_with_406() {
    let broker = TestBroker::with_config(ServerConfig {
        max_message_size: 1000,
        ..ServerConfig::default()
    })
    .await;
    let (_conn, ch) = broker.channel().await;
    let closed = watch_close(&ch);
    let q = temp_queue(&ch).await;
    publish(&ch, "", &q, &[7u8; 1000]).await;
    assert_eq!(
        get(&ch, &q, true)
            .await
            .expect("at the limit")
            .delivery
            .data
            .len(),
        1000
    );
    publish(&ch, "", &q, &[7u8; 1001]).await;
    assert_eq!(closed.code().await, 406);
}

/// The limit can be raised past the 16 MiB default (RabbitMQ allows up to 512 MiB).
#[tokio::test]
async fn a_raised_max_message_size_lets_larger_messages_through() {
    let broker = TestBroker::with_config(ServerConfig {
        max_message_size: 24 * 1024 * 1024,
        ..ServerConfig::default()
    })
    .await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    let body = vec![3u8; 20 * 1024 * 1024];
    publish(&ch, "", &q, &body).await;
    let got = get(&ch, &q, true).await.expect("a 20 MiB message");
    assert_eq!(got.delivery.data.len(), body.len());
}

#[tokio::test]
async fn user_id_other_than_the_login_closes_channel_with_406() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let closed = watch_close(&ch);
    let q = temp_queue(&ch).await;
    publish_with(
        &ch,
        "",
        &q,
        b"me",
        BasicProperties::default().with_user_id("guest".into()),
    )
    .await;
    assert!(
        get(&ch, &q, true).await.is_some(),
        "the login's own user_id is fine"
    );
    publish_with(
        &ch,
        "",
        &q,
        b"bob",
        BasicProperties::default().with_user_id("bob".into()),
    )
    .await;
    assert_eq!(closed.code().await, 406);
}

#[tokio::test]
async fn mandatory_unroutable_message_is_returned_with_312() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let mandatory = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    within(ch.basic_publish(
        "amq.direct",
        "nobody-bound",
        mandatory,
        b"back to you",
        BasicProperties::default().with_message_id("m-1".into()),
    ))
    .await
    .expect("publish");
    // A round trip so that the return has arrived.
    temp_queue(&ch).await;
    let returned = within(ch.wait_for_confirms()).await.expect("returns");
    assert_eq!(returned.len(), 1);
    let r = &returned[0];
    assert_eq!(r.reply_code, 312);
    assert_eq!(r.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(r.delivery.exchange.as_str(), "amq.direct");
    assert_eq!(r.delivery.routing_key.as_str(), "nobody-bound");
    assert_eq!(r.delivery.data, b"back to you");
    assert_eq!(
        r.delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("m-1")
    );
}

#[tokio::test]
async fn unroutable_message_without_mandatory_is_dropped_silently() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    publish(&ch, "amq.direct", "nobody-bound", b"gone").await;
    temp_queue(&ch).await;
    assert!(within(ch.wait_for_confirms())
        .await
        .expect("returns")
        .is_empty());
}

#[tokio::test]
async fn mandatory_message_routed_somewhere_is_not_returned() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .expect("confirm.select");
    let confirm = within(ch.basic_publish(
        "",
        &q,
        BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        },
        b"kept",
        BasicProperties::default(),
    ))
    .await
    .expect("publish");
    let c = within(confirm).await.expect("confirmation");
    assert_eq!(c, lapin::publisher_confirm::Confirmation::Ack(None));
}

fn nested_headers() -> FieldTable {
    let mut inner = FieldTable::default();
    inner.insert("depth".into(), AMQPValue::ShortShortInt(2));
    inner.insert("name".into(), AMQPValue::LongString("inner".into()));
    let mut headers = FieldTable::default();
    headers.insert("text".into(), AMQPValue::LongString("héllo".into()));
    headers.insert("flag".into(), AMQPValue::Boolean(true));
    headers.insert("i8".into(), AMQPValue::ShortShortInt(-8));
    headers.insert("u8".into(), AMQPValue::ShortShortUInt(8));
    headers.insert("i16".into(), AMQPValue::ShortInt(-16));
    headers.insert("i32".into(), AMQPValue::LongInt(-32));
    headers.insert("i64".into(), AMQPValue::LongLongInt(-64));
    headers.insert("f32".into(), AMQPValue::Float(1.5));
    headers.insert("f64".into(), AMQPValue::Double(2.25));
    headers.insert("ts".into(), AMQPValue::Timestamp(1_700_000_000));
    headers.insert("void".into(), AMQPValue::Void);
    headers.insert(
        "bytes".into(),
        AMQPValue::ByteArray(vec![0u8, 1, 255].into()),
    );
    headers.insert("table".into(), AMQPValue::FieldTable(inner.clone()));
    headers.insert(
        "array".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongInt(1),
            AMQPValue::LongString("two".into()),
            AMQPValue::FieldTable(inner),
        ])),
    );
    headers
}

fn all_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(nested_headers())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-1".into())
        .with_reply_to("replies".into())
        .with_expiration("60000".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_700_000_123)
        .with_type("order.created".into())
        .with_user_id("guest".into())
        .with_app_id("tests".into())
        .with_cluster_id("c-1".into())
}

#[tokio::test]
async fn every_basic_property_arrives_as_sent() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    let props = all_properties();
    publish_with(&ch, "", &q, b"{}", props.clone()).await;
    let mut consumer = consume(&ch, &q, true).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.properties, props);
    // And through basic.get.
    publish_with(&ch, "", &q, b"{}", props.clone()).await;
    let (_c2, ch2) = broker.channel().await;
    let other = temp_queue(&ch2).await;
    publish_with(&ch2, "", &other, b"{}", props.clone()).await;
    assert_eq!(
        get(&ch2, &other, true)
            .await
            .expect("message")
            .delivery
            .properties,
        props
    );
}

#[tokio::test]
async fn raw_properties_are_passed_through_byte_for_byte() {
    // Properties encoded by the publisher come back to the consumer as the same bytes, even
    // with a field-table encoding (the type codes chosen, the order of keys) a re-encoder
    // would normalize.
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        queue::Declare {
            queue: "raw-props".try_into().expect("shortstr"),
            passive: false,
            durable: false,
            exclusive: true,
            auto_delete: false,
            no_wait: true,
            arguments: warren_codec::FieldTable::new(),
        },
    )
    .await;
    // Flags: content-type, headers, message-id.
    let mut props = BytesMut::new();
    props.extend_from_slice(&(0x8000u16 | 0x2000 | 0x0080).to_be_bytes());
    props.extend_from_slice(b"\x0atext/plain");
    // {"z": long 1, "ab": short 2}: keys unsorted, RabbitMQ's type codes.
    let table: &[u8] = b"\x01zl\x00\x00\x00\x00\x00\x00\x00\x01\x02abs\x00\x02";
    props.extend_from_slice(&(table.len() as u32).to_be_bytes());
    props.extend_from_slice(table);
    props.extend_from_slice(b"\x03m-1");
    c.send_method(
        1,
        basic::Publish {
            exchange: warren_codec::ShortString::empty(),
            routing_key: "raw-props".try_into().expect("shortstr"),
            mandatory: false,
            immediate: false,
        },
    )
    .await;
    let mut buf = BytesMut::new();
    frame::write_content_header(&mut buf, 1, 60, 2, &props);
    frame::write_frame(&mut buf, FrameType::Body, 1, b"hi");
    c.send_bytes(&buf).await;
    c.send_method(
        1,
        basic::Get {
            queue: "raw-props".try_into().expect("shortstr"),
            no_ack: true,
        },
    )
    .await;
    let header = loop {
        let f = c.read_frame().await.expect("a frame");
        if f.kind == FrameType::Header {
            break f;
        }
        if f.kind == FrameType::Method {
            let m = Method::decode(f.payload.clone()).expect("method");
            assert!(matches!(m, Method::BasicGetOk(_)), "{m:?}");
        }
    };
    let decoded = warren_codec::ContentHeader::decode(header.payload).expect("content header");
    assert_eq!(decoded.body_size, 2);
    assert_eq!(&decoded.raw_properties[..], &props[..]);
}

async fn round_trip(broker: &TestBroker, body: &[u8]) -> Vec<u8> {
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    publish(&ch, "", &q, body).await;
    let mut consumer = consume(&ch, &q, true).await;
    next_delivery(&mut consumer).await.data
}

#[tokio::test]
async fn empty_body_arrives_intact() {
    let broker = TestBroker::start().await;
    assert_eq!(round_trip(&broker, b"").await, b"");
}

#[tokio::test]
async fn one_byte_body_arrives_intact() {
    let broker = TestBroker::start().await;
    assert_eq!(round_trip(&broker, b"x").await, b"x");
}

#[tokio::test]
async fn body_larger_than_frame_max_arrives_intact() {
    let broker = TestBroker::start().await;
    let body: Vec<u8> = (0..1024 * 1024).map(|i| (i * 31 % 251) as u8).collect();
    let got = round_trip(&broker, &body).await;
    assert_eq!(got.len(), body.len());
    assert!(got == body, "1 MB body differs");
}

#[tokio::test]
async fn body_exactly_filling_frames_arrives_intact() {
    // Bodies whose size is a multiple of the frame payload, and one byte either side.
    let broker = TestBroker::start().await;
    let payload = 131_072 - 8;
    for size in [payload - 1, payload, payload + 1, 2 * payload] {
        let body: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        assert!(round_trip(&broker, &body).await == body, "size {size}");
    }
}

#[tokio::test]
async fn many_small_messages_keep_their_order() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    for i in 0..500u32 {
        publish(&ch, "", &q, &i.to_be_bytes()).await;
    }
    let mut consumer = consume(&ch, &q, true).await;
    for i in 0..500u32 {
        assert_eq!(next_delivery(&mut consumer).await.data, i.to_be_bytes());
    }
}

#[tokio::test]
async fn delivery_reports_exchange_and_routing_key() {
    let broker = TestBroker::start().await;
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    within(ch.queue_bind(
        &q,
        "amq.topic",
        "a.*",
        Default::default(),
        FieldTable::default(),
    ))
    .await
    .expect("bind");
    publish(&ch, "amq.topic", "a.b", b"x").await;
    let mut consumer = consume(&ch, &q, true).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.exchange, ShortString::from("amq.topic"));
    assert_eq!(d.routing_key, ShortString::from("a.b"));
    assert!(!d.redelivered);
}

#[tokio::test]
async fn default_exchange_publishes_reach_a_queue_declared_again_under_the_same_name() {
    let broker = TestBroker::start().await;
    let (conn, ch) = broker.channel().await;
    // Same connection: its frames are handled in order, so each check sees the publishes
    // before it.
    let admin = within(conn.create_channel()).await.expect("second channel");
    named_queue(&ch, "redeclared").await;
    publish(&ch, "", "redeclared", b"first").await;
    assert_eq!(queue_counts(&admin, "redeclared").await.0, 1);
    // Deleted and declared again by another channel: the publishing channel's next message
    // must go to the new queue, not to the deleted one it published to before.
    within(admin.queue_delete("redeclared", Default::default()))
        .await
        .expect("delete");
    publish(&ch, "", "redeclared", b"lost: no such queue").await;
    named_queue(&admin, "redeclared").await;
    publish(&ch, "", "redeclared", b"second").await;
    let m = get(&admin, "redeclared", true)
        .await
        .expect("the second message");
    assert_eq!(m.delivery.data, b"second");
    assert!(get(&admin, "redeclared", true).await.is_none());
    // And a publish to another queue in between is routed by its own name.
    named_queue(&admin, "other").await;
    publish(&ch, "", "other", b"x").await;
    publish(&ch, "", "redeclared", b"y").await;
    assert_eq!(queue_counts(&admin, "other").await.0, 1);
    assert_eq!(queue_counts(&admin, "redeclared").await.0, 1);
}
