//! I12 Committed immutability (epaxos.md §6 I12; [inferred]; the #27 class).
//!
//! Once Committed at p, `(cmd, dep)` at p never change, and an incoming
//! Commit for it carries the identical value. (An incoming Accept may
//! legitimately differ when its ballot is below the chosen one: a stale
//! proposal. Accepts above it are covered by I5.)

use super::{ensure, show_payload, Check, WriteCtx};
use crate::node::SimNode;
use synod_epaxos::Message;
use synod_types::Phase;

/// Invariant name.
pub const NAME: &str = "I12 Committed immutability";

/// A record is written.
pub fn on_write(ctx: &WriteCtx<'_>) -> Check {
    if let Some(p) = ctx.prev {
        if p.phase == Phase::Committed {
            ensure(p.cmd == ctx.rec.cmd && p.dep == ctx.rec.dep, NAME, || {
                format!(
                    "n{} {:?}: committed ({}, {:?}) changed to ({}, {:?})",
                    ctx.node,
                    ctx.id,
                    show_payload(&p.cmd),
                    p.dep,
                    show_payload(&ctx.rec.cmd),
                    ctx.rec.dep
                )
            })?;
        }
    }
    Ok(())
}

/// `msg` is about to be stepped by `to`.
pub fn on_deliver(to: &SimNode, msg: &Message) -> Check {
    if let Message::Commit {
        id, payload, dep, ..
    } = msg
    {
        if let Some(r) = to.volatile_record(*id) {
            if r.phase == Phase::Committed {
                ensure(
                    r.cmd.as_ref() == Some(payload) && &r.dep == dep,
                    NAME,
                    || {
                        format!(
                        "n{} has {id:?} committed as ({}, {:?}) and receives Commit ({}, {dep:?})",
                        to.id,
                        show_payload(&r.cmd),
                        r.dep,
                        show_payload(&Some(payload.clone()))
                    )
                    },
                )?;
            }
        }
    }
    Ok(())
}
