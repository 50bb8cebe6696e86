//! Client sessions: turning a decision into a protocol command
//! (architecture.md §4 "client sessions", epaxos.md §3.9).

use crate::decision::{Decision, RESERVED_KEY_PREFIX};
use std::sync::Arc;
use synod_types::{Access, ClientId, Command, Key};

/// The per-client session key, `"\0session/<client>"`.
///
/// It starts with [`RESERVED_KEY_PREFIX`], which no user key may
/// ([`Decision::validate`]), so it never collides with a user key.
pub fn session_key(client: ClientId) -> Key {
    Key::from(format!("{RESERVED_KEY_PREFIX}session/{client}"))
}

/// Builds the protocol command for request `request` of `client`.
///
/// `keys` = `d.conflict_keys()` plus `(session_key(client), Write)`;
/// `body` = `d.encode()`.
///
/// # Why the session key
///
/// The state machine de-duplicates retries with a per-client watermark: the
/// last applied request number and its recorded outcome
/// ([`crate::StateMachine::apply`]). That watermark is state, and state is only
/// identical across replicas if every replica applies the commands touching
/// it in the same order. EPaxos\* only orders *conflicting* commands the same
/// way everywhere; two commands of one client on disjoint keys could execute
/// in either order on different replicas, and then "is request 7 stale?"
/// would get different answers. Declaring a write on the client's session key
/// makes every pair of this client's commands conflict, so they execute in
/// one order on every replica, and the watermark evolves identically. The
/// cost is that one client's own commands never run in parallel, which a
/// client with one request outstanding does not notice.
///
/// Clients should number requests increasingly and keep one outstanding
/// (or accept that a pipelined request overtaken by a later one is rejected
/// as `StaleRequest`). Call [`Decision::validate`] first for an early error;
/// an invalid decision is still encoded and is rejected, and recorded, at
/// execution.
pub fn command(client: ClientId, request: u64, d: &Decision) -> Command {
    let mut keys = d.conflict_keys();
    keys.push((session_key(client), Access::Write));
    Command {
        keys,
        body: Arc::from(d.encode()),
        client,
        request,
    }
}

/// The client id of sessionless, read-only commands ([`read_command`]).
///
/// Real clients use ids ≥ 1. A command of this client carries no session
/// key and records nothing: the state machine executes it each time it is
/// delivered, which is harmless only because it may hold nothing but `Get`
/// ops (anything else is rejected with [`crate::Reason::SessionRequired`]).
/// Linearizable reads use it, so a read leaves no session behind.
pub const READ_ONLY_CLIENT: ClientId = 0;

/// Builds the protocol command of a read-only decision (every op a `Get`):
/// client [`READ_ONLY_CLIENT`], `request` only for the caller's bookkeeping,
/// `keys` = `d.conflict_keys()` (all reads), no session key. Ordered after
/// every conflicting write committed before it, it reads the latest value:
/// a linearizable read through the protocol.
pub fn read_command(request: u64, d: &Decision) -> Command {
    Command {
        keys: d.conflict_keys(),
        body: Arc::from(d.encode()),
        client: READ_ONLY_CLIENT,
        request,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Op, OpResult, Outcome, Reason, StateMachine, Value};

    #[test]
    fn read_commands_read_and_leave_no_trace() {
        let mut sm = StateMachine::new();
        let w = Decision::new(vec![Op::set_stock("sku", 5)], 0);
        assert!(sm.apply(&command(7, 1, &w)).is_applied());
        let before = sm.digest();
        let r = Decision::new(vec![Op::get("sku")], 0);
        let cmd = read_command(1, &r);
        assert_eq!(cmd.client, READ_ONLY_CLIENT);
        assert!(
            cmd.keys.iter().all(|(_, a)| *a == Access::Read),
            "{:?}",
            cmd.keys
        );
        for _ in 0..3 {
            // Executed on every delivery, same answer, nothing recorded.
            match sm.apply(&cmd) {
                Outcome::Applied { results } => assert_eq!(
                    results,
                    vec![OpResult::Get {
                        version: 1,
                        value: Some(Value::Stock(5))
                    }]
                ),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(sm.digest(), before, "a read changed the state");
        assert!(sm.session(READ_ONLY_CLIENT).is_none());
    }

    #[test]
    fn writes_without_a_session_are_refused() {
        let mut sm = StateMachine::new();
        let before = sm.digest();
        let d = Decision::new(vec![Op::get("a"), Op::put("a", b"x".to_vec())], 0);
        assert_eq!(
            sm.apply(&read_command(1, &d)).reason(),
            Some(&Reason::SessionRequired)
        );
        // Even declaring the session key of client 0 does not help.
        assert_eq!(
            sm.apply(&command(READ_ONLY_CLIENT, 1, &d)).reason(),
            Some(&Reason::SessionRequired)
        );
        assert_eq!(sm.digest(), before);
    }
}
