//! The `tx` and `confirm` classes: transactions hold publishes and acks until commit;
//! confirm mode acknowledges every publish.

use std::sync::Arc;

use warren_broker::{Channel, Message};
use warren_codec::{confirm, tx, Method};

use crate::channel::{ChannelMachine, Confirms, Mode};
use crate::connection::ConnCtx;
use crate::error::{AmqpError, AmqpResult};

/// A publish held until commit.
pub(crate) struct TxPublish {
    pub route: warren_broker::vhost::Route,
    pub message: Arc<Message>,
    pub mandatory: bool,
}

/// An ack, nack or reject, held until commit in a transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TxAck {
    Ack {
        tag: u64,
        multiple: bool,
    },
    Nack {
        tag: u64,
        multiple: bool,
        requeue: bool,
    },
}

impl TxAck {
    pub fn tag(&self) -> (u64, bool) {
        match *self {
            TxAck::Ack { tag, multiple } | TxAck::Nack { tag, multiple, .. } => (tag, multiple),
        }
    }

    pub fn apply(self, channel: &Arc<Channel>) -> Result<(), warren_broker::BrokerError> {
        match self {
            TxAck::Ack { tag, multiple } => channel.ack(tag, multiple),
            TxAck::Nack {
                tag,
                multiple,
                requeue,
            } => channel.nack(tag, multiple, requeue),
        }
    }
}

#[derive(Default)]
pub(crate) struct TxState {
    pub publishes: Vec<TxPublish>,
    pub acks: Vec<TxAck>,
}

impl TxState {
    pub fn clear(&mut self) {
        self.publishes.clear();
        self.acks.clear();
    }
}

impl ChannelMachine {
    pub(crate) fn handle_tx(&mut self, ctx: &ConnCtx, method: Method) -> AmqpResult {
        match method {
            Method::ConfirmSelect(m) => {
                match self.mode {
                    Mode::Tx(_) => {
                        return Err(AmqpError::precondition_failed(
                            "cannot switch from tx to confirm mode",
                        ))
                    }
                    Mode::Normal => self.mode = Mode::Confirm(Confirms::default()),
                    Mode::Confirm(_) => {}
                }
                if !m.nowait {
                    ctx.outbox.method(self.id, confirm::SelectOk {});
                }
                Ok(())
            }
            Method::TxSelect(_) => {
                match self.mode {
                    Mode::Confirm(_) => {
                        return Err(AmqpError::precondition_failed(
                            "cannot switch from confirm to tx mode",
                        ))
                    }
                    Mode::Normal => self.mode = Mode::Tx(TxState::default()),
                    Mode::Tx(_) => {}
                }
                ctx.outbox.method(self.id, tx::SelectOk {});
                Ok(())
            }
            Method::TxCommit(_) => {
                let Mode::Tx(state) = &mut self.mode else {
                    return Err(AmqpError::precondition_failed(
                        "channel is not transactional",
                    ));
                };
                let publishes = std::mem::take(&mut state.publishes);
                let acks = std::mem::take(&mut state.acks);
                for p in publishes {
                    Self::enqueue(&p.route, &p.message);
                    if p.route.is_empty() && p.mandatory {
                        self.return_unroutable(ctx, p.message);
                    }
                }
                for a in acks {
                    a.apply(&self.broker_channel)?;
                }
                ctx.outbox.method(self.id, tx::CommitOk {});
                Ok(())
            }
            Method::TxRollback(_) => {
                let Mode::Tx(state) = &mut self.mode else {
                    return Err(AmqpError::precondition_failed(
                        "channel is not transactional",
                    ));
                };
                state.clear();
                ctx.outbox.method(self.id, tx::RollbackOk {});
                Ok(())
            }
            other => Err(AmqpError::command_invalid(format!(
                "{} is not valid from a client",
                other.name()
            ))),
        }
    }
}
