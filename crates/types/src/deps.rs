//! Dependency sets with a stable floor (epaxos.md §2.5 "lossless
//! compression", §10 GC).
//!
//! A [`Deps`] is the paper's `dep`: a set of ids. It is stored as a
//! [`Floor`] plus an explicit set. The floor says "every id of origin `o`
//! in epoch `e` with `seq < n`"; the explicit set holds the rest, and never
//! repeats an id the floor covers, so two equal sets have equal encodings
//! (the fast-path rule compares encodings, epaxos.md §3.4).
//!
//! Why this is lossless: a coordinator only puts `(e, o) → n` in a floor
//! when every member has reported executing every id of `o` below `n`
//! (the *stable* prefix). Every such id is then committed and executed at
//! the coordinator, which therefore knew it, so the uncompressed rule
//! "every locally known conflicting id" would have put each conflicting one
//! of them in the set. Ids the floor covers that do not conflict are never
//! asked about: Visibility and Validate test membership only for
//! conflicting ids. Without a floor dependency sets grow with the history
//! of a key; with it they hold only what is still in flight.

use crate::{CmdId, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Per `(epoch, origin)`, the length of a prefix of sequence numbers: the
/// ids `(epoch, 0..n, origin)`. Entries are never zero.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Floor(BTreeMap<(u64, NodeId), u64>);

impl Floor {
    /// The empty floor (covers nothing).
    pub fn new() -> Self {
        Floor::default()
    }

    /// Whether `id` is in the prefix.
    pub fn covers(&self, id: &CmdId) -> bool {
        self.get(id.epoch, id.origin) > id.seq
    }

    /// The prefix length for `(epoch, origin)`, 0 if none.
    pub fn get(&self, epoch: u64, origin: NodeId) -> u64 {
        self.0.get(&(epoch, origin)).copied().unwrap_or(0)
    }

    /// Raises the prefix of `(epoch, origin)` to at least `n`.
    pub fn raise(&mut self, epoch: u64, origin: NodeId, n: u64) {
        if n > 0 {
            let v = self.0.entry((epoch, origin)).or_insert(0);
            *v = (*v).max(n);
        }
    }

    /// Pointwise maximum with `other`. The union of two prefixes of one
    /// origin is the longer one, so this is the exact set union.
    pub fn raise_to(&mut self, other: &Floor) {
        for (&(e, o), &n) in &other.0 {
            self.raise(e, o, n);
        }
    }

    /// No prefix at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `((epoch, origin), n)` in order.
    pub fn iter(&self) -> impl Iterator<Item = ((u64, NodeId), u64)> + '_ {
        self.0.iter().map(|(k, v)| (*k, *v))
    }
}

impl fmt::Debug for Floor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("⌊")?;
        for (i, ((e, o), n)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{e}.<{n}@{o}")?;
        }
        f.write_str("⌋")
    }
}

/// A dependency set: a [`Floor`] plus explicit ids above it. Iteration
/// order is `CmdId` order, never hashing (epaxos.md §5.3).
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Deps {
    floor: Floor,
    ids: BTreeSet<CmdId>,
}

impl Deps {
    /// The empty set.
    pub fn new() -> Self {
        Deps::default()
    }

    /// The set of every id `floor` covers.
    pub fn with_floor(floor: Floor) -> Self {
        Deps {
            floor,
            ids: BTreeSet::new(),
        }
    }

    /// The floor part.
    pub fn floor(&self) -> &Floor {
        &self.floor
    }

    /// The explicit part: ids in the set that the floor does not cover.
    pub fn explicit(&self) -> &BTreeSet<CmdId> {
        &self.ids
    }

    /// Set membership (floor or explicit).
    pub fn contains(&self, id: &CmdId) -> bool {
        self.floor.covers(id) || self.ids.contains(id)
    }

    /// Adds `id`; returns whether the set changed.
    pub fn insert(&mut self, id: CmdId) -> bool {
        !self.floor.covers(&id) && self.ids.insert(id)
    }

    /// Removes an explicit `id`. An id the floor covers cannot be removed
    /// (the floor only ever covers executed ids, never the id being
    /// decided).
    pub fn remove(&mut self, id: &CmdId) -> bool {
        debug_assert!(!self.floor.covers(id), "removing floored {id:?}");
        self.ids.remove(id)
    }

    /// `self ← self ∪ other`.
    pub fn union_with(&mut self, other: &Deps) {
        if other.floor != self.floor {
            self.floor.raise_to(&other.floor);
            let floor = &self.floor;
            self.ids.retain(|x| !floor.covers(x));
        }
        for x in &other.ids {
            self.insert(*x);
        }
    }

    /// `self ⊆ other` as sets.
    pub fn is_subset(&self, other: &Deps) -> bool {
        self.ids.iter().all(|x| other.contains(x))
            && self.floor.iter().all(|((e, o), n)| {
                (other.floor.get(e, o)..n).all(|seq| {
                    other.ids.contains(&CmdId {
                        epoch: e,
                        seq,
                        origin: o,
                    })
                })
            })
    }

    /// Neither a floor nor explicit ids (a Nop's dependencies).
    pub fn is_empty(&self) -> bool {
        self.floor.is_empty() && self.ids.is_empty()
    }
}

impl Extend<CmdId> for Deps {
    fn extend<I: IntoIterator<Item = CmdId>>(&mut self, iter: I) {
        for x in iter {
            self.insert(x);
        }
    }
}

impl FromIterator<CmdId> for Deps {
    fn from_iter<I: IntoIterator<Item = CmdId>>(iter: I) -> Self {
        let mut d = Deps::new();
        d.extend(iter);
        d
    }
}

impl fmt::Debug for Deps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.floor.is_empty() {
            write!(f, "{:?} ∪ ", self.floor)?;
        }
        f.debug_set().entries(&self.ids).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64, origin: NodeId) -> CmdId {
        CmdId {
            epoch: 0,
            seq,
            origin,
        }
    }

    fn floor(entries: &[(NodeId, u64)]) -> Floor {
        let mut f = Floor::new();
        for &(o, n) in entries {
            f.raise(0, o, n);
        }
        f
    }

    #[test]
    fn membership_is_floor_or_explicit() {
        let mut d = Deps::with_floor(floor(&[(1, 5)]));
        assert!(d.contains(&id(4, 1)));
        assert!(!d.contains(&id(5, 1)));
        assert!(!d.contains(&id(0, 2)));
        assert!(!d.insert(id(3, 1)), "a covered id is already in the set");
        assert!(d.explicit().is_empty());
        assert!(d.insert(id(7, 1)));
        assert!(d.contains(&id(7, 1)));
        assert_eq!(d.explicit().len(), 1);
        // Another epoch is not covered by this epoch's prefix.
        assert!(!d.contains(&CmdId {
            epoch: 1,
            seq: 0,
            origin: 1
        }));
    }

    #[test]
    fn union_equals_the_set_union_and_stays_canonical() {
        let mut a = Deps::with_floor(floor(&[(1, 5)]));
        a.extend([id(6, 1), id(2, 2), id(9, 2)]);
        let mut b = Deps::with_floor(floor(&[(1, 3), (2, 4)]));
        b.extend([id(4, 1), id(8, 1)]);
        let mut u = a.clone();
        u.union_with(&b);
        for s in 0..12 {
            for o in 0..3 {
                let x = id(s, o);
                assert_eq!(u.contains(&x), a.contains(&x) || b.contains(&x), "{x:?}");
            }
        }
        // id(2, 2) is now under the floor: it is not repeated explicitly.
        assert_eq!(
            u.explicit().iter().copied().collect::<Vec<_>>(),
            vec![id(6, 1), id(8, 1), id(9, 2)]
        );
        assert!(a.is_subset(&u) && b.is_subset(&u) && !u.is_subset(&a));
        let mut listed = Deps::new();
        listed.extend((0..5).map(|s| id(s, 1)));
        assert!(Deps::with_floor(floor(&[(1, 5)])).is_subset(&listed));
        assert!(!Deps::with_floor(floor(&[(1, 6)])).is_subset(&listed));
        // The same set built in the other order has the same encoding.
        let mut v = b.clone();
        v.union_with(&a);
        assert_eq!(u, v);
    }

    #[test]
    fn floorless_sets_behave_like_plain_sets() {
        let d: Deps = [id(3, 0), id(1, 1)].into_iter().collect();
        assert!(d.contains(&id(3, 0)) && !d.contains(&id(2, 0)));
        assert!(!d.is_empty());
        assert!(Deps::new().is_empty());
        assert!(!Deps::with_floor(floor(&[(0, 1)])).is_empty());
        assert_eq!(format!("{d:?}"), "{0.1@1, 0.3@0}");
        let f = Deps::with_floor(floor(&[(2, 7)]));
        assert_eq!(format!("{f:?}"), "⌊0.<7@2⌋ ∪ {}");
    }
}
