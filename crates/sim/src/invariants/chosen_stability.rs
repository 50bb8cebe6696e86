//! I5 Chosen stability (epaxos.md §6 I5; [inferred], Paxos).
//!
//! If `(v, D)` is chosen at `b0`, every `Accept(b, id, v', D')` sent with
//! `b > b0` has `(v', D') = (v, D)`.

use super::{ensure, show_payload, Check, Ghost};
use synod_types::{Ballot, CmdId, Deps, Payload};

/// Invariant name.
pub const NAME: &str = "I5 Chosen stability";

/// An `Accept(ballot, id, payload, dep)` is released.
pub fn on_send_accept(
    ghost: &Ghost,
    id: CmdId,
    ballot: Ballot,
    payload: &Payload,
    dep: &Deps,
) -> Check {
    if let Some(c) = ghost.chosen.get(&id) {
        if ballot > c.ballot {
            ensure(&c.payload == payload && &c.dep == dep, NAME, || {
                format!(
                    "Accept({ballot:?}, {id:?}, {}, {dep:?}) sent after ({}, {:?}) was chosen at {:?}",
                    show_payload(&Some(payload.clone())),
                    show_payload(&Some(c.payload.clone())),
                    c.dep,
                    c.ballot
                )
            })?;
        }
    }
    Ok(())
}
