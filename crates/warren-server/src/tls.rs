//! TLS for Warren's listeners (AMQPS here; the binary hands the same configurations to the
//! management and Prometheus listeners): certificate files in, rustls server configurations
//! out, rebuilt when the files change; what a TLS session says about itself for the registry;
//! and the login name a client certificate carries, for SASL EXTERNAL.
//!
//! The options and their defaults are RabbitMQ's `ssl_options`: `verify = verify_none` asks
//! for no client certificate; `verify_peer` asks for one and checks it against `cacertfile`,
//! and `fail_if_no_peer_cert = true` also refuses a client that sends none.
//!
//! A configuration is published on a `watch` channel: a listener takes the current one for
//! each connection it accepts, so a reloaded certificate is used from the next connection on
//! while connections already open keep the session they negotiated.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConnection};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, warn};
use warren_broker::{Broker, TlsInfo};

use crate::connection::{self, Signals};
use crate::ServerConfig;

/// A rustls server configuration as listeners share it (see [`Reloader`]).
pub type TlsConfig = Arc<rustls::ServerConfig>;

/// RabbitMQ's `ssl_options.verify`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Verify {
    /// No client certificate is asked for (RabbitMQ's default).
    #[default]
    None,
    /// A client certificate is asked for and must chain to `cacertfile`.
    Peer,
}

/// A protocol version `ssl_options.versions.<n>` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    /// RabbitMQ's name (`tlsv1.2`, `tlsv1.3`).
    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "tlsv1.2",
            TlsVersion::Tls13 => "tlsv1.3",
        }
    }
}

/// One listener family's TLS settings: RabbitMQ's `ssl_options.*` (AMQP) or
/// `management.ssl.*` / `prometheus.ssl.*` (HTTP).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// The server's certificate chain (PEM, leaf first).
    pub certfile: Option<PathBuf>,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1; not encrypted).
    pub keyfile: Option<PathBuf>,
    /// The CA certificates client certificates are checked against (PEM).
    pub cacertfile: Option<PathBuf>,
    pub verify: Verify,
    /// With `verify_peer`: refuse a client that sends no certificate.
    pub fail_if_no_peer_cert: bool,
    /// Protocol versions allowed (empty: TLS 1.2 and 1.3).
    pub versions: Vec<TlsVersion>,
    /// Choose the cipher suite by the server's preference rather than the client's.
    pub honor_cipher_order: bool,
}

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{key} is not set (a TLS listener needs a certificate and its key)")]
    Missing { key: String },
    #[error("{key} {path}: {reason}")]
    File {
        key: String,
        path: PathBuf,
        reason: String,
    },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

/// The bytes of the files a configuration was built from, to notice when they change.
type FileContents = Vec<(PathBuf, Vec<u8>)>;

impl TlsOptions {
    /// Whether any setting was given (a listener section the config file mentioned).
    pub fn is_set(&self) -> bool {
        *self != TlsOptions::default()
    }

    /// Reads the files and builds the rustls configuration. `prefix` names the settings in
    /// errors (`ssl_options`, `management.ssl`).
    pub fn load(&self, prefix: &str) -> Result<TlsConfig, TlsError> {
        self.load_with_contents(prefix).map(|(c, _)| c)
    }

    fn load_with_contents(&self, prefix: &str) -> Result<(TlsConfig, FileContents), TlsError> {
        let key = |k: &str| format!("{prefix}.{k}");
        let mut contents = FileContents::new();
        let mut read = |k: &str, path: &Option<PathBuf>| -> Result<Option<Vec<u8>>, TlsError> {
            let Some(path) = path else { return Ok(None) };
            let bytes = std::fs::read(path).map_err(|e| TlsError::File {
                key: key(k),
                path: path.clone(),
                reason: format!("cannot read: {e}"),
            })?;
            contents.push((path.clone(), bytes.clone()));
            Ok(Some(bytes))
        };
        let cert_pem = read("certfile", &self.certfile)?.ok_or_else(|| TlsError::Missing {
            key: key("certfile"),
        })?;
        let key_pem = read("keyfile", &self.keyfile)?.ok_or_else(|| TlsError::Missing {
            key: key("keyfile"),
        })?;
        let ca_pem = read("cacertfile", &self.cacertfile)?;

        let file_error = |k: &str, path: &Option<PathBuf>, reason: String| TlsError::File {
            key: key(k),
            path: path.clone().unwrap_or_default(),
            reason,
        };
        let certs = certificates(&cert_pem)
            .map_err(|reason| file_error("certfile", &self.certfile, reason))?;
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            let reason = if String::from_utf8_lossy(&key_pem).contains("ENCRYPTED") {
                "encrypted private keys are not supported".to_owned()
            } else {
                format!("no private key found: {e}")
            };
            file_error("keyfile", &self.keyfile, reason)
        })?;
        let roots = match &ca_pem {
            Some(pem) => {
                let mut store = RootCertStore::empty();
                for c in certificates(pem)
                    .map_err(|reason| file_error("cacertfile", &self.cacertfile, reason))?
                {
                    store.add(c).map_err(|e| {
                        file_error("cacertfile", &self.cacertfile, format!("not a CA: {e}"))
                    })?;
                }
                Some(Arc::new(store))
            }
            None => None,
        };

        // Explicitly ring: the provider lapin's TLS already builds, and no process-wide
        // default has to be installed.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: Vec<&'static rustls::SupportedProtocolVersion> = if self.versions.is_empty() {
            rustls::DEFAULT_VERSIONS.to_vec()
        } else {
            self.versions
                .iter()
                .map(|v| match v {
                    TlsVersion::Tls12 => &rustls::version::TLS12,
                    TlsVersion::Tls13 => &rustls::version::TLS13,
                })
                .collect()
        };
        let invalid = |k: &str, e: rustls::Error| TlsError::Invalid {
            key: key(k),
            reason: e.to_string(),
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| invalid("versions", e))?;
        let builder = match self.verify {
            Verify::None => builder.with_no_client_auth(),
            Verify::Peer => {
                let roots = roots.ok_or_else(|| TlsError::Invalid {
                    key: key("verify"),
                    reason: format!(
                        "verify_peer needs {} (the CAs client certificates are checked against)",
                        key("cacertfile")
                    ),
                })?;
                let mut v = WebPkiClientVerifier::builder_with_provider(roots, provider);
                if !self.fail_if_no_peer_cert {
                    v = v.allow_unauthenticated();
                }
                let verifier = v.build().map_err(|e| TlsError::Invalid {
                    key: key("cacertfile"),
                    reason: e.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        // Also checks that the key belongs to the certificate: a certificate replaced before
        // its key must not be served with the old key.
        let mut config =
            builder
                .with_single_cert(certs, private_key)
                .map_err(|e| TlsError::Invalid {
                    key: format!("{} and {}", key("certfile"), key("keyfile")),
                    reason: e.to_string(),
                })?;
        config.ignore_client_order = self.honor_cipher_order;
        Ok((Arc::new(config), contents))
    }
}

/// The certificates in a PEM file (at least one).
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(certs)
}

/// A TLS configuration kept in step with its files: [`Reloader::reload`] re-reads them and,
/// when their bytes changed, publishes a configuration built from the new ones. Files that
/// do not make a valid configuration (say, a certificate written before its key) leave the
/// current one in force; the next check tries again.
pub struct Reloader {
    prefix: String,
    options: TlsOptions,
    files: Mutex<FileContents>,
    current: watch::Sender<TlsConfig>,
}

impl Reloader {
    /// Loads the configuration once; an error here should stop the start.
    pub fn new(prefix: &str, options: TlsOptions) -> Result<Arc<Self>, TlsError> {
        let (config, files) = options.load_with_contents(prefix)?;
        Ok(Arc::new(Reloader {
            prefix: prefix.to_owned(),
            options,
            files: Mutex::new(files),
            current: watch::channel(config).0,
        }))
    }

    /// The configuration as it changes; listeners read it for each connection.
    pub fn subscribe(&self) -> watch::Receiver<TlsConfig> {
        self.current.subscribe()
    }

    /// Re-reads the files; a changed set is loaded and published. Ok(true) when it was.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let changed = {
            let files = self.files.lock();
            files
                .iter()
                .any(|(path, bytes)| std::fs::read(path).ok().as_ref() != Some(bytes))
        };
        if !changed {
            return Ok(false);
        }
        let (config, files) = self.options.load_with_contents(&self.prefix)?;
        *self.files.lock() = files;
        self.current.send_replace(config);
        info!(settings = %self.prefix, "TLS certificates reloaded");
        Ok(true)
    }

    /// Reloads, logging the outcome (for the periodic check and SIGHUP).
    pub fn reload_logged(&self) {
        if let Err(e) = self.reload() {
            warn!(settings = %self.prefix, error = %e, "TLS certificates not reloaded; the previous ones stay in use");
        }
    }
}

/// Checks the reloaders' files every `every` until `shutdown` turns true.
pub async fn watch_files(
    reloaders: Vec<Arc<Reloader>>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    if reloaders.is_empty() {
        return;
    }
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = interval.tick() => {
                let rs = reloaders.clone();
                // File reads and key parsing are blocking work.
                let _ = tokio::task::spawn_blocking(move || {
                    for r in rs {
                        r.reload_logged();
                    }
                })
                .await;
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

/// Where EXTERNAL takes the user name from (RabbitMQ's `ssl_cert_login_from`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LoginFrom {
    /// The subject's CN (several are joined with `,`, as RabbitMQ does).
    #[default]
    CommonName,
    /// The whole subject, as RabbitMQ writes it (`CN=client,O=Example,C=SE`).
    DistinguishedName,
    /// A subject alternative name ([`CertLogin::san_type`], [`CertLogin::san_index`]).
    SubjectAlternativeName,
}

/// RabbitMQ's `ssl_cert_login_san_type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SanType {
    #[default]
    Dns,
    Email,
    Uri,
    Ip,
}

/// How a client certificate names its user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CertLogin {
    pub from: LoginFrom,
    pub san_type: SanType,
    /// Which of the SANs of that type (0: the first).
    pub san_index: usize,
}

/// A verified client certificate.
#[derive(Debug, Clone)]
pub struct PeerCert {
    pub der: CertificateDer<'static>,
}

impl PeerCert {
    /// The user name `login` takes from this certificate, or why there is none.
    pub fn login_name(&self, login: &CertLogin) -> Result<String, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(&self.der)
            .map_err(|e| format!("client certificate unreadable: {e}"))?;
        match login.from {
            LoginFrom::CommonName => {
                let cns: Vec<String> = cert
                    .subject()
                    .iter_common_name()
                    .filter_map(|a| a.as_str().ok().map(str::to_owned))
                    .collect();
                if cns.is_empty() {
                    return Err("client certificate subject has no CN".into());
                }
                Ok(cns.join(","))
            }
            LoginFrom::DistinguishedName => Ok(format_name(cert.subject())),
            LoginFrom::SubjectAlternativeName => {
                use x509_parser::extensions::GeneralName;
                let sans = cert
                    .subject_alternative_name()
                    .map_err(|e| format!("client certificate SANs unreadable: {e}"))?;
                let names = sans
                    .map(|s| s.value.general_names.clone())
                    .unwrap_or_default();
                let of_type: Vec<String> = names
                    .iter()
                    .filter_map(|n| match (login.san_type, n) {
                        (SanType::Dns, GeneralName::DNSName(s))
                        | (SanType::Email, GeneralName::RFC822Name(s))
                        | (SanType::Uri, GeneralName::URI(s)) => Some((*s).to_owned()),
                        (SanType::Ip, GeneralName::IPAddress(b)) => ip_text(b),
                        _ => None,
                    })
                    .collect();
                of_type.get(login.san_index).cloned().ok_or_else(|| {
                    format!(
                        "client certificate has no {:?} subject alternative name at index {}",
                        login.san_type, login.san_index
                    )
                })
            }
        }
    }

    /// Subject, issuer and validity as RabbitMQ's management API shows them.
    fn describe(&self) -> Option<(String, String, String)> {
        let (_, cert) = x509_parser::parse_x509_certificate(&self.der).ok()?;
        let v = cert.validity();
        let validity = format!(
            "{} - {}",
            utc_text(v.not_before.timestamp()),
            utc_text(v.not_after.timestamp())
        );
        Some((
            format_name(cert.subject()),
            format_name(cert.issuer()),
            validity,
        ))
    }
}

fn ip_text(b: &[u8]) -> Option<String> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b)
            .ok()
            .map(|a| std::net::Ipv4Addr::from(a).to_string()),
        16 => <[u8; 16]>::try_from(b)
            .ok()
            .map(|a| std::net::Ipv6Addr::from(a).to_string()),
        _ => None,
    }
}

/// RabbitMQ's short names for attribute types (`rabbit_cert_info`); others are written as
/// their dotted OID.
fn attribute_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "SERIALNUMBER",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "TITLE",
        "2.5.4.42" => "GIVENNAME",
        "2.5.4.43" => "INITIALS",
        "2.5.4.44" => "GENERATIONQUALIFIER",
        "2.5.4.65" => "PSEUDONYM",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        "1.2.840.113549.1.9.1" => "EMAILADDRESS",
        _ => return None,
    })
}

/// A distinguished name as RabbitMQ formats it (RFC 4514: the last RDN first, multi-valued
/// RDNs joined with `+`, special characters escaped).
pub fn format_name(name: &x509_parser::x509::X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let ty = attribute_name(&oid).map_or(oid.clone(), str::to_owned);
                    let value = atv
                        .as_str()
                        .map(escape_rdn_value)
                        .unwrap_or_else(|_| format!("#{}", hex(atv.attr_value().data)));
                    format!("{ty}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 4514's escaping of an attribute value.
fn escape_rdn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Seconds since the epoch as `2024-01-31T12:00:00Z`.
fn utc_text(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// What an accepted TLS session is: its parameters for the registry, and the client's
/// certificate when it sent one that was verified.
#[derive(Debug, Clone)]
pub struct Session {
    pub info: TlsInfo,
    pub peer_cert: Option<PeerCert>,
}

impl Session {
    pub fn of(conn: &ServerConnection) -> Session {
        let (key_exchange, cipher, hash) = conn
            .negotiated_cipher_suite()
            .map(|s| suite_names(&format!("{:?}", s.suite())))
            .unwrap_or_default();
        let protocol = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "tlsv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "tlsv1.2",
            _ => "unknown",
        };
        // Only a verifying listener asks for a certificate, and rustls hands one on only
        // once it has been verified against the CAs.
        let peer_cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|der| PeerCert {
                der: der.clone().into_owned(),
            });
        let described = peer_cert.as_ref().and_then(PeerCert::describe);
        Session {
            info: TlsInfo {
                protocol: protocol.into(),
                key_exchange,
                cipher,
                hash,
                peer_cert_subject: described.as_ref().map(|d| d.0.clone()),
                peer_cert_issuer: described.as_ref().map(|d| d.1.clone()),
                peer_cert_validity: described.map(|d| d.2),
            },
            peer_cert,
        }
    }
}

/// RabbitMQ's (Erlang's) names for a suite's key exchange, cipher and MAC, from rustls's
/// (`TLS13_AES_256_GCM_SHA384`, `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`).
fn suite_names(suite: &str) -> (String, String, String) {
    let (kx, rest) = if let Some(rest) = suite.strip_prefix("TLS13_") {
        ("any".to_owned(), rest)
    } else {
        let body = suite.strip_prefix("TLS_").unwrap_or(suite);
        match body.split_once("_WITH_") {
            Some((kx, rest)) => (kx.to_lowercase(), rest),
            None => (String::new(), body),
        }
    };
    let (cipher, mac) = match rest.rsplit_once('_') {
        Some((c, m)) if m.starts_with("SHA") => (c.to_lowercase(), m.to_lowercase()),
        _ => (rest.to_lowercase(), String::new()),
    };
    let aead = ["gcm", "ccm", "poly1305"]
        .iter()
        .any(|a| cipher.contains(a));
    (kx, cipher, if aead { "aead".into() } else { mac })
}

/// Serves one socket accepted on a TLS listener: the TLS handshake (within the AMQP
/// handshake timeout), then the AMQP connection over it.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    tls: TlsConfig,
    broker: Arc<Broker>,
    config: Arc<ServerConfig>,
    signals: Signals,
) {
    let local = stream.local_addr().unwrap_or(peer);
    let accepted = tokio::time::timeout(
        config.handshake_timeout,
        tokio_rustls::TlsAcceptor::from(tls).accept(stream),
    )
    .await;
    let stream = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            info!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let session = Session::of(stream.get_ref().1);
    // One TLS state machine serves both directions, so the halves share it behind
    // tokio's split (a plain socket's owned halves need no such lock).
    let (rd, wr) = tokio::io::split(stream);
    connection::serve_io(rd, wr, peer, local, Some(session), broker, config, signals).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_get_erlangs_names() {
        assert_eq!(
            suite_names("TLS13_AES_256_GCM_SHA384"),
            ("any".into(), "aes_256_gcm".into(), "aead".into())
        );
        assert_eq!(
            suite_names("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
            ("ecdhe_rsa".into(), "aes_128_gcm".into(), "aead".into())
        );
        assert_eq!(
            suite_names("TLS13_CHACHA20_POLY1305_SHA256"),
            ("any".into(), "chacha20_poly1305".into(), "aead".into())
        );
    }

    #[test]
    fn dates_are_utc_iso_8601() {
        assert_eq!(utc_text(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_text(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_text(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn rdn_values_are_escaped() {
        assert_eq!(escape_rdn_value("a,b"), "a\\,b");
        assert_eq!(escape_rdn_value(" x "), "\\ x\\ ");
        assert_eq!(escape_rdn_value("#1"), "\\#1");
        assert_eq!(escape_rdn_value("plain"), "plain");
    }

    #[test]
    fn missing_files_are_named_with_their_setting() {
        let o = TlsOptions {
            certfile: Some("/nonexistent/cert.pem".into()),
            keyfile: Some("/nonexistent/key.pem".into()),
            ..TlsOptions::default()
        };
        let e = o.load("ssl_options").unwrap_err().to_string();
        assert!(
            e.starts_with("ssl_options.certfile /nonexistent/cert.pem: cannot read"),
            "{e}"
        );
        let e = TlsOptions::default()
            .load("management.ssl")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("management.ssl.certfile is not set"), "{e}");
    }
}
