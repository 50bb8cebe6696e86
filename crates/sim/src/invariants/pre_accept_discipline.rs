//! I13 PreAccept discipline (epaxos.md §6 I13; [P: l. 12–16]).
//!
//! `PreAccepted` is entered only from `Initial` (or no record) while `bal`
//! is initial; while PreAccepted, `dep ⊇ init_dep` and `dep` is unchanged.

use super::{ensure, Check, WriteCtx};
use synod_types::Phase;

/// Invariant name.
pub const NAME: &str = "I13 PreAccept discipline";

/// A record is written.
pub fn on_write(ctx: &WriteCtx<'_>) -> Check {
    let r = ctx.rec;
    if r.phase != Phase::PreAccepted {
        return Ok(());
    }
    let (node, id) = (ctx.node, ctx.id);
    ensure(r.init_dep.is_subset(&r.dep), NAME, || {
        format!(
            "n{node} {id:?}: PreAccepted with dep {:?} ⊉ init_dep {:?}",
            r.dep, r.init_dep
        )
    })?;
    match ctx.prev {
        Some(p) if p.phase == Phase::PreAccepted => ensure(p.dep == r.dep, NAME, || {
            format!(
                "n{node} {id:?}: dep changed while PreAccepted: {:?} → {:?}",
                p.dep, r.dep
            )
        }),
        Some(p) => ensure(
            p.phase == Phase::Initial && p.bal.is_initial(),
            NAME,
            || {
                format!(
                    "n{node} {id:?}: entered PreAccepted from {:?} at bal {:?}",
                    p.phase, p.bal
                )
            },
        ),
        None => ensure(r.bal.is_initial(), NAME, || {
            format!("n{node} {id:?}: entered PreAccepted at bal {:?}", r.bal)
        }),
    }
}
