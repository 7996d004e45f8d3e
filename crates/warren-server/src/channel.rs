//! The per-channel protocol state machine: content assembly, confirm and transaction modes,
//! the "current queue" shortcut, and dispatch of methods to one handler per AMQP class
//! (`exchange.rs`, `queue.rs`, `basic.rs`, `tx.rs`).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use warren_broker::{Channel, Publisher, Ticket};
use warren_codec::{
    basic, channel, ContentHeader, Frame, FrameType, Method, ShortString, CLASS_BASIC,
};

use crate::connection::ConnCtx;
use crate::error::{AmqpError, AmqpResult};
use crate::tx::TxState;

/// A publish whose header and body frames are still arriving.
struct PendingContent {
    publish: basic::Publish,
    header: Option<ContentHeader>,
    body: Body,
}

/// A body arriving in frames; a single-frame body is kept as the frame's own slice (no copy).
enum Body {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::One(b) => b.len(),
            Body::Many(b) => b.len(),
        }
    }

    fn push(&mut self, chunk: Bytes, expected: usize) {
        *self = match std::mem::replace(self, Body::Empty) {
            Body::Empty => Body::One(chunk),
            Body::One(first) => {
                let mut all = BytesMut::with_capacity(expected);
                all.extend_from_slice(&first);
                all.extend_from_slice(&chunk);
                Body::Many(all)
            }
            Body::Many(mut all) => {
                all.extend_from_slice(&chunk);
                Body::Many(all)
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Body::Empty => Bytes::new(),
            Body::One(b) => b,
            Body::Many(b) => b.freeze(),
        }
    }
}

/// Publisher-confirm bookkeeping.
#[derive(Default)]
pub(crate) struct Confirms {
    /// Sequence number of the last publish on this channel.
    pub last_seq: u64,
    /// Highest sequence number confirmed and not yet acked to the client; acks go out once per
    /// batch of frames, with `multiple` set.
    pub ack_pending: Option<u64>,
}

/// A reply that may go out only once the log has made a position durable.
pub(crate) enum Held {
    /// A publisher confirm (coalesced into multiple-acks on release).
    Ack(u64),
    /// A publish a queue refused: `basic.nack` for it, after the acks before it.
    Nack(u64),
    /// Another reply, e.g. `tx.commit-ok` for persistent messages.
    Reply(Method),
}

pub(crate) enum Mode {
    Normal,
    Confirm(Confirms),
    Tx(TxState),
}

pub struct ChannelMachine {
    pub(crate) id: u16,
    pub(crate) broker_channel: Arc<Channel>,
    pending: Option<PendingContent>,
    pub(crate) mode: Mode,
    /// The last queue declared on this channel: an empty queue name in later methods means it.
    pub(crate) current_queue: Option<ShortString>,
    /// The channel's publishing state in the broker (cached lookups, counters).
    pub(crate) publisher: Publisher,
    /// Set after this side sent `channel.close`: everything but `close-ok` is discarded.
    pub(crate) closing: bool,
    /// Replies waiting for the log, in order, each with the ticket it waits for (none: only
    /// the replies ahead of it).
    held: VecDeque<(Ticket, Held)>,
    /// The highest publish sequence number answered (acked or nacked) so far, for counting
    /// the confirms a multiple-ack covers.
    answered: u64,
}

impl ChannelMachine {
    pub fn new(id: u16, broker_channel: Arc<Channel>) -> Self {
        ChannelMachine {
            id,
            publisher: Publisher::for_channel(broker_channel.clone()),
            broker_channel,
            pending: None,
            mode: Mode::Normal,
            current_queue: None,
            closing: false,
            held: VecDeque::new(),
            answered: 0,
        }
    }

    /// Handles a method addressed to this open channel (the connection has already taken
    /// care of `channel.close` and `channel.close-ok`).
    pub fn handle_method_frame(&mut self, ctx: &ConnCtx, method: Method) -> AmqpResult {
        if let Method::BasicPublish(p) = method {
            return self.handle_publish(p);
        }
        if !self.takes_methods()? {
            return Ok(());
        }
        let (class_id, method_id) = (method.class_id(), method.method_id());
        self.handle_method(ctx, method)
            .map_err(|e| e.during(class_id, method_id))
    }

    /// `basic.publish`, whose content frames follow. (The connection calls this directly
    /// rather than through [`Self::handle_method_frame`], to skip the `Method` enum.)
    pub fn handle_publish(&mut self, p: basic::Publish) -> AmqpResult {
        if !self.takes_methods()? {
            return Ok(());
        }
        if p.immediate {
            return Err(AmqpError::not_implemented("immediate=true").during(60, 40));
        }
        self.pending = Some(PendingContent {
            publish: p,
            header: None,
            body: Body::Empty,
        });
        Ok(())
    }

    /// Whether a method is to be handled: not once this side has sent `channel.close` (spec:
    /// discard everything until close-ok), and never in the middle of a message's content.
    fn takes_methods(&self) -> AmqpResult<bool> {
        if self.closing {
            return Ok(false);
        }
        if self.pending.is_some() {
            return Err(AmqpError::unexpected_frame(
                "expected content header for class 60, got non content header frame instead",
            )
            .during(60, 40));
        }
        Ok(true)
    }

    /// Handles a content header or body frame addressed to this open channel.
    pub fn handle_content_frame(&mut self, ctx: &ConnCtx, frame: Frame) -> AmqpResult {
        match frame.kind {
            FrameType::Method => Ok(()),
            FrameType::Header => {
                if self.closing {
                    return Ok(());
                }
                let Some(pending) = self.pending.as_mut() else {
                    // RabbitMQ's words for a content frame that follows no content method.
                    return Err(AmqpError::unexpected_frame(
                        "expected method frame, got non method frame instead",
                    ));
                };
                if pending.header.is_some() {
                    return Err(AmqpError::unexpected_frame(
                        "second content header frame for one message",
                    ));
                }
                let header = ContentHeader::decode(frame.payload)?;
                if header.class_id != CLASS_BASIC {
                    return Err(AmqpError::unexpected_frame(format!(
                        "content header for class {} on a basic.publish",
                        header.class_id
                    )));
                }
                if header.body_size > ctx.max_message_size {
                    self.pending = None;
                    return Err(AmqpError::precondition_failed(format!(
                        "message size {} is larger than configured max size {}",
                        header.body_size, ctx.max_message_size
                    ))
                    .during(60, 40));
                }
                let done = header.body_size == 0;
                pending.header = Some(header);
                if done {
                    self.finish_publish(ctx)?;
                }
                Ok(())
            }
            FrameType::Body => {
                if self.closing {
                    return Ok(());
                }
                // A message on its way in is publishing: under a memory alarm its connection
                // is blocked part-way, not read to the end (a large body would take in the
                // memory the alarm is there to protect).
                ctx.published.set(true);
                let Some(pending) = self.pending.as_mut() else {
                    return Err(AmqpError::unexpected_frame(
                        "expected method frame, got non method frame instead",
                    ));
                };
                let Some(header) = &pending.header else {
                    return Err(AmqpError::unexpected_frame(
                        "content body frame before the content header",
                    ));
                };
                let expected = header.body_size as usize;
                if pending.body.len() + frame.payload.len() > expected {
                    return Err(AmqpError::unexpected_frame(
                        "content body is larger than the size its header declared",
                    ));
                }
                pending.body.push(frame.payload, expected);
                if pending.body.len() == expected {
                    self.finish_publish(ctx)?;
                }
                Ok(())
            }
            FrameType::Heartbeat => Err(AmqpError::unexpected_frame(format!(
                "heartbeat frame on channel {}",
                self.id
            ))),
        }
    }

    fn finish_publish(&mut self, ctx: &ConnCtx) -> AmqpResult {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        let Some(header) = pending.header else {
            return Ok(());
        };
        let body = pending.body.into_bytes();
        self.publish(ctx, pending.publish, header.raw_properties, body)
            .map_err(|e| e.during(60, 40))
    }

    fn handle_method(&mut self, ctx: &ConnCtx, method: Method) -> AmqpResult {
        match method.class_id() {
            warren_codec::CLASS_CHANNEL => self.handle_channel(ctx, method),
            warren_codec::CLASS_EXCHANGE => self.handle_exchange(ctx, method),
            warren_codec::CLASS_QUEUE => self.handle_queue(ctx, method),
            warren_codec::CLASS_BASIC => self.handle_basic(ctx, method),
            warren_codec::CLASS_CONFIRM | warren_codec::CLASS_TX => self.handle_tx(ctx, method),
            _ => Err(AmqpError::command_invalid(format!(
                "{} is not valid on a channel",
                method.name()
            ))),
        }
    }

    fn handle_channel(&mut self, ctx: &ConnCtx, method: Method) -> AmqpResult {
        match method {
            Method::ChannelOpen(_) => Err(AmqpError::channel_error("second 'channel.open' seen")),
            // As RabbitMQ: a client may not pause its deliveries this way (prefetch does it).
            Method::ChannelFlow(f) if !f.active => Err(AmqpError::not_implemented("active=false")),
            Method::ChannelFlow(_) => {
                ctx.outbox.method(self.id, channel::FlowOk { active: true });
                Ok(())
            }
            Method::ChannelFlowOk(_) => Ok(()),
            // Close and close-ok are handled by the connection, which owns the channel table.
            other => Err(AmqpError::command_invalid(format!(
                "unexpected {} on channel {}",
                other.name(),
                self.id
            ))),
        }
    }

    /// Resolves the empty queue name to the channel's current queue, as the spec says.
    pub(crate) fn queue_name(&self, name: &ShortString) -> AmqpResult<ShortString> {
        if !name.is_empty() {
            return Ok(name.clone());
        }
        self.current_queue
            .clone()
            .ok_or_else(|| AmqpError::not_found("no previously declared queue"))
    }

    /// Queues the confirm for publish `seq`. It goes out at the end of the read batch, or,
    /// when the message was logged, once its ticket is durable.
    ///
    /// Durability: a confirm for a persistent message on a durable queue is never sent before
    /// the log says it is on disk.
    pub(crate) fn confirm(&mut self, seq: u64, ticket: Ticket) {
        if !ticket.is_some() && self.held.is_empty() {
            if let Mode::Confirm(c) = &mut self.mode {
                c.ack_pending = Some(seq);
            }
            return;
        }
        self.hold(ticket, Held::Ack(seq));
    }

    /// Queues the negative confirm for publish `seq` (a queue refused it). It goes out after
    /// every ack for earlier publishes: an ack with `multiple` must never cover it.
    pub(crate) fn reject(&mut self, ctx: &ConnCtx, seq: u64) {
        if self.held.is_empty() {
            if let Some(acked) = self.take_ack_pending() {
                self.send_ack(ctx, acked);
            }
            self.send_nack(ctx, seq);
            return;
        }
        self.hold(Ticket::NONE, Held::Nack(seq));
    }

    fn take_ack_pending(&mut self) -> Option<u64> {
        match &mut self.mode {
            Mode::Confirm(c) => c.ack_pending.take(),
            _ => None,
        }
    }

    /// Holds a reply until `ticket` is durable (and everything held before it has gone out).
    pub(crate) fn hold(&mut self, ticket: Ticket, item: Held) {
        self.held.push_back((ticket, item));
    }

    /// The ticket of the oldest held reply, if any: the next one that can go out. Waiting for
    /// it rather than for the newest lets each fsync release its own confirms at once; a
    /// publisher at the end of its confirm window sends nothing that would wake us otherwise.
    pub fn waiting_for(&self) -> Option<Ticket> {
        self.held.front().map(|(t, _)| *t)
    }

    fn send_ack(&mut self, ctx: &ConnCtx, seq: u64) {
        // Confirms go out in sequence order, so a multiple-ack covers everything since the
        // last answer.
        self.broker_channel
            .count_confirms(seq.saturating_sub(self.answered), 0);
        self.answered = seq;
        ctx.outbox.method(
            self.id,
            basic::Ack {
                delivery_tag: seq,
                multiple: true,
            },
        );
    }

    fn send_nack(&mut self, ctx: &ConnCtx, seq: u64) {
        self.broker_channel.count_confirms(0, 1);
        self.answered = seq;
        ctx.outbox.method(
            self.id,
            basic::Nack {
                delivery_tag: seq,
                multiple: false,
                requeue: false,
            },
        );
    }

    /// Sends the confirms gathered during a batch of frames as one multiple-ack, then every
    /// held reply whose log position is now durable.
    pub fn flush_confirms(&mut self, ctx: &ConnCtx, durable: Ticket) {
        if let Some(seq) = self.take_ack_pending() {
            self.send_ack(ctx, seq);
        }
        let mut ack = None;
        while self.held.front().is_some_and(|(t, _)| *t <= durable) {
            let Some((_, item)) = self.held.pop_front() else {
                break;
            };
            match item {
                Held::Ack(seq) => ack = Some(seq),
                Held::Nack(seq) => {
                    if let Some(acked) = ack.take() {
                        self.send_ack(ctx, acked);
                    }
                    self.send_nack(ctx, seq);
                }
                Held::Reply(m) => {
                    if let Some(seq) = ack.take() {
                        self.send_ack(ctx, seq);
                    }
                    ctx.outbox.method(self.id, m);
                }
            }
        }
        if let Some(seq) = ack {
            self.send_ack(ctx, seq);
        }
    }

    /// The channel is going away (closed by either side, or the connection ended): its
    /// consumers are cancelled, its unacked messages returned, and it leaves the registry.
    pub fn teardown(&mut self, ctx: &ConnCtx) {
        self.pending = None;
        // Unsent confirms are moot: the client treats what it did not see confirmed as lost.
        self.held.clear();
        if let Mode::Tx(tx) = &mut self.mode {
            // Deliveries acked in the open transaction go back to their queues with the rest.
            tx.rollback(&self.broker_channel);
        }
        self.broker_channel.close();
        ctx.registered.close_channel(&self.broker_channel);
    }

    /// The connection is ending: tears the channel down, unless it already was when it
    /// started closing (then only its registry entry is left).
    pub fn end(mut self, ctx: &ConnCtx) {
        if self.closing {
            ctx.registered.close_channel(&self.broker_channel);
        } else {
            self.teardown(ctx);
        }
    }
}

/// The channel state machine driven without a socket: AMQP methods and content frames in,
/// what it queues for the client out.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::OutItem;
    use bytes::BytesMut;
    use warren_broker::{Broker, Outbound};
    use warren_codec::{confirm, frame, queue, tx, Method};

    type Harness = crate::driven::Driven;

    fn harness() -> Harness {
        crate::driven::driven(&Arc::new(Broker::new()), 16 << 20).expect("a driven channel")
    }

    impl Harness {
        fn method(&mut self, m: impl Into<Method>) -> AmqpResult {
            self.machine.handle_method_frame(&self.ctx, m.into())
        }

        /// `basic.publish` with its header and one body frame.
        fn publish(
            &mut self,
            exchange: &str,
            key: &str,
            mandatory: bool,
            body: &[u8],
        ) -> AmqpResult {
            self.publish_with(exchange, key, mandatory, body, &[0, 0])
        }

        /// A persistent message (`delivery-mode` 2) to `queue` through the default exchange.
        fn publish_persistent(&mut self, queue: &str, body: &[u8]) -> AmqpResult {
            self.publish_with("", queue, false, body, &[0x10, 0, 2])
        }

        fn publish_with(
            &mut self,
            exchange: &str,
            key: &str,
            mandatory: bool,
            body: &[u8],
            properties: &[u8],
        ) -> AmqpResult {
            self.machine.handle_publish(basic::Publish {
                exchange: ShortString::try_from(exchange).expect("name"),
                routing_key: ShortString::try_from(key).expect("key"),
                mandatory,
                ..Default::default()
            })?;
            let mut wire = BytesMut::new();
            frame::write_content_header(&mut wire, 1, CLASS_BASIC, body.len() as u64, properties);
            frame::write_frame(&mut wire, FrameType::Body, 1, body);
            while let Some(f) = frame::decode_frame(&mut wire, 0).expect("frame") {
                self.machine.handle_content_frame(&self.ctx, f)?;
            }
            Ok(())
        }

        fn end_of_batch(&mut self) {
            let reached = self.ctx.durability.reached();
            self.machine.flush_confirms(&self.ctx, reached);
        }

        /// What went to the client since the last call, as method names (and deliveries).
        fn sent(&self) -> Vec<String> {
            self.outbox
                .take()
                .into_iter()
                .map(|i| match i {
                    OutItem::Method(_, m) => m.name().to_owned(),
                    OutItem::Return { .. } => "basic.return".into(),
                    OutItem::Broker(Outbound::Deliver { .. }) => "basic.deliver".into(),
                    OutItem::Broker(Outbound::GetOk { .. }) => "basic.get-ok".into(),
                    other => format!("{other:?}"),
                })
                .collect()
        }

        fn ready(&self, queue: &str) -> u64 {
            self.ctx
                .session
                .vhost()
                .queue(queue)
                .expect("queue")
                .snapshot()
                .messages_ready
        }
    }

    fn declare(name: &str) -> queue::Declare {
        queue::Declare {
            queue: ShortString::try_from(name).expect("name"),
            ..Default::default()
        }
    }

    #[test]
    fn declare_answers_and_the_empty_name_means_the_last_queue() {
        let mut h = harness();
        h.method(declare("work")).expect("declare");
        assert_eq!(h.sent(), ["queue.declare-ok"]);
        h.publish("", "work", false, b"one").expect("publish");
        h.method(queue::Purge::default())
            .expect("purge the current queue");
        assert_eq!(h.sent(), ["queue.purge-ok"]);
        assert_eq!(h.ready("work"), 0);
    }

    #[test]
    fn confirms_go_out_at_the_end_of_a_batch_after_returns() {
        let mut h = harness();
        h.method(confirm::Select::default()).expect("select");
        assert_eq!(h.sent(), ["confirm.select-ok"]);
        h.method(declare("q")).expect("declare");
        h.sent();
        h.publish("", "q", false, b"a").expect("routed");
        h.publish("amq.direct", "nowhere", true, b"b")
            .expect("returned");
        assert_eq!(
            h.sent(),
            ["basic.return"],
            "the ack waits for the batch end"
        );
        h.end_of_batch();
        assert_eq!(h.sent(), ["basic.ack"]);
        let stats = h.machine.broker_channel.stats();
        assert_eq!(
            (stats.publish, stats.confirm, stats.return_unroutable),
            (2, 2, 1)
        );
    }

    #[test]
    fn held_confirms_wait_for_the_oldest_ticket_so_each_fsync_releases_its_own() {
        let dir = tempfile::tempdir().expect("dir");
        let broker =
            Arc::new(Broker::open(dir.path(), warren_broker::SyncMode::Fsync).expect("open"));
        let mut h = crate::driven::driven(&broker, 16 << 20).expect("a driven channel");
        h.method(confirm::Select::default()).expect("select");
        h.method(queue::Declare {
            durable: true,
            ..declare("durable")
        })
        .expect("declare");
        h.sent();
        h.publish_persistent("durable", b"one").expect("publish");
        let first = h.machine.waiting_for().expect("a held confirm");
        h.publish_persistent("durable", b"two").expect("publish");
        // The connection sleeps until this ticket is durable: the first message's, so its
        // confirm goes out after its own fsync, not after the second message's too.
        assert_eq!(h.machine.waiting_for(), Some(first));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut acks = Vec::new();
        while h.machine.waiting_for().is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
            h.end_of_batch();
            acks.extend(h.sent());
        }
        assert!(h.machine.waiting_for().is_none(), "both became durable");
        assert!(
            !acks.is_empty() && acks.iter().all(|m| m == "basic.ack"),
            "{acks:?}"
        );
    }

    #[test]
    fn a_publish_to_a_missing_exchange_is_a_404_on_basic_publish() {
        let mut h = harness();
        let e = h
            .publish("nope", "k", false, b"x")
            .expect_err("no such exchange");
        assert_eq!((e.code, e.class_id, e.method_id), (404, 60, 40));
        assert!(!e.closes_connection());
    }

    #[test]
    fn a_transaction_holds_publishes_until_commit() {
        let mut h = harness();
        h.method(declare("t")).expect("declare");
        h.method(tx::Select::default()).expect("select");
        h.sent();
        h.publish("", "t", false, b"held").expect("publish");
        assert_eq!(h.ready("t"), 0);
        h.method(tx::Commit::default()).expect("commit");
        assert_eq!(h.sent(), ["tx.commit-ok"]);
        assert_eq!(h.ready("t"), 1);
        h.publish("", "t", false, b"dropped").expect("publish");
        h.method(tx::Rollback::default()).expect("rollback");
        assert_eq!(h.ready("t"), 1);
        let e = h
            .method(confirm::Select::default())
            .expect_err("no confirms in a transaction");
        assert_eq!(e.code, 406);
    }

    #[test]
    fn content_without_a_publish_is_an_unexpected_frame() {
        let mut h = harness();
        let f = Frame {
            kind: FrameType::Body,
            channel: 1,
            payload: Bytes::from_static(b"stray"),
        };
        let e = h
            .machine
            .handle_content_frame(&h.ctx, f)
            .expect_err("no publish");
        assert_eq!(e.code, 505);
        assert!(e.closes_connection());
    }

    #[test]
    fn get_and_consume_go_through_the_broker() {
        let mut h = harness();
        h.method(declare("g")).expect("declare");
        h.publish("", "g", false, b"m").expect("publish");
        h.sent();
        h.method(basic::Get {
            queue: ShortString::from_static("g"),
            no_ack: true,
        })
        .expect("get");
        h.method(basic::Get {
            queue: ShortString::from_static("g"),
            no_ack: true,
        })
        .expect("get");
        assert_eq!(h.sent(), ["basic.get-ok", "basic.get-empty"]);
        h.method(basic::Consume {
            queue: ShortString::from_static("g"),
            ..Default::default()
        })
        .expect("consume");
        h.publish("", "g", false, b"n").expect("publish");
        assert_eq!(h.sent(), ["basic.consume-ok", "basic.deliver"]);
    }
}
