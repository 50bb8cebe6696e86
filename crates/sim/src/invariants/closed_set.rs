//! Closed set (epaxos.md §8.2): once the config service publishes K for
//! sealed epoch E, no E-id outside K is ever committed with a non-Nop
//! payload — neither one committed before the publication nor after.

use super::{ensure, Check, Ghost};
use std::collections::BTreeSet;
use synod_types::{CmdId, Payload};

/// Name in reports and `--disable`.
pub const NAME: &str = "Closed set";

/// A first durable commit of `id` with `payload`.
pub fn on_first_commit(ghost: &Ghost, id: CmdId, payload: &Payload) -> Check {
    let Some(k) = ghost.closed.get(&id.epoch) else {
        return Ok(());
    };
    ensure(payload.is_nop() || k.contains(&id), NAME, || {
        format!(
            "{id:?} commits non-Nop outside the closed set K of epoch {} (|K| = {})",
            id.epoch,
            k.len()
        )
    })
}

/// K of `epoch` is published: every non-Nop id of `epoch` already
/// committed must be in it.
pub fn on_publish(ghost: &Ghost, epoch: u64, k: &BTreeSet<CmdId>) -> Check {
    for (id, c) in &ghost.committed {
        if id.epoch == epoch && !c.payload.is_nop() {
            ensure(k.contains(id), NAME, || {
                format!("{id:?} was committed non-Nop but K of epoch {epoch} leaves it out")
            })?;
        }
    }
    Ok(())
}
