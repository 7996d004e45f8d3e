//! The `exchange` class.

use warren_broker::{AccessKind, ExchangeKind, ExchangeSpec};
use warren_codec::{exchange, Method};

use crate::channel::ChannelMachine;
use crate::connection::ConnCtx;
use crate::error::{AmqpError, AmqpResult};

impl ChannelMachine {
    pub(crate) fn handle_exchange(&mut self, ctx: &ConnCtx, method: Method) -> AmqpResult {
        match method {
            Method::ExchangeDeclare(m) => {
                let name = m.exchange.as_str();
                if m.passive {
                    // As RabbitMQ: even a passive declare may not name the default exchange.
                    if name.is_empty() {
                        return Err(AmqpError::access_refused(
                            "operation not permitted on the default exchange",
                        ));
                    }
                    ctx.vhost.exchange(name)?;
                } else {
                    // RabbitMQ checks the type before anything else, and an unknown type is a
                    // connection error (503).
                    let kind = ExchangeKind::parse(m.kind.as_str()).ok_or_else(|| {
                        AmqpError::command_invalid(format!("unknown exchange type '{}'", m.kind))
                    })?;
                    if name.is_empty() {
                        return Err(AmqpError::access_refused(
                            "operation not permitted on the default exchange",
                        ));
                    }
                    ctx.access.check(AccessKind::Configure, "exchange", name)?;
                    ctx.vhost.declare_exchange(&ExchangeSpec {
                        name: m.exchange.clone(),
                        kind,
                        durable: m.durable,
                        auto_delete: m.auto_delete,
                        internal: m.internal,
                        arguments: m.arguments,
                    })?;
                }
                if !m.no_wait {
                    ctx.outbox.method(self.id, exchange::DeclareOk {});
                }
                Ok(())
            }
            Method::ExchangeDelete(m) => {
                let name = m.exchange.as_str();
                if name.is_empty() {
                    return Err(AmqpError::access_refused(
                        "operation not permitted on the default exchange",
                    ));
                }
                ctx.access.check(AccessKind::Configure, "exchange", name)?;
                ctx.vhost.delete_exchange(name, m.if_unused)?;
                if !m.no_wait {
                    ctx.outbox.method(self.id, exchange::DeleteOk {});
                }
                Ok(())
            }
            Method::ExchangeBind(m) => {
                ctx.check_bind_access("exchange", m.destination.as_str(), m.source.as_str())?;
                ctx.vhost.bind_exchange(
                    m.destination.as_str(),
                    m.source.as_str(),
                    m.routing_key,
                    m.arguments,
                )?;
                if !m.no_wait {
                    ctx.outbox.method(self.id, exchange::BindOk {});
                }
                Ok(())
            }
            Method::ExchangeUnbind(m) => {
                ctx.check_bind_access("exchange", m.destination.as_str(), m.source.as_str())?;
                ctx.vhost.unbind_exchange(
                    m.destination.as_str(),
                    m.source.as_str(),
                    m.routing_key,
                    m.arguments,
                )?;
                if !m.no_wait {
                    ctx.outbox.method(self.id, exchange::UnbindOk {});
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
