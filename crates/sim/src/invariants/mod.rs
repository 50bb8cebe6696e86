//! Invariant checkers, one per file, each citing its source.
//!
//! The simulator calls the hooks of [`Checker`] at every point where the
//! simulated world changes, and each hook checks only what changed
//! (incremental checking keeps 500 seeds × 10k steps within `cargo test`
//! time):
//!
//! | hook | when | what it sees |
//! |---|---|---|
//! | [`Checker::on_output`] | a replica returned an `Output` | the writes (against the record they replace), the messages as created, the executions as produced |
//! | [`Checker::on_durable`] | an fsync made a write durable | the new durable record |
//! | [`Checker::on_send`] | a message was released into the network | the message |
//! | [`Checker::on_deliver`] | a message reaches a live replica | the message and the receiver's state before the step |
//! | [`Checker::on_apply`] | an execution was applied to a state machine | the commands, their outcomes |
//! | [`Checker::on_crash`] / [`Checker::on_restart`] | a crash / a restart | the discarded outputs / the rebuilt replica |
//! | [`Checker::final_checks`] | quiescence after the heal | everything (O(state)) |
//!
//! **Ghost state** ([`Ghost`], epaxos.md §6): `orig(id)` from the origin's
//! submit write; per `(id, ballot)` who durably accepted which value;
//! `chosen(id)`; the first durable commit of every id (surviving crashes);
//! per key the committed non-Nop ids; submit steps. Votes, commits and
//! choices are taken from *durable* records: a write that a crash can
//! discard before anything depended on it is not a vote (epaxos.md §2.4).

use crate::fxhash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use synod_epaxos::{Envelope, InstanceRecord, Message, Output, Write};
use synod_types::{Access, Ballot, Batch, CmdId, Command, Deps, Key, NodeId, Payload};

use crate::clients::Clients;
use crate::node::{PendingOutput, SimNode};

pub mod agreement;
pub mod ballot_monotonicity;
pub mod chosen_stability;
pub mod closed_set;
pub mod commit_soundness;
pub mod committed_immutability;
pub mod config_sanity;
pub mod consistent_order;
pub mod durability;
pub mod epoch_barrier;
pub mod exactly_once;
pub mod exclusive_claims;
pub mod execution_well_formed;
pub mod fast_path_discipline;
pub mod id_uniqueness;
pub mod linearizable;
pub mod no_execution_before_commit;
pub mod no_oversell;
pub mod nop_shape;
pub mod one_proposal_per_ballot;
pub mod payload_integrity;
pub mod phase_monotonicity;
pub mod pre_accept_discipline;
pub mod progress;
pub mod promise_discipline;
pub mod real_time_order;
pub mod single_chosen_value;
pub mod state_machine_equality;
pub mod visibility;

/// The name under which a panic during a step is reported: an assertion of
/// the core (TigerBeetle-style, style.md §4) or of the harness fired.
pub const PANIC: &str = "Panic";

/// A failed check: which invariant, and what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fail {
    /// Invariant name, e.g. "I1 Agreement".
    pub invariant: &'static str,
    /// Human-readable description.
    pub message: String,
}

/// The result of one check.
pub type Check = Result<(), Fail>;

/// Fails `invariant` with the message built by `msg` unless `cond` holds.
pub fn ensure(cond: bool, invariant: &'static str, msg: impl FnOnce() -> String) -> Check {
    if cond {
        Ok(())
    } else {
        Err(Fail {
            invariant,
            message: msg(),
        })
    }
}

/// What the origin proposed: `orig(id) = (c, D0)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orig {
    /// The batch `c`.
    pub batch: Batch,
    /// The origin's initial deps `D0`.
    pub dep: Deps,
}

/// The first durable commit of an id anywhere.
#[derive(Clone, Debug)]
pub struct CommitInfo {
    /// Committed payload.
    pub payload: Payload,
    /// Committed deps.
    pub dep: Deps,
    /// Step of the first durable commit.
    pub step: u64,
}

/// A chosen value (epaxos.md §6: n−f durable votes at one ballot, or the
/// origin's fast-path commit at the initial ballot).
#[derive(Clone, Debug)]
pub struct Chosen {
    /// Payload.
    pub payload: Payload,
    /// Deps.
    pub dep: Deps,
    /// Lowest ballot at which it was seen chosen.
    pub ballot: Ballot,
}

/// What the replica was asked to do in the step that produced an output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// `propose`.
    Propose,
    /// `flush`.
    Flush,
    /// `tick`.
    Tick,
    /// `recover(id)`.
    Recover(CmdId),
    /// `begin_epoch` or `close_epoch` from the config-service oracle.
    Reconfig,
    /// `step(from, msg)`.
    Step {
        /// sender
        from: NodeId,
        /// `msg.kind()`
        kind: &'static str,
        /// `msg.id()`
        id: Option<CmdId>,
    },
}

/// Ghost state shared by the checkers (epaxos.md §6 "Ghost state").
#[derive(Debug, Default)]
pub struct Ghost {
    /// Replicas.
    pub n: usize,
    /// Crash tolerance.
    pub f: usize,
    /// Fast-path tolerance.
    pub e: usize,
    /// `orig(id)`, set when the origin's submit write becomes durable or
    /// anything of its output is released, whichever is first.
    pub orig: HashMap<CmdId, Orig>,
    /// Submissions not yet durable or released, per origin (lost on crash).
    pub pending_orig: Vec<BTreeMap<CmdId, Orig>>,
    /// Step at which the origin created each id.
    pub created_step: HashMap<CmdId, u64>,
    /// First durable commit of each id.
    pub committed: HashMap<CmdId, CommitInfo>,
    /// Per conflict key, the committed non-Nop ids touching it with their
    /// access to it, in first-commit order.
    pub committed_by_key: HashMap<Key, Vec<(CmdId, Access)>>,
    /// `chosen(id)`.
    pub chosen: HashMap<CmdId, Chosen>,
    /// Per `(id, ballot)`: each voter and the fingerprint of its value.
    pub votes: HashMap<(CmdId, Ballot), Vec<(NodeId, u64)>>,
    /// Per node: fast-path commits not yet durable.
    pub fast_pending: Vec<HashSet<CmdId>>,
    /// Per id: senders of `PreAcceptOk(id, D0)` delivered to the origin's
    /// current incarnation.
    pub pre_accept_ok: HashMap<CmdId, BTreeSet<NodeId>>,
    /// Every configuration published by the config service (with
    /// `--reconfig`; otherwise only epoch 0 is known, through n, f, e).
    pub configs: BTreeMap<u64, synod_types::QuorumConfig>,
    /// Closed sets K published, per epoch.
    pub closed: BTreeMap<u64, BTreeSet<CmdId>>,
    /// Per epoch, ids first committed non-Nop (durably, anywhere).
    pub committed_ops: BTreeMap<u64, usize>,
}

impl Ghost {
    /// Slow quorum `n − f` of `epoch`.
    pub fn slow_quorum(&self, epoch: u64) -> usize {
        self.configs
            .get(&epoch)
            .map_or(self.n - self.f, |c| c.slow_quorum())
    }
    /// Fast quorum `n − e` of `epoch`.
    pub fn fast_quorum(&self, epoch: u64) -> usize {
        self.configs
            .get(&epoch)
            .map_or(self.n - self.e, |c| c.fast_quorum())
    }
    /// Whether `node` is a member of `epoch` (every node is, without
    /// reconfiguration).
    pub fn is_member(&self, epoch: u64, node: NodeId) -> bool {
        self.configs.get(&epoch).is_none_or(|c| c.contains(node))
    }
}

/// A 64-bit fingerprint of a `(payload, deps)` value (SipHash with fixed
/// keys: deterministic across runs).
pub fn fingerprint(payload: &Payload, dep: &Deps) -> u64 {
    let mut h = DefaultHasher::new();
    payload.hash(&mut h);
    dep.hash(&mut h);
    h.finish()
}

/// The dependencies execution must respect for committed `rec`: its
/// explicit ids and every id its floor covers that conflicts with it (a
/// Nop conflicts with everything), judged from `lookup` (the node's own
/// records). Ids below `settled(epoch, origin)` are left out: the caller
/// knows them committed and processed before anything it checks now.
/// `Err(x)` when the floor covers an id `x` the node has no record of: a
/// floor may only cover ids every member executed, so the node must know
/// each one (epaxos.md §2.5 "lossless").
pub fn effective_deps<'a>(
    rec: &InstanceRecord,
    lookup: impl Fn(&CmdId) -> Option<&'a InstanceRecord>,
    settled: impl Fn(u64, NodeId) -> u64,
) -> Result<Vec<CmdId>, CmdId> {
    let mut out: Vec<CmdId> = rec.dep.explicit().iter().copied().collect();
    let Some(Payload::Op(batch)) = &rec.cmd else {
        return Ok(out);
    };
    for ((epoch, origin), n) in rec.dep.floor().iter() {
        for seq in settled(epoch, origin).min(n)..n {
            let x = CmdId { epoch, seq, origin };
            let Some(xr) = lookup(&x) else {
                return Err(x);
            };
            let conflicts = match &xr.cmd {
                Some(Payload::Nop) => true,
                Some(Payload::Op(b)) => synod_types::batches_conflict(b, batch),
                None => false,
            };
            if conflicts {
                out.push(x);
            }
        }
    }
    Ok(out)
}

/// The keys of a batch with the strongest access per key, sorted.
pub fn keys_of(batch: &[Command]) -> Vec<(Key, Access)> {
    let mut m: BTreeMap<&Key, Access> = BTreeMap::new();
    for c in batch {
        for (k, a) in &c.keys {
            let slot = m.entry(k).or_insert(*a);
            *slot = (*slot).max(*a);
        }
    }
    m.into_iter().map(|(k, a)| (k.clone(), a)).collect()
}

/// Short description of a payload for messages.
pub fn show_payload(p: &Option<Payload>) -> String {
    match p {
        None => "⊥".into(),
        Some(Payload::Nop) => "Nop".into(),
        Some(Payload::Op(b)) => {
            let reqs: Vec<String> = b
                .iter()
                .map(|c| format!("c{}r{}", c.client, c.request))
                .collect();
            format!("Op[{}]", reqs.join(","))
        }
    }
}

/// Short description of a record for messages.
pub fn show_record(r: &InstanceRecord) -> String {
    format!(
        "{{bal {:?} abal {:?} {:?} cmd {} dep {:?} init_dep {:?} init_cmd {}}}",
        r.bal,
        r.abal,
        r.phase,
        show_payload(&r.cmd),
        r.dep,
        r.init_dep,
        if r.init_cmd.is_some() { "set" } else { "⊥" }
    )
}

/// `keep!(self, check)`: returns early with the failure unless it is
/// disabled.
macro_rules! keep {
    ($self:ident, $e:expr) => {{
        let r = $e;
        $self.keep(r)?;
    }};
}

/// One write as the write checkers see it.
pub struct WriteCtx<'a> {
    /// Writing node.
    pub node: NodeId,
    /// Step number.
    pub step: u64,
    /// What the replica was doing.
    pub input: Input,
    /// Instance.
    pub id: CmdId,
    /// The record it replaces (as last written by this incarnation, or
    /// durable), if any.
    pub prev: Option<&'a InstanceRecord>,
    /// The new record.
    pub rec: &'a InstanceRecord,
}

/// One command applied to a state machine.
pub struct Applied<'a> {
    /// The command.
    pub cmd: &'a Command,
    /// The state machine's outcome.
    pub outcome: &'a synod_decision::Outcome,
    /// False if the session layer recognised it as a retry or a stale
    /// request (nothing applied).
    pub fresh: bool,
}

/// All checkers and their state.
pub struct Checker {
    /// Ghost state.
    pub ghost: Ghost,
    disabled: Vec<&'static str>,
    one_proposal: one_proposal_per_ballot::State,
    order: consistent_order::State,
    sm: state_machine_equality::State,
    claims: exclusive_claims::State,
    stock: no_oversell::State,
    once: exactly_once::State,
    barrier: epoch_barrier::State,
    /// Liveness bookkeeping (recovery attempts after the heal).
    pub progress: progress::State,
}

impl Checker {
    /// Checkers for `n` replicas tolerating `f` (`e` on the fast path).
    /// Violations of `disabled` invariants are ignored.
    pub fn new(n: usize, f: usize, e: usize, disabled: Vec<&'static str>) -> Self {
        Checker {
            ghost: Ghost {
                n,
                f,
                e,
                pending_orig: vec![BTreeMap::new(); n],
                fast_pending: vec![HashSet::default(); n],
                ..Ghost::default()
            },
            disabled,
            one_proposal: Default::default(),
            order: consistent_order::State::new(n),
            sm: Default::default(),
            claims: exclusive_claims::State::new(n),
            stock: no_oversell::State::new(n),
            once: exactly_once::State::new(n),
            barrier: epoch_barrier::State::new(n),
            progress: Default::default(),
        }
    }

    fn keep(&self, r: Check) -> Check {
        match r {
            Err(f) if self.disabled.contains(&f.invariant) => Ok(()),
            r => r,
        }
    }

    /// A replica returned `out` for `input`. `node` is in its state before
    /// `out` was queued (its pending list does not hold `out` yet); its
    /// replica is in the state after the step.
    pub fn on_output(&mut self, node: &SimNode, step: u64, input: Input, out: &Output) -> Check {
        let me = node.id;
        let mut submitted: Vec<CmdId> = Vec::new();
        for (i, w) in out.writes.iter().enumerate() {
            let Write::Instance { id, record } = w else {
                continue;
            };
            let prev = out.writes[..i]
                .iter()
                .rev()
                .find_map(|w| match w {
                    Write::Instance { id: pid, record } if pid == id => Some(&**record),
                    _ => None,
                })
                .or_else(|| node.volatile_record(*id));
            let ctx = WriteCtx {
                node: me,
                step,
                input,
                id: *id,
                prev,
                rec: record,
            };
            if id_uniqueness::is_submission(&ctx) {
                submitted.push(*id);
                self.ghost.created_step.entry(*id).or_insert(step);
                self.ghost.pending_orig[me as usize].insert(
                    *id,
                    Orig {
                        batch: record.init_cmd.clone().expect("submission has init_cmd"),
                        dep: record.init_dep.clone(),
                    },
                );
            }
            keep!(self, nop_shape::on_write(&ctx));
            keep!(self, payload_integrity::on_write(&self.ghost, &ctx));
            keep!(self, ballot_monotonicity::on_write(&ctx));
            keep!(self, phase_monotonicity::on_write(&ctx));
            keep!(self, committed_immutability::on_write(&ctx));
            keep!(self, pre_accept_discipline::on_write(&ctx));
            keep!(self, fast_path_discipline::on_write(&mut self.ghost, &ctx));
            keep!(self, agreement::on_volatile_write(&self.ghost, &ctx));
        }
        keep!(self, id_uniqueness::on_output(node, &submitted, out));
        let replica = node.replica.as_ref().expect("output of a live replica");
        for env in &out.messages {
            keep!(self, promise_discipline::on_create(replica, me, env));
        }
        if !out.executions.is_empty() {
            keep!(
                self,
                no_execution_before_commit::on_output(node, replica, me, out)
            );
            keep!(self, execution_well_formed::on_output(node, replica, out));
        }
        Ok(())
    }

    /// Something of `node`'s outputs is being released (its fsync ran, or
    /// the broken variant releases at step time): its submissions are now
    /// observable, so `orig` is fixed.
    pub fn on_release_point(&mut self, node: NodeId) -> Check {
        let pending = std::mem::take(&mut self.ghost.pending_orig[node as usize]);
        for (id, o) in pending {
            keep!(self, id_uniqueness::on_orig(&mut self.ghost, id, o));
        }
        Ok(())
    }

    /// A write of `node` became durable.
    pub fn on_durable(
        &mut self,
        node: NodeId,
        step: u64,
        id: CmdId,
        rec: &InstanceRecord,
    ) -> Check {
        use synod_types::Phase;
        // Only Accepted records are votes: a Committed record's `abal` may
        // have been raised by a Commit or a re-Accept (§3.7) without a vote
        // for that ballot's proposal.
        if rec.phase == Phase::Accepted {
            let (payload, dep) = (rec.cmd.as_ref().expect("accepted payload"), &rec.dep);
            let fp = fingerprint(payload, dep);
            keep!(
                self,
                one_proposal_per_ballot::on_vote(&self.ghost, node, id, rec.abal, fp)
            );
            keep!(
                self,
                single_chosen_value::on_vote(&mut self.ghost, node, id, rec.abal, payload, dep, fp,)
            );
        }
        if rec.phase == Phase::Committed {
            if self.ghost.fast_pending[node as usize].remove(&id) {
                keep!(
                    self,
                    single_chosen_value::on_fast_commit(&mut self.ghost, id, rec)
                );
            }
            let first = !self.ghost.committed.contains_key(&id);
            keep!(
                self,
                agreement::on_durable_commit(&self.ghost, node, id, rec)
            );
            if first {
                let payload = rec.cmd.clone().expect("committed payload");
                keep!(self, closed_set::on_first_commit(&self.ghost, id, &payload));
                if let Payload::Op(batch) = &payload {
                    *self.ghost.committed_ops.entry(id.epoch).or_insert(0) += 1;
                    keep!(
                        self,
                        visibility::on_first_commit(&self.ghost, id, batch, &rec.dep)
                    );
                    keep!(
                        self,
                        real_time_order::on_first_commit(&self.ghost, id, batch, &rec.dep)
                    );
                    for (k, access) in keys_of(batch) {
                        self.ghost
                            .committed_by_key
                            .entry(k)
                            .or_default()
                            .push((id, access));
                    }
                }
                self.ghost.committed.insert(
                    id,
                    CommitInfo {
                        payload,
                        dep: rec.dep.clone(),
                        step,
                    },
                );
            }
        }
        Ok(())
    }

    /// `from` releases `env` into the network.
    pub fn on_send(&mut self, from: &SimNode, env: &Envelope) -> Check {
        match &env.msg {
            Message::Accept {
                ballot,
                id,
                payload,
                dep,
            } => {
                keep!(self, nop_shape::on_send(&env.msg));
                keep!(
                    self,
                    chosen_stability::on_send_accept(&self.ghost, *id, *ballot, payload, dep,)
                );
                keep!(
                    self,
                    self.one_proposal
                        .on_send_accept(from.id, *id, *ballot, payload, dep,)
                );
            }
            Message::Commit {
                ballot,
                id,
                payload,
                dep,
            } => {
                keep!(self, nop_shape::on_send(&env.msg));
                keep!(
                    self,
                    commit_soundness::on_send_commit(
                        &self.ghost,
                        from.id,
                        *id,
                        *ballot,
                        payload,
                        dep,
                    )
                );
                keep!(
                    self,
                    one_proposal_per_ballot::on_send_commit(from, *id, payload, dep,)
                );
            }
            Message::Recover { ballot, id } => {
                keep!(self, self.progress.on_send_recover(*id, *ballot));
            }
            _ => {}
        }
        Ok(())
    }

    /// `msg` from `from` is about to be stepped by `to`.
    pub fn on_deliver(&mut self, to: &SimNode, from: NodeId, msg: &Message) -> Check {
        fast_path_discipline::on_deliver(&mut self.ghost, to.id, from, msg);
        {
            keep!(self, committed_immutability::on_deliver(to, msg));
            Ok(())
        }
    }

    /// `node` applied execution `id` with these per-command results; `app`
    /// is its state machine afterwards.
    pub fn on_apply(
        &mut self,
        node: NodeId,
        id: CmdId,
        batch: &[Command],
        applied: &[Applied<'_>],
        app: &synod_decision::StateMachine,
        clients: &Clients,
    ) -> Check {
        keep!(self, self.barrier.on_apply(&self.ghost, node, id));
        keep!(self, self.order.on_apply(node, id, batch));
        keep!(self, self.once.on_apply(node, applied));
        keep!(self, self.sm.on_apply(node, applied));
        keep!(self, self.stock.on_apply(node, applied, app, clients));
        keep!(self, self.claims.on_apply(node, applied, app, clients));
        Ok(())
    }

    /// The config service published configuration `qc` (I22 is checked).
    pub fn on_config(&mut self, qc: &synod_types::QuorumConfig) -> Check {
        self.ghost.configs.insert(qc.epoch, qc.clone());
        keep!(self, config_sanity::check(qc));
        Ok(())
    }

    /// The config service published K for `epoch`.
    pub fn on_publish(&mut self, epoch: u64, k: &BTreeSet<CmdId>) -> Check {
        self.ghost.closed.insert(epoch, k.clone());
        keep!(self, closed_set::on_publish(&self.ghost, epoch, k));
        Ok(())
    }

    /// `new` joins as a copy of `donor`'s durable state (a snapshot): its
    /// execution history so far is the donor's.
    pub fn on_join(&mut self, new: NodeId, donor: NodeId) {
        self.barrier.on_join(new, donor);
        self.order.on_join(new, donor);
        self.once.on_join(new, donor);
        self.claims.on_join(new, donor);
        self.stock.on_join(new, donor);
    }

    /// `node` crashed, discarding `lost`.
    pub fn on_crash(&mut self, node: NodeId, lost: &[PendingOutput]) -> Check {
        self.ghost.pending_orig[node as usize].clear();
        self.ghost.fast_pending[node as usize].clear();
        self.ghost.pre_accept_ok.retain(|id, _| id.origin != node);
        {
            keep!(self, durability::on_crash(node, lost));
            Ok(())
        }
    }

    /// `node` was rebuilt from its durable state.
    pub fn on_restart(&mut self, node: &SimNode) -> Check {
        {
            keep!(self, durability::on_restart(node));
            Ok(())
        }
    }

    /// O(state) checks at quiescence. Completeness checks (every write
    /// executed, exactly once, equal totals) cover the live replicas only;
    /// agreement and well-formedness still cover the durable state of
    /// replicas dead since the heal.
    pub fn final_checks(
        &mut self,
        nodes: &[SimNode],
        clients: &Clients,
        linearizability_budget: u64,
    ) -> Check {
        keep!(self, agreement::final_check(&self.ghost, nodes));
        keep!(self, execution_well_formed::final_check(nodes));
        keep!(self, self.order.final_check(nodes));
        keep!(self, state_machine_equality::final_check(nodes));
        keep!(self, self.once.final_check(clients, nodes));
        keep!(self, self.stock.final_check(nodes));
        keep!(
            self,
            linearizable::final_check(clients, linearizability_budget)
        );
        Ok(())
    }

    /// True if `name` is disabled.
    pub fn is_disabled(&self, name: &str) -> bool {
        self.disabled.contains(&name)
    }
}

/// Every invariant name this module can report, for `--disable`.
pub const ALL: &[&str] = &[
    agreement::NAME,
    closed_set::NAME,
    epoch_barrier::NAME,
    visibility::NAME,
    single_chosen_value::NAME,
    commit_soundness::NAME,
    chosen_stability::NAME,
    one_proposal_per_ballot::NAME,
    fast_path_discipline::NAME,
    nop_shape::NAME,
    payload_integrity::NAME,
    ballot_monotonicity::NAME,
    phase_monotonicity::NAME,
    committed_immutability::NAME,
    pre_accept_discipline::NAME,
    promise_discipline::NAME,
    no_execution_before_commit::NAME,
    execution_well_formed::NAME,
    consistent_order::NAME,
    real_time_order::NAME,
    state_machine_equality::NAME,
    durability::NAME,
    id_uniqueness::NAME,
    config_sanity::NAME,
    no_oversell::NAME,
    exclusive_claims::NAME,
    exactly_once::NAME,
    linearizable::NAME,
    progress::NAME,
];

#[cfg(test)]
mod tests {
    //! The checkers can fail: synthetic inputs that break one invariant each.
    use super::*;
    use std::sync::Arc;
    use synod_types::Phase;

    fn id(seq: u64, origin: NodeId) -> CmdId {
        CmdId {
            epoch: 0,
            seq,
            origin,
        }
    }

    fn cmd(client: u64, key: &str) -> Command {
        Command {
            keys: vec![(Key::from(key), Access::Write)],
            body: Arc::from(&b""[..]),
            client,
            request: 1,
        }
    }

    fn rec(
        i: CmdId,
        phase: Phase,
        abal: Ballot,
        payload: Payload,
        dep: &[CmdId],
    ) -> InstanceRecord {
        InstanceRecord {
            bal: abal,
            abal,
            phase,
            cmd: Some(payload),
            dep: dep.iter().copied().collect(),
            ..InstanceRecord::new(i)
        }
    }

    fn ballot(round: u32, node: NodeId) -> Ballot {
        Ballot {
            epoch: 0,
            round,
            node,
        }
    }

    #[test]
    fn agreement_catches_two_committed_values() {
        let mut c = Checker::new(3, 1, 1, Vec::new());
        let x = id(1, 0);
        let op = Payload::Op(Arc::new(vec![cmd(1, "k")]));
        let b = Ballot::initial(x);
        assert_eq!(
            c.on_durable(0, 1, x, &rec(x, Phase::Committed, b, op, &[])),
            Ok(())
        );
        let err = c
            .on_durable(1, 2, x, &rec(x, Phase::Committed, b, Payload::Nop, &[]))
            .unwrap_err();
        assert_eq!(err.invariant, agreement::NAME);
    }

    #[test]
    fn visibility_catches_conflicting_commits_without_deps() {
        let mut c = Checker::new(3, 1, 1, Vec::new());
        let (x, y) = (id(1, 0), id(1, 1));
        let px = Payload::Op(Arc::new(vec![cmd(1, "k")]));
        let py = Payload::Op(Arc::new(vec![cmd(2, "k")]));
        c.on_durable(
            0,
            1,
            x,
            &rec(x, Phase::Committed, Ballot::initial(x), px, &[]),
        )
        .unwrap();
        let err = c
            .on_durable(
                1,
                2,
                y,
                &rec(y, Phase::Committed, Ballot::initial(y), py, &[]),
            )
            .unwrap_err();
        assert_eq!(err.invariant, visibility::NAME);
    }

    #[test]
    fn chosen_value_then_other_accept_is_caught_and_disabling_works() {
        let mut c = Checker::new(3, 1, 1, Vec::new());
        let x = id(1, 0);
        let op = Payload::Op(Arc::new(vec![cmd(1, "k")]));
        let b1 = ballot(1, 1);
        for node in [1, 2] {
            c.on_durable(node, 1, x, &rec(x, Phase::Accepted, b1, op.clone(), &[]))
                .unwrap();
        }
        assert!(c.ghost.chosen.contains_key(&x));
        let err = chosen_stability::on_send_accept(
            &c.ghost,
            x,
            ballot(2, 2),
            &Payload::Nop,
            &Deps::new(),
        )
        .unwrap_err();
        assert_eq!(err.invariant, chosen_stability::NAME);
        // Two votes for Nop at a higher ballot: a second chosen value.
        for node in [0, 1] {
            let r = c.on_durable(
                node,
                2,
                x,
                &rec(x, Phase::Accepted, ballot(2, 2), Payload::Nop, &[]),
            );
            if node == 1 {
                assert_eq!(r.unwrap_err().invariant, single_chosen_value::NAME);
            }
        }
        let mut d = Checker::new(3, 1, 1, vec![single_chosen_value::NAME]);
        for node in [1, 2] {
            d.on_durable(node, 1, x, &rec(x, Phase::Accepted, b1, op.clone(), &[]))
                .unwrap();
        }
        for node in [0, 1] {
            let r = d.on_durable(
                node,
                2,
                x,
                &rec(x, Phase::Accepted, ballot(2, 2), Payload::Nop, &[]),
            );
            assert_eq!(r, Ok(()), "disabled invariant must not be reported");
        }
    }

    #[test]
    fn consistent_order_catches_diverging_write_orders() {
        let mut s = consistent_order::State::new(2);
        let (x, y) = (id(1, 0), id(1, 1));
        let bx = vec![cmd(1, "k")];
        let by = vec![cmd(2, "k")];
        s.on_apply(0, x, &bx).unwrap();
        s.on_apply(0, y, &by).unwrap();
        let err = s.on_apply(1, y, &by).unwrap_err();
        assert_eq!(err.invariant, consistent_order::NAME);
    }

    #[test]
    fn durability_catches_lost_released_writes() {
        use crate::node::PendingOutput;
        use synod_epaxos::Output;
        let x = id(1, 0);
        let lost = vec![PendingOutput {
            output: Output {
                writes: vec![Write::Instance {
                    id: x,
                    record: Box::new(InstanceRecord::new(x)),
                }],
                ..Output::default()
            },
            released: true,
        }];
        assert_eq!(
            durability::on_crash(0, &lost).unwrap_err().invariant,
            durability::NAME
        );
        let mut kept = lost;
        kept[0].released = false;
        assert_eq!(durability::on_crash(0, &kept), Ok(()));
    }
}
