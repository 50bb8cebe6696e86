//! Per-key-group linearizability checker for decision histories
//! (quality-bars.md R6; epaxos.md §3.9 "Real-time order").
//!
//! A history is a list of client operations, each a [`Decision`] with the
//! abstract time it was invoked, the time its result came back and that
//! result ([`Outcome`]). The history is linearizable if there is a total
//! order of the operations that
//!
//! 1. respects real time: if `a` responded before `b` was invoked
//!    (`a.response < b.invoke`, strictly), `a` comes first;
//! 2. explains every result: applying the operations in that order to a
//!    fresh [`StateMachine`] with [`StateMachine::apply_decision`] returns
//!    exactly each operation's recorded outcome (compared in full).
//!
//! Operations whose result the client never learned (`response` or
//! `outcome` is `None`) are *indeterminate*: they may be placed anywhere
//! after their invocation, or left out entirely (they may never have taken
//! effect). If only one of the two fields is present, the op is still
//! indeterminate and the present field is ignored.
//!
//! # How
//!
//! - **P-compositionality.** A decision only reads and writes its own keys
//!   (the state machine has no cross-key state: time is the decision's own
//!   `issued_at_ms`, versions are per key). So the history is linearizable
//!   iff each group of operations connected by shared keys is. Groups are
//!   found with union-find over keys and checked independently.
//! - **Search.** Per group, Wing & Gong's search with Lowe's just-in-time
//!   linearization: from a state (set of linearized ops, model state), the
//!   ops that may go next are the unlinearized ones invoked no later than
//!   the earliest response among unlinearized completed ops. States already
//!   seen, keyed by (linearized-set bitset, [`StateMachine::digest`] of the
//!   model), are not explored again. Placing an indeterminate op where it
//!   does not change the model is skipped (leaving it out is equivalent).
//! - **Budget.** Each group may expand at most `budget_per_group` search
//!   states; beyond that the checker returns [`LinError::GaveUp`]. The
//!   caller must treat that as a failure, never as a pass.
//!
//! # What the caller records
//!
//! The model is session-less ([`StateMachine::apply_decision`]), so record
//! each *logical* request once (all retries of one `(client, request)` are
//! one operation, invoked at the first attempt). Outcomes only the session
//! layer produces (`StaleRequest`, `MissingSessionKey`, `Undecodable`,
//! `UndeclaredKey`) never match the model: record such operations as
//! indeterminate or leave them out. Times are abstract (`u64`), e.g. a
//! simulator's step counter; give responses and invocations distinct times
//! when their order matters, since equal times count as concurrent.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use synod_decision::{Decision, Outcome, StateMachine};
use synod_types::{ClientId, Key};

/// One client operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryOp {
    /// The client that issued it (for diagnostics).
    pub client: ClientId,
    /// When the client invoked it (abstract time).
    pub invoke: u64,
    /// When the client learned its result; `None` if it never did.
    pub response: Option<u64>,
    /// What the client proposed.
    pub decision: Decision,
    /// The result the client received; `None` if it never learned one.
    pub outcome: Option<Outcome>,
}

impl HistoryOp {
    /// True if both the response time and the outcome are known.
    pub fn is_determinate(&self) -> bool {
        self.response.is_some() && self.outcome.is_some()
    }
}

/// Why a history is not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinError {
    /// No linearization of this key group exists.
    NotLinearizable {
        /// The keys of the group, sorted.
        keys: Vec<Key>,
        /// Number of operations in the group.
        ops: usize,
        /// Human-readable explanation: how far the search got and which
        /// operation could not be placed.
        detail: String,
    },
    /// The search of this group exceeded its budget. Not a pass.
    GaveUp {
        /// The keys of the group, sorted.
        keys: Vec<Key>,
        /// Number of operations in the group.
        ops: usize,
        /// Search states expanded before giving up.
        explored: u64,
    },
}

impl fmt::Display for LinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinError::NotLinearizable { keys, ops, detail } => write!(
                f,
                "not linearizable: group of {ops} ops on keys {keys:?}: {detail}"
            ),
            LinError::GaveUp {
                keys,
                ops,
                explored,
            } => write!(
                f,
                "linearizability check gave up (a failure, not a pass): group of {ops} ops on \
                 keys {keys:?} after {explored} states"
            ),
        }
    }
}

impl std::error::Error for LinError {}

/// What a successful check looked at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckStats {
    /// Key groups checked.
    pub groups: usize,
    /// Operations checked (the history's length).
    pub ops: usize,
    /// Search states expanded over all groups.
    pub explored: u64,
    /// Operations in the largest group.
    pub max_group_ops: usize,
    /// Most states expanded for one group.
    pub max_group_explored: u64,
}

/// Checks `history` group by group; see the module docs. Groups are checked
/// in order of their first operation; the first failing group is reported.
pub fn check(history: &[HistoryOp], budget_per_group: u64) -> Result<CheckStats, LinError> {
    let mut stats = CheckStats {
        ops: history.len(),
        ..CheckStats::default()
    };
    for group in partition(history) {
        let ops: Vec<&HistoryOp> = group.members.iter().map(|&i| &history[i]).collect();
        let explored = check_group(&group, &ops, budget_per_group)?;
        stats.groups += 1;
        stats.explored += explored;
        stats.max_group_ops = stats.max_group_ops.max(ops.len());
        stats.max_group_explored = stats.max_group_explored.max(explored);
    }
    Ok(stats)
}

/// Operations connected by shared keys.
struct Group {
    /// Indices into the history, ascending.
    members: Vec<usize>,
    /// Keys of the group, sorted.
    keys: Vec<Key>,
}

/// Union-find over operations, joined through their keys. Deterministic:
/// groups come out ordered by their first operation.
fn partition(history: &[HistoryOp]) -> Vec<Group> {
    let mut parent: Vec<usize> = (0..history.len()).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    let mut first_op_of_key: BTreeMap<Key, usize> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        for (key, _) in op.decision.conflict_keys() {
            let j = *first_op_of_key.entry(key).or_insert(i);
            let (ri, rj) = (find(&mut parent, i), find(&mut parent, j));
            if ri != rj {
                // Union towards the smaller index keeps roots stable.
                parent[ri.max(rj)] = ri.min(rj);
            }
        }
    }
    let mut groups: BTreeMap<usize, Group> = BTreeMap::new();
    for i in 0..history.len() {
        let root = find(&mut parent, i);
        groups
            .entry(root)
            .or_insert_with(|| Group {
                members: Vec::new(),
                keys: Vec::new(),
            })
            .members
            .push(i);
    }
    for (key, i) in first_op_of_key {
        let root = find(&mut parent, i);
        groups
            .get_mut(&root)
            .expect("every root has a group")
            .keys
            .push(key);
    }
    groups.into_values().collect()
}

/// One operation of a group, prepared for the search.
struct Prepared<'a> {
    op: &'a HistoryOp,
    /// Index in the history, for diagnostics.
    history_index: usize,
    /// `Some((response, outcome))` for determinate operations.
    expected: Option<(u64, &'a Outcome)>,
}

/// A search state: which ops are linearized and the model after them.
struct Node {
    linearized: Bitset,
    model: StateMachine,
    determinate_done: usize,
}

/// Returns the number of expanded states.
fn check_group(group: &Group, ops: &[&HistoryOp], budget: u64) -> Result<u64, LinError> {
    let not_linearizable = |detail: String| LinError::NotLinearizable {
        keys: group.keys.clone(),
        ops: ops.len(),
        detail,
    };
    // Ops sorted by invocation: the candidates of a state are a prefix of
    // the unlinearized ones in this order.
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| (ops[i].invoke, i));
    let prepared: Vec<Prepared<'_>> = order
        .iter()
        .map(|&i| {
            let op = ops[i];
            let expected = match (op.response, op.outcome.as_ref()) {
                (Some(r), Some(o)) => Some((r, o)),
                _ => None,
            };
            Prepared {
                op,
                history_index: group.members[i],
                expected,
            }
        })
        .collect();
    for p in &prepared {
        if let Some((response, _)) = p.expected {
            if response < p.op.invoke {
                return Err(not_linearizable(format!(
                    "malformed history: op #{} responded at {response} before its invocation at {}",
                    p.history_index, p.op.invoke
                )));
            }
        }
    }
    // Determinate ops by response time: the first unlinearized one bounds
    // which ops may be linearized next.
    let mut by_response: Vec<usize> = (0..prepared.len())
        .filter(|&i| prepared[i].expected.is_some())
        .collect();
    by_response.sort_by_key(|&i| (prepared[i].expected.map(|(r, _)| r), i));
    let determinate_total = by_response.len();

    let root = Node {
        linearized: Bitset::new(prepared.len()),
        model: StateMachine::new(),
        determinate_done: 0,
    };
    let mut seen: HashSet<(Bitset, u64)> = HashSet::new();
    seen.insert((root.linearized.clone(), root.model.digest()));
    let mut deepest: (usize, Bitset, StateMachine) =
        (0, root.linearized.clone(), root.model.clone());
    let mut stack = vec![root];
    let mut explored: u64 = 0;

    while let Some(node) = stack.pop() {
        if node.determinate_done == determinate_total {
            return Ok(explored);
        }
        if explored >= budget {
            return Err(LinError::GaveUp {
                keys: group.keys.clone(),
                ops: ops.len(),
                explored,
            });
        }
        explored += 1;
        if node.determinate_done > deepest.0 {
            deepest = (
                node.determinate_done,
                node.linearized.clone(),
                node.model.clone(),
            );
        }
        let bound = by_response
            .iter()
            .find(|&&i| !node.linearized.contains(i))
            .and_then(|&i| prepared[i].expected.map(|(r, _)| r))
            .expect("an unfinished node has an unlinearized determinate op");
        let mut children = Vec::new();
        for (i, p) in prepared.iter().enumerate() {
            if p.op.invoke > bound {
                break;
            }
            if node.linearized.contains(i) {
                continue;
            }
            let mut model = node.model.clone();
            let got = model.apply_decision(&p.op.decision);
            match p.expected {
                Some((_, want)) if *want != got => continue,
                // Leaving an indeterminate op out is equivalent to placing it
                // where it changes nothing, so only effective placements count.
                None if model == node.model => continue,
                _ => {}
            }
            let mut linearized = node.linearized.clone();
            linearized.insert(i);
            if seen.insert((linearized.clone(), model.digest())) {
                children.push(Node {
                    linearized,
                    model,
                    determinate_done: node.determinate_done + usize::from(p.expected.is_some()),
                });
            }
        }
        // Depth first, earliest invocation first.
        stack.extend(children.into_iter().rev());
    }
    Err(not_linearizable(explain(
        &prepared,
        &by_response,
        determinate_total,
        &deepest,
    )))
}

/// Describes the deepest state the search reached and the op that blocked it.
fn explain(
    prepared: &[Prepared<'_>],
    by_response: &[usize],
    determinate_total: usize,
    deepest: &(usize, Bitset, StateMachine),
) -> String {
    let (done, linearized, model) = deepest;
    let placed: Vec<usize> = (0..prepared.len())
        .filter(|&i| linearized.contains(i))
        .map(|i| prepared[i].history_index)
        .collect();
    let mut detail = format!(
        "at most {done} of {determinate_total} completed ops linearize; deepest prefix places \
         history ops {placed:?}"
    );
    if let Some(&i) = by_response.iter().find(|&&i| !linearized.contains(i)) {
        let p = &prepared[i];
        let got = model.clone().apply_decision(&p.op.decision);
        let want = p.expected.map(|(_, o)| o);
        detail.push_str(&format!(
            "; then op #{} (client {}, invoked {}, responded {:?}) cannot be placed: \
             decision {:?}; recorded {:?}; the model at that point gives {:?}",
            p.history_index, p.op.client, p.op.invoke, p.op.response, p.op.decision, want, got
        ));
    }
    detail
}

/// A fixed-size set of op positions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Bitset(Box<[u64]>);

impl Bitset {
    fn new(len: usize) -> Bitset {
        Bitset(vec![0; len.div_ceil(64)].into_boxed_slice())
    }
    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_decision::{Op, OpResult, Value};

    const BUDGET: u64 = 100_000;

    /// A determinate op.
    fn done(
        client: ClientId,
        invoke: u64,
        response: u64,
        ops: Vec<Op>,
        outcome: Outcome,
    ) -> HistoryOp {
        HistoryOp {
            client,
            invoke,
            response: Some(response),
            decision: Decision::new(ops, 0),
            outcome: Some(outcome),
        }
    }

    /// An op whose result the client never learned.
    fn lost(client: ClientId, invoke: u64, ops: Vec<Op>) -> HistoryOp {
        HistoryOp {
            client,
            invoke,
            response: None,
            decision: Decision::new(ops, 0),
            outcome: None,
        }
    }

    fn applied(results: Vec<OpResult>) -> Outcome {
        Outcome::Applied { results }
    }

    fn put_ok(version: u64) -> Outcome {
        applied(vec![OpResult::Put { version }])
    }

    fn read(version: u64, value: Option<&[u8]>) -> Outcome {
        applied(vec![OpResult::Get {
            version,
            value: value.map(|v| Value::Bytes(v.to_vec())),
        }])
    }

    fn assert_not_linearizable(history: &[HistoryOp]) -> String {
        match check(history, BUDGET) {
            Err(LinError::NotLinearizable { detail, .. }) => detail,
            other => panic!("expected NotLinearizable, got {other:?}"),
        }
    }

    #[test]
    fn concurrent_writes_and_reads_linearize() {
        // Two overlapping writes; readers overlapping them may see either
        // order, but both readers must agree with one order.
        let h = vec![
            done(1, 0, 10, vec![Op::put("x", b"a".to_vec())], put_ok(2)),
            done(2, 1, 9, vec![Op::put("x", b"b".to_vec())], put_ok(1)),
            done(3, 2, 12, vec![Op::get("x")], read(1, Some(b"b"))),
            done(4, 11, 13, vec![Op::get("x")], read(2, Some(b"a"))),
        ];
        let stats = check(&h, BUDGET).expect("linearizable");
        assert_eq!(stats.groups, 1);
        assert_eq!(stats.ops, 4);
        assert!(stats.explored >= 4);
    }

    #[test]
    fn stale_read_fails() {
        // epaxos.md §3.9 real-time order: the second put completed before
        // the get was invoked, so the get must not return the first value.
        let h = vec![
            done(1, 0, 1, vec![Op::put("x", b"1".to_vec())], put_ok(1)),
            done(1, 2, 3, vec![Op::put("x", b"2".to_vec())], put_ok(2)),
            done(2, 4, 5, vec![Op::get("x")], read(1, Some(b"1"))),
        ];
        let detail = assert_not_linearizable(&h);
        assert!(detail.contains("op #2"), "{detail}");
        // The same read overlapping the second put is fine.
        let mut ok = h.clone();
        ok[2].invoke = 2;
        check(&ok, BUDGET).expect("read concurrent with the write may see the old value");
    }

    #[test]
    fn oversell_fails() {
        // architecture.md §4: reserve never oversells. Stock 1, two
        // concurrent reserves of 1 both reported applied.
        let set = done(
            1,
            0,
            1,
            vec![Op::set_stock("sku", 1)],
            applied(vec![OpResult::SetStock {
                version: 1,
                stock: 1,
            }]),
        );
        let reserve = |client, invoke, response, version| {
            done(
                client,
                invoke,
                response,
                vec![Op::reserve("sku", 1)],
                applied(vec![OpResult::Reserve {
                    version,
                    remaining: 0,
                }]),
            )
        };
        let h = vec![set.clone(), reserve(2, 2, 6, 2), reserve(3, 3, 7, 3)];
        assert_not_linearizable(&h);
        // One of them rejected for insufficient stock is linearizable.
        let mut ok = h.clone();
        ok[2].outcome = Some(Outcome::Rejected {
            reason: synod_decision::Reason::OpFailed {
                op: 0,
                key: Key::from("sku"),
                failure: synod_decision::Failure::InsufficientStock {
                    requested: 1,
                    available: 0,
                },
            },
        });
        check(&ok, BUDGET).expect("one reserve applied, one rejected");
    }

    #[test]
    fn indeterminate_write_that_must_have_happened_passes() {
        let h = vec![
            lost(1, 0, vec![Op::put("x", b"v".to_vec())]),
            done(2, 5, 6, vec![Op::get("x")], read(1, Some(b"v"))),
        ];
        check(&h, BUDGET).expect("the lost put took effect before the read");
        // It may also never have happened.
        let h2 = vec![
            h[0].clone(),
            done(2, 5, 6, vec![Op::get("x")], read(0, None)),
        ];
        check(&h2, BUDGET).expect("the lost put may not have taken effect");
        // But without any write, the same read is impossible.
        assert_not_linearizable(&h[1..]);
        // And it cannot take effect before it was invoked.
        let mut late = h.clone();
        late[0].invoke = 7;
        assert_not_linearizable(&late);
    }

    #[test]
    fn claims_are_exclusive_in_histories() {
        // architecture.md §4: no double assignment. Two agents both told they
        // hold truck/17 at overlapping times, with a long ttl: impossible.
        let claim = |client, agent: &str, version| HistoryOp {
            client,
            invoke: client,
            response: Some(10 + client),
            decision: Decision::new(vec![Op::claim("truck/17", agent, 1_000)], 100),
            outcome: Some(applied(vec![OpResult::Claim {
                version,
                holder: agent.to_string(),
                expires_at_ms: 1_100,
            }])),
        };
        assert_not_linearizable(&[claim(1, "a", 1), claim(2, "b", 2)]);
    }

    #[test]
    fn groups_are_checked_independently_and_failures_name_their_keys() {
        let h = vec![
            done(1, 0, 1, vec![Op::put("a", b"1".to_vec())], put_ok(1)),
            done(2, 0, 1, vec![Op::put("b", b"1".to_vec())], put_ok(1)),
            done(3, 2, 3, vec![Op::get("a")], read(1, Some(b"1"))),
            // Wrong: b was written with version 1 before this read began.
            done(4, 2, 3, vec![Op::get("b")], read(0, None)),
        ];
        match check(&h, BUDGET) {
            Err(LinError::NotLinearizable { keys, ops, .. }) => {
                assert_eq!(keys, vec![Key::from("b")]);
                assert_eq!(ops, 2);
            }
            other => panic!("expected NotLinearizable on b, got {other:?}"),
        }
        let stats = check(&h[..3], BUDGET).expect("a and b alone are fine");
        assert_eq!(stats.groups, 2);
        // A multi-key decision joins the groups.
        let mut joined = h[..3].to_vec();
        joined.push(done(
            5,
            4,
            5,
            vec![Op::get("a"), Op::get("b")],
            applied(vec![
                OpResult::Get {
                    version: 1,
                    value: Some(Value::Bytes(b"1".to_vec())),
                },
                OpResult::Get {
                    version: 1,
                    value: Some(Value::Bytes(b"1".to_vec())),
                },
            ]),
        ));
        assert_eq!(check(&joined, BUDGET).expect("fine").groups, 1);
    }

    /// Many concurrent writes then a read of the value written first in
    /// real time: the search must try many orders.
    fn wide_history(writers: u64) -> Vec<HistoryOp> {
        let mut h: Vec<HistoryOp> = (0..writers)
            .map(|c| {
                done(
                    c,
                    c,
                    100 + c,
                    vec![Op::put("x", vec![c as u8])],
                    put_ok(writers - c),
                )
            })
            .collect();
        h.push(done(
            99,
            200,
            201,
            vec![Op::get("x")],
            read(writers, Some(&[0])),
        ));
        h
    }

    #[test]
    fn budget_exhaustion_gives_up_never_passes() {
        let h = wide_history(8);
        let stats = check(&h, BUDGET).expect("linearizable in reverse order");
        assert!(stats.explored > 1);
        match check(&h, 1) {
            Err(LinError::GaveUp { explored, ops, .. }) => {
                assert_eq!(explored, 1);
                assert_eq!(ops, 9);
            }
            other => panic!("expected GaveUp, got {other:?}"),
        }
        assert!(matches!(check(&h, 0), Err(LinError::GaveUp { .. })));
    }

    #[test]
    fn malformed_history_is_rejected() {
        let h = vec![done(1, 5, 4, vec![Op::get("x")], read(0, None))];
        let detail = assert_not_linearizable(&h);
        assert!(detail.contains("malformed"), "{detail}");
    }

    /// Runs random decisions sequentially against a real state machine at
    /// distinct linearization points, wraps each in a random interval around
    /// its point, and drops some responses.
    fn generated_history(seed: u64, len: u64) -> Vec<HistoryOp> {
        let mut rng = synod_types::SplitMix64::new(seed);
        let mut sm = StateMachine::new();
        let keys = ["k0", "k1", "k2", "s0"];
        let mut h = Vec::new();
        for step in 0..len {
            let key = keys[rng.below(3) as usize];
            let op = match rng.below(7) {
                0 | 1 => Op::put(key, vec![rng.below(4) as u8]),
                2 | 3 => Op::get(key),
                4 => Op::cas(key, rng.below(3), vec![9]),
                5 => Op::reserve("s0", 1 + rng.below(2)),
                _ => Op::set_stock("s0", rng.below(3)),
            };
            let d = Decision::new(vec![op], step);
            let outcome = sm.apply_decision(&d);
            let point = 10 * step + 5;
            let invoke = point - rng.below(20).min(point);
            let response = point + rng.below(20);
            let lost = rng.below(10) == 0;
            h.push(HistoryOp {
                client: rng.below(5),
                invoke,
                response: (!lost).then_some(response),
                decision: d,
                outcome: (!lost).then_some(outcome),
            });
        }
        h
    }

    #[test]
    fn generated_histories_pass_and_corrupted_ones_fail() {
        for seed in 0..40 {
            let h = generated_history(seed, 60);
            check(&h, 1_000_000)
                .unwrap_or_else(|e| panic!("seed {seed}: a real execution must pass: {e}"));
            // Corrupt one completed read to a value nobody wrote.
            let mut bad = h.clone();
            let victim = bad
                .iter_mut()
                .find(|op| op.is_determinate() && matches!(op.decision.ops[0], Op::Get { .. }));
            let Some(victim) = victim else { continue };
            victim.outcome = Some(read(1, Some(b"never written")));
            assert!(
                matches!(
                    check(&bad, 1_000_000),
                    Err(LinError::NotLinearizable { .. })
                ),
                "seed {seed}: corrupted history must fail"
            );
        }
    }
}
