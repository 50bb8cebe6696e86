//! I7 Fast-path discipline (epaxos.md §6 I7; [P: Fig. 3 l. 20–23]).
//!
//! A fast-path commit (the origin moving from PreAccepted straight to
//! Committed at the initial ballot, not because a Commit arrived) has
//! `dep = D0`; at that moment the origin's `bal` was still initial and
//! ≥ n−e processes, the origin included, had replied `PreAcceptOk(id, D0)`
//! to the origin's current incarnation (counted from delivered messages).
//!
//! Note: the spec's literal "a Commit at the initial ballot has dep = D0"
//! does not hold for slow-path commits at the initial ballot (§3.4 SLOW
//! commits `∪ Dq` at `initial`), so only the fast branch is checked here.

use super::{ensure, Check, Ghost, Input, WriteCtx};
use synod_epaxos::Message;
use synod_types::{NodeId, Phase};

/// Invariant name.
pub const NAME: &str = "I7 Fast-path discipline";

/// A message is delivered to `to`; remember matching PreAcceptOks at the
/// origin.
pub fn on_deliver(ghost: &mut Ghost, to: NodeId, from: NodeId, msg: &Message) {
    if let Message::PreAcceptOk { id, dep } = msg {
        if id.origin == to && ghost.orig.get(id).is_some_and(|o| &o.dep == dep) {
            ghost.pre_accept_ok.entry(*id).or_default().insert(from);
        }
    }
}

/// A write at the step it was made.
pub fn on_write(ghost: &mut Ghost, ctx: &WriteCtx<'_>) -> Check {
    let rec = ctx.rec;
    if ctx.node != ctx.id.origin || rec.phase != Phase::Committed || !rec.abal.is_initial() {
        return Ok(());
    }
    if matches!(ctx.input, Input::Step { kind: "Commit", .. }) {
        return Ok(());
    }
    // A Nop decided by the publication of K (an id outside it, epaxos.md
    // §8.2) is not a fast commit.
    let excluded = ghost
        .closed
        .get(&ctx.id.epoch)
        .is_some_and(|k| !k.contains(&ctx.id));
    if excluded && matches!(rec.cmd, Some(synod_types::Payload::Nop)) {
        return Ok(());
    }
    // No previous record: submitted and committed in one step, i.e. the
    // origin's own pre-accept (atomic with submit) was enough.
    let (prev_phase, prev_bal, d0) = match ctx.prev {
        Some(p) => (p.phase, p.bal, &p.init_dep),
        None => (Phase::PreAccepted, rec.bal, &rec.init_dep),
    };
    if prev_phase != Phase::PreAccepted {
        return Ok(());
    }
    let id = ctx.id;
    // Record the choice before judging it, so that with this checker
    // disabled the deeper invariants (I1–I3) still see the fast commit.
    ghost.fast_pending[ctx.node as usize].insert(id);
    ensure(rec.dep == *d0, NAME, || {
        format!("{id:?} fast-committed with dep {:?} ≠ D0 {:?}", rec.dep, d0)
    })?;
    if let Some(o) = ghost.orig.get(&id) {
        ensure(rec.dep == o.dep, NAME, || {
            format!(
                "{id:?} fast-committed with dep {:?} ≠ orig D0 {:?}",
                rec.dep, o.dep
            )
        })?;
    }
    ensure(prev_bal.is_initial(), NAME, || {
        format!("{id:?} fast-committed after the origin joined {prev_bal:?}")
    })?;
    let others = ghost
        .pre_accept_ok
        .get(&id)
        .map_or(0, |s| s.iter().filter(|n| **n != ctx.node).count());
    let need = ghost.fast_quorum(id.epoch);
    ensure(others + 1 >= need, NAME, || {
        format!(
            "{id:?} fast-committed with {} matching PreAcceptOk(D0) (origin included), fast quorum is {need}",
            others + 1
        )
    })
}
