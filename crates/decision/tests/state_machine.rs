//! Behaviour of the decision state machine, checked against
//! `shared/design/architecture.md` §4 (and epaxos.md §3.9 for sessions).

use std::sync::Arc;
use synod_decision::{
    command, session_key, ClaimState, Decision, DecodeError, Failure, Guard, Kind, Location, Op,
    OpResult, Outcome, Reason, SnapshotError, StateMachine, ValidationError, Value,
    MAX_AGENT_BYTES, MAX_DECISION_VALUE_BYTES, MAX_ENCODED_DECISION_BYTES, MAX_GUARDS_PER_DECISION,
    MAX_KEY_BYTES, MAX_OPS_PER_DECISION, MAX_VALUE_BYTES,
};
use synod_types::{Access, Command, Key};

/// The shared seeded SplitMix64, so the randomized tests replay exactly.
struct Rng(synod_types::SplitMix64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(synod_types::SplitMix64::new(seed))
    }
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn key(s: &str) -> Key {
    Key::from(s)
}

fn apply(sm: &mut StateMachine, ops: Vec<Op>, issued_at_ms: u64) -> Outcome {
    sm.apply_decision(&Decision::new(ops, issued_at_ms))
}

fn results(outcome: Outcome) -> Vec<OpResult> {
    match outcome {
        Outcome::Applied { results } => results,
        Outcome::Rejected { reason } => panic!("expected Applied, got Rejected: {reason}"),
    }
}

fn reason(outcome: Outcome) -> Reason {
    match outcome {
        Outcome::Rejected { reason } => reason,
        Outcome::Applied { results } => panic!("expected Rejected, got Applied: {results:?}"),
    }
}

fn op_failed(op: usize, k: &str, failure: Failure) -> Reason {
    Reason::OpFailed {
        op,
        key: key(k),
        failure,
    }
}

// ---------------------------------------------------------------------------
// §4 counters with bounds: reserve succeeds only if value - qty >= 0.

#[test]
fn reserve_never_oversells() {
    let mut rng = Rng::new(7);
    for round in 0..50 {
        let mut sm = StateMachine::new();
        let stock = rng.below(20);
        results(apply(&mut sm, vec![Op::set_stock("sku", stock)], 0));
        let mut reserved = 0u64;
        let mut rejections = 0;
        while rejections < 10 {
            let qty = 1 + rng.below(4);
            let before = sm.stock("sku").unwrap();
            match apply(&mut sm, vec![Op::reserve("sku", qty)], round) {
                Outcome::Applied { results } => {
                    reserved += qty;
                    let [OpResult::Reserve { remaining, .. }] = results[..] else {
                        panic!("one reserve result")
                    };
                    assert_eq!(remaining, before - qty);
                }
                Outcome::Rejected { reason } => {
                    assert!(qty > before, "rejected although {before} >= {qty}");
                    assert_eq!(
                        reason,
                        op_failed(
                            0,
                            "sku",
                            Failure::InsufficientStock {
                                requested: qty,
                                available: before
                            }
                        )
                    );
                    rejections += 1;
                }
            }
            assert_eq!(sm.stock("sku"), Some(stock - reserved), "never below zero");
        }
        assert!(reserved <= stock);
    }
}

#[test]
fn counters_release_set_and_type_errors() {
    let mut sm = StateMachine::new();
    // Reserve/Release on a counter that does not exist.
    assert_eq!(
        reason(apply(&mut sm, vec![Op::reserve("c", 1)], 0)),
        op_failed(0, "c", Failure::Absent)
    );
    assert_eq!(
        reason(apply(&mut sm, vec![Op::release("c", 1)], 0)),
        op_failed(0, "c", Failure::Absent)
    );
    assert_eq!(
        results(apply(&mut sm, vec![Op::set_stock("c", 2)], 0)),
        vec![OpResult::SetStock {
            version: 1,
            stock: 2
        }]
    );
    assert_eq!(
        results(apply(
            &mut sm,
            vec![Op::reserve("c", 2), Op::release("c", 5)],
            0
        )),
        vec![
            OpResult::Reserve {
                version: 2,
                remaining: 0
            },
            OpResult::Release {
                version: 3,
                remaining: 5
            },
        ]
    );
    assert_eq!(
        reason(apply(&mut sm, vec![Op::release("c", u64::MAX)], 0)),
        op_failed(
            0,
            "c",
            Failure::StockOverflow {
                stock: 5,
                added: u64::MAX
            }
        )
    );
    // A counter is not bytes, and bytes are not a counter.
    assert_eq!(
        reason(apply(&mut sm, vec![Op::put("c", b"x".to_vec())], 0)),
        op_failed(
            0,
            "c",
            Failure::WrongType {
                expected: Kind::Bytes,
                actual: Kind::Stock
            }
        )
    );
    results(apply(&mut sm, vec![Op::put("b", b"x".to_vec())], 0));
    assert_eq!(
        reason(apply(&mut sm, vec![Op::reserve("b", 1)], 0)),
        op_failed(
            0,
            "b",
            Failure::WrongType {
                expected: Kind::Stock,
                actual: Kind::Bytes
            }
        )
    );
    assert_eq!(sm.stock("c"), Some(5));
    assert_eq!(sm.version("c"), 3);
}

// ---------------------------------------------------------------------------
// §4 exclusive claims: no double assignment; expiry by issued_at only.

#[test]
fn claims_are_exclusive_until_expiry_by_issued_at() {
    let mut sm = StateMachine::new();
    assert_eq!(
        results(apply(&mut sm, vec![Op::claim("truck/17", "a", 100)], 1_000)),
        vec![OpResult::Claim {
            version: 1,
            holder: "a".into(),
            expires_at_ms: 1_100
        }]
    );
    let held = op_failed(
        0,
        "truck/17",
        Failure::ClaimHeld {
            holder: "a".into(),
            expires_at_ms: 1_100,
        },
    );
    assert_eq!(
        reason(apply(&mut sm, vec![Op::claim("truck/17", "b", 100)], 1_050)),
        held
    );
    // One millisecond before expiry it is still held.
    assert_eq!(
        reason(apply(&mut sm, vec![Op::claim("truck/17", "b", 100)], 1_099)),
        held
    );
    // A non-holder cannot release or delete it.
    assert_eq!(
        reason(apply(
            &mut sm,
            vec![Op::release_claim("truck/17", "b")],
            1_050
        )),
        op_failed(
            0,
            "truck/17",
            Failure::NotHolder {
                holder: Some("a".into())
            }
        )
    );
    assert_eq!(
        reason(apply(&mut sm, vec![Op::delete("truck/17")], 1_050)),
        held
    );
    // The holder renews: the expiry moves to issued_at + ttl.
    results(apply(&mut sm, vec![Op::claim("truck/17", "a", 100)], 1_090));
    assert_eq!(
        sm.claim("truck/17"),
        Some(&ClaimState {
            holder: "a".into(),
            claimed_at_ms: 1_090,
            expires_at_ms: 1_190
        })
    );
    // At issued_at >= claimed_at + ttl the claim has expired: b takes it.
    assert_eq!(
        results(apply(&mut sm, vec![Op::claim("truck/17", "b", 50)], 1_190)),
        vec![OpResult::Claim {
            version: 3,
            holder: "b".into(),
            expires_at_ms: 1_240
        }]
    );
    // a's stale release is refused; b's release frees the key.
    assert_eq!(
        reason(apply(
            &mut sm,
            vec![Op::release_claim("truck/17", "a")],
            1_200
        )),
        op_failed(
            0,
            "truck/17",
            Failure::NotHolder {
                holder: Some("b".into())
            }
        )
    );
    assert_eq!(
        results(apply(
            &mut sm,
            vec![Op::release_claim("truck/17", "b")],
            1_200
        )),
        vec![OpResult::ReleaseClaim]
    );
    assert_eq!(sm.value("truck/17"), None);
    assert_eq!(
        reason(apply(
            &mut sm,
            vec![Op::release_claim("truck/17", "b")],
            1_200
        )),
        op_failed(0, "truck/17", Failure::NotHolder { holder: None })
    );
}

#[test]
fn claim_expiry_uses_only_the_deciding_decisions_issued_at() {
    // architecture.md §4/§5: decisions on other keys execute in different
    // orders on different replicas, so they must not move a key's clock.
    let mut sm = StateMachine::new();
    results(apply(&mut sm, vec![Op::claim("truck/1", "a", 100)], 1_000));
    // A decision on another key, issued much later, executes first here.
    results(apply(&mut sm, vec![Op::put("other", b"x".to_vec())], 9_000));
    // A claim attempt issued before the expiry is still refused.
    assert!(matches!(
        reason(apply(&mut sm, vec![Op::claim("truck/1", "b", 100)], 1_050)),
        Reason::OpFailed {
            failure: Failure::ClaimHeld { .. },
            ..
        }
    ));
}

#[test]
fn claimed_by_guard() {
    let mut sm = StateMachine::new();
    results(apply(&mut sm, vec![Op::claim("truck/1", "a", 100)], 1_000));
    let dispatch = |agent: &str, at| {
        Decision::new(vec![Op::put("dispatch/1", agent.as_bytes().to_vec())], at)
            .with_guard(Guard::claimed_by("truck/1", agent))
    };
    assert!(sm.apply_decision(&dispatch("a", 1_010)).is_applied());
    assert_eq!(
        reason(sm.apply_decision(&dispatch("b", 1_010))),
        Reason::GuardFailed {
            guard: 0,
            key: key("truck/1"),
            failure: Failure::NotHolder {
                holder: Some("a".into())
            }
        }
    );
    // After expiry even the old holder fails the guard.
    assert_eq!(
        reason(sm.apply_decision(&dispatch("a", 1_100))),
        Reason::GuardFailed {
            guard: 0,
            key: key("truck/1"),
            failure: Failure::NotHolder { holder: None }
        }
    );
}

// ---------------------------------------------------------------------------
// §4 batch([...]) all-or-nothing over several keys, with guards.

#[test]
fn batch_is_all_or_nothing() {
    let mut sm = StateMachine::new();
    results(apply(
        &mut sm,
        vec![
            Op::set_stock("sku/1", 3),
            Op::set_stock("sku/2", 1),
            Op::put("order/0", b"x".to_vec()),
        ],
        0,
    ));
    let before = sm.clone();
    // The third op fails: the first two must not be applied.
    let outcome = apply(
        &mut sm,
        vec![
            Op::reserve("sku/1", 2),
            Op::put("order/1", b"o".to_vec()),
            Op::reserve("sku/2", 2),
        ],
        0,
    );
    assert_eq!(
        reason(outcome),
        op_failed(
            2,
            "sku/2",
            Failure::InsufficientStock {
                requested: 2,
                available: 1
            }
        )
    );
    assert_eq!(sm, before);
    assert_eq!(sm.digest(), before.digest());
    // Ops see the effects of earlier ops of the same decision.
    assert_eq!(
        results(apply(
            &mut sm,
            vec![
                Op::reserve("sku/1", 2),
                Op::reserve("sku/1", 1),
                Op::put("k", b"v".to_vec()),
                Op::get("k"),
            ],
            0
        )),
        vec![
            OpResult::Reserve {
                version: 2,
                remaining: 1
            },
            OpResult::Reserve {
                version: 3,
                remaining: 0
            },
            OpResult::Put { version: 1 },
            OpResult::Get {
                version: 1,
                value: Some(Value::Bytes(b"v".to_vec()))
            },
        ]
    );
}

#[test]
fn guards_are_checked_before_ops_and_block_everything() {
    let mut sm = StateMachine::new();
    results(apply(
        &mut sm,
        vec![Op::put("cfg", b"1".to_vec()), Op::set_stock("s", 5)],
        0,
    ));
    let before = sm.clone();
    let guarded = |guard: Guard| {
        Decision::new(vec![Op::put("cfg", b"2".to_vec()), Op::reserve("s", 1)], 0).with_guard(guard)
    };
    let cases = [
        (
            Guard::version("cfg", 2),
            Failure::VersionMismatch {
                expected: 2,
                actual: 1,
            },
        ),
        (
            Guard::version("cfg", 0),
            Failure::VersionMismatch {
                expected: 0,
                actual: 1,
            },
        ),
        (Guard::exists("nope"), Failure::Absent),
        (
            Guard::stock_at_least("s", 6),
            Failure::InsufficientStock {
                requested: 6,
                available: 5,
            },
        ),
        (
            Guard::stock_at_least("cfg", 1),
            Failure::WrongType {
                expected: Kind::Stock,
                actual: Kind::Bytes,
            },
        ),
    ];
    for (guard, failure) in cases {
        let k = guard.key().clone();
        let d = guarded(guard).with_guard(Guard::exists("cfg"));
        assert_eq!(
            reason(sm.apply_decision(&d)),
            Reason::GuardFailed {
                guard: 0,
                key: k,
                failure
            }
        );
        assert_eq!(sm, before, "a failed guard changes nothing");
    }
    // Guards read the state before the ops: `version(cfg) == 1` holds even
    // though the first op bumps it.
    let d = guarded(Guard::version("cfg", 1))
        .with_guard(Guard::version("absent", 0))
        .with_guard(Guard::stock_at_least("s", 5));
    assert!(sm.apply_decision(&d).is_applied());
    assert_eq!(sm.version("cfg"), 2);
    assert_eq!(sm.stock("s"), Some(4));
}

// ---------------------------------------------------------------------------
// §4 cas(key, expected_version, value), versions.

#[test]
fn cas_and_versions() {
    let mut sm = StateMachine::new();
    // Version 0 means absent: create-if-absent.
    assert_eq!(
        results(apply(&mut sm, vec![Op::cas("k", 0, b"a".to_vec())], 0)),
        vec![OpResult::Cas { version: 1 }]
    );
    assert_eq!(
        reason(apply(&mut sm, vec![Op::cas("k", 0, b"b".to_vec())], 0)),
        op_failed(
            0,
            "k",
            Failure::VersionMismatch {
                expected: 0,
                actual: 1
            }
        )
    );
    assert_eq!(
        results(apply(&mut sm, vec![Op::cas("k", 1, b"b".to_vec())], 0)),
        vec![OpResult::Cas { version: 2 }]
    );
    assert_eq!(
        results(apply(&mut sm, vec![Op::delete("k")], 0)),
        vec![OpResult::Delete { existed: true }]
    );
    assert_eq!(
        results(apply(&mut sm, vec![Op::delete("k")], 0)),
        vec![OpResult::Delete { existed: false }]
    );
    assert_eq!(sm.version("k"), 0);
    // No ABA: a cas prepared against version 2 fails after delete + create,
    // and the re-created key continues from the old version.
    assert_eq!(
        reason(apply(&mut sm, vec![Op::cas("k", 2, b"c".to_vec())], 0)),
        op_failed(
            0,
            "k",
            Failure::VersionMismatch {
                expected: 2,
                actual: 0
            }
        )
    );
    assert_eq!(
        results(apply(&mut sm, vec![Op::put("k", b"c".to_vec())], 0)),
        vec![OpResult::Put { version: 4 }]
    );
    assert_eq!(
        results(apply(&mut sm, vec![Op::get("k"), Op::get("missing")], 0)),
        vec![
            OpResult::Get {
                version: 4,
                value: Some(Value::Bytes(b"c".to_vec()))
            },
            OpResult::Get {
                version: 0,
                value: None
            },
        ]
    );
}

// ---------------------------------------------------------------------------
// §4 client sessions: (client_id, seq) makes retries exactly-once; a retry
// returns the recorded result (epaxos.md §3.9).

#[test]
fn command_declares_conflict_keys_and_session_key() {
    let d = Decision::new(vec![Op::get("a"), Op::reserve("b", 1)], 5);
    let cmd = command(42, 7, &d);
    assert_eq!(
        cmd.keys,
        vec![
            (key("a"), Access::Read),
            (key("b"), Access::Write),
            (session_key(42), Access::Write),
        ]
    );
    assert_eq!((cmd.client, cmd.request), (42, 7));
    assert_eq!(Decision::decode(&cmd.body), Ok(d));
    // Commands of one client always conflict, of different clients only
    // through their keys.
    let other = command(42, 8, &Decision::new(vec![Op::get("z")], 0));
    assert!(synod_types::commands_conflict(&cmd, &other));
    let stranger = command(43, 1, &Decision::new(vec![Op::get("z")], 0));
    assert!(!synod_types::commands_conflict(&other, &stranger));
}

#[test]
fn retries_return_the_recorded_outcome_and_apply_once() {
    let mut sm = StateMachine::new();
    let setup = command(1, 1, &Decision::new(vec![Op::set_stock("sku", 5)], 0));
    assert!(sm.apply(&setup).is_applied());
    let reserve = command(2, 10, &Decision::new(vec![Op::reserve("sku", 2)], 0));
    let first = sm.apply(&reserve);
    assert_eq!(
        first,
        Outcome::Applied {
            results: vec![OpResult::Reserve {
                version: 2,
                remaining: 3
            }]
        }
    );
    // Retries (even several) return the same result and reserve nothing more.
    for _ in 0..3 {
        assert_eq!(sm.apply(&reserve), first);
    }
    assert_eq!(sm.stock("sku"), Some(3));
    assert_eq!(sm.session(2), Some((10, &first)));
    // A rejected outcome is recorded and replayed too.
    let too_much = command(2, 11, &Decision::new(vec![Op::reserve("sku", 9)], 0));
    let rejected = sm.apply(&too_much);
    assert!(!rejected.is_applied());
    results(sm.apply(&command(
        1,
        2,
        &Decision::new(vec![Op::set_stock("sku", 100)], 0),
    )));
    assert_eq!(sm.apply(&too_much), rejected, "retry replays the rejection");
    assert_eq!(sm.stock("sku"), Some(100));
    // An older request is stale: rejected, not applied, not recorded.
    let digest = sm.digest();
    assert_eq!(
        reason(sm.apply(&reserve)),
        Reason::StaleRequest { last_applied: 11 }
    );
    assert_eq!(sm.digest(), digest);
    // The next request applies normally.
    assert!(sm
        .apply(&command(
            2,
            12,
            &Decision::new(vec![Op::reserve("sku", 1)], 0)
        ))
        .is_applied());
    assert_eq!(sm.stock("sku"), Some(99));
}

#[test]
fn commands_must_declare_session_and_decision_keys() {
    let mut sm = StateMachine::new();
    let d = Decision::new(vec![Op::put("a", b"1".to_vec())], 0);
    // Without the session key: refused, no session state read or written.
    let mut no_session = command(3, 1, &d);
    no_session.keys.retain(|(k, _)| *k != session_key(3));
    assert_eq!(reason(sm.apply(&no_session)), Reason::MissingSessionKey);
    assert_eq!(sm, StateMachine::new());
    // A write declared as a read is not ordered against other writers.
    let mut read_only = command(3, 1, &d);
    read_only.keys[0].1 = Access::Read;
    assert_eq!(
        reason(sm.apply(&read_only)),
        Reason::UndeclaredKey {
            key: key("a"),
            access: Access::Write
        }
    );
    assert_eq!(sm.value("a"), None);
    // Undecodable bodies are rejected and recorded.
    let garbage = Command {
        keys: vec![(session_key(3), Access::Write)],
        body: Arc::from(&[0xffu8, 1, 2][..]),
        client: 3,
        request: 2,
    };
    let outcome = sm.apply(&garbage);
    assert_eq!(
        reason(outcome.clone()),
        Reason::Undecodable(DecodeError::UnsupportedVersion { found: 0xff })
    );
    assert_eq!(sm.session(3), Some((2, &outcome)));
    // Invalid decisions likewise.
    let invalid = command(3, 3, &Decision::new(vec![], 0));
    assert_eq!(
        reason(sm.apply(&invalid)),
        Reason::Invalid(ValidationError::NoOps)
    );
    assert_eq!(sm.iter().count(), 0, "no key was written");
}

#[test]
fn replicas_agree_whatever_the_order_of_non_conflicting_commands() {
    // EPaxos* only orders conflicting commands (architecture.md §5); the
    // state machine must reach the same digest for every interleaving that
    // keeps each key's (and each client's) order.
    let mut rng = Rng::new(11);
    for _ in 0..30 {
        // Three clients, each on its own keys (but with claims and times).
        let mut per_client: Vec<Vec<Command>> = Vec::new();
        for client in 0..3u64 {
            let mut cmds = Vec::new();
            for request in 1..=20 {
                let k = format!("c{client}/k{}", rng.below(3));
                let op = match rng.below(5) {
                    0 => Op::put(k.as_str(), rng.bytes(3)),
                    1 => Op::claim(
                        k.as_str(),
                        format!("agent{}", rng.below(2)),
                        1 + rng.below(50),
                    ),
                    2 => Op::set_stock(k.as_str(), rng.below(5)),
                    3 => Op::reserve(k.as_str(), 1 + rng.below(2)),
                    _ => Op::delete(k.as_str()),
                };
                let d = Decision::new(vec![op], rng.below(1_000));
                cmds.push(command(client, request, &d));
                if rng.below(4) == 0 {
                    cmds.push(command(client, request, &d)); // a retry
                }
            }
            per_client.push(cmds);
        }
        let run = |rng: &mut Rng| {
            let mut sm = StateMachine::new();
            let mut next = [0usize; 3];
            let mut outcomes: Vec<Vec<Outcome>> = vec![Vec::new(); 3];
            while next.iter().zip(&per_client).any(|(n, c)| *n < c.len()) {
                let c = rng.below(3) as usize;
                if next[c] < per_client[c].len() {
                    outcomes[c].push(sm.apply(&per_client[c][next[c]]));
                    next[c] += 1;
                }
            }
            (sm.digest(), outcomes, sm)
        };
        let (d1, o1, sm1) = run(&mut rng);
        let (d2, o2, sm2) = run(&mut rng);
        assert_eq!(o1, o2, "same outcomes for every command");
        assert_eq!(sm1, sm2);
        assert_eq!(d1, d2);
    }
}

// ---------------------------------------------------------------------------
// §4 snapshot-able; quality-bars.md R5 (corruption always detected).

fn busy_state() -> StateMachine {
    let mut sm = StateMachine::new();
    let d = Decision::new(
        vec![
            Op::put("a", b"hello".to_vec()),
            Op::set_stock("s", 9),
            Op::claim("t", "agent", 100),
            Op::put("gone", b"x".to_vec()),
        ],
        10,
    );
    sm.apply(&command(1, 1, &d));
    sm.apply(&command(1, 2, &Decision::new(vec![Op::delete("gone")], 11)));
    sm.apply(&command(
        2,
        1,
        &Decision::new(vec![Op::reserve("s", 4)], 12),
    ));
    sm
}

#[test]
fn snapshot_round_trip_preserves_digest_and_behaviour() {
    let mut sm = busy_state();
    let bytes = sm.snapshot();
    let mut restored = StateMachine::restore(&bytes).expect("restore");
    assert_eq!(restored, sm);
    assert_eq!(restored.digest(), sm.digest());
    // Same behaviour afterwards, sessions included.
    let retry = command(2, 1, &Decision::new(vec![Op::reserve("s", 4)], 12));
    assert_eq!(restored.apply(&retry), sm.apply(&retry));
    let next = command(
        2,
        2,
        &Decision::new(vec![Op::put("gone", b"y".to_vec())], 13),
    );
    assert_eq!(restored.apply(&next), sm.apply(&next));
    assert_eq!(restored.digest(), sm.digest());
    assert_eq!(
        sm.version("gone"),
        3,
        "tombstone version survives snapshots"
    );
    // The empty state round-trips too.
    let empty = StateMachine::new();
    assert_eq!(StateMachine::restore(&empty.snapshot()), Ok(empty));
}

#[test]
fn digest_tells_states_apart() {
    let sm = busy_state();
    let mut other = sm.clone();
    assert_eq!(sm.digest(), other.digest());
    other.apply_decision(&Decision::new(vec![Op::get("a")], 0));
    assert_eq!(sm.digest(), other.digest(), "a read changes nothing");
    other.apply_decision(&Decision::new(vec![Op::delete("never")], 0));
    assert_eq!(
        sm.digest(),
        other.digest(),
        "deleting an absent key changes nothing"
    );
    other.apply_decision(&Decision::new(vec![Op::release("s", 1)], 0));
    assert_ne!(sm.digest(), other.digest());
    // Sessions are part of the state.
    let mut with_session = sm.clone();
    with_session.apply(&command(9, 1, &Decision::new(vec![], 0)));
    assert_ne!(sm.digest(), with_session.digest());
}

#[test]
fn corrupted_snapshots_are_detected() {
    let bytes = busy_state().snapshot();
    // Every single-byte change anywhere is detected.
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[i] ^= flip;
            assert!(
                StateMachine::restore(&bad).is_err(),
                "flip {flip:#x} at byte {i} not detected"
            );
        }
    }
    // Every truncation and extension is detected.
    for len in 0..bytes.len() {
        assert!(
            StateMachine::restore(&bytes[..len]).is_err(),
            "truncated to {len}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(StateMachine::restore(&longer).is_err());
    // Random multi-byte damage and random garbage.
    let mut rng = Rng::new(3);
    for _ in 0..2_000 {
        let mut bad = bytes.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(bad.len() as u64) as usize;
            bad[i] = rng.next() as u8;
        }
        if bad != bytes {
            assert!(StateMachine::restore(&bad).is_err());
        }
        let len = rng.below(200) as usize;
        assert!(StateMachine::restore(&rng.bytes(len)).is_err());
    }
    assert_eq!(
        StateMachine::restore(b"nope"),
        Err(SnapshotError::Truncated { len: 4 })
    );
    let mut bad_magic = bytes.clone();
    bad_magic[0] = b'X';
    assert_eq!(
        StateMachine::restore(&bad_magic),
        Err(SnapshotError::BadMagic)
    );
}

// ---------------------------------------------------------------------------
// quality-bars.md R9: decoders never panic; bad input gets a typed error.

fn random_decision(rng: &mut Rng) -> Decision {
    const KEYS: [&str; 4] = ["a", "b", "inventory/sku-42", "truck/17"];
    let mut k = Rng::new(rng.next());
    let mut k = move || KEYS[k.below(4) as usize];
    let mut ops = Vec::new();
    let mut guards = Vec::new();
    for _ in 0..1 + rng.below(5) {
        ops.push(match rng.below(9) {
            0 => {
                let len = rng.below(10) as usize;
                Op::put(k(), rng.bytes(len))
            }
            1 => Op::get(k()),
            2 => Op::delete(k()),
            3 => Op::cas(k(), rng.below(4), rng.bytes(3)),
            4 => Op::reserve(k(), rng.next()),
            5 => Op::release(k(), rng.next()),
            6 => Op::set_stock(k(), rng.next()),
            7 => Op::claim(k(), "agent-\u{1f69a}", rng.next()),
            _ => Op::release_claim(k(), "agent"),
        });
    }
    for _ in 0..rng.below(3) {
        guards.push(match rng.below(4) {
            0 => Guard::version(k(), rng.next()),
            1 => Guard::exists(k()),
            2 => Guard::stock_at_least(k(), rng.next()),
            _ => Guard::claimed_by(k(), "agent"),
        });
    }
    Decision {
        ops,
        guards,
        issued_at_ms: rng.next(),
    }
}

#[test]
fn decode_round_trips_and_never_panics() {
    let mut rng = Rng::new(99);
    for _ in 0..2_000 {
        let d = random_decision(&mut rng);
        let bytes = d.encode();
        assert_eq!(Decision::decode(&bytes), Ok(d.clone()));
        // Damage the encoding: flips, truncation, trailing bytes.
        let mut bad = bytes.clone();
        let i = rng.below(bad.len() as u64) as usize;
        bad[i] ^= 1 << rng.below(8);
        let _ = Decision::decode(&bad);
        let cut = rng.below(bytes.len() as u64) as usize;
        assert!(
            Decision::decode(&bytes[..cut]).is_err(),
            "truncated at {cut}"
        );
        let mut longer = bytes.clone();
        longer.push(7);
        assert_eq!(
            Decision::decode(&longer),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
        // Random garbage, with and without a valid version byte.
        let len = rng.below(64) as usize;
        let mut junk = rng.bytes(len);
        let _ = Decision::decode(&junk);
        if !junk.is_empty() {
            junk[0] = synod_decision::DECISION_FORMAT_VERSION;
            let _ = Decision::decode(&junk);
        }
    }
    assert_eq!(Decision::decode(&[]), Err(DecodeError::Empty));
    assert_eq!(
        Decision::decode(&[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        Err(DecodeError::Malformed),
        "a huge declared length is refused, not allocated"
    );
    let huge = vec![1u8; MAX_ENCODED_DECISION_BYTES + 1];
    assert_eq!(
        Decision::decode(&huge),
        Err(DecodeError::TooLarge {
            len: MAX_ENCODED_DECISION_BYTES + 1,
            max: MAX_ENCODED_DECISION_BYTES
        })
    );
}

#[test]
fn the_largest_valid_decision_fits_the_decode_limit() {
    let big_key = "k".repeat(MAX_KEY_BYTES);
    let big_agent = "a".repeat(MAX_AGENT_BYTES);
    let per_value = MAX_DECISION_VALUE_BYTES / MAX_OPS_PER_DECISION;
    let mut ops: Vec<Op> = (0..MAX_OPS_PER_DECISION)
        .map(|_| Op::cas(big_key.as_str(), u64::MAX, vec![0xab; per_value]))
        .collect();
    ops[0] = Op::claim(big_key.as_str(), big_agent.as_str(), u64::MAX);
    let d = Decision {
        ops,
        guards: (0..MAX_GUARDS_PER_DECISION)
            .map(|_| Guard::claimed_by(big_key.as_str(), big_agent.as_str()))
            .collect(),
        issued_at_ms: u64::MAX,
    };
    assert_eq!(d.validate(), Ok(()));
    let bytes = d.encode();
    assert!(
        bytes.len() <= MAX_ENCODED_DECISION_BYTES,
        "{} bytes",
        bytes.len()
    );
    assert_eq!(Decision::decode(&bytes), Ok(d));
}

#[test]
fn validation_errors_are_typed_and_change_nothing() {
    let one = |op: Op| Decision::new(vec![op], 0);
    let long_key = "k".repeat(MAX_KEY_BYTES + 1);
    let cases: Vec<(Decision, ValidationError)> = vec![
        (Decision::new(vec![], 0), ValidationError::NoOps),
        (
            Decision::new(vec![Op::get("a"); MAX_OPS_PER_DECISION + 1], 0),
            ValidationError::TooManyOps {
                count: MAX_OPS_PER_DECISION + 1,
                max: MAX_OPS_PER_DECISION,
            },
        ),
        (
            Decision {
                ops: vec![Op::get("a")],
                guards: vec![Guard::exists("a"); MAX_GUARDS_PER_DECISION + 1],
                issued_at_ms: 0,
            },
            ValidationError::TooManyGuards {
                count: MAX_GUARDS_PER_DECISION + 1,
                max: MAX_GUARDS_PER_DECISION,
            },
        ),
        (
            one(Op::get("")),
            ValidationError::EmptyKey {
                at: Location::Op(0),
            },
        ),
        (
            one(Op::get(long_key.as_str())),
            ValidationError::KeyTooLong {
                at: Location::Op(0),
                len: MAX_KEY_BYTES + 1,
                max: MAX_KEY_BYTES,
            },
        ),
        (
            one(Op::get("a")).with_guard(Guard::exists("")),
            ValidationError::EmptyKey {
                at: Location::Guard(0),
            },
        ),
        (
            one(Op::put(session_key(1), b"forged".to_vec())),
            ValidationError::ReservedKey {
                at: Location::Op(0),
                key: session_key(1),
            },
        ),
        (
            one(Op::put("a", vec![0; MAX_VALUE_BYTES + 1])),
            ValidationError::ValueTooLarge {
                op: 0,
                len: MAX_VALUE_BYTES + 1,
                max: MAX_VALUE_BYTES,
            },
        ),
        (
            Decision::new(vec![Op::put("a", vec![0; MAX_VALUE_BYTES]); 5], 0),
            ValidationError::ValuesTooLarge {
                total: 5 * MAX_VALUE_BYTES,
                max: MAX_DECISION_VALUE_BYTES,
            },
        ),
        (
            one(Op::reserve("a", 0)),
            ValidationError::ZeroQuantity { op: 0 },
        ),
        (
            Decision::new(vec![Op::get("a"), Op::release("a", 0)], 0),
            ValidationError::ZeroQuantity { op: 1 },
        ),
        (
            one(Op::claim("a", "x", 0)),
            ValidationError::ZeroTtl { op: 0 },
        ),
        (
            one(Op::claim("a", "", 5)),
            ValidationError::EmptyAgent {
                at: Location::Op(0),
            },
        ),
        (
            one(Op::release_claim("a", "x".repeat(MAX_AGENT_BYTES + 1))),
            ValidationError::AgentTooLong {
                at: Location::Op(0),
                len: MAX_AGENT_BYTES + 1,
                max: MAX_AGENT_BYTES,
            },
        ),
        (
            one(Op::get("a")).with_guard(Guard::claimed_by("a", "")),
            ValidationError::EmptyAgent {
                at: Location::Guard(0),
            },
        ),
    ];
    let mut sm = busy_state();
    let before = sm.clone();
    for (d, error) in cases {
        assert_eq!(d.validate(), Err(error.clone()));
        assert!(!error.to_string().is_empty());
        assert_eq!(
            sm.apply_decision(&d),
            Outcome::Rejected {
                reason: Reason::Invalid(error)
            }
        );
        assert_eq!(sm, before);
    }
    // Meaningful zeros are fine.
    assert_eq!(one(Op::set_stock("a", 0)).validate(), Ok(()));
    assert_eq!(one(Op::cas("a", 0, vec![])).validate(), Ok(()));
}
