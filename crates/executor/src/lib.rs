//! Committed dependency graph → deterministic execution order
//! (`shared/design/epaxos.md` §5).
//!
//! Pure and event-driven: the caller reports commits, the executor returns the
//! ids that became executable, in the one order every replica computes
//! (Tarjan SCCs emitted dependencies first, `CmdId` order inside an SCC, Nops
//! processed but never returned). It never blocks: when a committed id's
//! closure reaches an id that is not committed locally, it records what it is
//! blocked on so the core can start recovery (epaxos.md §4.1 trigger 1).

use synod_types::{CmdId, Deps};

/// The executor. See the crate docs.
#[derive(Debug, Default)]
pub struct Executor {
    // TODO(helper): implement
}

impl Executor {
    /// An empty executor.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds after a restart: `processed` are ids already executed (or
    /// skipped Nops) before the crash; they are never returned again.
    pub fn restore(processed: impl IntoIterator<Item = CmdId>) -> Self {
        let _ = processed;
        todo!()
    }

    /// Reports that `id` is committed locally with dependencies `deps`;
    /// `nop` is true when the committed payload is Nop. Committing the same id
    /// twice is a caller bug (panics).
    ///
    /// Returns the ids that became executable because of this commit, in
    /// execution order, Nops excluded.
    pub fn commit(&mut self, id: CmdId, deps: &Deps, nop: bool) -> Vec<CmdId> {
        let _ = (id, deps, nop);
        todo!()
    }

    /// True if `id` has been processed (executed, or a skipped Nop).
    pub fn is_processed(&self, id: CmdId) -> bool {
        let _ = id;
        todo!()
    }

    /// Ids that some committed, unprocessed id transitively waits on and that
    /// are not committed locally, in `CmdId` order.
    pub fn blocked_on(&self) -> Vec<CmdId> {
        todo!()
    }

    /// Number of committed ids not yet processed (the pending closure size,
    /// epaxos.md §5.4.4).
    pub fn pending_len(&self) -> usize {
        todo!()
    }
}
