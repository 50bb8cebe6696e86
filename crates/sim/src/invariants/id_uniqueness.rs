//! I21 Id uniqueness (epaxos.md §6 I21, §2.2; [inferred]).
//!
//! No two submissions ever share a `CmdId`, across restarts. Observable
//! submissions (durable or released) are compared when they become
//! observable; and every submission's `seq` must be covered by a `NextSeq`
//! high-water mark persisted with it (or earlier), so a restart cannot reuse
//! it.

use super::{ensure, Check, Ghost, Orig, WriteCtx};
use crate::node::SimNode;
use synod_epaxos::{Output, Write};
use synod_types::{CmdId, Phase};

/// Invariant name.
pub const NAME: &str = "I21 Id uniqueness";

/// True if the write is the origin creating a new instance (normally
/// PreAccepted; a broken fast quorum may commit it in the same step).
pub fn is_submission(ctx: &WriteCtx<'_>) -> bool {
    ctx.node == ctx.id.origin
        && ctx.prev.is_none()
        && ctx.rec.phase >= Phase::PreAccepted
        && ctx.rec.init_cmd.is_some()
}

/// `node` (before queuing `out`) submitted `submitted` in `out`.
pub fn on_output(node: &SimNode, submitted: &[CmdId], out: &Output) -> Check {
    if submitted.is_empty() {
        return Ok(());
    }
    let next_seq = |ws: &[Write]| {
        ws.iter()
            .filter_map(|w| match w {
                Write::NextSeq(s) => Some(*s),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    };
    let durable_epoch = node
        .durable
        .epoch_log
        .iter()
        .filter_map(|w| match w {
            Write::Epoch(c) => Some(c.epoch),
            _ => None,
        })
        .next_back()
        .unwrap_or(0);
    if submitted.iter().any(|id| id.epoch != durable_epoch) {
        // The node learned a new epoch whose `Epoch` write is not durable
        // yet: ids restart at 0 there, so only the high-water marks written
        // after that `Epoch` write count.
        let mut mark = 0u64;
        let all = node
            .pending
            .iter()
            .flat_map(|p| p.output.writes.iter())
            .chain(out.writes.iter());
        for w in all {
            match w {
                Write::Epoch(_) => mark = 0,
                Write::NextSeq(s) => mark = mark.max(*s),
                _ => {}
            }
        }
        for id in submitted {
            ensure(id.seq < mark, NAME, || {
                format!(
                    "n{} submits {id:?} without persisting a next_seq above it in its epoch (highest: {mark})",
                    node.id
                )
            })?;
        }
        return Ok(());
    }
    let durable = node.durable.next_seq;
    let pending = node
        .pending
        .iter()
        .map(|p| next_seq(&p.output.writes))
        .max()
        .unwrap_or(0);
    let covered = durable.max(pending).max(next_seq(&out.writes));
    for id in submitted {
        ensure(id.seq >= durable, NAME, || {
            format!(
                "n{} submits {id:?} below its durable next_seq {durable}",
                node.id
            )
        })?;
        ensure(id.seq < covered, NAME, || {
            format!(
                "n{} submits {id:?} without persisting a next_seq above it (highest: {covered})",
                node.id
            )
        })?;
    }
    Ok(())
}

/// A submission became observable.
pub fn on_orig(ghost: &mut Ghost, id: CmdId, o: Orig) -> Check {
    match ghost.orig.get(&id) {
        Some(old) => ensure(*old == o, NAME, || {
            format!("{id:?} was submitted twice with different contents")
        }),
        None => {
            ghost.orig.insert(id, o);
            Ok(())
        }
    }
}
