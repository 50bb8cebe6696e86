//! Decisions: ops, guards, limits and validation (architecture.md §4).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use synod_types::{Access, Key};

/// Most ops in one decision.
///
/// A decision executes atomically as one step of the executor and holds all
/// of its keys while it does: every extra key widens its conflict surface
/// (more EPaxos\* dependencies, larger strongly connected components, longer
/// execution stalls for unrelated decisions). 64 covers a realistic agent
/// transaction (reserve a few dozen SKUs, claim a truck, record an order)
/// while bounding the work of one command to 64 ops.
pub const MAX_OPS_PER_DECISION: usize = 64;

/// Most guards in one decision; same reasoning as [`MAX_OPS_PER_DECISION`].
pub const MAX_GUARDS_PER_DECISION: usize = 64;

/// Longest conflict key, in bytes. Keys are names such as
/// `inventory/sku-42`; they are copied into every dependency record and
/// message, so they are kept short.
pub const MAX_KEY_BYTES: usize = 256;

/// Longest agent name in a claim, in bytes. Recorded in the claim and in
/// results; an agent id, not a payload.
pub const MAX_AGENT_BYTES: usize = 128;

/// Largest single value of a `Put` or `Cas`, in bytes. Synod stores decision
/// state, not blobs: 64 KiB is far above a JSON record and keeps one command
/// well inside one transport frame.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Largest sum of all `Put`/`Cas` values in one decision, in bytes, so that a
/// full decision (64 ops) cannot reach 64 × [`MAX_VALUE_BYTES`].
pub const MAX_DECISION_VALUE_BYTES: usize = 256 * 1024;

/// Largest encoded decision [`Decision::decode`] accepts, in bytes.
///
/// Above the largest *valid* decision (≈ 315 KiB: values plus 128 ops and
/// guards with maximal keys and agents; a test checks it), so every valid
/// decision decodes, and a hostile body is refused before any parsing.
pub const MAX_ENCODED_DECISION_BYTES: usize = 512 * 1024;

/// User keys must not start with this prefix: it is reserved for keys the
/// engine itself adds, such as session keys ([`crate::session_key`]), so a user
/// key can never collide with them.
pub const RESERVED_KEY_PREFIX: char = '\0';

/// One operation on one key (architecture.md §4).
///
/// Ops of one decision run in order, each seeing the effects of the ones
/// before it; the decision is all-or-nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// Set `key` to bytes. The key must be absent or hold bytes.
    Put {
        /// Target key.
        key: Key,
        /// New value, at most [`MAX_VALUE_BYTES`].
        value: Vec<u8>,
    },
    /// Read `key` (its value and version). The only read-only op.
    Get {
        /// Key to read.
        key: Key,
    },
    /// Remove `key`. Deleting an absent key succeeds and changes nothing;
    /// a claim that has not expired cannot be deleted (use `ReleaseClaim`).
    Delete {
        /// Key to remove.
        key: Key,
    },
    /// Set `key` to bytes if its version is `expected_version`
    /// (0 = the key must be absent).
    Cas {
        /// Target key.
        key: Key,
        /// Version the key must have; 0 means absent.
        expected_version: u64,
        /// New value, at most [`MAX_VALUE_BYTES`].
        value: Vec<u8>,
    },
    /// Take `qty` from the counter at `key`; fails if the stock is below
    /// `qty`, so stock never goes below zero (never oversell).
    Reserve {
        /// Counter key; must exist (created by `SetStock`).
        key: Key,
        /// Units to take, ≥ 1.
        qty: u64,
    },
    /// Give `qty` back to the counter at `key`.
    Release {
        /// Counter key; must exist.
        key: Key,
        /// Units to give back, ≥ 1.
        qty: u64,
    },
    /// Create the counter at `key` or overwrite its stock.
    SetStock {
        /// Counter key; must be absent or a counter.
        key: Key,
        /// New stock; 0 is allowed (sold out).
        qty: u64,
    },
    /// Claim `key` exclusively for `agent` until `issued_at_ms + ttl_ms`.
    ///
    /// Succeeds if the key is absent, holds an expired claim, or is already
    /// claimed by `agent` (a renewal: the expiry is reset to
    /// `issued_at_ms + ttl_ms`).
    Claim {
        /// Resource key, e.g. `truck/17`.
        key: Key,
        /// Claiming agent.
        agent: String,
        /// Lifetime of the claim, ≥ 1, measured in the proposers'
        /// `issued_at_ms` clock.
        ttl_ms: u64,
    },
    /// Drop `agent`'s claim on `key` (even if it has expired); fails if
    /// someone else holds it or nobody does.
    ReleaseClaim {
        /// Resource key.
        key: Key,
        /// The agent that holds the claim.
        agent: String,
    },
}

impl Op {
    /// `Put`.
    pub fn put(key: impl Into<Key>, value: impl Into<Vec<u8>>) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
        }
    }
    /// `Get`.
    pub fn get(key: impl Into<Key>) -> Op {
        Op::Get { key: key.into() }
    }
    /// `Delete`.
    pub fn delete(key: impl Into<Key>) -> Op {
        Op::Delete { key: key.into() }
    }
    /// `Cas`.
    pub fn cas(key: impl Into<Key>, expected_version: u64, value: impl Into<Vec<u8>>) -> Op {
        Op::Cas {
            key: key.into(),
            expected_version,
            value: value.into(),
        }
    }
    /// `Reserve`.
    pub fn reserve(key: impl Into<Key>, qty: u64) -> Op {
        Op::Reserve {
            key: key.into(),
            qty,
        }
    }
    /// `Release`.
    pub fn release(key: impl Into<Key>, qty: u64) -> Op {
        Op::Release {
            key: key.into(),
            qty,
        }
    }
    /// `SetStock`.
    pub fn set_stock(key: impl Into<Key>, qty: u64) -> Op {
        Op::SetStock {
            key: key.into(),
            qty,
        }
    }
    /// `Claim`.
    pub fn claim(key: impl Into<Key>, agent: impl Into<String>, ttl_ms: u64) -> Op {
        Op::Claim {
            key: key.into(),
            agent: agent.into(),
            ttl_ms,
        }
    }
    /// `ReleaseClaim`.
    pub fn release_claim(key: impl Into<Key>, agent: impl Into<String>) -> Op {
        Op::ReleaseClaim {
            key: key.into(),
            agent: agent.into(),
        }
    }

    /// The key this op touches.
    pub fn key(&self) -> &Key {
        match self {
            Op::Put { key, .. }
            | Op::Get { key }
            | Op::Delete { key }
            | Op::Cas { key, .. }
            | Op::Reserve { key, .. }
            | Op::Release { key, .. }
            | Op::SetStock { key, .. }
            | Op::Claim { key, .. }
            | Op::ReleaseClaim { key, .. } => key,
        }
    }

    /// `Read` for `Get`, `Write` for every other op.
    pub fn access(&self) -> Access {
        match self {
            Op::Get { .. } => Access::Read,
            _ => Access::Write,
        }
    }
}

/// A precondition on the state *before* the decision's ops run. Guards only
/// read; if one fails, nothing is applied.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Guard {
    /// `version(key) == version`; 0 means the key must be absent.
    Version {
        /// Key to check.
        key: Key,
        /// Required version; 0 = absent.
        version: u64,
    },
    /// The key holds a value (of any kind).
    Exists {
        /// Key to check.
        key: Key,
    },
    /// The counter at `key` holds at least `qty`.
    StockAtLeast {
        /// Counter key.
        key: Key,
        /// Minimum stock.
        qty: u64,
    },
    /// `agent` holds an unexpired claim on `key` (at the decision's
    /// `issued_at_ms`): "only the agent holding the truck may dispatch it".
    ClaimedBy {
        /// Resource key.
        key: Key,
        /// Agent that must hold it.
        agent: String,
    },
}

impl Guard {
    /// `Version`.
    pub fn version(key: impl Into<Key>, version: u64) -> Guard {
        Guard::Version {
            key: key.into(),
            version,
        }
    }
    /// `Exists`.
    pub fn exists(key: impl Into<Key>) -> Guard {
        Guard::Exists { key: key.into() }
    }
    /// `StockAtLeast`.
    pub fn stock_at_least(key: impl Into<Key>, qty: u64) -> Guard {
        Guard::StockAtLeast {
            key: key.into(),
            qty,
        }
    }
    /// `ClaimedBy`.
    pub fn claimed_by(key: impl Into<Key>, agent: impl Into<String>) -> Guard {
        Guard::ClaimedBy {
            key: key.into(),
            agent: agent.into(),
        }
    }

    /// The key this guard reads.
    pub fn key(&self) -> &Key {
        match self {
            Guard::Version { key, .. }
            | Guard::Exists { key }
            | Guard::StockAtLeast { key, .. }
            | Guard::ClaimedBy { key, .. } => key,
        }
    }
}

/// A batch of ops with guards, applied all-or-nothing (architecture.md §4).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Decision {
    /// Ops, applied in order; 1..=[`MAX_OPS_PER_DECISION`].
    pub ops: Vec<Op>,
    /// Preconditions checked against the state before the first op.
    pub guards: Vec<Guard>,
    /// Proposer's wall clock when it issued the decision, in ms.
    ///
    /// The *only* notion of time in the state machine: a claim is expired
    /// for this decision iff `issued_at_ms >= claimed_at_ms + ttl_ms`. It is
    /// part of the committed body, so every replica sees the same value.
    pub issued_at_ms: u64,
}

impl Decision {
    /// A decision with `ops`, no guards.
    pub fn new(ops: Vec<Op>, issued_at_ms: u64) -> Decision {
        Decision {
            ops,
            guards: Vec::new(),
            issued_at_ms,
        }
    }

    /// Adds a guard (builder style).
    #[must_use]
    pub fn with_guard(mut self, guard: Guard) -> Decision {
        self.guards.push(guard);
        self
    }

    /// The conflict keys of this decision, sorted by key, each once: `Get`
    /// and guards read, every other op writes; a key both read and written
    /// is a `Write` (epaxos.md §1.3).
    pub fn conflict_keys(&self) -> Vec<(Key, Access)> {
        let mut keys: BTreeMap<Key, Access> = BTreeMap::new();
        let reads = self.guards.iter().map(|g| (g.key(), Access::Read));
        let ops = self.ops.iter().map(|op| (op.key(), op.access()));
        for (key, access) in reads.chain(ops) {
            let slot = keys.entry(key.clone()).or_insert(access);
            *slot = (*slot).max(access);
        }
        keys.into_iter().collect()
    }

    /// Checks the decision against the limits above. Pure: depends only on
    /// the decision, never on state, so it rejects identically everywhere.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.ops.is_empty() {
            return Err(ValidationError::NoOps);
        }
        if self.ops.len() > MAX_OPS_PER_DECISION {
            return Err(ValidationError::TooManyOps {
                count: self.ops.len(),
                max: MAX_OPS_PER_DECISION,
            });
        }
        if self.guards.len() > MAX_GUARDS_PER_DECISION {
            return Err(ValidationError::TooManyGuards {
                count: self.guards.len(),
                max: MAX_GUARDS_PER_DECISION,
            });
        }
        for (index, guard) in self.guards.iter().enumerate() {
            let at = Location::Guard(index);
            check_key(at, guard.key())?;
            if let Guard::ClaimedBy { agent, .. } = guard {
                check_agent(at, agent)?;
            }
        }
        let mut value_bytes_total = 0usize;
        for (index, op) in self.ops.iter().enumerate() {
            let at = Location::Op(index);
            check_key(at, op.key())?;
            match op {
                Op::Put { value, .. } | Op::Cas { value, .. } => {
                    if value.len() > MAX_VALUE_BYTES {
                        return Err(ValidationError::ValueTooLarge {
                            op: index,
                            len: value.len(),
                            max: MAX_VALUE_BYTES,
                        });
                    }
                    value_bytes_total += value.len();
                }
                Op::Reserve { qty: 0, .. } | Op::Release { qty: 0, .. } => {
                    return Err(ValidationError::ZeroQuantity { op: index });
                }
                Op::Claim { agent, ttl_ms, .. } => {
                    check_agent(at, agent)?;
                    if *ttl_ms == 0 {
                        return Err(ValidationError::ZeroTtl { op: index });
                    }
                }
                Op::ReleaseClaim { agent, .. } => check_agent(at, agent)?,
                Op::Get { .. }
                | Op::Delete { .. }
                | Op::Reserve { .. }
                | Op::Release { .. }
                | Op::SetStock { .. } => {}
            }
        }
        if value_bytes_total > MAX_DECISION_VALUE_BYTES {
            return Err(ValidationError::ValuesTooLarge {
                total: value_bytes_total,
                max: MAX_DECISION_VALUE_BYTES,
            });
        }
        Ok(())
    }
}

fn check_key(at: Location, key: &Key) -> Result<(), ValidationError> {
    if key.is_empty() {
        return Err(ValidationError::EmptyKey { at });
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ValidationError::KeyTooLong {
            at,
            len: key.len(),
            max: MAX_KEY_BYTES,
        });
    }
    if key.starts_with(RESERVED_KEY_PREFIX) {
        return Err(ValidationError::ReservedKey {
            at,
            key: key.clone(),
        });
    }
    Ok(())
}

fn check_agent(at: Location, agent: &str) -> Result<(), ValidationError> {
    if agent.is_empty() {
        return Err(ValidationError::EmptyAgent { at });
    }
    if agent.len() > MAX_AGENT_BYTES {
        return Err(ValidationError::AgentTooLong {
            at,
            len: agent.len(),
            max: MAX_AGENT_BYTES,
        });
    }
    Ok(())
}

/// Where in a decision a validation error was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Location {
    /// `ops[i]`
    Op(usize),
    /// `guards[i]`
    Guard(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Op(i) => write!(f, "op {i}"),
            Location::Guard(i) => write!(f, "guard {i}"),
        }
    }
}

/// Why a decision is malformed ([`Decision::validate`]). A malformed
/// decision changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ValidationError {
    /// A decision needs at least one op.
    NoOps,
    /// More than [`MAX_OPS_PER_DECISION`] ops.
    TooManyOps {
        /// ops in the decision
        count: usize,
        /// the limit
        max: usize,
    },
    /// More than [`MAX_GUARDS_PER_DECISION`] guards.
    TooManyGuards {
        /// guards in the decision
        count: usize,
        /// the limit
        max: usize,
    },
    /// A key is the empty string.
    EmptyKey {
        /// where
        at: Location,
    },
    /// A key is longer than [`MAX_KEY_BYTES`].
    KeyTooLong {
        /// where
        at: Location,
        /// its length in bytes
        len: usize,
        /// the limit
        max: usize,
    },
    /// A key starts with [`RESERVED_KEY_PREFIX`].
    ReservedKey {
        /// where
        at: Location,
        /// the key
        key: Key,
    },
    /// A `Put`/`Cas` value is longer than [`MAX_VALUE_BYTES`].
    ValueTooLarge {
        /// op index
        op: usize,
        /// its length in bytes
        len: usize,
        /// the limit
        max: usize,
    },
    /// The values of all ops add up to more than [`MAX_DECISION_VALUE_BYTES`].
    ValuesTooLarge {
        /// total bytes
        total: usize,
        /// the limit
        max: usize,
    },
    /// `Reserve` or `Release` of 0 units.
    ZeroQuantity {
        /// op index
        op: usize,
    },
    /// `Claim` with `ttl_ms == 0` (expired as soon as taken).
    ZeroTtl {
        /// op index
        op: usize,
    },
    /// An agent name is empty.
    EmptyAgent {
        /// where
        at: Location,
    },
    /// An agent name is longer than [`MAX_AGENT_BYTES`].
    AgentTooLong {
        /// where
        at: Location,
        /// its length in bytes
        len: usize,
        /// the limit
        max: usize,
    },
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValidationError::NoOps => write!(f, "decision has no ops"),
            ValidationError::TooManyOps { count, max } => {
                write!(f, "decision has {count} ops, at most {max} allowed")
            }
            ValidationError::TooManyGuards { count, max } => {
                write!(f, "decision has {count} guards, at most {max} allowed")
            }
            ValidationError::EmptyKey { at } => write!(f, "{at}: empty key"),
            ValidationError::KeyTooLong { at, len, max } => {
                write!(f, "{at}: key is {len} bytes, at most {max} allowed")
            }
            ValidationError::ReservedKey { at, key } => {
                write!(f, "{at}: key {key:?} uses the reserved prefix \\0")
            }
            ValidationError::ValueTooLarge { op, len, max } => {
                write!(f, "op {op}: value is {len} bytes, at most {max} allowed")
            }
            ValidationError::ValuesTooLarge { total, max } => write!(
                f,
                "values add up to {total} bytes, at most {max} allowed per decision"
            ),
            ValidationError::ZeroQuantity { op } => write!(f, "op {op}: quantity must be >= 1"),
            ValidationError::ZeroTtl { op } => write!(f, "op {op}: claim ttl_ms must be >= 1"),
            ValidationError::EmptyAgent { at } => write!(f, "{at}: empty agent name"),
            ValidationError::AgentTooLong { at, len, max } => {
                write!(f, "{at}: agent name is {len} bytes, at most {max} allowed")
            }
        }
    }
}

impl std::error::Error for ValidationError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_keys_merge_reads_and_writes() {
        // architecture.md §4: every op declares the keys it reads and writes.
        let d = Decision::new(
            vec![Op::get("b"), Op::put("a", b"x".to_vec()), Op::get("c")],
            0,
        )
        .with_guard(Guard::version("c", 3))
        .with_guard(Guard::exists("a"));
        let k = |s: &str| Key::from(s);
        assert_eq!(
            d.conflict_keys(),
            vec![
                (k("a"), Access::Write),
                (k("b"), Access::Read),
                (k("c"), Access::Read),
            ]
        );
        let d2 = Decision::new(vec![Op::get("a"), Op::delete("a")], 0);
        assert_eq!(d2.conflict_keys(), vec![(k("a"), Access::Write)]);
    }
}
