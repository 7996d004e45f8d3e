//! A Raft log in memory.
//!
//! Tests use it to exercise elections and replication without disks; a real node uses the
//! store-backed log, because this one keeps nothing across a crash (openraft requires a vote
//! and flushed entries to survive one).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use parking_lot::Mutex;

use crate::types::Warren;

/// A group's log in memory: cheap to clone, every clone (and every reader) sees the same log.
#[derive(Clone, Default)]
pub struct MemLog {
    inner: Arc<Mutex<Log>>,
}

#[derive(Default)]
struct Log {
    entries: BTreeMap<u64, EntryOf<Warren>>,
    purged: Option<LogIdOf<Warren>>,
    committed: Option<LogIdOf<Warren>>,
    vote: Option<VoteOf<Warren>>,
}

impl MemLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many entries the log holds (purged ones are gone).
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The range as owned bounds: the map's `range` wants a concrete `RangeBounds`.
fn bounds(range: &impl RangeBounds<u64>) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<Warren> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<Warren>>, io::Error> {
        let log = self.inner.lock();
        Ok(log
            .entries
            .range(bounds(&range))
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<Warren>>, io::Error> {
        Ok(self.inner.lock().vote)
    }
}

impl RaftLogStorage<Warren> for MemLog {
    type LogReader = MemLog;

    async fn get_log_state(&mut self) -> Result<LogState<Warren>, io::Error> {
        let log = self.inner.lock();
        let last = log.entries.values().next_back().map(|e| e.log_id());
        Ok(LogState {
            last_purged_log_id: log.purged,
            last_log_id: last.or(log.purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<Warren>) -> Result<(), io::Error> {
        self.inner.lock().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogIdOf<Warren>>,
    ) -> Result<(), io::Error> {
        self.inner.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<Warren>>, io::Error> {
        Ok(self.inner.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<Warren>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<Warren>> + Send,
        I::IntoIter: Send,
    {
        {
            let mut log = self.inner.lock();
            for e in entries {
                log.entries.insert(e.index(), e);
            }
        }
        // Nothing to flush: "on disk" is as far as memory goes.
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last: Option<LogIdOf<Warren>>) -> Result<(), io::Error> {
        let from = last.map_or(0, |id| id.index() + 1);
        self.inner.lock().entries.split_off(&from);
        Ok(())
    }

    async fn purge(&mut self, upto: LogIdOf<Warren>) -> Result<(), io::Error> {
        let mut log = self.inner.lock();
        let keep = log.entries.split_off(&(upto.index() + 1));
        log.entries = keep;
        if log.purged.is_none_or(|p| p < upto) {
            log.purged = Some(upto);
        }
        Ok(())
    }
}
