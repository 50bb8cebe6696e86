//! Progress after the heal (epaxos.md §6 "Progress checks"; TLA+
//! `Liveness`).
//!
//! After the heal (all faults stopped, every node restarted, links timely),
//! the run must reach quiescence within a step budget: every instance any
//! replica durably knows is committed and processed at every replica, no
//! output is waiting for an fsync, and every client has been answered.
//! Recovery attempts per id stay bounded after the heal: at most
//! [`RECOVERY_BALLOTS_AFTER_HEAL_MAX`] distinct recovery ballots per id.
//!
//! With nodes dead for good (`SimConfig::dead_at_heal`, at most `f`), the
//! same is required of the live ones: every instance a live replica
//! durably knows, or a live origin submitted, is committed and processed
//! at every live replica, and every client is answered (by a live
//! replica). An instance only a dead replica ever knew can never be
//! decided and is not required.

use super::{ensure, Check, Ghost};
use crate::clients::Clients;
use crate::fxhash::{FxHashMap, FxHashSet};
use crate::node::SimNode;
use std::collections::BTreeSet;
use synod_types::{Ballot, CmdId};

/// After the heal, links are timely and nothing crashes, so randomized
/// backoff must let one recoverer finish (epaxos.md §4.1.5, §6 "Recovery
/// attempts per id stay bounded"). Generous: a livelock shows up as hundreds.
pub const RECOVERY_BALLOTS_AFTER_HEAL_MAX: usize = 50;

/// Recovery ballots seen per id after the heal.
#[derive(Debug, Default)]
pub struct State {
    healed: bool,
    ballots: FxHashMap<CmdId, FxHashSet<Ballot>>,
    /// Highest recovery round seen in any Recover message.
    pub max_round: u32,
}

impl State {
    /// The heal happened.
    pub fn heal(&mut self) {
        self.healed = true;
    }

    /// A `Recover(ballot, id)` was released.
    pub fn on_send_recover(&mut self, id: CmdId, ballot: Ballot) -> Check {
        self.max_round = self.max_round.max(ballot.round);
        if !self.healed {
            return Ok(());
        }
        let set = self.ballots.entry(id).or_default();
        set.insert(ballot);
        let count = set.len();
        ensure(count <= RECOVERY_BALLOTS_AFTER_HEAL_MAX, NAME, || {
            format!("{id:?}: {count} recovery ballots after the heal (duelling recoverers never settle)")
        })
    }
}

/// Invariant name.
pub const NAME: &str = "Progress after heal";

/// `None` if quiescent, else a description of what is still missing.
pub fn missing(nodes: &[SimNode], ghost: &Ghost, clients: &Clients) -> Option<String> {
    let mut problems: Vec<String> = Vec::new();
    let live = || nodes.iter().filter(|n| !n.dead);
    for n in live() {
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
    let mut ids: BTreeSet<CmdId> = ghost
        .orig
        .keys()
        .filter(|id| nodes.get(id.origin as usize).is_some_and(|o| !o.dead))
        .copied()
        .collect();
    for n in live() {
        ids.extend(n.durable.records.keys().copied());
    }
    let mut undone = 0usize;
    for id in &ids {
        // A replica only runs the epochs it is a member of; a member added
        // later has the earlier epochs' outcome in its snapshot.
        // An id left out of its epoch's closed set K can only be a Nop: a
        // replica that never heard of it need not learn it (nothing
        // depends on it executing).
        let outside_k = ghost.closed.get(&id.epoch).is_some_and(|k| !k.contains(id));
        for n in live().filter(|n| {
            ghost.is_member(id.epoch, n.id) && (!outside_k || n.durable.records.contains_key(id))
        }) {
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
