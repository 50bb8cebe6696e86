//! I2 Visibility (epaxos.md §6 I2; [P-abs], TLA+ `Visibility`).
//!
//! For committed non-Nop conflicting `id ≠ id'`: `id ∈ dep(id')` or
//! `id' ∈ dep(id)`. Checked when an id is first committed durably, against
//! every earlier committed non-Nop id that shares a key with it (the ghost
//! per-key index), so every pair is checked exactly once.

use super::{ensure, keys_of, Check, Ghost};
use crate::fxhash::FxHashSet as HashSet;
use synod_types::{Access, CmdId, Command, Deps};

/// Invariant name.
pub const NAME: &str = "I2 Visibility";

/// `id` was committed for the first time with `(batch, dep)`.
pub fn on_first_commit(ghost: &Ghost, id: CmdId, batch: &[Command], dep: &Deps) -> Check {
    // Two batches conflict iff on some shared key one of them writes, so
    // walk the per-key index and test the access on that key only.
    let mut seen: HashSet<CmdId> = HashSet::default();
    for (k, access) in keys_of(batch) {
        let Some(others) = ghost.committed_by_key.get(&k) else {
            continue;
        };
        for (other, other_access) in others {
            // Across epochs the epoch barrier orders conflicting commands,
            // not dependency sets (epaxos.md §8.4; `epoch_barrier` checks it).
            if *other == id
                || other.epoch != id.epoch
                || (access == Access::Read && *other_access == Access::Read)
            {
                continue;
            }
            if !seen.insert(*other) {
                continue;
            }
            let c = &ghost.committed[other];
            ensure(dep.contains(other) || c.dep.contains(&id), NAME, || {
                format!(
                    "conflicting {id:?} (dep {dep:?}) and {other:?} (dep {:?}) are both committed \
                     and neither is in the other's deps (key {k:?})",
                    c.dep
                )
            })?;
        }
    }
    Ok(())
}
