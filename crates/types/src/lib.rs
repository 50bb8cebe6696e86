//! Identifiers, ballots, commands and quorum configuration shared by Synod's
//! pure cores (`epaxos`, `executor`, `decision`, `sim`).
//!
//! Everything here is plain data: no I/O, no clocks, no randomness.
//! Names follow `shared/design/epaxos.md` (§1.3, §1.4) so code and spec can be
//! read side by side.

#![deny(missing_docs)]

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A replica's identity within a cluster. Stable for the replica's lifetime;
/// a replica that lost its disk must come back under a new id (epaxos.md §1.1).
pub type NodeId = u16;

mod deps;
pub mod idset;
pub use deps::{Deps, Floor};

/// A conflict key such as `inventory/sku-42`.
pub type Key = Arc<str>;

/// Identifies one client session for exactly-once retries (architecture.md §4).
pub type ClientId = u64;

/// Command identifier, unique system-wide forever (epaxos.md §1.4).
///
/// The derived `Ord` (epoch, then seq, then origin) is the tie-break used to
/// order commands inside one strongly connected component (epaxos.md §5.3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CmdId {
    /// Epoch in which the command was submitted (epaxos.md §8.1).
    pub epoch: u64,
    /// Per-origin sequence number; the origin persists a high-water mark so a
    /// restart never reuses one.
    pub seq: u64,
    /// The submitting replica, the paper's `initCoord(id)`.
    pub origin: NodeId,
}

impl fmt::Debug for CmdId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.epoch, self.seq, self.origin)
    }
}

impl fmt::Display for CmdId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A Paxos ballot, compared lexicographically (epaxos.md §1.4).
///
/// `round == 0` is the initial ballot, owned by the command's origin; it is the
/// only ballot at which PreAccept and the fast path run. Recovery rounds
/// start at 1 and are owned by `node`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ballot {
    /// Epoch of the process that created the ballot.
    pub epoch: u64,
    /// 0 for the initial ballot, ≥ 1 for recovery ballots.
    pub round: u32,
    /// Owner of the ballot.
    pub node: NodeId,
}

impl Ballot {
    /// The initial ballot of `id`: `(id.epoch, 0, origin(id))`.
    pub fn initial(id: CmdId) -> Ballot {
        Ballot {
            epoch: id.epoch,
            round: 0,
            node: id.origin,
        }
    }

    /// True for the initial ballot (the paper's ballot 0).
    pub fn is_initial(&self) -> bool {
        self.round == 0
    }
}

impl fmt::Debug for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}.{}@{}", self.epoch, self.round, self.node)
    }
}

/// How a command touches a conflict key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Access {
    /// Reads only; two reads of a key commute.
    Read,
    /// Writes (or reads and writes).
    Write,
}

/// One client command: its conflict keys and an opaque body the protocol never
/// interprets (the decision state machine decodes it).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Command {
    /// Conflict keys with their access mode (epaxos.md §1.3).
    pub keys: Vec<(Key, Access)>,
    /// Opaque payload, e.g. an encoded `synod_decision::Decision`.
    pub body: Arc<[u8]>,
    /// Client session, for de-duplication of retries (epaxos.md §3.9).
    pub client: ClientId,
    /// Per-client request number; a retry reuses it.
    pub request: u64,
}

/// A batch of client commands proposed as one instance (epaxos.md §5.4.1).
///
/// Its key set is the union of its commands' keys. Shared behind an `Arc`
/// because the same batch is held by many instance records and messages.
pub type Batch = Arc<Vec<Command>>;

/// The value an instance decides (epaxos.md §1.3).
///
/// `Option<Payload>::None` is the paper's ⊥ ("unknown payload").
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Payload {
    /// A batch of client commands.
    Op(Batch),
    /// The no-op a recovery proposes when it aborts a command. Conflicts with
    /// every payload, is committed with empty deps and is never executed.
    Nop,
}

impl Payload {
    /// True for `Nop`.
    pub fn is_nop(&self) -> bool {
        matches!(self, Payload::Nop)
    }
}

/// `a ⋈ b` for two batches: some key appears in both with at least one write
/// (epaxos.md §1.3).
pub fn batches_conflict(a: &[Command], b: &[Command]) -> bool {
    a.iter()
        .any(|ca| b.iter().any(|cb| commands_conflict(ca, cb)))
}

/// `a ⋈ b` for two commands: some key appears in both with at least one write.
pub fn commands_conflict(a: &Command, b: &Command) -> bool {
    a.keys.iter().any(|(ka, aa)| {
        b.keys
            .iter()
            .any(|(kb, ab)| ka == kb && (*aa == Access::Write || *ab == Access::Write))
    })
}

/// `a ⋈ b` for payloads: `Nop` conflicts with everything (epaxos.md §1.3).
pub fn payloads_conflict(a: &Payload, b: &Payload) -> bool {
    match (a, b) {
        (Payload::Nop, _) | (_, Payload::Nop) => true,
        (Payload::Op(x), Payload::Op(y)) => batches_conflict(x, y),
    }
}

/// Instance phase; ordered `Initial < PreAccepted < Accepted < Committed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    /// Heard of (e.g. through Recover) but nothing adopted.
    Initial,
    /// Pre-accepted at the initial ballot.
    PreAccepted,
    /// Accepted at `abal`.
    Accepted,
    /// Committed; final (epaxos.md §3.7.2).
    Committed,
}

/// Why a quorum configuration is rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuorumError {
    /// The member list is empty or has duplicate ids.
    BadMembers(String),
    /// `n ≥ max(2e+f−1, 2f+1)` does not hold (epaxos.md §1.2, I22).
    TooFewReplicas {
        /// replicas
        n: usize,
        /// crash tolerance
        f: usize,
        /// fast-path crash tolerance
        e: usize,
    },
    /// `e ≤ f` does not hold, or `f` or `e` is zero.
    BadThresholds {
        /// crash tolerance
        f: usize,
        /// fast-path crash tolerance
        e: usize,
    },
}

impl fmt::Display for QuorumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuorumError::BadMembers(why) => write!(f, "bad member list: {why}"),
            QuorumError::TooFewReplicas { n, f: ff, e } => write!(
                f,
                "n = {n} replicas cannot tolerate f = {ff}, e = {e}: need n >= max(2e+f-1, 2f+1) = {}",
                (2 * e + ff - 1).max(2 * ff + 1)
            ),
            QuorumError::BadThresholds { f: ff, e } => {
                write!(f, "need 1 <= e <= f, got f = {ff}, e = {e}")
            }
        }
    }
}

impl std::error::Error for QuorumError {}

/// The membership and thresholds of one epoch (epaxos.md §1.2, §8).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumConfig {
    /// Epoch these members serve.
    pub epoch: u64,
    /// Sorted, distinct member ids.
    members: Vec<NodeId>,
    f: usize,
    e: usize,
}

impl QuorumConfig {
    /// Validates `n ≥ max(2e+f−1, 2f+1)` and `1 ≤ e ≤ f`.
    pub fn new(
        epoch: u64,
        mut members: Vec<NodeId>,
        f: usize,
        e: usize,
    ) -> Result<Self, QuorumError> {
        members.sort_unstable();
        let len = members.len();
        members.dedup();
        if members.is_empty() || members.len() != len {
            return Err(QuorumError::BadMembers(
                "members must be non-empty and distinct".into(),
            ));
        }
        if f == 0 || e == 0 || e > f {
            return Err(QuorumError::BadThresholds { f, e });
        }
        let n = members.len();
        if n < (2 * e + f - 1).max(2 * f + 1) {
            return Err(QuorumError::TooFewReplicas { n, f, e });
        }
        Ok(QuorumConfig {
            epoch,
            members,
            f,
            e,
        })
    }

    /// The standard configuration for `n` replicas with ids `0..n`: n=3 → f=e=1;
    /// n=5 → f=e=2; n=7 → f=3, e=2; otherwise f = (n−1)/2 and the largest
    /// valid e (epaxos.md §1.2 table).
    pub fn standard(n: usize) -> Result<Self, QuorumError> {
        QuorumConfig::for_members(0, (0..n).map(|i| i as NodeId).collect())
    }

    /// The standard thresholds for `members` in `epoch`: f = (n−1)/2 and the
    /// largest valid e (n=3 → f=e=1, n=4 → f=e=1, n=5 → f=e=2,
    /// n=7 → f=3, e=2). Every configuration the control plane creates uses
    /// this rule, so all replicas derive the same one from the same member
    /// set. Fails below 3 members (f would be 0).
    pub fn for_members(epoch: u64, members: Vec<NodeId>) -> Result<Self, QuorumError> {
        let n = members.len();
        let f = n.saturating_sub(1) / 2;
        let mut e = f;
        while e > 1 && n < 2 * e + f - 1 {
            e -= 1;
        }
        QuorumConfig::new(epoch, members, f, e)
    }

    /// Member ids, sorted.
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }
    /// `n`
    pub fn n(&self) -> usize {
        self.members.len()
    }
    /// `f`
    pub fn f(&self) -> usize {
        self.f
    }
    /// `e`
    pub fn e(&self) -> usize {
        self.e
    }
    /// Slow (classic) quorum `n − f`.
    pub fn slow_quorum(&self) -> usize {
        self.n() - self.f
    }
    /// Fast quorum `n − e`, counting the coordinator.
    pub fn fast_quorum(&self) -> usize {
        self.n() - self.e
    }
    /// True if `node` is a member.
    pub fn contains(&self, node: NodeId) -> bool {
        self.members.binary_search(&node).is_ok()
    }
}

/// SplitMix64: the one small deterministic PRNG of the pure crates (backoff
/// jitter in the core) and of their randomized tests. Seeded by the caller,
/// never from the OS, so every run replays from its seed.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` (53 random bits).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform-ish in `0..bound` (modulo bias is irrelevant here).
    ///
    /// # Panics
    /// If `bound` is 0.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "SplitMix64::below(0)");
        self.next_u64() % bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_quorums_match_spec_table() {
        // epaxos.md §1.2 table: (n, f, e, slow, fast)
        for (n, f, e, slow, fast) in [(3, 1, 1, 2, 2), (5, 2, 2, 3, 3), (7, 3, 2, 4, 5)] {
            let q = QuorumConfig::standard(n).unwrap();
            assert_eq!((q.n(), q.f(), q.e()), (n, f, e));
            assert_eq!((q.slow_quorum(), q.fast_quorum()), (slow, fast));
        }
    }

    #[test]
    fn intermediate_sizes_of_a_reconfiguration_get_valid_thresholds() {
        // 3 → 5 → 3 passes through 4; 5 → 7 through 6.
        for (n, f, e) in [(4, 1, 1), (6, 2, 2)] {
            let q = QuorumConfig::for_members(1, (10..10 + n as NodeId).collect()).unwrap();
            assert_eq!((q.epoch, q.n(), q.f(), q.e()), (1, n, f, e));
        }
        assert!(QuorumConfig::for_members(1, vec![0, 1]).is_err());
    }

    #[test]
    fn invalid_thresholds_rejected() {
        assert_eq!(
            QuorumConfig::new(0, vec![0, 1, 2, 3, 4, 5, 6], 3, 3),
            Err(QuorumError::TooFewReplicas { n: 7, f: 3, e: 3 })
        );
        assert!(matches!(
            QuorumConfig::new(0, vec![0, 1, 2], 1, 2),
            Err(QuorumError::BadThresholds { .. })
        ));
        assert!(matches!(
            QuorumConfig::new(0, vec![0, 0, 1], 1, 1),
            Err(QuorumError::BadMembers(_))
        ));
        assert!(QuorumConfig::new(0, vec![0, 1, 2, 3, 4, 5, 6], 2, 2).is_ok());
    }

    #[test]
    fn conflict_relation() {
        let k: Key = Arc::from("k");
        let cmd = |a| Command {
            keys: vec![(k.clone(), a)],
            body: Arc::from(&b""[..]),
            client: 0,
            request: 0,
        };
        assert!(!commands_conflict(&cmd(Access::Read), &cmd(Access::Read)));
        assert!(commands_conflict(&cmd(Access::Read), &cmd(Access::Write)));
        assert!(commands_conflict(&cmd(Access::Write), &cmd(Access::Write)));
        let op = Payload::Op(Arc::new(vec![cmd(Access::Read)]));
        assert!(payloads_conflict(&op, &Payload::Nop));
        assert!(!payloads_conflict(&op, &op));
    }
}
