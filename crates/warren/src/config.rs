//! The configuration file, in RabbitMQ's `rabbitmq.conf` format: one `key = value` per line,
//! dotted keys, `#` comment lines. Values come from, in rising precedence: the defaults, the
//! file, `WARREN_*` environment variables (the key upper-cased, `.` written `__`:
//! `WARREN_VM_MEMORY_HIGH_WATERMARK__RELATIVE=0.5`), then command-line flags.
//!
//! A key Warren does not know is an error naming the key and the line: a typo must not leave
//! a production broker on a default nobody chose. See `docs/configuration.md`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use warren_server::tls::{CertLogin, LoginFrom, SanType, TlsOptions, TlsVersion, Verify};
use warren_server::AuthMechanism;

/// Where a setting came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Line(usize),
    Env(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Line(n) => write!(f, "line {n}"),
            Origin::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{origin}: '{text}' is not `key = value`")]
    Syntax { origin: Origin, text: String },
    #[error("{origin}: unknown key '{key}'")]
    UnknownKey { origin: Origin, key: String },
    #[error("{origin}: {key} = {value}: {reason}")]
    BadValue {
        origin: Origin,
        key: String,
        value: String,
        reason: String,
    },
    #[error("{origin}: '{key}' is not available yet: {reason}")]
    NotYet {
        origin: Origin,
        key: String,
        reason: &'static str,
    },
}

/// A memory or disk threshold: a fraction (of RAM) or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Relative(f64),
    Absolute(u64),
}

/// Everything the file and the environment may set; None keeps the default.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Settings {
    /// `listeners.tcp.*` (an empty list: `listeners.tcp = none`).
    pub amqp_listeners: Option<Vec<SocketAddr>>,
    pub management_listeners: Option<Vec<SocketAddr>>,
    pub prometheus_listeners: Option<Vec<SocketAddr>>,
    /// `listeners.ssl.*` (an empty list: `listeners.ssl = none`).
    pub amqps_listeners: Option<Vec<SocketAddr>>,
    /// `ssl_options.*`: the AMQPS listeners' certificates and peer verification.
    pub ssl_options: TlsOptions,
    /// `management.ssl.port`/`ip` and the HTTPS listener's TLS options.
    pub management_tls_listeners: Option<Vec<SocketAddr>>,
    pub management_tls: TlsOptions,
    /// `prometheus.ssl.port`/`ip` and its TLS options.
    pub prometheus_tls_listeners: Option<Vec<SocketAddr>>,
    pub prometheus_tls: TlsOptions,
    /// `ssl_cert_login_from`, `ssl_cert_login_san_type`, `ssl_cert_login_san_index`.
    pub cert_login: CertLogin,
    /// `auth_mechanisms.*`, in the order given.
    pub auth_mechanisms: Option<Vec<AuthMechanism>>,
    pub default_user: Option<String>,
    pub default_pass: Option<String>,
    pub default_vhost: Option<String>,
    pub loopback_users: Option<Vec<String>>,
    pub memory_high_watermark: Option<Threshold>,
    pub disk_free_limit: Option<Threshold>,
    /// Seconds.
    pub heartbeat: Option<u16>,
    pub frame_max: Option<u32>,
    pub channel_max: Option<u16>,
    /// Some(None): `infinity`.
    pub connection_max: Option<Option<usize>>,
    pub max_message_size: Option<u64>,
    /// Some(None): disabled (`false`).
    pub consumer_timeout: Option<Option<Duration>>,
    pub handshake_timeout: Option<Duration>,
    pub load_definitions: Option<PathBuf>,
    pub log_level: Option<String>,
}

/// RabbitMQ's ceiling for `max_message_size` (512 MiB).
pub const MAX_MESSAGE_SIZE_LIMIT: u64 = 512 * 1024 * 1024;

/// Environment variables named `WARREN_*` that are not settings.
const NOT_SETTINGS: &[&str] = &["WARREN_CONFIG_FILE", "WARREN_UI_DIR"];

impl Settings {
    /// Reads `path` (RabbitMQ's format), then applies the `WARREN_*` variables of `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Settings> {
        let mut s = Settings::default();
        if let Some(path) = path {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            s.apply_file(&text)
                .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
        }
        s.apply_env(env)?;
        Ok(s)
    }

    /// Applies a file's lines.
    pub fn apply_file(&mut self, text: &str) -> Result<(), ConfigError> {
        let mut gathered = Gathered::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let origin = Origin::Line(i + 1);
            let Some((key, value)) = line.split_once('=') else {
                return Err(ConfigError::Syntax {
                    origin,
                    text: line.to_owned(),
                });
            };
            self.set(key.trim(), value.trim(), origin, &mut gathered)?;
        }
        gathered.apply(self);
        Ok(())
    }

    /// Applies `WARREN_<KEY>` variables (`.` written `__`).
    pub fn apply_env(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        let mut gathered = Gathered::default();
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("WARREN_") && !NOT_SETTINGS.contains(&k.as_str()))
            .collect();
        vars.sort();
        for (var, value) in vars {
            let key = var["WARREN_".len()..].to_lowercase().replace("__", ".");
            self.set(&key, value.trim(), Origin::Env(var.clone()), &mut gathered)?;
        }
        gathered.apply(self);
        Ok(())
    }

    fn set(
        &mut self,
        key: &str,
        value: &str,
        origin: Origin,
        gathered: &mut Gathered,
    ) -> Result<(), ConfigError> {
        let bad = |reason: &str| ConfigError::BadValue {
            origin: origin.clone(),
            key: key.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let not_yet = |reason| ConfigError::NotYet {
            origin: origin.clone(),
            key: key.to_owned(),
            reason,
        };
        let port = || value.parse::<u16>().map_err(|_| bad("not a port"));
        let ip = || {
            value
                .parse::<IpAddr>()
                .map_err(|_| bad("not an IP address"))
        };
        let parts: Vec<&str> = key.split('.').collect();
        match parts.as_slice() {
            ["listeners", "tcp"] if value == "none" => gathered.amqp_none = true,
            ["listeners", "tcp", _] => {
                gathered.amqp.extend(endpoint(value).ok_or_else(|| {
                    bad("expected a port, or an address and port (0.0.0.0:5672, ::1:5672)")
                })?);
            }
            ["listeners", "ssl"] if value == "none" => gathered.amqps_none = true,
            ["listeners", "ssl", _] => {
                gathered.amqps.extend(endpoint(value).ok_or_else(|| {
                    bad("expected a port, or an address and port (0.0.0.0:5671, ::1:5671)")
                })?);
            }
            ["management", "tcp", "port"] => gathered.management.port = Some(port()?),
            ["management", "tcp", "ip"] => gathered.management.ip = Some(ip()?),
            ["prometheus", "tcp", "port"] => gathered.prometheus.port = Some(port()?),
            ["prometheus", "tcp", "ip"] => gathered.prometheus.ip = Some(ip()?),
            ["management", "ssl", "port"] => gathered.management_tls.port = Some(port()?),
            ["management", "ssl", "ip"] => gathered.management_tls.ip = Some(ip()?),
            ["prometheus", "ssl", "port"] => gathered.prometheus_tls.port = Some(port()?),
            ["prometheus", "ssl", "ip"] => gathered.prometheus_tls.ip = Some(ip()?),
            ["ssl_options", "password"]
            | ["management", "ssl", "password"]
            | ["prometheus", "ssl", "password"] => {
                return Err(not_yet(
                    "encrypted private keys are not supported; give an unencrypted keyfile",
                ))
            }
            ["ssl_options", "ciphers", ..]
            | ["management", "ssl", "ciphers", ..]
            | ["prometheus", "ssl", "ciphers", ..] => {
                return Err(not_yet(
                    "cipher suites are rustls's defaults (TLS 1.2 ECDHE with AES-GCM or \
                     ChaCha20-Poly1305, and TLS 1.3's)",
                ))
            }
            ["ssl_options", option @ ..] => {
                if !tls_option(&mut self.ssl_options, option, value, &bad)? {
                    return Err(unknown(origin, key));
                }
            }
            ["management", "ssl", option @ ..] => {
                if !tls_option(&mut self.management_tls, option, value, &bad)? {
                    return Err(unknown(origin, key));
                }
            }
            ["prometheus", "ssl", option @ ..] => {
                if !tls_option(&mut self.prometheus_tls, option, value, &bad)? {
                    return Err(unknown(origin, key));
                }
            }
            ["ssl_cert_login_from"] => {
                self.cert_login.from = match value {
                    "common_name" => LoginFrom::CommonName,
                    "distinguished_name" => LoginFrom::DistinguishedName,
                    "subject_alternative_name" | "subject_alt_name" => {
                        LoginFrom::SubjectAlternativeName
                    }
                    _ => {
                        return Err(bad(
                            "common_name, distinguished_name or subject_alternative_name",
                        ))
                    }
                }
            }
            ["ssl_cert_login_san_type"] => {
                self.cert_login.san_type = match value {
                    "dns" => SanType::Dns,
                    "email" => SanType::Email,
                    "uri" => SanType::Uri,
                    "ip" => SanType::Ip,
                    _ => return Err(bad("dns, email, uri or ip")),
                }
            }
            ["ssl_cert_login_san_index"] => {
                self.cert_login.san_index = value
                    .parse()
                    .map_err(|_| bad("a number, 0 for the first"))?
            }
            ["auth_mechanisms", _] => {
                let m = AuthMechanism::from_name(value)
                    .ok_or_else(|| bad("PLAIN, AMQPLAIN or EXTERNAL"))?;
                if !gathered.auth_mechanisms.contains(&m) {
                    gathered.auth_mechanisms.push(m);
                }
            }
            ["default_user"] => {
                self.default_user = Some(nonempty(value).ok_or_else(|| bad("empty"))?)
            }
            ["default_pass"] => self.default_pass = Some(value.to_owned()),
            ["default_vhost"] => {
                self.default_vhost = Some(nonempty(value).ok_or_else(|| bad("empty"))?)
            }
            ["loopback_users"] if value == "none" => self.loopback_users = Some(Vec::new()),
            ["loopback_users", user] => {
                let on = boolean(value).ok_or_else(|| bad("expected true or false"))?;
                let users = self
                    .loopback_users
                    .get_or_insert_with(|| vec!["guest".into()]);
                users.retain(|u| u != user);
                if on {
                    users.push((*user).to_owned());
                }
            }
            ["vm_memory_high_watermark", "relative"] => {
                let f: f64 = value.parse().map_err(|_| bad("not a number"))?;
                if !(f > 0.0 && f <= 1.0) {
                    return Err(bad("a fraction of RAM above 0 and at most 1"));
                }
                self.memory_high_watermark = Some(Threshold::Relative(f));
            }
            ["vm_memory_high_watermark", "absolute"] => {
                self.memory_high_watermark =
                    Some(Threshold::Absolute(bytes(value).ok_or_else(|| {
                        bad("expected bytes, optionally with a unit (2GB, 1536MiB)")
                    })?))
            }
            ["disk_free_limit", "absolute"] => {
                self.disk_free_limit =
                    Some(Threshold::Absolute(bytes(value).ok_or_else(|| {
                        bad("expected bytes, optionally with a unit (50MB, 1GiB)")
                    })?))
            }
            ["disk_free_limit", "relative"] => {
                let f: f64 = value.parse().map_err(|_| bad("not a number"))?;
                if f.is_nan() || f < 0.0 {
                    return Err(bad("a multiple of RAM, at least 0"));
                }
                self.disk_free_limit = Some(Threshold::Relative(f));
            }
            ["heartbeat"] => {
                self.heartbeat = Some(value.parse().map_err(|_| bad("seconds, 0 to 65535"))?)
            }
            ["frame_max"] => {
                let n: u32 = value.parse().map_err(|_| bad("not a number"))?;
                if n != 0 && n < 4096 {
                    return Err(bad("at least 4096 (AMQP's minimum), or 0 for no limit"));
                }
                self.frame_max = Some(n);
            }
            ["channel_max"] => {
                self.channel_max = Some(value.parse().map_err(|_| bad("0 to 65535"))?)
            }
            ["connection_max"] => {
                self.connection_max = Some(if value == "infinity" {
                    None
                } else {
                    Some(value.parse().map_err(|_| bad("a number or infinity"))?)
                })
            }
            ["max_message_size"] => {
                let n = bytes(value).ok_or_else(|| bad("expected bytes"))?;
                if n == 0 || n > MAX_MESSAGE_SIZE_LIMIT {
                    return Err(bad("from 1 byte to 536870912 (512 MiB)"));
                }
                self.max_message_size = Some(n);
            }
            ["consumer_timeout"] => {
                self.consumer_timeout = Some(if boolean(value) == Some(false) {
                    None
                } else {
                    Some(Duration::from_millis(
                        value.parse().map_err(|_| bad("milliseconds, or false"))?,
                    ))
                })
            }
            ["handshake_timeout"] => {
                self.handshake_timeout = Some(Duration::from_millis(
                    value.parse().map_err(|_| bad("milliseconds"))?,
                ))
            }
            ["load_definitions"] => self.load_definitions = Some(PathBuf::from(value)),
            ["log", "console", "level"] => {
                let level = match value {
                    "debug" | "info" | "error" => value,
                    "warning" => "warn",
                    "critical" => "error",
                    "none" => "off",
                    _ => return Err(bad("debug, info, warning, error, critical or none")),
                };
                self.log_level = Some(level.to_owned());
            }
            // RabbitMQ writes this in generated files; the console is Warren's only log.
            ["log", "console"] => {
                boolean(value).ok_or_else(|| bad("expected true or false"))?;
            }
            _ => return Err(unknown(origin, key)),
        }
        Ok(())
    }
}

fn unknown(origin: Origin, key: &str) -> ConfigError {
    ConfigError::UnknownKey {
        origin,
        key: key.to_owned(),
    }
}

/// One TLS option (the part of the key after `ssl_options.` or `management.ssl.`), as
/// RabbitMQ names them. Ok(false): not an option Warren knows.
fn tls_option(
    o: &mut TlsOptions,
    option: &[&str],
    value: &str,
    bad: &dyn Fn(&str) -> ConfigError,
) -> Result<bool, ConfigError> {
    let path = || {
        nonempty(value)
            .map(PathBuf::from)
            .ok_or_else(|| bad("a file path"))
    };
    let flag = || boolean(value).ok_or_else(|| bad("expected true or false"));
    match option {
        ["certfile"] => o.certfile = Some(path()?),
        ["keyfile"] => o.keyfile = Some(path()?),
        ["cacertfile"] => o.cacertfile = Some(path()?),
        ["verify"] => {
            o.verify = match value {
                "verify_peer" => Verify::Peer,
                "verify_none" => Verify::None,
                _ => return Err(bad("verify_peer or verify_none")),
            }
        }
        ["fail_if_no_peer_cert"] => o.fail_if_no_peer_cert = flag()?,
        ["versions", _] => {
            let v = match value {
                "tlsv1.2" => TlsVersion::Tls12,
                "tlsv1.3" => TlsVersion::Tls13,
                "tlsv1.1" | "tlsv1" => {
                    return Err(bad("TLS 1.0 and 1.1 are not supported (tlsv1.2, tlsv1.3)"))
                }
                _ => return Err(bad("tlsv1.2 or tlsv1.3")),
            };
            if !o.versions.contains(&v) {
                o.versions.push(v);
            }
        }
        ["honor_cipher_order"] => o.honor_cipher_order = flag()?,
        // rustls always picks the key-exchange group by the server's preference, which is
        // what `true` asks for; `false` cannot be honoured, so it is refused.
        ["honor_ecc_order"] => {
            if !flag()? {
                return Err(bad("only true: the server's preference always decides"));
            }
        }
        // rustls never renegotiates, which is what these ask for.
        ["client_renegotiation"] => {
            if flag()? {
                return Err(bad("only false: renegotiation is never offered"));
            }
        }
        ["secure_renegotiate"] => {
            flag()?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Keys gathered over one source's lines, applied at its end (a port and an IP arrive on
/// separate lines; a list's items on one line each).
#[derive(Default)]
struct Gathered {
    amqp: Vec<SocketAddr>,
    amqp_none: bool,
    amqps: Vec<SocketAddr>,
    amqps_none: bool,
    management: HttpListener,
    prometheus: HttpListener,
    management_tls: HttpListener,
    prometheus_tls: HttpListener,
    auth_mechanisms: Vec<AuthMechanism>,
}

#[derive(Default)]
struct HttpListener {
    port: Option<u16>,
    ip: Option<IpAddr>,
}

impl HttpListener {
    /// The addresses it names: the IP given, or every interface of both families.
    fn addrs(&self, default_port: u16) -> Option<Vec<SocketAddr>> {
        if self.port.is_none() && self.ip.is_none() {
            return None;
        }
        let port = self.port.unwrap_or(default_port);
        Some(match self.ip {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => every_interface(port),
        })
    }
}

impl Gathered {
    fn apply(self, s: &mut Settings) {
        if self.amqp_none {
            s.amqp_listeners = Some(Vec::new());
        } else if !self.amqp.is_empty() {
            s.amqp_listeners = Some(self.amqp);
        }
        if self.amqps_none {
            s.amqps_listeners = Some(Vec::new());
        } else if !self.amqps.is_empty() {
            s.amqps_listeners = Some(self.amqps);
        }
        if let Some(a) = self.management.addrs(15672) {
            s.management_listeners = Some(a);
        }
        if let Some(a) = self.prometheus.addrs(15692) {
            s.prometheus_listeners = Some(a);
        }
        // RabbitMQ's HTTPS ports.
        if let Some(a) = self.management_tls.addrs(15671) {
            s.management_tls_listeners = Some(a);
        }
        if let Some(a) = self.prometheus_tls.addrs(15691) {
            s.prometheus_tls_listeners = Some(a);
        }
        if !self.auth_mechanisms.is_empty() {
            s.auth_mechanisms = Some(self.auth_mechanisms);
        }
    }
}

/// IPv4 and IPv6 "any" addresses on `port`.
pub fn every_interface(port: u16) -> Vec<SocketAddr> {
    vec![
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
    ]
}

/// A listener value as RabbitMQ writes them: `5672` (every interface, both families),
/// `127.0.0.1:5672`, `::1:5672` or `[::1]:5672`.
fn endpoint(value: &str) -> Option<Vec<SocketAddr>> {
    if let Ok(port) = value.parse::<u16>() {
        return Some(every_interface(port));
    }
    if let Ok(a) = value.parse::<SocketAddr>() {
        return Some(vec![a]);
    }
    // RabbitMQ's unbracketed IPv6 form: the port is after the last colon.
    let (ip, port) = value.rsplit_once(':')?;
    Some(vec![SocketAddr::new(ip.parse().ok()?, port.parse().ok()?)])
}

fn nonempty(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_owned())
}

fn boolean(v: &str) -> Option<bool> {
    match v {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Bytes with RabbitMQ's units: `k`/`kiB`/`KiB`, `M`/`MiB`, `G`/`GiB` are powers of 2;
/// `kB`/`KB`, `MB`, `GB` powers of 10.
fn bytes(v: &str) -> Option<u64> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale: u64 = match unit.trim() {
        "" => 1,
        "k" | "kiB" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        let mut s = Settings::default();
        s.apply_file(text).map(|_| s)
    }

    #[test]
    fn every_key_is_read() {
        let s = parse(
            "# a comment\n\
             listeners.tcp.1 = 127.0.0.1:5673\n\
             listeners.tcp.2 = ::1:5673\n\
             management.tcp.port = 15000\n\
             management.tcp.ip = 127.0.0.1\n\
             prometheus.tcp.port = 15001\n\
             default_user = admin\n\
             default_pass = s3cret\n\
             default_vhost = main\n\
             loopback_users.guest = false\n\
             loopback_users.admin = true\n\
             vm_memory_high_watermark.absolute = 2GiB\n\
             disk_free_limit.relative = 1.5\n\
             heartbeat = 30\n\
             frame_max = 8192\n\
             channel_max = 100\n\
             connection_max = 500\n\
             max_message_size = 134217728\n\
             consumer_timeout = 60000\n\
             handshake_timeout = 5000\n\
             load_definitions = /etc/warren/defs.json\n\
             log.console.level = warning\n",
        )
        .expect("valid");
        assert_eq!(
            s.amqp_listeners,
            Some(vec![
                "127.0.0.1:5673".parse().unwrap(),
                "[::1]:5673".parse().unwrap()
            ])
        );
        assert_eq!(
            s.management_listeners,
            Some(vec!["127.0.0.1:15000".parse().unwrap()])
        );
        assert_eq!(s.prometheus_listeners, Some(every_interface(15001)));
        assert_eq!(s.default_user.as_deref(), Some("admin"));
        assert_eq!(s.default_pass.as_deref(), Some("s3cret"));
        assert_eq!(s.default_vhost.as_deref(), Some("main"));
        assert_eq!(s.loopback_users, Some(vec!["admin".to_owned()]));
        assert_eq!(s.memory_high_watermark, Some(Threshold::Absolute(2 << 30)));
        assert_eq!(s.disk_free_limit, Some(Threshold::Relative(1.5)));
        assert_eq!(s.heartbeat, Some(30));
        assert_eq!(s.frame_max, Some(8192));
        assert_eq!(s.channel_max, Some(100));
        assert_eq!(s.connection_max, Some(Some(500)));
        assert_eq!(s.max_message_size, Some(134_217_728));
        assert_eq!(s.consumer_timeout, Some(Some(Duration::from_secs(60))));
        assert_eq!(s.handshake_timeout, Some(Duration::from_secs(5)));
        assert_eq!(
            s.load_definitions,
            Some(PathBuf::from("/etc/warren/defs.json"))
        );
        assert_eq!(s.log_level.as_deref(), Some("warn"));
    }

    #[test]
    fn the_documented_example_parses() {
        let s = parse(include_str!("../../../docs/warren.conf.example"))
            .expect("docs/warren.conf.example is a valid file");
        assert_eq!(s.default_vhost.as_deref(), Some("/"));
        assert_eq!(s.max_message_size, Some(16 << 20));
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let e = parse("heartbeat = 10\nheartbeet = 10\n").unwrap_err();
        assert_eq!(e.to_string(), "line 2: unknown key 'heartbeet'");
        let e = parse("\n\nvm_memory_high_watermark.relative = 1.5\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3: vm_memory_high_watermark.relative = 1.5: a fraction of RAM above 0 and at most 1"
        );
        let e = parse("max_message_size = 600000000").unwrap_err();
        assert!(e.to_string().starts_with("line 1: max_message_size"), "{e}");
        let e = parse("just words").unwrap_err();
        assert_eq!(e.to_string(), "line 1: 'just words' is not `key = value`");
        let e = parse("ssl_options.password = secret").unwrap_err();
        assert!(matches!(e, ConfigError::NotYet { .. }), "{e}");
        assert!(parse("frame_max = 100").is_err());
        assert!(parse("disk_free_limit.absolute = 5 parsecs").is_err());
        assert!(parse("log.console.level = loud").is_err());
    }

    #[test]
    fn tls_keys_are_read() {
        let s = parse(
            "listeners.ssl.default = 5671\n\
             listeners.ssl.local = 127.0.0.1:5681\n\
             ssl_options.cacertfile = /etc/warren/ca.pem\n\
             ssl_options.certfile = /etc/warren/server.pem\n\
             ssl_options.keyfile = /etc/warren/server.key\n\
             ssl_options.verify = verify_peer\n\
             ssl_options.fail_if_no_peer_cert = true\n\
             ssl_options.versions.1 = tlsv1.3\n\
             ssl_options.versions.2 = tlsv1.2\n\
             ssl_options.honor_cipher_order = true\n\
             ssl_options.honor_ecc_order = true\n\
             ssl_options.client_renegotiation = false\n\
             ssl_options.secure_renegotiate = true\n\
             ssl_cert_login_from = subject_alternative_name\n\
             ssl_cert_login_san_type = email\n\
             ssl_cert_login_san_index = 1\n\
             auth_mechanisms.1 = EXTERNAL\n\
             auth_mechanisms.2 = PLAIN\n\
             management.ssl.port = 15671\n\
             management.ssl.ip = 127.0.0.1\n\
             management.ssl.cacertfile = /etc/warren/mgmt-ca.pem\n\
             management.ssl.certfile = /etc/warren/mgmt.pem\n\
             management.ssl.keyfile = /etc/warren/mgmt.key\n\
             prometheus.ssl.port = 15691\n\
             prometheus.ssl.certfile = /etc/warren/prom.pem\n\
             prometheus.ssl.keyfile = /etc/warren/prom.key\n\
             prometheus.ssl.verify = verify_none\n",
        )
        .expect("valid");
        let mut amqps = every_interface(5671);
        amqps.push("127.0.0.1:5681".parse().unwrap());
        assert_eq!(s.amqps_listeners, Some(amqps));
        // TLS listeners are beside the plain ones, whose defaults stay.
        assert_eq!(s.amqp_listeners, None);
        assert_eq!(
            s.ssl_options,
            TlsOptions {
                certfile: Some("/etc/warren/server.pem".into()),
                keyfile: Some("/etc/warren/server.key".into()),
                cacertfile: Some("/etc/warren/ca.pem".into()),
                verify: Verify::Peer,
                fail_if_no_peer_cert: true,
                versions: vec![TlsVersion::Tls13, TlsVersion::Tls12],
                honor_cipher_order: true,
            }
        );
        assert_eq!(
            s.cert_login,
            CertLogin {
                from: LoginFrom::SubjectAlternativeName,
                san_type: SanType::Email,
                san_index: 1,
            }
        );
        assert_eq!(
            s.auth_mechanisms,
            Some(vec![AuthMechanism::External, AuthMechanism::Plain])
        );
        assert_eq!(
            s.management_tls_listeners,
            Some(vec!["127.0.0.1:15671".parse().unwrap()])
        );
        assert_eq!(
            s.management_tls.cacertfile,
            Some(PathBuf::from("/etc/warren/mgmt-ca.pem"))
        );
        assert_eq!(
            s.management_tls.certfile,
            Some(PathBuf::from("/etc/warren/mgmt.pem"))
        );
        assert_eq!(s.prometheus_tls_listeners, Some(every_interface(15691)));
        assert_eq!(
            s.prometheus_tls.keyfile,
            Some(PathBuf::from("/etc/warren/prom.key"))
        );
        assert_eq!(s.prometheus_tls.verify, Verify::None);
        assert_eq!(s.management_listeners, None);

        let s = parse("listeners.ssl = none\nssl_cert_login_from = distinguished_name\n")
            .expect("valid");
        assert_eq!(s.amqps_listeners, Some(vec![]));
        assert_eq!(s.cert_login.from, LoginFrom::DistinguishedName);
        // An IP alone takes RabbitMQ's HTTPS port.
        let s = parse("management.ssl.ip = ::1\n").expect("valid");
        assert_eq!(
            s.management_tls_listeners,
            Some(vec!["[::1]:15671".parse().unwrap()])
        );
    }

    #[test]
    fn bad_tls_values_are_refused_with_the_key() {
        for (line, reason) in [
            (
                "ssl_options.verify = sometimes",
                "verify_peer or verify_none",
            ),
            (
                "ssl_options.versions.1 = tlsv1.1",
                "TLS 1.0 and 1.1 are not supported",
            ),
            ("ssl_options.versions.1 = sslv3", "tlsv1.2 or tlsv1.3"),
            ("ssl_options.fail_if_no_peer_cert = yes", "true or false"),
            ("ssl_options.certfile = ", "a file path"),
            ("ssl_options.honor_ecc_order = false", "only true"),
            ("listeners.ssl.default = port", "expected a port"),
            ("management.ssl.port = 99999", "not a port"),
            ("ssl_cert_login_from = serial", "common_name"),
            (
                "ssl_cert_login_san_type = other_name",
                "dns, email, uri or ip",
            ),
            (
                "auth_mechanisms.1 = ANONYMOUS",
                "PLAIN, AMQPLAIN or EXTERNAL",
            ),
        ] {
            let e = parse(line).expect_err(line).to_string();
            assert!(e.starts_with("line 1: "), "{e}");
            assert!(e.contains(reason), "{line}: {e}");
        }
        let e = parse("ssl_options.depth = 2").unwrap_err();
        assert_eq!(e.to_string(), "line 1: unknown key 'ssl_options.depth'");
        let e = parse("management.ssl.ciphers.1 = x").unwrap_err();
        assert!(matches!(e, ConfigError::NotYet { .. }), "{e}");
    }

    #[test]
    fn tls_settings_come_from_the_environment_too() {
        let mut s = parse("ssl_options.certfile = /from/file.pem\n").expect("valid");
        s.apply_env([
            (
                "WARREN_SSL_OPTIONS__KEYFILE".to_owned(),
                "/from/env.key".to_owned(),
            ),
            (
                "WARREN_LISTENERS__SSL__DEFAULT".to_owned(),
                "5671".to_owned(),
            ),
        ])
        .expect("valid");
        assert_eq!(s.ssl_options.certfile, Some("/from/file.pem".into()));
        assert_eq!(s.ssl_options.keyfile, Some("/from/env.key".into()));
        assert_eq!(s.amqps_listeners, Some(every_interface(5671)));
    }

    #[test]
    fn sizes_take_rabbitmqs_units() {
        assert_eq!(bytes("1000"), Some(1000));
        assert_eq!(bytes("2kB"), Some(2000));
        assert_eq!(bytes("2KiB"), Some(2048));
        assert_eq!(bytes("3MB"), Some(3_000_000));
        assert_eq!(bytes("3M"), Some(3 << 20));
        assert_eq!(bytes("1GB"), Some(1_000_000_000));
        assert_eq!(bytes("1GiB"), Some(1 << 30));
        assert_eq!(bytes("1TB"), None);
        assert_eq!(bytes("lots"), None);
    }

    #[test]
    fn none_turns_amqp_off_and_loopback_users_empty() {
        let s = parse("listeners.tcp = none\nloopback_users = none\n").expect("valid");
        assert_eq!(s.amqp_listeners, Some(vec![]));
        assert_eq!(s.loopback_users, Some(vec![]));
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut s = parse("heartbeat = 10\ndefault_user = filed\n").expect("valid");
        s.apply_env([
            ("WARREN_HEARTBEAT".to_owned(), "20".to_owned()),
            (
                "WARREN_VM_MEMORY_HIGH_WATERMARK__RELATIVE".to_owned(),
                "0.4".to_owned(),
            ),
            ("WARREN_UI_DIR".to_owned(), "/tmp/ui".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ])
        .expect("valid");
        assert_eq!(s.heartbeat, Some(20));
        assert_eq!(s.default_user.as_deref(), Some("filed"));
        assert_eq!(s.memory_high_watermark, Some(Threshold::Relative(0.4)));
        let e = s
            .apply_env([("WARREN_HEARTBEET".to_owned(), "1".to_owned())])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment variable WARREN_HEARTBEET: unknown key 'heartbeet'"
        );
    }
}
