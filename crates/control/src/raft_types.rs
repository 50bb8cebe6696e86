//! The openraft type configuration of the control plane. Only this crate
//! names openraft types; the runtime sees [`crate::ControlPlane`].

use crate::state::{ControlCommand, ControlReply, MemberInfo};

openraft::declare_raft_types!(
    /// The control plane's openraft types: log payload [`ControlCommand`],
    /// reply [`ControlReply`], node info [`MemberInfo`].
    ///
    /// `NodeId` is `u64` inside Raft although Synod's `NodeId` is `u16`:
    /// openraft's storage test suite builds ids with `From<u64>`. Ids are
    /// converted at this crate's boundary ([`to_raft`], [`from_raft`]).
    ///
    /// `LeaderId` is openraft's *standard* one: at most one leader per term,
    /// as in the Raft paper (the default "advanced" id lets several nodes
    /// lead in one term, ordered by node id). The cluster tests check it.
    pub TypeConfig:
        D = ControlCommand,
        R = ControlReply,
        NodeId = u64,
        Node = MemberInfo,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

/// A log entry.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// A log id (leader id + index).
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// A vote.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// A membership stored with the log id that introduced it.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;

/// Synod node id → Raft node id.
pub fn to_raft(id: synod_types::NodeId) -> u64 {
    u64::from(id)
}

/// Raft node id → Synod node id (`None` for an id no Synod node can have).
pub fn from_raft(id: u64) -> Option<synod_types::NodeId> {
    synod_types::NodeId::try_from(id).ok()
}
