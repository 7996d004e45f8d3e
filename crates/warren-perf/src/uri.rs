//! `amqp://user:password@host:port/vhost` URIs, as RabbitMQ's URI spec reads them.

use crate::client::ClientError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpUri {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub vhost: String,
}

fn bad(uri: &str, reason: &str) -> ClientError {
    ClientError::Uri {
        uri: uri.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Decodes `%XX` escapes (`%2F` is how a URI names the vhost `/`).
fn percent_decode(s: &str, uri: &str) -> Result<String, ClientError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad(uri, "bad %-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad(uri, "escapes do not decode to UTF-8"))
}

impl AmqpUri {
    pub fn parse(uri: &str) -> Result<Self, ClientError> {
        let rest = if let Some(r) = uri.strip_prefix("amqp://") {
            r
        } else if uri.starts_with("amqps://") {
            return Err(bad(uri, "TLS (amqps) is not supported"));
        } else {
            return Err(bad(uri, "must start with amqp://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(ui) => match ui.find(':') {
                Some(i) => (
                    percent_decode(&ui[..i], uri)?,
                    percent_decode(&ui[i + 1..], uri)?,
                ),
                None => (percent_decode(ui, uri)?, String::new()),
            },
            None => ("guest".to_owned(), "guest".to_owned()),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let end = v6.find(']').ok_or_else(|| bad(uri, "unclosed [ in host"))?;
            let port = v6[end + 1..].strip_prefix(':');
            (v6[..end].to_owned(), port)
        } else {
            match hostport.rfind(':') {
                Some(i) => (hostport[..i].to_owned(), Some(&hostport[i + 1..])),
                None => (hostport.to_owned(), None),
            }
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad(uri, "bad port"))?,
            None => 5672,
        };
        let host = if host.is_empty() {
            "localhost".to_owned()
        } else {
            host
        };
        // No path and an empty path both mean the default vhost `/`.
        let vhost = match path.map(|p| p.split('?').next().unwrap_or("")) {
            None | Some("") => "/".to_owned(),
            Some(p) => percent_decode(p, uri)?,
        };
        Ok(AmqpUri {
            host,
            port,
            user,
            password,
            vhost,
        })
    }

    /// `host:port`, bracketing an IPv6 literal.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_uri() {
        let u = AmqpUri::parse("amqp://bob:s%40cret@broker.local:5673/%2F").unwrap();
        assert_eq!(
            u,
            AmqpUri {
                host: "broker.local".into(),
                port: 5673,
                user: "bob".into(),
                password: "s@cret".into(),
                vhost: "/".into()
            }
        );
        assert_eq!(u.address(), "broker.local:5673");
    }

    #[test]
    fn defaults() {
        let u = AmqpUri::parse("amqp://127.0.0.1").unwrap();
        assert_eq!(
            (u.port, u.user.as_str(), u.vhost.as_str()),
            (5672, "guest", "/")
        );
        let u = AmqpUri::parse("amqp://[::1]:5000/dev").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.vhost.as_str()),
            ("::1", 5000, "dev")
        );
        assert_eq!(u.address(), "[::1]:5000");
    }

    #[test]
    fn rejects_what_it_cannot_use() {
        assert!(AmqpUri::parse("http://x").is_err());
        assert!(AmqpUri::parse("amqps://x").is_err());
        assert!(AmqpUri::parse("amqp://x:notaport").is_err());
        assert!(AmqpUri::parse("amqp://x/%zz").is_err());
    }
}
