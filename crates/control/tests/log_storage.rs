//! The control log on the WAL: openraft's storage conformance suite, and a
//! restart that must rebuild the same log.

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::testing::{blank_ent, log_id};
use openraft::type_config::TypeConfigExt;
use openraft::{RaftLogReader, StorageError};
use std::sync::Arc;
use synod_control::log_store::{WalLogStore, CONTROL_WAL_COMPACT_RECORDS};
use synod_control::raft_types::TypeConfig;
use synod_control::state_machine::ControlStateMachine;
use synod_control::ControlState;
use tempfile::TempDir;
use tokio::sync::watch;

struct Builder;

impl StoreBuilder<TypeConfig, WalLogStore, ControlStateMachine, TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(TempDir, WalLogStore, ControlStateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = WalLogStore::open(dir.path()).expect("open log");
        let (tx, _rx) = watch::channel(Arc::new(ControlState::default()));
        let sm = ControlStateMachine::open(dir.path(), tx).expect("open state machine");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes_on_the_wal() {
    Suite::test_all(Builder).await.expect("storage suite");
}

async fn append(log: &mut WalLogStore, from: u64, to: u64, term: u64) {
    let entries: Vec<_> = (from..=to)
        .map(|i| blank_ent::<TypeConfig>(term, 1, i))
        .collect();
    let (tx, rx) = TypeConfig::oneshot();
    log.append(entries, IOFlushed::signal(tx)).await.unwrap();
    rx.await.unwrap().unwrap();
}

async fn snapshot_of(log: &mut WalLogStore) -> String {
    let state = log.get_log_state().await.unwrap();
    let entries = log.try_get_log_entries(0..u64::MAX).await.unwrap();
    let vote = log.read_vote().await.unwrap();
    let committed = log.read_committed().await.unwrap();
    format!("{state:?} {entries:?} {vote:?} {committed:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_log_is_the_same_log() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let mut log = WalLogStore::open(dir.path()).unwrap();
        log.save_vote(&openraft::Vote::new_committed(3, 1))
            .await
            .unwrap();
        append(&mut log, 1, 20, 1).await;
        log.truncate_after(Some(log_id::<TypeConfig>(1, 1, 15)))
            .await
            .unwrap();
        append(&mut log, 16, 18, 3).await;
        log.purge(log_id::<TypeConfig>(1, 1, 5)).await.unwrap();
        log.save_committed(Some(log_id::<TypeConfig>(3, 1, 17)))
            .await
            .unwrap();
        // A last durable write covers the unawaited ones before it.
        append(&mut log, 19, 19, 3).await;
        let s = snapshot_of(&mut log).await;
        assert!(s.contains("index: 19"), "{s}");
        s
    };
    // The WAL closes when its last handle is dropped.
    let mut log = WalLogStore::open(dir.path()).unwrap();
    assert_eq!(snapshot_of(&mut log).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_log_reopens_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let n = CONTROL_WAL_COMPACT_RECORDS * 2 + 10;
    let before = {
        let mut log = WalLogStore::open(dir.path()).unwrap();
        for i in 1..=n {
            append(&mut log, i, i, 1).await;
            if i % 100 == 0 {
                log.purge(log_id::<TypeConfig>(1, 1, i - 50)).await.unwrap();
            }
        }
        snapshot_of(&mut log).await
    };
    // Give the background compaction a moment; the result must not depend
    // on whether it finished.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        std::fs::read_dir(dir.path().join("snap")).unwrap().count() > 0,
        "a WAL snapshot was written"
    );
    let mut log = WalLogStore::open(dir.path()).unwrap();
    assert_eq!(snapshot_of(&mut log).await, before);
}
