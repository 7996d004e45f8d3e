//! Dead-lettering: a message rejected, expired, pushed out by a length limit or over its
//! delivery limit is republished to the queue's dead-letter exchange, with the `x-death`
//! history RabbitMQ writes.
//!
//! The header follows RabbitMQ 3.10 (the version this was checked against) to the byte:
//! - `x-death` is an array of tables, one per (queue, reason), with `count`, `reason`,
//!   `queue`, `time` (a timestamp in seconds), `exchange`, `routing-keys` and, when the
//!   message had one, `original-expiration`. The entry for this death goes first: a new
//!   entry (or an existing one with its count incremented, keeping its other fields).
//! - The first death also sets `x-first-death-reason`, `-queue` and `-exchange`. RabbitMQ
//!   3.10 writes no `x-last-death-*` (3.13 added them), so neither does Warren.
//! - Every change sorts the headers table by key, and the tables of later deaths are sorted;
//!   the very first entry keeps RabbitMQ's insertion order. With three or more entries, 3.10
//!   regroups the older ones in reverse order; that is reproduced too.
//! - The `expiration` property is removed (the message does not expire again by itself).
//!
//! A message that would come back to a queue it already died in, with no rejection along the
//! way, is dropped instead of cycling forever (rejections are a client's doing, so they may
//! cycle).

use std::sync::Arc;

use warren_codec::{FieldTable, FieldValue, LongString, ShortString};

use crate::args::{set_table_value, sort_table};
use crate::message::Message;

/// Why a message died, as written in `x-death`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `basic.reject` or `basic.nack` with `requeue=false`.
    Rejected,
    /// Its TTL (the queue's or its own) ran out.
    Expired,
    /// Pushed out by `x-max-length` / `x-max-length-bytes`, or refused by
    /// `reject-publish-dlx`.
    Maxlen,
    /// Returned more often than the queue's `x-delivery-limit`.
    DeliveryLimit,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::Maxlen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// A message leaving a queue to be dead-lettered.
#[derive(Debug)]
pub(crate) struct Dead {
    pub message: Arc<Message>,
    pub reason: Reason,
}

fn key(k: &'static str) -> ShortString {
    ShortString::from_static(k)
}

fn longstr(b: &[u8]) -> FieldValue {
    FieldValue::LongString(LongString(bytes::Bytes::copy_from_slice(b)))
}

/// The (queue, reason) an `x-death` entry is about.
fn event_key(t: &FieldTable) -> (Option<FieldValue>, Option<FieldValue>) {
    (t.get("queue").cloned(), t.get("reason").cloned())
}

fn with_count(mut t: FieldTable, n: i64) -> FieldTable {
    if t.get("count").is_none() {
        t.0.insert(0, (key("count"), FieldValue::I64(n)));
    }
    t
}

/// RabbitMQ 3.10's `group_by_queue_and_reason`: one entry per (queue, reason). With two or
/// more entries the result comes out reversed, as there.
fn group_by_queue_and_reason(tables: Vec<FieldTable>) -> Vec<FieldTable> {
    if tables.len() <= 1 {
        return tables;
    }
    let mut seen = Vec::new();
    let mut acc: Vec<FieldTable> = Vec::new();
    for t in &tables {
        let k = event_key(t);
        let matches: Vec<&FieldTable> = tables.iter().filter(|x| event_key(x) == k).collect();
        let entry = with_count(matches[0].clone(), matches.len() as i64);
        if acc.is_empty() || !seen.contains(&k) {
            acc.insert(0, entry);
        }
        seen.push(k);
    }
    acc
}

/// The routing keys a message was published with: its routing key, then `CC` and `BCC`.
fn routing_keys(message: &Message, headers: Option<&FieldTable>) -> Vec<FieldValue> {
    let mut keys = vec![longstr(message.routing_key.as_bytes())];
    for h in ["CC", "BCC"] {
        if let Some(FieldValue::Array(routes)) = headers.and_then(|t| t.get(h)) {
            keys.extend(
                routes
                    .iter()
                    .filter(|r| matches!(r, FieldValue::LongString(_)))
                    .cloned(),
            );
        }
    }
    keys
}

/// Adds this death to `headers` as RabbitMQ 3.10 does.
pub(crate) fn record_death(
    headers: Option<FieldTable>,
    message: &Message,
    reason: Reason,
    queue: &str,
    original_expiration: Option<&ShortString>,
    time_secs: u64,
) -> FieldTable {
    let routing_keys = routing_keys(message, headers.as_ref());
    let mut info = FieldTable(vec![
        (key("reason"), FieldValue::from(reason.as_str())),
        (key("queue"), longstr(queue.as_bytes())),
        (key("time"), FieldValue::Timestamp(time_secs)),
        (key("exchange"), longstr(message.exchange.as_bytes())),
        (key("routing-keys"), FieldValue::Array(routing_keys)),
    ]);
    if let Some(e) = original_expiration {
        info.0
            .push((key("original-expiration"), longstr(e.as_bytes())));
    }
    let mut h = headers.unwrap_or_default();
    match h.get("x-death").cloned() {
        None => {
            set_table_value(
                &mut h,
                key("x-first-death-reason"),
                FieldValue::from(reason.as_str()),
            );
            set_table_value(
                &mut h,
                key("x-first-death-queue"),
                longstr(queue.as_bytes()),
            );
            set_table_value(
                &mut h,
                key("x-first-death-exchange"),
                longstr(message.exchange.as_bytes()),
            );
            let entry = with_count(info, 1);
            set_table_value(
                &mut h,
                key("x-death"),
                FieldValue::Array(vec![FieldValue::Table(entry)]),
            );
        }
        Some(FieldValue::Array(entries)) => {
            let tables = entries
                .into_iter()
                .filter_map(|e| match e {
                    FieldValue::Table(t) => Some(t),
                    _ => None,
                })
                .collect();
            let this = event_key(&info);
            let (matches, others): (Vec<FieldTable>, Vec<FieldTable>) =
                group_by_queue_and_reason(tables)
                    .into_iter()
                    .partition(|t| event_key(t) == this);
            let mut entry = match matches.into_iter().next() {
                None => with_count(info, 1),
                Some(mut m) => {
                    let n = m.get("count").and_then(FieldValue::as_i64).unwrap_or(0);
                    match m.0.iter_mut().find(|(k, _)| k.as_str() == "count") {
                        Some(slot) => slot.1 = FieldValue::I64(n + 1),
                        None => m = with_count(m, 1),
                    }
                    m
                }
            };
            sort_table(&mut entry);
            let mut all = vec![FieldValue::Table(entry)];
            all.extend(others.into_iter().map(FieldValue::Table));
            set_table_value(&mut h, key("x-death"), FieldValue::Array(all));
        }
        Some(_) => {
            // Not an array (a client rewrote it): start again, as RabbitMQ does.
            let entry = with_count(info, 1);
            set_table_value(
                &mut h,
                key("x-death"),
                FieldValue::Array(vec![FieldValue::Table(entry)]),
            );
        }
    }
    h
}

/// RabbitMQ's `is_death_cycle`: the message died in `queue` before, and every death since
/// (that one included) was automatic (no rejection).
pub(crate) fn is_cycle(queue: &str, headers: &FieldTable) -> bool {
    let Some(FieldValue::Array(deaths)) = headers.get("x-death") else {
        return false;
    };
    let is_queue = |d: &FieldValue| match d {
        FieldValue::Table(t) => t.get("queue").and_then(FieldValue::as_str) == Some(queue),
        _ => false,
    };
    let Some(pos) = deaths.iter().position(is_queue) else {
        return false;
    };
    deaths[..=pos].iter().all(|d| match d {
        FieldValue::Table(t) => t.get("reason").and_then(FieldValue::as_str) != Some("rejected"),
        // Something a client put there: not a fully automatic cycle.
        _ => false,
    })
}

/// The message a dead one becomes on its way to the dead-letter exchange `dlx`: its death
/// recorded in `x-death`, its `expiration` removed, its routing key replaced by the queue's
/// dead-letter routing key if there is one. Also returns the headers to check for cycles
/// (None: a rejection, which may cycle).
pub(crate) fn dead_lettered(
    d: &Dead,
    queue: &str,
    dlx: &ShortString,
    routing_key: Option<&ShortString>,
    time_secs: u64,
) -> (Arc<Message>, Option<FieldTable>) {
    let mut props = d.message.properties();
    let headers = record_death(
        props.headers.take(),
        &d.message,
        d.reason,
        queue,
        props.expiration.as_ref(),
        time_secs,
    );
    let routing_key = routing_key
        .cloned()
        .unwrap_or_else(|| d.message.routing_key.clone());
    props.headers = Some(headers);
    props.expiration = None;
    let m = Arc::new(d.message.with_properties(dlx.clone(), routing_key, &props));
    let cycle_check = if d.reason == Reason::Rejected {
        None
    } else {
        props.headers
    };
    (m, cycle_check)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use warren_codec::BasicProperties;

    fn msg(exchange: &'static str, rk: &'static str) -> Message {
        let props = BasicProperties::default();
        Message::new(
            ShortString::from_static(exchange),
            ShortString::from_static(rk),
            props.to_raw(),
            Bytes::new(),
            &props,
        )
    }

    fn keys(t: &FieldTable) -> Vec<&str> {
        t.0.iter().map(|(k, _)| k.as_str()).collect()
    }

    fn entries(t: &FieldTable) -> Vec<FieldTable> {
        match t.get("x-death") {
            Some(FieldValue::Array(a)) => a
                .iter()
                .map(|e| match e {
                    FieldValue::Table(t) => t.clone(),
                    other => panic!("{other:?}"),
                })
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn first_death_is_written_as_rabbitmq_writes_it() {
        let mut h = FieldTable::new();
        h.insert(ShortString::from_static("zz"), FieldValue::I32(1));
        h.insert(ShortString::from_static("aa"), FieldValue::I32(2));
        let exp = ShortString::from_static("30");
        let out = record_death(
            Some(h),
            &msg("", "src"),
            Reason::Expired,
            "src",
            Some(&exp),
            7,
        );
        assert_eq!(
            keys(&out),
            [
                "aa",
                "x-death",
                "x-first-death-exchange",
                "x-first-death-queue",
                "x-first-death-reason",
                "zz"
            ]
        );
        let e = &entries(&out)[0];
        assert_eq!(
            keys(e),
            [
                "count",
                "reason",
                "queue",
                "time",
                "exchange",
                "routing-keys",
                "original-expiration"
            ]
        );
        assert_eq!(e.get("count"), Some(&FieldValue::I64(1)));
        assert_eq!(e.get("time"), Some(&FieldValue::Timestamp(7)));
    }

    #[test]
    fn same_queue_and_reason_counts_up_and_goes_first() {
        let m = msg("amq.direct", "rk1");
        let h = record_death(None, &m, Reason::Rejected, "q", None, 1);
        let h = record_death(Some(h), &m, Reason::Rejected, "q", None, 2);
        let e = entries(&h);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].get("count"), Some(&FieldValue::I64(2)));
        // Kept from the first death, and sorted.
        assert_eq!(e[0].get("time"), Some(&FieldValue::Timestamp(1)));
        assert_eq!(
            keys(&e[0]),
            [
                "count",
                "exchange",
                "queue",
                "reason",
                "routing-keys",
                "time"
            ]
        );
    }

    #[test]
    fn three_hops_come_out_in_rabbitmq_310_order() {
        // ch1 -> ch2 -> ch3 by expiry: RabbitMQ 3.10 gives [ch3, ch1, ch2].
        let h = record_death(None, &msg("", "ch1"), Reason::Expired, "ch1", None, 1);
        let h = record_death(Some(h), &msg("", "ch2"), Reason::Expired, "ch2", None, 1);
        let h = record_death(Some(h), &msg("", "ch3"), Reason::Expired, "ch3", None, 1);
        let queues: Vec<String> = entries(&h)
            .iter()
            .map(|e| {
                e.get("queue")
                    .and_then(FieldValue::as_str)
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(queues, ["ch3", "ch1", "ch2"]);
        assert_eq!(
            h.get("x-first-death-queue").and_then(FieldValue::as_str),
            Some("ch1")
        );
    }

    #[test]
    fn cycles_without_rejection_are_detected() {
        let h = record_death(None, &msg("", "a"), Reason::Expired, "a", None, 1);
        let h = record_death(Some(h), &msg("", "b"), Reason::Expired, "b", None, 1);
        assert!(is_cycle("a", &h));
        assert!(is_cycle("b", &h));
        assert!(!is_cycle("c", &h));
        let h = record_death(Some(h), &msg("", "c"), Reason::Rejected, "c", None, 1);
        assert!(!is_cycle("a", &h));
        assert!(!is_cycle("c", &h));
    }
}
