//! Unit and property tests of the fold (kafka.md §3 rules 2, 3, 6).

use super::*;
use proptest::prelude::*;
use synod_decision::{Op, OpResult, Value};

fn claim(term: u64, node: NodeId) -> Vec<u8> {
    LogRecord::Claim(Claim {
        term,
        node,
        boot: u64::from(node) * 1000,
        api_addr: format!("127.0.0.1:{}", 7000 + node),
    })
    .encode()
}

fn decision_record(
    term: u64,
    leader: NodeId,
    seq: u64,
    client: u64,
    request: u64,
    ops: Vec<Op>,
) -> DecisionRecord {
    DecisionRecord {
        term,
        leader,
        seq,
        client,
        request,
        body: Decision::new(ops, 0).encode(),
    }
}

fn put(term: u64, leader: NodeId, seq: u64, key: &str) -> Vec<u8> {
    LogRecord::Decision(decision_record(
        term,
        leader,
        seq,
        u64::from(leader) * 100 + seq,
        1,
        vec![Op::put(key, b"v".to_vec())],
    ))
    .encode()
}

fn fold_all(state: &mut LogState, records: &[Vec<u8>]) -> Vec<Step> {
    let start = state.next_offset();
    records
        .iter()
        .enumerate()
        .map(|(i, r)| state.fold(start + i as u64, r))
        .collect()
}

#[test]
fn rule_2_a_claim_confers_leadership_only_with_a_greater_term() {
    let mut s = LogState::new(Rules::Spec);
    let steps = fold_all(
        &mut s,
        &[claim(1, 1), claim(1, 2), claim(3, 2), claim(2, 1)],
    );
    assert!(matches!(
        steps[0],
        Step::ClaimWon {
            term: 1,
            node: 1,
            ..
        }
    ));
    assert!(matches!(
        steps[1],
        Step::ClaimIgnored {
            term: 1,
            node: 2,
            current_term: 1
        }
    ));
    assert!(matches!(
        steps[2],
        Step::ClaimWon {
            term: 3,
            node: 2,
            ..
        }
    ));
    assert!(matches!(
        steps[3],
        Step::ClaimIgnored {
            term: 2,
            node: 1,
            current_term: 3
        }
    ));
    assert_eq!(s.term(), 3);
    assert_eq!(s.leader().map(|l| l.node), Some(2));
    assert_eq!(s.counters().claims_won, 2);
    assert_eq!(s.counters().claims_ignored, 2);
}

#[test]
fn rule_3_a_deposed_leaders_decisions_are_skipped() {
    let mut s = LogState::new(Rules::Spec);
    let steps = fold_all(
        &mut s,
        &[
            put(1, 1, 1, "before-any-claim"),
            claim(1, 1),
            put(1, 1, 1, "a"),
            claim(2, 2),
            put(1, 1, 2, "stale"),
            put(2, 1, 1, "not-the-leader"),
            put(2, 2, 1, "b"),
        ],
    );
    assert!(matches!(
        steps[0],
        Step::Skipped {
            why: Invalid::NotCurrentTerm { current_term: 0 },
            ..
        }
    ));
    assert!(matches!(steps[2], Step::Applied { .. }));
    assert!(matches!(
        steps[4],
        Step::Skipped {
            why: Invalid::NotCurrentTerm { current_term: 2 },
            ..
        }
    ));
    assert!(matches!(
        steps[5],
        Step::Skipped {
            why: Invalid::NotTermLeader {
                term_leader: Some(2)
            },
            ..
        }
    ));
    assert!(matches!(steps[6], Step::Applied { .. }));
    assert!(s.machine().value("a").is_some());
    assert!(s.machine().value("b").is_some());
    assert!(s.machine().value("stale").is_none());
    assert!(s.machine().value("not-the-leader").is_none());
    assert!(s.machine().value("before-any-claim").is_none());
    assert_eq!(s.counters().decisions_applied, 2);
    assert_eq!(s.counters().decisions_skipped, 3);
}

#[test]
fn rule_3_a_gap_in_a_terms_sequence_ends_the_term() {
    let mut s = LogState::new(Rules::Spec);
    let steps = fold_all(
        &mut s,
        &[
            claim(1, 1),
            put(1, 1, 1, "a"),
            put(1, 1, 3, "c"),
            put(1, 1, 2, "b"),
            put(1, 1, 4, "d"),
        ],
    );
    assert!(matches!(steps[1], Step::Applied { .. }));
    assert!(matches!(
        steps[2],
        Step::Skipped {
            why: Invalid::OutOfOrder { expected_seq: 2 },
            ..
        }
    ));
    // seq 2 arriving late is the next one and valid; 4 after it is not.
    assert!(matches!(steps[3], Step::Applied { .. }));
    assert!(matches!(
        steps[4],
        Step::Skipped {
            why: Invalid::OutOfOrder { expected_seq: 3 },
            ..
        }
    ));
    // A new claim starts the sequence again.
    let steps = fold_all(&mut s, &[claim(2, 1), put(2, 1, 1, "e")]);
    assert!(matches!(steps[1], Step::Applied { .. }));
}

#[test]
fn unparseable_records_are_skipped_and_counted_and_change_nothing_else() {
    let mut s = LogState::new(Rules::Spec);
    fold_all(&mut s, &[claim(1, 1), put(1, 1, 1, "a")]);
    let mut expected = s.clone();
    let steps = fold_all(
        &mut s,
        &[b"garbage".to_vec(), vec![], b"SKL\x01\xff".to_vec()],
    );
    assert!(steps.iter().all(|st| matches!(st, Step::Unparseable(_))));
    assert_eq!(s.counters().unparseable, 3);
    // Only the offset and the counter moved.
    expected.next_offset = s.next_offset();
    expected.counters.unparseable = 3;
    assert_eq!(s, expected);
}

#[test]
fn an_offset_already_folded_changes_nothing() {
    let mut s = LogState::new(Rules::Spec);
    fold_all(&mut s, &[claim(1, 1), put(1, 1, 1, "a")]);
    let before = s.clone();
    assert_eq!(s.fold(0, &claim(9, 3)), Step::AlreadyFolded);
    assert_eq!(s.fold(1, &put(1, 1, 2, "x")), Step::AlreadyFolded);
    assert_eq!(s, before);
    // Gaps in offsets (transaction markers) are fine.
    assert!(matches!(
        s.fold(10, &put(1, 1, 2, "b")),
        Step::Applied { .. }
    ));
    assert_eq!(s.next_offset(), 11);
}

#[test]
fn sessions_make_a_retry_through_a_new_leader_exactly_once() {
    let mut s = LogState::new(Rules::Spec);
    let reserve = |term, leader, seq| {
        LogRecord::Decision(decision_record(
            term,
            leader,
            seq,
            42,
            7,
            vec![Op::release("ctr", 1)],
        ))
        .encode()
    };
    let set = LogRecord::Decision(decision_record(
        1,
        1,
        1,
        41,
        1,
        vec![Op::set_stock("ctr", 0)],
    ))
    .encode();
    let steps = fold_all(
        &mut s,
        &[
            claim(1, 1),
            set,
            reserve(1, 1, 2),
            claim(2, 2),
            reserve(2, 2, 1),
        ],
    );
    let (Step::Applied { outcome: first, .. }, Step::Applied { outcome: retry, .. }) =
        (&steps[2], &steps[4])
    else {
        panic!("{steps:?}")
    };
    assert_eq!(first, retry, "the retry gets the recorded outcome");
    assert!(matches!(
        first,
        Outcome::Applied { results } if results == &vec![OpResult::Release { version: 2, remaining: 1 }]
    ));
    assert_eq!(
        s.machine().value("ctr"),
        Some(&Value::Stock(1)),
        "applied once"
    );
}

#[test]
fn the_broken_rules_apply_a_stale_term() {
    let records = [claim(1, 1), claim(2, 2), put(1, 1, 1, "stale")];
    let mut good = LogState::new(Rules::Spec);
    fold_all(&mut good, &records);
    let mut bad = LogState::new(Rules::BrokenAcceptAnyTerm);
    fold_all(&mut bad, &records);
    assert!(good.machine().value("stale").is_none());
    assert!(bad.machine().value("stale").is_some());
}

#[test]
fn corrupted_snapshots_are_typed_errors() {
    let mut s = LogState::new(Rules::Spec);
    fold_all(&mut s, &[claim(1, 1), put(1, 1, 1, "a")]);
    let snap = s.snapshot();
    assert_eq!(LogState::restore(&snap, Rules::Spec), Ok(s.clone()));
    assert_eq!(
        LogState::restore(&snap[..snap.len() - 1], Rules::Spec),
        Err(FoldSnapshotError::Truncated)
    );
    for i in 0..snap.len() {
        let mut bad = snap.clone();
        bad[i] ^= 0x40;
        assert!(
            LogState::restore(&bad, Rules::Spec).is_err(),
            "byte {i} flipped"
        );
    }
    for n in 0..snap.len() {
        assert!(LogState::restore(&snap[..n], Rules::Spec).is_err());
    }
}

// ---------------------------------------------------------------------------
// Property tests

/// One generated record.
#[derive(Clone, Debug)]
enum Gen {
    Claim {
        term: u64,
        node: NodeId,
    },
    Decision {
        term: u64,
        leader: NodeId,
        seq: u64,
        client: u64,
        request: u64,
        qty: u64,
    },
    Garbage(Vec<u8>),
}

/// Small ranges so that claims collide, terms repeat and seqs hit the
/// expected one often enough for valid decisions to be common
/// ([`the_generated_logs_exercise_every_kind_of_step`] checks it).
fn gen() -> impl Strategy<Value = Gen> {
    prop_oneof![
        1 => (0u64..4, 1u16..4).prop_map(|(term, node)| Gen::Claim { term, node }),
        6 => (0u64..4, 1u16..3, 0u64..4, 1u64..4, 1u64..5, 1u64..4).prop_map(
            |(term, leader, seq, client, request, qty)| Gen::Decision {
                term,
                leader,
                seq,
                client,
                request,
                qty
            }
        ),
        1 => proptest::collection::vec(any::<u8>(), 0..12).prop_map(Gen::Garbage),
    ]
}

fn encode(g: &Gen) -> Vec<u8> {
    match g {
        Gen::Claim { term, node } => claim(*term, *node),
        Gen::Decision {
            term,
            leader,
            seq,
            client,
            request,
            qty,
        } => LogRecord::Decision(decision_record(
            *term,
            *leader,
            *seq,
            *client,
            *request,
            vec![
                Op::put(format!("k{client}"), vec![*qty as u8]),
                Op::put("last", vec![*leader as u8]),
            ],
        ))
        .encode(),
        Gen::Garbage(b) => b.clone(),
    }
}

/// Rules 2–3 restated as directly as possible: the offsets of the valid
/// decisions, computed without `LogState`.
fn oracle(log: &[(u64, Gen)]) -> Vec<u64> {
    let (mut max_term, mut leader, mut count) = (0u64, None, 0u64);
    let mut valid = Vec::new();
    for (offset, g) in log {
        match g {
            Gen::Claim { term, node } if *term > max_term => {
                max_term = *term;
                leader = Some(*node);
                count = 0;
            }
            Gen::Decision {
                term,
                leader: l,
                seq,
                ..
            } if *term == max_term && leader == Some(*l) && *seq == count + 1 => {
                valid.push(*offset);
                count += 1;
            }
            _ => {}
        }
    }
    valid
}

/// Logs of up to 60 records at increasing offsets with gaps. Half the
/// decisions are steered to continue the current leader's sequence (what a
/// well-behaved leader appends), so valid ones are common; the rest stay
/// arbitrary. The oracle, not the steering, decides validity.
fn log_strategy() -> impl Strategy<Value = Vec<(u64, Gen)>> {
    proptest::collection::vec((1u64..3, gen(), any::<bool>()), 0..60).prop_map(|v| {
        let mut offset = 0;
        let (mut max_term, mut leader, mut count) = (0u64, None, 0u64);
        v.into_iter()
            .map(|(gap, mut g, steer)| {
                offset += gap;
                match &mut g {
                    Gen::Claim { term, node } if *term > max_term => {
                        max_term = *term;
                        leader = Some(*node);
                        count = 0;
                    }
                    Gen::Decision {
                        term,
                        leader: l,
                        seq,
                        ..
                    } if steer && leader.is_some() => {
                        *term = max_term;
                        *l = leader.expect("checked");
                        count += 1;
                        *seq = count;
                    }
                    _ => {}
                }
                (offset, g)
            })
            .collect()
    })
}

/// The property tests are not vacuous: over 256 generated logs the fold
/// applies, skips for every reason, ignores claims and meets garbage.
#[test]
fn the_generated_logs_exercise_every_kind_of_step() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut applied, mut ignored, mut unparseable) = (0, 0, 0);
    let (mut stale, mut not_leader, mut out_of_order) = (0, 0, 0);
    for _ in 0..256 {
        let log = log_strategy().new_tree(&mut runner).unwrap().current();
        let mut s = LogState::new(Rules::Spec);
        for (offset, g) in &log {
            match s.fold(*offset, &encode(g)) {
                Step::Applied { .. } => applied += 1,
                Step::ClaimIgnored { .. } => ignored += 1,
                Step::Unparseable(_) => unparseable += 1,
                Step::Skipped {
                    why: Invalid::NotCurrentTerm { .. },
                    ..
                } => stale += 1,
                Step::Skipped {
                    why: Invalid::NotTermLeader { .. },
                    ..
                } => not_leader += 1,
                Step::Skipped {
                    why: Invalid::OutOfOrder { .. },
                    ..
                } => out_of_order += 1,
                _ => {}
            }
        }
    }
    let counts = [
        applied,
        ignored,
        unparseable,
        stale,
        not_leader,
        out_of_order,
    ];
    assert!(counts.iter().all(|&n| n >= 100), "{counts:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Rules 2–3: the fold applies exactly the decisions the restated rules
    /// call valid, skips the rest, and its state is those decisions applied
    /// in order to a fresh state machine.
    #[test]
    fn the_fold_applies_exactly_the_valid_decisions(log in log_strategy()) {
        let mut s = LogState::new(Rules::Spec);
        let mut applied = Vec::new();
        let mut model = StateMachine::new();
        for (offset, g) in &log {
            if let Step::Applied { record, .. } = s.fold(*offset, &encode(g)) {
                applied.push(*offset);
                model.apply(&command_of(&record));
            }
        }
        prop_assert_eq!(&applied, &oracle(&log));
        prop_assert_eq!(s.state_digest(), model.digest());
        let decisions = log.iter().filter(|(_, g)| matches!(g, Gen::Decision { .. })).count() as u64;
        let c = s.counters();
        prop_assert_eq!(c.decisions_applied + c.decisions_skipped, decisions);
        prop_assert_eq!(c.decisions_applied, applied.len() as u64);
        let claims = log.iter().filter(|(_, g)| matches!(g, Gen::Claim { .. })).count() as u64;
        prop_assert_eq!(c.claims_won + c.claims_ignored, claims);
    }

    /// Rule 6: a snapshot taken anywhere, restored, then fed the whole log
    /// again (the overlap is `AlreadyFolded`) ends in the same state as one
    /// fold from the start.
    #[test]
    fn snapshot_and_replay_equal_one_fold(log in log_strategy(), cut in 0usize..61) {
        let cut = cut.min(log.len());
        let mut full = LogState::new(Rules::Spec);
        let mut at_cut = None;
        for (i, (offset, g)) in log.iter().enumerate() {
            if i == cut {
                at_cut = Some(full.snapshot());
            }
            full.fold(*offset, &encode(g));
        }
        let snap = at_cut.unwrap_or_else(|| full.snapshot());
        let mut replay = LogState::restore(&snap, Rules::Spec).unwrap();
        for (offset, g) in &log {
            replay.fold(*offset, &encode(g));
        }
        prop_assert_eq!(replay, full);
    }
}
