//! TLS fixtures: certificates made at run time with rcgen (a CA, a second CA nobody trusts,
//! a server certificate for localhost and 127.0.0.1, client certificates), a broker with an
//! AMQPS listener, and clients: lapin over rustls, and a raw TLS socket that reads
//! `connection.start`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use lapin::tcp::{RustlsConnector, TcpStream as LapinStream};
use lapin::{Connection, ConnectionProperties};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use warren_broker::Broker;
use warren_codec::{frame, Method};
use warren_server::tls::{Reloader, TlsOptions, Verify};
use warren_server::{Server, ServerConfig};

use super::{within, WAIT};

/// A client's certificate chain and key.
pub struct Identity {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Certificates in a temporary directory: `ca.pem`, `server.pem`, `server.key`.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    other_ca: CertifiedIssuer<'static, KeyPair>,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(p, KeyPair::generate().expect("key")).expect("CA certificate")
}

/// Parameters for a leaf certificate with subject `CN=cn` (and `O=org` when given).
pub fn leaf(cn: &str, org: Option<&str>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    if let Some(o) = org {
        p.distinguished_name.push(DnType::OrganizationName, o);
    }
    p.distinguished_name.push(DnType::CommonName, cn);
    p
}

impl Pki {
    pub fn new() -> Self {
        let pki = Pki {
            dir: tempfile::tempdir().expect("tempdir"),
            ca: ca("Warren test CA"),
            other_ca: ca("Somebody else's CA"),
        };
        std::fs::write(pki.path("ca.pem"), pki.ca.pem()).expect("write ca.pem");
        pki.write_server("server", "localhost");
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        self.ca.pem().into_bytes()
    }

    /// Writes `<name>.pem` and `<name>.key`: a server certificate for localhost and
    /// 127.0.0.1 with subject `CN=cn`, signed by the CA. Returns the certificate.
    pub fn write_server(&self, name: &str, cn: &str) -> CertificateDer<'static> {
        let mut p = leaf(cn, None);
        p.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().expect("dns name")),
            SanType::IpAddress("127.0.0.1".parse().expect("ip")),
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.ca).expect("server certificate");
        write_atomically(&self.path(&format!("{name}.pem")), cert.pem().as_bytes());
        write_atomically(
            &self.path(&format!("{name}.key")),
            key.serialize_pem().as_bytes(),
        );
        cert.der().clone()
    }

    /// A client certificate with subject `CN=cn`, signed by the CA.
    pub fn client(&self, cn: &str) -> Identity {
        self.issue(leaf(cn, None), false)
    }

    /// A client certificate with subject `CN=cn` from a CA the broker does not trust.
    pub fn untrusted_client(&self, cn: &str) -> Identity {
        self.issue(leaf(cn, None), true)
    }

    /// A client certificate with the given parameters.
    pub fn issue(&self, mut p: CertificateParams, untrusted: bool) -> Identity {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("key");
        let issuer = if untrusted { &self.other_ca } else { &self.ca };
        let cert = p.signed_by(&key, issuer).expect("client certificate");
        Identity {
            certs: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }

    /// The server's TLS options (`server.pem`, `server.key`, `ca.pem`).
    pub fn options(&self, verify: Verify, fail_if_no_peer_cert: bool) -> TlsOptions {
        TlsOptions {
            certfile: Some(self.path("server.pem")),
            keyfile: Some(self.path("server.key")),
            cacertfile: Some(self.path("ca.pem")),
            verify,
            fail_if_no_peer_cert,
            ..TlsOptions::default()
        }
    }

    /// A client configuration trusting the CA, presenting `identity` if given.
    pub fn client_config(&self, identity: Option<&Identity>) -> Arc<rustls::ClientConfig> {
        self.client_config_for(identity, rustls::DEFAULT_VERSIONS)
    }

    pub fn client_config_for(
        &self,
        identity: Option<&Identity>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca.der().clone())
            .expect("CA into the root store");
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots);
        let config = match identity {
            Some(id) => builder
                .with_client_auth_cert(id.certs.clone(), id.key.clone_key())
                .expect("client certificate"),
            None => builder.with_no_client_auth(),
        };
        Arc::new(config)
    }
}

/// Replaces a file in one step (write aside, rename), as an operator's deploy should: a
/// reader never sees half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A broker with one AMQPS listener (and one plain one) on loopback; stopped on drop.
pub struct TlsBroker {
    pub addr: SocketAddr,
    pub plain: SocketAddr,
    pub broker: Arc<Broker>,
    pub reloader: Arc<Reloader>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl TlsBroker {
    pub async fn start(options: TlsOptions) -> Self {
        Self::start_with(Arc::new(Broker::new()), ServerConfig::default(), options).await
    }

    pub async fn start_with(
        broker: Arc<Broker>,
        config: ServerConfig,
        options: TlsOptions,
    ) -> Self {
        let reloader = Reloader::new("ssl_options", options).expect("load the TLS options");
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let mut server = Server::bind(&[loopback], broker.clone(), config)
            .await
            .expect("bind");
        server
            .bind_tls(&[loopback], reloader.subscribe())
            .expect("bind AMQPS");
        let (addr, plain) = (server.tls_addrs()[0], server.local_addrs()[0]);
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(server.run(rx));
        TlsBroker {
            addr,
            plain,
            broker,
            reloader,
            shutdown,
            task: Some(task),
        }
    }

    /// Checks the certificate files every `every` (as the binary does every 5 s).
    pub fn watch_files(&self, every: Duration) {
        tokio::spawn(warren_server::tls::watch_files(
            vec![self.reloader.clone()],
            every,
            self.shutdown.subscribe(),
        ));
    }

    /// A lapin connection over TLS with `config`; `userinfo` is `user:pass@` or empty,
    /// `query` e.g. `?auth_mechanism=external`.
    // lapin's connector returns tcp-stream's HandshakeError, large by its own design.
    #[allow(clippy::result_large_err)]
    pub async fn lapin(
        &self,
        config: Arc<rustls::ClientConfig>,
        userinfo: &str,
        query: &str,
    ) -> lapin::Result<Connection> {
        let url = format!(
            "amqps://{userinfo}localhost:{}/%2F{query}",
            self.addr.port()
        );
        let uri = url.parse().expect("AMQP URI");
        let addr = self.addr;
        let connector = RustlsConnector::from(config);
        within(Connection::connector(
            uri,
            Box::new(move |_| {
                let stream = LapinStream::connect(addr)?.into_rustls(&connector, "localhost")?;
                stream.set_nonblocking(true)?;
                Ok(stream)
            }),
            ConnectionProperties::default(),
        ))
        .await
    }

    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// A TLS connection to `addr` with `config` (server name `localhost`), handshake complete.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("server name");
    within(tokio_rustls::TlsConnector::from(config).connect(name, tcp)).await
}

/// Connects over TLS, sends the protocol header and returns the SASL mechanisms that
/// `connection.start` offers. An error when the server ends the TLS session instead (with
/// TLS 1.3 a refused client certificate shows only at the first read).
pub async fn offered_mechanisms(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<String> {
    let mut s = tls_connect(addr, config).await?;
    s.write_all(frame::PROTOCOL_HEADER).await?;
    let mut buf = BytesMut::new();
    loop {
        if let Ok(Some(f)) = frame::decode_frame(&mut buf, 0) {
            return match Method::decode(f.payload) {
                Ok(Method::ConnectionStart(m)) => {
                    Ok(String::from_utf8_lossy(m.mechanisms.as_bytes()).into_owned())
                }
                other => Err(std::io::Error::other(format!(
                    "not connection.start: {other:?}"
                ))),
            };
        }
        let n = tokio::time::timeout(WAIT, s.read_buf(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("timed out"))??;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// The certificate the server presented on a fresh connection.
pub async fn served_certificate(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> CertificateDer<'static> {
    let s = tls_connect(addr, config).await.expect("TLS handshake");
    s.get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .clone()
}
