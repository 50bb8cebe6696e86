//! I9 Payload integrity (epaxos.md §6 I9; [inferred from P]).
//!
//! `cmd_p(id) ∈ {⊥, Nop, Op(orig.c)}`; `init_cmd_p(id) ∈ {⊥, orig.c}`;
//! `init_dep_p(id)` is `orig.D0` when `init_cmd` is set and empty otherwise;
//! a Committed non-Nop payload equals `orig.c`. A non-origin can only know
//! a payload of an id whose submission was released.

use super::{ensure, show_payload, Check, Ghost, WriteCtx};
use synod_types::Payload;

/// Invariant name.
pub const NAME: &str = "I9 Payload integrity";

/// A record is written.
pub fn on_write(ghost: &Ghost, ctx: &WriteCtx<'_>) -> Check {
    let (id, r) = (ctx.id, ctx.rec);
    let orig = ghost
        .orig
        .get(&id)
        .or_else(|| ghost.pending_orig[ctx.node as usize].get(&id));
    let Some(o) = orig else {
        ensure(
            r.init_cmd.is_none() && matches!(r.cmd, None | Some(Payload::Nop)),
            NAME,
            || {
                format!(
                    "n{} holds a payload for {id:?} ({}) that was never submitted",
                    ctx.node,
                    show_payload(&r.cmd)
                )
            },
        )?;
        return Ok(());
    };
    match &r.cmd {
        None | Some(Payload::Nop) => {}
        Some(Payload::Op(b)) => ensure(*b == o.batch, NAME, || {
            format!(
                "n{} holds {id:?} with a payload ≠ orig ({})",
                ctx.node,
                show_payload(&r.cmd)
            )
        })?,
    }
    match &r.init_cmd {
        None => ensure(r.init_dep.is_empty(), NAME, || {
            format!(
                "n{} holds {id:?} with init_dep {:?} but init_cmd ⊥",
                ctx.node, r.init_dep
            )
        })?,
        Some(b) => {
            ensure(*b == o.batch, NAME, || {
                format!("n{} holds {id:?} with init_cmd ≠ orig", ctx.node)
            })?;
            ensure(r.init_dep == o.dep, NAME, || {
                format!(
                    "n{} holds {id:?} with init_dep {:?} ≠ D0 {:?}",
                    ctx.node, r.init_dep, o.dep
                )
            })?;
        }
    }
    Ok(())
}
