//! I17 Consistent order across replicas (epaxos.md §6 I17; [P-abs] as a
//! consequence of I1 + I2 + Fig. 1, [inferred] prefix form).
//!
//! For all p, q and conflicting non-Nop a ≠ b executed at both,
//! `pos_p(a) < pos_p(b) ⇔ pos_q(a) < pos_q(b)`; per key, the write
//! subsequences of `exec_p` and `exec_q` are prefix-compatible.
//!
//! Incrementally: per key, a canonical sequence of writing instances (the
//! longest seen anywhere); each replica's k-th write of a key must be the
//! canonical k-th, and every reader of a key must see the same number of
//! earlier writes of it at every replica.

use super::{ensure, keys_of, Check};
use crate::fxhash::FxHashMap as HashMap;
use crate::node::SimNode;
use synod_types::{Access, CmdId, Command, Key, NodeId};

/// Invariant name.
pub const NAME: &str = "I17 Consistent order";

/// Canonical per-key write order and per-replica progress in it.
#[derive(Debug)]
pub struct State {
    canon: HashMap<Key, Vec<CmdId>>,
    pos: Vec<HashMap<Key, usize>>,
    reads: HashMap<(CmdId, Key), usize>,
}

impl State {
    /// `new` starts from a copy of `donor`'s history (a snapshot).
    pub fn on_join(&mut self, new: NodeId, donor: NodeId) {
        self.pos[new as usize] = self.pos[donor as usize].clone();
    }

    /// For `n` replicas.
    pub fn new(n: usize) -> Self {
        State {
            canon: HashMap::default(),
            pos: vec![HashMap::default(); n],
            reads: HashMap::default(),
        }
    }

    /// `node` executed `id` = `batch`.
    pub fn on_apply(&mut self, node: NodeId, id: CmdId, batch: &[Command]) -> Check {
        for (k, access) in keys_of(batch) {
            let p = self.pos[node as usize].entry(k.clone()).or_insert(0);
            match access {
                Access::Write => {
                    let canon = self.canon.entry(k.clone()).or_default();
                    if *p < canon.len() {
                        let expected = canon[*p];
                        ensure(expected == id, NAME, || {
                            format!(
                                "n{node}: write #{} of key {k:?} is {id:?}, another replica's is {expected:?}",
                                *p
                            )
                        })?;
                    } else {
                        canon.push(id);
                    }
                    *p += 1;
                }
                Access::Read => {
                    let seen = *p;
                    let first = *self.reads.entry((id, k.clone())).or_insert(seen);
                    ensure(first == seen, NAME, || {
                        format!(
                            "n{node}: read {id:?} of key {k:?} follows {seen} writes, elsewhere {first}"
                        )
                    })?;
                }
            }
        }
        Ok(())
    }

    /// At quiescence every live replica (not dead for good since the heal)
    /// has executed every canonical write.
    pub fn final_check(&self, nodes: &[SimNode]) -> Check {
        for n in nodes.iter().filter(|n| !n.dead) {
            for (k, canon) in &self.canon {
                let p = self.pos[n.id as usize].get(k).copied().unwrap_or(0);
                ensure(p == canon.len(), NAME, || {
                    format!(
                        "n{}: executed {p} of {} writes of key {k:?}",
                        n.id,
                        canon.len()
                    )
                })?;
            }
        }
        Ok(())
    }
}
