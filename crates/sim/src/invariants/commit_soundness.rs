//! I4 Commit soundness (epaxos.md §6 I4; [inferred]).
//!
//! Whenever a `Commit(b, id, v, D)` is sent, `(v, D)` is already chosen
//! (ghost, from durable votes or a durable fast-path commit).

use super::{ensure, show_payload, Check, Ghost};
use synod_types::{Ballot, CmdId, Deps, NodeId, Payload};

/// Invariant name.
pub const NAME: &str = "I4 Commit soundness";

/// `from` releases `Commit(ballot, id, payload, dep)`.
pub fn on_send_commit(
    ghost: &Ghost,
    from: NodeId,
    id: CmdId,
    ballot: Ballot,
    payload: &Payload,
    dep: &Deps,
) -> Check {
    let p = show_payload(&Some(payload.clone()));
    // An id outside its epoch's published closed set K can only ever be
    // Nop (epaxos.md §8.2): K's publication decides it, no ballot does.
    if payload.is_nop()
        && dep.is_empty()
        && ghost
            .closed
            .get(&id.epoch)
            .is_some_and(|k| !k.contains(&id))
        && ghost.chosen.get(&id).is_none_or(|c| c.payload.is_nop())
    {
        return Ok(());
    }
    match ghost.chosen.get(&id) {
        None => ensure(false, NAME, || {
            format!("n{from} sends Commit({ballot:?}, {id:?}, {p}, {dep:?}) but nothing is chosen (durably) for {id:?}")
        }),
        Some(c) => ensure(&c.payload == payload && &c.dep == dep, NAME, || {
            format!(
                "n{from} sends Commit({ballot:?}, {id:?}, {p}, {dep:?}) but ({}, {:?}) is chosen at {:?}",
                show_payload(&Some(c.payload.clone())),
                c.dep,
                c.ballot
            )
        }),
    }
}
