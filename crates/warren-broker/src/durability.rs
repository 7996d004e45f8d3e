//! Waiting for the disk without knowing it: a publish returns a [`Ticket`] (the log position
//! its message was written at) and a front end holds the confirm until [`Durability`] says
//! that position is on disk. Many tickets are released by one fsync (group commit).

use std::future::Future;

use warren_store::Store;

/// A log position to wait for before a confirm or `tx.commit-ok` may go out. Tickets are
/// ordered: waiting for the highest covers every lower one. `Ticket::NONE` waits for nothing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

impl Ticket {
    pub const NONE: Ticket = Ticket(0);

    pub(crate) fn at(lsn: warren_store::Lsn) -> Self {
        Ticket(lsn)
    }

    /// Whether there is anything to wait for.
    pub fn is_some(self) -> bool {
        self.0 != 0
    }
}

/// The broker's view of how far its log is on disk.
#[derive(Clone, Default)]
pub struct Durability(Option<Store>);

impl std::fmt::Debug for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durability")
            .field("persistent", &self.0.is_some())
            .finish()
    }
}

impl Durability {
    pub(crate) fn new(store: Option<Store>) -> Self {
        Durability(store)
    }

    /// Every ticket up to this one is on disk (all of them, for a broker without a disk).
    pub fn reached(&self) -> Ticket {
        match &self.0 {
            Some(store) => Ticket(store.durable_lsn()),
            None => Ticket(u64::MAX),
        }
    }

    /// Resolves once `ticket` is on disk: `true`, or `false` if the log is closing (the broker
    /// is shutting down; nothing more will become durable). None when there is no disk.
    pub fn wait(&self, ticket: Ticket) -> Option<impl Future<Output = bool> + Send + 'static> {
        let wait = self.0.as_ref()?.wait_durable(ticket.0);
        Some(async move { wait.await.is_ok() })
    }
}
