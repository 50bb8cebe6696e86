//! I19 State-machine equality (epaxos.md §6 I19; [inferred]).
//!
//! For all p, q with the same executed set, the application states are
//! equal (digests compared at quiescence). Incrementally: every replica
//! computes the same outcome for every freshly applied `(client, request)`.

use super::{ensure, Applied, Check};
use crate::fxhash::FxHashMap as HashMap;
use crate::node::SimNode;
use synod_decision::Outcome;
use synod_types::{ClientId, NodeId};

/// Invariant name.
pub const NAME: &str = "I19 State-machine equality";

/// First outcome of every fresh application.
#[derive(Debug, Default)]
pub struct State {
    outcomes: HashMap<(ClientId, u64), Outcome>,
}

impl State {
    /// `node` applied these commands.
    pub fn on_apply(&mut self, node: NodeId, applied: &[Applied<'_>]) -> Check {
        for a in applied.iter().filter(|a| a.fresh) {
            let key = (a.cmd.client, a.cmd.request);
            let first = self
                .outcomes
                .entry(key)
                .or_insert_with(|| a.outcome.clone());
            ensure(first == a.outcome, NAME, || {
                format!(
                    "n{node}: client {} request {} → {:?}, another replica computed {:?}",
                    key.0, key.1, a.outcome, first
                )
            })?;
        }
        Ok(())
    }
}

/// Replicas with equal executed sets have equal digests, and at
/// quiescence every live replica (not dead for good since the heal) has
/// executed the same set, so the live replicas' digests are all compared.
pub fn final_check(nodes: &[SimNode]) -> Check {
    for (i, p) in nodes.iter().enumerate() {
        for q in &nodes[i + 1..] {
            if !p.dead && !q.dead {
                ensure(p.durable.executed == q.durable.executed, NAME, || {
                    format!(
                        "live n{} and n{} executed different sets at quiescence ({} vs {} ids)",
                        p.id,
                        q.id,
                        p.durable.executed.len(),
                        q.durable.executed.len()
                    )
                })?;
            }
            if p.durable.executed == q.durable.executed {
                let (dp, dq) = (p.durable.app.digest(), q.durable.app.digest());
                ensure(dp == dq, NAME, || {
                    format!(
                        "n{} and n{} executed the same {} ids but digests differ ({dp:#x} vs {dq:#x})",
                        p.id,
                        q.id,
                        p.durable.executed.len()
                    )
                })?;
            }
        }
    }
    Ok(())
}
