//! The API's errors: RabbitMQ's `{"error","reason"}` bodies and statuses. Every
//! [`BrokerError`] becomes an HTTP answer here, in one place.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use warren_broker::BrokerError;

/// An error answer. `error` and `reason` are RabbitMQ 3.10's texts.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub reason: String,
    /// Ask for credentials again (`WWW-Authenticate`): only for failed logins.
    challenge: bool,
    /// No body at all (401 without credentials, 405, 415).
    empty: bool,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn new(status: StatusCode, error: &'static str, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            reason: reason.into(),
            challenge: false,
            empty: false,
        }
    }

    /// 404 `Object Not Found`, as for any missing object or path.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Object Not Found", "Not Found")
    }

    /// 404 for a PUT into a vhost that does not exist.
    pub fn vhost_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "vhost_not_found")
    }

    /// The same answer under another `error` word (e.g. `page_out_of_range`).
    pub fn named(mut self, error: &'static str) -> Self {
        self.error = error;
        self
    }

    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", reason)
    }

    /// 401 without a body: no credentials were sent.
    pub fn no_credentials() -> Self {
        ApiError {
            challenge: true,
            empty: true,
            ..Self::new(StatusCode::UNAUTHORIZED, "not_authorized", "")
        }
    }

    /// 401 for credentials that do not log in.
    pub fn login_failed() -> Self {
        ApiError {
            challenge: true,
            ..Self::new(StatusCode::UNAUTHORIZED, "not_authorized", "Login failed")
        }
    }

    /// 401 for a logged-in user who may not do this (RabbitMQ never answers 403).
    pub fn not_authorised(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "not_authorised", reason)
    }

    pub fn method_not_allowed() -> Self {
        ApiError {
            empty: true,
            ..Self::new(StatusCode::METHOD_NOT_ALLOWED, "", "")
        }
    }

    pub fn unsupported_media_type() -> Self {
        ApiError {
            empty: true,
            ..Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "", "")
        }
    }

    pub fn internal(reason: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            reason,
        )
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::NotFound { .. } => ApiError::not_found(),
            // RabbitMQ's HTTP API refuses AMQP access (permissions, `amq.*` names, the default
            // exchange) with one text.
            BrokerError::AccessRefused(_) | BrokerError::NotAllowed(_) => {
                ApiError::not_authorised("Access refused.")
            }
            BrokerError::AuthenticationFailed(_) => ApiError::login_failed(),
            BrokerError::PreconditionFailed(m)
            | BrokerError::ResourceLocked(m)
            | BrokerError::CommandInvalid(m)
            | BrokerError::NotImplemented(m)
            | BrokerError::Invalid(m)
            | BrokerError::Malformed(m) => ApiError::bad_request(m),
            BrokerError::Storage(m) | BrokerError::DiskFull(m) => ApiError::internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = if self.empty {
            self.status.into_response()
        } else {
            (
                self.status,
                axum::Json(json!({"error": self.error, "reason": self.reason})),
            )
                .into_response()
        };
        if self.challenge {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
            );
        }
        r
    }
}
