//! The `exchange` class: each method is one broker operation, its reply a method frame.

use warren_broker::ExchangeDeclare;
use warren_codec::{exchange, Method};

use crate::channel::ChannelMachine;
use crate::connection::ConnCtx;
use crate::error::{AmqpError, AmqpResult};

impl ChannelMachine {
    pub(crate) fn handle_exchange(&mut self, ctx: &ConnCtx, method: Method) -> AmqpResult {
        match method {
            Method::ExchangeDeclare(m) => {
                ctx.session.declare_exchange(ExchangeDeclare {
                    name: m.exchange,
                    kind: m.kind.to_string(),
                    passive: m.passive,
                    durable: m.durable,
                    auto_delete: m.auto_delete,
                    internal: m.internal,
                    arguments: m.arguments,
                })?;
                if !m.no_wait {
                    ctx.outbox.method(self.id, exchange::DeclareOk {});
                }
                Ok(())
            }
            Method::ExchangeDelete(m) => {
                ctx.session
                    .delete_exchange(m.exchange.as_str(), m.if_unused)?;
                if !m.no_wait {
                    ctx.outbox.method(self.id, exchange::DeleteOk {});
                }
                Ok(())
            }
            Method::ExchangeBind(m) => {
                ctx.session.bind_exchange(
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
                ctx.session.unbind_exchange(
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
