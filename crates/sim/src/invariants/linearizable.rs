//! Linearizability of the client history (quality-bars.md R6; epaxos.md
//! §3.9 real-time order).
//!
//! The history (one operation per `(client, request)`, invoked at the first
//! attempt, responded at the reply; never-answered ones indeterminate) is
//! given to [`crate::linearizability::check`]. `GaveUp` is a failure.
//! Times are step numbers, so an event's order in the run is its real-time
//! order.

use super::{ensure, Check};
use crate::clients::Clients;
use crate::linearizability::{check, HistoryOp};
use synod_decision::{Outcome, Reason};

/// Invariant name.
pub const NAME: &str = "Linearizability";

/// Checks the whole history.
pub fn final_check(clients: &Clients, budget: u64) -> Check {
    let history: Vec<HistoryOp> = clients
        .history
        .iter()
        .map(|op| {
            // Outcomes only the session layer produces never match the
            // model: record those as indeterminate.
            let completed = op.completed.as_ref().filter(|(_, o)| {
                !matches!(
                    o,
                    Outcome::Rejected {
                        reason: Reason::StaleRequest { .. }
                            | Reason::MissingSessionKey
                            | Reason::Undecodable(_)
                            | Reason::UndeclaredKey { .. }
                    }
                )
            });
            HistoryOp {
                client: op.client,
                invoke: op.invoked_at,
                response: completed.map(|(t, _)| *t),
                decision: op.decision.clone(),
                outcome: completed.map(|(_, o)| o.clone()),
            }
        })
        .collect();
    let r = check(&history, budget);
    ensure(r.is_ok(), NAME, || format!("{}", r.expect_err("checked")))
}
