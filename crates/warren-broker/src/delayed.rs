//! Delayed messages: the `x-delayed-message` exchange type of RabbitMQ's delayed-message
//! plugin, built in.
//!
//! An exchange declared with type `x-delayed-message` routes as its `x-delayed-type` argument
//! says. A message published to it with a positive `x-delay` header (ms; an integer, or a
//! string or float the plugin converts) waits that long, then is routed through the exchange
//! as it is then, with `x-delay` negated so it is not delayed again further on. Without the
//! header, or with `x-delay` ≤ 0, it is routed at once. As with the plugin, a delayed message
//! is routed to no queue when published: a `mandatory` one is returned (`NO_ROUTE`) at once.
//!
//! Unlike the plugin there is no 49-day limit (the plugin routes a message with a longer
//! delay at once), and nothing holds a timer per message: the messages wait in one map ordered
//! by due time, which [`crate::Broker::tick`] drains. A persistent message published to a
//! durable exchange is written to the log first (under a log id recorded for the vhost), with
//! its due time, so it survives a restart and is delivered on time afterwards; only its
//! position stays in memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::durability::Ticket;
use crate::error::{BrokerError, Result};
use crate::message::Message;
use crate::persistence::{decode_message, encode_message, Persistence};
use crate::spec::ExchangeKind;
use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use warren_codec::{FieldTable, FieldValue, ShortString};

/// Checks a new `x-delayed-message` exchange's arguments as the plugin does.
pub fn validate(arguments: &FieldTable) -> Result<()> {
    match arguments.get("x-delayed-type") {
        Some(FieldValue::LongString(t)) => match t.as_str() {
            Some("x-delayed-message") => Err(BrokerError::PreconditionFailed(
                "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'".into(),
            )),
            Some(kind) if ExchangeKind::parse(kind).is_some() => Ok(()),
            _ => Err(BrokerError::CommandInvalid(format!(
                "unknown exchange type '{}'",
                String::from_utf8_lossy(t.as_bytes())
            ))),
        },
        _ => Err(BrokerError::PreconditionFailed(
            "Invalid argument, 'x-delayed-type' must be an existing exchange type".into(),
        )),
    }
}

/// The delay a message asks for: its `x-delay` header as the plugin reads it (integers;
/// strings holding an integer; floats truncated). None when absent, unreadable or not
/// positive: the message is routed at once.
pub fn delay_of(headers: Option<&FieldTable>) -> Option<u64> {
    let d: i64 = match headers?.get("x-delay")? {
        FieldValue::Timestamp(_) => return None,
        FieldValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok()?,
        FieldValue::F32(f) => f.trunc() as i64,
        FieldValue::F64(f) => f.trunc() as i64,
        FieldValue::Decimal(d) => i64::from(d.value) / 10i64.checked_pow(u32::from(d.scale))?,
        other => other.as_i64()?,
    };
    u64::try_from(d).ok().filter(|d| *d > 0)
}

/// The message as it leaves the delay: `x-delay` negated (a signed int, as the plugin sets it),
/// the headers sorted as RabbitMQ's `set_table_value` leaves them.
fn released(message: &Message, delay: u64) -> Message {
    let mut props = message.properties();
    let mut headers = props.headers.take().unwrap_or_default();
    let negated = -(delay as i64);
    let value = i32::try_from(negated).map_or(FieldValue::I64(negated), FieldValue::I32);
    crate::args::set_table_value(&mut headers, ShortString::from_static("x-delay"), value);
    props.headers = Some(headers);
    message.with_properties(
        message.exchange.clone(),
        message.routing_key.clone(),
        &props,
    )
}

/// Where a waiting message is.
enum Held {
    Memory(Arc<Message>),
    /// In the log under the vhost's delayed id, with this message id.
    Logged {
        id: u64,
    },
}

struct Entry {
    delay: u64,
    held: Held,
}

/// A vhost's delayed messages, by due time (ms since the Unix epoch) then arrival.
#[derive(Default)]
pub struct DelayStore {
    waiting: Mutex<Waiting>,
    /// The log id this vhost's delayed messages are kept under (allocated and recorded on
    /// first use, or recovered). A lock rather than a `OnceLock`: the first use must record
    /// the id before anyone logs under it.
    log_id: Mutex<Option<u64>>,
}

#[derive(Default)]
struct Waiting {
    by_due: BTreeMap<(u64, u64), Entry>,
    next: u64,
}

/// A message whose delay is over, ready to be routed.
pub(crate) struct Due {
    pub message: Message,
    /// Its entry in the log, settled once the message is routed.
    pub log: Option<(u64, u64)>,
}

/// Log payload of a delayed message: due time, delay, then the message as stored elsewhere.
fn encode(due: u64, delay: u64, m: &Message) -> Bytes {
    let rest = encode_message(m);
    let mut buf = BytesMut::with_capacity(16 + rest.len());
    buf.put_u64(due);
    buf.put_u64(delay);
    buf.put_slice(&rest);
    buf.freeze()
}

fn decode(id: u64, payload: Bytes) -> Option<(u64, u64, Message)> {
    if payload.len() < 16 {
        return None;
    }
    let due = u64::from_be_bytes(payload[0..8].try_into().ok()?);
    let delay = u64::from_be_bytes(payload[8..16].try_into().ok()?);
    let m = decode_message(id, payload.slice(16..))?;
    Some((due, delay, m))
}

impl DelayStore {
    pub fn len(&self) -> usize {
        self.waiting.lock().by_due.len()
    }

    fn insert(&self, due: u64, entry: Entry) {
        let mut w = self.waiting.lock();
        let seq = w.next;
        w.next += 1;
        w.by_due.insert((due, seq), entry);
    }

    /// Holds `message` (published to the delayed exchange `exchange`) for `delay` ms from
    /// `now`. A persistent message on a durable exchange is logged first; the returned LSN is
    /// what its confirm waits for.
    pub(crate) fn delay(
        &self,
        persistence: Option<&Arc<Persistence>>,
        vhost: &str,
        exchange_durable: bool,
        message: Arc<Message>,
        delay: u64,
        now: u64,
    ) -> Result<Ticket> {
        let due = now.saturating_add(delay);
        let (held, ticket) = match persistence {
            Some(p) if exchange_durable && message.persistent => {
                let log_id = self.log_id(p, vhost)?;
                let published = p.store.publish(&[log_id], encode(due, delay, &message))?;
                (
                    Held::Logged {
                        id: published.msg_id,
                    },
                    Ticket::at(published.lsn),
                )
            }
            _ => (Held::Memory(message), Ticket::NONE),
        };
        self.insert(due, Entry { delay, held });
        Ok(ticket)
    }

    /// The log id of this vhost's delayed messages, allocated and recorded on first use.
    fn log_id(&self, p: &Persistence, vhost: &str) -> Result<u64> {
        let mut slot = self.log_id.lock();
        if let Some(id) = *slot {
            return Ok(id);
        }
        let id = p.next_queue_id();
        p.save_delayed(vhost, id)?;
        *slot = Some(id);
        Ok(id)
    }

    /// Drops every waiting message, and the log's copies (the vhost is being deleted).
    pub(crate) fn clear(&self, persistence: Option<&Arc<Persistence>>, vhost: &str) {
        self.waiting.lock().by_due.clear();
        if let (Some(p), Some(id)) = (persistence, self.log_id.lock().take()) {
            if let Err(e) = p.delete_delayed(vhost, id) {
                tracing::warn!(error = %e, vhost, "cannot forget the delayed messages' record");
            }
        }
    }

    /// The log id recovered for this vhost's delayed messages.
    pub(crate) fn set_log_id(&self, id: u64) {
        *self.log_id.lock() = Some(id);
    }

    /// Puts back a delayed message recovered from the log (reading it once for its due time).
    pub(crate) fn restore(&self, p: &Persistence, id: u64) -> bool {
        let Some((due, delay, _)) = p.store.read(id).ok().and_then(|b| decode(id, b)) else {
            return false;
        };
        self.insert(
            due,
            Entry {
                delay,
                held: Held::Logged { id },
            },
        );
        true
    }

    /// Takes the messages due at `now`, in due order, ready to route.
    pub(crate) fn take_due(&self, now: u64, persistence: Option<&Arc<Persistence>>) -> Vec<Due> {
        let entries: Vec<Entry> = {
            let mut w = self.waiting.lock();
            let later = w.by_due.split_off(&(now.saturating_add(1), 0));
            std::mem::replace(&mut w.by_due, later)
                .into_values()
                .collect()
        };
        let log_id = *self.log_id.lock();
        entries
            .into_iter()
            .filter_map(|e| match e.held {
                Held::Memory(m) => Some(Due {
                    message: released(&m, e.delay),
                    log: None,
                }),
                Held::Logged { id } => {
                    let p = persistence?;
                    let log = log_id.map(|q| (q, id));
                    match p.store.read(id).ok().and_then(|b| decode(id, b)) {
                        Some((_, _, m)) => Some(Due {
                            message: released(&m, e.delay),
                            log,
                        }),
                        None => {
                            tracing::warn!(id, "cannot read a delayed message back; dropping it");
                            if let Some((q, id)) = log {
                                p.settle(q, &[id]);
                            }
                            None
                        }
                    }
                }
            })
            .collect()
    }

    /// The due time of the next message, if any.
    pub fn next_due(&self) -> Option<u64> {
        self.waiting
            .lock()
            .by_due
            .keys()
            .next()
            .map(|(due, _)| *due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_codec::{Decimal, LongString};

    fn h(v: FieldValue) -> FieldTable {
        let mut t = FieldTable::new();
        t.insert(ShortString::from_static("x-delay"), v);
        t
    }

    #[test]
    fn delays_are_read_as_the_plugin_reads_them() {
        assert_eq!(delay_of(Some(&h(FieldValue::I32(5000)))), Some(5000));
        assert_eq!(delay_of(Some(&h(FieldValue::I64(1 << 40)))), Some(1 << 40));
        assert_eq!(
            delay_of(Some(&h(FieldValue::LongString(LongString::from("250"))))),
            Some(250)
        );
        assert_eq!(delay_of(Some(&h(FieldValue::F64(99.9)))), Some(99));
        assert_eq!(
            delay_of(Some(&h(FieldValue::Decimal(Decimal {
                scale: 1,
                value: 15
            })))),
            Some(1)
        );
        assert_eq!(delay_of(Some(&h(FieldValue::I32(0)))), None);
        assert_eq!(delay_of(Some(&h(FieldValue::I32(-5)))), None);
        assert_eq!(
            delay_of(Some(&h(FieldValue::LongString(LongString::from("soon"))))),
            None
        );
        assert_eq!(delay_of(Some(&FieldTable::new())), None);
        assert_eq!(delay_of(None), None);
    }

    #[test]
    fn exchange_arguments_are_checked_as_the_plugin_checks_them() {
        let args = |v: Option<&str>| {
            let mut t = FieldTable::new();
            if let Some(v) = v {
                t.insert(
                    ShortString::from_static("x-delayed-type"),
                    FieldValue::from(v),
                );
            }
            t
        };
        assert!(validate(&args(Some("direct"))).is_ok());
        assert!(validate(&args(Some("headers"))).is_ok());
        assert!(matches!(
            validate(&args(None)),
            Err(BrokerError::PreconditionFailed(t)) if t == "Invalid argument, 'x-delayed-type' must be an existing exchange type"
        ));
        assert!(matches!(
            validate(&args(Some("x-delayed-message"))),
            Err(BrokerError::PreconditionFailed(_))
        ));
        assert_eq!(
            validate(&args(Some("nope"))),
            Err(BrokerError::CommandInvalid(
                "unknown exchange type 'nope'".into()
            ))
        );
    }

    #[test]
    fn log_payload_round_trips() {
        let props = warren_codec::BasicProperties {
            delivery_mode: Some(2),
            ..Default::default()
        };
        let m = Message::new(
            ShortString::from_static("delayed"),
            ShortString::from_static("rk"),
            props.to_raw(),
            Bytes::from_static(b"later"),
            &props,
        );
        let (due, delay, back) = decode(9, encode(1234, 56, &m)).expect("decodes");
        assert_eq!((due, delay), (1234, 56));
        assert_eq!(back.body, m.body);
        assert_eq!(back.routing_key, m.routing_key);
        assert_eq!(back.id(), 9);
    }
}
