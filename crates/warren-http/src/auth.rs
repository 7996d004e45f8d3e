//! Who is calling: HTTP Basic credentials checked against the broker's users, and RabbitMQ's
//! management tags (`management`, `policymaker`, `monitoring`, `administrator`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use warren_broker::{BrokerError, Session, User};

use crate::error::{ApiError, ApiResult};
use crate::Http;

/// A logged-in management user.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
}

fn has(user: &User, tag: &str) -> bool {
    user.tags.iter().any(|t| t == tag)
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        has(&self.user, "administrator")
    }

    /// Sees every connection, channel and vhost (`monitoring` or `administrator`).
    pub fn is_monitor(&self) -> bool {
        self.is_admin() || has(&self.user, "monitoring")
    }

    /// 401 unless the caller is an administrator.
    pub fn require_admin(&self) -> ApiResult<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Not administrator user"))
        }
    }

    pub fn require_monitor(&self) -> ApiResult<()> {
        if self.is_monitor() {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Not monitor user"))
        }
    }

    /// 401 unless the caller may manage policies and parameters (`policymaker` or
    /// `administrator`).
    pub fn require_policymaker(&self) -> ApiResult<()> {
        if self.is_admin() || has(&self.user, "policymaker") {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Not policymaker user"))
        }
    }

    /// Whether the caller may see objects in `vhost`: administrators everywhere, others where
    /// they have permissions.
    pub fn sees_vhost(&self, http: &Http, vhost: &str) -> bool {
        self.is_admin() || http.broker.permission(&self.user.name, vhost).is_some()
    }

    /// 401 unless the caller may act in `vhost` (404 first if it does not exist).
    pub fn require_vhost(&self, http: &Http, vhost: &str) -> ApiResult<()> {
        if http.broker.vhost(vhost).is_none() {
            return Err(ApiError::not_found());
        }
        if self.sees_vhost(http, vhost) {
            Ok(())
        } else {
            Err(ApiError::not_authorised(
                "User not authorised to access virtual host",
            ))
        }
    }

    /// The broker's operations for the caller in `vhost`, with the caller's AMQP rights there
    /// (what a declare, bind or publish over HTTP is checked against).
    pub fn session(&self, http: &Http, vhost: &str) -> ApiResult<Session> {
        self.require_vhost(http, vhost)?;
        http.broker
            .open_session(&self.user, vhost, 0)
            .map_err(|e| match e {
                BrokerError::NotAllowed(_) => ApiError::not_authorised("Access refused."),
                other => other.into(),
            })
    }
}

/// The credentials of a `Basic` authorization header.
fn credentials(parts: &Parts) -> Option<(String, String)> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

const MANAGEMENT_TAGS: [&str; 4] = ["management", "policymaker", "monitoring", "administrator"];

impl FromRequestParts<Arc<Http>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, http: &Arc<Http>) -> ApiResult<Self> {
        let Some((name, password)) = credentials(parts) else {
            return Err(ApiError::no_credentials());
        };
        let loopback = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .is_none_or(|c| c.0.ip().is_loopback());
        let user = match http.broker.authenticate(&name, &password, loopback) {
            Ok(u) => u,
            Err(BrokerError::AuthenticationFailed(m))
                if m.contains("only connect via localhost") =>
            {
                return Err(ApiError::not_authorised(
                    "User can only log in via localhost",
                ))
            }
            Err(_) => return Err(ApiError::login_failed()),
        };
        if !user
            .tags
            .iter()
            .any(|t| MANAGEMENT_TAGS.contains(&t.as_str()))
        {
            return Err(ApiError::not_authorised("Not management user"));
        }
        Ok(Caller { user })
    }
}
