//! Committed dependency graph → deterministic execution order
//! (`shared/design/epaxos.md` §5).
//!
//! Pure and event-driven: the caller reports commits, the executor returns the
//! ids that became executable, in the one order every replica computes
//! (Tarjan SCCs emitted dependencies first, `CmdId` order inside an SCC, Nops
//! processed but never returned). It never blocks: when a committed id's
//! closure reaches an id that is not committed locally, it records what it is
//! blocked on so the core can start recovery (epaxos.md §4.1 trigger 1).
//!
//! # The rule (epaxos.md §5.1)
//!
//! The graph has an edge `id → d` for every `d ∈ dep[id]`. A committed id is
//! *ready* iff every id reachable from it (through ids not yet processed) is
//! committed locally. Ready ids are split into strongly connected components,
//! emitted sink-first (every component after the components it points to), and
//! inside a component in increasing [`CmdId`] order.
//!
//! # Why the order is the same on every replica (epaxos.md §5.3, I17)
//!
//! An SCC is emitted only when its whole reachable closure is committed here.
//! The committed `(cmd, dep)` of an id is identical on every replica
//! (Agreement), so once the closure of `x` is committed locally, the set of ids
//! reachable from `x`, and therefore the component of `x`, is the same as in the
//! eventual global graph, whatever order the commits arrived in. For two
//! conflicting ids, Visibility puts an edge between them: with one edge the
//! target is emitted first everywhere; with edges both ways they share a
//! component and `CmdId` decides. Ids that do not conflict and do not depend on
//! each other may be emitted in different relative orders on different
//! replicas; that is allowed.
//!
//! # How it stays incremental
//!
//! After every call, each committed-but-unprocessed id is *parked*: it sits
//! in a group whose *blocker* is one uncommitted id it provably reaches.
//! Groups are a union–find forest; [`Executor::commit`] of `m` only looks at
//! `m` itself and, through the group parked on `m`, at the ids that may have
//! become ready:
//!
//! 1. Tarjan runs from `m` over unprocessed committed ids. A parked id is a
//!    leaf: everything that reaches it is blocked too, so its component does
//!    not matter. An SCC whose members reach an uncommitted id, or a parked
//!    id, is *tainted*: all its members are parked on that blocker and nothing
//!    in it runs. Untainted SCCs are exactly the ready components and run.
//! 2. If `m` itself got parked behind `w`, everything that was parked on `m`
//!    still reaches `w` through `m`: the two groups are merged in O(α) instead
//!    of re-exploring them. This keeps a chain committed in reverse order
//!    linear instead of quadratic.
//! 3. If `m` ran, the group parked on `m` is dissolved and its members are
//!    re-explored, sharing one Tarjan pass, so each id is visited at most once
//!    per pass.
//!
//! An id that becomes ready because of `m` reaches `m` and no other missing
//! id, so it was in `m`'s group: nothing else needs a rescan. The cost of a
//! commit is the size of the closure explored from `m` (cut at parked ids)
//! plus, when `m` runs, the size of the dissolved group and its closure.
//! Worst case: when `m` runs but most of its group is also blocked on other
//! missing ids, that group is re-explored and re-parked, so a long backlog
//! waiting on many different missing ids can cost more than the work that
//! became unblocked (epaxos.md §5.4 livelock discussion).
//!
//! # What the caller must know
//!
//! * Concatenating the outputs of all `commit` calls gives this replica's
//!   execution sequence `exec_p`. Apply each output in order, and persist the
//!   processed set atomically with the application state (epaxos.md §5.2):
//!   Nops are processed too but are never returned, so ask
//!   [`Executor::is_processed`] or keep the executed ids and the committed Nops.
//! * After a restart, build the executor with [`Executor::restore`] from that
//!   persisted set, then commit every committed instance that is **not**
//!   processed (in any order). Committing a processed or already committed id
//!   panics: it would be the #27 "shifting sands" bug (epaxos.md §5.3).
//! * `deps` must be the explicit ids of the committed (agreed) dependency
//!   set, unchanged, plus every id its floor covers that is not processed
//!   here (`synod_types::Deps`; the replica expands the floor, which is
//!   empty of unprocessed ids except while re-executing after a restart).
//! * [`Executor::blocked_on`] is the set of uncommitted ids the pending ids
//!   wait on; the core arms `T_exec` and recovers them (epaxos.md §4.1).
//! * Processed ids are remembered forever; metadata GC is an open question
//!   (epaxos.md §10.6).

#![deny(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use synod_types::CmdId;

/// Identifies a group of parked ids. It is the blocker the group was created
/// for, which is unique: an id is a blocker only while it is uncommitted, and
/// a group is created for it at most once in that time.
type GroupKey = CmdId;

/// The executor. See the crate docs.
#[derive(Debug, Default)]
pub struct Executor {
    /// Committed, not yet processed ids. An id enters on `commit` and leaves
    /// when its SCC is processed; between calls every entry is parked.
    pending: BTreeMap<CmdId, Pending>,
    /// Executed ids and skipped Nops. Never shrinks: processed ids are never
    /// revisited and edges into them count as satisfied.
    processed: BTreeSet<CmdId>,
    /// Uncommitted ids that some pending id has as a direct dependency. Every
    /// uncommitted id reachable from a pending id is one (uncommitted ids have
    /// no known edges), so this is the exact answer of `blocked_on`. An id
    /// leaves when it is committed; pending ids are only processed once all
    /// their deps are committed, so nothing else removes entries.
    missing: BTreeSet<CmdId>,
    /// Uncommitted id → root of the group parked on it. Removed when that id
    /// is committed (the group is then suspended, then merged or dissolved).
    waiters: BTreeMap<CmdId, GroupKey>,
    /// The union–find forest of parked groups.
    groups: BTreeMap<GroupKey, Group>,
    /// Dependency edges and roots examined so far. Lets tests check that the
    /// work stays proportional to what is explored, not to the graph size.
    work_total: u64,
}

/// A committed, unprocessed id.
#[derive(Debug)]
struct Pending {
    /// The committed deps minus the id itself and ids processed at commit
    /// time (those are satisfied forever). Sorted, so exploration order is
    /// deterministic.
    deps: Box<[CmdId]>,
    /// The committed payload is Nop: processed, never returned.
    nop: bool,
    /// The group this id is parked in (possibly a non-root member of the
    /// forest). `None` only while being (re)explored inside one call.
    group: Option<GroupKey>,
    /// Tarjan bookkeeping, `Some` exactly while the id is on the Tarjan stack
    /// of the running pass.
    mark: Option<Mark>,
}

/// Tarjan state of one id during a pass.
#[derive(Clone, Copy, Debug)]
struct Mark {
    index: usize,
    lowlink: usize,
    /// An uncommitted id this id reaches through an edge leaving its SCC (a
    /// missing dep, or the blocker of a parked dep). The SCC is tainted iff
    /// some member has one.
    witness: Option<CmdId>,
}

/// A set of parked ids that all reach `blocker`.
#[derive(Debug)]
struct Group {
    /// `None` for a root. Only roots carry `blocker`, `members`, `children`.
    parent: Option<GroupKey>,
    /// The uncommitted id every member reaches. `None` while the root is
    /// suspended: its blocker was just committed and the commit is deciding
    /// whether to merge it into the new blocker's group or to dissolve it.
    blocker: Option<CmdId>,
    /// Ids parked in this tree. May hold stale entries (ids since processed
    /// or re-parked elsewhere) and duplicates; both are skipped on dissolve.
    members: Vec<CmdId>,
    /// Every non-root group of this tree, so a dissolve frees them all.
    children: Vec<GroupKey>,
}

/// What an edge `v → w` leads to, from the point of view of a Tarjan pass.
enum Target {
    /// Processed: satisfied, ignored.
    Done,
    /// `w` is uncommitted, or parked behind this uncommitted id.
    Blocked(CmdId),
    /// On the Tarjan stack with this index: same SCC as `v`.
    OnStack(usize),
    /// Committed and not yet explored in this pass.
    Unvisited,
}

/// One level of the explicit DFS stack (the Tarjan recursion, unrolled so
/// chains of 100k ids cannot overflow the thread stack).
struct Frame {
    id: CmdId,
    next_dep: usize,
}

/// Per-pass scratch state of Tarjan's algorithm.
#[derive(Default)]
struct Pass {
    next_index: usize,
    /// Tarjan's component stack.
    scc_stack: Vec<CmdId>,
    /// The DFS call stack.
    frames: Vec<Frame>,
}

impl Executor {
    /// An empty executor.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds after a restart: `processed` are ids already executed (or
    /// skipped Nops) before the crash; they are never returned again.
    pub fn restore(processed: impl IntoIterator<Item = CmdId>) -> Self {
        Executor {
            processed: processed.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Reports that `id` is committed locally with dependency edges `deps`;
    /// `nop` is true when the committed payload is Nop. Committing the same id
    /// twice is a caller bug (panics).
    ///
    /// Returns the ids that became executable because of this commit, in
    /// execution order, Nops excluded.
    pub fn commit(&mut self, id: CmdId, deps: &BTreeSet<CmdId>, nop: bool) -> Vec<CmdId> {
        assert!(
            !self.processed.contains(&id),
            "executor: commit of {id:?}, which is already processed \
             (committed twice, or re-committed after restore)"
        );
        assert!(
            !self.pending.contains_key(&id),
            "executor: commit of {id:?}, which is already committed (committed twice)"
        );

        let deps: Box<[CmdId]> = deps
            .iter()
            .copied()
            .filter(|d| *d != id && !self.processed.contains(d))
            .collect();
        for d in deps.iter() {
            if !self.pending.contains_key(d) {
                self.missing.insert(*d);
            }
        }
        self.missing.remove(&id);
        self.pending.insert(
            id,
            Pending {
                deps,
                nop,
                group: None,
                mark: None,
            },
        );

        // Ids parked on `id` are suspended, not parked, during the first pass:
        // they reach `id`, so any of them `id` reaches is in `id`'s SCC and
        // must be explored, not treated as blocked.
        let suspended = self.waiters.remove(&id);
        if let Some(g) = suspended {
            let group = self.groups.get_mut(&g).expect("waiters point to groups");
            assert!(group.parent.is_none(), "waiters point to roots");
            assert_eq!(group.blocker, Some(id), "group blocker matches waiters");
            group.blocker = None;
        }

        let mut out = Vec::new();
        self.run_pass(&[id], &mut out);

        if let Some(g) = suspended {
            let parked_in = self.pending.get(&id).map(|p| p.group);
            match parked_in {
                // `id` is blocked behind some `w`; all of `g` reaches `w`
                // through `id`.
                Some(Some(k)) => {
                    let r = self.find(k);
                    self.merge_suspended(g, r);
                }
                Some(None) => unreachable!("executor: {id:?} left a pass unparked"),
                // `id` ran: the ids parked on it may be ready now.
                None => {
                    let roots = self.dissolve(g);
                    self.run_pass(&roots, &mut out);
                }
            }
        }
        out
    }

    /// True if `id` has been processed (executed, or a skipped Nop).
    pub fn is_processed(&self, id: CmdId) -> bool {
        self.processed.contains(&id)
    }

    /// True if `id` is committed here and not yet processed.
    pub fn is_pending(&self, id: CmdId) -> bool {
        self.pending.contains_key(&id)
    }

    /// Ids that some committed, unprocessed id transitively waits on and that
    /// are not committed locally, in `CmdId` order.
    pub fn blocked_on(&self) -> Vec<CmdId> {
        self.missing.iter().copied().collect()
    }

    /// Number of committed ids not yet processed (the pending closure size,
    /// epaxos.md §5.4.4).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Number of processed ids (executed plus skipped Nops).
    pub fn processed_len(&self) -> usize {
        self.processed.len()
    }

    /// Iterative Tarjan from each of `roots` that is still unexplored, all in
    /// one pass: ids explored from an earlier root are not explored again.
    /// Ready SCCs are appended to `out` as they complete (sink-first); tainted
    /// ones are parked.
    fn run_pass(&mut self, roots: &[CmdId], out: &mut Vec<CmdId>) {
        let mut pass = Pass::default();
        for &root in roots {
            self.work_total += 1;
            if !matches!(self.classify(root), Target::Unvisited) {
                continue;
            }
            self.open(root, &mut pass);
            while let Some(frame) = pass.frames.last_mut() {
                let v = frame.id;
                let deps = &self.pending[&v].deps;
                if frame.next_dep < deps.len() {
                    let w = deps[frame.next_dep];
                    frame.next_dep += 1;
                    self.work_total += 1;
                    match self.classify(w) {
                        Target::Done => {}
                        Target::Blocked(b) => {
                            let mark = self.mark_mut(v);
                            mark.witness.get_or_insert(b);
                        }
                        Target::OnStack(index) => {
                            let mark = self.mark_mut(v);
                            mark.lowlink = mark.lowlink.min(index);
                        }
                        Target::Unvisited => self.open(w, &mut pass),
                    }
                    continue;
                }

                // All edges of `v` examined.
                pass.frames.pop();
                let mark = *self.mark_mut(v);
                let closed = if mark.lowlink == mark.index {
                    Some(self.close_scc(v, &mut pass.scc_stack, out))
                } else {
                    None
                };
                if let Some(parent) = pass.frames.last() {
                    let parent = self.mark_mut(parent.id);
                    match closed {
                        // `v` is still on the stack: same SCC as its parent.
                        None => parent.lowlink = parent.lowlink.min(mark.lowlink),
                        // `v`'s SCC got parked: the parent reaches its blocker.
                        Some(Some(blocker)) => {
                            parent.witness.get_or_insert(blocker);
                        }
                        // `v`'s SCC ran: the edge is satisfied.
                        Some(None) => {}
                    }
                }
            }
            debug_assert!(pass.scc_stack.is_empty(), "Tarjan stack empty after a root");
        }
    }

    /// Pushes `id` on the DFS and Tarjan stacks.
    fn open(&mut self, id: CmdId, pass: &mut Pass) {
        let index = pass.next_index;
        pass.next_index += 1;
        let node = self.pending.get_mut(&id).expect("opened ids are pending");
        debug_assert!(node.mark.is_none(), "an id is opened once per pass");
        node.mark = Some(Mark {
            index,
            lowlink: index,
            witness: None,
        });
        pass.scc_stack.push(id);
        pass.frames.push(Frame { id, next_dep: 0 });
    }

    fn mark_mut(&mut self, id: CmdId) -> &mut Mark {
        self.pending
            .get_mut(&id)
            .and_then(|p| p.mark.as_mut())
            .expect("ids on the DFS stack are pending and marked")
    }

    /// Classifies the target of an edge (or a root).
    fn classify(&mut self, w: CmdId) -> Target {
        let Some(node) = self.pending.get(&w) else {
            return if self.processed.contains(&w) {
                Target::Done
            } else {
                Target::Blocked(w)
            };
        };
        if let Some(mark) = node.mark {
            return Target::OnStack(mark.index);
        }
        let Some(k) = node.group else {
            return Target::Unvisited;
        };
        let root = self.find(k);
        if let Some(node) = self.pending.get_mut(&w) {
            node.group = Some(root);
        }
        match self.groups[&root].blocker {
            Some(b) => Target::Blocked(b),
            // Suspended: the blocker was just committed; explore through it.
            None => Target::Unvisited,
        }
    }

    /// Pops the SCC rooted at `v` and either runs it (returns `None`) or
    /// parks it behind the blocker one of its members reaches (returns it).
    fn close_scc(
        &mut self,
        v: CmdId,
        scc_stack: &mut Vec<CmdId>,
        out: &mut Vec<CmdId>,
    ) -> Option<CmdId> {
        let mut members = Vec::new();
        loop {
            let x = scc_stack
                .pop()
                .expect("the SCC root is on the Tarjan stack");
            members.push(x);
            if x == v {
                break;
            }
        }
        // A member's witness covers the whole SCC: every member reaches every
        // other, so all of them reach the blocker.
        let mut witness = None;
        for x in &members {
            let node = self.pending.get_mut(x).expect("SCC members are pending");
            let mark = node.mark.take().expect("SCC members are marked");
            witness = witness.or(mark.witness);
        }
        match witness {
            Some(blocker) => {
                self.park(&members, blocker);
                Some(blocker)
            }
            None => {
                members.sort_unstable();
                for x in members {
                    let node = self.pending.remove(&x).expect("SCC members are pending");
                    self.processed.insert(x);
                    if !node.nop {
                        out.push(x);
                    }
                }
                None
            }
        }
    }

    /// Parks `members` in the group of `blocker`, creating it if needed.
    fn park(&mut self, members: &[CmdId], blocker: CmdId) {
        assert!(
            self.missing.contains(&blocker),
            "executor: parking behind {blocker:?}, which is not a missing dependency"
        );
        let root = match self.waiters.get(&blocker) {
            Some(&r) => r,
            None => {
                let fresh = self.groups.insert(
                    blocker,
                    Group {
                        parent: None,
                        blocker: Some(blocker),
                        members: Vec::new(),
                        children: Vec::new(),
                    },
                );
                assert!(fresh.is_none(), "executor: group {blocker:?} created twice");
                self.waiters.insert(blocker, blocker);
                blocker
            }
        };
        for x in members {
            self.pending
                .get_mut(x)
                .expect("parked ids are pending")
                .group = Some(root);
        }
        self.groups
            .get_mut(&root)
            .expect("waiters point to groups")
            .members
            .extend_from_slice(members);
    }

    /// Root of the group tree containing `k`, with path compression.
    fn find(&mut self, k: GroupKey) -> GroupKey {
        let mut root = k;
        while let Some(p) = self.groups[&root].parent {
            root = p;
        }
        let mut cur = k;
        while cur != root {
            let group = self.groups.get_mut(&cur).expect("group parents exist");
            let next = group.parent.expect("non-roots have parents");
            group.parent = Some(root);
            cur = next;
        }
        root
    }

    /// Merges the suspended root `g` into the tree of `r`, whose blocker the
    /// committed id `g` was waiting on is now parked behind. Union by size.
    fn merge_suspended(&mut self, g: GroupKey, r: GroupKey) {
        assert_ne!(g, r, "a suspended group is never a blocker's group");
        let blocker = self.groups[&r].blocker.expect("r is an active root");
        let (big, small) = if self.groups[&g].members.len() > self.groups[&r].members.len() {
            (g, r)
        } else {
            (r, g)
        };
        let small_group = self.groups.get_mut(&small).expect("roots exist");
        small_group.parent = Some(big);
        small_group.blocker = None;
        let members = std::mem::take(&mut small_group.members);
        let children = std::mem::take(&mut small_group.children);
        let big_group = self.groups.get_mut(&big).expect("roots exist");
        big_group.blocker = Some(blocker);
        big_group.members.extend(members);
        big_group.children.push(small);
        big_group.children.extend(children);
        self.waiters.insert(blocker, big);
    }

    /// Unparks every live member of the suspended tree `g`, frees the tree and
    /// returns the members, to be re-explored.
    fn dissolve(&mut self, g: GroupKey) -> Vec<CmdId> {
        let members = std::mem::take(&mut self.groups.get_mut(&g).expect("root exists").members);
        let mut roots = Vec::with_capacity(members.len());
        for x in members {
            let Some(k) = self.pending.get(&x).and_then(|p| p.group) else {
                continue; // processed, or a duplicate already unparked
            };
            if self.find(k) == g {
                self.pending.get_mut(&x).expect("checked above").group = None;
                roots.push(x);
            }
        }
        let group = self.groups.remove(&g).expect("root exists");
        for child in group.children {
            self.groups.remove(&child);
        }
        roots
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn id(seq: u64) -> CmdId {
        CmdId {
            epoch: 1,
            seq,
            origin: (seq % 3) as u16,
        }
    }

    fn deps(ds: &[u64]) -> BTreeSet<CmdId> {
        ds.iter().map(|&s| id(s)).collect()
    }

    fn ids(seqs: &[u64]) -> Vec<CmdId> {
        seqs.iter().map(|&s| id(s)).collect()
    }

    impl Executor {
        /// Structural invariants that must hold between calls.
        fn check_invariants(&mut self) {
            let pending: Vec<CmdId> = self.pending.keys().copied().collect();
            for x in pending {
                let node = &self.pending[&x];
                assert!(node.mark.is_none(), "{x:?} marked between calls");
                let k = node
                    .group
                    .unwrap_or_else(|| panic!("{x:?} pending but not parked"));
                for d in node.deps.iter() {
                    assert!(
                        self.pending.contains_key(d)
                            || self.processed.contains(d)
                            || self.missing.contains(d),
                        "dep {d:?} of {x:?} unaccounted for"
                    );
                }
                let root = self.find(k);
                let blocker = self.groups[&root].blocker.expect("active root");
                assert!(self.missing.contains(&blocker));
                assert_eq!(self.waiters.get(&blocker), Some(&root));
            }
            for (m, r) in &self.waiters {
                assert!(self.missing.contains(m));
                assert_eq!(self.groups[r].parent, None);
                assert_eq!(self.groups[r].blocker, Some(*m));
            }
            for m in &self.missing {
                assert!(!self.pending.contains_key(m) && !self.processed.contains(m));
                assert!(
                    self.pending.values().any(|p| p.deps.contains(m)),
                    "{m:?} missing but nobody depends on it"
                );
            }
        }
    }

    /// Commits `(seq, deps, nop)` in the given order; returns everything
    /// executed, in order.
    fn run(order: &[(u64, &[u64], bool)]) -> Vec<CmdId> {
        let mut ex = Executor::new();
        let mut out = Vec::new();
        for (s, ds, nop) in order {
            out.extend(ex.commit(id(*s), &deps(ds), *nop));
            ex.check_invariants();
        }
        out
    }

    fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
        if items.len() <= 1 {
            return vec![items.to_vec()];
        }
        let mut all = Vec::new();
        for i in 0..items.len() {
            let mut rest = items.to_vec();
            let first = rest.remove(i);
            for mut p in permutations(&rest) {
                p.insert(0, first.clone());
                all.push(p);
            }
        }
        all
    }

    /// epaxos.md §5.1: a chain runs dependencies first, whatever the commit
    /// order; nothing runs before its dependency is committed (I15).
    #[test]
    fn linear_chain_runs_dependencies_first() {
        let chain: [(u64, &[u64], bool); 4] = [
            (1, &[], false),
            (2, &[1], false),
            (3, &[2], false),
            (4, &[3], false),
        ];
        assert_eq!(run(&chain), ids(&[1, 2, 3, 4]));

        let mut ex = Executor::new();
        assert!(ex.commit(id(4), &deps(&[3]), false).is_empty());
        assert!(ex.commit(id(3), &deps(&[2]), false).is_empty());
        assert!(ex.commit(id(2), &deps(&[1]), false).is_empty());
        assert_eq!(ex.pending_len(), 3);
        assert_eq!(ex.blocked_on(), ids(&[1]));
        assert_eq!(ex.commit(id(1), &deps(&[]), false), ids(&[1, 2, 3, 4]));
        assert_eq!(ex.pending_len(), 0);
        assert!(ex.blocked_on().is_empty());
        ex.check_invariants();
    }

    /// epaxos.md §7 S10 (I17): a 2-cycle committed in either order executes
    /// in the same order, `CmdId` order inside the SCC.
    #[test]
    fn two_cycle_same_order_in_every_commit_order() {
        let cycle: [(u64, &[u64], bool); 2] = [(7, &[3], false), (3, &[7], false)];
        for order in permutations(&cycle) {
            assert_eq!(run(&order), ids(&[3, 7]), "order {order:?}");
        }
    }

    /// epaxos.md §7 S10 (I17): 3-cycles (with a chord and a tail) give the
    /// same SCC order and id order in all 4! = 24 commit orders.
    #[test]
    fn three_cycle_same_order_in_every_commit_order() {
        // 5 → 9 → 2 → 5 is a cycle, 9 → 5 a chord, 8 depends on the cycle
        // and 1 is a dependency of the cycle.
        let graph: [(u64, &[u64], bool); 5] = [
            (5, &[9, 1], false),
            (9, &[2, 5], false),
            (2, &[5], false),
            (8, &[2], false),
            (1, &[], false),
        ];
        for order in permutations(&graph) {
            assert_eq!(run(&order), ids(&[1, 2, 5, 9, 8]), "order {order:?}");
        }
    }

    /// epaxos.md §7 S10: a Nop inside a cycle is processed but never
    /// returned (I16), and does not stall the rest of the cycle.
    #[test]
    fn nop_inside_cycle_is_skipped() {
        let graph: [(u64, &[u64], bool); 3] = [(1, &[2], false), (2, &[3], true), (3, &[1], false)];
        for order in permutations(&graph) {
            let mut ex = Executor::new();
            let mut out = Vec::new();
            for (s, ds, nop) in &order {
                out.extend(ex.commit(id(*s), &deps(ds), *nop));
            }
            assert_eq!(out, ids(&[1, 3]));
            assert!(ex.is_processed(id(2)), "the Nop is marked processed");
            assert_eq!(ex.pending_len(), 0);
        }
    }

    /// epaxos.md §7 S10 and §4.1 trigger 1 (efficient/epaxos#26): a
    /// dependency on a never-committed id blocks without blocking the
    /// caller, shows in `blocked_on`, and unblocks when committed.
    #[test]
    fn missing_dependency_blocks_then_unblocks() {
        let mut ex = Executor::new();
        assert!(ex.commit(id(2), &deps(&[1]), false).is_empty());
        assert!(ex.commit(id(3), &deps(&[2]), false).is_empty());
        // Independent and fully committed: runs although 1 is missing (§5.1).
        assert_eq!(ex.commit(id(10), &deps(&[]), false), ids(&[10]));
        assert_eq!(ex.blocked_on(), ids(&[1]));
        assert_eq!(ex.pending_len(), 2);
        assert!(!ex.is_processed(id(2)));
        ex.check_invariants();

        assert_eq!(ex.commit(id(1), &deps(&[]), false), ids(&[1, 2, 3]));
        assert!(ex.blocked_on().is_empty());
        assert_eq!(ex.pending_len(), 0);
        ex.check_invariants();
    }

    /// epaxos.md §5.1: a member of an SCC that reaches a missing id through
    /// another member blocks the whole SCC and everything reaching it, while
    /// an independent ready SCC still runs.
    #[test]
    fn cycle_reaching_missing_id_runs_nothing() {
        let mut ex = Executor::new();
        // {4, 5} is an SCC; 5 → 99 is missing; 6 → 4 reaches it through 5.
        assert!(ex.commit(id(4), &deps(&[5]), false).is_empty());
        assert!(ex.commit(id(6), &deps(&[4]), false).is_empty());
        assert!(ex.commit(id(5), &deps(&[4, 99]), false).is_empty());
        // {7, 8} depends on nothing missing: runs.
        assert!(ex.commit(id(8), &deps(&[7]), false).is_empty());
        assert_eq!(ex.commit(id(7), &deps(&[8]), false), ids(&[7, 8]));
        assert_eq!(ex.blocked_on(), ids(&[99]));
        assert_eq!(ex.pending_len(), 3);
        ex.check_invariants();
        assert_eq!(ex.commit(id(99), &deps(&[]), false), ids(&[99, 4, 5, 6]));
    }

    /// epaxos.md §5.1: the missing edge may leave the SCC from a member that
    /// is not the Tarjan root of the component; the whole SCC still blocks.
    #[test]
    fn missing_edge_from_non_root_member_blocks_the_scc() {
        let mut ex = Executor::new();
        // 4 → {5, 99}, 5 → 4. The pass from 5 makes 5 the Tarjan root; the
        // edge to the missing 99 leaves from 4.
        assert!(ex.commit(id(4), &deps(&[5, 99]), false).is_empty());
        assert!(ex.commit(id(5), &deps(&[4]), false).is_empty());
        assert_eq!(ex.blocked_on(), ids(&[99]));
        ex.check_invariants();
        assert_eq!(ex.commit(id(99), &deps(&[]), false), ids(&[99, 4, 5]));
    }

    /// epaxos.md §5.2: ids parked on the id being committed are explored
    /// through, not treated as blocked, so a cycle closed by the last commit
    /// runs (a parked-on-parked cycle would deadlock here).
    #[test]
    fn ids_parked_on_the_committed_id_are_explored() {
        // 2 → 6 → 4 → 2; 2 parks on 6, then 4 parks behind 2; 6 closes it.
        let mut ex = Executor::new();
        assert!(ex.commit(id(2), &deps(&[6]), false).is_empty());
        assert!(ex.commit(id(4), &deps(&[2]), false).is_empty());
        assert_eq!(ex.commit(id(6), &deps(&[4]), false), ids(&[2, 4, 6]));

        // 3 → {1, 5}, 5 → 3: 3 parks on 1, 5 behind 3; committing 1 must
        // re-explore both as one SCC.
        let mut ex = Executor::new();
        assert!(ex.commit(id(3), &deps(&[1, 5]), false).is_empty());
        assert!(ex.commit(id(5), &deps(&[3]), false).is_empty());
        assert_eq!(ex.blocked_on(), ids(&[1]));
        assert_eq!(ex.commit(id(1), &deps(&[]), false), ids(&[1, 3, 5]));
        ex.check_invariants();
    }

    /// epaxos.md §4.1 trigger 1: `blocked_on` lists every uncommitted id in
    /// the pending closure, not just the first one the DFS met.
    #[test]
    fn blocked_on_lists_every_missing_id() {
        let mut ex = Executor::new();
        assert!(ex.commit(id(3), &deps(&[1, 2]), false).is_empty());
        assert!(ex.commit(id(4), &deps(&[3, 20]), false).is_empty());
        assert_eq!(ex.blocked_on(), ids(&[1, 2, 20]));
        assert!(ex.commit(id(1), &deps(&[]), false) == ids(&[1]));
        assert_eq!(ex.blocked_on(), ids(&[2, 20]));
        assert!(ex.commit(id(2), &deps(&[]), false) == ids(&[2, 3]));
        assert_eq!(ex.blocked_on(), ids(&[20]));
        assert_eq!(ex.commit(id(20), &deps(&[]), false), ids(&[20, 4]));
        assert!(ex.blocked_on().is_empty());
    }

    /// epaxos.md §5.2 (restart): processed ids are never returned again and
    /// edges into them are satisfied.
    #[test]
    fn restore_treats_processed_as_satisfied() {
        let mut ex = Executor::restore(ids(&[1, 2]));
        assert!(ex.is_processed(id(1)));
        assert_eq!(ex.commit(id(3), &deps(&[1, 2]), false), ids(&[3]));
        assert!(ex.commit(id(5), &deps(&[2, 4]), false).is_empty());
        assert_eq!(ex.blocked_on(), ids(&[4]));
        assert_eq!(ex.commit(id(4), &deps(&[1, 5]), false), ids(&[4, 5]));
        assert_eq!(ex.processed_len(), 5);
    }

    /// epaxos.md §5.3 / I12: re-committing a processed id is a caller bug.
    #[test]
    #[should_panic(expected = "already processed")]
    fn commit_after_restore_of_processed_id_panics() {
        let mut ex = Executor::restore(ids(&[1]));
        ex.commit(id(1), &deps(&[]), false);
    }

    /// epaxos.md §5.3 / I12: committing a pending id twice is a caller bug.
    #[test]
    #[should_panic(expected = "already committed")]
    fn commit_twice_panics() {
        let mut ex = Executor::new();
        ex.commit(id(2), &deps(&[1]), false);
        ex.commit(id(2), &deps(&[1]), false);
    }

    /// epaxos.md §5.2: the DFS is iterative, so a 100k chain cannot overflow
    /// the stack, and the work stays linear in both commit orders.
    #[test]
    fn long_chain_is_iterative_and_linear() {
        const N: u64 = 100_000;
        let chain_deps = |s: u64| if s == 0 { deps(&[]) } else { deps(&[s - 1]) };

        let mut ex = Executor::new();
        for s in 1..N {
            assert!(ex.commit(id(s), &chain_deps(s), false).is_empty());
        }
        let out = ex.commit(id(0), &chain_deps(0), false);
        assert_eq!(out, (0..N).map(id).collect::<Vec<_>>());
        assert!(ex.work_total < 5 * N, "forward work {}", ex.work_total);

        let mut ex = Executor::new();
        for s in (1..N).rev() {
            assert!(ex.commit(id(s), &chain_deps(s), false).is_empty());
        }
        let out = ex.commit(id(0), &chain_deps(0), false);
        assert_eq!(out, (0..N).map(id).collect::<Vec<_>>());
        assert!(ex.work_total < 5 * N, "reverse work {}", ex.work_total);
        assert_eq!(ex.pending_len(), 0);
    }

    // ---- property test -------------------------------------------------

    /// The shared seeded SplitMix64, so the test replays from a seed.
    struct Rng(synod_types::SplitMix64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0.below(n)
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
        fn shuffle<T>(&mut self, v: &mut [T]) {
            for i in (1..v.len()).rev() {
                v.swap(i, self.below(i as u64 + 1) as usize);
            }
        }
    }

    struct Graph {
        ids: Vec<CmdId>,
        deps: BTreeMap<CmdId, BTreeSet<CmdId>>,
        nop: BTreeMap<CmdId, bool>,
        conflicts: Vec<(CmdId, CmdId)>,
    }

    /// A committed graph satisfying Visibility (I2): for every conflicting
    /// pair, one depends on the other (sometimes both). Nops have empty deps
    /// (I8) but others may depend on them. Some extra non-conflict deps.
    fn random_graph(rng: &mut Rng) -> Graph {
        let n = 2 + rng.below(30) as usize;
        let keys = 1 + rng.below(6);
        let mut ids: Vec<CmdId> = (0..n)
            .map(|i| CmdId {
                epoch: 1,
                seq: rng.below(8),
                origin: i as u16,
            })
            .collect();
        ids.sort();
        let key_of: Vec<u64> = ids.iter().map(|_| rng.below(keys)).collect();
        let nop: BTreeMap<CmdId, bool> = ids.iter().map(|x| (*x, rng.chance(10))).collect();
        let mut deps: BTreeMap<CmdId, BTreeSet<CmdId>> =
            ids.iter().map(|x| (*x, BTreeSet::new())).collect();
        let mut conflicts = Vec::new();
        for i in 0..n {
            for j in i + 1..n {
                let (a, b) = (ids[i], ids[j]);
                let (a_nop, b_nop) = (nop[&a], nop[&b]);
                if !a_nop && !b_nop && key_of[i] == key_of[j] {
                    conflicts.push((a, b));
                    match rng.below(3) {
                        0 => {
                            deps.get_mut(&a).unwrap().insert(b);
                        }
                        1 => {
                            deps.get_mut(&b).unwrap().insert(a);
                        }
                        _ => {
                            deps.get_mut(&a).unwrap().insert(b);
                            deps.get_mut(&b).unwrap().insert(a);
                        }
                    }
                } else if a_nop != b_nop && rng.chance(30) {
                    // Nops conflict with everything, but have no deps.
                    let (from, to) = if a_nop { (b, a) } else { (a, b) };
                    deps.get_mut(&from).unwrap().insert(to);
                } else if !a_nop && !b_nop && rng.chance(8) {
                    // Extra dependencies are always allowed (§1.3).
                    let (from, to) = if rng.chance(50) { (a, b) } else { (b, a) };
                    deps.get_mut(&from).unwrap().insert(to);
                }
            }
        }
        Graph {
            ids,
            deps,
            nop,
            conflicts,
        }
    }

    /// Ids reachable from `x` (including `x`) over all edges, committed or
    /// not; uncommitted ids have no known edges.
    fn reach(deps: &BTreeMap<CmdId, BTreeSet<CmdId>>, x: CmdId) -> BTreeSet<CmdId> {
        let mut seen = BTreeSet::from([x]);
        let mut todo = vec![x];
        while let Some(y) = todo.pop() {
            for d in deps.get(&y).into_iter().flatten() {
                if seen.insert(*d) {
                    todo.push(*d);
                }
            }
        }
        seen
    }

    /// Commits `order` into a fresh executor, checking after every commit
    /// that the processed set is exactly the ready set of epaxos.md §5.1
    /// (I15, and that nothing ready is left waiting), that `blocked_on` is
    /// exactly the uncommitted ids reachable from pending ones, and that
    /// each returned id comes after its deps unless they share an SCC (I16).
    fn replay(g: &Graph, order: &[CmdId], seed: u64) -> Vec<CmdId> {
        let mut ex = Executor::new();
        let mut committed: BTreeMap<CmdId, BTreeSet<CmdId>> = BTreeMap::new();
        let mut exec: Vec<CmdId> = Vec::new();
        for &x in order {
            committed.insert(x, g.deps[&x].clone());
            let out = ex.commit(x, &g.deps[&x], g.nop[&x]);
            ex.check_invariants();
            for y in &out {
                assert!(!g.nop[y], "seed {seed}: Nop {y:?} returned");
                assert!(!exec.contains(y), "seed {seed}: {y:?} returned twice");
                exec.push(*y);
            }
            let mut blocked = BTreeSet::new();
            for &y in committed.keys() {
                let r = reach(&committed, y);
                let ready = r.iter().all(|z| committed.contains_key(z));
                assert_eq!(
                    ex.is_processed(y),
                    ready,
                    "seed {seed}: {y:?} processed={} but ready={ready}",
                    ex.is_processed(y)
                );
                if !ready {
                    blocked.extend(r.into_iter().filter(|z| !committed.contains_key(z)));
                }
            }
            assert_eq!(
                ex.blocked_on(),
                blocked.into_iter().collect::<Vec<_>>(),
                "seed {seed}"
            );
        }
        // I16: deps before dependents, unless in the same SCC (then by id).
        let pos: BTreeMap<CmdId, usize> = exec.iter().enumerate().map(|(i, x)| (*x, i)).collect();
        for &x in &exec {
            for d in &g.deps[&x] {
                let Some(&pd) = pos.get(d) else {
                    assert!(
                        g.nop[d],
                        "seed {seed}: dep {d:?} of executed {x:?} not executed"
                    );
                    continue;
                };
                let same_scc = reach(&g.deps, *d).contains(&x);
                if same_scc {
                    assert_eq!(
                        pd < pos[&x],
                        d < &x,
                        "seed {seed}: SCC order of {d:?}, {x:?}"
                    );
                } else {
                    assert!(pd < pos[&x], "seed {seed}: {x:?} ran before its dep {d:?}");
                }
            }
        }
        exec
    }

    /// epaxos.md §5.3 and §6 I15–I17: random Visibility-respecting graphs,
    /// committed in two random orders (and partially), execute conflicting
    /// pairs in the same relative order.
    #[test]
    fn random_graphs_same_conflict_order_in_any_commit_order() {
        for seed in 0..400u64 {
            let mut rng = Rng(synod_types::SplitMix64::new(seed));
            let g = random_graph(&mut rng);
            let mut order_a = g.ids.clone();
            let mut order_b = g.ids.clone();
            rng.shuffle(&mut order_a);
            rng.shuffle(&mut order_b);
            let exec_a = replay(&g, &order_a, seed);
            let exec_b = replay(&g, &order_b, seed);

            let ops = g.ids.iter().filter(|x| !g.nop[x]).count();
            assert_eq!(
                exec_a.len(),
                ops,
                "seed {seed}: everything committed, all ran"
            );
            assert_eq!(
                exec_b.len(),
                ops,
                "seed {seed}: everything committed, all ran"
            );
            let pos = |e: &[CmdId], x: CmdId| e.iter().position(|y| *y == x).unwrap();
            for &(a, b) in &g.conflicts {
                assert_eq!(
                    pos(&exec_a, a) < pos(&exec_a, b),
                    pos(&exec_b, a) < pos(&exec_b, b),
                    "seed {seed}: {a:?} and {b:?} ordered differently"
                );
            }

            // A prefix of the commits: whatever ran on both must agree too.
            let cut = rng.below(g.ids.len() as u64) as usize;
            let part_a = replay(&g, &order_a[..cut], seed);
            let part_b = replay(&g, &order_b[..cut], seed);
            for &(a, b) in &g.conflicts {
                let both = |e: &[CmdId]| e.contains(&a) && e.contains(&b);
                if both(&part_a) && both(&part_b) {
                    assert_eq!(
                        pos(&part_a, a) < pos(&part_a, b),
                        pos(&part_b, a) < pos(&part_b, b),
                        "seed {seed}: partial runs disagree on {a:?}, {b:?}"
                    );
                }
                if both(&part_a) {
                    assert_eq!(
                        pos(&part_a, a) < pos(&part_a, b),
                        pos(&exec_a, a) < pos(&exec_a, b),
                        "seed {seed}: prefix disagrees with full run on {a:?}, {b:?}"
                    );
                }
            }
        }
    }
}
