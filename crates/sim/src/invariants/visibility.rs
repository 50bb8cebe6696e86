//! I2 Visibility (epaxos.md §6 I2; [P-abs], TLA+ `Visibility`).
//!
//! For committed non-Nop conflicting `id ≠ id'`: `id ∈ dep(id')` or
//! `id' ∈ dep(id)`. Checked when an id is first committed durably, against
//! every earlier committed non-Nop id that shares a key with it (the ghost
//! per-key index), so every pair is checked exactly once.

use super::{ensure, keys_of, Check, Ghost};
use std::collections::HashSet;
use synod_types::{batches_conflict, CmdId, Command, Deps, Payload};

/// Invariant name.
pub const NAME: &str = "I2 Visibility";

/// `id` was committed for the first time with `(batch, dep)`.
pub fn on_first_commit(ghost: &Ghost, id: CmdId, batch: &[Command], dep: &Deps) -> Check {
    let mut seen: HashSet<CmdId> = HashSet::new();
    for (k, _) in keys_of(batch) {
        let Some(others) = ghost.committed_by_key.get(&k) else {
            continue;
        };
        for other in others {
            if *other == id || !seen.insert(*other) {
                continue;
            }
            let c = &ghost.committed[other];
            let Payload::Op(ob) = &c.payload else {
                continue;
            };
            if !batches_conflict(batch, ob) {
                continue;
            }
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
