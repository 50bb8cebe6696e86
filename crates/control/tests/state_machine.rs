//! The state machine's persistence: a snapshot it built is what it loads
//! at reopen, and an oversized snapshot is refused.

use futures_util::stream;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use openraft::{Entry, EntryPayload, Membership, RaftSnapshotBuilder, StoredMembership};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use synod_control::raft_types::TypeConfig;
use synod_control::state_machine::ControlStateMachine;
use synod_control::{
    ControlCommand, ControlState, MemberInfo, Settings, CONTROL_SNAPSHOT_MAX_BYTES,
};
use tokio::sync::watch;

fn info(port: u16) -> MemberInfo {
    MemberInfo {
        peer_addr: SocketAddr::from(([127, 0, 0, 1], port)),
        api_addr: SocketAddr::from(([127, 0, 0, 1], port + 1)),
        grpc_addr: None,
    }
}

fn open(dir: &std::path::Path) -> (ControlStateMachine, watch::Receiver<Arc<ControlState>>) {
    let (tx, rx) = watch::channel(Arc::new(ControlState::default()));
    (ControlStateMachine::open(dir, tx).unwrap(), rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_snapshot_is_loaded_at_reopen_and_published() {
    let dir = tempfile::tempdir().unwrap();
    let members: BTreeMap<u16, MemberInfo> = (1..=3).map(|i| (i, info(9000 + 10 * i))).collect();
    let voters: BTreeSet<u64> = (1..=3).collect();
    let membership = Membership::new_with_defaults(vec![voters], []);
    let entries = vec![
        Entry {
            log_id: log_id::<TypeConfig>(1, 1, 1),
            payload: EntryPayload::Membership(membership.clone()),
        },
        Entry {
            log_id: log_id::<TypeConfig>(1, 1, 2),
            payload: EntryPayload::Normal(ControlCommand::Init {
                cluster_id: 5,
                members,
            }),
        },
        Entry {
            log_id: log_id::<TypeConfig>(1, 1, 3),
            payload: EntryPayload::Normal(ControlCommand::SetSettings(Settings {
                thrifty: Some(true),
                ..Settings::default()
            })),
        },
    ];
    let (state, built) = {
        let (mut sm, rx) = open(dir.path());
        sm.apply(stream::iter(entries.into_iter().map(|e| Ok((e, None)))))
            .await
            .unwrap();
        let state = rx.borrow().clone();
        assert!(state.is_initialised(), "applied state is published");
        assert_eq!(state.settings.thrifty, Some(true));
        let mut b = sm.try_create_snapshot_builder(true).await.unwrap();
        (state, b.build_snapshot().await.unwrap())
    };
    let (mut sm, rx) = open(dir.path());
    assert_eq!(
        *rx.borrow().clone(),
        *state,
        "reopen publishes the snapshot's state"
    );
    let (applied, m) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id::<TypeConfig>(1, 1, 3)));
    assert_eq!(
        m,
        StoredMembership::new(Some(log_id::<TypeConfig>(1, 1, 1)), membership)
    );
    let cur = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(cur.meta, built.meta);
    assert_eq!(cur.snapshot, built.snapshot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_snapshot_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sm, _rx) = open(dir.path());
    let meta = openraft::SnapshotMeta {
        last_log_id: Some(log_id::<TypeConfig>(1, 1, 9)),
        last_membership: StoredMembership::default(),
    };
    let err = sm
        .install_snapshot(&meta, vec![0; CONTROL_SNAPSHOT_MAX_BYTES + 1])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("CONTROL_SNAPSHOT_MAX_BYTES"),
        "{err}"
    );
    assert_eq!(
        sm.applied_state().await.unwrap().0,
        None,
        "nothing installed"
    );
    // A corrupt snapshot is refused too, and does not replace the state.
    let err = sm
        .install_snapshot(&meta, vec![0xff; 16])
        .await
        .unwrap_err();
    assert!(!err.to_string().is_empty());
    assert_eq!(sm.applied_state().await.unwrap().0, None);
    assert!(!dir.path().join("sm-snapshot").exists());
}
