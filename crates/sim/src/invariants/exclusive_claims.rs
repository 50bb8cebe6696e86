//! No claim held by two agents (quality-bars.md R7 "0 conflicting
//! decisions"; architecture.md §4 exclusive claims).
//!
//! Each replica keeps an independent model of every claim key from the
//! outcomes it computes. A `Claim` that succeeds for agent A while the model
//! says B ≠ A holds an unexpired claim (relative to the claiming decision's
//! `issued_at_ms`) is a double assignment; a `ReleaseClaim` must come from
//! the holder; the state machine's own view must match the model.

use super::{ensure, Applied, Check};
use crate::clients::Clients;
use crate::fxhash::FxHashMap as HashMap;
use synod_decision::{Op, OpResult, Outcome, StateMachine};
use synod_types::{Key, NodeId};

/// Invariant name.
pub const NAME: &str = "No claim held by two agents";

/// Per replica: key → (holder, expires_at_ms).
#[derive(Debug)]
pub struct State {
    holders: Vec<HashMap<Key, (String, u64)>>,
}

impl State {
    /// `new` starts from a copy of `donor`'s history (a snapshot).
    pub fn on_join(&mut self, new: NodeId, donor: NodeId) {
        self.holders[new as usize] = self.holders[donor as usize].clone();
    }

    /// For `n` replicas.
    pub fn new(n: usize) -> Self {
        State {
            holders: vec![HashMap::default(); n],
        }
    }

    /// `node` applied these commands; `app` is its state afterwards.
    pub fn on_apply(
        &mut self,
        node: NodeId,
        applied: &[Applied<'_>],
        app: &StateMachine,
        clients: &Clients,
    ) -> Check {
        let model = &mut self.holders[node as usize];
        let mut touched: Vec<Key> = Vec::new();
        for a in applied.iter().filter(|a| a.fresh) {
            let Outcome::Applied { results } = a.outcome else {
                continue;
            };
            let Some(op) = clients.op(a.cmd.client, a.cmd.request) else {
                continue;
            };
            let now = op.decision.issued_at_ms;
            for (o, r) in op.decision.ops.iter().zip(results) {
                match (o, r) {
                    (
                        Op::Claim { key, .. },
                        OpResult::Claim {
                            holder,
                            expires_at_ms,
                            ..
                        },
                    ) => {
                        if let Some((h, exp)) = model.get(key) {
                            ensure(h == holder || now >= *exp, NAME, || {
                                format!(
                                    "n{node}: {holder} claims {key:?} at {now} while {h} holds it until {exp}"
                                )
                            })?;
                        }
                        model.insert(key.clone(), (holder.clone(), *expires_at_ms));
                    }
                    (Op::ReleaseClaim { key, agent }, OpResult::ReleaseClaim) => {
                        let h = model.remove(key);
                        ensure(h.as_ref().is_some_and(|(h, _)| h == agent), NAME, || {
                            format!("n{node}: {agent} released {key:?} held by {h:?}")
                        })?;
                    }
                    _ => {}
                }
            }
            for o in &op.decision.ops {
                if let Op::Claim { key, .. } | Op::ReleaseClaim { key, .. } = o {
                    touched.push(key.clone());
                }
            }
        }
        // `app` is the state after the whole batch, so compare once, at the end.
        for key in touched {
            let sm = app.claim(&key).map(|c| (c.holder.clone(), c.expires_at_ms));
            ensure(sm.as_ref() == model.get(&key), NAME, || {
                format!(
                    "n{node}: state machine says {key:?} is held by {sm:?}, model says {:?}",
                    model.get(&key)
                )
            })?;
        }
        Ok(())
    }
}
