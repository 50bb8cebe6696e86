//! I6 One proposal per ballot (epaxos.md §6 I6; [P] ownership, [inferred]).
//!
//! All `Accept` messages for the same `(id, b)` carry the same value; a
//! non-initial ballot's Accepts are sent only by `b.node`, initial-ballot
//! Accepts only by `origin(id)`. A process never durably accepts two
//! different values at one ballot. A `Commit` is only sent by a process that
//! has committed the same value itself (self-delivery is synchronous,
//! epaxos.md §1.5; forwarded commits copy the sender's own commit).

use super::{ensure, fingerprint, show_payload, Check, Ghost};
use crate::fxhash::FxHashMap as HashMap;
use crate::node::SimNode;
use synod_types::{Ballot, CmdId, Deps, NodeId, Payload, Phase};

/// Invariant name.
pub const NAME: &str = "I6 One proposal per ballot";

/// Fingerprint of the first Accept sent per `(id, ballot)`.
#[derive(Debug, Default)]
pub struct State {
    proposals: HashMap<(CmdId, Ballot), u64>,
}

impl State {
    /// `from` releases `Accept(ballot, id, payload, dep)`.
    pub fn on_send_accept(
        &mut self,
        from: NodeId,
        id: CmdId,
        ballot: Ballot,
        payload: &Payload,
        dep: &Deps,
    ) -> Check {
        let owner = if ballot.is_initial() {
            id.origin
        } else {
            ballot.node
        };
        ensure(from == owner, NAME, || {
            format!("n{from} sends Accept({ballot:?}, {id:?}) owned by n{owner}")
        })?;
        let fp = fingerprint(payload, dep);
        let first = *self.proposals.entry((id, ballot)).or_insert(fp);
        ensure(first == fp, NAME, || {
            format!(
                "two different Accepts for ({id:?}, {ballot:?}); the later carries ({}, {dep:?})",
                show_payload(&Some(payload.clone()))
            )
        })
    }
}

/// `node` durably accepted a value with fingerprint `fp` at `ballot`.
pub fn on_vote(ghost: &Ghost, node: NodeId, id: CmdId, ballot: Ballot, fp: u64) -> Check {
    if let Some(voters) = ghost.votes.get(&(id, ballot)) {
        if let Some((_, old)) = voters.iter().find(|(n, _)| *n == node) {
            ensure(*old == fp, NAME, || {
                format!("n{node} accepted two different values for {id:?} at {ballot:?}")
            })?;
        }
    }
    Ok(())
}

/// `from` releases `Commit(_, id, payload, dep)`.
pub fn on_send_commit(from: &SimNode, id: CmdId, payload: &Payload, dep: &Deps) -> Check {
    let Some(replica) = from.replica.as_ref() else {
        return Ok(());
    };
    let rec = replica.instance(id);
    ensure(
        rec.is_some_and(|r| {
            r.phase == Phase::Committed && r.cmd.as_ref() == Some(payload) && &r.dep == dep
        }),
        NAME,
        || {
            format!(
                "n{} sends Commit({id:?}, {}, {dep:?}) without having committed it (its record: {})",
                from.id,
                show_payload(&Some(payload.clone())),
                rec.map_or("none".into(), super::show_record)
            )
        },
    )
}
