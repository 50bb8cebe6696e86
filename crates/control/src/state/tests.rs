//! Rules of `ControlState::apply` (epaxos.md §8.2–§8.3), one test per rule,
//! plus a seeded random-sequence property test.

use super::*;
use synod_types::SplitMix64;

fn info(id: NodeId) -> MemberInfo {
    let port = 10_000 + id;
    MemberInfo {
        peer_addr: SocketAddr::from(([127, 0, 0, 1], port)),
        api_addr: SocketAddr::from(([127, 0, 0, 1], port + 1000)),
        grpc_addr: None,
    }
}

fn members(ids: &[NodeId]) -> BTreeMap<NodeId, MemberInfo> {
    ids.iter().map(|i| (*i, info(*i))).collect()
}

fn init(ids: &[NodeId]) -> ControlState {
    let mut s = ControlState::default();
    let r = s.apply(ControlCommand::Init {
        cluster_id: 7,
        members: members(ids),
    });
    assert_eq!(r, ControlReply::Epoch(0));
    s
}

fn id(epoch: u64, seq: u64, origin: NodeId) -> CmdId {
    CmdId { epoch, seq, origin }
}

fn ids(v: &[(u64, u64, NodeId)]) -> BTreeSet<CmdId> {
    v.iter().map(|(e, s, o)| id(*e, *s, *o)).collect()
}

/// Applies `cmd`, expects a rejection, and checks nothing changed.
fn rejected(s: &mut ControlState, cmd: ControlCommand) -> ControlRejection {
    let before = s.clone();
    match s.apply(cmd) {
        ControlReply::Rejected(why) => {
            assert_eq!(*s, before, "a rejected command changed the state");
            assert!(!why.to_string().is_empty());
            why
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Seals and closes `epoch` with reports from `reporters`, then marks it
/// done by `done`.
fn close_and_complete(s: &mut ControlState, epoch: u64, reporters: &[NodeId], done: &[NodeId]) {
    for r in reporters {
        s.apply(ControlCommand::SealReport {
            epoch,
            from: *r,
            known: BTreeSet::new(),
        });
    }
    assert!(s.epochs[&epoch].closed.is_some());
    for d in done {
        assert_eq!(
            s.apply(ControlCommand::EpochDone { epoch, from: *d }),
            ControlReply::Ok
        );
    }
}

#[test]
fn init_creates_epoch_zero_with_the_standard_thresholds() {
    let s = init(&[1, 2, 3]);
    let cur = s.current().unwrap();
    assert_eq!(
        cur.config,
        QuorumConfig::for_members(0, vec![1, 2, 3]).unwrap()
    );
    assert_eq!(s.cluster_id, 7);
    assert_eq!(s.nodes, members(&[1, 2, 3]));
    assert_eq!(s.change_in_progress(), None);
}

#[test]
fn init_repeated_is_ok_and_a_different_init_is_rejected() {
    let mut s = init(&[1, 2, 3]);
    let before = s.clone();
    let again = ControlCommand::Init {
        cluster_id: 7,
        members: members(&[1, 2, 3]),
    };
    assert_eq!(s.apply(again), ControlReply::Ok);
    assert_eq!(s, before);
    let other_members = ControlCommand::Init {
        cluster_id: 7,
        members: members(&[1, 2, 4]),
    };
    assert_eq!(
        rejected(&mut s, other_members),
        ControlRejection::AlreadyInitialised { cluster_id: 7 }
    );
    let other_cluster = ControlCommand::Init {
        cluster_id: 8,
        members: members(&[1, 2, 3]),
    };
    rejected(&mut s, other_cluster);
}

#[test]
fn init_with_too_few_or_too_many_members_is_rejected() {
    let mut s = ControlState::default();
    let two = ControlCommand::Init {
        cluster_id: 1,
        members: members(&[1, 2]),
    };
    assert_eq!(rejected(&mut s, two), ControlRejection::TooFew { n: 2 });
    let eight = ControlCommand::Init {
        cluster_id: 1,
        members: members(&[1, 2, 3, 4, 5, 6, 7, 8]),
    };
    assert_eq!(rejected(&mut s, eight), ControlRejection::TooMany { n: 8 });
}

#[test]
fn commands_before_init_are_rejected() {
    let mut s = ControlState::default();
    for cmd in [
        ControlCommand::AddMember {
            id: 1,
            info: info(1),
        },
        ControlCommand::RemoveMember { id: 1 },
        ControlCommand::SealReport {
            epoch: 0,
            from: 1,
            known: BTreeSet::new(),
        },
        ControlCommand::EpochDone { epoch: 0, from: 1 },
        ControlCommand::AcquireEgress { holder: 1 },
    ] {
        assert_eq!(rejected(&mut s, cmd), ControlRejection::NotInitialised);
    }
}

#[test]
fn add_member_starts_the_next_epoch() {
    let mut s = init(&[1, 2, 3]);
    let r = s.apply(ControlCommand::AddMember {
        id: 4,
        info: info(4),
    });
    assert_eq!(r, ControlReply::Epoch(1));
    assert_eq!(s.members_of(1), Some(&[1, 2, 3, 4][..]));
    assert_eq!(
        s.current().unwrap().config,
        QuorumConfig::for_members(1, vec![1, 2, 3, 4]).unwrap()
    );
    assert_eq!(s.nodes[&4], info(4));
    assert_eq!(s.change_in_progress(), Some(0));
    assert_eq!(s.epoch_of_member(4), Some(1));
    assert_eq!(s.epoch_of_member(1), Some(1));
}

#[test]
fn add_member_retry_is_idempotent() {
    let mut s = init(&[1, 2, 3]);
    s.apply(ControlCommand::AddMember {
        id: 4,
        info: info(4),
    });
    let before = s.clone();
    let r = s.apply(ControlCommand::AddMember {
        id: 4,
        info: info(4),
    });
    assert_eq!(r, ControlReply::Epoch(1));
    assert_eq!(s, before);
    // The same id with other addresses is not a retry.
    let mut other = info(4);
    other.grpc_addr = Some(other.api_addr);
    assert_eq!(
        rejected(&mut s, ControlCommand::AddMember { id: 4, info: other }),
        ControlRejection::AlreadyMember { id: 4 }
    );
}

#[test]
fn add_member_rejects_existing_members_and_changes_in_progress() {
    let mut s = init(&[1, 2, 3]);
    assert_eq!(
        rejected(
            &mut s,
            ControlCommand::AddMember {
                id: 2,
                info: info(2)
            }
        ),
        ControlRejection::AlreadyMember { id: 2 }
    );
    s.apply(ControlCommand::AddMember {
        id: 4,
        info: info(4),
    });
    assert_eq!(
        rejected(
            &mut s,
            ControlCommand::AddMember {
                id: 5,
                info: info(5)
            }
        ),
        ControlRejection::ChangeInProgress { epoch: 0 }
    );
    assert_eq!(
        rejected(&mut s, ControlCommand::RemoveMember { id: 1 }),
        ControlRejection::ChangeInProgress { epoch: 0 }
    );
}

#[test]
fn add_member_beyond_seven_is_rejected() {
    let mut s = init(&[1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(
        rejected(
            &mut s,
            ControlCommand::AddMember {
                id: 8,
                info: info(8)
            }
        ),
        ControlRejection::TooMany { n: 8 }
    );
}

#[test]
fn remove_member_starts_the_next_epoch_and_retries_are_idempotent() {
    let mut s = init(&[1, 2, 3, 4]);
    assert_eq!(
        s.apply(ControlCommand::RemoveMember { id: 2 }),
        ControlReply::Epoch(1)
    );
    assert_eq!(s.members_of(1), Some(&[1, 3, 4][..]));
    // Node 2 stays known until epoch 0 is complete.
    assert!(s.nodes.contains_key(&2));
    let before = s.clone();
    assert_eq!(
        s.apply(ControlCommand::RemoveMember { id: 2 }),
        ControlReply::Epoch(1)
    );
    assert_eq!(s, before);
}

#[test]
fn remove_member_rejects_non_members_and_going_below_three() {
    let mut s = init(&[1, 2, 3]);
    assert_eq!(
        rejected(&mut s, ControlCommand::RemoveMember { id: 9 }),
        ControlRejection::NotMember { id: 9, epoch: 0 }
    );
    assert_eq!(
        rejected(&mut s, ControlCommand::RemoveMember { id: 1 }),
        ControlRejection::TooFew { n: 2 }
    );
}

#[test]
fn seal_reports_from_n_minus_f_members_publish_their_union() {
    // epaxos.md §8.2 step 5.
    let mut s = init(&[1, 2, 3, 4, 5]);
    s.apply(ControlCommand::RemoveMember { id: 5 });
    // n = 5, f = 2: three reports close epoch 0.
    let reports = [
        (1, ids(&[(0, 1, 1), (0, 1, 2)])),
        (3, ids(&[(0, 2, 3)])),
        (5, ids(&[(0, 1, 2), (0, 9, 5)])),
    ];
    for (i, (from, known)) in reports.iter().enumerate() {
        assert!(s.epochs[&0].closed.is_none());
        let r = s.apply(ControlCommand::SealReport {
            epoch: 0,
            from: *from,
            known: known.clone(),
        });
        assert_eq!(r, ControlReply::Ok, "report {i}");
    }
    let k = s.epochs[&0].closed.clone().expect("closed after 3 reports");
    assert_eq!(k, ids(&[(0, 1, 1), (0, 1, 2), (0, 2, 3), (0, 9, 5)]));
    // A late report changes nothing.
    let before = s.clone();
    let late = ControlCommand::SealReport {
        epoch: 0,
        from: 2,
        known: ids(&[(0, 100, 2)]),
    };
    assert_eq!(s.apply(late), ControlReply::Ok);
    assert_eq!(s, before);
}

#[test]
fn first_seal_report_per_member_wins() {
    let mut s = init(&[1, 2, 3]);
    s.apply(ControlCommand::AddMember {
        id: 4,
        info: info(4),
    });
    s.apply(ControlCommand::SealReport {
        epoch: 0,
        from: 1,
        known: ids(&[(0, 1, 1)]),
    });
    let before = s.clone();
    s.apply(ControlCommand::SealReport {
        epoch: 0,
        from: 1,
        known: ids(&[(0, 2, 1)]),
    });
    assert_eq!(s, before);
    s.apply(ControlCommand::SealReport {
        epoch: 0,
        from: 2,
        known: BTreeSet::new(),
    });
    assert_eq!(s.epochs[&0].closed, Some(ids(&[(0, 1, 1)])));
}

#[test]
fn seal_reports_for_unsealed_epochs_or_from_non_members_are_rejected() {
    let mut s = init(&[1, 2, 3]);
    let current = ControlCommand::SealReport {
        epoch: 0,
        from: 1,
        known: BTreeSet::new(),
    };
    assert_eq!(
        rejected(&mut s, current),
        ControlRejection::NotSealed { epoch: 0 }
    );
    s.apply(ControlCommand::AddMember {
        id: 4,
        info: info(4),
    });
    // Node 4 is not a member of epoch 0.
    let stranger = ControlCommand::SealReport {
        epoch: 0,
        from: 4,
        known: BTreeSet::new(),
    };
    assert_eq!(
        rejected(&mut s, stranger),
        ControlRejection::NotMember { id: 4, epoch: 0 }
    );
    let future = ControlCommand::SealReport {
        epoch: 5,
        from: 1,
        known: BTreeSet::new(),
    };
    assert_eq!(
        rejected(&mut s, future),
        ControlRejection::NotSealed { epoch: 5 }
    );
}

#[test]
fn epoch_done_needs_a_closed_epoch_and_a_member() {
    let mut s = init(&[1, 2, 3]);
    s.apply(ControlCommand::AddMember {
        id: 4,
        info: info(4),
    });
    assert_eq!(
        rejected(&mut s, ControlCommand::EpochDone { epoch: 0, from: 1 }),
        ControlRejection::NotClosed { epoch: 0 }
    );
    assert_eq!(
        rejected(&mut s, ControlCommand::EpochDone { epoch: 9, from: 1 }),
        ControlRejection::UnknownEpoch { epoch: 9 }
    );
    close_and_complete(&mut s, 0, &[1, 2], &[]);
    assert_eq!(
        rejected(&mut s, ControlCommand::EpochDone { epoch: 0, from: 9 }),
        ControlRejection::NotMember { id: 9, epoch: 0 }
    );
    // A member of the next epoch only (the new member) may report it.
    assert_eq!(
        s.apply(ControlCommand::EpochDone { epoch: 0, from: 4 }),
        ControlReply::Ok
    );
}

#[test]
fn completion_needs_n_minus_f_members_and_a_donor_in_the_next_epoch() {
    // Remove 3 from {1,2,3}+{4}: epoch 0 = {1,2,3,4}, epoch 1 = {1,2,4}.
    let mut s = init(&[1, 2, 3, 4]);
    s.apply(ControlCommand::RemoveMember { id: 3 });
    close_and_complete(&mut s, 0, &[1, 2, 3], &[3]);
    assert!(!s.complete(0));
    // n − f = 3 of epoch 0's members must be done; 3 and 4 are two.
    s.apply(ControlCommand::EpochDone { epoch: 0, from: 4 });
    assert!(!s.complete(0), "only two of epoch 0's members are done");
    assert_eq!(s.change_in_progress(), Some(0));
    s.apply(ControlCommand::EpochDone { epoch: 0, from: 1 });
    assert!(s.complete(0));
    assert_eq!(s.change_in_progress(), None);
    assert_eq!(s.last_complete(), Some(0));
}

#[test]
fn members_of_epoch_e_alone_do_not_complete_it_without_a_donor() {
    // Replace the whole membership is impossible in one step, so build the
    // donor-less case by counting only removed members: epoch 0 = {1,2,3,4},
    // epoch 1 = {1,2,3} after removing 4. Done by 4 alone never completes.
    let mut s = init(&[1, 2, 3, 4]);
    s.apply(ControlCommand::RemoveMember { id: 4 });
    close_and_complete(&mut s, 0, &[1, 2, 4], &[4]);
    assert!(!s.complete(0));
}

#[test]
fn completion_forgets_removed_nodes_and_allows_the_next_change() {
    let mut s = init(&[1, 2, 3, 4]);
    s.apply(ControlCommand::AcquireEgress { holder: 4 });
    s.apply(ControlCommand::RemoveMember { id: 4 });
    assert!(s.nodes.contains_key(&4));
    close_and_complete(&mut s, 0, &[1, 2, 3], &[1, 2, 3]);
    assert!(s.complete(0));
    assert!(!s.nodes.contains_key(&4));
    assert!(s.retired.contains(&4));
    assert_eq!(s.egress, None, "a removed holder loses the lease");
    assert!(
        s.epochs[&0].reports.is_empty(),
        "reports are dropped, K stays"
    );
    assert!(s.epochs[&0].closed.is_some());
    // The next change is allowed now, but never with a retired id.
    assert_eq!(
        rejected(
            &mut s,
            ControlCommand::AddMember {
                id: 4,
                info: info(4)
            }
        ),
        ControlRejection::Retired { id: 4 }
    );
    assert_eq!(
        s.apply(ControlCommand::AddMember {
            id: 5,
            info: info(5)
        }),
        ControlReply::Epoch(2)
    );
}

#[test]
fn settings_are_replaced() {
    let mut s = init(&[1, 2, 3]);
    let settings = Settings {
        thrifty: Some(true),
        batch_size_max: Some(64),
        fast_timeout_ticks: None,
        commit_timeout_ticks: Some(9),
    };
    assert_eq!(
        s.apply(ControlCommand::SetSettings(settings.clone())),
        ControlReply::Ok
    );
    assert_eq!(s.settings, settings);
}

#[test]
fn egress_lease_generations_increase_when_the_holder_changes() {
    let mut s = init(&[1, 2, 3]);
    let lease = |holder, generation| ControlReply::Egress(EgressLease { holder, generation });
    assert_eq!(
        s.apply(ControlCommand::AcquireEgress { holder: 1 }),
        lease(1, 1)
    );
    assert_eq!(
        s.apply(ControlCommand::AcquireEgress { holder: 1 }),
        lease(1, 1)
    );
    assert_eq!(
        s.apply(ControlCommand::AcquireEgress { holder: 2 }),
        lease(2, 2)
    );
    assert_eq!(
        rejected(&mut s, ControlCommand::AcquireEgress { holder: 9 }),
        ControlRejection::NotMember { id: 9, epoch: 0 }
    );
}

#[test]
fn egress_generations_never_repeat_after_the_holder_is_removed() {
    let mut s = init(&[1, 2, 3, 4]);
    s.apply(ControlCommand::AcquireEgress { holder: 4 });
    s.apply(ControlCommand::AcquireEgress { holder: 1 });
    s.apply(ControlCommand::AcquireEgress { holder: 4 });
    assert_eq!(s.egress_generation, 3);
    s.apply(ControlCommand::RemoveMember { id: 4 });
    close_and_complete(&mut s, 0, &[1, 2, 3], &[1, 2, 3]);
    assert_eq!(s.egress, None);
    assert_eq!(
        s.apply(ControlCommand::AcquireEgress { holder: 2 }),
        ControlReply::Egress(EgressLease {
            holder: 2,
            generation: 4
        }),
        "a fresh lease must fence every earlier one, the removed holder's too"
    );
}

#[test]
fn only_the_lease_in_force_records_the_published_frontier() {
    let mut s = init(&[1, 2, 3]);
    let published = |generation, token: &str| ControlCommand::EgressPublished {
        generation,
        token: token.to_string(),
    };
    assert_eq!(
        rejected(&mut s, published(1, "1.1:0-5")),
        ControlRejection::StaleEgress {
            generation: 1,
            current: 0
        },
        "no holder yet"
    );
    s.apply(ControlCommand::AcquireEgress { holder: 1 });
    assert_eq!(s.apply(published(1, "1.1:0-5")), ControlReply::Ok);
    assert_eq!(s.egress_published, "1.1:0-5");
    s.apply(ControlCommand::AcquireEgress { holder: 2 });
    assert_eq!(
        rejected(&mut s, published(1, "1.1:0-9")),
        ControlRejection::StaleEgress {
            generation: 1,
            current: 2
        },
        "the deposed holder cannot move the frontier"
    );
    assert_eq!(s.egress_published, "1.1:0-5", "the new holder resumes here");
    let long = "x".repeat(EGRESS_TOKEN_MAX + 1);
    assert_eq!(
        rejected(&mut s, published(2, &long)),
        ControlRejection::EgressTokenTooLong {
            len: EGRESS_TOKEN_MAX + 1
        }
    );
    assert_eq!(s.apply(published(2, "1.1:0-9")), ControlReply::Ok);
    assert_eq!(s.egress_published, "1.1:0-9");
}

#[test]
fn state_round_trips_through_postcard() {
    let mut s = init(&[1, 2, 3]);
    s.apply(ControlCommand::AddMember {
        id: 4,
        info: info(4),
    });
    s.apply(ControlCommand::SealReport {
        epoch: 0,
        from: 1,
        known: ids(&[(0, 3, 2)]),
    });
    let bytes = postcard::to_allocvec(&s).unwrap();
    let back: ControlState = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, s);
}

/// A random command over a small id universe, so rules collide often.
fn random_command(rng: &mut SplitMix64, s: &ControlState) -> ControlCommand {
    let node = |rng: &mut SplitMix64| rng.below(10) as NodeId;
    let epoch = |rng: &mut SplitMix64| {
        let cur = s.current_epoch().unwrap_or(0);
        rng.below(cur + 2)
    };
    match rng.below(100) {
        0..=2 => {
            let n = 2 + rng.below(4) as NodeId;
            ControlCommand::Init {
                cluster_id: rng.below(2),
                members: members(&(0..n).collect::<Vec<_>>()),
            }
        }
        3..=14 => {
            let id = node(rng);
            ControlCommand::AddMember { id, info: info(id) }
        }
        15..=24 => ControlCommand::RemoveMember { id: node(rng) },
        25..=64 => {
            let e = epoch(rng);
            let known = (0..rng.below(4))
                .map(|_| id(e, rng.below(6), node(rng)))
                .collect();
            ControlCommand::SealReport {
                epoch: e,
                from: node(rng),
                known,
            }
        }
        65..=94 => ControlCommand::EpochDone {
            epoch: epoch(rng),
            from: node(rng),
        },
        95..=96 => ControlCommand::AcquireEgress { holder: node(rng) },
        97 => ControlCommand::EgressPublished {
            generation: rng.below(4),
            token: format!("{}", rng.below(1000)),
        },
        _ => ControlCommand::SetSettings(Settings {
            thrifty: Some(rng.below(2) == 0),
            ..Settings::default()
        }),
    }
}

/// Checks the invariants after every step; `first_reports` remembers, per
/// epoch, the reports accepted before it closed.
fn check(s: &ControlState, first_reports: &BTreeMap<u64, BTreeMap<NodeId, BTreeSet<CmdId>>>) {
    let mut prev: Option<u64> = None;
    for (e, rec) in &s.epochs {
        if let Some(p) = prev {
            assert_eq!(*e, p + 1, "epochs are consecutive");
        }
        prev = Some(*e);
        assert_eq!(rec.config.epoch, *e);
        let expect = QuorumConfig::for_members(*e, rec.config.members().to_vec()).unwrap();
        assert_eq!(rec.config, expect, "every config uses the one f/e rule");
        assert!((MIN_MEMBERS..=MAX_MEMBERS).contains(&rec.config.n()));
        if let Some(k) = &rec.closed {
            let reps = &first_reports[e];
            assert_eq!(reps.len(), rec.config.slow_quorum());
            for known in reps.values() {
                assert!(known.is_subset(k), "K ⊇ each accepted report");
            }
        }
    }
    if let Some(l) = s.egress {
        assert_eq!(
            l.generation, s.egress_generation,
            "the lease in force carries the newest generation"
        );
    }
    // Never two epoch changes in flight: every epoch before the previous one
    // is complete.
    if let Some(cur) = s.current_epoch() {
        for e in s.epochs.keys().copied().filter(|e| e + 1 < cur) {
            assert!(s.complete(e), "epoch {e} incomplete while {cur} exists");
        }
        // Every current member is a known node.
        for m in s.current().unwrap().config.members() {
            assert!(s.nodes.contains_key(m));
        }
    }
}

#[test]
fn random_command_sequences_keep_the_invariants() {
    let mut changes = 0;
    let mut closed = 0;
    for seed in 0..200u64 {
        let mut rng = SplitMix64::new(seed);
        let mut s = ControlState::default();
        let mut first_reports: BTreeMap<u64, BTreeMap<NodeId, BTreeSet<CmdId>>> = BTreeMap::new();
        if seed % 2 == 0 {
            s = init(&[0, 1, 2]);
        }
        for _ in 0..400 {
            let cmd = random_command(&mut rng, &s);
            let before = s.clone();
            let reply = s.apply(cmd.clone());
            if let ControlReply::Rejected(_) = reply {
                assert_eq!(s, before, "rejected {cmd} changed the state");
            }
            if let ControlCommand::SealReport { epoch, from, known } = &cmd {
                let was_open = before.epochs.get(epoch).is_some_and(|r| r.closed.is_none());
                let accepted = was_open
                    && reply == ControlReply::Ok
                    && !before.epochs[epoch].reports.contains_key(from);
                if accepted {
                    first_reports
                        .entry(*epoch)
                        .or_default()
                        .insert(*from, known.clone());
                    if s.epochs[epoch].closed.is_some() {
                        closed += 1;
                    }
                }
            }
            if matches!(reply, ControlReply::Epoch(e) if Some(e) != before.current_epoch()) {
                changes += 1;
            }
            check(&s, &first_reports);
        }
    }
    // The generator must exercise the interesting paths.
    assert!(changes > 100, "only {changes} epoch changes");
    assert!(closed > 50, "only {closed} epochs closed");
}
