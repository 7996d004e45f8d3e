//! Shared harness for the binary's tests: the real `warren` started with a config file (and
//! environment), certificates made at run time with rcgen, and a small HTTPS client.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A running `warren`; killed on drop.
pub struct Warren {
    pub child: Child,
    pub dir: tempfile::TempDir,
}

impl Drop for Warren {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts warren with `conf` as its config file and waits until `port` accepts.
pub fn start(conf: &str, port: u16) -> Warren {
    start_with_env(conf, &[], port)
}

/// As [`start`], with environment variables set (e.g. `WARREN_*` settings).
pub fn start_with_env(conf: &str, env: &[(&str, &str)], port: u16) -> Warren {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.conf");
    std::fs::write(&path, conf).expect("write config");
    let child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--config", path.to_str().expect("utf-8")])
        .args([
            "--data-dir",
            dir.path().join("data").to_str().expect("utf-8"),
        ])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn warren");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "warren did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Warren { child, dir }
}

/// Runs warren with `conf` expecting it to refuse to start; returns its stderr.
pub fn refused_start(conf: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.conf");
    std::fs::write(&path, conf).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--config", path.to_str().expect("utf-8")])
        .args([
            "--data-dir",
            dir.path().join("data").to_str().expect("utf-8"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run warren");
    assert!(!out.status.success(), "warren started with {conf}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A CA and certificates signed by it, written to a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    /// `ca.pem`, and `server.pem`/`server.key` for localhost and 127.0.0.1.
    pub fn new() -> Self {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, "Warren test CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().expect("key")).expect("CA");
        let pki = Pki {
            dir: tempfile::tempdir().expect("tempdir"),
            ca,
        };
        std::fs::write(pki.path("ca.pem"), pki.ca.pem()).expect("write");
        pki.write_server("localhost");
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Path as a string, for a config file.
    pub fn file(&self, name: &str) -> String {
        self.path(name).to_str().expect("utf-8").to_owned()
    }

    /// (Re)writes `server.pem` and `server.key` (subject `CN=cn`); returns the certificate.
    pub fn write_server(&self, cn: &str) -> CertificateDer<'static> {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().expect("dns")),
            SanType::IpAddress("127.0.0.1".parse().expect("ip")),
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.ca).expect("server certificate");
        write_atomically(&self.path("server.pem"), cert.pem().as_bytes());
        write_atomically(&self.path("server.key"), key.serialize_pem().as_bytes());
        cert.der().clone()
    }

    /// A client configuration trusting the CA, with a client certificate `CN=cn` if given.
    pub fn client_config(&self, cn: Option<&str>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("root");
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
        Arc::new(match cn {
            Some(cn) => {
                let mut p = CertificateParams::default();
                p.distinguished_name = DistinguishedName::new();
                p.distinguished_name.push(DnType::CommonName, cn);
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                let key = KeyPair::generate().expect("key");
                let cert = p.signed_by(&key, &self.ca).expect("client certificate");
                builder
                    .with_client_auth_cert(
                        vec![cert.der().clone()],
                        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                    )
                    .expect("client auth")
            }
            None => builder.with_no_client_auth(),
        })
    }
}

/// Replaces a file in one step (write aside, rename).
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A TLS connection to 127.0.0.1:`port` as `localhost`.
pub async fn tls_connect(
    port: u16,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// `GET path` over HTTPS as guest; the whole reply (status line, headers, body).
pub async fn https_get(port: u16, config: Arc<rustls::ClientConfig>, path: &str) -> String {
    let mut s = tls_connect(port, config).await.expect("HTTPS handshake");
    // guest:guest
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut reply = Vec::new();
    // The server may close without close_notify after `Connection: close`; what arrived
    // before counts.
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

/// The body of an HTTP/1.1 reply as JSON (chunked or not).
pub fn json_body(reply: &str) -> serde_json::Value {
    let (head, body) = reply.split_once("\r\n\r\n").expect("headers end");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        out
    } else {
        body.to_owned()
    };
    serde_json::from_str(&body).expect("JSON body")
}
