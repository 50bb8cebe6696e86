//! I10 Ballot monotonicity (epaxos.md §6 I10; [P] + [inferred]).
//!
//! At every process and id, `bal` and `abal` never decrease, across restarts
//! too (a restart resumes from the durable record), and `abal ≤ bal`.

use super::{ensure, Check, WriteCtx};

/// Invariant name.
pub const NAME: &str = "I10 Ballot monotonicity";

/// A record is written.
pub fn on_write(ctx: &WriteCtx<'_>) -> Check {
    let r = ctx.rec;
    ensure(r.abal <= r.bal, NAME, || {
        format!(
            "n{} {:?}: abal {:?} > bal {:?}",
            ctx.node, ctx.id, r.abal, r.bal
        )
    })?;
    if let Some(p) = ctx.prev {
        ensure(r.bal >= p.bal, NAME, || {
            format!("n{} {:?}: bal {:?} → {:?}", ctx.node, ctx.id, p.bal, r.bal)
        })?;
        ensure(r.abal >= p.abal, NAME, || {
            format!(
                "n{} {:?}: abal {:?} → {:?}",
                ctx.node, ctx.id, p.abal, r.abal
            )
        })?;
    }
    Ok(())
}
