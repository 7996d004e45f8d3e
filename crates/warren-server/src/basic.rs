//! The `basic` class: publish, consume, get, acks and prefetch. Each method is one broker
//! operation; what stays here is AMQP's own: replies, their order, confirms and `basic.return`.

use bytes::Bytes;
use warren_broker::{Consume, Message, Publish, Settlement};
use warren_codec::{basic, constants, Method, ShortString};

use std::sync::Arc;

use crate::channel::{ChannelMachine, Mode};
use crate::connection::ConnCtx;
use crate::error::{AmqpError, AmqpResult};
use crate::outbox::OutItem;
use crate::tx::TxAck;

fn rejection(requeue: bool) -> Settlement {
    if requeue {
        Settlement::Requeue
    } else {
        Settlement::Reject
    }
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
                if !ctx
                    .session
                    .get(&self.broker_channel, name.as_str(), m.no_ack)?
                {
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
        // The empty name means the channel's current queue (but not for direct reply-to).
        let queue = if m.queue.as_str() == warren_broker::REPLY_TO {
            m.queue
        } else {
            self.queue_name(&m.queue)?
        };
        let consumer = ctx.session.consume(
            &self.broker_channel,
            Consume {
                queue,
                tag: m.consumer_tag,
                no_ack: m.no_ack,
                exclusive: m.exclusive,
                arguments: m.arguments,
            },
        )?;
        if !m.no_wait {
            ctx.outbox.method(
                self.id,
                basic::ConsumeOk {
                    consumer_tag: consumer.tag.clone(),
                },
            );
        }
        // Only now: the client must know the tag before its first delivery.
        consumer.activate();
        Ok(())
    }

    /// A whole message has arrived: route it, then enqueue (or hold it for commit), return it
    /// if mandatory and unroutable, and confirm it.
    pub(crate) fn publish(
        &mut self,
        ctx: &ConnCtx,
        p: basic::Publish,
        properties: Bytes,
        body: Bytes,
    ) -> AmqpResult {
        let publish = Publish {
            exchange: p.exchange,
            routing_key: p.routing_key,
            mandatory: p.mandatory,
            properties,
            body,
        };
        if let Mode::Tx(tx) = &mut self.mode {
            let prepared = ctx.session.prepare(&mut self.publisher, publish)?;
            ctx.published.set(true);
            tx.publishes.push(prepared);
            return Ok(());
        }
        let published = ctx.session.publish(&mut self.publisher, publish)?;
        ctx.published.set(true);
        let seq = match &mut self.mode {
            Mode::Confirm(c) => {
                c.last_seq += 1;
                Some(c.last_seq)
            }
            _ => None,
        };
        ctx.note_published_to(&published.routed);
        if let Some(m) = published.returned {
            self.return_unroutable(ctx, m);
        }
        if let Some(seq) = seq {
            if published.accepted {
                self.confirm(seq, published.ticket);
            } else {
                // A queue refused it (x-overflow = reject-publish): the publisher gets a nack.
                self.reject(ctx, seq);
            }
        }
        Ok(())
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
