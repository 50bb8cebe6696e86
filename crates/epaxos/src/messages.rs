//! Replica-to-replica messages (epaxos.md §3.1).

use serde::{Deserialize, Serialize};
use synod_types::{Ballot, Batch, CmdId, Deps, NodeId, Payload, Phase};

/// A message with its destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Destination replica (never the sender: self-delivery is synchronous,
    /// epaxos.md §1.5).
    pub to: NodeId,
    /// The message.
    pub msg: Message,
}

/// Every message of epaxos.md §3.1, plus `Learn` (the "learn probe" of
/// §4.1.7) and `Nack` (informational).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// origin → all: pre-accept `cmd` with the origin's deps `D0`.
    PreAccept {
        /// instance
        id: CmdId,
        /// the origin's batch
        cmd: Batch,
        /// D0
        dep: Deps,
    },
    /// replica → origin: its deps for `id` (ballot implicitly initial).
    PreAcceptOk {
        /// instance
        id: CmdId,
        /// Dq ⊇ D0
        dep: Deps,
    },
    /// ballot owner → all: phase-2 proposal.
    Accept {
        /// ballot
        ballot: Ballot,
        /// instance
        id: CmdId,
        /// proposed payload
        payload: Payload,
        /// proposed deps
        dep: Deps,
    },
    /// replica → ballot owner.
    AcceptOk {
        /// ballot
        ballot: Ballot,
        /// instance
        id: CmdId,
    },
    /// decider → all: `(payload, dep)` is chosen.
    Commit {
        /// ballot at which it was chosen (informational under §3.7.1)
        ballot: Ballot,
        /// instance
        id: CmdId,
        /// chosen payload
        payload: Payload,
        /// chosen deps
        dep: Deps,
    },
    /// recoverer → all: phase-1 prepare at `ballot`.
    Recover {
        /// ballot
        ballot: Ballot,
        /// instance
        id: CmdId,
    },
    /// replica → recoverer: its state for `id`.
    RecoverOk {
        /// ballot
        ballot: Ballot,
        /// instance
        id: CmdId,
        /// last vote ballot
        abal: Ballot,
        /// current payload (⊥ = None)
        cmd: Option<Payload>,
        /// current deps
        dep: Deps,
        /// D0 as received in PreAccept (or Validate)
        init_dep: Deps,
        /// phase
        phase: Phase,
    },
    /// recoverer → members of Q: record `(cmd, dep)` and report conflicts.
    Validate {
        /// ballot
        ballot: Ballot,
        /// instance
        id: CmdId,
        /// the origin's batch
        cmd: Batch,
        /// D0
        dep: Deps,
    },
    /// Q member → recoverer: `I_q`.
    ValidateOk {
        /// ballot
        ballot: Ballot,
        /// instance
        id: CmdId,
        /// conflicting ids that could witness no fast commit, with phases
        conflicts: Vec<(CmdId, Phase)>,
    },
    /// recoverer → all: a hint that its recovery of `id` saw `|R_max| = k`.
    Waiting {
        /// instance
        id: CmdId,
        /// |R_max|
        k: usize,
    },
    /// any → any: "send me the Commit for `id` if you have it".
    Learn {
        /// instance
        id: CmdId,
    },
    /// any → all, periodically: for each origin, the length of the prefix of
    /// its ids (current epoch) that the sender has committed. Anti-entropy:
    /// a receiver missing any of those commits learns them (then recovers).
    Heartbeat {
        /// epoch the sequence numbers belong to
        epoch: u64,
        /// (origin, n): ids `(epoch, 0..n, origin)` are committed at the sender
        committed_prefix: Vec<(NodeId, u64)>,
        /// (origin, n): ids `(epoch, 0..n, origin)` are executed at the
        /// sender; the minimum over all members is the stable floor of new
        /// dependency sets (`synod_types::Deps`)
        executed_prefix: Vec<(NodeId, u64)>,
    },
    /// replica → the owner of a contended key: "submit these commands for
    /// me" (see `Options::forward_contended`). Never forwarded again.
    Forward {
        /// the client commands
        cmds: Vec<synod_types::Command>,
    },
    /// E-member → recoverer or proposer: `id` is outside the closed set K
    /// of its epoch (epaxos.md §8.2 step 5), so only Nop can ever be chosen
    /// for it. Sent instead of `RecoverOk` (after joining `ballot`), and
    /// instead of `ValidateOk` or `AcceptOk` for a non-Nop value. A
    /// receiver that knows K too decides the id Nop (§8.2 step 6; the core
    /// decides it locally rather than through a ballot round).
    Excluded {
        /// the recoverer's or proposer's ballot
        ballot: Ballot,
        /// instance
        id: CmdId,
    },
    /// replica → sender of a stale message: its promise for `id` is `bal`.
    Nack {
        /// instance
        id: CmdId,
        /// the replica's current promise
        bal: Ballot,
    },
}

impl Message {
    /// The instance this message is about (`None` for `Heartbeat`).
    pub fn id(&self) -> Option<CmdId> {
        Some(match self {
            Message::PreAccept { id, .. }
            | Message::PreAcceptOk { id, .. }
            | Message::Accept { id, .. }
            | Message::AcceptOk { id, .. }
            | Message::Commit { id, .. }
            | Message::Recover { id, .. }
            | Message::RecoverOk { id, .. }
            | Message::Validate { id, .. }
            | Message::ValidateOk { id, .. }
            | Message::Waiting { id, .. }
            | Message::Learn { id }
            | Message::Excluded { id, .. }
            | Message::Nack { id, .. } => *id,
            Message::Heartbeat { .. } | Message::Forward { .. } => return None,
        })
    }

    /// A short name of the message kind, for traces and scenario files.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::PreAccept { .. } => "PreAccept",
            Message::PreAcceptOk { .. } => "PreAcceptOk",
            Message::Accept { .. } => "Accept",
            Message::AcceptOk { .. } => "AcceptOk",
            Message::Commit { .. } => "Commit",
            Message::Recover { .. } => "Recover",
            Message::RecoverOk { .. } => "RecoverOk",
            Message::Validate { .. } => "Validate",
            Message::ValidateOk { .. } => "ValidateOk",
            Message::Waiting { .. } => "Waiting",
            Message::Learn { .. } => "Learn",
            Message::Nack { .. } => "Nack",
            Message::Excluded { .. } => "Excluded",
            Message::Heartbeat { .. } => "Heartbeat",
            Message::Forward { .. } => "Forward",
        }
    }
}
