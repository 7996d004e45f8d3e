//! Connections: the handshake, logins, vhost access, heartbeats, and closing in both
//! directions.

mod common;

use std::time::{Duration, Instant};

use common::raw::{amqplain, plain, Handshake, Opened, RawClient};
use common::*;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use warren_broker::{BrokerError, Permission};
use warren_codec::{connection, frame, FieldTable as RawTable, FrameType, Method};
use warren_server::ServerConfig;

#[tokio::test]
async fn lapin_handshake_opens_connection_and_channel() {
    let broker = TestBroker::start().await;
    let (conn, ch) = broker.channel().await;
    assert!(conn.status().connected());
    assert!(ch.status().connected());
    within(conn.close(200, "bye")).await.expect("close");
}

#[tokio::test]
async fn wrong_password_closes_connection_with_403() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::connect(broker.addr()).await;
    let r = c
        .handshake(Handshake {
            response: plain("guest", "wrong"),
            ..Handshake::default()
        })
        .await;
    // As RabbitMQ: 403 naming no method, once the client asked for it with the
    // authentication_failure_close capability.
    assert!(matches!(r, Opened::Closed(403, 0, 0)), "{r:?}");
}

#[tokio::test]
async fn plain_login_as_someone_else_is_refused() {
    let broker = TestBroker::start().await;
    // authzid "admin", authcid guest with the right password: a request to act as another
    // user, which Warren does not grant. As for any unusable SASL response before the
    // connection opens (RabbitMQ: a protocol error in the handshake), the socket is closed.
    let mut c = RawClient::connect(broker.addr()).await;
    let r = c
        .handshake(Handshake {
            response: b"admin\0guest\0guest".to_vec(),
            ..Handshake::default()
        })
        .await;
    assert!(matches!(r, Opened::Dropped), "{r:?}");
    // The user naming itself is no request at all.
    let mut c = RawClient::connect(broker.addr()).await;
    let r = c
        .handshake(Handshake {
            response: b"guest\0guest\0guest".to_vec(),
            ..Handshake::default()
        })
        .await;
    assert!(matches!(r, Opened::Open { .. }), "{r:?}");
}

#[tokio::test]
async fn unknown_user_closes_connection_with_403() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::connect(broker.addr()).await;
    let r = c
        .handshake(Handshake {
            response: plain("nobody", "guest"),
            ..Handshake::default()
        })
        .await;
    assert!(matches!(r, Opened::Closed(403, 0, 0)), "{r:?}");
}

#[tokio::test]
async fn wrong_password_without_failure_close_capability_drops_the_socket() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::connect(broker.addr()).await;
    let r = c
        .handshake(Handshake {
            response: plain("guest", "wrong"),
            client_properties: RawTable::new(),
            ..Handshake::default()
        })
        .await;
    assert!(matches!(r, Opened::Dropped), "{r:?}");
}

#[tokio::test]
async fn wrong_password_is_refused_through_lapin() {
    let broker = TestBroker::start().await;
    let err = connect_url(&broker.url_for("guest", "wrong", "/"))
        .await
        .expect_err("login must fail");
    assert_eq!(reply_code(&err), Some(403), "{err:?}");
}

#[tokio::test]
async fn amqplain_login_opens_connection() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::connect(broker.addr()).await;
    let r = c
        .handshake(Handshake {
            mechanism: "AMQPLAIN",
            response: amqplain("guest", "guest"),
            ..Handshake::default()
        })
        .await;
    assert!(matches!(r, Opened::Open { .. }), "{r:?}");
    c.open_channel(1).await;
}

#[tokio::test]
async fn amqplain_wrong_password_closes_connection_with_403() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::connect(broker.addr()).await;
    let r = c
        .handshake(Handshake {
            mechanism: "AMQPLAIN",
            response: amqplain("guest", "wrong"),
            ..Handshake::default()
        })
        .await;
    assert!(matches!(r, Opened::Closed(403, 0, 0)), "{r:?}");
}

/// Before connection.open, RabbitMQ reports no error but a refused login: the socket closes.
async fn dropped_during_handshake(broker: &TestBroker, hs: Handshake) {
    let mut c = RawClient::connect(broker.addr()).await;
    let r = c.handshake(hs).await;
    assert!(matches!(r, Opened::Dropped), "{r:?}");
}

#[tokio::test]
async fn unsupported_mechanism_drops_the_socket() {
    let broker = TestBroker::start().await;
    let hs = Handshake {
        mechanism: "EXTERNAL",
        response: Vec::new(),
        ..Handshake::default()
    };
    dropped_during_handshake(&broker, hs).await;
}

#[tokio::test]
async fn malformed_plain_response_drops_the_socket() {
    let broker = TestBroker::start().await;
    let hs = Handshake {
        response: b"no separators".to_vec(),
        ..Handshake::default()
    };
    dropped_during_handshake(&broker, hs).await;
}

#[tokio::test]
async fn tune_ok_above_or_below_the_limits_drops_the_socket() {
    let broker = TestBroker::start().await;
    for hs in [
        Handshake {
            frame_max: Some(131_073),
            ..Handshake::default()
        },
        Handshake {
            frame_max: Some(0),
            ..Handshake::default()
        },
        Handshake {
            frame_max: Some(4095),
            ..Handshake::default()
        },
        Handshake {
            channel_max: Some(0),
            ..Handshake::default()
        },
        Handshake {
            channel_max: Some(2048),
            ..Handshake::default()
        },
    ] {
        dropped_during_handshake(&broker, hs).await;
    }
}

#[tokio::test]
async fn tune_ok_may_lower_the_limits() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::connect(broker.addr()).await;
    let r = c
        .handshake(Handshake {
            frame_max: Some(4096),
            channel_max: Some(1),
            ..Handshake::default()
        })
        .await;
    assert!(
        matches!(
            r,
            Opened::Open {
                frame_max: 4096,
                channel_max: 1
            }
        ),
        "{r:?}"
    );
    c.open_channel(1).await;
}

#[tokio::test]
async fn unknown_vhost_closes_connection_with_530() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::connect(broker.addr()).await;
    let r = c
        .handshake(Handshake {
            vhost: "no-such-vhost".into(),
            ..Handshake::default()
        })
        .await;
    assert!(matches!(r, Opened::Closed(530, 10, 40)), "{r:?}");
}

#[tokio::test]
async fn unknown_vhost_is_refused_through_lapin() {
    let broker = TestBroker::start().await;
    let err = connect_url(&broker.url_for("guest", "guest", "no-such-vhost"))
        .await
        .expect_err("open must fail");
    assert_eq!(reply_code(&err), Some(530), "{err:?}");
}

#[tokio::test]
async fn user_without_permission_on_vhost_closes_connection_with_530() {
    let broker = TestBroker::start().await;
    broker.broker().add_vhost("other").expect("add vhost");
    broker.add_user("alice", "secret", Some("other"));
    let mut c = RawClient::connect(broker.addr()).await;
    let r = c
        .handshake(Handshake {
            response: plain("alice", "secret"),
            ..Handshake::default()
        })
        .await;
    assert!(matches!(r, Opened::Closed(530, 10, 40)), "{r:?}");

    // The vhost she has rights on opens.
    let conn = connect_url(&broker.url_for("alice", "secret", "other"))
        .await
        .expect("alice may open 'other'");
    within(conn.close(200, "bye")).await.expect("close");
}

#[tokio::test]
async fn permissions_restrict_what_a_user_may_configure() {
    let broker = TestBroker::start().await;
    broker.add_user("bob", "pw", None);
    broker
        .broker()
        .set_permission(
            "bob",
            "/",
            Permission::new("^bob-.*", ".*", ".*").expect("valid patterns"),
        )
        .expect("set permission");
    let conn = connect_url(&broker.url_for("bob", "pw", "/"))
        .await
        .expect("connect");
    let ch = within(conn.create_channel()).await.expect("channel");
    within(ch.queue_declare(
        "bob-q",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("bob may declare bob-*");
    let r = within(ch.queue_declare(
        "alice-q",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(code_of(r), 403);
}

#[test]
fn guest_from_a_non_loopback_address_is_refused() {
    let broker = warren_broker::Broker::new();
    assert!(broker.authenticate("guest", "guest", true).is_ok());
    let err = broker
        .authenticate("guest", "guest", false)
        .expect_err("guest is loopback-only");
    assert!(
        matches!(err, BrokerError::AuthenticationFailed(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn wrong_protocol_header_gets_the_supported_header_and_close() {
    let broker = TestBroker::start().await;
    for header in [
        &b"AMQP\x00\x00\x09\x02"[..],
        b"AMQP\x01\x01\x00\x0a",
        b"HTTP/1.1",
    ] {
        let mut c = RawClient::connect(broker.addr()).await;
        c.send_bytes(header).await;
        let got = c.read_to_eof(WAIT).await.expect("server closes the socket");
        assert_eq!(got, frame::PROTOCOL_HEADER, "for header {header:?}");
    }
}

#[tokio::test]
async fn heartbeat_on_channel_0_keeps_connection_open() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.send_frame(FrameType::Heartbeat, 0, &[]).await;
    c.open_channel(1).await;
}

#[tokio::test]
async fn silent_client_is_disconnected_after_two_missed_heartbeats() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open_with(
        broker.addr(),
        Handshake {
            heartbeat: 1,
            ..Handshake::default()
        },
    )
    .await;
    let start = Instant::now();
    // Only heartbeats arrive, then the socket closes (RabbitMQ sends no connection.close).
    let got = c
        .read_to_eof(Duration::from_secs(4))
        .await
        .expect("server drops a silent client");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500),
        "closed too early: {elapsed:?}"
    );
    assert!(
        got.chunks(8).all(|f| f == [8, 0, 0, 0, 0, 0, 0, 0xCE]),
        "{got:?}"
    );
}

#[tokio::test]
async fn server_sends_heartbeats_at_half_the_interval() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open_with(
        broker.addr(),
        Handshake {
            heartbeat: 1,
            ..Handshake::default()
        },
    )
    .await;
    let f = c
        .read_frame_within(Duration::from_millis(1500))
        .await
        .expect("a heartbeat within the interval");
    assert_eq!((f.kind, f.channel), (FrameType::Heartbeat, 0));
    // Keep talking: a client that sends heartbeats is not disconnected.
    for _ in 0..3 {
        c.send_frame(FrameType::Heartbeat, 0, &[]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    c.open_channel(1).await;
}

#[tokio::test]
async fn heartbeat_negotiated_through_lapin_keeps_connection_alive() {
    let broker = TestBroker::with_config(ServerConfig {
        heartbeat: 1,
        ..ServerConfig::default()
    })
    .await;
    let (conn, ch) = broker.channel().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(conn.status().connected());
    temp_queue(&ch).await;
}

#[tokio::test]
async fn client_close_is_answered_with_close_ok_and_releases_the_connection() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        warren_codec::queue::Declare {
            queue: "mine".try_into().expect("shortstr"),
            passive: false,
            durable: false,
            exclusive: true,
            auto_delete: false,
            no_wait: true,
            arguments: RawTable::new(),
        },
    )
    .await;
    c.send_method(
        0,
        connection::Close {
            reply_code: 200,
            reply_text: "bye".try_into().expect("shortstr"),
            class_id: 0,
            method_id: 0,
        },
    )
    .await;
    assert!(matches!(
        c.read_method().await,
        Some((0, Method::ConnectionCloseOk(_)))
    ));
    // The exclusive queue is gone as soon as close-ok is sent, before the client closes
    // its socket (which is the client's job, as the spec says).
    let (_conn, ch) = broker.channel().await;
    let r = within(ch.queue_declare(
        "mine",
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await;
    assert_eq!(code_of(r), 404);
}

#[tokio::test]
async fn lapin_close_completes_gracefully() {
    let broker = TestBroker::start().await;
    let (conn, ch) = broker.channel().await;
    within(ch.close(200, "done")).await.expect("channel close");
    within(conn.close(200, "done"))
        .await
        .expect("connection close");
    assert!(!conn.status().connected());
}

#[tokio::test]
async fn server_shutdown_closes_clients_with_320() {
    let broker = TestBroker::start().await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    let stopping = tokio::spawn(broker.shutdown());
    assert_eq!(c.expect_close().await, (320, 0, 0));
    within(stopping).await.expect("shutdown finishes");
}

#[tokio::test]
async fn server_shutdown_is_reported_to_lapin_as_320() {
    let broker = TestBroker::start().await;
    let (conn, _ch) = broker.channel().await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    conn.on_error(move |e| {
        if let Some(tx) = tx.lock().expect("lock").take() {
            let _ = tx.send(reply_code(&e));
        }
    });
    broker.shutdown().await;
    assert_eq!(within(rx).await.expect("error reported"), Some(320));
}

#[tokio::test]
async fn many_channels_on_one_connection_work_independently() {
    let broker = TestBroker::start().await;
    let conn = broker.connect().await;
    let mut channels = Vec::new();
    for _ in 0..100 {
        channels.push(within(conn.create_channel()).await.expect("channel"));
    }
    for (i, ch) in channels.iter().enumerate() {
        let q = temp_queue(ch).await;
        publish(ch, "", &q, format!("m{i}").as_bytes()).await;
        let m = get(ch, &q, true).await.expect("a message");
        assert_eq!(m.delivery.data, format!("m{i}").as_bytes());
    }
    // An error on one channel leaves the others open.
    let r = within(channels[7].basic_get("no-such-queue", BasicGetOptions::default())).await;
    assert_eq!(code_of(r), 404);
    let q = temp_queue(&channels[8]).await;
    assert!(q.starts_with("amq.gen-"));
}
