//! The `tx` and `confirm` classes: transactions hold publishes and acks until commit;
//! confirm mode acknowledges every publish.

use warren_broker::{Channel, ChannelMode, Prepared, Settlement, Taken, Ticket};
use warren_codec::{confirm, tx, Method};

use crate::channel::{ChannelMachine, Confirms, Held, Mode};
use crate::connection::ConnCtx;
use crate::error::{AmqpError, AmqpResult};

/// An ack, nack or reject in a transaction: its deliveries, taken from the channel's unacked
/// ones, and what commit does with them.
#[derive(Debug)]
pub(crate) struct TxAck {
    pub taken: Taken,
    pub how: Settlement,
}

/// What a transaction holds until commit: publishes checked and routed, and acks.
#[derive(Default)]
pub(crate) struct TxState {
    pub publishes: Vec<Prepared>,
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
                    Mode::Normal => {
                        self.mode = Mode::Confirm(Confirms::default());
                        self.broker_channel.set_mode(ChannelMode::Confirm);
                        self.publisher.set_confirm();
                    }
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
                    Mode::Normal => {
                        self.mode = Mode::Tx(TxState::default());
                        self.broker_channel.set_mode(ChannelMode::Tx);
                    }
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
                let mut ticket = Ticket::NONE;
                for p in publishes {
                    let published = ctx.session.commit(&mut self.publisher, p)?;
                    ticket = ticket.max(published.ticket);
                    ctx.note_published_to(&published.routed);
                    // Refusals by a length limit have no one to tell inside a transaction.
                    if let Some(m) = published.returned {
                        self.return_unroutable(ctx, m);
                    }
                }
                for a in acks {
                    self.broker_channel.settle_taken(a.taken, a.how);
                }
                // Durability: commit-ok for persistent messages waits until they are on disk.
                if ticket > ctx.durability.reached() {
                    self.hold(ticket, Held::Reply(tx::CommitOk {}.into()));
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
