//! The `queue` class: each method is one broker operation, its reply a method frame. What is
//! AMQP's own stays here: the channel's "current queue" that an empty name stands for.

use warren_broker::QueueDeclare;
use warren_codec::{queue, Method};

use crate::channel::ChannelMachine;
use crate::connection::ConnCtx;
use crate::error::{AmqpError, AmqpResult};

impl ChannelMachine {
    pub(crate) fn handle_queue(&mut self, ctx: &ConnCtx, method: Method) -> AmqpResult {
        match method {
            Method::QueueDeclare(m) => {
                // As in RabbitMQ, the "last declared queue" shortcut does not apply to a
                // declare, even a passive one: an empty name asks for a server-chosen one.
                let declared = ctx.session.declare_queue(QueueDeclare {
                    name: m.queue,
                    passive: m.passive,
                    durable: m.durable,
                    exclusive: m.exclusive,
                    auto_delete: m.auto_delete,
                    arguments: m.arguments,
                })?;
                self.current_queue = Some(declared.name.clone());
                if !m.no_wait {
                    ctx.outbox.method(
                        self.id,
                        queue::DeclareOk {
                            queue: declared.name,
                            message_count: declared.messages,
                            consumer_count: declared.consumers,
                        },
                    );
                }
                Ok(())
            }
            Method::QueueBind(m) => {
                let name = self.queue_name(&m.queue)?;
                ctx.session.bind_queue(
                    name.as_str(),
                    m.exchange.as_str(),
                    m.routing_key,
                    m.arguments,
                )?;
                if !m.no_wait {
                    ctx.outbox.method(self.id, queue::BindOk {});
                }
                Ok(())
            }
            Method::QueueUnbind(m) => {
                let name = self.queue_name(&m.queue)?;
                ctx.session.unbind_queue(
                    name.as_str(),
                    m.exchange.as_str(),
                    m.routing_key,
                    m.arguments,
                )?;
                ctx.outbox.method(self.id, queue::UnbindOk {});
                Ok(())
            }
            Method::QueuePurge(m) => {
                let name = self.queue_name(&m.queue)?;
                let n = ctx.session.purge_queue(name.as_str())?;
                if !m.no_wait {
                    ctx.outbox
                        .method(self.id, queue::PurgeOk { message_count: n });
                }
                Ok(())
            }
            Method::QueueDelete(m) => {
                let name = self.queue_name(&m.queue)?;
                // This channel's own consumers of the queue hear of it after delete-ok.
                ctx.outbox.hold_cancels(self.id);
                let deleted = ctx
                    .session
                    .delete_queue(name.as_str(), m.if_unused, m.if_empty);
                if let (Ok(n), false) = (&deleted, m.no_wait) {
                    ctx.outbox
                        .method(self.id, queue::DeleteOk { message_count: *n });
                }
                ctx.outbox.release_cancels();
                deleted.map(drop).map_err(Into::into)
            }
            other => Err(AmqpError::command_invalid(format!(
                "{} is not valid from a client",
                other.name()
            ))),
        }
    }
}
