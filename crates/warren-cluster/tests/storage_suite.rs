//! openraft's own conformance suite for a log store and state machine, run against Warren's.

use warren_cluster::openraft::testing::log::{StoreBuilder, Suite};
use warren_cluster::openraft::StorageError;
use warren_cluster::{MemLog, MetaMachine, Warren};

struct Fresh;

impl StoreBuilder<Warren, MemLog, MetaMachine> for Fresh {
    async fn build(&self) -> Result<((), MemLog, MetaMachine), StorageError<Warren>> {
        Ok(((), MemLog::new(), MetaMachine::new()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_log_and_meta_machine_pass_openraft_storage_suite() -> Result<(), StorageError<Warren>>
{
    Suite::test_all(Fresh).await
}
