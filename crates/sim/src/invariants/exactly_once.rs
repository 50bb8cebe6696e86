//! Exactly-once execution (epaxos.md §3.9; quality-bars.md R4/R7 "0 applied
//! twice"; the brief's "every acknowledged decision executed exactly once
//! at every replica").
//!
//! A `(client, request)` is freshly applied at most once per replica, ever;
//! at quiescence every acknowledged request was freshly applied exactly
//! once at every replica, and every indeterminate one the same number of
//! times (0 or 1) at all replicas.

use super::{ensure, Applied, Check};
use crate::clients::Clients;
use crate::fxhash::FxHashMap as HashMap;
use synod_types::{ClientId, NodeId};

/// Invariant name.
pub const NAME: &str = "Exactly-once execution";

/// Per replica: fresh applications per `(client, request)`.
#[derive(Debug)]
pub struct State {
    counts: Vec<HashMap<(ClientId, u64), u32>>,
}

impl State {
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

    /// At quiescence.
    pub fn final_check(&self, clients: &Clients) -> Check {
        for op in &clients.history {
            let key = (op.client, op.request);
            let counts: Vec<u32> = self
                .counts
                .iter()
                .map(|m| m.get(&key).copied().unwrap_or(0))
                .collect();
            if op.completed.is_some() {
                ensure(counts.iter().all(|c| *c == 1), NAME, || {
                    format!(
                        "acknowledged client {} request {} applied {counts:?} times per replica",
                        key.0, key.1
                    )
                })?;
            } else {
                ensure(counts.iter().all(|c| *c == counts[0]), NAME, || {
                    format!(
                        "indeterminate client {} request {} applied {counts:?} times per replica",
                        key.0, key.1
                    )
                })?;
            }
        }
        Ok(())
    }
}
