//! In-process clusters of `Control`s over the in-memory router
//! (`harness`): election and `Init`, membership changes following the
//! EPaxos* epochs (epaxos.md §8), seal reports, partitions, crashes and
//! restarts, and Raft's Election Safety (one leader per term).

mod harness;

use harness::{info, two_leaders_in_one_term, Cluster, CLUSTER_ID};
use std::collections::BTreeSet;
use std::time::Duration;
use synod_control::{ControlCommand, ControlReply, Settings};
use synod_types::{CmdId, NodeId, QuorumConfig, SplitMix64};

fn ids(v: &[(u64, u64, NodeId)]) -> BTreeSet<CmdId> {
    v.iter()
        .map(|(epoch, seq, origin)| CmdId {
            epoch: *epoch,
            seq: *seq,
            origin: *origin,
        })
        .collect()
}

fn set(v: &[NodeId]) -> BTreeSet<NodeId> {
    v.iter().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_one_leader_and_the_leader_writes_init() {
    let mut c = Cluster::new();
    c.start_initialised(&[1, 2, 3]).await;
    let leader = c.wait_leader(&[1, 2, 3]).await;
    for id in [1, 2, 3] {
        let s = c
            .wait_state(id, "Init applied", |s| s.is_initialised())
            .await;
        assert_eq!(s.cluster_id, CLUSTER_ID);
        assert_eq!(
            s.current().unwrap().config,
            QuorumConfig::for_members(0, vec![1, 2, 3]).unwrap()
        );
        assert_eq!(s.nodes[&id], info(id));
    }
    let st = c.node(leader).status();
    assert_eq!(st.voters, set(&[1, 2, 3]));
    assert!(st.learners.is_empty());
    // initialize is idempotent, also after the cluster formed.
    c.node(2)
        .initialize(harness::members(&[1, 2, 3]))
        .await
        .unwrap();
    // A follower refuses writes and names the leader.
    let follower = [1, 2, 3].into_iter().find(|i| *i != leader).unwrap();
    match c
        .node(follower)
        .write(ControlCommand::AcquireEgress { holder: 1 })
        .await
    {
        Err(synod_control::ControlError::NotLeader {
            leader: Some((l, i)),
        }) => {
            assert_eq!(l, leader);
            assert_eq!(i, info(leader));
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
    assert!(two_leaders_in_one_term(&c.observations()).is_none());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_member_becomes_a_voter_and_its_state_converges() {
    let mut c = Cluster::new();
    c.start_initialised(&[1, 2, 3]).await;
    c.wait_state(1, "Init", |s| s.is_initialised()).await;
    // Node 4 starts empty and is not an initial member.
    c.start(4).await;
    let r = c
        .write(ControlCommand::AddMember {
            id: 4,
            info: info(4),
        })
        .await;
    assert_eq!(r, ControlReply::Epoch(1));
    // A retry gets the same epoch.
    let r = c
        .write(ControlCommand::AddMember {
            id: 4,
            info: info(4),
        })
        .await;
    assert_eq!(r, ControlReply::Epoch(1));
    let leader = c.wait_leader(&[1, 2, 3]).await;
    c.wait_status(leader, "node 4 a voter", |s| s.voters == set(&[1, 2, 3, 4]))
        .await;
    let s4 = c
        .wait_state(4, "epoch 1 at node 4", |s| s.current_epoch() == Some(1))
        .await;
    let s1 = c
        .wait_state(1, "epoch 1 at node 1", |s| s.current_epoch() == Some(1))
        .await;
    assert_eq!(*s4, *s1);
    c.wait_status(4, "node 4 sees itself a voter", |s| s.voters.contains(&4))
        .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_stays_a_learner_until_its_epoch_is_complete() {
    let mut c = Cluster::new();
    c.start_initialised(&[1, 2, 3, 4]).await;
    c.wait_state(1, "Init", |s| s.is_initialised()).await;
    let r = c.write(ControlCommand::RemoveMember { id: 4 }).await;
    assert_eq!(r, ControlReply::Epoch(1));
    let leader = c.wait_leader(&[1, 2, 3]).await;
    c.wait_status(leader, "4 demoted to learner", |s| {
        s.voters == set(&[1, 2, 3]) && s.learners == set(&[4])
    })
    .await;
    // Seal reports of epoch 0 (n = 4, f = 1): three close it with their
    // union (epaxos.md §8.2 step 5). Two go through a follower's submit.
    let reports = [
        (1, ids(&[(0, 1, 1), (0, 2, 1)])),
        (4, ids(&[(0, 1, 4)])),
        (2, ids(&[(0, 2, 1), (0, 7, 2)])),
    ];
    for (from, known) in &reports {
        let cmd = ControlCommand::SealReport {
            epoch: 0,
            from: *from,
            known: known.clone(),
        };
        if *from == leader {
            assert_eq!(c.write(cmd).await, ControlReply::Ok);
        } else {
            c.submit_until(*from, cmd, 3, |s| {
                s.epochs[&0].reports.contains_key(from) || s.epochs[&0].closed.is_some()
            })
            .await;
        }
    }
    let s = c
        .wait_state(3, "K published", |s| s.epochs[&0].closed.is_some())
        .await;
    let k = s.epochs[&0].closed.clone().unwrap();
    assert_eq!(
        k,
        ids(&[(0, 1, 1), (0, 2, 1), (0, 1, 4), (0, 7, 2)]),
        "K is the union of the first n − f reports"
    );
    // The removed node stays until the epoch is complete.
    assert!(c.node(leader).status().learners.contains(&4));
    for from in [4, 1, 2] {
        c.write(ControlCommand::EpochDone { epoch: 0, from }).await;
    }
    let s = c
        .wait_state(leader, "epoch 0 complete", |s| s.complete(0))
        .await;
    assert!(!s.nodes.contains_key(&4));
    c.wait_status(leader, "4 removed from raft", |s| {
        s.voters == set(&[1, 2, 3]) && s.learners.is_empty()
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_hands_leadership_to_a_remaining_voter() {
    let all: [NodeId; 4] = [1, 2, 3, 4];
    let mut c = Cluster::new();
    c.start_initialised(&all).await;
    let old = c.wait_leader(&all).await;
    c.wait_state(old, "Init", |s| s.is_initialised()).await;
    let r = c.write(ControlCommand::RemoveMember { id: old }).await;
    assert_eq!(r, ControlReply::Epoch(1));
    let rest: Vec<NodeId> = all.iter().copied().filter(|n| *n != old).collect();
    // openraft lets a learner lead; the reconcile task hands leadership over.
    let new = c.wait_leader(&rest).await;
    c.wait_status(new, "old leader kept as a learner", |s| {
        s.voters == rest.iter().copied().collect() && s.learners == set(&[old])
    })
    .await;
    c.wait_status(old, "old leader follows", |s| {
        !s.is_leader && s.leader == Some(new)
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_old_leader_cannot_commit() {
    let mut c = Cluster::new();
    c.start_initialised(&[1, 2, 3]).await;
    let old = c.wait_leader(&[1, 2, 3]).await;
    c.wait_state(old, "Init", |s| s.is_initialised()).await;
    let rest: Vec<NodeId> = [1, 2, 3].into_iter().filter(|i| *i != old).collect();
    c.router.isolate(old, &rest);
    let orphan = Settings {
        thrifty: Some(true),
        ..Settings::default()
    };
    let stale = c.node(old);
    let orphan_write =
        tokio::spawn(async move { stale.write(ControlCommand::SetSettings(orphan)).await });
    // The majority elects a new leader and commits.
    let new = c.wait_leader(&rest).await;
    assert_ne!(new, old);
    let majority = Settings {
        batch_size_max: Some(5),
        ..Settings::default()
    };
    assert_eq!(
        c.write_among(&rest, ControlCommand::SetSettings(majority.clone()))
            .await,
        ControlReply::Ok
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!orphan_write.is_finished() || orphan_write.await.unwrap().is_err());
    // The old leader's state never applied its orphan write.
    assert_ne!(c.node(old).state().borrow().settings.thrifty, Some(true));
    c.router.heal();
    for id in [1, 2, 3] {
        c.wait_state(id, "majority settings", |s| s.settings == majority)
            .await;
    }
    assert!(two_leaders_in_one_term(&c.observations()).is_none());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_state() {
    let mut c = Cluster::new();
    c.start_initialised(&[1, 2, 3]).await;
    c.wait_state(1, "Init", |s| s.is_initialised()).await;
    c.write(ControlCommand::AcquireEgress { holder: 2 }).await;
    let settings = Settings {
        commit_timeout_ticks: Some(11),
        ..Settings::default()
    };
    c.write(ControlCommand::SetSettings(settings.clone())).await;
    let before = c
        .wait_state(3, "settings", |s| s.settings == settings)
        .await;
    for id in [1, 2, 3] {
        c.stop(id).await;
    }
    for id in [1, 2, 3] {
        c.start(id).await;
    }
    c.wait_leader(&[1, 2, 3]).await;
    for id in [1, 2, 3] {
        c.wait_state(id, "state after restart", |s| *s == *before)
            .await;
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_two_leaders_in_one_term_under_partitions_and_leader_crashes() {
    let nodes: [NodeId; 3] = [1, 2, 3];
    let mut c = Cluster::new();
    c.router.set_faults(7, 20, 15);
    c.start_initialised(&nodes).await;
    c.wait_state(1, "Init", |s| s.is_initialised()).await;
    let mut rng = SplitMix64::new(2024);
    let mut writes = 0u64;
    for round in 0..6 {
        let leader = c.wait_leader(&nodes).await;
        let rest: Vec<NodeId> = nodes.iter().copied().filter(|n| *n != leader).collect();
        if round % 2 == 0 {
            // Cut the leader off (and, half the time, a random link more)
            // until the majority elects another one.
            c.router.partition(&[leader], &rest);
            if rng.below(2) == 0 {
                c.router.partition(&[rest[0]], &[rest[1]]);
                tokio::time::sleep(Duration::from_millis(rng.below(800))).await;
                c.router.heal();
                c.router.partition(&[leader], &rest);
            }
            c.wait_leader(&rest).await;
            tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
            c.router.heal();
        } else {
            // Crash the leader, let the others elect, restart it from its
            // directory.
            c.stop(leader).await;
            c.wait_leader(&rest).await;
            tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
            c.start(leader).await;
        }
        writes += 1;
        let s = Settings {
            fast_timeout_ticks: Some(writes),
            ..Settings::default()
        };
        c.write(ControlCommand::SetSettings(s)).await;
    }
    c.router.set_faults(0, 0, 0);
    c.wait_leader(&nodes).await;
    for id in nodes {
        c.wait_state(id, "last write", |s| {
            s.settings.fast_timeout_ticks == Some(writes)
        })
        .await;
    }
    let obs = c.observations();
    let terms: BTreeSet<u64> = obs.iter().map(|o| o.1).collect();
    assert!(terms.len() >= 6, "only terms {terms:?} observed");
    assert_eq!(two_leaders_in_one_term(&obs), None, "{obs:?}");
    c.shutdown().await;
}

#[test]
fn the_leader_checker_reports_two_leaders_in_one_term() {
    let fine = [(1, 3, 1), (2, 3, 1), (3, 4, 2), (1, 4, 2)];
    assert_eq!(two_leaders_in_one_term(&fine), None);
    let split = [(1, 3, 1), (2, 4, 2), (3, 4, 3)];
    assert_eq!(two_leaders_in_one_term(&split), Some((4, 2, 3)));
}

/// The runtime holds the control plane through the trait.
async fn status_through_the_trait<P: synod_control::ControlPlane>(p: &P) -> bool {
    p.status().is_leader && p.state().borrow().is_initialised()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_is_usable_through_the_control_plane_trait() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<synod_control::Control>();
    let mut c = Cluster::new();
    c.start_initialised(&[1, 2, 3]).await;
    let leader = c.wait_leader(&[1, 2, 3]).await;
    c.wait_state(leader, "Init", |s| s.is_initialised()).await;
    let mut seen = false;
    for id in [1, 2, 3] {
        seen |= status_through_the_trait(&c.node(id)).await;
    }
    assert!(seen);
    // Retried like the runtime would if leadership moves meanwhile.
    let reply = loop {
        let leader = c.wait_leader(&[1, 2, 3]).await;
        let cmd = ControlCommand::AcquireEgress { holder: leader };
        match synod_control::ControlPlane::write(&c.node(leader), cmd).await {
            Err(e) if e.retryable() => continue,
            other => break other.map(|r| (leader, r)),
        }
    };
    assert!(matches!(reply, Ok((leader, ControlReply::Egress(l))) if l.holder == leader));
    // A command above CONTROL_COMMAND_MAX_BYTES is refused before the log.
    // Id sets are encoded as runs, so only a set with gaps everywhere is
    // large: 300,000 runs of one id.
    let huge = ControlCommand::SealReport {
        epoch: 0,
        from: 1,
        known: (0..300_000)
            .map(|i| CmdId {
                epoch: 0,
                seq: 2 * i,
                origin: 1,
            })
            .collect(),
    };
    match c.node(1).write(huge).await {
        Err(e @ synod_control::ControlError::TooLarge { .. }) => assert!(!e.retryable()),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    c.shutdown().await;
}
