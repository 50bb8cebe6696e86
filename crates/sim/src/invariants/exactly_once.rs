//! Exactly-once execution (epaxos.md §3.9; quality-bars.md R4/R7 "0 applied
//! twice"; the brief's "every acknowledged decision executed exactly once
//! at every replica").
//!
//! A `(client, request)` is freshly applied at most once per replica, ever;
//! at quiescence every acknowledged request was freshly applied exactly
//! once at every replica, and every indeterminate one the same number of
//! times (0 or 1) at all replicas. Replicas dead for good since the heal
//! (`SimConfig::dead_at_heal`) are left out of the quiescence check (the
//! at-most-once check covers them while they run).

use super::{ensure, Applied, Check};
use crate::clients::Clients;
use crate::fxhash::FxHashMap as HashMap;
use crate::node::SimNode;
use synod_types::{ClientId, NodeId};

/// Invariant name.
pub const NAME: &str = "Exactly-once execution";

/// Per replica: fresh applications per `(client, request)`.
#[derive(Debug)]
pub struct State {
    counts: Vec<HashMap<(ClientId, u64), u32>>,
}

impl State {
    /// `new` starts from a copy of `donor`'s history (a snapshot).
    pub fn on_join(&mut self, new: NodeId, donor: NodeId) {
        self.counts[new as usize] = self.counts[donor as usize].clone();
    }

    /// For `n` replicas.
    pub fn new(n: usize) -> Self {
        State {
            counts: vec![HashMap::default(); n],
        }
    }

    /// `node` applied these commands.
    pub fn on_apply(&mut self, node: NodeId, applied: &[Applied<'_>]) -> Check {
        for a in applied.iter().filter(|a| a.fresh) {
            let key = (a.cmd.client, a.cmd.request);
            let c = self.counts[node as usize].entry(key).or_insert(0);
            *c += 1;
            let c = *c;
            ensure(c == 1, NAME, || {
                format!(
                    "n{node} applied client {} request {} {c} times",
                    key.0, key.1
                )
            })?;
        }
        Ok(())
    }

    /// At quiescence, over the live replicas of `nodes`.
    pub fn final_check(&self, clients: &Clients, nodes: &[SimNode]) -> Check {
        let live: Vec<&HashMap<(ClientId, u64), u32>> = nodes
            .iter()
            .filter(|n| !n.dead)
            .map(|n| &self.counts[n.id as usize])
            .collect();
        for op in &clients.history {
            let key = (op.client, op.request);
            let counts: Vec<u32> = live
                .iter()
                .map(|m| m.get(&key).copied().unwrap_or(0))
                .collect();
            if op.completed.is_some() {
                ensure(counts.iter().all(|c| *c == 1), NAME, || {
                    format!(
                        "acknowledged client {} request {} applied {counts:?} times per live replica",
                        key.0, key.1
                    )
                })?;
            } else {
                ensure(counts.iter().all(|c| *c == counts[0]), NAME, || {
                    format!(
                        "indeterminate client {} request {} applied {counts:?} times per live replica",
                        key.0, key.1
                    )
                })?;
            }
        }
        Ok(())
    }
}
