//! I20 Durability (epaxos.md §6 I20, §2.4; [inferred], efficient/epaxos#28).
//!
//! After a simulated crash that discards every un-fsynced write, no message,
//! execution or reply that was already released depends on a discarded
//! write (an output's releases depend on its own writes and on every
//! earlier output's). And a restarted replica resumes from exactly its
//! durable state.

use super::{ensure, Check};
use crate::node::{PendingOutput, SimNode};
use synod_epaxos::Write;
use synod_types::NodeId;

/// Invariant name.
pub const NAME: &str = "I20 Durability";

/// `node` crashed and lost `lost`.
pub fn on_crash(node: NodeId, lost: &[PendingOutput]) -> Check {
    let mut any_released = false;
    let mut discarded: Vec<String> = Vec::new();
    // Releases of an output depend on the writes of it and of every earlier
    // output; the broken variant releases in order, so find the last
    // released output and collect every discarded write up to it.
    let last_released = lost.iter().rposition(|p| p.released);
    if let Some(last) = last_released {
        for p in &lost[..=last] {
            any_released |= p.released;
            for w in &p.output.writes {
                discarded.push(match w {
                    Write::Instance { id, record } => format!("{id:?}→{:?}", record.phase),
                    Write::NextSeq(s) => format!("next_seq {s}"),
                    other => format!("{other:?}"),
                });
            }
        }
    }
    ensure(!any_released || discarded.is_empty(), NAME, || {
        format!(
            "n{node} crashed and lost writes [{}] whose outputs' messages/executions were already released",
            discarded.join(", ")
        )
    })
}

/// `node` was rebuilt from its durable state.
pub fn on_restart(node: &SimNode) -> Check {
    let replica = node.replica.as_ref().expect("restarted");
    for (id, rec) in &node.durable.records {
        let got = replica.instance(*id);
        ensure(got == Some(rec), NAME, || {
            format!(
                "n{} restarted with {id:?} = {} but its durable record is {}",
                node.id,
                got.map_or("none".into(), super::show_record),
                super::show_record(rec)
            )
        })?;
    }
    for x in &node.durable.executed {
        ensure(replica.is_processed(*x), NAME, || {
            format!(
                "n{} restarted without executed {x:?} marked processed",
                node.id
            )
        })?;
    }
    Ok(())
}
