//! I15 No execution before commit (epaxos.md §6 I15; [P: Fig. 1 l. 2]).
//!
//! `x ∈ exec_p` implies that x and every id reachable from x in p's graph
//! were Committed at p when x executed. Checked when the executor produces
//! x: x and each direct dependency must be Committed at p. Reachability
//! follows by induction: a dependency executed earlier was checked then
//! (and commits are permanent); one executed in the same output is checked
//! in its turn; one never executed is caught by I16.

use super::{ensure, Check};
use crate::node::SimNode;
use synod_epaxos::{Output, Replica};
use synod_types::{NodeId, Phase};

/// Invariant name.
pub const NAME: &str = "I15 No execution before commit";

/// `me` produced `out` (state after the step: `replica`).
pub fn on_output(node: &SimNode, replica: &Replica, me: NodeId, out: &Output) -> Check {
    for ex in &out.executions {
        let rec = replica.instance(ex.id);
        ensure(
            rec.is_some_and(|r| r.phase == Phase::Committed),
            NAME,
            || format!("n{me} executes {:?} which is not committed there", ex.id),
        )?;
        let deps = super::effective_deps(
            rec.expect("checked"),
            |x| replica.instance(*x),
            |e, o| node.durable.done_prefix(e, o),
        );
        let deps = match deps {
            Ok(d) => d,
            Err(x) => {
                return ensure(false, NAME, || {
                    format!(
                        "n{me} executes {:?} whose dependency floor covers {x:?}, unknown there",
                        ex.id
                    )
                })
            }
        };
        for d in &deps {
            let committed = replica
                .instance(*d)
                .is_some_and(|r| r.phase == Phase::Committed);
            ensure(committed, NAME, || {
                format!(
                    "n{me} executes {:?} whose dependency {d:?} is not committed there",
                    ex.id
                )
            })?;
        }
    }
    Ok(())
}
