//! A published message as the broker keeps it: routing facts, the publisher's raw properties
//! and the body, shared by every queue it was routed to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use warren_codec::{BasicProperties, ShortString};

use crate::error::BrokerError;
use crate::queue_args::MAX_EXPIRY;
use crate::spec::LogRef;

#[derive(Debug)]
pub struct Message {
    pub exchange: ShortString,
    pub routing_key: ShortString,
    /// Property flags and list exactly as the publisher sent them; consumers get them back
    /// byte for byte, so they are never re-encoded.
    pub raw_properties: Bytes,
    pub body: Bytes,
    /// `delivery_mode == 2`.
    pub persistent: bool,
    /// The `priority` property (0 when absent), for priority queues.
    pub priority: u8,
    /// The `expiration` property in milliseconds, when present and valid.
    pub expiration: Option<u64>,
    /// The store's id, given when the message is logged (a persistent message routed to a
    /// durable queue), 0 before; see [`Message::id`]. (An atomic, not a `OnceLock`: setting a
    /// `OnceLock` cost ~80 instructions on every persistent publish; store ids start at 1.)
    log_id: AtomicU64,
}

impl Message {
    /// Builds a message, reading what the broker needs from the already decoded properties
    /// (`delivery_mode`, `priority`, `expiration`).
    pub fn new(
        exchange: ShortString,
        routing_key: ShortString,
        raw_properties: Bytes,
        body: Bytes,
        properties: &BasicProperties,
    ) -> Self {
        let expiration = properties
            .expiration
            .as_ref()
            .and_then(|e| parse_expiration(e.as_str()).ok());
        Self::from_parts(
            exchange,
            routing_key,
            raw_properties,
            body,
            properties.delivery_mode,
            properties.priority,
            expiration,
        )
    }

    /// Builds a message from the only properties the broker reads, `expiration` already
    /// parsed (ms). The server's publish path gets them from [`BasicProperties::scan`] rather
    /// than decoding every property.
    pub fn from_parts(
        exchange: ShortString,
        routing_key: ShortString,
        raw_properties: Bytes,
        body: Bytes,
        delivery_mode: Option<u8>,
        priority: Option<u8>,
        expiration: Option<u64>,
    ) -> Self {
        Message {
            exchange,
            routing_key,
            raw_properties,
            body,
            persistent: delivery_mode == Some(2),
            priority: priority.unwrap_or(0),
            expiration,
            log_id: AtomicU64::new(0),
        }
    }

    /// The store's id for this message, or 0 while it is not logged.
    pub fn id(&self) -> u64 {
        self.log_id.load(Ordering::Acquire)
    }

    /// Records the id the store gave this message (the first one set stays).
    pub fn set_id(&self, id: u64) {
        let _ = self
            .log_id
            .compare_exchange(0, id, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The decoded properties. Decoding is lazy because most messages are routed and delivered
    /// without anyone looking inside them.
    pub fn properties(&self) -> BasicProperties {
        BasicProperties::decode(self.raw_properties.clone()).unwrap_or_default()
    }

    /// Memory the message accounts for (body plus properties), for limits and metrics.
    pub fn size(&self) -> usize {
        self.body.len() + self.raw_properties.len()
    }

    /// The same message with other properties (and routing facts): the body is shared.
    pub fn with_properties(
        &self,
        exchange: ShortString,
        routing_key: ShortString,
        properties: &BasicProperties,
    ) -> Message {
        Message::new(
            exchange,
            routing_key,
            properties.to_raw(),
            self.body.clone(),
            properties,
        )
    }
}

/// No deadline: the message does not expire.
pub const NEVER: u64 = u64::MAX;

/// A message waiting in a queue. `seq` is its position in publish order; a requeued message
/// goes back to where its `seq` says, as RabbitMQ does.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub seq: u64,
    pub message: Arc<Message>,
    pub redelivered: bool,
    /// Set when the message is in the log for this queue.
    pub log: Option<LogRef>,
    /// When it expires in this queue (ms since the Unix epoch), or [`NEVER`].
    pub expires_at: u64,
    /// How many times it was delivered from this queue and came back (quorum queues'
    /// `x-delivery-count`).
    pub delivery_count: u32,
}

/// Parses an `expiration` property as RabbitMQ does (`string:to_integer`: an optional sign and
/// digits, nothing after them), in milliseconds. The error is RabbitMQ's text for the 406.
pub fn parse_expiration(text: &str) -> Result<u64, BrokerError> {
    let reason = match expiration_reason(text) {
        Ok(ms) => return Ok(ms),
        Err(r) => r,
    };
    // RabbitMQ prints the reason with `~p`, which breaks a tuple that does not fit in the
    // line after the text before it: "{value_too_large,\n<indent>N}".
    let prefix = format!("invalid expiration '{text}': ");
    let flat = match &reason {
        Reason::NoInteger => "no_integer".to_owned(),
        Reason::Tagged(tag, v) => format!("{{{tag},{v}}}"),
    };
    let col = prefix.chars().count();
    let text = match reason {
        Reason::Tagged(tag, v) if col + flat.chars().count() > 78 => {
            format!("{prefix}{{{tag},\n{}{v}}}", " ".repeat(col + 1))
        }
        _ => format!("{prefix}{flat}"),
    };
    Err(BrokerError::PreconditionFailed(text))
}

enum Reason {
    NoInteger,
    Tagged(&'static str, String),
}

fn expiration_reason(text: &str) -> Result<u64, Reason> {
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let digits_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits_len == 0 {
        return Err(Reason::NoInteger);
    }
    let (digits, leftover) = rest.split_at(digits_len);
    if !leftover.is_empty() {
        return Err(Reason::Tagged("leftover_string", erlang_string(leftover)));
    }
    let digits = digits.trim_start_matches('0');
    let zero = digits.is_empty();
    let number = if zero { "0" } else { digits };
    if negative && !zero {
        return Err(Reason::Tagged("value_negative", format!("-{number}")));
    }
    match number.parse::<u64>() {
        Ok(ms) if ms <= MAX_EXPIRY as u64 => Ok(ms),
        _ => Err(Reason::Tagged("value_too_large", number.to_owned())),
    }
}

/// A string as Erlang's `~p` prints it (in double quotes, with escapes).
fn erlang_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expirations_parse_as_rabbitmq_parses_them() {
        assert_eq!(parse_expiration("100"), Ok(100));
        assert_eq!(parse_expiration("+5"), Ok(5));
        assert_eq!(parse_expiration("0005"), Ok(5));
        assert_eq!(parse_expiration("-0"), Ok(0));
        assert_eq!(parse_expiration("315360000000"), Ok(315_360_000_000));
    }

    #[test]
    fn invalid_expirations_are_worded_as_rabbitmq_words_them() {
        let e = |s: &str| parse_expiration(s).unwrap_err().to_string();
        assert_eq!(e("abc"), "invalid expiration 'abc': no_integer");
        assert_eq!(e(""), "invalid expiration '': no_integer");
        assert_eq!(e(" 5"), "invalid expiration ' 5': no_integer");
        assert_eq!(e("-1"), "invalid expiration '-1': {value_negative,-1}");
        assert_eq!(
            e("1.5"),
            "invalid expiration '1.5': {leftover_string,\".5\"}"
        );
        assert_eq!(
            e("-5x"),
            "invalid expiration '-5x': {leftover_string,\"x\"}"
        );
        assert_eq!(
            e("315360000001"),
            "invalid expiration '315360000001': {value_too_large,315360000001}"
        );
        assert_eq!(
            e("999999999999999999"),
            "invalid expiration '999999999999999999': {value_too_large,999999999999999999}"
        );
        // From here the term no longer fits on RabbitMQ's line and is broken.
        assert_eq!(
            e("9999999999999999999"),
            format!(
                "invalid expiration '9999999999999999999': {{value_too_large,\n{}9999999999999999999}}",
                " ".repeat(43)
            )
        );
        assert_eq!(
            e("1xxxxxxxxxxxxxxxxx"),
            "invalid expiration '1xxxxxxxxxxxxxxxxx': {leftover_string,\"xxxxxxxxxxxxxxxxx\"}"
        );
        assert_eq!(
            e("1xxxxxxxxxxxxxxxxxx"),
            format!(
                "invalid expiration '1xxxxxxxxxxxxxxxxxx': {{leftover_string,\n{}\"xxxxxxxxxxxxxxxxxx\"}}",
                " ".repeat(43)
            )
        );
    }
}
