//! Synod's built-in decision state machine (architecture.md §4).
//!
//! Agents propose a [`Decision`]: a batch of [`Op`]s over conflict keys, with
//! optional [`Guard`]s, applied all-or-nothing. Every replica executes the
//! committed decisions of one key in the same order (EPaxos\*, epaxos.md §1.3)
//! against a [`StateMachine`], so every replica computes the same [`Outcome`]
//! for every decision and ends in the same state ([`StateMachine::digest`]).
//!
//! # Determinism rules this crate keeps
//!
//! Decisions on disjoint keys execute in *different* orders on different
//! replicas (architecture.md §5). The state machine is therefore only
//! deterministic if the effect and result of a decision depend on nothing but
//! the state of the keys it declares. Concretely:
//!
//! - no I/O, no clocks, no randomness, no `HashMap` iteration: all state lives
//!   in `BTreeMap`s;
//! - the only notion of time is [`Decision::issued_at_ms`], stamped by the
//!   proposer and part of the committed body. Claims expire relative to the
//!   `issued_at_ms` of the decision that looks at them. There is deliberately
//!   no "latest time seen" across keys: it would depend on the cross-key
//!   execution order and make replicas diverge;
//! - versions are per key, never global, for the same reason;
//! - per-client de-duplication state is only touched by commands that declare
//!   a write on the client's session key ([`session_key`]), which makes all
//!   commands of one client conflict and so execute in one order everywhere
//!   (see [`command`]).
//!
//! # Layout
//!
//! - `decision`: [`Decision`], [`Op`], [`Guard`], validation and the limits
//!   (`MAX_*`);
//! - `outcome`: [`Outcome`], [`OpResult`], [`Value`] and the typed rejection
//!   [`Reason`]s;
//! - `machine`: [`StateMachine`] (apply, sessions, digest, snapshot/restore);
//! - `session`: [`command`] and [`session_key`];
//! - `codec`: the body codec ([`Decision::encode`], [`Decision::decode`]),
//!   snapshot framing and the FNV-1a digest.

#![deny(missing_docs)]

mod codec;
mod decision;
mod machine;
mod outcome;
mod session;

pub use codec::{DecodeError, SnapshotError, DECISION_FORMAT_VERSION, SNAPSHOT_FORMAT_VERSION};
pub use decision::{
    Decision, Guard, Location, Op, ValidationError, MAX_AGENT_BYTES, MAX_DECISION_VALUE_BYTES,
    MAX_ENCODED_DECISION_BYTES, MAX_GUARDS_PER_DECISION, MAX_KEY_BYTES, MAX_OPS_PER_DECISION,
    MAX_VALUE_BYTES, RESERVED_KEY_PREFIX,
};
pub use machine::StateMachine;
pub use outcome::{ClaimState, Failure, Kind, OpResult, Outcome, Reason, Value};
pub use session::{command, read_command, session_key, READ_ONLY_CLIENT};
