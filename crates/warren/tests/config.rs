//! The configuration file through the real binary: its listeners, default user and vhost,
//! limits and tuning take effect; environment variables override it; a bad key stops the
//! start with the key and the line.

mod common;

use common::{free_port, refused_start, start_with_env};

async fn connect(url: &str) -> lapin::Result<lapin::Connection> {
    lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await
}

#[tokio::test]
async fn the_file_sets_listeners_defaults_limits_and_tuning() {
    let (amqp, mgmt) = (free_port(), free_port());
    let conf = format!(
        "# a broker for the test\n\
         listeners.tcp.local = 127.0.0.1:{amqp}\n\
         management.tcp.ip = 127.0.0.1\n\
         management.tcp.port = {mgmt}\n\
         prometheus.tcp.port = 0\n\
         prometheus.tcp.ip = 127.0.0.1\n\
         default_user = admin\n\
         default_pass = from-the-file\n\
         default_vhost = main\n\
         connection_max = 1\n\
         heartbeat = 7\n\
         frame_max = 8192\n\
         channel_max = 10\n\
         max_message_size = 2kB\n\
         log.console.level = warning\n"
    );
    // The environment overrides the file.
    let _w = start_with_env(&conf, &[("WARREN_DEFAULT_PASS", "from-the-env")], amqp);
    let url = format!("amqp://admin:from-the-env@127.0.0.1:{amqp}/main");
    assert!(
        connect(&format!("amqp://admin:from-the-file@127.0.0.1:{amqp}/main"))
            .await
            .is_err(),
        "the environment's password replaced the file's"
    );
    let conn = connect(&url)
        .await
        .expect("the default user on the default vhost");
    let cfg = conn.configuration();
    assert_eq!(cfg.heartbeat(), 7);
    assert_eq!(cfg.frame_max(), 8192);
    assert_eq!(cfg.channel_max(), 10);
    // connection_max = 1: a second connection is refused at connection.open.
    let err = connect(&url).await.expect_err("over the node's limit");
    let text = err.to_string();
    assert!(
        text.contains("node connection limit (1) is reached"),
        "{text}"
    );
    // max_message_size = 2kB: 2000 bytes pass, 2001 close the channel (the confirm of the
    // refused publish fails with the channel's close).
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(Default::default())
        .await
        .expect("confirms");
    let q = ch
        .queue_declare("", Default::default(), Default::default())
        .await
        .expect("queue");
    let (fits, too_big) = (vec![1u8; 2000], vec![1u8; 2001]);
    ch.basic_publish(
        "",
        q.name().as_str(),
        Default::default(),
        &fits,
        Default::default(),
    )
    .await
    .expect("sent")
    .await
    .expect("at the limit: confirmed");
    let err = ch
        .basic_publish(
            "",
            q.name().as_str(),
            Default::default(),
            &too_big,
            Default::default(),
        )
        .await
        .expect("sent")
        .await
        .expect_err("over the limit: the channel was closed");
    assert!(err.to_string().contains("PRECONDITION_FAILED"), "{err}");
    // The management API moved where the file said.
    let reply = http_get(mgmt, "/api/overview");
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read");
    reply
}

#[test]
fn a_bad_key_stops_the_start_with_the_key_and_line() {
    let err = refused_start("heartbeat = 30\nheartbeet = 30\n");
    assert!(err.contains("line 2: unknown key 'heartbeet'"), "{err}");
    assert!(err.contains("warren.conf"), "the file is named: {err}");
}
