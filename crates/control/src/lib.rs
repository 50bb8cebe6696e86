//! Synod's control plane: an openraft group that owns cluster membership and
//! the sequence of EPaxos\* epochs (epaxos.md §8), protocol settings and the
//! Kafka egress lease (architecture.md §2).
//!
//! * [`state`]: the replicated [`ControlState`] and its pure, deterministic
//!   [`ControlState::apply`];
//! * [`Control`]: one node's control plane (openraft with its log on
//!   `synod-storage`'s WAL, its RPCs on the runtime's transport as
//!   [`ControlMessage`]s, and a reconcile task that makes Raft's voters
//!   follow the current epoch's members), used through [`ControlPlane`].
//!
//! Only this crate names openraft types.

#![deny(missing_docs)]

mod control;
mod idset;
pub mod log_store;
mod network;
pub mod raft_types;
pub mod state;
pub mod state_machine;

pub use control::{
    Control, ControlConfig, ControlError, ControlPlane, ControlStatus, APPEND_ENTRIES_MAX,
    CONTROL_COMMAND_MAX_BYTES, CONTROL_LOG_KEEP, CONTROL_SNAPSHOT_LOGS, ELECTION_TIMEOUT_MAX_MS,
    ELECTION_TIMEOUT_MIN_MS, HEARTBEAT_INTERVAL_MS, INBOUND_HANDLERS_MAX, LEARNER_CATCHUP_LAG_MAX,
    RECONCILE_INTERVAL, SHUTDOWN_WAL_CLOSE_TIMEOUT, WRITE_TIMEOUT,
};
pub use network::{
    ControlMessage, Rpc, RpcReply, SendFn, PENDING_RPCS_MAX, RPC_TIMEOUT, SNAPSHOT_RPC_TIMEOUT,
};
pub use state::{
    ControlCommand, ControlRejection, ControlReply, ControlState, EgressLease, EpochRecord,
    MemberInfo, Settings, EGRESS_TOKEN_MAX, MAX_MEMBERS, MIN_MEMBERS,
};
pub use state_machine::CONTROL_SNAPSHOT_MAX_BYTES;
