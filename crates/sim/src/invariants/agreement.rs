//! I1 Agreement (epaxos.md §6 I1; [P-abs], TLA+ `Agreement`).
//!
//! Ghost form: the set of `(cmd, dep)` values ever committed for an id,
//! across all processes and all time (crashed ones included), has at most
//! one element. Commits are counted when they become durable (a commit a
//! crash discards before anything of it was released never happened,
//! epaxos.md §2.4); a commit made at step time is compared against the
//! durable ones right away, so a replica committing a different value is
//! caught before its fsync.

use super::{ensure, show_payload, Check, Ghost, WriteCtx};
use crate::node::SimNode;
use synod_epaxos::InstanceRecord;
use synod_types::{CmdId, NodeId, Phase};

/// Invariant name.
pub const NAME: &str = "I1 Agreement";

fn same(ghost: &Ghost, node: NodeId, id: CmdId, rec: &InstanceRecord, when: &str) -> Check {
    if let Some(c) = ghost.committed.get(&id) {
        ensure(
            rec.cmd.as_ref() == Some(&c.payload) && rec.dep == c.dep,
            NAME,
            || {
                format!(
                    "{id:?}: n{node} {when} ({}, {:?}) but ({}, {:?}) was committed first (step {})",
                    show_payload(&rec.cmd),
                    rec.dep,
                    show_payload(&Some(c.payload.clone())),
                    c.dep,
                    c.step
                )
            },
        )?;
    }
    Ok(())
}

/// A replica wrote a record (not yet durable).
pub fn on_volatile_write(ghost: &Ghost, ctx: &WriteCtx<'_>) -> Check {
    if ctx.rec.phase == Phase::Committed {
        same(ghost, ctx.node, ctx.id, ctx.rec, "commits")?;
    }
    Ok(())
}

/// A committed record became durable at `node`.
pub fn on_durable_commit(ghost: &Ghost, node: NodeId, id: CmdId, rec: &InstanceRecord) -> Check {
    same(ghost, node, id, rec, "durably commits")
}

/// Every durable committed record of every replica equals the ghost.
pub fn final_check(ghost: &Ghost, nodes: &[SimNode]) -> Check {
    for n in nodes {
        for (id, rec) in &n.durable.records {
            if rec.phase == Phase::Committed {
                ensure(ghost.committed.contains_key(id), NAME, || {
                    format!("{id:?} committed at n{} but never recorded", n.id)
                })?;
                same(ghost, n.id, *id, rec, "holds")?;
            }
        }
    }
    Ok(())
}
