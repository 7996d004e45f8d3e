//! The metadata state machine: the replicated key → record map.
//!
//! Every node applies the same committed commands in the same order, so every node ends up
//! with the same map; the broker (a later step) reads its topology from what is applied here.
//! Snapshots are the whole map in a small binary form (a few records per entity, so even
//! thousands of queues make a snapshot of a few hundred KB).

use std::collections::BTreeMap;
use std::io::{self, Cursor};
use std::sync::Arc;

use futures_lite::{Stream, StreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::EntryPayload;
use parking_lot::Mutex;

use crate::types::{Command, Reply, Warren};

/// The metadata machine. Clones share one state: the group's worker applies through one,
/// the node reads through another.
#[derive(Clone, Default)]
pub struct MetaMachine {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    records: BTreeMap<String, Vec<u8>>,
    applied: Option<LogIdOf<Warren>>,
    membership: StoredMembershipOf<Warren>,
    /// The last snapshot built or installed: what a lagging follower is sent.
    snapshot: Option<(SnapshotMetaOf<Warren>, Vec<u8>)>,
    /// Snapshots installed from a leader (a follower too far behind for the log).
    installed: u64,
}

impl MetaMachine {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every record.
    pub fn records(&self) -> BTreeMap<String, Vec<u8>> {
        self.inner.lock().records.clone()
    }

    /// One record.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.inner.lock().records.get(key).cloned()
    }

    /// How many snapshots this machine has installed from a leader.
    pub fn snapshots_installed(&self) -> u64 {
        self.inner.lock().installed
    }

    /// The index of the last entry applied.
    pub fn applied_index(&self) -> Option<u64> {
        self.inner.lock().applied.as_ref().map(|id| id.index())
    }
}

impl State {
    fn apply(&mut self, command: &Command) {
        match command {
            Command::Put { key, value } => {
                self.records.insert(key.clone(), value.clone());
            }
            Command::Delete { key } => {
                self.records.remove(key);
            }
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("metadata snapshot: {what}"),
    )
}

/// `count:u32` then per record `key_len:u32 key value_len:u32 value`, little-endian.
fn encode(records: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, io::Error> {
    let len = |n: usize| u32::try_from(n).map_err(|_| invalid("a record over 4 GiB"));
    let mut out = Vec::new();
    out.extend_from_slice(&len(records.len())?.to_le_bytes());
    for (k, v) in records {
        out.extend_from_slice(&len(k.len())?.to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&len(v.len())?.to_le_bytes());
        out.extend_from_slice(v);
    }
    Ok(out)
}

fn decode(mut data: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, io::Error> {
    fn take<'a>(data: &mut &'a [u8], n: usize) -> Result<&'a [u8], io::Error> {
        if data.len() < n {
            return Err(invalid("truncated"));
        }
        let (head, rest) = data.split_at(n);
        *data = rest;
        Ok(head)
    }
    fn take_u32(data: &mut &[u8]) -> Result<usize, io::Error> {
        let b = take(data, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    let count = take_u32(&mut data)?;
    let mut records = BTreeMap::new();
    for _ in 0..count {
        let n = take_u32(&mut data)?;
        let key = std::str::from_utf8(take(&mut data, n)?)
            .map_err(|_| invalid("a key that is not UTF-8"))?
            .to_owned();
        let n = take_u32(&mut data)?;
        records.insert(key, take(&mut data, n)?.to_vec());
    }
    if !data.is_empty() {
        return Err(invalid("trailing bytes"));
    }
    Ok(records)
}

impl RaftSnapshotBuilder<Warren> for MetaMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<Warren, Cursor<Vec<u8>>>, io::Error> {
        let mut state = self.inner.lock();
        let data = encode(&state.records)?;
        let meta = SnapshotMetaOf::<Warren> {
            last_log_id: state.applied,
            last_membership: state.membership.clone(),
        };
        state.snapshot = Some((meta.clone(), data.clone()));
        Ok(SnapshotOf::<Warren, Cursor<Vec<u8>>> {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<Warren> for MetaMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = MetaMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<Warren>>, StoredMembershipOf<Warren>), io::Error> {
        let state = self.inner.lock();
        Ok((state.applied, state.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<Warren>, io::Error>> + Unpin + Send,
    {
        while let Some(next) = entries.next().await {
            let (entry, responder) = next?;
            let log_id = entry.log_id();
            {
                let mut state = self.inner.lock();
                match &entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(command) => state.apply(command),
                    EntryPayload::Membership(m) => {
                        state.membership =
                            StoredMembershipOf::<Warren>::new(Some(log_id), m.clone());
                    }
                }
                state.applied = Some(log_id);
            }
            if let Some(r) = responder {
                r.send(Reply {
                    index: log_id.index(),
                });
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<Warren>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let records = decode(&data)?;
        let mut state = self.inner.lock();
        state.records = records;
        state.applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        state.snapshot = Some((meta.clone(), data));
        state.installed += 1;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<Warren, Self::SnapshotData>>, io::Error> {
        let state = self.inner.lock();
        Ok(state
            .snapshot
            .as_ref()
            .map(|(meta, data)| SnapshotOf::<Warren, _> {
                meta: meta.clone(),
                snapshot: Cursor::new(data.clone()),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_encoding_round_trips_and_rejects_damage() {
        let mut records = BTreeMap::new();
        records.insert("queue/0a".to_owned(), b"definition".to_vec());
        records.insert("vhost/2f".to_owned(), Vec::new());
        let data = encode(&records).expect("encodes");
        assert_eq!(decode(&data).expect("decodes"), records);
        assert!(decode(&data[..data.len() - 1]).is_err());
        let mut longer = data.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        assert_eq!(
            decode(&encode(&BTreeMap::new()).expect("encodes"))
                .expect("decodes")
                .len(),
            0
        );
    }
}
