//! Values, results and typed rejection reasons (architecture.md §4: "every
//! result is recorded (`applied`, `rejected: <reason>`), so agents see why").

use crate::codec::DecodeError;
use crate::decision::ValidationError;
use serde::{Deserialize, Serialize};
use std::fmt;
use synod_types::{Access, Key};

/// What a key holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Value {
    /// Opaque bytes (`Put`, `Cas`).
    Bytes(Vec<u8>),
    /// A counter (`SetStock`, `Reserve`, `Release`). Unsigned: it can never
    /// be below zero.
    Stock(u64),
    /// An exclusive claim (`Claim`).
    Claim(ClaimState),
}

impl Value {
    /// The kind of value, for `WrongType` failures.
    pub fn kind(&self) -> Kind {
        match self {
            Value::Bytes(_) => Kind::Bytes,
            Value::Stock(_) => Kind::Stock,
            Value::Claim(_) => Kind::Claim,
        }
    }
}

/// An exclusive claim on a key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClaimState {
    /// The agent holding the claim.
    pub holder: String,
    /// `issued_at_ms` of the decision that took (or last renewed) the claim.
    pub claimed_at_ms: u64,
    /// `claimed_at_ms + ttl_ms` (saturating). A decision with
    /// `issued_at_ms >= expires_at_ms` sees the claim as expired.
    pub expires_at_ms: u64,
}

impl ClaimState {
    /// True if the claim no longer holds for a decision issued at `now_ms`.
    pub fn is_expired_at(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_at_ms
    }
}

/// Kind of a [`Value`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// [`Value::Bytes`]
    Bytes,
    /// [`Value::Stock`]
    Stock,
    /// [`Value::Claim`]
    Claim,
}

/// The result of one applied op, in op order.
///
/// `version` is the key's version after the op (versions start at 1 and
/// grow by one on every write; 0 means absent).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OpResult {
    /// `Put` applied.
    Put {
        /// new version
        version: u64,
    },
    /// `Get`: the value and version at this point of the decision.
    Get {
        /// current version, 0 if absent
        version: u64,
        /// current value, `None` if absent
        value: Option<Value>,
    },
    /// `Delete` applied.
    Delete {
        /// false if the key was already absent (nothing changed)
        existed: bool,
    },
    /// `Cas` applied.
    Cas {
        /// new version
        version: u64,
    },
    /// `Reserve` applied.
    Reserve {
        /// new version
        version: u64,
        /// stock left after the reservation
        remaining: u64,
    },
    /// `Release` applied.
    Release {
        /// new version
        version: u64,
        /// stock after the release
        remaining: u64,
    },
    /// `SetStock` applied.
    SetStock {
        /// new version
        version: u64,
        /// the stock now held
        stock: u64,
    },
    /// `Claim` applied (taken or renewed).
    Claim {
        /// new version
        version: u64,
        /// the agent now holding the claim
        holder: String,
        /// when it expires, in the proposers' `issued_at_ms` clock
        expires_at_ms: u64,
    },
    /// `ReleaseClaim` applied; the key is now absent.
    ReleaseClaim,
}

/// Why a guard or an op could not be satisfied.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Failure {
    /// The key's version is not the one required (`Version` guard, `Cas`).
    VersionMismatch {
        /// required version (0 = absent)
        expected: u64,
        /// actual version (0 = absent)
        actual: u64,
    },
    /// The key is absent (`Exists`, `StockAtLeast`, `Reserve`, `Release`).
    Absent,
    /// The key holds another kind of value.
    WrongType {
        /// kind the op needs
        expected: Kind,
        /// kind the key holds
        actual: Kind,
    },
    /// Not enough stock: the reservation would oversell.
    InsufficientStock {
        /// units asked for
        requested: u64,
        /// units available
        available: u64,
    },
    /// A release would overflow the counter.
    StockOverflow {
        /// current stock
        stock: u64,
        /// units being added
        added: u64,
    },
    /// Another agent holds an unexpired claim.
    ClaimHeld {
        /// the holder
        holder: String,
        /// when the claim expires
        expires_at_ms: u64,
    },
    /// The agent does not hold the claim (`ReleaseClaim`, `ClaimedBy`).
    NotHolder {
        /// who holds it, `None` if nobody does (absent or expired)
        holder: Option<String>,
    },
    /// The key's version counter is exhausted (only reachable from a
    /// crafted snapshot; kept typed rather than panicking).
    VersionExhausted,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::VersionMismatch { expected, actual } => {
                write!(f, "version is {actual}, expected {expected}")
            }
            Failure::Absent => write!(f, "key is absent"),
            Failure::WrongType { expected, actual } => {
                write!(f, "key holds {actual:?}, op needs {expected:?}")
            }
            Failure::InsufficientStock {
                requested,
                available,
            } => write!(f, "requested {requested}, only {available} in stock"),
            Failure::StockOverflow { stock, added } => {
                write!(f, "adding {added} to stock {stock} overflows")
            }
            Failure::ClaimHeld {
                holder,
                expires_at_ms,
            } => write!(f, "claimed by {holder:?} until {expires_at_ms} ms"),
            Failure::NotHolder { holder: Some(h) } => write!(f, "claim is held by {h:?}"),
            Failure::NotHolder { holder: None } => write!(f, "nobody holds the claim"),
            Failure::VersionExhausted => write!(f, "version counter exhausted"),
        }
    }
}

/// Why a command or decision was rejected. A rejection changes no key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// The decision breaks a limit ([`crate::Decision::validate`]).
    Invalid(ValidationError),
    /// The command body is not an encoded decision.
    Undecodable(DecodeError),
    /// The command does not declare `(session_key(client), Write)`; it is
    /// refused without reading or recording session state (see
    /// [`crate::command`]). Not recorded.
    MissingSessionKey,
    /// A command of [`crate::READ_ONLY_CLIENT`] (no session) holds an op
    /// other than `Get`; writes need a session for exactly-once.
    SessionRequired,
    /// The decision touches a key the command did not declare (or declared
    /// as `Read` but writes). Executing it would not be ordered against
    /// conflicting decisions, so it is refused.
    UndeclaredKey {
        /// the key
        key: Key,
        /// the access the decision needs
        access: Access,
    },
    /// A request number below the client's last applied one. Not recorded.
    StaleRequest {
        /// the client's last applied request number
        last_applied: u64,
    },
    /// Guard `guard` on `key` does not hold.
    GuardFailed {
        /// guard index
        guard: usize,
        /// its key
        key: Key,
        /// why
        failure: Failure,
    },
    /// Op `op` on `key` cannot be applied.
    OpFailed {
        /// op index
        op: usize,
        /// its key
        key: Key,
        /// why
        failure: Failure,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Invalid(e) => write!(f, "invalid decision: {e}"),
            Reason::Undecodable(e) => write!(f, "undecodable body: {e}"),
            Reason::MissingSessionKey => {
                write!(f, "command does not declare its client's session key")
            }
            Reason::SessionRequired => {
                write!(
                    f,
                    "only read-only decisions (every op a get) may run without a session"
                )
            }
            Reason::UndeclaredKey { key, access } => {
                write!(f, "key {key:?} ({access:?}) is not declared by the command")
            }
            Reason::StaleRequest { last_applied } => write!(
                f,
                "stale request: this client's last applied request is {last_applied}"
            ),
            Reason::GuardFailed {
                guard,
                key,
                failure,
            } => write!(f, "guard {guard} on {key:?} failed: {failure}"),
            Reason::OpFailed { op, key, failure } => {
                write!(f, "op {op} on {key:?} failed: {failure}")
            }
        }
    }
}

/// The recorded result of a decision.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// Every guard held and every op applied; one result per op.
    Applied {
        /// results, in op order
        results: Vec<OpResult>,
    },
    /// Nothing was applied.
    Rejected {
        /// why
        reason: Reason,
    },
}

impl Outcome {
    /// True for `Applied`.
    pub fn is_applied(&self) -> bool {
        matches!(self, Outcome::Applied { .. })
    }

    /// The rejection reason, if rejected.
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            Outcome::Applied { .. } => None,
            Outcome::Rejected { reason } => Some(reason),
        }
    }

    pub(crate) fn rejected(reason: Reason) -> Outcome {
        Outcome::Rejected { reason }
    }
}
