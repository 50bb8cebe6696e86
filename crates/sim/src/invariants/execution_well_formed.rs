//! I16 Execution well-formedness (epaxos.md §6 I16; [P: Fig. 1]).
//!
//! Each id appears at most once in `exec_p` (across restarts: the executor
//! must never return an id already processed); no Nop appears in `exec_p`;
//! an execution carries the committed batch; and if `x ∈ exec_p` and
//! `d ∈ dep_p(x)` with `cmd(d) ≠ Nop`, then either `pos_p(d) < pos_p(x)`, or
//! d and x lie in the same SCC of p's committed graph and their relative
//! order follows `CmdId`.
//!
//! Incrementally (when the executor produces an output): uniqueness, the
//! payload, and for each dependency "already executed or earlier in this
//! output, or later in this output, in x's SCC and greater than x".
//! At quiescence the whole log is checked against Tarjan's SCCs.

use super::{ensure, Check};
use crate::fxhash::{FxHashMap as HashMap, FxHashSet as HashSet};
use crate::node::SimNode;
use synod_epaxos::{Output, Replica};
use synod_types::{CmdId, Payload, Phase};

/// Invariant name.
pub const NAME: &str = "I16 Execution well-formedness";

/// True if `from` reaches `to` through deps, staying inside `within`.
fn reaches(
    node: &SimNode,
    replica: &Replica,
    from: CmdId,
    to: CmdId,
    within: &HashSet<CmdId>,
) -> bool {
    let mut stack = vec![from];
    let mut seen = HashSet::default();
    while let Some(x) = stack.pop() {
        if x == to {
            return true;
        }
        if !seen.insert(x) {
            continue;
        }
        if let Some(r) = replica.instance(x) {
            let deps = super::effective_deps(
                r,
                |d| replica.instance(*d),
                |e, o| node.durable.done_prefix(e, o),
            )
            .unwrap_or_default();
            stack.extend(deps.into_iter().filter(|d| within.contains(d)));
        }
    }
    false
}

/// `node` (before `out` is queued) produced `out` (state after: `replica`).
pub fn on_output(node: &SimNode, replica: &Replica, out: &Output) -> Check {
    let me = node.id;
    let in_out: HashMap<CmdId, usize> = out
        .executions
        .iter()
        .enumerate()
        .map(|(i, e)| (e.id, i))
        .collect();
    ensure(in_out.len() == out.executions.len(), NAME, || {
        format!("n{me}: one output executes an id twice")
    })?;
    let batch_ids: HashSet<CmdId> = in_out.keys().copied().collect();
    for (i, ex) in out.executions.iter().enumerate() {
        let x = ex.id;
        ensure(!node.executed_or_pending(x), NAME, || {
            format!("n{me} executes {x:?} again (already executed or pending execution)")
        })?;
        let rec = replica.instance(x).expect("checked by I15");
        ensure(rec.phase == Phase::Committed, NAME, || {
            format!("n{me} executes uncommitted {x:?}")
        })?;
        ensure(rec.cmd == Some(Payload::Op(ex.batch.clone())), NAME, || {
            format!(
                "n{me} executes {x:?} with a batch other than its committed payload ({})",
                super::show_payload(&rec.cmd)
            )
        })?;
        let deps = match super::effective_deps(
            rec,
            |d| replica.instance(*d),
            |e, o| node.durable.done_prefix(e, o),
        ) {
            Ok(d) => d,
            Err(d) => {
                return ensure(false, NAME, || {
                    format!(
                        "n{me} executes {x:?} whose dependency floor covers {d:?}, unknown there"
                    )
                })
            }
        };
        for d in &deps {
            let Some(dr) = replica.instance(*d) else {
                continue; // I15 reports it
            };
            if matches!(dr.cmd, Some(Payload::Nop)) {
                continue;
            }
            if node.executed_or_pending(*d) {
                continue;
            }
            match in_out.get(d) {
                Some(j) if *j < i => {}
                Some(_) => {
                    ensure(
                        *d > x && reaches(node, replica, *d, x, &batch_ids),
                        NAME,
                        || {
                            format!(
                            "n{me} executes {x:?} before its dependency {d:?}, which is not in its SCC \
                             or orders before it by CmdId"
                        )
                        },
                    )?;
                }
                None => {
                    ensure(false, NAME, || {
                        format!("n{me} executes {x:?} while its non-Nop dependency {d:?} is not executed")
                    })?
                }
            }
        }
    }
    Ok(())
}

/// Tarjan's SCCs of the committed graph of `node`; returns the component
/// index of every committed id.
fn components(node: &SimNode) -> HashMap<CmdId, usize> {
    let recs = &node.durable.records;
    let committed: Vec<CmdId> = recs
        .iter()
        .filter(|(_, r)| r.phase == Phase::Committed)
        .map(|(id, _)| *id)
        .collect();
    let mut index: HashMap<CmdId, (usize, usize)> = HashMap::default(); // (index, lowlink)
    let mut on_stack: HashSet<CmdId> = HashSet::default();
    let mut stack: Vec<CmdId> = Vec::new();
    let mut comp: HashMap<CmdId, usize> = HashMap::default();
    let mut next = 0usize;
    let mut ncomp = 0usize;
    for &root in &committed {
        if index.contains_key(&root) {
            continue;
        }
        // Iterative DFS: (node, its deps, next dep position).
        let mut work: Vec<(CmdId, Vec<CmdId>, usize)> = Vec::new();
        let deps_of = |x: CmdId| -> Vec<CmdId> {
            recs.get(&x)
                .filter(|r| r.phase == Phase::Committed)
                .map(|r| {
                    super::effective_deps(r, |d| recs.get(d), |e, o| node.durable.done_prefix(e, o))
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|d| recs.get(d).is_some_and(|r| r.phase == Phase::Committed))
                        .collect()
                })
                .unwrap_or_default()
        };
        index.insert(root, (next, next));
        next += 1;
        stack.push(root);
        on_stack.insert(root);
        work.push((root, deps_of(root), 0));
        while let Some((v, deps, pos)) = work.last_mut() {
            let v = *v;
            if *pos < deps.len() {
                let w = deps[*pos];
                *pos += 1;
                if let std::collections::hash_map::Entry::Vacant(e) = index.entry(w) {
                    e.insert((next, next));
                    next += 1;
                    stack.push(w);
                    on_stack.insert(w);
                    let dw = deps_of(w);
                    work.push((w, dw, 0));
                } else if on_stack.contains(&w) {
                    let wi = index[&w].0;
                    let e = index.get_mut(&v).expect("indexed");
                    e.1 = e.1.min(wi);
                }
            } else {
                work.pop();
                let (vi, vl) = index[&v];
                if let Some((u, _, _)) = work.last() {
                    let e = index.get_mut(u).expect("indexed");
                    e.1 = e.1.min(vl);
                }
                if vi == vl {
                    loop {
                        let w = stack.pop().expect("tarjan stack");
                        on_stack.remove(&w);
                        comp.insert(w, ncomp);
                        if w == v {
                            break;
                        }
                    }
                    ncomp += 1;
                }
            }
        }
    }
    comp
}

/// Whole-log check of every replica. Tarjan's SCCs are only computed for
/// a replica whose log has a dependency executed after its dependent (a
/// cycle, or a bug).
pub fn final_check(nodes: &[SimNode]) -> Check {
    for node in nodes {
        let me = node.id;
        let log = &node.durable.exec_log;
        let pos: HashMap<CmdId, usize> = log.iter().enumerate().map(|(i, x)| (*x, i)).collect();
        ensure(pos.len() == log.len(), NAME, || {
            format!("n{me}: exec log has duplicates")
        })?;
        let mut later: Vec<(CmdId, CmdId)> = Vec::new(); // (x, d): d ∈ dep(x) runs after x
        for (i, x) in log.iter().enumerate() {
            let rec = node.durable.records.get(x);
            ensure(
                rec.is_some_and(|r| {
                    r.phase == Phase::Committed && matches!(r.cmd, Some(Payload::Op(_)))
                }),
                NAME,
                || format!("n{me}: executed {x:?} is not a committed non-Nop"),
            )?;
            // Floors are checked where it matters, as each output is
            // produced (`on_output`): by the end every id a floor covers is
            // done, so only the explicit ids remain to order here.
            let deps = match super::effective_deps(
                rec.expect("checked"),
                |d| node.durable.records.get(d),
                |e, o| node.durable.done_prefix(e, o),
            ) {
                Ok(d) => d,
                Err(d) => {
                    return ensure(false, NAME, || {
                        format!("n{me}: the dependency floor of {x:?} covers {d:?}, unknown there")
                    })
                }
            };
            for d in &deps {
                let Some(dr) = node.durable.records.get(d) else {
                    return ensure(false, NAME, || {
                        format!("n{me}: dependency {d:?} of {x:?} unknown")
                    });
                };
                if matches!(dr.cmd, Some(Payload::Nop)) {
                    continue;
                }
                let Some(&j) = pos.get(d) else {
                    return ensure(false, NAME, || {
                        format!("n{me}: {x:?} executed but its dependency {d:?} never was")
                    });
                };
                if j > i || (j < i && d > x) {
                    // Either out of dependency order or, inside an SCC, out
                    // of CmdId order: needs the SCCs to judge.
                    later.push((*x, *d));
                }
            }
        }
        if later.is_empty() {
            continue;
        }
        let comp = components(node);
        for (x, d) in later {
            let (i, j) = (pos[&x], pos[&d]);
            let same_scc = comp.contains_key(&d) && comp.get(&d) == comp.get(&x);
            if same_scc {
                ensure((j < i) == (d < x), NAME, || {
                    format!("n{me}: {x:?} and {d:?} share an SCC but execute out of CmdId order")
                })?;
            } else {
                ensure(j < i, NAME, || {
                    format!("n{me}: {x:?} executed before its dependency {d:?} (different SCCs)")
                })?;
            }
        }
    }
    Ok(())
}
