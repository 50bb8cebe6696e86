//! I3 Single chosen value (epaxos.md §6 I3; [inferred], Paxos).
//!
//! `|{v : v chosen for id at some ballot}| ≤ 1`, where `v` is chosen at `b`
//! if `n − f` distinct processes durably accepted it at `b` (a durable
//! record with `phase ≥ Accepted` and `abal = b`), or if `b` is initial and
//! the origin durably committed through the FAST branch of §3.4.

use super::{ensure, show_payload, Check, Chosen, Ghost};
use synod_epaxos::InstanceRecord;
use synod_types::{Ballot, CmdId, Deps, NodeId, Payload};

/// Invariant name.
pub const NAME: &str = "I3 Single chosen value";

fn choose(
    ghost: &mut Ghost,
    id: CmdId,
    ballot: Ballot,
    payload: &Payload,
    dep: &Deps,
    how: &str,
) -> Check {
    match ghost.chosen.get_mut(&id) {
        Some(c) => {
            ensure(&c.payload == payload && &c.dep == dep, NAME, || {
                format!(
                    "{id:?}: ({}, {dep:?}) chosen at {ballot:?} ({how}) but ({}, {:?}) was chosen at {:?}",
                    show_payload(&Some(payload.clone())),
                    show_payload(&Some(c.payload.clone())),
                    c.dep,
                    c.ballot
                )
            })?;
            c.ballot = c.ballot.min(ballot);
        }
        None => {
            ghost.chosen.insert(
                id,
                Chosen {
                    payload: payload.clone(),
                    dep: dep.clone(),
                    ballot,
                },
            );
        }
    }
    Ok(())
}

/// `node` durably voted for `(payload, dep)` (fingerprint `fp`) at `ballot`.
pub fn on_vote(
    ghost: &mut Ghost,
    node: NodeId,
    id: CmdId,
    ballot: Ballot,
    payload: &Payload,
    dep: &Deps,
    fp: u64,
) -> Check {
    let quorum = ghost.slow_quorum(id.epoch);
    let voters = ghost.votes.entry((id, ballot)).or_default();
    if !voters.iter().any(|(n, _)| *n == node) {
        voters.push((node, fp));
    }
    let count = voters.iter().filter(|(_, f)| *f == fp).count();
    if count >= quorum {
        choose(ghost, id, ballot, payload, dep, "by votes")?;
    }
    Ok(())
}

/// The origin's fast-path commit of `id` became durable.
pub fn on_fast_commit(ghost: &mut Ghost, id: CmdId, rec: &InstanceRecord) -> Check {
    let payload = rec.cmd.clone().expect("committed payload");
    choose(
        ghost,
        id,
        Ballot::initial(id),
        &payload,
        &rec.dep,
        "fast path",
    )
}
