//! The `tx` and `confirm` classes: transactions hold publishes and acks until commit;
//! confirm mode acknowledges every publish.

use std::sync::Arc;

use warren_broker::channel::{Settlement, Taken};
use warren_broker::{Channel, Message};
use warren_codec::{confirm, tx, Method};

use crate::channel::{ChannelMachine, Confirms, Held, Mode};
use crate::connection::ConnCtx;
use crate::error::{AmqpError, AmqpResult};

/// A publish held until commit.
pub(crate) struct TxPublish {
    pub route: warren_broker::vhost::Route,
    pub message: Arc<Message>,
    pub mandatory: bool,
    /// For a delayed-message exchange: the exchange and the delay (ms).
    pub delay: Option<(Arc<warren_broker::Exchange>, u64)>,
}

/// An ack, nack or reject in a transaction: its deliveries, taken from the channel's unacked
/// ones, and what commit does with them.
#[derive(Debug)]
pub(crate) struct TxAck {
    pub taken: Taken,
    pub how: Settlement,
}

#[derive(Default)]
pub(crate) struct TxState {
    pub publishes: Vec<TxPublish>,
    pub acks: Vec<TxAck>,
}

impl TxState {
    /// Forgets the publishes; the acked deliveries become unacked again.
    pub fn rollback(&mut self, channel: &Channel) {
        self.publishes.clear();
        for a in self.acks.drain(..) {
            channel.restore(a.taken);
        }
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
                let mut lsn = 0;
                for p in publishes {
                    if let Some((exchange, delay)) = &p.delay {
                        let logged =
                            crate::basic::delay_message(ctx, exchange, p.message.clone(), *delay)?;
                        lsn = lsn.max(logged.unwrap_or(0));
                        if p.mandatory {
                            self.return_unroutable(ctx, p.message);
                        }
                        continue;
                    }
                    if let Some(l) = crate::basic::log_message(ctx, &p.message, &p.route)? {
                        lsn = lsn.max(l);
                    }
                    // Refusals by a length limit have no one to tell inside a transaction.
                    let _ = Self::enqueue(ctx, &p.route, &p.message);
                    if p.route.is_empty() && p.mandatory {
                        self.return_unroutable(ctx, p.message);
                    }
                }
                for a in acks {
                    self.broker_channel.settle_taken(a.taken, a.how);
                }
                // Durability: commit-ok for persistent messages waits until they are on disk.
                if lsn > Self::durable_lsn(ctx) {
                    self.hold(lsn, Held::Reply(tx::CommitOk {}.into()));
                } else {
                    ctx.outbox.method(self.id, tx::CommitOk {});
                }
                Ok(())
            }
            Method::TxRollback(_) => {
                let Mode::Tx(state) = &mut self.mode else {
                    return Err(AmqpError::precondition_failed(
                        "channel is not transactional",
                    ));
                };
                state.rollback(&self.broker_channel);
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
