//! Progress after the heal (epaxos.md §6 "Progress checks"; TLA+
//! `Liveness`).
//!
//! After the heal (all faults stopped, every node restarted, links timely),
//! the run must reach quiescence within a step budget: every instance any
//! replica durably knows is committed and processed at every replica, no
//! output is waiting for an fsync, and every client has been answered.

use super::Ghost;
use crate::clients::Clients;
use crate::node::SimNode;
use std::collections::BTreeSet;
use synod_types::CmdId;

/// Invariant name.
pub const NAME: &str = "Progress after heal";

/// `None` if quiescent, else a description of what is still missing.
pub fn missing(nodes: &[SimNode], ghost: &Ghost, clients: &Clients) -> Option<String> {
    let mut problems: Vec<String> = Vec::new();
    for n in nodes {
        if !n.is_up() {
            problems.push(format!("n{} is down", n.id));
        }
        if !n.pending.is_empty() {
            problems.push(format!(
                "n{} has {} outputs awaiting fsync",
                n.id,
                n.pending.len()
            ));
        }
    }
    let mut ids: BTreeSet<CmdId> = ghost.orig.keys().copied().collect();
    for n in nodes {
        ids.extend(n.durable.records.keys().copied());
    }
    let mut undone = 0usize;
    for id in &ids {
        for n in nodes {
            if !n.durable.is_done(*id) {
                undone += 1;
                if undone <= 8 {
                    let phase = n.durable.records.get(id).map(|r| r.phase);
                    problems.push(format!(
                        "{id:?} not committed+executed at n{} ({phase:?})",
                        n.id
                    ));
                }
            }
        }
    }
    if undone > 8 {
        problems.push(format!(
            "… {} more (instance, replica) pairs not done",
            undone - 8
        ));
    }
    for c in &clients.clients {
        if let Some(o) = &c.outstanding {
            problems.push(format!(
                "client {} waits on request {} (attempt {} at n{})",
                c.id, o.request, o.attempt, o.node
            ));
        }
    }
    if problems.is_empty() {
        None
    } else {
        Some(problems.join("; "))
    }
}
