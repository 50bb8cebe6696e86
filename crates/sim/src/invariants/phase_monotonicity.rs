//! I11 Phase monotonicity (epaxos.md §6 I11; [inferred]; [P] for Validate).
//!
//! `phase` never decreases, so Committed is final (§3.7.2). Validate never
//! changes `phase`, `dep`, `bal` or `abal`.

use super::{ensure, Check, Input, WriteCtx};

/// Invariant name.
pub const NAME: &str = "I11 Phase monotonicity";

/// A record is written.
pub fn on_write(ctx: &WriteCtx<'_>) -> Check {
    let Some(p) = ctx.prev else {
        return Ok(());
    };
    let r = ctx.rec;
    ensure(r.phase >= p.phase, NAME, || {
        format!(
            "n{} {:?}: phase {:?} → {:?}",
            ctx.node, ctx.id, p.phase, r.phase
        )
    })?;
    if let Input::Step {
        kind: "Validate",
        id,
        ..
    } = ctx.input
    {
        if id == Some(ctx.id) {
            ensure(
                r.phase == p.phase && r.dep == p.dep && r.bal == p.bal && r.abal == p.abal,
                NAME,
                || {
                    format!(
                        "n{} {:?}: Validate changed phase/dep/bal/abal: {} → {}",
                        ctx.node,
                        ctx.id,
                        super::show_record(p),
                        super::show_record(r)
                    )
                },
            )?;
        }
    }
    Ok(())
}
