//! Compact encoding of id sets (seal reports `K_s` and closed sets `K`).
//!
//! A replica knows almost every id of an epoch, so per (epoch, origin) its
//! known sequence numbers are a few contiguous runs. Encoding a set as those
//! runs keeps a seal report, the Raft entry carrying it and the control
//! state's snapshot (and the replica's `Sealed`/`Closed` WAL records and
//! snapshots) a few bytes per origin instead of 16 bytes per id: a
//! report of a long epoch would otherwise exceed `CONTROL_COMMAND_MAX_BYTES`
//! and the change could never finish. In memory the sets stay
//! `BTreeSet<CmdId>`; only the serde form changes (`#[serde(with = ...)]`).

use crate::{CmdId, NodeId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};

/// Most ids one decoded set may expand to: 2^28 ids (4 GiB as a
/// `BTreeSet`) is far above any epoch this version can execute, and stops a
/// corrupt or hostile run list from exhausting memory.
pub const IDSET_EXPAND_MAX: u64 = 1 << 28;

/// One run: ids `(epoch, seq, origin)` for `seq` in `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Run {
    epoch: u64,
    origin: NodeId,
    start: u64,
    end: u64,
}

fn runs(set: &BTreeSet<CmdId>) -> Vec<Run> {
    let mut by: BTreeMap<(u64, NodeId), Vec<u64>> = BTreeMap::new();
    for id in set {
        by.entry((id.epoch, id.origin)).or_default().push(id.seq);
    }
    let mut out = Vec::new();
    for ((epoch, origin), seqs) in by {
        // `set` iterates in (epoch, seq, origin) order, so each list is
        // ascending.
        let mut run = Run {
            epoch,
            origin,
            start: seqs[0],
            end: seqs[0] + 1,
        };
        for &s in &seqs[1..] {
            if s == run.end {
                run.end += 1;
            } else {
                out.push(run);
                run.start = s;
                run.end = s + 1;
            }
        }
        out.push(run);
    }
    out
}

fn expand<E: serde::de::Error>(runs: Vec<Run>) -> Result<BTreeSet<CmdId>, E> {
    let mut total = 0u64;
    let mut set = BTreeSet::new();
    for r in runs {
        if r.start >= r.end {
            return Err(E::custom(format!("empty or inverted id run {r:?}")));
        }
        total += r.end - r.start;
        if total > IDSET_EXPAND_MAX {
            return Err(E::custom(format!(
                "id set expands beyond IDSET_EXPAND_MAX ({IDSET_EXPAND_MAX})"
            )));
        }
        set.extend((r.start..r.end).map(|seq| CmdId {
            epoch: r.epoch,
            seq,
            origin: r.origin,
        }));
    }
    Ok(set)
}

/// `#[serde(with = "idset")]` for a `BTreeSet<CmdId>`.
pub fn serialize<S: Serializer>(set: &BTreeSet<CmdId>, s: S) -> Result<S::Ok, S::Error> {
    runs(set).serialize(s)
}

/// See [`serialize`].
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeSet<CmdId>, D::Error> {
    expand(Vec::<Run>::deserialize(d)?)
}

/// `#[serde(with = "idset::option")]` for an `Option<BTreeSet<CmdId>>`.
pub mod option {
    use super::*;

    /// Serialize.
    pub fn serialize<S: Serializer>(
        set: &Option<BTreeSet<CmdId>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        set.as_ref().map(runs).serialize(s)
    }

    /// Deserialize.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<BTreeSet<CmdId>>, D::Error> {
        Option::<Vec<Run>>::deserialize(d)?.map(expand).transpose()
    }
}

/// `#[serde(with = "idset::map")]` for a `BTreeMap<NodeId, BTreeSet<CmdId>>`.
pub mod map {
    use super::*;

    /// Serialize.
    pub fn serialize<S: Serializer>(
        m: &BTreeMap<NodeId, BTreeSet<CmdId>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        m.iter()
            .map(|(k, v)| (*k, runs(v)))
            .collect::<Vec<_>>()
            .serialize(s)
    }

    /// Deserialize.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<NodeId, BTreeSet<CmdId>>, D::Error> {
        Vec::<(NodeId, Vec<Run>)>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| expand(v).map(|s| (k, s)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct W {
        #[serde(with = "super")]
        s: BTreeSet<CmdId>,
        #[serde(with = "super::option")]
        o: Option<BTreeSet<CmdId>>,
        #[serde(with = "super::map")]
        m: BTreeMap<NodeId, BTreeSet<CmdId>>,
    }

    fn id(epoch: u64, seq: u64, origin: NodeId) -> CmdId {
        CmdId { epoch, seq, origin }
    }

    #[test]
    fn sets_round_trip_and_a_dense_epoch_is_a_few_bytes_per_origin() {
        let mut dense = BTreeSet::new();
        for origin in 0..5 {
            for seq in 0..100_000 {
                dense.insert(id(3, seq, origin));
            }
        }
        // Gaps and other epochs too.
        let mut gappy: BTreeSet<CmdId> = [id(1, 0, 0), id(1, 2, 0), id(1, 3, 0), id(2, 7, 4)]
            .into_iter()
            .collect();
        gappy.insert(id(1, 1, 1));
        let w = W {
            s: dense.clone(),
            o: Some(gappy.clone()),
            m: [(0, dense.clone()), (4, gappy.clone()), (5, BTreeSet::new())]
                .into_iter()
                .collect(),
        };
        let bytes = postcard::to_allocvec(&w).unwrap();
        // 500k ids: 16 bytes each would be 8 MB; as runs, well under 1 KiB.
        assert!(bytes.len() < 1024, "{} bytes", bytes.len());
        let back: W = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, w);
        let none = W {
            s: BTreeSet::new(),
            o: None,
            m: BTreeMap::new(),
        };
        let back: W = postcard::from_bytes(&postcard::to_allocvec(&none).unwrap()).unwrap();
        assert_eq!(back, none);
    }

    #[test]
    fn inverted_and_oversized_runs_are_refused() {
        #[derive(Serialize)]
        struct Raw(Vec<Run>);
        let decode = |runs: Vec<Run>| {
            let bytes = postcard::to_allocvec(&Raw(runs)).unwrap();
            let mut d = postcard::Deserializer::from_bytes(&bytes);
            super::deserialize(&mut d).map(|s| s.len())
        };
        let run = |start, end| Run {
            epoch: 0,
            origin: 0,
            start,
            end,
        };
        assert!(decode(vec![run(5, 5)]).is_err());
        assert!(decode(vec![run(9, 3)]).is_err());
        assert!(decode(vec![run(0, IDSET_EXPAND_MAX + 1)]).is_err());
        assert_eq!(decode(vec![run(0, 3), run(7, 9)]).unwrap(), 5);
    }
}
