//! TLS through the real binary: AMQPS, HTTPS for the management API and the metrics, all
//! from the config file; EXTERNAL as the certificate's user; certificates reloaded on
//! SIGHUP; bad TLS settings stop the start with the setting and the file named.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::tcp::{RustlsConnector, TcpStream};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

use common::{free_port, https_get, json_body, refused_start, start, tls_connect, Pki};

// lapin's connector returns tcp-stream's HandshakeError, large by its own design.
#[allow(clippy::result_large_err)]
async fn amqps(
    port: u16,
    config: std::sync::Arc<rustls::ClientConfig>,
    url_tail: &str,
) -> lapin::Result<Connection> {
    let uri = format!("amqps://localhost:{port}{url_tail}")
        .parse()
        .expect("URI");
    let connector = RustlsConnector::from(config);
    Connection::connector(
        uri,
        Box::new(move |_| {
            let s =
                TcpStream::connect(("127.0.0.1", port))?.into_rustls(&connector, "localhost")?;
            s.set_nonblocking(true)?;
            Ok(s)
        }),
        ConnectionProperties::default(),
    )
    .await
}

#[tokio::test]
async fn the_config_file_serves_amqps_https_and_metrics_over_tls() {
    let pki = Pki::new();
    let (amqp, amqps_port, mgmt, metrics) = (free_port(), free_port(), free_port(), free_port());
    let conf = format!(
        "listeners.tcp.default = 127.0.0.1:{amqp}\n\
         listeners.ssl.default = 127.0.0.1:{amqps_port}\n\
         ssl_options.cacertfile = {ca}\n\
         ssl_options.certfile = {cert}\n\
         ssl_options.keyfile = {key}\n\
         ssl_options.verify = verify_peer\n\
         ssl_options.fail_if_no_peer_cert = false\n\
         management.ssl.port = {mgmt}\n\
         management.ssl.ip = 127.0.0.1\n\
         management.ssl.certfile = {cert}\n\
         management.ssl.keyfile = {key}\n\
         prometheus.ssl.port = {metrics}\n\
         prometheus.ssl.ip = 127.0.0.1\n\
         prometheus.ssl.certfile = {cert}\n\
         prometheus.ssl.keyfile = {key}\n",
        ca = pki.file("ca.pem"),
        cert = pki.file("server.pem"),
        key = pki.file("server.key"),
    );
    let warren = start(&conf, mgmt);

    // EXTERNAL as guest (CN=guest), who may log in from localhost.
    let conn = amqps(
        amqps_port,
        pki.client_config(Some("guest")),
        "/%2F?auth_mechanism=external",
    )
    .await
    .expect("EXTERNAL over AMQPS");
    let ch = conn.create_channel().await.expect("channel");
    let q = ch
        .queue_declare("tls-q", Default::default(), FieldTable::default())
        .await
        .expect("declare");
    let mut consumer = ch
        .basic_consume(
            q.name().as_str(),
            "",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    ch.basic_publish(
        "",
        "tls-q",
        BasicPublishOptions::default(),
        b"hello",
        BasicProperties::default(),
    )
    .await
    .expect("publish");
    let d = tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("delivery in time")
        .expect("delivery")
        .expect("ok");
    assert_eq!(d.data, b"hello");
    // Without a client certificate (fail_if_no_peer_cert = false), PLAIN still works and
    // EXTERNAL is not offered.
    let plain = amqps(amqps_port, pki.client_config(None), "/%2F")
        .await
        .expect("PLAIN (lapin's default guest:guest) without a client certificate");
    plain.close(200, "bye").await.expect("close");
    let no_cert = amqps(
        amqps_port,
        pki.client_config(None),
        "/%2F?auth_mechanism=external",
    )
    .await;
    assert!(no_cert.is_err(), "EXTERNAL without a certificate");

    // The management API over HTTPS: listeners and the connection's TLS facts.
    let overview = json_body(&https_get(mgmt, pki.client_config(None), "/api/overview").await);
    let listeners = overview["listeners"].as_array().expect("listeners");
    let has = |protocol: &str, port: u16| {
        listeners
            .iter()
            .any(|l| l["protocol"] == protocol && l["port"] == port)
    };
    assert!(has("amqp", amqp), "{listeners:?}");
    assert!(has("amqp/ssl", amqps_port), "{listeners:?}");
    assert!(has("https", mgmt), "{listeners:?}");
    assert!(has("https/prometheus", metrics), "{listeners:?}");
    assert!(
        !listeners.iter().any(|l| l["protocol"] == "http"),
        "HTTPS alone replaces HTTP"
    );
    let conns = json_body(&https_get(mgmt, pki.client_config(None), "/api/connections").await);
    let c = conns
        .as_array()
        .and_then(|a| a.iter().find(|c| c["auth_mechanism"] == "EXTERNAL"))
        .unwrap_or_else(|| panic!("the EXTERNAL connection in {conns}"));
    assert_eq!(c["ssl"], true);
    assert_eq!(c["user"], "guest");
    assert_eq!(c["peer_cert_subject"], "CN=guest");
    assert_eq!(c["peer_cert_issuer"], "CN=Warren test CA");
    assert!(
        c["ssl_protocol"] == "tlsv1.3" || c["ssl_protocol"] == "tlsv1.2",
        "{c}"
    );

    // Prometheus over HTTPS.
    let reply = https_get(metrics, pki.client_config(None), "/metrics").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("rabbitmq_connections"), "metrics body");

    // A renewed certificate, picked up at SIGHUP for the next connections.
    let renewed = pki.write_server("renewed");
    let status = Command::new("kill")
        .args(["-HUP", &warren.child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    for port in [amqps_port, mgmt] {
        loop {
            let s = tls_connect(port, pki.client_config(None))
                .await
                .expect("TLS");
            if s.get_ref().1.peer_certificates().expect("cert")[0] == renewed {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "port {port} still serves the old certificate"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The connection from before goes on.
    ch.basic_publish(
        "",
        "tls-q",
        BasicPublishOptions::default(),
        b"again",
        BasicProperties::default(),
    )
    .await
    .expect("publish after the reload");
    let d = tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("delivery in time")
        .expect("delivery")
        .expect("ok");
    assert_eq!(d.data, b"again");
    conn.close(200, "bye").await.expect("close");
}

#[test]
fn a_bad_tls_file_stops_the_start_naming_the_setting_and_the_file() {
    let pki = Pki::new();
    let port = free_port();
    let err = refused_start(&format!(
        "listeners.tcp = none\n\
         listeners.ssl.default = 127.0.0.1:{port}\n\
         ssl_options.certfile = /nonexistent/server.pem\n\
         ssl_options.keyfile = {key}\n\
         management.tcp.port = 0\n\
         prometheus.tcp.port = 0\n",
        key = pki.file("server.key"),
    ));
    assert!(
        err.contains("ssl_options.certfile /nonexistent/server.pem: cannot read"),
        "{err}"
    );
    // A key file that holds no key.
    let err = refused_start(&format!(
        "listeners.ssl.default = 127.0.0.1:{port}\n\
         ssl_options.certfile = {cert}\n\
         ssl_options.keyfile = {ca}\n\
         management.tcp.port = 0\n\
         prometheus.tcp.port = 0\n",
        cert = pki.file("server.pem"),
        ca = pki.file("ca.pem"),
    ));
    assert!(err.contains("ssl_options.keyfile"), "{err}");
    // verify_peer without the CAs to verify against.
    let err = refused_start(&format!(
        "listeners.ssl.default = 127.0.0.1:{port}\n\
         ssl_options.certfile = {cert}\n\
         ssl_options.keyfile = {key}\n\
         ssl_options.verify = verify_peer\n\
         management.tcp.port = 0\n\
         prometheus.tcp.port = 0\n",
        cert = pki.file("server.pem"),
        key = pki.file("server.key"),
    ));
    assert!(err.contains("ssl_options.cacertfile"), "{err}");
    // HTTPS options without the port that would use them.
    let err = refused_start(&format!(
        "management.ssl.certfile = {cert}\n\
         management.tcp.port = 0\n\
         prometheus.tcp.port = 0\n",
        cert = pki.file("server.pem"),
    ));
    assert!(err.contains("management.ssl.port is not"), "{err}");
}
