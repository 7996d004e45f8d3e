//! AMQP errors, carrying their scope: a soft error closes one channel, a hard error the whole
//! connection. Every broker and codec error is mapped to a reply code here, in one place.

use warren_broker::BrokerError;
use warren_codec::{constants, CodecError};

/// An error to report to the client with `channel.close` or `connection.close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpError {
    pub code: u16,
    pub text: String,
    /// The method that failed (0, 0 when not caused by a method).
    pub class_id: u16,
    pub method_id: u16,
}

impl AmqpError {
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        AmqpError {
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
        }
    }

    /// Names the method that caused the error (reported in the close).
    pub fn during(mut self, class_id: u16, method_id: u16) -> Self {
        if self.class_id == 0 {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }

    /// Hard errors close the connection; soft ones only the channel.
    pub fn closes_connection(&self) -> bool {
        constants::is_hard_error(self.code) || !constants::is_soft_error(self.code)
    }

    /// RabbitMQ's reply text: the code's name, a dash, and what went wrong.
    pub fn reply_text(&self) -> String {
        let name = constants::error_name(self.code).unwrap_or("INTERNAL_ERROR");
        let text = format!("{name} - {}", self.text);
        // Spec: reply-text is a shortstr.
        truncate(text, 255)
    }

    pub fn not_found(text: impl Into<String>) -> Self {
        AmqpError::new(constants::NOT_FOUND, text)
    }
    pub fn precondition_failed(text: impl Into<String>) -> Self {
        AmqpError::new(constants::PRECONDITION_FAILED, text)
    }
    pub fn access_refused(text: impl Into<String>) -> Self {
        AmqpError::new(constants::ACCESS_REFUSED, text)
    }
    pub fn command_invalid(text: impl Into<String>) -> Self {
        AmqpError::new(constants::COMMAND_INVALID, text)
    }
    pub fn channel_error(text: impl Into<String>) -> Self {
        AmqpError::new(constants::CHANNEL_ERROR, text)
    }
    pub fn unexpected_frame(text: impl Into<String>) -> Self {
        AmqpError::new(constants::UNEXPECTED_FRAME, text)
    }
    pub fn frame_error(text: impl Into<String>) -> Self {
        AmqpError::new(constants::FRAME_ERROR, text)
    }
    pub fn not_allowed(text: impl Into<String>) -> Self {
        AmqpError::new(constants::NOT_ALLOWED, text)
    }
    pub fn not_implemented(text: impl Into<String>) -> Self {
        AmqpError::new(constants::NOT_IMPLEMENTED, text)
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

impl From<BrokerError> for AmqpError {
    fn from(e: BrokerError) -> Self {
        let code = match &e {
            BrokerError::NotFound { .. } => constants::NOT_FOUND,
            BrokerError::PreconditionFailed(_) => constants::PRECONDITION_FAILED,
            BrokerError::AccessRefused(_) | BrokerError::AuthenticationFailed(_) => {
                constants::ACCESS_REFUSED
            }
            BrokerError::ResourceLocked(_) => constants::RESOURCE_LOCKED,
            BrokerError::NotAllowed(_) => constants::NOT_ALLOWED,
            BrokerError::NotImplemented(_) => constants::NOT_IMPLEMENTED,
            BrokerError::CommandInvalid(_) => constants::COMMAND_INVALID,
            BrokerError::Invalid(_) => constants::PRECONDITION_FAILED,
            BrokerError::Malformed(_) => constants::SYNTAX_ERROR,
            // Nothing may be confirmed that is not stored: the connection goes.
            BrokerError::Storage(_) => constants::INTERNAL_ERROR,
            BrokerError::DiskFull(_) => constants::RESOURCE_ERROR,
        };
        AmqpError::new(code, e.to_string())
    }
}

impl From<CodecError> for AmqpError {
    fn from(e: CodecError) -> Self {
        let code = match e {
            CodecError::BadFrameEnd(_)
            | CodecError::UnknownFrameType(_)
            | CodecError::FrameTooLarge { .. }
            | CodecError::BadProtocolHeader
            | CodecError::HeartbeatPayload(_) => constants::FRAME_ERROR,
            // RabbitMQ: a header with a weight is not the content header it expects.
            CodecError::NonZeroWeight(_) => constants::UNEXPECTED_FRAME,
            CodecError::UnknownMethod { .. } => constants::COMMAND_INVALID,
            CodecError::Truncated
            | CodecError::UnknownFieldType(_)
            | CodecError::NestingTooDeep(_)
            | CodecError::ShortStringTooLong(_)
            | CodecError::InvalidUtf8
            | CodecError::TrailingBytes(_) => constants::SYNTAX_ERROR,
        };
        AmqpError::new(code, e.to_string())
    }
}

pub type AmqpResult<T = ()> = Result<T, AmqpError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_follows_the_spec() {
        assert!(!AmqpError::not_found("x").closes_connection());
        assert!(!AmqpError::precondition_failed("x").closes_connection());
        assert!(AmqpError::frame_error("x").closes_connection());
        assert!(AmqpError::not_allowed("x").closes_connection());
        assert!(AmqpError::new(constants::NO_ROUTE, "x")
            .reply_text()
            .starts_with("NO_ROUTE"));
    }

    #[test]
    fn reply_text_is_a_short_string() {
        let e = AmqpError::not_found("é".repeat(300));
        assert!(e.reply_text().len() <= 255);
        assert!(e.reply_text().starts_with("NOT_FOUND - "));
    }
}
