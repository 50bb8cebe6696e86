//! Stock never below zero (quality-bars.md R7 "stock never below zero";
//! architecture.md §4 `reserve` "never oversell").
//!
//! The counter type cannot go negative, so the check is on accounting: at
//! every replica, after every execution, the inventory counter equals the
//! stock set minus the sum of the reservations it granted, and that sum
//! never exceeds the stock set.

use super::{ensure, Applied, Check};
use crate::clients::Clients;
use crate::node::SimNode;
use crate::workload::INVENTORY_KEY;
use synod_decision::{Op, OpResult, Outcome, StateMachine};
use synod_types::NodeId;

/// Invariant name.
pub const NAME: &str = "Stock never below zero";

#[derive(Clone, Debug, Default)]
struct Account {
    stock_set: Option<u64>,
    reserved: u64,
}

/// Per-replica accounting of the inventory counter.
#[derive(Debug)]
pub struct State {
    accounts: Vec<Account>,
}

impl State {
    /// `new` starts from a copy of `donor`'s history (a snapshot).
    pub fn on_join(&mut self, new: NodeId, donor: NodeId) {
        self.accounts[new as usize] = self.accounts[donor as usize].clone();
    }

    /// For `n` replicas.
    pub fn new(n: usize) -> Self {
        State {
            accounts: vec![Account::default(); n],
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
        let acct = &mut self.accounts[node as usize];
        let mut touched = false;
        for a in applied.iter().filter(|a| a.fresh) {
            let Outcome::Applied { results } = a.outcome else {
                continue;
            };
            let Some(op) = clients.op(a.cmd.client, a.cmd.request) else {
                continue;
            };
            for (o, r) in op.decision.ops.iter().zip(results) {
                match (o, r) {
                    (Op::SetStock { key, qty }, _) if &**key == INVENTORY_KEY => {
                        acct.stock_set = Some(*qty);
                        acct.reserved = 0;
                        touched = true;
                    }
                    (Op::Reserve { key, qty }, OpResult::Reserve { remaining, .. })
                        if &**key == INVENTORY_KEY =>
                    {
                        acct.reserved += qty;
                        touched = true;
                        let set = acct.stock_set.unwrap_or(0);
                        ensure(acct.reserved <= set, NAME, || {
                            format!(
                                "n{node} granted {} units of a stock of {set}",
                                acct.reserved
                            )
                        })?;
                        ensure(*remaining == set - acct.reserved, NAME, || {
                            format!(
                                "n{node}: reserve left {remaining}, accounting says {}",
                                set - acct.reserved
                            )
                        })?;
                    }
                    _ => {}
                }
            }
        }
        if touched {
            let want = acct.stock_set.map(|s| s - acct.reserved);
            let got = app.stock(INVENTORY_KEY);
            ensure(got == want, NAME, || {
                format!("n{node}: inventory is {got:?}, accounting says {want:?}")
            })?;
        }
        Ok(())
    }

    /// Every live replica granted the same total (a replica dead for good
    /// since the heal stopped executing early).
    pub fn final_check(&self, nodes: &[SimNode]) -> Check {
        let mut live = nodes.iter().filter(|n| !n.dead);
        let Some(first) = live.next() else {
            return Ok(());
        };
        let (f, want) = (first.id, self.accounts[first.id as usize].reserved);
        for n in live {
            let r = self.accounts[n.id as usize].reserved;
            ensure(r == want, NAME, || {
                format!("n{} granted {r} units, n{f} granted {want}", n.id)
            })?;
        }
        Ok(())
    }
}
