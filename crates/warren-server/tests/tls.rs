//! AMQPS: AMQP over TLS with and without client certificates, peer verification as
//! RabbitMQ's `ssl_options.verify` / `fail_if_no_peer_cert`, SASL EXTERNAL (the user named
//! by the client certificate), protocol versions, and certificates reloaded for new
//! connections. Certificates are made at run time (see `common/tls.rs`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use warren_broker::{Broker, Permission, TlsInfo};
use warren_server::tls::{CertLogin, LoginFrom, SanType, TlsVersion, Verify};
use warren_server::ServerConfig;

use common::tls::{leaf, offered_mechanisms, served_certificate, Pki, TlsBroker};
use common::{within, WAIT};

/// Publishes one message to a fresh server-named queue and consumes it back.
async fn round_trip(conn: &Connection) {
    let ch = within(conn.create_channel()).await.expect("channel");
    let q = within(ch.queue_declare("", Default::default(), FieldTable::default()))
        .await
        .expect("declare");
    let mut consumer = within(ch.basic_consume(
        q.name().as_str(),
        "",
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("consume");
    within(ch.basic_publish(
        "",
        q.name().as_str(),
        BasicPublishOptions::default(),
        b"over tls",
        BasicProperties::default(),
    ))
    .await
    .expect("publish");
    let d = within(consumer.next())
        .await
        .expect("a delivery")
        .expect("delivery ok");
    assert_eq!(d.data, b"over tls");
    within(d.ack(BasicAckOptions::default()))
        .await
        .expect("ack");
}

/// The registry's TLS facts for the only open connection, and its user and mechanism.
fn only_connection(broker: &Broker) -> (Option<TlsInfo>, String, String) {
    let conns = broker.connections();
    assert_eq!(conns.len(), 1, "one connection is open");
    let i = &conns[0].info;
    (i.tls.clone(), i.user.clone(), i.auth_mechanism.clone())
}

/// Adds a user with no password (a certificate-only user) and full rights on `/`.
fn add_cert_user(broker: &Broker, name: &str) {
    broker.add_user(name, None, Vec::new()).expect("add user");
    broker
        .set_permission(name, "/", Permission::full())
        .expect("permission");
}

#[tokio::test]
async fn amqps_publish_and_consume_without_a_client_certificate() {
    let pki = Pki::new();
    let b = TlsBroker::start(pki.options(Verify::None, false)).await;
    let conn = b
        .lapin(pki.client_config(None), "guest:guest@", "")
        .await
        .expect("AMQPS connection with PLAIN");
    round_trip(&conn).await;
    let (tls, user, mechanism) = only_connection(&b.broker);
    let tls = tls.expect("the registry knows the connection is TLS");
    assert_eq!(tls.protocol, "tlsv1.3");
    assert_eq!(tls.key_exchange, "any");
    assert_eq!(tls.hash, "aead");
    assert!(tls.cipher.contains("gcm") || tls.cipher.contains("poly1305"));
    assert_eq!(tls.peer_cert_subject, None);
    assert_eq!((user.as_str(), mechanism.as_str()), ("guest", "PLAIN"));
    within(conn.close(200, "bye")).await.expect("close");
    // The plain listener beside it is still plain.
    let plain = common::connect_url(&format!("amqp://guest:guest@{}/%2F", b.plain))
        .await
        .expect("plain AMQP beside AMQPS");
    assert!(b.broker.connections().iter().all(|c| c.info.tls.is_none()));
    within(plain.close(200, "bye")).await.expect("close");
}

#[tokio::test]
async fn amqps_publish_and_consume_with_a_client_certificate() {
    let pki = Pki::new();
    let b = TlsBroker::start(pki.options(Verify::Peer, true)).await;
    let mut p = leaf("app-1", Some("Warren tests"));
    p.distinguished_name.push(rcgen::DnType::CountryName, "SE");
    let id = pki.issue(p, false);
    let conn = b
        .lapin(pki.client_config(Some(&id)), "guest:guest@", "")
        .await
        .expect("AMQPS connection with a client certificate");
    round_trip(&conn).await;
    let (tls, user, mechanism) = only_connection(&b.broker);
    let tls = tls.expect("TLS");
    // RabbitMQ's order: the last RDN first.
    assert_eq!(
        tls.peer_cert_subject.as_deref(),
        Some("C=SE,CN=app-1,O=Warren tests")
    );
    assert_eq!(tls.peer_cert_issuer.as_deref(), Some("CN=Warren test CA"));
    let validity = tls.peer_cert_validity.expect("validity");
    assert!(
        validity.starts_with("1975-01-01T00:00:00Z - "),
        "{validity}"
    );
    // A certificate does not change how a PLAIN login works.
    assert_eq!((user.as_str(), mechanism.as_str()), ("guest", "PLAIN"));
    within(conn.close(200, "bye")).await.expect("close");
}

#[tokio::test]
async fn external_logs_in_as_the_certificates_cn_user() {
    let pki = Pki::new();
    let b = TlsBroker::start(pki.options(Verify::Peer, true)).await;
    add_cert_user(&b.broker, "cert-user");
    let id = pki.client("cert-user");
    let mechanisms = offered_mechanisms(b.addr, pki.client_config(Some(&id)))
        .await
        .expect("connection.start");
    assert_eq!(mechanisms, "PLAIN AMQPLAIN EXTERNAL");
    // No user or password in the URI: the certificate is the proof.
    let conn = b
        .lapin(pki.client_config(Some(&id)), "", "?auth_mechanism=external")
        .await
        .expect("EXTERNAL login");
    round_trip(&conn).await;
    let (_, user, mechanism) = only_connection(&b.broker);
    assert_eq!(
        (user.as_str(), mechanism.as_str()),
        ("cert-user", "EXTERNAL")
    );
    within(conn.close(200, "bye")).await.expect("close");
}

#[tokio::test]
async fn external_login_of_a_user_that_does_not_exist_is_refused() {
    let pki = Pki::new();
    let b = TlsBroker::start(pki.options(Verify::Peer, true)).await;
    let id = pki.client("nobody-here");
    let r = b
        .lapin(pki.client_config(Some(&id)), "", "?auth_mechanism=external")
        .await;
    // As RabbitMQ: 403 ACCESS_REFUSED, the reason in the log only.
    assert_eq!(common::code_of(r), 403);
    assert!(b.broker.connections().is_empty());
}

#[tokio::test]
async fn external_is_offered_only_where_a_client_certificate_was_verified() {
    let pki = Pki::new();
    let id = pki.client("cert-user");
    // verify_none: no certificate is asked for, so none can name a user.
    let none = TlsBroker::start(pki.options(Verify::None, false)).await;
    add_cert_user(&none.broker, "cert-user");
    let offered = offered_mechanisms(none.addr, pki.client_config(Some(&id)))
        .await
        .expect("connection.start");
    assert_eq!(offered, "PLAIN AMQPLAIN");
    let r = none
        .lapin(pki.client_config(Some(&id)), "", "?auth_mechanism=external")
        .await;
    assert!(
        r.is_err(),
        "EXTERNAL must be refused on a non-verifying listener"
    );
    // verify_peer without fail_if_no_peer_cert: a client without a certificate gets in, but
    // not with EXTERNAL.
    let optional = TlsBroker::start(pki.options(Verify::Peer, false)).await;
    add_cert_user(&optional.broker, "cert-user");
    let offered = offered_mechanisms(optional.addr, pki.client_config(None))
        .await
        .expect("a client without a certificate is let in");
    assert_eq!(offered, "PLAIN AMQPLAIN");
    let offered = offered_mechanisms(optional.addr, pki.client_config(Some(&id)))
        .await
        .expect("connection.start");
    assert_eq!(offered, "PLAIN AMQPLAIN EXTERNAL");
    // And a plain (non-TLS) listener never offers it.
    let mut raw = common::raw::RawClient::connect(optional.plain).await;
    raw.send_bytes(warren_codec::frame::PROTOCOL_HEADER).await;
    match raw.read_method().await {
        Some((0, warren_codec::Method::ConnectionStart(m))) => {
            assert_eq!(m.mechanisms.as_bytes(), b"PLAIN AMQPLAIN")
        }
        other => panic!("expected connection.start, got {other:?}"),
    }
}

#[tokio::test]
async fn client_certificates_are_required_and_checked_against_the_ca() {
    let pki = Pki::new();
    let b = TlsBroker::start(pki.options(Verify::Peer, true)).await;
    // Signed by a CA the broker does not trust.
    let stranger = pki.untrusted_client("guest");
    let r = offered_mechanisms(b.addr, pki.client_config(Some(&stranger))).await;
    let e = r.expect_err("a certificate from another CA must be refused");
    assert!(e.to_string().contains("UnknownCA"), "{e}");
    let r = b
        .lapin(pki.client_config(Some(&stranger)), "guest:guest@", "")
        .await;
    assert!(r.is_err(), "lapin with an untrusted certificate must fail");
    // No certificate at all, with fail_if_no_peer_cert = true.
    let r = offered_mechanisms(b.addr, pki.client_config(None)).await;
    let e = r.expect_err("a client without a certificate must be refused");
    assert!(e.to_string().contains("CertificateRequired"), "{e}");
    assert!(b.broker.connections().is_empty());
    // verify_peer without fail_if_no_peer_cert still refuses a bad certificate.
    let optional = TlsBroker::start(pki.options(Verify::Peer, false)).await;
    let r = offered_mechanisms(optional.addr, pki.client_config(Some(&stranger))).await;
    let e = r.expect_err("a presented certificate is always verified");
    assert!(e.to_string().contains("UnknownCA"), "{e}");
}

#[tokio::test]
async fn versions_limit_the_protocols_offered() {
    let pki = Pki::new();
    let mut options = pki.options(Verify::None, false);
    options.versions = vec![TlsVersion::Tls12];
    let b = TlsBroker::start(options).await;
    let conn = b
        .lapin(pki.client_config(None), "guest:guest@", "")
        .await
        .expect("TLS 1.2 connection");
    let (tls, _, _) = only_connection(&b.broker);
    let tls = tls.expect("TLS");
    assert_eq!(tls.protocol, "tlsv1.2");
    assert!(tls.key_exchange.starts_with("ecdhe_"), "{tls:?}");
    within(conn.close(200, "bye")).await.expect("close");
    let tls13_only = pki.client_config_for(None, &[&rustls::version::TLS13]);
    assert!(
        offered_mechanisms(b.addr, tls13_only).await.is_err(),
        "a TLS 1.3-only client must not get in"
    );
}

#[tokio::test]
async fn external_can_take_the_distinguished_name_or_a_subject_alternative_name() {
    let pki = Pki::new();
    let mut p = leaf("svc", Some("Warren tests"));
    p.subject_alt_names = vec![
        rcgen::SanType::DnsName("first.example".try_into().expect("dns")),
        rcgen::SanType::Rfc822Name("svc@example.com".try_into().expect("email")),
        rcgen::SanType::DnsName("second.example".try_into().expect("dns")),
    ];
    let id = pki.issue(p, false);
    let cases = [
        (
            CertLogin {
                from: LoginFrom::DistinguishedName,
                ..CertLogin::default()
            },
            "CN=svc,O=Warren tests",
        ),
        (
            CertLogin {
                from: LoginFrom::SubjectAlternativeName,
                san_type: SanType::Email,
                san_index: 0,
            },
            "svc@example.com",
        ),
        (
            CertLogin {
                from: LoginFrom::SubjectAlternativeName,
                san_type: SanType::Dns,
                san_index: 1,
            },
            "second.example",
        ),
    ];
    for (login, user) in cases {
        let config = ServerConfig {
            cert_login: login,
            ..ServerConfig::default()
        };
        let b = TlsBroker::start_with(
            Arc::new(Broker::new()),
            config,
            pki.options(Verify::Peer, true),
        )
        .await;
        add_cert_user(&b.broker, user);
        let conn = b
            .lapin(pki.client_config(Some(&id)), "", "?auth_mechanism=external")
            .await
            .unwrap_or_else(|e| panic!("EXTERNAL as {user}: {e}"));
        assert_eq!(only_connection(&b.broker).1, user);
        within(conn.close(200, "bye")).await.expect("close");
    }
}

#[tokio::test]
async fn replaced_certificate_files_are_used_for_new_connections() {
    let pki = Pki::new();
    let b = TlsBroker::start(pki.options(Verify::None, false)).await;
    b.watch_files(Duration::from_millis(50));
    let client = pki.client_config(None);
    let first = served_certificate(b.addr, client.clone()).await;
    let open = b
        .lapin(client.clone(), "guest:guest@", "")
        .await
        .expect("connection before the reload");
    // An operator deploys a renewed certificate: same paths, new files.
    let renewed = pki.write_server("server", "localhost-renewed");
    assert_ne!(first, renewed);
    let deadline = Instant::now() + WAIT;
    loop {
        let now = served_certificate(b.addr, client.clone()).await;
        if now == renewed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not served within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection made before the reload goes on with its session.
    round_trip(&open).await;
    let after = b
        .lapin(client, "guest:guest@", "")
        .await
        .expect("connection after the reload");
    round_trip(&after).await;
}

#[tokio::test]
async fn a_broken_replacement_keeps_the_current_certificate() {
    let pki = Pki::new();
    let b = TlsBroker::start(pki.options(Verify::None, false)).await;
    assert!(
        !b.reloader.reload().expect("unchanged files"),
        "nothing changed"
    );
    let first = served_certificate(b.addr, pki.client_config(None)).await;
    // A certificate whose key has not been written yet: the pair does not match.
    let key = std::fs::read(pki.path("server.key")).expect("key");
    pki.write_server("server", "half-deployed");
    common::tls::write_atomically(&pki.path("server.key"), &key);
    let e = b
        .reloader
        .reload()
        .expect_err("a mismatched pair is refused");
    assert!(e.to_string().contains("certfile"), "{e}");
    assert_eq!(
        served_certificate(b.addr, pki.client_config(None)).await,
        first,
        "the previous certificate stays in use"
    );
    // Garbage in the certificate file: refused too, with the file named.
    common::tls::write_atomically(&pki.path("server.pem"), b"not a certificate");
    let e = b.reloader.reload().expect_err("garbage is refused");
    assert!(e.to_string().starts_with("ssl_options.certfile"), "{e}");
    assert_eq!(
        served_certificate(b.addr, pki.client_config(None)).await,
        first
    );
}
