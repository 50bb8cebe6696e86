//! I8 Nop shape (epaxos.md §6 I8; [P: l. 56, 66, …]).
//!
//! Any `Accept` or `Commit` with payload Nop has `dep = ∅`; any Accepted or
//! Committed Nop record has `dep = ∅`.

use super::{ensure, Check, WriteCtx};
use synod_epaxos::Message;
use synod_types::{Payload, Phase};

/// Invariant name.
pub const NAME: &str = "I8 Nop shape";

/// A record is written.
pub fn on_write(ctx: &WriteCtx<'_>) -> Check {
    let r = ctx.rec;
    if r.phase >= Phase::Accepted && matches!(r.cmd, Some(Payload::Nop)) {
        ensure(r.dep.is_empty(), NAME, || {
            format!(
                "n{} holds {:?} {:?} Nop with deps {:?}",
                ctx.node, ctx.id, r.phase, r.dep
            )
        })?;
    }
    Ok(())
}

/// A message is released.
pub fn on_send(msg: &Message) -> Check {
    match msg {
        Message::Accept {
            id,
            payload: Payload::Nop,
            dep,
            ..
        }
        | Message::Commit {
            id,
            payload: Payload::Nop,
            dep,
            ..
        } => ensure(dep.is_empty(), NAME, || {
            format!("{} of Nop for {id:?} with deps {dep:?}", msg.kind())
        }),
        _ => Ok(()),
    }
}
