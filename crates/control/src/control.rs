//! [`Control`]: one node's control plane, the handle the runtime uses.

use crate::log_store::WalLogStore;
use crate::network::{
    ControlMessage, NetworkFactory, ReplyKind, RpcKind, RpcReply, SendFn, Transport,
};
use crate::raft_types::{from_raft, to_raft, TypeConfig};
use crate::state::{
    ControlCommand, ControlReply, ControlState, MemberInfo, MAX_MEMBERS, MIN_MEMBERS,
};
use crate::state_machine::{ControlStateMachine, CONTROL_SNAPSHOT_MAX_BYTES};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, Config, SnapshotPolicy};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synod_types::NodeId;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

/// Raft heartbeat period. Control traffic is tiny; 100 ms keeps leader
/// failure detection well under a second.
pub const HEARTBEAT_INTERVAL_MS: u64 = 100;
/// Lower bound of the randomized election timeout: five heartbeats, so a
/// couple of lost heartbeats never start an election.
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 500;
/// Upper bound of the randomized election timeout; the spread of 500 ms
/// makes split votes rare.
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 1000;
/// Build a state-machine snapshot (and let openraft purge the log behind it)
/// every this many applied entries. The state is small, so a snapshot is
/// cheap; 1000 keeps the log and the restart replay short.
pub const CONTROL_SNAPSHOT_LOGS: u64 = 1000;
/// Entries kept in the log behind a snapshot, so that a briefly lagging
/// follower catches up by entries instead of a snapshot.
pub const CONTROL_LOG_KEEP: u64 = 200;
/// How often the reconcile task runs on the leader (makes Raft voters follow
/// the current epoch's members, writes `Init`).
pub const RECONCILE_INTERVAL: Duration = Duration::from_millis(200);
/// Longest wait for one write, or one membership step of the reconcile
/// task, to commit; after it the caller gets `Unavailable` (retryable).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// A learner is promoted to voter once its replicated log is within this
/// many entries of the leader's, so promotion never makes the group wait
/// for a long catch-up.
pub const LEARNER_CATCHUP_LAG_MAX: u64 = 16;
/// Most inbound requests (Raft RPCs and submits) handled at once; beyond it
/// they are dropped and the sender times out and retries.
pub const INBOUND_HANDLERS_MAX: usize = 64;
/// Largest command accepted by `write`, postcard-encoded. One entry must
/// fit a WAL record (`CONTROL_WAL_RECORD_MAX_BYTES`), and an AppendEntries
/// of [`APPEND_ENTRIES_MAX`] of them must fit the transport's 16 MiB frame.
/// 1 MiB is a seal report of about 80k ids.
pub const CONTROL_COMMAND_MAX_BYTES: usize = 1 << 20;
/// Most entries in one AppendEntries (openraft's `max_payload_entries`):
/// with [`CONTROL_COMMAND_MAX_BYTES`] per entry, 12 keep one message under
/// the transport's 16 MiB frame limit. The control log is low-rate, so small
/// batches cost nothing.
pub const APPEND_ENTRIES_MAX: u64 = 12;
/// Longest wait at shutdown for the control log's WAL to close.
pub const SHUTDOWN_WAL_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Static configuration of one node's control plane.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// This node's id.
    pub me: NodeId,
    /// The cluster id, written by `Init` when the leader initialises the state.
    pub cluster_id: u64,
    /// The control plane's directory (the runtime uses `<data_dir>/control`).
    pub dir: PathBuf,
    /// This node's addresses.
    pub me_info: MemberInfo,
}

/// Why a control-plane operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlError {
    /// This node is not the leader; retry on `leader` if known.
    NotLeader {
        /// The leader this node knows of, with its addresses.
        leader: Option<(NodeId, MemberInfo)>,
    },
    /// No quorum, a timeout, or a leader change with an unknown outcome;
    /// retryable (commands are idempotent or rejected harmlessly on repeat).
    Unavailable(String),
    /// The control log or snapshot could not be read or written.
    Storage(String),
    /// The command is larger than [`CONTROL_COMMAND_MAX_BYTES`]; not written.
    TooLarge {
        /// Its encoded size.
        bytes: usize,
    },
    /// The control plane stopped or hit an unrecoverable error.
    Fatal(String),
}

impl ControlError {
    /// True if retrying (possibly on the leader) may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ControlError::NotLeader { .. } | ControlError::Unavailable(_)
        )
    }
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::NotLeader {
                leader: Some((id, info)),
            } => {
                write!(
                    f,
                    "not the control-plane leader; the leader is node {id} ({info})"
                )
            }
            ControlError::NotLeader { leader: None } => {
                write!(f, "not the control-plane leader; no leader known")
            }
            ControlError::Unavailable(why) => write!(f, "control plane unavailable: {why}"),
            ControlError::Storage(why) => write!(f, "control plane storage: {why}"),
            ControlError::TooLarge { bytes } => write!(
                f,
                "command of {bytes} bytes exceeds CONTROL_COMMAND_MAX_BYTES {CONTROL_COMMAND_MAX_BYTES}"
            ),
            ControlError::Fatal(why) => write!(f, "control plane stopped: {why}"),
        }
    }
}

impl std::error::Error for ControlError {}

/// A snapshot of this node's Raft status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlStatus {
    /// Current term (`raft_term`).
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// True if this node is the leader (`raft_is_leader`).
    pub is_leader: bool,
    /// Index of the last applied entry (`raft_commit_index`).
    pub commit_index: u64,
    /// Raft voters.
    pub voters: BTreeSet<NodeId>,
    /// Raft learners.
    pub learners: BTreeSet<NodeId>,
}

/// The control-plane operations the runtime uses, so the Raft library
/// behind them could be swapped (architecture.md §2).
pub trait ControlPlane: Send + Sync {
    /// Feeds one inbound message from `from`; never blocks.
    fn deliver(&self, from: NodeId, msg: ControlMessage);
    /// Idempotent bootstrap with the initial members.
    fn initialize(
        &self,
        members: BTreeMap<NodeId, MemberInfo>,
    ) -> impl Future<Output = Result<(), ControlError>> + Send;
    /// Writes one command through the leader's log.
    fn write(
        &self,
        cmd: ControlCommand,
    ) -> impl Future<Output = Result<ControlReply, ControlError>> + Send;
    /// Fire-and-forget write (on the leader, or sent to the known leader).
    fn submit(&self, cmd: ControlCommand);
    /// The applied state, updated after every applied batch.
    fn state(&self) -> watch::Receiver<Arc<ControlState>>;
    /// Raft status.
    fn status(&self) -> ControlStatus;
    /// Stops this node's control plane and closes its storage.
    fn shutdown(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized;
}

type Raft = openraft::Raft<TypeConfig, ControlStateMachine>;

/// One node's control plane: an openraft node with its log on our WAL, its
/// RPCs on the runtime's transport, and a reconcile task. Cheap to clone.
#[derive(Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ControlConfig,
    raft: Raft,
    transport: Arc<Transport>,
    state: watch::Receiver<Arc<ControlState>>,
    inbound: Arc<Semaphore>,
    runtime: tokio::runtime::Handle,
    reconcile: Mutex<Option<JoinHandle<()>>>,
    log_alive: std::sync::Weak<dyn std::any::Any + Send + Sync>,
}

fn raft_config(cluster_id: u64) -> Result<Config, ControlError> {
    let config = Config {
        cluster_name: format!("synod-{cluster_id}"),
        heartbeat_interval: HEARTBEAT_INTERVAL_MS,
        election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
        election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(CONTROL_SNAPSHOT_LOGS),
        max_in_snapshot_log_to_keep: CONTROL_LOG_KEEP,
        max_payload_entries: APPEND_ENTRIES_MAX,
        enable_pre_vote: Some(true),
        ..Config::default()
    };
    config
        .validate()
        .map_err(|e| ControlError::Fatal(format!("raft config: {e}")))
}

fn fatal(e: impl fmt::Display) -> ControlError {
    ControlError::Fatal(e.to_string())
}

fn write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ControlError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ControlError::NotLeader {
            leader: f.leader_id.and_then(from_raft).zip(f.leader_node),
        },
        RaftError::APIError(e @ ClientWriteError::LogEntryDiscarded(_)) => {
            ControlError::Unavailable(e.to_string())
        }
        RaftError::APIError(e) => ControlError::Unavailable(e.to_string()),
        RaftError::Fatal(e) => fatal(e),
    }
}

impl Control {
    /// Opens the control log and state machine in `cfg.dir` and starts the
    /// Raft node and its reconcile task. `send` carries outbound messages.
    pub async fn start(cfg: ControlConfig, send: SendFn) -> Result<Control, ControlError> {
        let storage =
            |e: std::io::Error| ControlError::Storage(format!("{}: {e}", cfg.dir.display()));
        std::fs::create_dir_all(&cfg.dir).map_err(storage)?;
        let log = WalLogStore::open(&cfg.dir).map_err(storage)?;
        let log_alive = log.liveness();
        let (publish, state) = watch::channel(Arc::new(ControlState::default()));
        let sm = ControlStateMachine::open(&cfg.dir, publish).map_err(storage)?;
        let transport = Arc::new(Transport::new(send));
        let network = NetworkFactory {
            transport: Arc::clone(&transport),
        };
        let config = Arc::new(raft_config(cfg.cluster_id)?);
        let raft = Raft::new(to_raft(cfg.me), config, network, log, sm)
            .await
            .map_err(fatal)?;
        let control = Control {
            inner: Arc::new(Inner {
                cfg,
                raft,
                transport,
                state,
                inbound: Arc::new(Semaphore::new(INBOUND_HANDLERS_MAX)),
                runtime: tokio::runtime::Handle::current(),
                reconcile: Mutex::new(None),
                log_alive,
            }),
        };
        let task = tokio::spawn(reconcile_loop(control.reconciler()));
        *control
            .inner
            .reconcile
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(control)
    }

    fn reconciler(&self) -> Reconciler {
        Reconciler {
            raft: self.inner.raft.clone(),
            state: self.inner.state.clone(),
            cluster_id: self.inner.cfg.cluster_id,
        }
    }

    /// Feeds one inbound message from `from`. Never blocks: responses
    /// complete the waiting RPC, requests and submits run on spawned tasks
    /// (at most [`INBOUND_HANDLERS_MAX`] at once; more are dropped).
    pub fn deliver(&self, from: NodeId, msg: ControlMessage) {
        let inner = &self.inner;
        match msg {
            ControlMessage::Response { id, result } => {
                inner.transport.on_response(from, id, result.0)
            }
            ControlMessage::Request { id, rpc } => {
                let Ok(permit) = Arc::clone(&inner.inbound).try_acquire_owned() else {
                    tracing::debug!("control: dropping a request from node {from}: handlers busy");
                    return;
                };
                let raft = inner.raft.clone();
                let transport = Arc::clone(&inner.transport);
                inner.runtime.spawn(async move {
                    let reply = handle_rpc(&raft, rpc.0).await;
                    drop(permit);
                    (transport.send)(
                        from,
                        ControlMessage::Response {
                            id,
                            result: RpcReply(reply),
                        },
                    );
                });
            }
            ControlMessage::Submit { cmd } => {
                if !inner.raft.is_leader() {
                    tracing::debug!("control: dropping {cmd} submitted by node {from}: not leader");
                    return;
                }
                let Ok(permit) = Arc::clone(&inner.inbound).try_acquire_owned() else {
                    return;
                };
                let this = self.clone();
                inner.runtime.spawn(async move {
                    if let Err(e) = this.write(cmd).await {
                        tracing::debug!("control: submitted write failed: {e}");
                    }
                    drop(permit);
                });
            }
        }
    }

    /// Bootstraps Raft with the initial members; `Ok` if already
    /// initialised. Every initial member calls it at every start. The
    /// leader then writes `Init` itself (reconcile task).
    pub async fn initialize(
        &self,
        members: BTreeMap<NodeId, MemberInfo>,
    ) -> Result<(), ControlError> {
        let nodes: BTreeMap<u64, MemberInfo> = members
            .into_iter()
            .map(|(id, i)| (to_raft(id), i))
            .collect();
        match self.inner.raft.initialize(nodes).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(RaftError::APIError(e @ InitializeError::NotInMembers(_))) => {
                Err(ControlError::Fatal(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(fatal(e)),
        }
    }

    /// Writes `cmd` through the log and returns its reply once applied
    /// here; on a follower, [`ControlError::NotLeader`].
    pub async fn write(&self, cmd: ControlCommand) -> Result<ControlReply, ControlError> {
        let bytes = postcard::experimental::serialized_size(&cmd)
            .map_err(|e| ControlError::Fatal(format!("encode {cmd}: {e}")))?;
        if bytes > CONTROL_COMMAND_MAX_BYTES {
            return Err(ControlError::TooLarge { bytes });
        }
        match tokio::time::timeout(WRITE_TIMEOUT, self.inner.raft.client_write(cmd)).await {
            Ok(Ok(resp)) => Ok(resp.data),
            Ok(Err(e)) => Err(write_error(e)),
            Err(_) => Err(ControlError::Unavailable(format!(
                "not committed within {WRITE_TIMEOUT:?}"
            ))),
        }
    }

    /// Fire-and-forget: writes on the leader, or sends a `Submit` to the
    /// known leader; dropped if no leader is known (the runtime retries).
    pub fn submit(&self, cmd: ControlCommand) {
        let status = self.status();
        if status.is_leader {
            let this = self.clone();
            self.inner.runtime.spawn(async move {
                if let Err(e) = this.write(cmd).await {
                    tracing::debug!("control: submit failed: {e}");
                }
            });
        } else if let Some(leader) = status.leader {
            (self.inner.transport.send)(leader, ControlMessage::Submit { cmd });
        } else {
            tracing::debug!("control: dropping {cmd}: no leader known");
        }
    }

    /// The applied control state; changes after every applied batch.
    pub fn state(&self) -> watch::Receiver<Arc<ControlState>> {
        self.inner.state.clone()
    }

    /// This node's Raft status.
    pub fn status(&self) -> ControlStatus {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        ControlStatus {
            term: m.current_term,
            leader: m.current_leader.and_then(from_raft),
            is_leader: m.state.is_leader(),
            commit_index: m.last_applied.as_ref().map_or(0, |l| l.index),
            voters: membership.voter_ids().filter_map(from_raft).collect(),
            learners: membership.learner_ids().filter_map(from_raft).collect(),
        }
    }

    /// Stops the reconcile task and the Raft node, and waits until the
    /// control log's WAL is closed (so a restart can reopen the directory).
    pub async fn shutdown(self) {
        let task = self
            .inner
            .reconcile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!("control: raft shutdown: {e}");
        }
        let log_alive = self.inner.log_alive.clone();
        drop(self);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAL_CLOSE_TIMEOUT;
        while log_alive.strong_count() > 0 {
            if tokio::time::Instant::now() > deadline {
                tracing::warn!("control: the control log is still open after shutdown");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl ControlPlane for Control {
    fn deliver(&self, from: NodeId, msg: ControlMessage) {
        Control::deliver(self, from, msg)
    }
    fn initialize(
        &self,
        members: BTreeMap<NodeId, MemberInfo>,
    ) -> impl Future<Output = Result<(), ControlError>> + Send {
        Control::initialize(self, members)
    }
    fn write(
        &self,
        cmd: ControlCommand,
    ) -> impl Future<Output = Result<ControlReply, ControlError>> + Send {
        Control::write(self, cmd)
    }
    fn submit(&self, cmd: ControlCommand) {
        Control::submit(self, cmd)
    }
    fn state(&self) -> watch::Receiver<Arc<ControlState>> {
        Control::state(self)
    }
    fn status(&self) -> ControlStatus {
        Control::status(self)
    }
    fn shutdown(self) -> impl Future<Output = ()> + Send {
        Control::shutdown(self)
    }
}

async fn handle_rpc(raft: &Raft, rpc: RpcKind) -> ReplyKind {
    let err = |e: &dyn fmt::Display| ReplyKind::Error(e.to_string());
    match rpc {
        RpcKind::AppendEntries(req) => match raft.append_entries(req).await {
            Ok(r) => ReplyKind::AppendEntries(r),
            Err(e) => err(&e),
        },
        RpcKind::Vote(req) => match raft.vote(req).await {
            Ok(r) => ReplyKind::Vote(r),
            Err(e) => err(&e),
        },
        RpcKind::PreVote(req) => match raft.pre_vote(req).await {
            Ok(r) => ReplyKind::Vote(r),
            Err(e) => err(&e),
        },
        RpcKind::TransferLeader(req) => match raft.handle_transfer_leader(req).await {
            Ok(r) => ReplyKind::TransferLeader(r),
            Err(e) => err(&e),
        },
        RpcKind::InstallSnapshot { vote, meta, data } => {
            if data.len() > CONTROL_SNAPSHOT_MAX_BYTES {
                return ReplyKind::Error(format!(
                    "refusing a {}-byte snapshot (CONTROL_SNAPSHOT_MAX_BYTES {CONTROL_SNAPSHOT_MAX_BYTES})",
                    data.len()
                ));
            }
            let snapshot = openraft::Snapshot {
                meta,
                snapshot: data,
            };
            match raft.install_full_snapshot(vote, snapshot).await {
                Ok(r) => ReplyKind::InstallSnapshot(r),
                Err(e) => err(&e),
            }
        }
    }
}

/// What the reconcile task needs (not the whole `Control`, so that it does
/// not keep the node alive).
struct Reconciler {
    raft: Raft,
    state: watch::Receiver<Arc<ControlState>>,
    cluster_id: u64,
}

async fn reconcile_loop(r: Reconciler) {
    let mut tick = tokio::time::interval(RECONCILE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if r.raft.is_leader() {
            r.reconcile_once().await;
        }
    }
}

impl Reconciler {
    /// One round on the leader: (0) hand leadership over if this node is no
    /// longer a voter; (a) write `Init` if the state is empty;
    /// (b) add current members as learners and promote them once caught up,
    /// keeping removed voters as learners; (c) drop learners whose last
    /// epoch is complete. One membership change at a time; errors retry
    /// next round.
    async fn reconcile_once(&self) {
        let st = self.state.borrow().clone();
        let (membership, last_log_index, matched) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            let matched: BTreeMap<u64, u64> = m
                .replication
                .as_ref()
                .map(|rep| {
                    rep.iter()
                        .map(|(id, l)| (*id, l.as_ref().map_or(0, |l| l.index)))
                        .collect()
                })
                .unwrap_or_default();
            (
                m.membership_config.clone(),
                m.last_log_index.unwrap_or(0),
                matched,
            )
        };
        let membership = membership.membership();
        if membership.get_joint_config().len() > 1 {
            return; // a change is still being made
        }
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let learners: BTreeSet<u64> = membership.learner_ids().collect();

        // A leader the current epoch removed stays a learner (so it keeps
        // serving its old epoch), and openraft lets a learner keep leading:
        // hand leadership to the most caught-up voter.
        let me = *self.raft.node_id();
        if !voters.contains(&me) {
            if let Some(to) = voters
                .iter()
                .copied()
                .max_by_key(|v| matched.get(v).copied())
            {
                tracing::info!(
                    "control: leader {me} is no longer a voter; transferring leadership to {to}"
                );
                if let Err(e) = self.raft.trigger().transfer_leader(to).await {
                    tracing::info!("control: transfer_leader({to}): {e}");
                }
            }
            return;
        }

        let Some(cur) = st.current() else {
            // (a) The leader writes Init from the Raft membership.
            let members: BTreeMap<NodeId, MemberInfo> = membership
                .nodes()
                .filter(|(id, _)| voters.contains(id))
                .filter_map(|(id, n)| from_raft(*id).map(|i| (i, n.clone())))
                .collect();
            if !(MIN_MEMBERS..=MAX_MEMBERS).contains(&members.len()) {
                // Init would be rejected; writing it every round would only
                // grow the log.
                tracing::warn!(
                    "control: cannot write Init: {} Raft voters, need {MIN_MEMBERS}..={MAX_MEMBERS}",
                    members.len()
                );
                return;
            }
            tracing::info!(
                "control: writing Init for cluster {} with members {:?}",
                self.cluster_id,
                members.keys().collect::<Vec<_>>()
            );
            let cmd = ControlCommand::Init {
                cluster_id: self.cluster_id,
                members,
            };
            if let Err(e) = self.timed(self.raft.client_write(cmd)).await {
                tracing::info!("control: Init not written: {e}");
            }
            return;
        };

        // (b) Voters follow the current epoch's members.
        let target: BTreeSet<u64> = cur.config.members().iter().map(|m| to_raft(*m)).collect();
        for id in target
            .iter()
            .filter(|id| !voters.contains(id) && !learners.contains(id))
        {
            let Some(info) = from_raft(*id).and_then(|i| st.nodes.get(&i)) else {
                continue;
            };
            tracing::info!("control: adding node {id} as a learner");
            if let Err(e) = self
                .timed(self.raft.add_learner(*id, info.clone(), false))
                .await
            {
                tracing::info!("control: add_learner({id}): {e}");
            }
            return;
        }
        if target != voters {
            let caught_up = target.iter().all(|id| {
                voters.contains(id)
                    || matched
                        .get(id)
                        .is_some_and(|m| m + LEARNER_CATCHUP_LAG_MAX >= last_log_index)
            });
            if caught_up {
                tracing::info!(
                    "control: voters {:?} -> {:?} (epoch {})",
                    voters,
                    target,
                    cur.config.epoch
                );
                let change = ChangeMembers::ReplaceAllVoters(target.clone());
                if let Err(e) = self.timed(self.raft.change_membership(change, true)).await {
                    tracing::info!("control: change_membership: {e}");
                }
            }
            return;
        }

        // (c) Learners in no epoch still open: their epoch is complete.
        let gone: BTreeSet<u64> = learners
            .iter()
            .copied()
            .filter(|id| from_raft(*id).is_none_or(|i| !st.nodes.contains_key(&i)))
            .collect();
        if !gone.is_empty() {
            tracing::info!("control: removing learners {gone:?} (their last epoch is complete)");
            let change = ChangeMembers::RemoveNodes(gone);
            if let Err(e) = self.timed(self.raft.change_membership(change, false)).await {
                tracing::info!("control: remove learners: {e}");
            }
        }
    }

    async fn timed<T>(
        &self,
        fut: impl Future<Output = Result<T, RaftError<TypeConfig, ClientWriteError<TypeConfig>>>>,
    ) -> Result<T, ControlError> {
        match tokio::time::timeout(WRITE_TIMEOUT, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(write_error(e)),
            Err(_) => Err(ControlError::Unavailable(format!(
                "not committed within {WRITE_TIMEOUT:?}"
            ))),
        }
    }
}
