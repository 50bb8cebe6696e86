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
