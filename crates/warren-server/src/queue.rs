//! The `queue` class.

use warren_broker::{AccessKind, QueueSpec, VHost};
use warren_codec::{queue, FieldValue, Method};

use crate::channel::ChannelMachine;
use crate::connection::ConnCtx;
use crate::error::{AmqpError, AmqpResult};

/// Queue types RabbitMQ knows. Warren runs them all as its own queue for now, so that
/// applications declaring them work unchanged.
const QUEUE_TYPES: [&str; 3] = ["classic", "quorum", "stream"];

fn check_queue_arguments(args: &warren_codec::FieldTable) -> AmqpResult {
    if let Some(v) = args.get("x-queue-type") {
        let ok = matches!(v, FieldValue::LongString(s) if s.as_str().is_some_and(|t| QUEUE_TYPES.contains(&t)));
        if !ok {
            return Err(AmqpError::precondition_failed(format!(
                "invalid arg 'x-queue-type' for queue: {v:?} is not one of classic, quorum, stream"
            )));
        }
    }
    Ok(())
}

impl ChannelMachine {
    pub(crate) fn handle_queue(&mut self, ctx: &ConnCtx, method: Method) -> AmqpResult {
        match method {
            Method::QueueDeclare(m) => {
                let name = if m.queue.is_empty() && !m.passive {
                    VHost::generate_queue_name()
                } else if m.passive {
                    self.queue_name(&m.queue)?
                } else {
                    m.queue.clone()
                };
                if !m.passive {
                    check_queue_arguments(&m.arguments)?;
                    ctx.access
                        .check(AccessKind::Configure, "queue", name.as_str())?;
                }
                let spec = QueueSpec {
                    name: name.clone(),
                    durable: m.durable,
                    exclusive: m.exclusive,
                    auto_delete: m.auto_delete,
                    arguments: m.arguments,
                };
                let (q, counts) = if m.queue.is_empty() && !m.passive {
                    let q = ctx.vhost.declare_internal_queue(&spec, ctx.id);
                    let counts = q.counts();
                    (q, counts)
                } else {
                    ctx.vhost.declare_queue(&spec, m.passive, ctx.id)?
                };
                self.current_queue = Some(q.name.clone());
                if !m.no_wait {
                    ctx.outbox.method(
                        self.id,
                        queue::DeclareOk {
                            queue: q.name.clone(),
                            message_count: counts.messages,
                            consumer_count: counts.consumers,
                        },
                    );
                }
                Ok(())
            }
            Method::QueueBind(m) => {
                let name = self.queue_name(&m.queue)?;
                ctx.access
                    .check(AccessKind::Write, "queue", name.as_str())?;
                ctx.access
                    .check(AccessKind::Read, "exchange", m.exchange.as_str())?;
                ctx.vhost.bind_queue(
                    name.as_str(),
                    m.exchange.as_str(),
                    m.routing_key,
                    m.arguments,
                    ctx.id,
                )?;
                if !m.no_wait {
                    ctx.outbox.method(self.id, queue::BindOk {});
                }
                Ok(())
            }
            Method::QueueUnbind(m) => {
                let name = self.queue_name(&m.queue)?;
                ctx.access
                    .check(AccessKind::Write, "queue", name.as_str())?;
                ctx.access
                    .check(AccessKind::Read, "exchange", m.exchange.as_str())?;
                ctx.vhost.unbind_queue(
                    name.as_str(),
                    m.exchange.as_str(),
                    m.routing_key,
                    m.arguments,
                    ctx.id,
                )?;
                ctx.outbox.method(self.id, queue::UnbindOk {});
                Ok(())
            }
            Method::QueuePurge(m) => {
                let name = self.queue_name(&m.queue)?;
                ctx.access.check(AccessKind::Read, "queue", name.as_str())?;
                let q = ctx.vhost.queue(name.as_str())?;
                q.check_access(ctx.id)?;
                let n = q.purge();
                if !m.no_wait {
                    ctx.outbox
                        .method(self.id, queue::PurgeOk { message_count: n });
                }
                Ok(())
            }
            Method::QueueDelete(m) => {
                let name = self.queue_name(&m.queue)?;
                ctx.access
                    .check(AccessKind::Configure, "queue", name.as_str())?;
                let n = ctx
                    .vhost
                    .delete_queue(name.as_str(), m.if_unused, m.if_empty, ctx.id)?;
                if !m.no_wait {
                    ctx.outbox
                        .method(self.id, queue::DeleteOk { message_count: n });
                }
                Ok(())
            }
            other => Err(AmqpError::command_invalid(format!(
                "{} is not valid from a client",
                other.name()
            ))),
        }
    }
}
