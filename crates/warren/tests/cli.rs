//! The `warren` command line: version, refusing an unusable port or data directory with a
//! clear error and a non-zero exit, and a clean exit on SIGTERM.

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn warren() -> Command {
    Command::new(env!("CARGO_BIN_EXE_warren"))
}

/// Waits for the process to exit, killing it (and failing) after `limit`.
fn wait_exit(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("warren did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts warren with `args`, its HTTP listeners on ephemeral loopback ports (tests run side
/// by side; the default ports would collide).
fn spawn(args: &[&str]) -> Child {
    warren()
        .args([
            "--management-listen",
            "127.0.0.1:0",
            "--prometheus-listen",
            "127.0.0.1:0",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn warren")
}

#[test]
fn version_prints_the_version() {
    let out = warren().arg("--version").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
}

#[test]
fn taken_port_is_a_clear_error_and_a_nonzero_exit() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let data = tempfile::tempdir().expect("tempdir");
    let child = spawn(&[
        "--amqp-listen",
        &addr,
        "--data-dir",
        data.path().to_str().expect("utf-8 path"),
    ]);
    let out = wait_exit(child, Duration::from_secs(10));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on"), "{err}");
}

#[test]
fn unusable_data_directory_is_a_clear_error_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").expect("write");
    let child = spawn(&[
        "--amqp-listen",
        "127.0.0.1:0",
        "--data-dir",
        file.to_str().expect("utf-8 path"),
    ]);
    let out = wait_exit(child, Duration::from_secs(10));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("data directory"), "{err}");
}

#[test]
fn sigterm_stops_the_broker_cleanly() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let data = tempfile::tempdir().expect("tempdir");
    let child = spawn(&[
        "--amqp-listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        data.path().to_str().expect("utf-8 path"),
    ]);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "warren did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = wait_exit(child, Duration::from_secs(15));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn http_listeners_can_be_moved_and_turned_off() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mgmt = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let data = tempfile::tempdir().expect("tempdir");
    let mut child = warren()
        .args([
            "--amqp-listen",
            &format!("127.0.0.1:{port}"),
            "--management-listen",
            &format!("127.0.0.1:{mgmt}"),
            "--prometheus-listen",
            "none",
            "--data-dir",
            data.path().to_str().expect("utf-8 path"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn warren");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", mgmt)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no management listener"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A plain HTTP request without credentials: RabbitMQ's 401.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", mgmt)).expect("connect");
    s.write_all(b"GET /api/overview HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read");
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("management API listening"), "{err}");
    assert!(!err.contains("Prometheus metrics listening"), "{err}");
}

#[test]
fn max_message_size_is_bounded_by_rabbitmqs_ceiling() {
    let out = wait_exit(
        spawn(&["--max-message-size", "536870913"]),
        Duration::from_secs(10),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--max-message-size"), "{err}");
}
