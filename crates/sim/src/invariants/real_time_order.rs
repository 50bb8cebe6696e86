//! I18 Real-time order (epaxos.md §6 I18, §3.9; [inferred]).
//!
//! If a was replied to before b was submitted, a ⋈ b and b commits
//! non-Nop, then `a ∈ dep(b)` (and so, by I16, a precedes b in every
//! `exec_p`). Checked in the stronger form the argument of §3.9 gives: for
//! every conflicting non-Nop a whose first durable commit happened before
//! b was created (a reply needs a commit, and a's deps are fixed at its
//! commit, before b existed, so Visibility forces `a ∈ dep(b)`).

use super::{ensure, keys_of, Check, Ghost};
use crate::fxhash::FxHashSet as HashSet;
use synod_types::{Access, CmdId, Command, Deps};

/// Invariant name.
pub const NAME: &str = "I18 Real-time order";

/// `id` is committed for the first time, as `(batch, dep)`.
pub fn on_first_commit(ghost: &Ghost, id: CmdId, batch: &[Command], dep: &Deps) -> Check {
    let Some(&created) = ghost.created_step.get(&id) else {
        return Ok(());
    };
    let mut seen: HashSet<CmdId> = HashSet::default();
    for (k, access) in keys_of(batch) {
        let Some(list) = ghost.committed_by_key.get(&k) else {
            continue;
        };
        // `list` is in first-commit order, so its commit steps ascend.
        for (a, a_access) in list {
            let c = &ghost.committed[a];
            if c.step >= created {
                break;
            }
            // Across epochs the barrier orders them (`epoch_barrier`).
            if (access == Access::Read && *a_access == Access::Read) || a.epoch != id.epoch {
                continue;
            }
            if seen.insert(*a) {
                ensure(dep.contains(a), NAME, || {
                    format!(
                        "{id:?} (created at step {created}) commits without {a:?} in its deps, \
                         though {a:?} was committed at step {} (key {k:?})",
                        c.step
                    )
                })?;
            }
        }
    }
    Ok(())
}
