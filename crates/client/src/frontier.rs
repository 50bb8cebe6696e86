//! [`Frontier`]: a set of instance ids, kept compact as per-origin ranges,
//! with a text form for resume tokens (architecture.md §5).
//!
//! A subscriber to the committed stream remembers which instances it has
//! seen. Every replica executes conflicting instances in the same order, so
//! the seen set is, key by key, a prefix of every replica's execution order;
//! a replica resuming a subscriber streams its own executions minus the
//! frontier, without gaps or duplicates, even if the subscriber moved from
//! another replica. Ids of one origin are issued densely (`seq` 0, 1, 2…), so
//! the set is a few ranges per origin; holes are instances not executed yet,
//! or committed as Nop (never executed).
//!
//! This is the token format of the stream; the stream itself comes with the
//! client-API issue.

use std::collections::BTreeMap;
use std::fmt;
use synod_types::{CmdId, NodeId};

/// Longest token text accepted by [`Frontier::decode`].
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// Most ranges one token may hold (all origins together). A healthy
/// cluster has one per origin plus one per Nop'd or unexecuted hole.
pub const MAX_TOKEN_RANGES: usize = 4096;

/// A set of [`CmdId`]s as sorted, disjoint, non-adjacent half-open ranges
/// of `seq` per `(epoch, origin)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    ranges: BTreeMap<(u64, NodeId), Vec<(u64, u64)>>,
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    TooLong(usize),
    /// More ranges than [`MAX_TOKEN_RANGES`].
    TooManyRanges(usize),
    /// Not `epoch.origin:start-end,...;...` with increasing, disjoint,
    /// non-adjacent, non-empty ranges; the text says where.
    Malformed(String),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::TooLong(n) => {
                write!(f, "token: {n} bytes, more than {MAX_TOKEN_BYTES}")
            }
            TokenError::TooManyRanges(n) => {
                write!(f, "token: {n} ranges, more than {MAX_TOKEN_RANGES}")
            }
            TokenError::Malformed(m) => write!(f, "token: {m}"),
        }
    }
}

impl std::error::Error for TokenError {}

impl Frontier {
    /// The empty set (a subscriber that has seen nothing).
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// True if `id` is in the set.
    pub fn contains(&self, id: CmdId) -> bool {
        let Some(rs) = self.ranges.get(&(id.epoch, id.origin)) else {
            return false;
        };
        // The last range starting at or before seq.
        let i = rs.partition_point(|&(s, _)| s <= id.seq);
        i > 0 && id.seq < rs[i - 1].1
    }

    /// Adds `id`; false if it was already there.
    pub fn insert(&mut self, id: CmdId) -> bool {
        if self.contains(id) {
            return false;
        }
        let rs = self.ranges.entry((id.epoch, id.origin)).or_default();
        let seq = id.seq;
        let i = rs.partition_point(|&(s, _)| s <= seq);
        // rs[..i] start at or before seq (and end at or before it, since seq
        // is absent); rs[i..] start after it.
        let joins_left = i > 0 && rs[i - 1].1 == seq;
        let joins_right = i < rs.len() && rs[i].0 == seq + 1;
        match (joins_left, joins_right) {
            (true, true) => {
                rs[i - 1].1 = rs[i].1;
                rs.remove(i);
            }
            (true, false) => rs[i - 1].1 = seq + 1,
            (false, true) => rs[i].0 = seq,
            (false, false) => rs.insert(i, (seq, seq + 1)),
        }
        true
    }

    /// Number of ids in the set.
    pub fn len(&self) -> u64 {
        self.ranges
            .values()
            .flat_map(|rs| rs.iter())
            .map(|(s, e)| e - s)
            .sum()
    }

    /// True if the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of ranges (the token's size).
    pub fn range_count(&self) -> usize {
        self.ranges.values().map(Vec::len).sum()
    }

    /// True if every id of `other` is in `self`.
    pub fn contains_all(&self, other: &Frontier) -> bool {
        other.ranges.iter().all(|(k, theirs)| {
            let Some(ours) = self.ranges.get(k) else {
                return false;
            };
            theirs.iter().all(|&(s, e)| {
                let i = ours.partition_point(|&(os, _)| os <= s);
                i > 0 && ours[i - 1].1 >= e
            })
        })
    }

    /// The token text: `epoch.origin:start-end,start-end;epoch.origin:…`
    /// (half-open ranges, `start-end` written `start` when one id); the
    /// empty set is the empty string.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (i, ((epoch, origin), rs)) in self.ranges.iter().enumerate() {
            if i > 0 {
                out.push(';');
            }
            out.push_str(&format!("{epoch}.{origin}:"));
            for (j, (s, e)) in rs.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                if e - s == 1 {
                    out.push_str(&s.to_string());
                } else {
                    out.push_str(&format!("{s}-{e}"));
                }
            }
        }
        out
    }

    /// Parses [`Frontier::encode`]'s text, refusing anything else.
    pub fn decode(text: &str) -> Result<Frontier, TokenError> {
        if text.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong(text.len()));
        }
        let bad = |m: String| Err(TokenError::Malformed(m));
        let mut f = Frontier::new();
        if text.is_empty() {
            return Ok(f);
        }
        let mut count = 0usize;
        let mut last_key: Option<(u64, NodeId)> = None;
        for (n, part) in text.split(';').enumerate() {
            let Some((head, list)) = part.split_once(':') else {
                return bad(format!("part {n}: no ':'"));
            };
            let Some((epoch, origin)) = head.split_once('.') else {
                return bad(format!("part {n}: {head:?} is not epoch.origin"));
            };
            let (Ok(epoch), Ok(origin)) = (epoch.parse::<u64>(), origin.parse::<NodeId>()) else {
                return bad(format!("part {n}: {head:?} is not epoch.origin"));
            };
            let key = (epoch, origin);
            if last_key.is_some_and(|k| k >= key) {
                return bad(format!("part {n}: origins out of order or repeated"));
            }
            last_key = Some(key);
            let mut rs: Vec<(u64, u64)> = Vec::new();
            for r in list.split(',') {
                count += 1;
                if count > MAX_TOKEN_RANGES {
                    return Err(TokenError::TooManyRanges(count));
                }
                let parsed = match r.split_once('-') {
                    Some((s, e)) => s.parse::<u64>().ok().zip(e.parse::<u64>().ok()),
                    None => r
                        .parse::<u64>()
                        .ok()
                        .and_then(|s| Some((s, s.checked_add(1)?))),
                };
                let Some((s, e)) = parsed else {
                    return bad(format!("part {n}: range {r:?}"));
                };
                if s >= e || rs.last().is_some_and(|&(_, pe)| pe >= s) {
                    return bad(format!(
                        "part {n}: range {r:?} is empty, out of order or touches the previous one"
                    ));
                }
                rs.push((s, e));
            }
            f.ranges.insert(key, rs);
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use synod_types::SplitMix64;

    fn id(epoch: u64, seq: u64, origin: NodeId) -> CmdId {
        CmdId { epoch, seq, origin }
    }

    #[test]
    fn matches_a_plain_set_and_stays_minimal() {
        for seed in 0..200 {
            let mut rng = SplitMix64::new(seed);
            let mut f = Frontier::new();
            let mut s = BTreeSet::new();
            for _ in 0..rng.below(300) {
                let x = id(rng.below(2), rng.below(60), rng.below(3) as NodeId);
                assert_eq!(f.insert(x), s.insert(x), "seed {seed}: insert {x:?}");
            }
            for e in 0..2 {
                for o in 0..3 {
                    for q in 0..62 {
                        let x = id(e, q, o);
                        assert_eq!(f.contains(x), s.contains(&x), "seed {seed}: {x:?}");
                    }
                }
            }
            assert_eq!(f.len(), s.len() as u64);
            // Minimal: no empty, overlapping or touching ranges.
            for rs in f.ranges.values() {
                for w in rs.windows(2) {
                    assert!(w[0].0 < w[0].1 && w[0].1 < w[1].0, "seed {seed}: {rs:?}");
                }
            }
            let text = f.encode();
            assert_eq!(Frontier::decode(&text).unwrap(), f, "seed {seed}: {text}");
        }
    }

    #[test]
    fn contains_all_is_subset() {
        let mut a = Frontier::new();
        let mut b = Frontier::new();
        for q in 0..10 {
            a.insert(id(0, q, 1));
        }
        for q in 3..7 {
            b.insert(id(0, q, 1));
        }
        assert!(a.contains_all(&b));
        assert!(!b.contains_all(&a));
        b.insert(id(0, 11, 1));
        assert!(!a.contains_all(&b));
        b = Frontier::new();
        b.insert(id(0, 0, 2));
        assert!(!a.contains_all(&b));
        assert!(a.contains_all(&Frontier::new()));
    }

    #[test]
    fn text_form() {
        let mut f = Frontier::new();
        for q in [0, 1, 2, 5, 7, 8] {
            f.insert(id(0, q, 1));
        }
        f.insert(id(1, 0, 0));
        assert_eq!(f.encode(), "0.1:0-3,5,7-9;1.0:0");
        assert_eq!(f.range_count(), 4);
        assert_eq!(Frontier::decode("").unwrap(), Frontier::new());
    }

    #[test]
    fn malformed_tokens_are_typed_errors() {
        for bad in [
            "x",
            "0.1",
            "0.1:",
            "0:1",
            "0.1:3-3",
            "0.1:5,4",
            "0.1:1,2",
            "0.1:0-3,3",
            "0.1:1;0.1:5",
            "1.0:1;0.9:1",
            "0.70000:1",
            "0.1:-1",
            "0.1:1-",
            ";",
            "0.1:18446744073709551615",
        ] {
            assert!(
                matches!(Frontier::decode(bad), Err(TokenError::Malformed(_))),
                "{bad:?} was accepted"
            );
        }
        let long = "0.1:".to_string() + &"1".repeat(MAX_TOKEN_BYTES);
        assert!(matches!(
            Frontier::decode(&long),
            Err(TokenError::TooLong(_))
        ));
        let many: Vec<String> = (0..=MAX_TOKEN_RANGES as u64)
            .map(|i| (2 * i).to_string())
            .collect();
        let many = format!("0.1:{}", many.join(","));
        assert!(matches!(
            Frontier::decode(&many),
            Err(TokenError::TooManyRanges(_))
        ));
    }

    #[test]
    fn random_text_never_panics() {
        let alphabet = b"0123456789.:,;-x";
        for seed in 0..2000 {
            let mut rng = SplitMix64::new(seed);
            let len = rng.below(24) as usize;
            let text: String = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize] as char)
                .collect();
            if let Ok(f) = Frontier::decode(&text) {
                // Whatever it accepts, it writes back the same way.
                assert_eq!(Frontier::decode(&f.encode()).unwrap(), f, "{text:?}");
            }
        }
    }
}
