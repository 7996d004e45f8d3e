//! The `queue` class.

use warren_broker::{args, queue_args, AccessKind, QueueSpec, VHost};
use warren_codec::{queue, FieldValue, Method};

use crate::channel::ChannelMachine;
use crate::connection::ConnCtx;
use crate::error::{AmqpError, AmqpResult};

/// Queue types RabbitMQ knows. Warren runs them all as its own queue for now, so that
/// applications declaring them work unchanged.
const QUEUE_TYPES: [&str; 3] = ["classic", "quorum", "stream"];

/// RabbitMQ's checks of a declare's queue type and of the properties that type allows, in its
/// order and words.
fn check_queue_type(spec: &QueueSpec, vhost: &str) -> AmqpResult {
    let queue = format!("queue '{}' in vhost '{vhost}'", spec.name);
    let kind = match spec.arguments.get("x-queue-type") {
        None => "classic",
        Some(FieldValue::LongString(s)) => match s.as_str() {
            Some(t) if QUEUE_TYPES.contains(&t) => t,
            _ => {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid arg 'x-queue-type' for {queue}: \"unsupported queue type '{}'\"",
                    String::from_utf8_lossy(s.as_bytes())
                )))
            }
        },
        Some(other) => {
            return Err(AmqpError::precondition_failed(format!(
                "invalid arg 'x-queue-type' for {queue}: {{unacceptable_type,{}}}",
                args::type_name(other)
            )))
        }
    };
    if kind != "classic" {
        // Replicated types live beyond any one connection and must survive restarts.
        let invalid = if spec.auto_delete {
            Some("auto-delete")
        } else if spec.exclusive {
            Some("exclusive-owner")
        } else if !spec.durable {
            Some("non-durable")
        } else {
            None
        };
        if let Some(property) = invalid {
            return Err(AmqpError::precondition_failed(format!(
                "invalid property '{property}' for {queue}"
            )));
        }
    }
    Ok(())
}

/// As RabbitMQ: a new queue with a dead-letter exchange needs read access to itself and write
/// access to that exchange (an argument of the wrong type is reported by the declare).
fn check_dead_letter_access(ctx: &ConnCtx, spec: &QueueSpec) -> AmqpResult {
    if let Some(FieldValue::LongString(dlx)) = spec.arguments.get("x-dead-letter-exchange") {
        ctx.access
            .check(AccessKind::Read, "queue", spec.name.as_str())?;
        ctx.access.check(
            AccessKind::Write,
            "exchange",
            &String::from_utf8_lossy(dlx.as_bytes()),
        )?;
    }
    Ok(())
}

impl ChannelMachine {
    pub(crate) fn handle_queue(&mut self, ctx: &ConnCtx, method: Method) -> AmqpResult {
        match method {
            Method::QueueDeclare(m) => {
                // Spec: an empty name asks the server to choose one. As in RabbitMQ, the
                // "last declared queue" shortcut does not apply here, even when passive.
                let name = if m.queue.is_empty() && !m.passive {
                    VHost::generate_queue_name()
                } else {
                    m.queue.clone()
                };
                let spec = QueueSpec {
                    name: name.clone(),
                    // As RabbitMQ: an exclusive queue is transient whatever it asks for.
                    durable: m.durable && !m.exclusive,
                    exclusive: m.exclusive,
                    auto_delete: m.auto_delete,
                    arguments: m.arguments,
                };
                if !m.passive {
                    check_queue_type(&spec, &ctx.access.vhost)?;
                    ctx.access
                        .check(AccessKind::Configure, "queue", name.as_str())?;
                }
                if !m.passive && ctx.vhost.queue(name.as_str()).is_err() {
                    check_dead_letter_access(ctx, &spec)?;
                }
                let (q, counts) = if m.queue.is_empty() && !m.passive {
                    queue_args::validate(&spec, &ctx.access.vhost)?;
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
                ctx.check_bind_access("queue", name.as_str(), m.exchange.as_str())?;
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
                ctx.check_bind_access("queue", name.as_str(), m.exchange.as_str())?;
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
