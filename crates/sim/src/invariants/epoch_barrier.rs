//! Epoch barrier (epaxos.md §8.4): no instance of epoch E+1 executes at a
//! replica before every E-instance of the closure has executed there.
//!
//! Every E-id committed non-Nop is in the closed set K (see
//! [`super::closed_set`]), so the closure's executed part is exactly the
//! non-Nop E-ids committed anywhere. The check: when replica p applies an
//! id of epoch e, for each earlier epoch E p has applied as many E-ids as
//! have been committed non-Nop anywhere so far (the ghost count only lags
//! behind, never ahead, so the check never fires falsely).

use super::{ensure, Check, Ghost};
use std::collections::BTreeMap;
use synod_types::{CmdId, NodeId};

/// Name in reports and `--disable`.
pub const NAME: &str = "Epoch barrier";

#[derive(Debug)]
/// Per-node execution counts.
pub struct State {
    /// Per node, per epoch: ids applied.
    executed: Vec<BTreeMap<u64, usize>>,
}

impl State {
    /// For `n` node slots.
    pub fn new(n: usize) -> Self {
        State {
            executed: vec![BTreeMap::new(); n],
        }
    }

    /// `node` applies `id`.
    pub fn on_apply(&mut self, ghost: &Ghost, node: NodeId, id: CmdId) -> Check {
        let mine = &mut self.executed[node as usize];
        *mine.entry(id.epoch).or_insert(0) += 1;
        for (&e, &committed) in ghost.committed_ops.range(..id.epoch) {
            let done = mine.get(&e).copied().unwrap_or(0);
            ensure(done >= committed, NAME, || {
                format!(
                    "n{node} executes {id:?} after only {done} of the {committed} \
                     non-Nop ids committed in epoch {e}"
                )
            })?;
        }
        Ok(())
    }

    /// `new` starts from a copy of `donor`'s state (a snapshot).
    pub fn on_join(&mut self, new: NodeId, donor: NodeId) {
        self.executed[new as usize] = self.executed[donor as usize].clone();
    }
}
