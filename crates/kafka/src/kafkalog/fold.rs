//! The pure fold of the decisions log (kafka.md §3 rules 2, 3 and 6).
//!
//! [`LogState`] consumes `(offset, record bytes)` in log order and keeps
//! the decision state machine. Every node runs the same fold over the same
//! log, so every node skips the same records and applies the same decisions
//! in the same order: no clocks, no I/O, no randomness, no hash maps here.
//!
//! - Rule 2: a claim makes its node leader of its term iff the term is
//!   greater than every earlier claim's term.
//! - Rule 3: a decision is valid iff its term is the current term at its
//!   position, it comes from that term's leader, and its `seq` is the next
//!   one of that term (1, 2, ...). An invalid decision is skipped. A gap in
//!   a term's sequence (a lost record) therefore ends that term: every
//!   later decision of it is skipped until a new claim. The leader sees its
//!   own record skipped and stops leading (`super::agent`).
//! - Rule 6: [`LogState::snapshot`] tags the image with the next offset to
//!   fold and the term; [`LogState::restore`] plus folding from that offset
//!   gives the same state as folding from the start.

use super::record::{Claim, DecisionRecord, LogRecord, RecordError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use synod_decision::{Decision, Outcome, StateMachine};
use synod_types::{Access, ClientId, Command, NodeId};

/// Which validity rules the fold applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rules {
    /// kafka.md §3 rules 2–3. The only variant a real agent uses.
    Spec,
    /// Deliberately broken: applies every decision whatever its term,
    /// leader and seq, as the seed's literal design would. Exists only so
    /// the split-brain test can show its own checks catch a stale-term
    /// decision being applied (`tests/kafkalog.rs`).
    BrokenAcceptAnyTerm,
}

/// The leader of the current term: the node of the claim that won it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    /// Its node id.
    pub node: NodeId,
    /// The incarnation that claimed ([`Claim::boot`]).
    pub boot: u64,
    /// Its HTTP API address.
    pub api_addr: String,
}

/// What the fold has seen, by kind. Identical on every node at the same
/// offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Claims that made their node leader.
    pub claims_won: u64,
    /// Claims of a term not greater than an earlier claim's.
    pub claims_ignored: u64,
    /// Valid decisions, applied to the state machine (including ones the
    /// state machine rejected or answered from a session).
    pub decisions_applied: u64,
    /// Invalid decisions (rule 3), skipped.
    pub decisions_skipped: u64,
    /// Records that do not decode, skipped.
    pub unparseable: u64,
}

/// Why a decision record is invalid at its position (rule 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Its term is not the current term (a deposed leader's, or one no
    /// claim has made current yet).
    NotCurrentTerm {
        /// the current term at its position
        current_term: u64,
    },
    /// It does not come from the current term's leader.
    NotTermLeader {
        /// the term's leader, if any
        term_leader: Option<NodeId>,
    },
    /// Its seq is not the next of its term.
    OutOfOrder {
        /// the seq that would have been valid
        expected_seq: u64,
    },
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::NotCurrentTerm { current_term } => {
                write!(f, "not of the current term {current_term}")
            }
            Invalid::NotTermLeader {
                term_leader: Some(n),
            } => write!(f, "not from the term's leader (node {n})"),
            Invalid::NotTermLeader { term_leader: None } => write!(f, "the term has no leader"),
            Invalid::OutOfOrder { expected_seq } => {
                write!(f, "out of order (expected seq {expected_seq})")
            }
        }
    }
}

/// What folding one record did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The offset is below [`LogState::next_offset`]: already folded
    /// (a replay overlapping a snapshot); nothing changed.
    AlreadyFolded,
    /// The value does not decode; skipped and counted.
    Unparseable(RecordError),
    /// The claim made `node` leader of `term`.
    ClaimWon {
        /// the new term
        term: u64,
        /// its leader
        node: NodeId,
        /// the leader's incarnation
        boot: u64,
    },
    /// The claim's term is not greater than the current term; ignored.
    ClaimIgnored {
        /// the term claimed
        term: u64,
        /// the claimant
        node: NodeId,
        /// the current term
        current_term: u64,
    },
    /// A valid decision, applied.
    Applied {
        /// the record (body included)
        record: DecisionRecord,
        /// the state machine's outcome
        outcome: Outcome,
    },
    /// An invalid decision, skipped.
    Skipped {
        /// the record
        record: DecisionRecord,
        /// why
        why: Invalid,
    },
}

/// The fold's state: the current term, its leader and next seq, the next
/// offset to fold, the counters and the decision state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogState {
    rules: Rules,
    /// Offset of the next record to fold: one past the last folded one
    /// (Kafka offsets may have gaps: transaction markers, aborted records).
    next_offset: u64,
    /// Highest claimed term so far; 0 before the first claim.
    term: u64,
    /// The leader of `term`; `None` exactly when `term == 0`.
    leader: Option<Leader>,
    /// The seq the next valid decision of `term` carries; ≥ 1.
    next_seq: u64,
    counters: Counters,
    sm: StateMachine,
}

impl LogState {
    /// The state before the first record.
    pub fn new(rules: Rules) -> LogState {
        LogState {
            rules,
            next_offset: 0,
            term: 0,
            leader: None,
            next_seq: 1,
            counters: Counters::default(),
            sm: StateMachine::new(),
        }
    }

    /// Folds the record at `offset` with value `bytes`. Offsets must come in
    /// increasing order (gaps allowed); an offset already folded changes
    /// nothing ([`Step::AlreadyFolded`]).
    pub fn fold(&mut self, offset: u64, bytes: &[u8]) -> Step {
        if offset < self.next_offset {
            return Step::AlreadyFolded;
        }
        self.next_offset = offset + 1;
        let step = match LogRecord::decode(bytes) {
            Err(e) => {
                self.counters.unparseable += 1;
                Step::Unparseable(e)
            }
            Ok(LogRecord::Claim(c)) => self.fold_claim(c),
            Ok(LogRecord::Decision(d)) => self.fold_decision(d),
        };
        self.check();
        step
    }

    fn fold_claim(&mut self, c: Claim) -> Step {
        if c.term <= self.term {
            self.counters.claims_ignored += 1;
            return Step::ClaimIgnored {
                term: c.term,
                node: c.node,
                current_term: self.term,
            };
        }
        self.term = c.term;
        self.leader = Some(Leader {
            node: c.node,
            boot: c.boot,
            api_addr: c.api_addr,
        });
        self.next_seq = 1;
        self.counters.claims_won += 1;
        Step::ClaimWon {
            term: c.term,
            node: c.node,
            boot: c.boot,
        }
    }

    /// Rule 3, or nothing under [`Rules::BrokenAcceptAnyTerm`].
    fn validity(&self, d: &DecisionRecord) -> Result<(), Invalid> {
        if self.rules == Rules::BrokenAcceptAnyTerm {
            return Ok(());
        }
        if d.term != self.term {
            return Err(Invalid::NotCurrentTerm {
                current_term: self.term,
            });
        }
        let term_leader = self.leader.as_ref().map(|l| l.node);
        if term_leader != Some(d.leader) {
            return Err(Invalid::NotTermLeader { term_leader });
        }
        if d.seq != self.next_seq {
            return Err(Invalid::OutOfOrder {
                expected_seq: self.next_seq,
            });
        }
        Ok(())
    }

    fn fold_decision(&mut self, d: DecisionRecord) -> Step {
        if let Err(why) = self.validity(&d) {
            self.counters.decisions_skipped += 1;
            return Step::Skipped { record: d, why };
        }
        if d.term == self.term && d.seq == self.next_seq {
            self.next_seq += 1;
        }
        let outcome = self.sm.apply(&command_of(&d));
        self.counters.decisions_applied += 1;
        Step::Applied { record: d, outcome }
    }

    /// Invariants after every step; a violation is a bug in this file.
    fn check(&self) {
        assert!(self.next_seq >= 1, "next_seq starts at 1");
        assert_eq!(
            self.leader.is_some(),
            self.term > 0,
            "a term > 0 has exactly one leader"
        );
    }

    /// Offset of the next record to fold.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// The current term (0 before the first claim).
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The current term's leader.
    pub fn leader(&self) -> Option<&Leader> {
        self.leader.as_ref()
    }

    /// The seq the next valid decision of the current term carries.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// What the fold has seen.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The decision state machine.
    pub fn machine(&self) -> &StateMachine {
        &self.sm
    }

    /// The state machine's digest (`StateMachine::digest`): equal on nodes
    /// that applied the same decisions.
    pub fn state_digest(&self) -> u64 {
        self.sm.digest()
    }

    /// The rules this fold applies.
    pub fn rules(&self) -> Rules {
        self.rules
    }
}

/// The protocol command of a decision record, with the replica's session
/// rules (`synod_decision::command`, `read_command` for the read-only
/// client). A body that does not decode still becomes a command on the
/// client's session key, which the state machine rejects as undecodable and
/// records, exactly as a replica would.
fn command_of(d: &DecisionRecord) -> Command {
    match Decision::decode(&d.body) {
        Ok(decision) if d.client == synod_decision::READ_ONLY_CLIENT => {
            synod_decision::read_command(d.request, &decision)
        }
        Ok(decision) => synod_decision::command(d.client, d.request, &decision),
        Err(_) => Command {
            keys: vec![(synod_decision::session_key(d.client), Access::Write)],
            body: Arc::from(d.body.as_slice()),
            client: d.client as ClientId,
            request: d.request,
        },
    }
}

// ---------------------------------------------------------------------------
// Snapshots (rule 6)

/// Magic of a fold snapshot.
const SNAPSHOT_MAGIC: [u8; 8] = *b"SYNODKL\0";

/// Layout version of a fold snapshot.
pub const FOLD_SNAPSHOT_VERSION: u32 = 1;

/// magic (8) + version (u32 LE) + payload length (u64 LE).
const HEADER_BYTES: usize = 8 + 4 + 8;

/// FNV-1a (u64 LE) over header and payload.
const TRAILER_BYTES: usize = 8;

#[derive(Serialize, Deserialize)]
struct Image {
    next_offset: u64,
    term: u64,
    leader: Option<Leader>,
    next_seq: u64,
    counters: Counters,
    /// `StateMachine::snapshot()`, with its own framing and checksum.
    machine: Vec<u8>,
}

/// Why a fold snapshot cannot be restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FoldSnapshotError {
    /// Shorter than its header and trailer, or than its stated length.
    Truncated,
    /// Not a fold snapshot.
    BadMagic,
    /// A layout this build does not read.
    UnsupportedVersion(u32),
    /// The checksum does not match: the bytes are corrupted.
    Checksum,
    /// The payload does not parse.
    Malformed,
    /// The embedded state machine snapshot is refused.
    Machine(String),
    /// The image breaks an invariant of the fold.
    Invalid(&'static str),
}

impl fmt::Display for FoldSnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FoldSnapshotError::Truncated => write!(f, "truncated"),
            FoldSnapshotError::BadMagic => write!(f, "not a Kafka-log snapshot"),
            FoldSnapshotError::UnsupportedVersion(v) => write!(
                f,
                "snapshot version {v}, this build reads {FOLD_SNAPSHOT_VERSION}"
            ),
            FoldSnapshotError::Checksum => write!(f, "checksum mismatch"),
            FoldSnapshotError::Malformed => write!(f, "payload does not parse"),
            FoldSnapshotError::Machine(e) => write!(f, "state machine: {e}"),
            FoldSnapshotError::Invalid(why) => write!(f, "invalid: {why}"),
        }
    }
}

impl std::error::Error for FoldSnapshotError {}

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl LogState {
    /// The full fold state as bytes:
    /// `"SYNODKL\0" | version u32 LE | payload length u64 LE | postcard
    /// payload | FNV-1a u64 LE over everything before it`. The payload holds
    /// the next offset, the term, its leader and next seq, the counters and
    /// the state machine's own snapshot.
    pub fn snapshot(&self) -> Vec<u8> {
        let image = Image {
            next_offset: self.next_offset,
            term: self.term,
            leader: self.leader.clone(),
            next_seq: self.next_seq,
            counters: self.counters,
            machine: self.sm.snapshot(),
        };
        let payload = postcard::to_allocvec(&image).expect("encoding into a Vec cannot fail");
        let mut out = Vec::with_capacity(HEADER_BYTES + payload.len() + TRAILER_BYTES);
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.extend_from_slice(&FOLD_SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&payload);
        let sum = fnv1a(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Restores a state written by [`LogState::snapshot`]; checks framing,
    /// checksum, the state machine's own snapshot and the fold's
    /// invariants. Corrupted bytes give an error, never a panic.
    pub fn restore(bytes: &[u8], rules: Rules) -> Result<LogState, FoldSnapshotError> {
        if bytes.len() < HEADER_BYTES + TRAILER_BYTES {
            return Err(FoldSnapshotError::Truncated);
        }
        if bytes[..8] != SNAPSHOT_MAGIC {
            return Err(FoldSnapshotError::BadMagic);
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != FOLD_SNAPSHOT_VERSION {
            return Err(FoldSnapshotError::UnsupportedVersion(version));
        }
        let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        let expected = (HEADER_BYTES + TRAILER_BYTES) as u64;
        if len.checked_add(expected) != Some(bytes.len() as u64) {
            return Err(FoldSnapshotError::Truncated);
        }
        let body_end = bytes.len() - TRAILER_BYTES;
        let sum = u64::from_le_bytes(bytes[body_end..].try_into().expect("8 bytes"));
        if fnv1a(&bytes[..body_end]) != sum {
            return Err(FoldSnapshotError::Checksum);
        }
        let image: Image = postcard::from_bytes(&bytes[HEADER_BYTES..body_end])
            .map_err(|_| FoldSnapshotError::Malformed)?;
        let sm = StateMachine::restore(&image.machine)
            .map_err(|e| FoldSnapshotError::Machine(e.to_string()))?;
        if image.next_seq == 0 {
            return Err(FoldSnapshotError::Invalid("next_seq is 0"));
        }
        if image.leader.is_some() != (image.term > 0) {
            return Err(FoldSnapshotError::Invalid(
                "a term > 0 must have a leader, term 0 none",
            ));
        }
        Ok(LogState {
            rules,
            next_offset: image.next_offset,
            term: image.term,
            leader: image.leader,
            next_seq: image.next_seq,
            counters: image.counters,
            sm,
        })
    }
}

#[cfg(test)]
mod tests;
