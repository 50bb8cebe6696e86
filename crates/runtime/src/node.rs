//! The replica loop: the one place where the EPaxos\* core meets I/O.
//!
//! One tokio task owns the [`Replica`], the decision [`StateMachine`] and
//! every output that is not yet released. For each core output it
//!
//! 1. appends the output's writes to the WAL (the writer thread makes them
//!    durable with one fdatasync per group, across many outputs);
//! 2. queues the output behind its *ticket*, the LSN of its last write (or
//!    the last LSN appended so far, if it has no writes);
//! 3. when the WAL reports the ticket durable, and every earlier output has
//!    been released, sends the messages, applies the executions to the state
//!    machine and answers the clients waiting for them.
//!
//! So nothing leaves the replica before the writes of its output and of every
//! earlier output are durable (epaxos.md §2.4; the crate docs of
//! `synod_epaxos`): persist → send → execute → reply.
//!
//! # What is durable
//!
//! The WAL holds every [`Write`] of the core. A snapshot holds, at one WAL
//! position L, the latest record of every instance, the id high-water mark,
//! the ids applied to the state machine and the state machine itself. The
//! state machine is not written per execution: at restart the replica loads
//! the snapshot, replays the WAL after L, and the core re-executes every
//! committed instance that the snapshot had not applied (same dependency
//! graph, so the same per-key order; the session table keeps the outcomes the
//! clients were told).

use crate::config::NodeConfig;
use crate::membership::PeerMessage;
use crate::metrics::{LoopState, Metrics, Rejection};
use crate::release::ReleaseQueue;
use crate::RuntimeError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use synod_client::wire::{
    LogCommand, LogEntry, LogResponse, ReadResponse, Staleness, StatusResponse,
};
use synod_control::{Control, ControlCommand, ControlState};
use synod_decision::{Outcome, StateMachine};
use synod_epaxos::{
    Envelope, EpochState, InstanceRecord, Options, Output, Replica, SealReport, Write,
};
use synod_storage::{Lsn, Wal, WalOptions};
use synod_transport::Transport;
use synod_types::{ClientId, CmdId, Command, NodeId, Phase, QuorumConfig};
use tokio::sync::{mpsc, oneshot};

/// Outputs whose writes are appended but not yet durable, beyond which the
/// loop stops reading new proposals and peer messages until the disk
/// catches up. Below the WAL's own queue limit (65,536 records), so the WAL
/// never refuses an append of the core.
pub const MAX_UNSYNCED_RECORDS: u64 = 32_768;

/// The WAL's queue limit (`WalOptions::queue_max_records`) as the runtime
/// configures it.
pub const WAL_QUEUE_MAX: usize = 65_536;

/// Inputs of one kind the loop feeds to the core before it flushes and
/// handles the output: bounds the latency one busy input adds to the others.
pub const MAX_INPUTS_PER_TURN: usize = 512;

/// Times the runtime proposes again a command whose instance was committed
/// as Nop (a recovery replaced it) before it tells the client to retry.
pub const MAX_ABORT_REPROPOSALS: u32 = 8;

/// Entries of the in-memory execution log kept for `GET /v1/log`; older ones
/// are dropped (the indexes stay absolute).
pub const LOG_RETAIN: usize = 1_000_000;

/// Environment variable that turns on a deliberately broken variant: outputs
/// are released before their writes are durable. Only for the test that
/// shows the crash tests catch a replica acknowledging before its fsync
/// (quality-bars.md R2/R4). Logged loudly when set.
pub const RELEASE_BEFORE_FSYNC_ENV: &str = "SYNOD_TEST_RELEASE_BEFORE_FSYNC";

/// Committed-but-unexecuted instances whose commit time the loop keeps for
/// `synod_execute_latency_seconds` and `synod_oldest_unexecuted_age_seconds`.
/// Beyond it new commits are not timed (the metrics then under-report);
/// normally the map holds only what waits for dependencies.
pub const COMMIT_TIMES_MAX: usize = 65_536;

/// How often the loop submits again what the control state lacks: its
/// durable seal reports and its completed epochs. Submissions are
/// idempotent, so a short period only costs a few small messages during an
/// epoch change.
pub const CONTROL_RESUBMIT: Duration = Duration::from_millis(500);

/// A peer counts as reachable for `/readyz` if it was heard from within this.
pub const PEER_SILENCE_READY: Duration = Duration::from_secs(3);

/// Why a proposal was not answered with an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposeError {
    /// Too many proposals waiting; retry after the hint.
    Overloaded {
        /// which limit
        reason: String,
    },
    /// The instance was replaced by a Nop more than [`MAX_ABORT_REPROPOSALS`]
    /// times; retry with the same session.
    Aborted,
    /// The replica is stopping; retry on another one.
    ShuttingDown,
}

/// Where a proposal's result goes: the instance that carried it and its
/// outcome, or why there is none.
pub type Reply = oneshot::Sender<Result<(CmdId, Outcome), ProposeError>>;

/// A proposal travelling from the API to the loop.
pub struct Proposal {
    /// The protocol command (session keys included).
    pub cmd: Command,
    /// Where the outcome goes.
    pub reply: Reply,
    /// When the API put it in the loop's queue: the start of
    /// `synod_commit_latency_seconds`.
    pub queued_at: Instant,
}

/// A client waiting in the loop for a proposal's outcome.
struct Waiter {
    reply: Reply,
    queued_at: Instant,
}

/// Waiters by `(client, request)`, with their total count kept alongside
/// (it bounds admission on every proposal, so it must not be recounted).
#[derive(Default)]
struct Waiters {
    by_request: HashMap<(ClientId, u64), Vec<Waiter>>,
    len: usize,
}

impl Waiters {
    fn push(&mut self, key: (ClientId, u64), w: Waiter) {
        self.by_request.entry(key).or_default().push(w);
        self.len += 1;
    }

    fn take(&mut self, key: &(ClientId, u64)) -> Vec<Waiter> {
        let ws = self.by_request.remove(key).unwrap_or_default();
        self.len -= ws.len();
        ws
    }

    fn drain(&mut self) -> impl Iterator<Item = Waiter> + '_ {
        self.len = 0;
        self.by_request.drain().flat_map(|(_, ws)| ws)
    }
}

/// A read-only question to the loop.
pub enum Query {
    /// `GET /v1/status`
    Status(oneshot::Sender<StatusResponse>),
    /// `GET /v1/log`
    Log {
        /// first index
        from: u64,
        /// most entries
        limit: usize,
        /// answer
        reply: oneshot::Sender<LogResponse>,
    },
    /// `GET /v1/keys/{key}`
    Read {
        /// key
        key: String,
        /// answer
        reply: oneshot::Sender<ReadResponse>,
    },
    /// `/readyz`: done re-executing what was recovered, enough peers
    /// reachable, not overloaded (see [`Node::ready`]).
    Ready(oneshot::Sender<Result<(), String>>),
    /// `GET /v1/internal/snapshot`: the state a replica added in epoch
    /// `join_epoch` starts from (see [`crate::membership`]).
    JoinSnapshot {
        /// the epoch the new member was added in
        join_epoch: u64,
        /// the encoded [`crate::membership::JoinSnapshot`], or why not
        reply: oneshot::Sender<Result<Vec<u8>, String>>,
    },
}

/// One WAL record.
#[derive(Serialize, Deserialize)]
enum WalRecord {
    /// A write of the EPaxos\* core.
    Write(Write),
}

/// The snapshot body (postcard).
#[derive(Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub(crate) node: NodeId,
    pub(crate) cluster_id: u64,
    pub(crate) next_seq: u64,
    pub(crate) records: Vec<(CmdId, InstanceRecord)>,
    pub(crate) processed: Vec<CmdId>,
    pub(crate) app: Vec<u8>,
    /// Every configuration learned and every seal (epaxos.md §8).
    pub(crate) epochs: EpochState,
}

/// The state a replica recovers from its data directory.
pub struct Recovered {
    /// Latest record per instance.
    pub records: BTreeMap<CmdId, InstanceRecord>,
    /// Durable id high-water mark.
    pub next_seq: u64,
    /// Ids applied to `app`.
    pub processed: BTreeSet<CmdId>,
    /// The state machine as of the snapshot.
    pub app: StateMachine,
    /// WAL records replayed after the snapshot.
    pub replayed: usize,
    /// The configurations and seals, folded from the snapshot and the WAL;
    /// `None` only for a joining replica that has not installed its first
    /// snapshot yet (it has no data-plane state at all).
    pub epochs: Option<EpochState>,
    /// The data directory's lock, held for the life of the process.
    pub lock: std::fs::File,
}

/// Opens the WAL under `cfg.data_dir` and rebuilds the durable state.
/// `on_durable` is the WAL's durability callback.
pub fn open_storage(
    cfg: &NodeConfig,
    on_durable: Box<dyn Fn(Lsn) + Send + Sync>,
) -> Result<(Wal, Recovered), RuntimeError> {
    let lock = lock_data_dir(cfg)?;
    check_identity(cfg)?;
    // One record is one instance's full record; half a segment is far
    // above any real one (a full batch of maximal decisions is the worst
    // case) and lets small test segments still hold any record.
    let opts = WalOptions {
        segment_bytes: cfg.storage.segment_bytes,
        max_record_bytes: u32::try_from(cfg.storage.segment_bytes / 2).unwrap_or(u32::MAX),
        emulated_sync_delay: Duration::from_millis(cfg.storage.emulated_sync_delay_ms),
        queue_max_records: WAL_QUEUE_MAX,
        ..WalOptions::default()
    };
    let (wal, rec) = Wal::open(&cfg.data_dir, opts, on_durable)
        .map_err(|e| RuntimeError(format!("storage: {e}")))?;
    if let Some(t) = &rec.truncated_tail {
        tracing::warn!(?t, "WAL: torn tail truncated (a crash interrupted a write)");
    }
    let mut out = Recovered {
        records: BTreeMap::new(),
        next_seq: 0,
        processed: BTreeSet::new(),
        app: StateMachine::new(),
        replayed: rec.records.len(),
        epochs: None,
        lock,
    };
    if let Some((lsn, bytes)) = &rec.snapshot {
        let s: Snapshot = postcard::from_bytes(bytes).map_err(|e| {
            RuntimeError(format!(
                "snapshot at LSN {lsn} in {}: checksum ok but undecodable: {e}",
                cfg.data_dir.display()
            ))
        })?;
        if s.node != cfg.id || s.cluster_id != cfg.cluster_id {
            return Err(RuntimeError(format!(
                "snapshot in {} belongs to node {} of cluster {}, not node {} of cluster {}",
                cfg.data_dir.display(),
                s.node,
                s.cluster_id,
                cfg.id,
                cfg.cluster_id
            )));
        }
        out.records = s.records.into_iter().collect();
        out.next_seq = s.next_seq;
        out.processed = s.processed.into_iter().collect();
        out.app = StateMachine::restore(&s.app)
            .map_err(|e| RuntimeError(format!("snapshot at LSN {lsn}: state machine: {e}")))?;
        out.epochs = Some(s.epochs);
    } else if !cfg.join {
        out.epochs = Some(EpochState::new(quorum(cfg)?));
    }
    for (lsn, bytes) in &rec.records {
        let r: WalRecord = postcard::from_bytes(bytes).map_err(|e| {
            RuntimeError(format!(
                "WAL record {lsn} in {}: checksum ok but undecodable: {e}",
                cfg.data_dir.display()
            ))
        })?;
        match r {
            WalRecord::Write(Write::Instance { id, record }) => {
                out.records.insert(id, *record);
            }
            WalRecord::Write(Write::NextSeq(s)) => out.next_seq = out.next_seq.max(s),
            WalRecord::Write(
                w @ (Write::Epoch(_) | Write::Sealed { .. } | Write::Closed { .. }),
            ) => {
                let Some(epochs) = out.epochs.as_mut() else {
                    return Err(RuntimeError(format!(
                        "WAL record {lsn} in {}: an epoch record before any configuration (a joining replica's WAL without its installed snapshot)",
                        cfg.data_dir.display()
                    )));
                };
                if let Write::Epoch(c) = &w {
                    // Ids restart at seq 0 in a new epoch (`Write::Epoch`).
                    if c.epoch > epochs.current().epoch {
                        out.next_seq = 0;
                    }
                }
                epochs.apply(&w);
            }
        }
    }
    Ok((wal, out))
}

/// Takes an exclusive lock on `<data_dir>/LOCK`, so two processes never
/// write one WAL (the lock goes with the process, also on SIGKILL).
fn lock_data_dir(cfg: &NodeConfig) -> Result<std::fs::File, RuntimeError> {
    let io = |e: std::io::Error| RuntimeError(format!("{}: {e}", cfg.data_dir.display()));
    std::fs::create_dir_all(&cfg.data_dir).map_err(io)?;
    let path = cfg.data_dir.join("LOCK");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(RuntimeError(format!(
            "{} is in use by another process (locked: {}); two replicas must never share a data directory",
            cfg.data_dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// Refuses a data directory written by another node or cluster.
fn check_identity(cfg: &NodeConfig) -> Result<(), RuntimeError> {
    let io = |e: std::io::Error| RuntimeError(format!("{}: {e}", cfg.data_dir.display()));
    std::fs::create_dir_all(&cfg.data_dir).map_err(io)?;
    let path = cfg.data_dir.join("identity");
    let want = format!("node={}\ncluster={}\n", cfg.id, cfg.cluster_id);
    match std::fs::read_to_string(&path) {
        Ok(have) if have == want => Ok(()),
        Ok(have) => Err(RuntimeError(format!(
            "{} says {:?}, but this is node {} of cluster {}: refusing another replica's data",
            path.display(),
            have.trim(),
            cfg.id,
            cfg.cluster_id
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = cfg.data_dir.join("identity.tmp");
            std::fs::write(&tmp, want).map_err(io)?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            std::fs::File::open(&cfg.data_dir)
                .and_then(|d| d.sync_all())
                .map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}

/// Protocol options from the config.
pub fn options(cfg: &NodeConfig, seed: u64) -> Options {
    let p = &cfg.protocol;
    Options {
        thrifty: p.thrifty,
        batch_size_max: p.batch_size_max,
        fast_timeout_ticks: p.fast_timeout_ticks,
        retransmit_ticks: p.retransmit_ticks,
        commit_timeout_ticks: p.commit_timeout_ticks,
        forward_contended: p.forward_contended,
        seed,
        ..Options::default()
    }
}

/// `opts` with the protocol settings replicated by the control plane laid
/// over the config file's (they apply from the next start of the replica).
pub fn with_settings(mut opts: Options, s: &synod_control::Settings) -> Options {
    if let Some(t) = s.thrifty {
        opts.thrifty = t;
    }
    if let Some(b) = s.batch_size_max {
        opts.batch_size_max = b.clamp(1, 4096);
    }
    if let Some(t) = s.fast_timeout_ticks {
        opts.fast_timeout_ticks = t.max(1);
    }
    if let Some(t) = s.commit_timeout_ticks {
        opts.commit_timeout_ticks = t.max(1);
    }
    opts
}

/// The quorum configuration of the configured members (epoch 0).
pub fn quorum(cfg: &NodeConfig) -> Result<QuorumConfig, RuntimeError> {
    let ids: Vec<NodeId> = cfg.members.iter().map(|m| m.id).collect();
    QuorumConfig::for_members(0, ids).map_err(|err| RuntimeError(format!("members: {err}")))
}

/// Channels into the loop, held by the API.
#[derive(Clone)]
pub struct Handle {
    /// Proposals (bounded: `limits.max_waiting_proposals`).
    pub proposals: mpsc::Sender<Proposal>,
    /// Queries (bounded).
    pub queries: mpsc::Sender<Query>,
    /// This node.
    pub node: NodeId,
    /// Incarnation id.
    pub boot_id: u64,
}

/// The loop's state.
pub struct Node {
    cfg: NodeConfig,
    me: NodeId,
    boot_id: u64,
    replica: Replica,
    app: StateMachine,
    wal: Arc<Wal>,
    transport: Transport<PeerMessage>,
    /// The control plane: where epochs come from and seal reports go.
    control: Control,
    /// Seal reports made durable here that the control state does not show
    /// yet, resubmitted every [`CONTROL_RESUBMIT`] until it does.
    seal_reports: BTreeMap<u64, SealReport>,
    /// When the loop next resubmits what the control state lacks.
    resubmit_due: Instant,
    queue: ReleaseQueue<Output>,
    next_seq: u64,
    applied_ids: BTreeSet<CmdId>,
    /// Instances applied before the first retained log entry (from the
    /// snapshot, or dropped by `LOG_RETAIN`): what a stream token must
    /// already contain to resume here (`stream.rs`).
    history_base: synod_client::frontier::Frontier,
    records_since_snapshot: u64,
    snapshot_running: bool,
    waiters: Waiters,
    reproposals: HashMap<(ClientId, u64), u32>,
    log: VecDeque<LogEntry>,
    log_base: u64,
    applied: u64,
    last_heard: BTreeMap<NodeId, Instant>,
    _lock: std::fs::File,
    release_before_fsync: bool,
    metrics: Metrics,
    /// When [`Node::refresh_metrics`] next copies the loop's state.
    metrics_due: Instant,
    /// When each committed, not yet executed instance's commit was released
    /// here (at most [`COMMIT_TIMES_MAX`]).
    committed_at: HashMap<CmdId, Instant>,
    /// Committed instances recovered from disk that the executor had not
    /// processed after the first flush. `/readyz` says "not ready" until
    /// every one of them is processed; emptied once, never refilled.
    recovering: Vec<CmdId>,
}

impl Node {
    /// Builds the loop state from recovered storage.
    pub fn new(
        cfg: NodeConfig,
        boot_id: u64,
        wal: Arc<Wal>,
        rec: Recovered,
        transport: Transport<PeerMessage>,
        control: Control,
        metrics: Metrics,
    ) -> Result<Node, RuntimeError> {
        let me = cfg.id;
        let epochs = rec.epochs.ok_or_else(|| {
            RuntimeError(
                "a joining replica starts its data plane only from an installed snapshot".into(),
            )
        })?;
        let replica = Replica::restart_in(
            me,
            epochs,
            with_settings(options(&cfg, boot_id), &control.state().borrow().settings),
            rec.records,
            rec.next_seq,
            rec.processed.clone(),
        );
        // Seals recovered from disk are durable: report them again until the
        // control state has them.
        let seal_reports = replica
            .epoch_state()
            .seals
            .iter()
            .filter(|(_, s)| s.closed.is_none())
            .filter_map(|(e, _)| replica.seal_report(*e).map(|r| (*e, r)))
            .collect();
        Ok(Node {
            me,
            boot_id,
            control,
            seal_reports,
            resubmit_due: Instant::now(),
            replica,
            app: rec.app,
            queue: ReleaseQueue::new(wal.last_lsn(), wal.durable_lsn()),
            wal,
            transport,
            next_seq: rec.next_seq,
            history_base: {
                let mut f = synod_client::frontier::Frontier::new();
                for id in &rec.processed {
                    f.insert(*id);
                }
                f
            },
            applied_ids: rec.processed,
            records_since_snapshot: rec.replayed as u64,
            snapshot_running: false,
            waiters: Waiters::default(),
            reproposals: HashMap::new(),
            log: VecDeque::new(),
            log_base: 0,
            applied: 0,
            last_heard: BTreeMap::new(),
            _lock: rec.lock,
            release_before_fsync: {
                let on = std::env::var(RELEASE_BEFORE_FSYNC_ENV).is_ok_and(|v| v == "1");
                if on {
                    tracing::error!("{RELEASE_BEFORE_FSYNC_ENV}=1: releasing outputs BEFORE they are durable (broken on purpose, tests only)");
                }
                on
            },
            metrics,
            metrics_due: Instant::now(),
            committed_at: HashMap::new(),
            recovering: Vec::new(),
            cfg,
        })
    }

    fn backlogged(&self) -> bool {
        self.queue.unsynced() > MAX_UNSYNCED_RECORDS
    }

    /// Runs until `shutdown` fires.
    pub async fn run(
        mut self,
        mut inbound: mpsc::Receiver<(NodeId, PeerMessage)>,
        mut proposals: mpsc::Receiver<Proposal>,
        mut queries: mpsc::Receiver<Query>,
        mut durable_rx: mpsc::UnboundedReceiver<Lsn>,
        mut shutdown: oneshot::Receiver<()>,
    ) -> Result<(), RuntimeError> {
        let (snap_tx, mut snap_rx) = mpsc::unbounded_channel::<Result<(), String>>();
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.protocol.tick_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Executions of committed-but-unapplied instances come out now; the
        // ones that cannot (a dependency not committed here yet) keep the
        // replica unready until they are processed.
        let mut control_state = self.control.state();
        let out = self.replica.flush();
        self.handle(out)?;
        // Epochs the control plane made while this replica was down come
        // before any peer message.
        let st = control_state.borrow_and_update().clone();
        self.on_control_state(&st)?;
        self.recovering = self
            .replica
            .instances()
            .filter(|(id, r)| r.phase == Phase::Committed && !self.replica.is_processed(**id))
            .map(|(id, _)| *id)
            .collect();
        if !self.recovering.is_empty() {
            tracing::info!(
                instances = self.recovering.len(),
                "recovered committed instances wait for their dependencies before they execute; not ready until they have"
            );
        }
        loop {
            let backlogged = self.backlogged();
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(lsn) = durable_rx.recv() => {
                    let mut lsn = lsn;
                    while let Ok(l) = durable_rx.try_recv() {
                        lsn = lsn.max(l);
                    }
                    self.on_durable(lsn);
                }
                Some(done) = snap_rx.recv() => {
                    self.snapshot_running = false;
                    if let Err(e) = done {
                        return Err(RuntimeError(format!("snapshot failed: {e}")));
                    }
                }
                Ok(()) = control_state.changed() => {
                    let st = control_state.borrow_and_update().clone();
                    self.on_control_state(&st)?;
                }
                _ = tick.tick() => {
                    let out = self.replica.tick();
                    self.handle(out)?;
                    self.refresh_metrics();
                    let st = control_state.borrow().clone();
                    self.resubmit(&st);
                }
                Some((from, msg)) = inbound.recv(), if !backlogged => {
                    let now = Instant::now();
                    self.last_heard.insert(from, now);
                    let mut out = Output::default();
                    self.deliver(from, msg, &mut out);
                    for _ in 1..MAX_INPUTS_PER_TURN {
                        match inbound.try_recv() {
                            Ok((from, msg)) => {
                                self.last_heard.insert(from, now);
                                self.deliver(from, msg, &mut out);
                            }
                            Err(_) => break,
                        }
                    }
                    out.extend(self.replica.flush());
                    self.handle(out)?;
                }
                Some(p) = proposals.recv(), if !backlogged => {
                    let mut out = self.propose(p);
                    for _ in 1..MAX_INPUTS_PER_TURN {
                        match proposals.try_recv() {
                            Ok(p) => out.extend(self.propose(p)),
                            Err(_) => break,
                        }
                    }
                    out.extend(self.replica.flush());
                    self.handle(out)?;
                }
                Some(q) = queries.recv() => self.answer(q),
            }
            self.maybe_snapshot(&snap_tx);
        }
        self.stop(proposals).await
    }

    /// Hands a peer message to the core or to the control plane.
    fn deliver(&mut self, from: NodeId, msg: PeerMessage, out: &mut Output) {
        match msg {
            PeerMessage::Data(m) => out.extend(self.replica.step(from, m)),
            PeerMessage::Control(m) => self.control.deliver(from, m),
        }
    }

    /// Brings the core up to the control state (epaxos.md §8): every epoch
    /// it does not know yet, in order ([`Replica::begin_epoch`] seals the
    /// current one), then every closed set it has not applied
    /// ([`Replica::close_epoch`]). Both are idempotent.
    fn on_control_state(&mut self, st: &ControlState) -> Result<(), RuntimeError> {
        let mut out = Output::default();
        let cur = self.replica.config().epoch;
        for (e, rec) in st.epochs.range(cur + 1..) {
            tracing::info!(node = self.me, epoch = e, members = ?rec.config.members(), "control plane: new epoch");
            out.extend(self.replica.begin_epoch(rec.config.clone()));
        }
        let cur = self.replica.config().epoch;
        for (e, rec) in st.epochs.range(..cur) {
            let Some(k) = &rec.closed else { continue };
            let closed_here = self
                .replica
                .epoch_state()
                .seals
                .get(e)
                .is_some_and(|s| s.closed.is_some());
            // `close_epoch` itself ignores an epoch it cannot close yet.
            if !closed_here {
                tracing::info!(
                    node = self.me,
                    epoch = e,
                    k = k.len(),
                    "control plane: epoch closed"
                );
                out.extend(self.replica.close_epoch(*e, k.clone()));
            }
        }
        out.extend(self.replica.flush());
        self.handle(out)
    }

    /// Every [`CONTROL_RESUBMIT`]: submits again the durable seal reports
    /// and the completed epochs the control state does not show (a
    /// submission is fire-and-forget and may be lost with a leader).
    fn resubmit(&mut self, st: &ControlState) {
        let now = Instant::now();
        if now < self.resubmit_due {
            return;
        }
        self.resubmit_due = now + CONTROL_RESUBMIT;
        self.seal_reports
            .retain(|e, _| st.epochs.get(e).is_none_or(|r| r.closed.is_none()));
        for r in self.seal_reports.values() {
            if !st
                .epochs
                .get(&r.epoch)
                .is_some_and(|x| x.reports.contains_key(&self.me))
            {
                self.control.submit(ControlCommand::SealReport {
                    epoch: r.epoch,
                    from: self.me,
                    known: r.known.clone(),
                });
            }
        }
        for (e, rec) in &st.epochs {
            if rec.closed.is_some()
                && !rec.done.contains(&self.me)
                && self.replica.epoch_complete(*e)
            {
                self.control.submit(ControlCommand::EpochDone {
                    epoch: *e,
                    from: self.me,
                });
            }
        }
    }

    /// Registers the waiter and hands the command to the core.
    fn propose(&mut self, p: Proposal) -> Output {
        let key = (p.cmd.client, p.cmd.request);
        let waiting = self.waiters.len;
        if waiting >= self.cfg.limits.max_waiting_proposals {
            self.metrics.rejected(Rejection::Overloaded);
            let _ = p.reply.send(Err(ProposeError::Overloaded {
                reason: format!(
                    "{waiting} proposals are waiting for their result (limits.max_waiting_proposals)"
                ),
            }));
            return Output::default();
        }
        self.metrics.proposal_accepted();
        self.waiters.push(
            key,
            Waiter {
                reply: p.reply,
                queued_at: p.queued_at,
            },
        );
        self.replica.propose(p.cmd)
    }

    /// Step 1 and 2 of the contract: append the writes, queue the rest
    /// behind them.
    fn handle(&mut self, mut out: Output) -> Result<(), RuntimeError> {
        if out.is_empty() {
            return Ok(());
        }
        let writes = std::mem::take(&mut out.writes);
        if !writes.is_empty() {
            let mut payloads = Vec::with_capacity(writes.len());
            for w in writes {
                match &w {
                    Write::NextSeq(s) => self.next_seq = self.next_seq.max(*s),
                    // A new epoch's ids start again at seq 0.
                    Write::Epoch(_) => self.next_seq = 0,
                    _ => {}
                }
                let bytes = postcard::to_allocvec(&WalRecord::Write(w))
                    .map_err(|e| RuntimeError(format!("encoding a WAL record: {e}")))?;
                payloads.push(bytes);
            }
            self.records_since_snapshot += payloads.len() as u64;
            // The WAL refuses appends beyond its queue limit. The loop stops
            // reading input long before (MAX_UNSYNCED_RECORDS), but one turn
            // may still produce many writes: rather than fail, wait here for
            // the disk (records not yet durable ≥ records still queued).
            let room = WAL_QUEUE_MAX as u64;
            let n = payloads.len() as u64;
            if self.queue.unsynced() + n > room {
                let target = self.queue.last_appended() + n - room;
                let wal = self.wal.clone();
                tokio::task::block_in_place(|| wal.wait_durable(target))
                    .map_err(|e| RuntimeError(format!("WAL: {e}")))?;
                for out in self.queue.durable(target) {
                    self.release(out);
                }
            }
            let lsn = self
                .wal
                .append_batch(payloads)
                .map_err(|e| RuntimeError(format!("WAL append: {e}")))?;
            if let Some(lsn) = lsn {
                self.queue.appended(lsn);
            }
        }
        if self.release_before_fsync {
            // The deliberately broken variant (see RELEASE_BEFORE_FSYNC_ENV).
            self.release(out);
        } else if let Some(out) = self.queue.push(out) {
            self.release(out);
        }
        Ok(())
    }

    fn on_durable(&mut self, lsn: Lsn) {
        for out in self.queue.durable(lsn) {
            self.release(out);
        }
    }

    /// Steps 2–4: send, execute, reply. Only for outputs whose writes (and
    /// every earlier output's) are durable.
    fn release(&mut self, out: Output) {
        for Envelope { to, msg } in out.messages {
            if to == self.me {
                continue;
            }
            // A full queue or a down peer loses the message; the core
            // retransmits (epaxos.md §4.1.7).
            let _ = self.transport.send(to, PeerMessage::Data(msg));
        }
        // Durable now: the control plane may count them (epaxos.md §8.2
        // step 4; a report must never promise more than the disk holds).
        for r in out.seal_reports {
            self.control.submit(ControlCommand::SealReport {
                epoch: r.epoch,
                from: r.from,
                known: r.known.clone(),
            });
            self.seal_reports.insert(r.epoch, r);
        }
        for e in out.completed_epochs {
            tracing::info!(
                node = self.me,
                epoch = e,
                "epoch executed here (its closure is complete)"
            );
            self.control.submit(ControlCommand::EpochDone {
                epoch: e,
                from: self.me,
            });
        }
        let now = Instant::now();
        for id in out.committed {
            if self.committed_at.len() < COMMIT_TIMES_MAX {
                self.committed_at.insert(id, now);
            }
        }
        for ex in out.executions {
            if let Some(t) = self.committed_at.remove(&ex.id) {
                self.metrics
                    .executed_after(now.saturating_duration_since(t));
            }
            let mut commands = Vec::with_capacity(ex.batch.len());
            for cmd in ex.batch.iter() {
                let duplicate = self
                    .app
                    .session(cmd.client)
                    .is_some_and(|(last, _)| last >= cmd.request);
                let outcome = self.app.apply(cmd);
                self.applied += 1;
                commands.push(LogCommand {
                    client: cmd.client,
                    request: cmd.request,
                    keys: cmd.keys.iter().map(|(k, _)| k.to_string()).collect(),
                    // Reads without a session change nothing.
                    applied: !duplicate
                        && cmd.client != synod_decision::READ_ONLY_CLIENT
                        && outcome.is_applied(),
                    duplicate,
                    decision: synod_decision::Decision::decode(&cmd.body).ok(),
                    outcome: Some(outcome.clone()),
                });
                let key = (cmd.client, cmd.request);
                self.reproposals.remove(&key);
                for w in self.waiters.take(&key) {
                    let _ = w.reply.send(Ok((ex.id, outcome.clone())));
                    self.metrics.commit_replied(w.queued_at.elapsed());
                }
            }
            self.metrics.executed(ex.batch.len() as u64);
            self.applied_ids.insert(ex.id);
            self.push_log(LogEntry {
                index: 0,
                instance: ex.id,
                commands,
            });
        }
        let mut again = Vec::new();
        for ab in out.aborted {
            for cmd in ab.batch.iter() {
                let key = (cmd.client, cmd.request);
                let n = self.reproposals.entry(key).or_insert(0);
                *n += 1;
                if *n > MAX_ABORT_REPROPOSALS {
                    self.reproposals.remove(&key);
                    for w in self.waiters.take(&key) {
                        self.metrics.rejected(Rejection::Aborted);
                        let _ = w.reply.send(Err(ProposeError::Aborted));
                    }
                } else {
                    // Sessions make a second execution impossible, so
                    // proposing the same command again is safe.
                    again.push(cmd.clone());
                }
            }
        }
        if !again.is_empty() {
            let mut o = Output::default();
            for cmd in again {
                o.extend(self.replica.propose(cmd));
            }
            o.extend(self.replica.flush());
            if let Err(e) = self.handle(o) {
                tracing::error!("re-proposing aborted commands: {e}");
            }
        }
    }

    fn push_log(&mut self, mut e: LogEntry) {
        e.index = self.log_base + self.log.len() as u64;
        self.log.push_back(e);
        if self.log.len() > LOG_RETAIN {
            if let Some(old) = self.log.pop_front() {
                self.history_base.insert(old.instance);
            }
            self.log_base += 1;
        }
    }

    fn answer(&mut self, q: Query) {
        match q {
            Query::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Query::Log { from, limit, reply } => {
                let start = from.saturating_sub(self.log_base) as usize;
                let entries: Vec<LogEntry> =
                    self.log.iter().skip(start).take(limit).cloned().collect();
                let next = entries
                    .last()
                    .map_or(from.max(self.log_base), |e| e.index + 1);
                let _ = reply.send(LogResponse {
                    node: self.me,
                    boot_id: self.boot_id,
                    entries,
                    next,
                    head: self.log_base + self.log.len() as u64,
                    base: self.history_base.encode(),
                });
            }
            Query::Read { key, reply } => {
                let now = Instant::now();
                let _ =
                    reply.send(ReadResponse {
                        version: self.app.version(&key),
                        value: self.app.value(&key).cloned(),
                        key,
                        consistency: "local".into(),
                        staleness: Some(Staleness {
                            executed_instances: self.applied_ids.len() as u64,
                            pending_execution: self.replica.pending_execution() as u64,
                            behind_peers: self.replica.executed_behind_peers(),
                            oldest_unexecuted_ms: self.committed_at.values().min().map_or(0, |t| {
                                now.saturating_duration_since(*t).as_millis() as u64
                            }),
                        }),
                    });
            }
            Query::Ready(reply) => {
                let _ = reply.send(self.ready());
            }
            Query::JoinSnapshot { join_epoch, reply } => {
                let _ = reply.send(self.join_snapshot(join_epoch));
            }
        }
    }

    /// The state a member added in `join_epoch` starts from (epaxos.md
    /// §8.4), if this replica has executed the whole of the epoch before
    /// it: the configurations and closed sets (not this replica's seal
    /// reports, which were its own knowledge), the committed records of
    /// `join_epoch` onwards (committed is final: copying one is learning a
    /// commit, not casting a vote; uncommitted records are votes and stay
    /// here), every id processed here, and the state machine.
    fn join_snapshot(&self, join_epoch: u64) -> Result<Vec<u8>, String> {
        let prev = join_epoch
            .checked_sub(1)
            .ok_or("epoch 0 has no joining members")?;
        if self.replica.config().epoch < join_epoch {
            return Err(format!(
                "node {} has not learned epoch {join_epoch} yet",
                self.me
            ));
        }
        if !self.replica.epoch_complete(prev) {
            return Err(format!(
                "node {} has not executed all of epoch {prev} yet",
                self.me
            ));
        }
        let mut epochs = self.replica.epoch_state().clone();
        for seal in epochs.seals.values_mut() {
            seal.known.clear();
        }
        let mut processed: BTreeSet<CmdId> = self.applied_ids.clone();
        for (e, seal) in &self.replica.epoch_state().seals {
            if *e < join_epoch {
                if let Some(k) = &seal.closed {
                    processed.extend(k.iter().filter(|x| self.replica.is_processed(**x)));
                }
            }
        }
        let snap = crate::membership::JoinSnapshot {
            cluster_id: self.cfg.cluster_id,
            donor: self.me,
            join_epoch,
            epochs,
            records: self
                .replica
                .instances()
                .filter(|(id, r)| id.epoch >= join_epoch && r.phase == Phase::Committed)
                .map(|(id, r)| (*id, r.clone()))
                .collect(),
            processed: processed.into_iter().collect(),
            app: self.app.snapshot(),
        };
        postcard::to_allocvec(&snap).map_err(|e| format!("encoding the snapshot: {e}"))
    }

    /// Copies the loop's state into the metrics, at most every
    /// [`crate::metrics::REFRESH_INTERVAL`] (called on ticks).
    fn refresh_metrics(&mut self) {
        let now = Instant::now();
        if now < self.metrics_due {
            return;
        }
        self.metrics_due = now + crate::metrics::REFRESH_INTERVAL;
        self.drain_recovering();
        let s = self.replica.stats();
        self.metrics.refresh(&LoopState {
            fast_commits: s.fast_commits,
            slow_paths: s.slow_paths,
            recoveries: s.recoveries,
            nops: s.nops,
            pending_execution: self.replica.pending_execution() as u64,
            oldest_unexecuted: self
                .committed_at
                .values()
                .min()
                .map(|t| now.saturating_duration_since(*t)),
            deps_listed: s.deps_listed,
            submitted: s.submitted,
            in_flight: self.replica.in_flight() as u64,
            waiting_proposals: self.waiters.len as u64,
            wal_unsynced_records: self.queue.unsynced(),
        });
    }

    /// Forgets the recovered instances the executor has processed since.
    fn drain_recovering(&mut self) {
        if !self.recovering.is_empty() {
            let replica = &self.replica;
            self.recovering.retain(|id| !replica.is_processed(*id));
            if self.recovering.is_empty() {
                tracing::info!("every committed instance recovered from disk is executed");
            }
        }
    }

    /// The answer of `/readyz`, checked in this order:
    ///
    /// 1. every committed instance recovered from disk that the first flush
    ///    could not execute (a dependency not yet committed here) has been
    ///    processed since; checked until it holds once, then never again;
    /// 2. this replica heard within [`PEER_SILENCE_READY`] from enough
    ///    replicas (itself included) to form a slow quorum;
    /// 3. the WAL is not behind (`MAX_UNSYNCED_RECORDS`);
    /// 4. fewer than `limits.max_waiting_proposals` proposals wait.
    fn ready(&mut self) -> Result<(), String> {
        self.drain_recovering();
        if let Some(first) = self.recovering.first() {
            return Err(format!(
                "re-executing after a restart: {} committed instances recovered from disk wait for their dependencies (first: {first})",
                self.recovering.len()
            ));
        }
        let now = Instant::now();
        let reachable = 1 + self
            .last_heard
            .values()
            .filter(|t| now.duration_since(**t) < PEER_SILENCE_READY)
            .count();
        let quorum = self.replica.config().slow_quorum();
        if reachable < quorum {
            return Err(format!(
                "hears from {reachable} of {} replicas (itself included); needs {quorum}",
                self.replica.config().n()
            ));
        }
        if self.backlogged() {
            return Err("the WAL is behind (overloaded)".into());
        }
        let waiting = self.waiters.len;
        if waiting >= self.cfg.limits.max_waiting_proposals {
            return Err("too many proposals waiting (overloaded)".into());
        }
        Ok(())
    }

    fn status(&self) -> StatusResponse {
        let s = self.replica.stats();
        let w = self.wal.stats();
        StatusResponse {
            wal_fsyncs: w.fsyncs_total,
            wal_records: w.records_total,
            wal_fsync_micros: w.fsync_time_ns_total / 1000,
            node: self.me,
            members: self.replica.config().members().to_vec(),
            epoch: self.replica.config().epoch,
            boot_id: self.boot_id,
            applied: self.applied,
            state_digest: self.app.digest(),
            pending_execution: self.replica.pending_execution() as u64,
            in_flight: self.replica.in_flight() as u64,
            waiting_proposals: self.waiters.len as u64,
            wal_last_lsn: self.queue.last_appended(),
            wal_durable_lsn: self.queue.durable_lsn(),
            fast_commits: s.fast_commits,
            slow_commits: s.slow_paths,
            recoveries: s.recoveries,
            fast_path_ratio: (s.fast_commits + s.slow_paths > 0)
                .then(|| s.fast_commits as f64 / (s.fast_commits + s.slow_paths) as f64),
            executed_instances: self.applied_ids.len() as u64,
            peers: {
                let t = self.transport.stats();
                let now = Instant::now();
                self.replica
                    .config()
                    .members()
                    .iter()
                    .filter(|&&m| m != self.me)
                    .map(|&m| synod_client::wire::PeerStatus {
                        node: m,
                        connected: t.peers.get(&m).is_some_and(|p| p.connected),
                        last_heard_ms: self
                            .last_heard
                            .get(&m)
                            .map(|h| now.duration_since(*h).as_millis() as u64),
                    })
                    .collect()
            },
        }
    }

    /// Starts a snapshot on a blocking thread when enough WAL records have
    /// accumulated since the last one.
    fn maybe_snapshot(&mut self, done: &mpsc::UnboundedSender<Result<(), String>>) {
        let every = self.cfg.storage.snapshot_every_records;
        if every == 0 || self.snapshot_running || self.records_since_snapshot < every {
            return;
        }
        // Taken between two core steps: the core's records are exactly the
        // WAL's up to `last_appended`, and `app` is exactly `applied_ids`.
        let lsn = self.queue.last_appended();
        let snap = Snapshot {
            node: self.me,
            cluster_id: self.cfg.cluster_id,
            next_seq: self.next_seq,
            records: self
                .replica
                .instances()
                .map(|(id, r)| (*id, r.clone()))
                .collect(),
            processed: self.applied_ids.iter().copied().collect(),
            app: self.app.snapshot(),
            epochs: self.replica.epoch_state().clone(),
        };
        self.snapshot_running = true;
        self.records_since_snapshot = 0;
        let wal = self.wal.clone();
        let done = done.clone();
        tokio::task::spawn_blocking(move || {
            let r = postcard::to_allocvec(&snap)
                .map_err(|e| e.to_string())
                .and_then(|bytes| wal.write_snapshot(lsn, &bytes).map_err(|e| e.to_string()));
            if r.is_ok() {
                tracing::info!(lsn, "snapshot written");
            }
            let _ = done.send(r);
        });
    }

    /// Graceful stop: refuse new proposals, make everything appended durable,
    /// release it, then tell the remaining waiters to retry elsewhere.
    async fn stop(mut self, mut proposals: mpsc::Receiver<Proposal>) -> Result<(), RuntimeError> {
        proposals.close();
        while let Ok(p) = proposals.try_recv() {
            self.metrics.rejected(Rejection::ShuttingDown);
            let _ = p.reply.send(Err(ProposeError::ShuttingDown));
        }
        let out = self.replica.flush();
        self.handle(out)?;
        let wal = self.wal.clone();
        let last = self.queue.last_appended();
        let synced = tokio::task::spawn_blocking(move || wal.wait_durable(last))
            .await
            .map_err(|e| RuntimeError(format!("WAL sync task: {e}")))?;
        synced.map_err(|e| RuntimeError(format!("WAL sync at shutdown: {e}")))?;
        self.on_durable(last);
        for w in self.waiters.drain() {
            self.metrics.rejected(Rejection::ShuttingDown);
            let _ = w.reply.send(Err(ProposeError::ShuttingDown));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicated_settings_override_the_config_and_are_clamped() {
        let base = Options::default();
        let same = with_settings(base.clone(), &synod_control::Settings::default());
        assert_eq!(same.batch_size_max, base.batch_size_max);
        assert_eq!(same.thrifty, base.thrifty);
        let s = synod_control::Settings {
            thrifty: Some(!base.thrifty),
            batch_size_max: Some(1_000_000),
            fast_timeout_ticks: Some(0),
            commit_timeout_ticks: Some(77),
        };
        let o = with_settings(base.clone(), &s);
        assert_eq!(o.thrifty, !base.thrifty);
        assert_eq!(o.batch_size_max, 4096, "clamped to the config's limit");
        assert_eq!(o.fast_timeout_ticks, 1, "at least one tick");
        assert_eq!(o.commit_timeout_ticks, 77);
    }
}
