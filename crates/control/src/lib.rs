//! Synod's control plane: an openraft group that owns cluster membership and
//! the sequence of EPaxos\* epochs (epaxos.md §8), protocol settings and the
//! Kafka egress lease (architecture.md §2).

#![deny(missing_docs)]

pub mod state;

pub use state::{
    ControlCommand, ControlRejection, ControlReply, ControlState, EgressLease, EpochRecord,
    MemberInfo, Settings, MAX_MEMBERS, MIN_MEMBERS,
};
