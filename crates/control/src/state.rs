//! The replicated control state: membership, the sequence of EPaxos\* epochs
//! with their seal reports and closed sets, protocol settings and the egress
//! lease (architecture.md §2 "Control-plane duties", epaxos.md §8).
//!
//! Pure and deterministic: no openraft types, no I/O, no clocks. Every Raft
//! replica applies the same committed [`ControlCommand`]s in the same order
//! with [`ControlState::apply`] and so holds the same state. A command that
//! breaks a rule is still committed but changes nothing; its
//! [`ControlReply::Rejected`] says why.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use synod_types::{CmdId, NodeId, QuorumConfig};

/// Most members one epoch may have. The quorum tables of epaxos.md §1.2 (and
/// the simulator's soak) stop at 7, and a larger EPaxos\* group pays for
/// every PreAccept with more messages than a fast path saves.
pub const MAX_MEMBERS: usize = 7;

/// Fewest members one epoch may have: `QuorumConfig::for_members` needs
/// `f ≥ 1`, hence `n ≥ 3` (epaxos.md §1.2).
pub const MIN_MEMBERS: usize = 3;

/// Longest published-frontier token [`ControlCommand::EgressPublished`]
/// may carry: the committed stream's own token limit
/// (`synod_client::frontier::MAX_TOKEN_BYTES`), so any token a subscriber
/// can resume from fits.
pub const EGRESS_TOKEN_MAX: usize = 64 * 1024;

/// How other processes reach one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Replica-to-replica transport (EPaxos\* and control-plane messages).
    pub peer_addr: SocketAddr,
    /// HTTP/JSON client API.
    pub api_addr: SocketAddr,
    /// gRPC client API, if the node serves one.
    pub grpc_addr: Option<SocketAddr>,
}

impl Default for MemberInfo {
    /// Unspecified addresses; only openraft's storage test suite builds one
    /// (it needs `Node: Default`).
    fn default() -> Self {
        let unspecified = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        MemberInfo {
            peer_addr: unspecified,
            api_addr: unspecified,
            grpc_addr: None,
        }
    }
}

impl fmt::Display for MemberInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {} api {}", self.peer_addr, self.api_addr)?;
        if let Some(g) = self.grpc_addr {
            write!(f, " grpc {g}")?;
        }
        Ok(())
    }
}

/// One epoch's configuration and the progress of its sealing
/// (epaxos.md §8.2–§8.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, members, `f` and `e` (always `QuorumConfig::for_members`).
    pub config: QuorumConfig,
    /// Seal reports `K_s` of this epoch's members, first report per member
    /// wins. Emptied once the epoch is complete (`closed` keeps their union),
    /// so the state does not grow with every past epoch's ids.
    #[serde(with = "synod_types::idset::map")]
    pub reports: BTreeMap<NodeId, BTreeSet<CmdId>>,
    /// The closed set `K`, once `n − f` reports are in (epaxos.md §8.2 step 5).
    #[serde(with = "synod_types::idset::option")]
    pub closed: Option<BTreeSet<CmdId>>,
    /// Members of this epoch or the next that executed the closure of `K`.
    pub done: BTreeSet<NodeId>,
}

impl EpochRecord {
    fn new(config: QuorumConfig) -> Self {
        EpochRecord {
            config,
            reports: BTreeMap::new(),
            closed: None,
            done: BTreeSet::new(),
        }
    }
}

/// Protocol settings stored and replicated by the control plane; the runtime
/// applies them at start. `None` keeps the runtime's own default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Thrifty mode (epaxos.md §3.8).
    pub thrifty: Option<bool>,
    /// Most commands one instance batches.
    pub batch_size_max: Option<usize>,
    /// T_fast in ticks (epaxos.md §4.1).
    pub fast_timeout_ticks: Option<u64>,
    /// T_commit in ticks (epaxos.md §4.1).
    pub commit_timeout_ticks: Option<u64>,
}

/// Who publishes the committed stream to Kafka (kafka.md). Acquiring always
/// succeeds for a current member and bumps `generation`, which fences the
/// previous holder's writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressLease {
    /// The publishing node.
    pub holder: NodeId,
    /// Increases by one every time the lease changes hands.
    pub generation: u64,
}

/// A command replicated through the control plane's Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlCommand {
    /// Creates epoch 0 with `members`. A repeat with the same cluster id and
    /// member ids is `Ok`; a different one is rejected.
    Init {
        /// The cluster's id (also in every transport `Hello`).
        cluster_id: u64,
        /// The initial members and their addresses.
        members: BTreeMap<NodeId, MemberInfo>,
    },
    /// Starts epoch `cur + 1` with `id` added.
    AddMember {
        /// The new member; never an id used before (epaxos.md §1.1).
        id: NodeId,
        /// Its addresses.
        info: MemberInfo,
    },
    /// Starts epoch `cur + 1` without `id`.
    RemoveMember {
        /// A member of the current epoch.
        id: NodeId,
    },
    /// `from` sealed `epoch` knowing `known` (epaxos.md §8.2 step 4).
    SealReport {
        /// The sealed epoch.
        epoch: u64,
        /// A member of `epoch`.
        from: NodeId,
        /// `K_s`: the ids of `epoch` that `from` knows.
        #[serde(with = "synod_types::idset")]
        known: BTreeSet<CmdId>,
    },
    /// `from` executed the closure of `epoch`'s closed set.
    EpochDone {
        /// A closed epoch.
        epoch: u64,
        /// A member of `epoch` or of `epoch + 1`.
        from: NodeId,
    },
    /// Replaces the protocol settings.
    SetSettings(Settings),
    /// Makes `holder` the Kafka publisher.
    AcquireEgress {
        /// A member of the current epoch.
        holder: NodeId,
    },
    /// The holder of lease `generation` has published every executed
    /// decision in `token` (a committed-stream resume token) to the topic.
    EgressPublished {
        /// The lease generation the publisher holds.
        generation: u64,
        /// The published frontier, at most [`EGRESS_TOKEN_MAX`] bytes.
        token: String,
    },
}

impl fmt::Display for ControlCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlCommand::Init {
                cluster_id,
                members,
            } => write!(
                f,
                "Init(cluster {cluster_id}, members {:?})",
                members.keys().collect::<Vec<_>>()
            ),
            ControlCommand::AddMember { id, .. } => write!(f, "AddMember({id})"),
            ControlCommand::RemoveMember { id } => write!(f, "RemoveMember({id})"),
            ControlCommand::SealReport { epoch, from, known } => {
                write!(
                    f,
                    "SealReport(epoch {epoch}, from {from}, {} ids)",
                    known.len()
                )
            }
            ControlCommand::EpochDone { epoch, from } => {
                write!(f, "EpochDone(epoch {epoch}, from {from})")
            }
            ControlCommand::SetSettings(s) => write!(f, "SetSettings({s:?})"),
            ControlCommand::AcquireEgress { holder } => write!(f, "AcquireEgress({holder})"),
            ControlCommand::EgressPublished { generation, token } => write!(
                f,
                "EgressPublished(generation {generation}, {} token bytes)",
                token.len()
            ),
        }
    }
}

/// Why a committed command changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlRejection {
    /// No `Init` has been applied yet.
    NotInitialised,
    /// `Init` with another cluster id or other members than the applied one.
    AlreadyInitialised {
        /// The cluster id in force.
        cluster_id: u64,
    },
    /// The id is already a member of the current epoch.
    AlreadyMember {
        /// The id.
        id: NodeId,
    },
    /// The id was a member once and was removed; ids are never reused
    /// (epaxos.md §1.1; openraft's node ids likewise).
    Retired {
        /// The id.
        id: NodeId,
    },
    /// The node is not a member where it must be one.
    NotMember {
        /// The node.
        id: NodeId,
        /// The epoch it is not a member of.
        epoch: u64,
    },
    /// The previous epoch change is not complete yet; one at a time.
    ChangeInProgress {
        /// The epoch still being closed.
        epoch: u64,
    },
    /// The epoch would have fewer than [`MIN_MEMBERS`] members.
    TooFew {
        /// The size it would have.
        n: usize,
    },
    /// The epoch would have more than [`MAX_MEMBERS`] members.
    TooMany {
        /// The size it would have.
        n: usize,
    },
    /// A seal report for an epoch that is not sealed (the current one or a
    /// future one).
    NotSealed {
        /// The epoch reported.
        epoch: u64,
    },
    /// An epoch this state has no record of.
    UnknownEpoch {
        /// The epoch.
        epoch: u64,
    },
    /// `EpochDone` before the epoch's closed set is published.
    NotClosed {
        /// The epoch.
        epoch: u64,
    },
    /// The member set is not a valid quorum configuration.
    InvalidConfig(String),
    /// Progress reported under an egress lease that is no longer in force.
    StaleEgress {
        /// The generation the report carried.
        generation: u64,
        /// The generation in force (0: no holder).
        current: u64,
    },
    /// A published-frontier token longer than [`EGRESS_TOKEN_MAX`].
    EgressTokenTooLong {
        /// Its length.
        len: usize,
    },
}

impl fmt::Display for ControlRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlRejection::NotInitialised => write!(f, "the cluster is not initialised"),
            ControlRejection::AlreadyInitialised { cluster_id } => write!(
                f,
                "already initialised as cluster {cluster_id} with other members"
            ),
            ControlRejection::AlreadyMember { id } => {
                write!(f, "node {id} is already a member")
            }
            ControlRejection::Retired { id } => {
                write!(f, "node id {id} was removed before and cannot be reused")
            }
            ControlRejection::NotMember { id, epoch } => {
                write!(f, "node {id} is not a member of epoch {epoch}")
            }
            ControlRejection::ChangeInProgress { epoch } => write!(
                f,
                "epoch {epoch} is not complete yet; one membership change at a time"
            ),
            ControlRejection::TooFew { n } => {
                write!(f, "{n} members is fewer than the minimum {MIN_MEMBERS}")
            }
            ControlRejection::TooMany { n } => {
                write!(f, "{n} members is more than the maximum {MAX_MEMBERS}")
            }
            ControlRejection::NotSealed { epoch } => {
                write!(f, "epoch {epoch} is not sealed (no later epoch exists)")
            }
            ControlRejection::UnknownEpoch { epoch } => write!(f, "unknown epoch {epoch}"),
            ControlRejection::NotClosed { epoch } => {
                write!(f, "epoch {epoch} has no closed set yet")
            }
            ControlRejection::InvalidConfig(why) => write!(f, "invalid configuration: {why}"),
            ControlRejection::StaleEgress {
                generation,
                current,
            } => write!(
                f,
                "egress lease generation {generation} is not in force (current: {current})"
            ),
            ControlRejection::EgressTokenTooLong { len } => write!(
                f,
                "published-frontier token of {len} bytes is longer than {EGRESS_TOKEN_MAX}"
            ),
        }
    }
}

impl std::error::Error for ControlRejection {}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlReply {
    /// Applied (or an idempotent repeat).
    Ok,
    /// The epoch the membership change created (or, for a retry, the epoch
    /// that already made it).
    Epoch(u64),
    /// The egress lease now in force.
    Egress(EgressLease),
    /// Committed but changed nothing.
    Rejected(ControlRejection),
}

/// The whole replicated control state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlState {
    /// Set by `Init`; 0 before.
    pub cluster_id: u64,
    /// Every node of a not-yet-complete epoch or of the current one.
    pub nodes: BTreeMap<NodeId, MemberInfo>,
    /// Every epoch so far; empty until `Init`; the last is the current one.
    pub epochs: BTreeMap<u64, EpochRecord>,
    /// Ids removed for good (never reused).
    pub retired: BTreeSet<NodeId>,
    /// Protocol settings.
    pub settings: Settings,
    /// The Kafka publisher, once one acquired the lease; `None` again if
    /// its holder was removed.
    pub egress: Option<EgressLease>,
    /// The highest lease generation ever issued. Kept when the holder is
    /// removed, so generations never repeat and always fence.
    #[serde(default)]
    pub egress_generation: u64,
    /// How far the topic holds the committed stream: a resume token of the
    /// committed stream (`synod_client::frontier`), empty before the first
    /// report. A new holder resumes from here (kafka.md §2).
    #[serde(default)]
    pub egress_published: String,
}

impl ControlState {
    /// True once `Init` was applied.
    pub fn is_initialised(&self) -> bool {
        !self.epochs.is_empty()
    }

    /// The current (last) epoch.
    pub fn current(&self) -> Option<&EpochRecord> {
        self.epochs.values().next_back()
    }

    /// The current epoch number.
    pub fn current_epoch(&self) -> Option<u64> {
        self.epochs.keys().next_back().copied()
    }

    /// The members of `epoch`, if it exists.
    pub fn members_of(&self, epoch: u64) -> Option<&[NodeId]> {
        self.epochs.get(&epoch).map(|r| r.config.members())
    }

    /// The newest epoch `id` is a member of.
    pub fn epoch_of_member(&self, id: NodeId) -> Option<u64> {
        self.epochs
            .iter()
            .rev()
            .find(|(_, r)| r.config.contains(id))
            .map(|(e, _)| *e)
    }

    /// True if `epoch` is complete: `K` is published, at least `n_E − f_E`
    /// of its members executed `K`'s closure, and so did a member of
    /// `E + 1` (a donor for new members' snapshots, epaxos.md §8.4).
    ///
    /// Why `n − f` and not all members: E still tolerates `f_E` crashes, so
    /// a crashed member cannot block completion; a removed member may stop
    /// once its epoch is complete (epaxos.md §8.3), because `n − f` members
    /// that executed the closure remain among E's members and E + 1 has a
    /// member holding the executed state.
    pub fn complete(&self, epoch: u64) -> bool {
        let (Some(rec), Some(next)) = (self.epochs.get(&epoch), self.epochs.get(&(epoch + 1)))
        else {
            return false;
        };
        if rec.closed.is_none() {
            return false;
        }
        let done_in_e = rec.done.iter().filter(|n| rec.config.contains(**n)).count();
        let donor = rec.done.iter().any(|n| next.config.contains(*n));
        done_in_e >= rec.config.slow_quorum() && donor
    }

    /// The epoch being closed, if a change is in progress: the previous
    /// epoch while it is not complete.
    pub fn change_in_progress(&self) -> Option<u64> {
        let cur = self.current_epoch()?;
        let first = *self.epochs.keys().next()?;
        if cur > first && !self.complete(cur - 1) {
            Some(cur - 1)
        } else {
            None
        }
    }

    /// The newest complete epoch.
    pub fn last_complete(&self) -> Option<u64> {
        self.epochs
            .keys()
            .rev()
            .copied()
            .find(|e| self.complete(*e))
    }

    /// Applies one committed command. Deterministic; never panics; a
    /// rejected command leaves the state unchanged.
    pub fn apply(&mut self, cmd: ControlCommand) -> ControlReply {
        let result = match cmd {
            ControlCommand::Init {
                cluster_id,
                members,
            } => self.init(cluster_id, members),
            ControlCommand::AddMember { id, info } => self.add_member(id, info),
            ControlCommand::RemoveMember { id } => self.remove_member(id),
            ControlCommand::SealReport { epoch, from, known } => {
                self.seal_report(epoch, from, known)
            }
            ControlCommand::EpochDone { epoch, from } => self.epoch_done(epoch, from),
            ControlCommand::SetSettings(s) => {
                self.settings = s;
                Ok(ControlReply::Ok)
            }
            ControlCommand::AcquireEgress { holder } => self.acquire_egress(holder),
            ControlCommand::EgressPublished { generation, token } => {
                self.egress_published(generation, token)
            }
        };
        result.unwrap_or_else(ControlReply::Rejected)
    }

    fn init(
        &mut self,
        cluster_id: u64,
        members: BTreeMap<NodeId, MemberInfo>,
    ) -> Result<ControlReply, ControlRejection> {
        let ids: Vec<NodeId> = members.keys().copied().collect();
        if let Some(first) = self.epochs.values().next() {
            return if self.cluster_id == cluster_id && first.config.members() == ids.as_slice() {
                Ok(ControlReply::Ok)
            } else {
                Err(ControlRejection::AlreadyInitialised {
                    cluster_id: self.cluster_id,
                })
            };
        }
        let config = config_for(0, ids)?;
        self.cluster_id = cluster_id;
        self.nodes = members;
        self.epochs.insert(0, EpochRecord::new(config));
        Ok(ControlReply::Epoch(0))
    }

    fn current_or_reject(&self) -> Result<(u64, &EpochRecord), ControlRejection> {
        self.epochs
            .iter()
            .next_back()
            .map(|(e, r)| (*e, r))
            .ok_or(ControlRejection::NotInitialised)
    }

    fn add_member(
        &mut self,
        id: NodeId,
        info: MemberInfo,
    ) -> Result<ControlReply, ControlRejection> {
        let (cur, rec) = self.current_or_reject()?;
        if rec.config.contains(id) {
            // A retry of the add that made the current epoch is answered
            // with that epoch.
            let added_by_cur = cur > 0
                && self
                    .epochs
                    .get(&(cur - 1))
                    .is_some_and(|prev| !prev.config.contains(id));
            return if added_by_cur && self.nodes.get(&id) == Some(&info) {
                Ok(ControlReply::Epoch(cur))
            } else {
                Err(ControlRejection::AlreadyMember { id })
            };
        }
        if self.retired.contains(&id) || self.nodes.contains_key(&id) {
            // In `nodes` but not current: removed by an epoch not yet complete.
            return Err(ControlRejection::Retired { id });
        }
        if let Some(epoch) = self.change_in_progress() {
            return Err(ControlRejection::ChangeInProgress { epoch });
        }
        let mut ids = rec.config.members().to_vec();
        ids.push(id);
        if ids.len() > MAX_MEMBERS {
            return Err(ControlRejection::TooMany { n: ids.len() });
        }
        let config = config_for(cur + 1, ids)?;
        self.nodes.insert(id, info);
        self.epochs.insert(cur + 1, EpochRecord::new(config));
        Ok(ControlReply::Epoch(cur + 1))
    }

    fn remove_member(&mut self, id: NodeId) -> Result<ControlReply, ControlRejection> {
        let (cur, rec) = self.current_or_reject()?;
        if !rec.config.contains(id) {
            let removed_by_cur = cur > 0
                && self
                    .epochs
                    .get(&(cur - 1))
                    .is_some_and(|prev| prev.config.contains(id));
            return if removed_by_cur {
                Ok(ControlReply::Epoch(cur))
            } else {
                Err(ControlRejection::NotMember { id, epoch: cur })
            };
        }
        if let Some(epoch) = self.change_in_progress() {
            return Err(ControlRejection::ChangeInProgress { epoch });
        }
        let ids: Vec<NodeId> = rec
            .config
            .members()
            .iter()
            .copied()
            .filter(|m| *m != id)
            .collect();
        if ids.len() < MIN_MEMBERS {
            return Err(ControlRejection::TooFew { n: ids.len() });
        }
        let config = config_for(cur + 1, ids)?;
        self.epochs.insert(cur + 1, EpochRecord::new(config));
        Ok(ControlReply::Epoch(cur + 1))
    }

    fn seal_report(
        &mut self,
        epoch: u64,
        from: NodeId,
        known: BTreeSet<CmdId>,
    ) -> Result<ControlReply, ControlRejection> {
        let (cur, _) = self.current_or_reject()?;
        if epoch >= cur {
            return Err(ControlRejection::NotSealed { epoch });
        }
        let rec = self
            .epochs
            .get_mut(&epoch)
            .ok_or(ControlRejection::UnknownEpoch { epoch })?;
        if !rec.config.contains(from) {
            return Err(ControlRejection::NotMember { id: from, epoch });
        }
        if rec.closed.is_some() || rec.reports.contains_key(&from) {
            // Late or repeated: K is fixed once published, first report wins.
            return Ok(ControlReply::Ok);
        }
        rec.reports.insert(from, known);
        if rec.reports.len() >= rec.config.slow_quorum() {
            // epaxos.md §8.2 step 5: K = ∪ K_s over the n − f reporters.
            let k: BTreeSet<CmdId> = rec.reports.values().flatten().copied().collect();
            rec.closed = Some(k);
        }
        Ok(ControlReply::Ok)
    }

    fn epoch_done(&mut self, epoch: u64, from: NodeId) -> Result<ControlReply, ControlRejection> {
        self.current_or_reject()?;
        let in_next = self
            .epochs
            .get(&(epoch + 1))
            .is_some_and(|n| n.config.contains(from));
        let rec = self
            .epochs
            .get_mut(&epoch)
            .ok_or(ControlRejection::UnknownEpoch { epoch })?;
        if rec.closed.is_none() {
            return Err(ControlRejection::NotClosed { epoch });
        }
        if !rec.config.contains(from) && !in_next {
            return Err(ControlRejection::NotMember { id: from, epoch });
        }
        if !rec.done.insert(from) {
            return Ok(ControlReply::Ok);
        }
        if self.complete(epoch) {
            self.on_complete(epoch);
        }
        Ok(ControlReply::Ok)
    }

    /// `epoch` just became complete: forget nodes in no later epoch (they
    /// may stop) and the epoch's reports (K keeps their union).
    fn on_complete(&mut self, epoch: u64) {
        let later: BTreeSet<NodeId> = self
            .epochs
            .range(epoch + 1..)
            .flat_map(|(_, r)| r.config.members().iter().copied())
            .collect();
        let gone: Vec<NodeId> = self
            .nodes
            .keys()
            .copied()
            .filter(|n| !later.contains(n))
            .collect();
        for n in gone {
            self.nodes.remove(&n);
            self.retired.insert(n);
            if self.egress.is_some_and(|l| l.holder == n) {
                self.egress = None;
            }
        }
        if let Some(rec) = self.epochs.get_mut(&epoch) {
            rec.reports.clear();
        }
    }

    fn acquire_egress(&mut self, holder: NodeId) -> Result<ControlReply, ControlRejection> {
        let (cur, rec) = self.current_or_reject()?;
        if !rec.config.contains(holder) {
            return Err(ControlRejection::NotMember {
                id: holder,
                epoch: cur,
            });
        }
        let lease = match self.egress {
            Some(l) if l.holder == holder => l,
            _ => EgressLease {
                holder,
                generation: self.egress_generation + 1,
            },
        };
        self.egress = Some(lease);
        self.egress_generation = lease.generation;
        Ok(ControlReply::Egress(lease))
    }

    fn egress_published(
        &mut self,
        generation: u64,
        token: String,
    ) -> Result<ControlReply, ControlRejection> {
        if token.len() > EGRESS_TOKEN_MAX {
            return Err(ControlRejection::EgressTokenTooLong { len: token.len() });
        }
        let current = self.egress.map_or(0, |l| l.generation);
        if generation != current {
            return Err(ControlRejection::StaleEgress {
                generation,
                current,
            });
        }
        self.egress_published = token;
        Ok(ControlReply::Ok)
    }
}

fn config_for(epoch: u64, ids: Vec<NodeId>) -> Result<QuorumConfig, ControlRejection> {
    if ids.len() < MIN_MEMBERS {
        return Err(ControlRejection::TooFew { n: ids.len() });
    }
    if ids.len() > MAX_MEMBERS {
        return Err(ControlRejection::TooMany { n: ids.len() });
    }
    QuorumConfig::for_members(epoch, ids)
        .map_err(|e| ControlRejection::InvalidConfig(e.to_string()))
}

#[cfg(test)]
mod tests;
