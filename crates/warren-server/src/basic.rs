//! The `basic` class: publish, consume, get, acks and prefetch.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use rand::RngCore;
use warren_broker::channel::Settlement;
use warren_broker::message::parse_expiration;
use warren_broker::{delayed, queue_args, AccessKind, ExchangeKind, Message, QueueSpec};
use warren_codec::{basic, constants, BasicProperties, FieldTable, Method, ShortString};

use crate::channel::{ChannelMachine, Mode};
use crate::connection::ConnCtx;
use crate::error::{AmqpError, AmqpResult};
use crate::outbox::OutItem;
use crate::tx::TxAck;

/// The pseudo-queue of RabbitMQ's direct reply-to.
pub(crate) const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// A random suffix for server-generated names (consumer tags, reply-to queues).
pub(crate) fn random_suffix() -> String {
    let mut raw = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn rejection(requeue: bool) -> Settlement {
    if requeue {
        Settlement::Requeue
    } else {
        Settlement::Reject
    }
}

fn generated(prefix: &str) -> ShortString {
    ShortString::try_from(format!("{prefix}{}", random_suffix())).unwrap_or_default()
}

impl ChannelMachine {
    pub(crate) fn handle_basic(&mut self, ctx: &ConnCtx, method: Method) -> AmqpResult {
        match method {
            Method::BasicQos(m) => {
                if m.prefetch_size != 0 {
                    return Err(AmqpError::not_implemented(format!(
                        "prefetch_size!=0 ({})",
                        m.prefetch_size
                    )));
                }
                self.broker_channel.set_prefetch(m.prefetch_count, m.global);
                ctx.outbox.method(self.id, basic::QosOk {});
                Ok(())
            }
            Method::BasicConsume(m) => self.consume(ctx, m),
            Method::BasicCancel(m) => {
                self.broker_channel.cancel_consumer(&m.consumer_tag);
                if !m.no_wait {
                    ctx.outbox.method(
                        self.id,
                        basic::CancelOk {
                            consumer_tag: m.consumer_tag,
                        },
                    );
                }
                Ok(())
            }
            Method::BasicGet(m) => {
                let name = self.queue_name(&m.queue)?;
                ctx.access.check(AccessKind::Read, "queue", name.as_str())?;
                let q = ctx.vhost.queue(name.as_str())?;
                q.check_access(ctx.id)?;
                if !self.broker_channel.get(&q, m.no_ack) {
                    ctx.outbox.method(self.id, basic::GetEmpty {});
                }
                Ok(())
            }
            Method::BasicAck(m) => self.settle(m.delivery_tag, m.multiple, Settlement::Ack),
            Method::BasicNack(m) => self.settle(m.delivery_tag, m.multiple, rejection(m.requeue)),
            Method::BasicReject(m) => self.settle(m.delivery_tag, false, rejection(m.requeue)),
            Method::BasicRecover(m) => self.recover(ctx, m.requeue, true),
            Method::BasicRecoverAsync(m) => self.recover(ctx, m.requeue, false),
            other => Err(AmqpError::command_invalid(format!(
                "{} is not valid from a client",
                other.name()
            ))),
        }
    }

    fn recover(&mut self, ctx: &ConnCtx, requeue: bool, reply: bool) -> AmqpResult {
        if !requeue {
            // As RabbitMQ: redelivering to the same consumer without requeueing is not offered.
            return Err(AmqpError::not_implemented("requeue=false"));
        }
        // recover-ok goes out before the redeliveries, as from RabbitMQ: clients (lapin) drop
        // the deliveries they hold when recover-ok arrives.
        if reply {
            ctx.outbox.method(self.id, basic::RecoverOk {});
        }
        self.broker_channel.recover();
        Ok(())
    }

    /// An ack, nack or reject: applied now, or at commit inside a transaction.
    fn settle(&mut self, tag: u64, multiple: bool, how: Settlement) -> AmqpResult {
        if let Mode::Tx(tx) = &mut self.mode {
            let taken = self.broker_channel.take(tag, multiple)?;
            tx.acks.push(TxAck { taken, how });
            return Ok(());
        }
        match how {
            Settlement::Ack => self.broker_channel.ack(tag, multiple)?,
            Settlement::Requeue => self.broker_channel.nack(tag, multiple, true)?,
            Settlement::Reject => self.broker_channel.nack(tag, multiple, false)?,
        }
        Ok(())
    }

    fn consume(&mut self, ctx: &ConnCtx, m: basic::Consume) -> AmqpResult {
        if m.queue.as_str() == REPLY_TO {
            return self.consume_reply_to(ctx, m);
        }
        let name = self.queue_name(&m.queue)?;
        ctx.access.check(AccessKind::Read, "queue", name.as_str())?;
        let q = ctx.vhost.queue(name.as_str())?;
        q.check_access(ctx.id)?;
        let priority =
            queue_args::consumer_priority(&m.arguments, name.as_str(), &ctx.access.vhost)?;
        let tag = if m.consumer_tag.is_empty() {
            generated("amq.ctag-")
        } else {
            m.consumer_tag
        };
        if self.broker_channel.has_consumer(&tag) {
            return Err(AmqpError::not_allowed(format!(
                "attempt to reuse consumer tag '{tag}'"
            )));
        }
        let consumer =
            self.broker_channel
                .add_consumer(&q, tag.clone(), m.no_ack, m.exclusive, priority)?;
        if !m.no_wait {
            ctx.outbox
                .method(self.id, basic::ConsumeOk { consumer_tag: tag });
        }
        consumer.activate();
        Ok(())
    }

    /// Direct reply-to: a private, exclusive, auto-delete queue consumed in no-ack mode;
    /// publishes from this channel with `reply_to = amq.rabbitmq.reply-to` are rewritten to
    /// name it, so replies sent to that name come straight back here.
    fn consume_reply_to(&mut self, ctx: &ConnCtx, m: basic::Consume) -> AmqpResult {
        if !m.no_ack {
            return Err(AmqpError::precondition_failed(
                "reply consumer cannot acknowledge",
            ));
        }
        if self.reply_queue.is_some() {
            return Err(AmqpError::precondition_failed("reply consumer already set"));
        }
        let name = generated(&format!("{REPLY_TO}."));
        let spec = QueueSpec {
            name: name.clone(),
            durable: false,
            exclusive: true,
            auto_delete: true,
            arguments: FieldTable::new(),
        };
        let q = ctx.vhost.declare_internal_queue(&spec, ctx.id);
        let tag = if m.consumer_tag.is_empty() {
            generated("amq.ctag-")
        } else {
            m.consumer_tag
        };
        let consumer = self
            .broker_channel
            .add_consumer(&q, tag.clone(), true, false, 0)?;
        if !m.no_wait {
            ctx.outbox
                .method(self.id, basic::ConsumeOk { consumer_tag: tag });
        }
        consumer.activate();
        self.reply_queue = Some(name);
        Ok(())
    }

    /// A whole message has arrived: route it, then enqueue (or hold it for commit), return it
    /// if mandatory and unroutable, and confirm it.
    pub(crate) fn publish(
        &mut self,
        ctx: &ConnCtx,
        p: basic::Publish,
        mut raw_properties: Bytes,
        body: Bytes,
    ) -> AmqpResult {
        let exchange = match &self.exchange_cache {
            Some(x) if x.name == p.exchange && !x.is_deleted() => x.clone(),
            _ => {
                let x = ctx.vhost.exchange(p.exchange.as_str())?;
                ctx.access
                    .check(AccessKind::Write, "exchange", p.exchange.as_str())?;
                self.exchange_cache = Some(x.clone());
                x
            }
        };
        if exchange.internal {
            return Err(AmqpError::access_refused(format!(
                "cannot publish to internal exchange '{}' in vhost '{}'",
                exchange.name, ctx.access.vhost
            )));
        }
        // Checked as a full decode would check them, but only these few are read.
        let props = BasicProperties::scan(&raw_properties)?;
        if let Some(user_id) = props.user_id {
            if user_id != ctx.access.user {
                return Err(AmqpError::precondition_failed(format!(
                    "user_id property set to '{user_id}' but authenticated user was '{}'",
                    ctx.access.user
                )));
            }
        }
        let expiration = props
            .expiration
            .map(parse_expiration)
            .transpose()
            .map_err(AmqpError::precondition_failed)?;
        let (delivery_mode, priority) = (props.delivery_mode, props.priority);
        let has_headers = props.has_headers;
        if props.reply_to == Some(REPLY_TO) {
            let Some(q) = &self.reply_queue else {
                return Err(AmqpError::precondition_failed(
                    "fast reply consumer does not exist",
                ));
            };
            let mut full = BasicProperties::decode(raw_properties.clone())?;
            full.reply_to = Some(q.clone());
            raw_properties = full.to_raw();
        }
        // Only a delayed-message exchange looks at x-delay (and decodes the headers for it).
        let delay = if exchange.kind == ExchangeKind::DelayedMessage && has_headers {
            let full = BasicProperties::decode(raw_properties.clone())?;
            delayed::delay_of(full.headers.as_ref())
        } else {
            None
        };
        let message = Arc::new(Message::from_parts(
            p.exchange,
            p.routing_key,
            raw_properties,
            body,
            delivery_mode,
            priority,
            expiration,
        ));
        ctx.published.set(true);
        let seq = match &mut self.mode {
            Mode::Confirm(c) => {
                c.last_seq += 1;
                Some(c.last_seq)
            }
            _ => None,
        };
        if let Some(delay) = delay {
            if let Mode::Tx(tx) = &mut self.mode {
                tx.publishes.push(crate::tx::TxPublish {
                    route: Default::default(),
                    message,
                    mandatory: p.mandatory,
                    delay: Some((exchange, delay)),
                });
                return Ok(());
            }
            let lsn = delay_message(ctx, &exchange, message.clone(), delay)?;
            // As the plugin: routed to no queue for now, so a mandatory one comes back.
            if p.mandatory {
                self.return_unroutable(ctx, message);
            }
            if let Some(seq) = seq {
                self.confirm(seq, lsn);
            }
            return Ok(());
        }
        let route = ctx
            .vhost
            .route_cached(&exchange, &message, &mut self.route_cache);
        if let Mode::Tx(tx) = &mut self.mode {
            tx.publishes.push(crate::tx::TxPublish {
                route,
                message,
                mandatory: p.mandatory,
                delay: None,
            });
            return Ok(());
        }
        let lsn = log_message(ctx, &message, &route)?;
        let accepted = Self::enqueue(ctx, &route, &message);
        if route.is_empty() && p.mandatory {
            self.return_unroutable(ctx, message);
        }
        if let Some(seq) = seq {
            if accepted {
                self.confirm(seq, lsn);
            } else {
                // A queue refused it (x-overflow = reject-publish): the publisher gets a nack.
                self.reject(ctx, seq);
            }
        }
        Ok(())
    }

    /// Where the server's copy of this connection's log is, for waiting on durability.
    pub(crate) fn durable_lsn(ctx: &ConnCtx) -> warren_store::Lsn {
        ctx.vhost
            .persistence
            .as_ref()
            .map_or(0, |p| p.store.durable_lsn())
    }

    pub(crate) fn return_unroutable(&self, ctx: &ConnCtx, message: Arc<Message>) {
        ctx.outbox.send(OutItem::Return {
            channel: self.id,
            reply_code: constants::NO_ROUTE,
            reply_text: ShortString::from_static("NO_ROUTE"),
            message,
        });
    }
}

/// Holds a message on a delayed-message exchange (logged first if it must survive a restart).
pub(crate) fn delay_message(
    ctx: &ConnCtx,
    exchange: &warren_broker::Exchange,
    message: Arc<Message>,
    delay: u64,
) -> AmqpResult<Option<warren_store::Lsn>> {
    ctx.vhost
        .delay_message(exchange, message, delay)
        .map_err(|e| {
            AmqpError::new(
                constants::INTERNAL_ERROR,
                format!("cannot write the message log: {e}"),
            )
        })
}

/// Logs a persistent message for its durable queues. A log that cannot be written is an
/// internal error that closes the connection: nothing may be confirmed that is not stored.
pub(crate) fn log_message(
    ctx: &ConnCtx,
    message: &Message,
    route: &[Arc<warren_broker::Queue>],
) -> AmqpResult<Option<warren_store::Lsn>> {
    ctx.vhost.log_message(message, route).map_err(|e| {
        AmqpError::new(
            constants::INTERNAL_ERROR,
            format!("cannot write the message log: {e}"),
        )
    })
}
