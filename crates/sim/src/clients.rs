//! Closed-loop clients and the history they record.
//!
//! Each client has at most one outstanding request. It proposes the
//! request's command at a live replica (its home replica when that one is
//! up, which keeps a client's own commands, which all conflict through its
//! session key, from needlessly landing on different coordinators); it
//! retries the SAME `(client, request)` at another replica when the
//! instance is aborted (committed as Nop), when its replica crashes, or
//! after a timeout. Sessions make retries exactly-once (epaxos.md §3.9).
//! A request given up on before a reply is indeterminate in the history.

use crate::fxhash::FxHashMap as HashMap;
use crate::network::Time;
use synod_decision::{Decision, Outcome};
use synod_types::{ClientId, Command, NodeId};

/// One client operation as the history checker sees it.
#[derive(Clone, Debug)]
pub struct HistoryOp {
    /// Client session.
    pub client: ClientId,
    /// Request number (a retry reuses it).
    pub request: u64,
    /// What was proposed.
    pub decision: Decision,
    /// Virtual time of the first proposal.
    pub invoked_at: Time,
    /// Virtual time and outcome of the reply; `None` if never learned
    /// (indeterminate).
    pub completed: Option<(Time, Outcome)>,
}

/// The request a client waits on.
#[derive(Clone, Debug)]
pub struct Outstanding {
    /// Request number.
    pub request: u64,
    /// Index into the history.
    pub history_index: usize,
    /// The protocol command (same for every attempt).
    pub command: Command,
    /// Replica of the current attempt.
    pub node: NodeId,
    /// Attempt number, from 1; stale timeouts carry an older one.
    pub attempt: u32,
}

/// One closed-loop client.
#[derive(Clone, Debug)]
pub struct Client {
    /// Session id.
    pub id: ClientId,
    /// Preferred replica.
    pub home: NodeId,
    /// Next request number (requests start at 1).
    pub next_request: u64,
    /// The request in flight, if any.
    pub outstanding: Option<Outstanding>,
}

/// All clients plus the history.
#[derive(Clone, Debug, Default)]
pub struct Clients {
    /// Clients by index.
    pub clients: Vec<Client>,
    /// Every operation ever invoked, in invocation order.
    pub history: Vec<HistoryOp>,
    by_request: HashMap<(ClientId, u64), usize>,
    /// Requests answered.
    pub answered: u64,
    /// Requests given up on.
    pub indeterminate: u64,
}

impl Clients {
    /// `count` idle clients with ids `1..=count`, homes spread over `n`
    /// replicas.
    pub fn new(count: usize, n: usize) -> Self {
        Clients {
            clients: (0..count)
                .map(|i| Client {
                    id: i as ClientId + 1,
                    home: (i % n) as NodeId,
                    next_request: 1,
                    outstanding: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Records a new operation of client index `c` and makes it
    /// outstanding at `node`. Returns the command to propose.
    pub fn invoke(&mut self, c: usize, decision: Decision, node: NodeId, now: Time) -> Command {
        let client = &mut self.clients[c];
        assert!(client.outstanding.is_none(), "one outstanding request");
        let request = client.next_request;
        client.next_request += 1;
        let command = synod_decision::command(client.id, request, &decision);
        let history_index = self.history.len();
        self.history.push(HistoryOp {
            client: client.id,
            request,
            decision,
            invoked_at: now,
            completed: None,
        });
        self.by_request.insert((client.id, request), history_index);
        client.outstanding = Some(Outstanding {
            request,
            history_index,
            command: command.clone(),
            node,
            attempt: 1,
        });
        command
    }

    /// The client index waiting on `(client, request)` at `node`, if any.
    pub fn waiting_at(&self, client: ClientId, request: u64, node: NodeId) -> Option<usize> {
        let c = client.checked_sub(1)? as usize;
        let cl = self.clients.get(c)?;
        match &cl.outstanding {
            Some(o) if o.request == request && o.node == node => Some(c),
            _ => None,
        }
    }

    /// Completes client `c`'s outstanding request with `outcome`.
    pub fn complete(&mut self, c: usize, outcome: Outcome, now: Time) {
        let o = self.clients[c]
            .outstanding
            .take()
            .expect("completing an outstanding request");
        let op = &mut self.history[o.history_index];
        debug_assert!(op.completed.is_none());
        op.completed = Some((now, outcome));
        self.answered += 1;
    }

    /// Gives up on client `c`'s outstanding request (indeterminate).
    pub fn give_up(&mut self, c: usize) {
        if self.clients[c].outstanding.take().is_some() {
            self.indeterminate += 1;
        }
    }

    /// The history entry of `(client, request)`.
    pub fn op(&self, client: ClientId, request: u64) -> Option<&HistoryOp> {
        self.by_request
            .get(&(client, request))
            .map(|&i| &self.history[i])
    }

    /// True if no client has a request in flight.
    pub fn all_idle(&self) -> bool {
        self.clients.iter().all(|c| c.outstanding.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_decision::Op;

    #[test]
    fn invoke_complete_round_trip() {
        let mut cs = Clients::new(2, 3);
        assert_eq!(cs.clients[1].home, 1);
        let d = Decision::new(vec![Op::get("k")], 0);
        let cmd = cs.invoke(1, d, 2, 10);
        assert_eq!((cmd.client, cmd.request), (2, 1));
        assert_eq!(cs.waiting_at(2, 1, 2), Some(1));
        assert_eq!(cs.waiting_at(2, 1, 0), None);
        assert!(!cs.all_idle());
        cs.complete(
            1,
            Outcome::Applied {
                results: Vec::new(),
            },
            20,
        );
        assert!(cs.all_idle());
        assert_eq!(cs.op(2, 1).unwrap().completed.as_ref().unwrap().0, 20);
        assert_eq!(cs.clients[1].next_request, 2);
    }

    #[test]
    fn give_up_leaves_op_indeterminate() {
        let mut cs = Clients::new(1, 3);
        cs.invoke(0, Decision::new(vec![Op::get("k")], 0), 0, 0);
        cs.give_up(0);
        assert!(cs.all_idle());
        assert!(cs.history[0].completed.is_none());
        assert_eq!(cs.indeterminate, 1);
    }
}
