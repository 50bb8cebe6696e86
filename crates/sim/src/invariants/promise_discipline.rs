//! I14 Promise discipline (epaxos.md §6 I14; [P: l. 47, 82, 27]).
//!
//! `RecoverOk(b)`, `ValidateOk(b)` and `AcceptOk(b)` are created by q only
//! when `bal_q = b` after the step that creates them (so the promise they
//! report is in the same output's writes or already written).

use super::{ensure, Check};
use synod_epaxos::{Envelope, Message, Replica};
use synod_types::NodeId;

/// Invariant name.
pub const NAME: &str = "I14 Promise discipline";

/// `me` (state after the step: `replica`) created `env`.
pub fn on_create(replica: &Replica, me: NodeId, env: &Envelope) -> Check {
    let (id, ballot) = match &env.msg {
        Message::RecoverOk { id, ballot, .. }
        | Message::ValidateOk { id, ballot, .. }
        | Message::AcceptOk { id, ballot } => (*id, *ballot),
        _ => return Ok(()),
    };
    let bal = replica.instance(id).map(|r| r.bal);
    ensure(bal == Some(ballot), NAME, || {
        format!(
            "n{me} sends {}({ballot:?}, {id:?}) to n{} while its bal is {bal:?}",
            env.msg.kind(),
            env.to
        )
    })
}
