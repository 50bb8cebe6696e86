//! The EPaxos\* replica.

use crate::messages::{Envelope, Message};
use serde::{Deserialize, Serialize};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use synod_executor::Executor;
use synod_types::{
    Access, Ballot, Batch, CmdId, Command, Deps, Floor, Key, NodeId, Payload, Phase, QuorumConfig,
    SplitMix64,
};

/// An id reordered as `(epoch, origin, seq)`, so the ids of one origin form
/// a contiguous range and the part above a [`Floor`] is one range query.
type OriginKey = (u64, NodeId, u64);

fn okey(id: CmdId) -> OriginKey {
    (id.epoch, id.origin, id.seq)
}

fn from_okey((epoch, origin, seq): OriginKey) -> CmdId {
    CmdId { epoch, seq, origin }
}

/// The entries of `m` that `floor` does not cover, in `(epoch, origin,
/// seq)` order: one range query per `(epoch, origin)` present, so the cost
/// is the number of origins plus what is returned, not the history below
/// the floor.
fn above_floor<'a, V>(
    m: &'a BTreeMap<OriginKey, V>,
    floor: &'a Floor,
) -> impl Iterator<Item = (CmdId, &'a V)> + 'a {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let mut next: std::ops::Bound<OriginKey> = Unbounded;
    let mut current: Option<std::collections::btree_map::Range<'a, OriginKey, V>> = None;
    std::iter::from_fn(move || loop {
        if let Some(r) = current.as_mut() {
            if let Some((k, v)) = r.next() {
                return Some((from_okey(*k), v));
            }
        }
        let (&(e, o, _), _) = m.range((next, Unbounded)).next()?;
        let start = (e, o, floor.get(e, o));
        let end = (e, o, u64::MAX);
        current = Some(m.range((Included(start), Included(end))));
        next = Excluded(end);
    })
}

/// Per-instance durable state (epaxos.md §2.1). Exactly what a `Write`
/// persists and what a restart reads back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Highest ballot joined (the promise).
    pub bal: Ballot,
    /// Ballot of the last vote (Accept or Commit). `abal ≤ bal`.
    pub abal: Ballot,
    /// Phase; never decreases.
    pub phase: Phase,
    /// Current payload; `None` is ⊥.
    pub cmd: Option<Payload>,
    /// Current dependency set.
    pub dep: Deps,
    /// Payload as proposed by the origin (never Nop); `None` is ⊥.
    pub init_cmd: Option<Batch>,
    /// D0 as received in PreAccept or Validate.
    pub init_dep: Deps,
}

impl InstanceRecord {
    /// The state of an id this process has just heard of.
    pub fn new(id: CmdId) -> Self {
        InstanceRecord {
            bal: Ballot::initial(id),
            abal: Ballot::initial(id),
            phase: Phase::Initial,
            cmd: None,
            dep: Deps::new(),
            init_cmd: None,
            init_dep: Deps::new(),
        }
    }
}

/// A write that must be durable before anything else in the same [`Output`]
/// (or any later one) is released.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    /// The full record of one instance, replacing any earlier one.
    Instance {
        /// instance
        id: CmdId,
        /// its new durable state
        record: Box<InstanceRecord>,
    },
    /// The id high-water mark of the current epoch: no id with `seq <
    /// next_seq` from this origin will ever be issued again in it
    /// (epaxos.md §2.2, I21). An `Epoch` write resets it to 0 (ids carry
    /// their epoch, so `(E+1, 0, o)` is a new id).
    NextSeq(u64),
    /// The replica learned configuration `epoch` and made it current
    /// (epaxos.md §8; [`Replica::begin_epoch`]). Apply with
    /// [`EpochState::apply`]; `next_seq` starts again at 0.
    Epoch(QuorumConfig),
    /// Epoch `epoch` is sealed here: no more PreAccepts for its ids, and no
    /// non-Nop Accept or Validate for its ids outside `known` (K_s) until
    /// the closed set is published (epaxos.md §8.2 steps 1–3).
    Sealed {
        /// the sealed epoch E
        epoch: u64,
        /// K_s: the E-ids known here at the seal
        #[serde(with = "synod_types::idset")]
        known: BTreeSet<CmdId>,
    },
    /// The closed set K of `epoch` was published (epaxos.md §8.2 step 5).
    Closed {
        /// the epoch
        epoch: u64,
        /// K
        #[serde(with = "synod_types::idset")]
        k: BTreeSet<CmdId>,
    },
}

/// Seal status of one epoch at one replica (epaxos.md §2.2, §8.2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealRecord {
    /// K_s: the ids of the epoch this replica knew when it sealed.
    #[serde(with = "synod_types::idset")]
    pub known: BTreeSet<CmdId>,
    /// K, once published.
    #[serde(with = "synod_types::idset::option")]
    pub closed: Option<BTreeSet<CmdId>>,
}

/// The durable epoch state of a replica: every configuration it has
/// learned and the seal status of each sealed epoch. Rebuilt on restart
/// by folding the `Epoch`, `Sealed` and `Closed` writes with
/// [`EpochState::apply`], starting from [`EpochState::new`] with the
/// initial configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochState {
    /// Epoch → configuration; the last one is current.
    pub configs: BTreeMap<u64, QuorumConfig>,
    /// Epoch → seal status.
    pub seals: BTreeMap<u64, SealRecord>,
}

impl EpochState {
    /// The state of a replica that knows only `initial`.
    pub fn new(initial: QuorumConfig) -> Self {
        let mut configs = BTreeMap::new();
        configs.insert(initial.epoch, initial);
        EpochState {
            configs,
            seals: BTreeMap::new(),
        }
    }

    /// The current (newest) configuration.
    pub fn current(&self) -> &QuorumConfig {
        self.configs.values().next_back().expect("one config")
    }

    /// Folds one durable write in (other writes are ignored).
    pub fn apply(&mut self, w: &Write) {
        match w {
            Write::Epoch(c) => {
                self.configs.insert(c.epoch, c.clone());
            }
            Write::Sealed { epoch, known } => {
                self.seals.entry(*epoch).or_default().known = known.clone();
            }
            Write::Closed { epoch, k } => {
                self.seals.entry(*epoch).or_default().closed = Some(k.clone());
            }
            Write::Instance { .. } | Write::NextSeq(_) => {}
        }
    }
}

/// What a member of a sealed epoch tells the config service (epaxos.md
/// §8.2 step 4): `SealReport(E, s, K_s)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealReport {
    /// E
    pub epoch: u64,
    /// s
    pub from: NodeId,
    /// K_s
    pub known: BTreeSet<CmdId>,
}

/// One committed, non-Nop instance ready to be applied, in execution order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    /// instance
    pub id: CmdId,
    /// the batch to apply, in order
    pub batch: Batch,
}

/// An own instance that was committed as Nop: its commands were not executed
/// and their clients should retry (epaxos.md §3.9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aborted {
    /// instance
    pub id: CmdId,
    /// the commands that were aborted
    pub batch: Batch,
}

/// The result of one step. See the crate docs for the order in which its
/// parts must be handled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Durable first.
    pub writes: Vec<Write>,
    /// Then sent.
    pub messages: Vec<Envelope>,
    /// Then applied, in this order.
    pub executions: Vec<Execution>,
    /// Own instances committed as Nop; answer their clients "aborted, retry".
    pub aborted: Vec<Aborted>,
    /// Non-Nop instances committed here in this step (for the runtime's
    /// commit → execution latency; informational, nothing depends on it).
    pub committed: Vec<CmdId>,
    /// Seal reports for the config service (after the writes are durable).
    pub seal_reports: Vec<SealReport>,
    /// Epochs whose closure (K and everything it depends on) became fully
    /// executed here in this step (epaxos.md §8.3 "complete", local view).
    pub completed_epochs: Vec<u64>,
}

impl Output {
    /// True if the output carries nothing.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
            && self.messages.is_empty()
            && self.executions.is_empty()
            && self.aborted.is_empty()
            && self.committed.is_empty()
            && self.seal_reports.is_empty()
            && self.completed_epochs.is_empty()
    }

    /// Appends `other` after `self`.
    pub fn extend(&mut self, other: Output) {
        self.writes.extend(other.writes);
        self.messages.extend(other.messages);
        self.executions.extend(other.executions);
        self.aborted.extend(other.aborted);
        self.committed.extend(other.committed);
        self.seal_reports.extend(other.seal_reports);
        self.completed_epochs.extend(other.completed_epochs);
    }
}

/// Deliberately broken variants, for showing that the simulator's checkers
/// can fail (quality-bars.md R2). Never set outside tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// (a) One ballot variable: `RecoverOk` reports the promise `bal` held
    /// before the Recover where it should report `abal` (Sutra's bug;
    /// epaxos.md §7 S1 mutation).
    SingleBallot,
    /// (b) The fast quorum is one smaller than `n − e`.
    FastQuorumTooSmall,
    /// (c) A coordinator's dependency floor is its own executed prefix
    /// instead of the prefix every member has executed: an id a lagging
    /// replica has not executed (or not even heard of) can then be left out
    /// of a dependency set, and that replica may run the two in the other
    /// order.
    FloorFromOwnExecution,
    /// (d) No epoch barrier: an instance of epoch E+1 executes as soon as
    /// its own dependencies are executed, before the closure of epoch E
    /// (epaxos.md §8.4). Dependency sets of E+1 do not list E-ids (the
    /// barrier orders them), so conflicting commands of E and E+1 can run
    /// in different orders on different replicas.
    NoEpochBarrier,
}

/// Tunables of a replica. Time is in ticks (one [`Replica::tick`] each).
#[derive(Clone, Debug)]
pub struct Options {
    /// Send PreAccept to a fast quorum only, and Accept to a slow quorum
    /// only, widening on timeout (epaxos.md §3.8).
    pub thrifty: bool,
    /// Reproduce the paper's Commit guard `bal = b` (drop otherwise) instead
    /// of §3.7.1's "apply Commit at any ballot".
    pub strict_paper_mode: bool,
    /// Most client commands in one instance. Bounds message size and the work
    /// one Nop throws away.
    pub batch_size_max: usize,
    /// Most bytes of client commands (bodies and keys) in one instance; a
    /// command that would cross it starts a new batch. Keeps one instance
    /// record and one PreAccept well below the WAL record and transport
    /// frame limits whatever the clients send (a single command larger
    /// than this still goes, alone).
    pub batch_bytes_max: usize,
    /// T_fast: how long the origin waits for a full fast quorum before it
    /// takes the slow path with the replies it has (≥ n−f).
    pub fast_timeout_ticks: u64,
    /// How long before an unanswered PreAccept/Accept/Recover/Validate is sent
    /// again (and thrifty sets widen).
    pub retransmit_ticks: u64,
    /// T_commit: a non-own instance seen but not committed for this long is
    /// recovered (epaxos.md §4.1 trigger 2). A Learn probe goes first.
    pub commit_timeout_ticks: u64,
    /// T_exec: a dependency that blocks execution for this long is learned,
    /// then recovered (epaxos.md §4.1 trigger 1).
    pub exec_timeout_ticks: u64,
    /// Upper bound of the randomized exponential backoff between recovery
    /// attempts of one id (epaxos.md §4.1.5).
    pub recovery_backoff_max_ticks: u64,
    /// How long one recovery attempt may run before a new attempt at a
    /// higher ballot may replace it. Validate waits for every member of Q, so
    /// an attempt whose Q lost a member can only finish by being replaced.
    pub recovery_attempt_ticks: u64,
    /// Start recoveries automatically from timers. Scenario tests turn this
    /// off and call [`Replica::recover`] themselves.
    pub auto_recovery: bool,
    /// How often a replica tells its peers which commits it holds and what
    /// it has executed (`Message::Heartbeat`), so a replica that missed a
    /// Commit learns it, and dependency floors advance (0: never; then
    /// dependency sets list every conflicting id ever seen).
    pub heartbeat_ticks: u64,
    /// Most missing ids one heartbeat makes a replica chase; bounds the work
    /// a single message can cause.
    pub heartbeat_chase_max: u64,
    /// Route commands on *contended* keys to the key's owner replica
    /// (`owner(k) = members[fnv(k) % n]`), which submits them. Conflicting
    /// commands from different origins that run concurrently force the slow
    /// path (the replies cannot all equal the origin's D0); commands from one
    /// origin do not. A key becomes contended here when an own instance on it
    /// took the slow path because of another origin's command, or when a new
    /// instance finds another origin's uncommitted command on it. Safety does
    /// not depend on who submits; only the fast-path ratio does.
    pub forward_contended: bool,
    /// How long a key stays contended after the last sign of contention.
    pub contention_ticks: u64,
    /// A forwarded command not executed here within this many ticks is
    /// submitted locally, and the owner is not used for `contention_ticks`.
    /// Keeps a crashed owner from stalling anyone; sessions make the possible
    /// double submission harmless.
    pub forward_timeout_ticks: u64,
    /// Most forwarded commands awaiting execution; past it, commands are
    /// submitted locally. Bounds the memory a slow owner can cost.
    pub forwarded_max: usize,
    /// Seed of the backoff jitter.
    pub seed: u64,
    /// Test-only broken variant; `None` in every real deployment.
    pub mutation: Option<Mutation>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            thrifty: false,
            strict_paper_mode: false,
            batch_size_max: 64,
            batch_bytes_max: 1 << 20,
            fast_timeout_ticks: 4,
            retransmit_ticks: 8,
            commit_timeout_ticks: 20,
            exec_timeout_ticks: 10,
            recovery_backoff_max_ticks: 64,
            recovery_attempt_ticks: 48,
            auto_recovery: true,
            heartbeat_ticks: 10,
            heartbeat_chase_max: 256,
            forward_contended: true,
            contention_ticks: 200,
            forward_timeout_ticks: 40,
            forwarded_max: 4096,
            seed: 0,
            mutation: None,
        }
    }
}

/// Counters a replica keeps about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Own instances submitted.
    pub submitted: u64,
    /// Explicit ids in the initial dependency sets of own instances (those
    /// the stable floor does not cover), summed: divided by `submitted`,
    /// the typical size of a PreAccept's dependency list.
    pub deps_listed: u64,
    /// Most explicit ids in one own initial dependency set.
    pub deps_listed_max: u64,
    /// Own instances committed on the fast path.
    pub fast_commits: u64,
    /// Own instances that took the slow path at the initial ballot.
    pub slow_paths: u64,
    /// Recovery attempts started (each ballot counts).
    pub recoveries: u64,
    /// Instances this replica committed as Nop through recovery.
    pub nops: u64,
    /// Messages dropped because a guard failed (stale or duplicate).
    pub dropped: u64,
}

/// Approximate encoded size of a command, for `Options::batch_bytes_max`.
fn command_bytes(cmd: &Command) -> usize {
    cmd.body.len() + cmd.keys.iter().map(|(k, _)| k.len() + 2).sum::<usize>() + 16
}

/// A hash map with a fixed hasher: `std`'s default `RandomState` seeds itself
/// from OS randomness, which a pure core must not use. None of these maps'
/// iteration orders reaches an output either (epaxos.md §5.3).
type DetHashMap<K, V> = HashMap<K, V, BuildHasherDefault<DefaultHasher>>;

/// Volatile coordinator state of an own instance at the initial ballot
/// (epaxos.md §2.3). Lost on restart; losing it costs liveness only.
#[derive(Debug)]
struct Coord {
    /// PreAcceptOk replies, own `D0` included.
    replies: BTreeMap<NodeId, Deps>,
    /// Peers PreAccept was sent to (all, or the thrifty set until it widens).
    asked: BTreeSet<NodeId>,
    /// Tick at which the instance was submitted (for T_fast).
    started: u64,
    /// Last (re)transmission tick.
    last_send: u64,
}

/// A phase-2 proposal this replica owns at `ballot` (the origin's slow path
/// at the initial ballot, or a recoverer's PROPOSE).
#[derive(Debug)]
struct Proposal {
    ballot: Ballot,
    payload: Payload,
    dep: Deps,
    oks: BTreeSet<NodeId>,
    last_send: u64,
}

/// One RecoverOk reply.
#[derive(Clone, Debug)]
struct RecoverReply {
    abal: Ballot,
    cmd: Option<Payload>,
    dep: Deps,
    init_dep: Deps,
    phase: Phase,
}

#[derive(Debug)]
enum Stage {
    /// R2: collecting RecoverOk.
    Collect,
    /// R4: waiting for ValidateOk from every member of Q.
    Validating {
        oks: BTreeMap<NodeId, Vec<(CmdId, Phase)>>,
    },
    /// W: waiting for the conflicts in `i` to resolve.
    Waiting { i: BTreeMap<CmdId, BTreeSet<Phase>> },
    /// Proposing or done; the `Proposal` map carries phase 2.
    Finished,
}

/// Volatile recoverer state for one id (epaxos.md §2.3).
#[derive(Debug)]
struct Recovery {
    ballot: Ballot,
    stage: Stage,
    /// Replies in arrival order until Q is fixed.
    replies: BTreeMap<NodeId, RecoverReply>,
    /// Q, fixed at R2.
    q: BTreeSet<NodeId>,
    /// RecoverOk replies from outside Q that arrived after Q was fixed (W4).
    late: BTreeMap<NodeId, RecoverReply>,
    /// `(c, D)` and `k = |R_max|` from R3.5.
    c: Option<Batch>,
    d: Deps,
    k: usize,
    last_send: u64,
    /// Tick the attempt started; after `recovery_attempt_ticks` it may be
    /// superseded by a new attempt at a higher ballot (e.g. when a member of
    /// Q died during Validate, which needs every member of Q).
    started: u64,
}

/// Timer state for an id that is not committed locally (epaxos.md §4.1).
#[derive(Debug)]
struct Watch {
    /// Next tick at which to act (learn probe or recovery attempt).
    next_action: u64,
    /// A Learn probe was sent since the last recovery attempt.
    learn_sent: bool,
    /// Recovery attempts started so far (drives the backoff).
    attempts: u32,
    /// Highest ballot seen for the id through Nacks (so the next attempt
    /// outranks it).
    seen: Option<Ballot>,
}

/// Whether an id of a sealed epoch may take a non-Nop vote here
/// (epaxos.md §8.2 steps 3 and 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    /// Not sealed, or in K_s before K is published, or in K.
    Open,
    /// Sealed, K not yet published, and not in K_s: refuse non-Nop votes.
    Refuse,
    /// K is published and the id is not in it: only Nop can be chosen.
    Excluded,
}

/// One EPaxos\* replica. See the crate docs.
pub struct Replica {
    me: NodeId,
    /// The current (newest) configuration; equal to `epochs.current()`.
    /// `me` may not be a member (a replica removed in it still serves the
    /// epochs it was a member of until they are complete).
    config: QuorumConfig,
    /// Every configuration learned and the seal status (durable).
    epochs: EpochState,
    /// Per closed epoch not yet complete here: the ids of K not yet
    /// processed by the executor. Complete when empty: an executed id has
    /// every id reachable from it executed, so K processed means its whole
    /// dependency closure is (epaxos.md §8.3).
    remaining: BTreeMap<u64, BTreeSet<CmdId>>,
    /// Committed ids of a later epoch held back by the epoch barrier
    /// (epaxos.md §8.4): they reach the executor once every earlier epoch is
    /// complete here.
    held: BTreeSet<CmdId>,
    opts: Options,
    rng: SplitMix64,
    /// Logical time in ticks.
    now: u64,
    /// Next sequence number for own ids; persisted as `Write::NextSeq`.
    next_seq: u64,
    /// Durable per-instance state (mirrors what was written).
    insts: BTreeMap<CmdId, InstanceRecord>,
    /// key → ids whose batch is known here and touches the key, with the
    /// strongest access. Committed Nops are removed (they conflict with
    /// nothing that matters: Visibility only constrains non-Nop pairs).
    ///
    /// Never pruned: Validate must see every conflicting id (§4.2). Normal
    /// dependency sets read only the part above the stable floor.
    key_index: DetHashMap<Key, BTreeMap<OriginKey, Access>>,
    /// Ids whose current `cmd` is Nop, committed or not: Nop conflicts with
    /// every payload (epaxos.md §1.3), so every new dependency set includes
    /// them. Leaving committed Nops out is unsafe: a replica that holds the
    /// same id only as an accepted Nop still reports it as a Validate
    /// witness through its `init_cmd`, and recovery would then Nop a command
    /// that was fast-committed (scenario S03c).
    nops: BTreeMap<OriginKey, ()>,
    executor: Executor,
    /// Per origin, the length of the prefix of its current-epoch ids that is
    /// processed by the executor here (what `Heartbeat` advertises as
    /// executed).
    executed_prefix: BTreeMap<NodeId, u64>,
    /// The highest executed prefix each peer has reported, per origin.
    peer_executed: BTreeMap<NodeId, BTreeMap<NodeId, u64>>,
    /// Commands waiting for the next batch.
    batch: Vec<Command>,
    /// `command_bytes` of `batch`.
    batch_bytes: usize,
    coords: BTreeMap<CmdId, Coord>,
    proposals: BTreeMap<CmdId, Proposal>,
    recoveries: BTreeMap<CmdId, Recovery>,
    /// Largest `k` received in `Waiting(x, k)` per x (a hint; volatile).
    waiting_hint: DetHashMap<CmdId, usize>,
    watches: BTreeMap<CmdId, Watch>,
    stats: Stats,
    /// Output being built by the current step.
    out: Output,
    /// Ids whose record changed in the current step.
    dirty: BTreeSet<CmdId>,
    /// Set when a Waiting-stage recovery may have become decidable.
    recheck_waiting: bool,
    /// Per origin, the length of the prefix of its current-epoch ids that is
    /// committed here (what `Heartbeat` advertises).
    committed_prefix: BTreeMap<NodeId, u64>,
    /// Contended key → tick until which it stays contended.
    contended: DetHashMap<Key, u64>,
    /// Commands forwarded to an owner and not yet executed here, with the
    /// tick after which they are submitted locally instead.
    forwarded: BTreeMap<(u64, u64), (Command, NodeId, u64)>,
    /// Owners that let a forwarded command time out, until this tick.
    suspect: BTreeMap<NodeId, u64>,
}

impl Replica {
    /// A fresh replica `me` of `config`. `me` must be a member.
    pub fn new(me: NodeId, config: QuorumConfig, options: Options) -> Self {
        assert!(
            config.contains(me),
            "replica {me} is not a member of {config:?}"
        );
        Replica::blank(me, EpochState::new(config), options)
    }

    fn blank(me: NodeId, epochs: EpochState, options: Options) -> Self {
        let config = epochs.current().clone();
        assert!(
            epochs.configs.values().any(|c| c.contains(me)),
            "replica {me} is not a member of any epoch of {epochs:?}"
        );
        assert!(
            options.batch_size_max > 0 && options.batch_bytes_max > 0,
            "batch_size_max and batch_bytes_max must be positive"
        );
        Replica {
            me,
            rng: SplitMix64::new(options.seed ^ (u64::from(me) << 48)),
            config,
            epochs,
            remaining: BTreeMap::new(),
            held: BTreeSet::new(),
            opts: options,
            now: 0,
            next_seq: 0,
            insts: BTreeMap::new(),
            key_index: DetHashMap::default(),
            nops: BTreeMap::new(),
            executor: Executor::new(),
            executed_prefix: BTreeMap::new(),
            peer_executed: BTreeMap::new(),
            batch: Vec::new(),
            batch_bytes: 0,
            coords: BTreeMap::new(),
            proposals: BTreeMap::new(),
            recoveries: BTreeMap::new(),
            waiting_hint: DetHashMap::default(),
            watches: BTreeMap::new(),
            stats: Stats::default(),
            out: Output::default(),
            dirty: BTreeSet::new(),
            recheck_waiting: false,
            committed_prefix: BTreeMap::new(),
            contended: DetHashMap::default(),
            forwarded: BTreeMap::new(),
            suspect: BTreeMap::new(),
        }
    }

    /// Rebuilds a replica after a crash from its durable state: the last
    /// durable record of every instance, the last durable `NextSeq`, and the
    /// ids already processed by the executor (executed, or skipped Nops) as
    /// persisted atomically with the application state.
    ///
    /// Committed instances that were not yet processed are executed again
    /// from here; their `Execution`s come out of the next call's `Output`.
    pub fn restart(
        me: NodeId,
        config: QuorumConfig,
        options: Options,
        records: BTreeMap<CmdId, InstanceRecord>,
        next_seq: u64,
        processed: BTreeSet<CmdId>,
    ) -> Self {
        Replica::restart_in(
            me,
            EpochState::new(config),
            options,
            records,
            next_seq,
            processed,
        )
    }

    /// [`Replica::restart`] for a replica that has been through epoch
    /// changes: `epochs` is its durable [`EpochState`] (the initial
    /// configuration with every `Epoch`, `Sealed` and `Closed` write folded
    /// in), `next_seq` the durable high-water mark of the current epoch.
    ///
    /// Also how a member added in a new epoch starts (epaxos.md §8.4 "new
    /// members fetch E's committed log or a snapshot"): from a copy of a
    /// member's epoch state, its committed records of the completed epochs
    /// and its processed set, with `next_seq = 0`. Records of the new epoch
    /// must not be copied: they are the donor's votes, not the new member's.
    pub fn restart_in(
        me: NodeId,
        epochs: EpochState,
        options: Options,
        records: BTreeMap<CmdId, InstanceRecord>,
        next_seq: u64,
        processed: BTreeSet<CmdId>,
    ) -> Self {
        let mut r = Replica::blank(me, epochs, options);
        r.next_seq = next_seq;
        r.executor = Executor::restore(processed.iter().copied());
        for (&e, seal) in &r.epochs.seals {
            if let Some(k) = &seal.closed {
                let left: BTreeSet<CmdId> = k
                    .iter()
                    .copied()
                    .filter(|x| !processed.contains(x))
                    .collect();
                r.remaining.insert(e, left);
            }
        }
        let current = r.config.epoch;
        let mut committed = Vec::new();
        for (id, rec) in records {
            if id.origin == me && id.epoch == current {
                assert!(
                    id.seq < next_seq,
                    "durable record {id:?} at or above the durable next_seq {next_seq}"
                );
            }
            r.index_payload(id, None, &rec);
            if rec.phase == Phase::Committed {
                if !processed.contains(&id) {
                    committed.push(id);
                }
            } else {
                r.watch(id, r.opts.commit_timeout_ticks);
            }
            r.insts.insert(id, rec);
        }
        // Every record is indexed before the first commit reaches the
        // executor: expanding a floor needs to see all of them.
        r.advance_executed();
        for id in committed {
            r.hand_to_executor(id);
        }
        let chase: Vec<CmdId> = r
            .remaining
            .iter()
            .filter(|(e, _)| r.member_of(**e))
            .flat_map(|(_, k)| k.iter().copied())
            .filter(|x| r.insts.get(x).is_none_or(|x| x.phase != Phase::Committed))
            .collect();
        for x in chase {
            r.watch(x, r.opts.commit_timeout_ticks);
        }
        r.settle_epochs();
        for &o in r.config.members().to_vec().iter() {
            r.advance_prefix(o);
        }
        r.advance_executed();
        r
    }

    /// This replica's id.
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// The quorum configuration.
    pub fn config(&self) -> &QuorumConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The durable-state view of `id`, if this replica has heard of it.
    pub fn instance(&self, id: CmdId) -> Option<&InstanceRecord> {
        self.insts.get(&id)
    }

    /// Every instance this replica holds a record for, in `CmdId` order.
    pub fn instances(&self) -> Box<dyn Iterator<Item = (&CmdId, &InstanceRecord)> + '_> {
        Box::new(self.insts.iter())
    }

    /// True if the executor has processed `id` (executed or skipped Nop).
    pub fn is_processed(&self, id: CmdId) -> bool {
        self.executor.is_processed(id)
    }

    /// Committed ids not yet executed (epaxos.md §5.4.4 monitoring).
    pub fn pending_execution(&self) -> usize {
        self.executor.pending_len()
    }

    /// Number of commands queued for the next batch plus own instances not
    /// yet committed. Used for admission control.
    pub fn in_flight(&self) -> usize {
        self.batch.len() + self.coords.len() + self.forwarded.len()
    }

    /// Current logical time in ticks.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Queues a client command. It is submitted in the next batch: at once if
    /// the batch is full, else at the next [`Replica::tick`] or
    /// [`Replica::flush`].
    pub fn propose(&mut self, cmd: Command) -> Output {
        if let Some((owner, key)) = self.forward_target(&cmd) {
            // Contention is sticky while traffic lasts: forwarding hides the
            // signs of contention, and letting the mark lapse under load
            // would send the next burst down the slow path again.
            self.contended
                .insert(key, self.now + self.opts.contention_ticks);
            let deadline = self.now + self.opts.forward_timeout_ticks;
            self.forwarded
                .insert((cmd.client, cmd.request), (cmd.clone(), owner, deadline));
            self.send(owner, Message::Forward { cmds: vec![cmd] });
            return self.finish();
        }
        self.enqueue(cmd);
        self.finish()
    }

    /// Adds a command to the open batch, submitting the batch first if the
    /// command would push it over `batch_bytes_max`, and after if it is full.
    fn enqueue(&mut self, cmd: Command) {
        let size = command_bytes(&cmd);
        if !self.batch.is_empty() && self.batch_bytes + size > self.opts.batch_bytes_max {
            self.submit_batch();
        }
        self.batch_bytes += size;
        self.batch.push(cmd);
        if self.batch.len() >= self.opts.batch_size_max
            || self.batch_bytes >= self.opts.batch_bytes_max
        {
            self.submit_batch();
        }
    }

    /// Submits the queued commands, if any, as one instance now.
    pub fn flush(&mut self) -> Output {
        self.submit_batch();
        self.finish()
    }

    /// Handles one message from `from`.
    pub fn step(&mut self, from: NodeId, msg: Message) -> Output {
        if from == self.me || !self.epochs.configs.values().any(|c| c.contains(from)) {
            // Self-delivery is synchronous (§1.5); strangers are ignored.
            self.stats.dropped += 1;
            return self.finish();
        }
        if let Some(id) = msg.id() {
            // An instance is decided by the members of its own epoch only
            // (epaxos.md §8.1); an id of an epoch not learned yet looks like
            // a lost message (it is retransmitted).
            let ok = self
                .epochs
                .configs
                .get(&id.epoch)
                .is_some_and(|c| c.contains(from) && c.contains(self.me));
            if !ok {
                self.stats.dropped += 1;
                return self.finish();
            }
        }
        match msg {
            Message::PreAccept { id, cmd, dep } => self.on_pre_accept(from, id, cmd, dep),
            Message::PreAcceptOk { id, dep } => self.on_pre_accept_ok(from, id, dep),
            Message::Accept {
                ballot,
                id,
                payload,
                dep,
            } => self.on_accept(from, ballot, id, payload, dep),
            Message::AcceptOk { ballot, id } => self.on_accept_ok(from, ballot, id),
            Message::Commit {
                ballot,
                id,
                payload,
                dep,
            } => self.on_commit(ballot, id, payload, dep),
            Message::Recover { ballot, id } => self.on_recover(from, ballot, id),
            Message::RecoverOk {
                ballot,
                id,
                abal,
                cmd,
                dep,
                init_dep,
                phase,
            } => self.on_recover_ok(
                from,
                ballot,
                id,
                RecoverReply {
                    abal,
                    cmd,
                    dep,
                    init_dep,
                    phase,
                },
            ),
            Message::Validate {
                ballot,
                id,
                cmd,
                dep,
            } => self.on_validate(from, ballot, id, cmd, dep),
            Message::ValidateOk {
                ballot,
                id,
                conflicts,
            } => self.on_validate_ok(from, ballot, id, conflicts),
            Message::Waiting { id, k } => self.on_waiting(id, k),
            Message::Learn { id } => self.on_learn(from, id),
            Message::Nack { id, bal } => self.on_nack(id, bal),
            Message::Excluded { ballot, id } => self.on_excluded(id, ballot),
            Message::Heartbeat {
                epoch,
                committed_prefix,
                executed_prefix,
            } => self.on_heartbeat(from, epoch, committed_prefix, executed_prefix),
            Message::Forward { cmds } => {
                for cmd in cmds {
                    self.enqueue(cmd);
                }
            }
        }
        self.finish()
    }

    /// Advances logical time by one tick: flushes the batch, fires
    /// retransmissions, fast-path timeouts and recovery triggers.
    pub fn tick(&mut self) -> Output {
        self.now += 1;
        self.expire_forwarded();
        self.submit_batch();
        self.tick_coordinators();
        self.tick_proposals();
        self.tick_recoveries();
        self.tick_watches();
        if self.opts.heartbeat_ticks > 0
            && self.now.is_multiple_of(self.opts.heartbeat_ticks)
            && self.config.contains(self.me)
        {
            let committed_prefix = self
                .committed_prefix
                .iter()
                .map(|(o, n)| (*o, *n))
                .collect();
            let executed_prefix = self.executed_prefix.iter().map(|(o, n)| (*o, *n)).collect();
            self.send_all(&Message::Heartbeat {
                epoch: self.config.epoch,
                committed_prefix,
                executed_prefix,
            });
        }
        self.finish()
    }

    /// Starts (or restarts at a higher ballot) recovery of `id` now,
    /// bypassing the timers. Used by scenario tests and operators.
    pub fn recover(&mut self, id: CmdId) -> Output {
        self.start_recovery(id);
        self.finish()
    }

    // ----------------------------------------------------------------------
    // Reconfiguration (epaxos.md §8)

    /// The config service announces configuration `next` (epoch E+1, its
    /// members, f and e). A member of the current epoch E seals it: it
    /// persists `Sealed(E, K_s)` (K_s: every E-id it holds a record of or
    /// sees in a dependency set it holds), from now on ignores PreAccepts
    /// for E-ids and refuses non-Nop Accepts and Validates for E-ids
    /// outside K_s until [`Replica::close_epoch`], and reports
    /// `SealReport(E, K_s)` in [`Output::seal_reports`]. Then `next`
    /// becomes current (`Write::Epoch`): new batches get E+1 ids and E+1
    /// quorums, ids restart at seq 0. E-instances are still decided by
    /// E's members with E's quorums; a member removed in E+1 keeps serving
    /// them (and forwards client commands to E+1 members).
    ///
    /// Idempotent: an epoch at or below the current one is ignored, so the
    /// caller may deliver it again (e.g. until the `Epoch` write is
    /// durable). Epochs must be learned in order.
    ///
    /// # Panics
    /// If `next.epoch` skips an epoch.
    pub fn begin_epoch(&mut self, next: QuorumConfig) -> Output {
        let cur = self.config.epoch;
        if next.epoch <= cur {
            return self.finish();
        }
        assert_eq!(
            next.epoch,
            cur + 1,
            "replica {} at epoch {cur} cannot skip to {next:?}",
            self.me
        );
        if self.config.contains(self.me) && !self.epochs.seals.contains_key(&cur) {
            // §8.2 step 1: K_s, the E-ids known here.
            let mut known = BTreeSet::new();
            for (id, r) in &self.insts {
                if id.epoch == cur {
                    known.insert(*id);
                }
                for d in [&r.dep, &r.init_dep] {
                    known.extend(d.explicit().iter().copied().filter(|x| x.epoch == cur));
                }
            }
            let w = Write::Sealed {
                epoch: cur,
                known: known.clone(),
            };
            self.epochs.apply(&w);
            self.out.writes.push(w);
            self.out.seal_reports.push(SealReport {
                epoch: cur,
                from: self.me,
                known,
            });
        }
        let w = Write::Epoch(next.clone());
        self.epochs.apply(&w);
        self.out.writes.push(w);
        self.config = next;
        self.next_seq = 0;
        // Heartbeat prefixes are per current epoch (epaxos.md §2.5 floors are
        // per (epoch, origin)): start the new epoch's from scratch.
        self.committed_prefix.clear();
        self.executed_prefix.clear();
        self.peer_executed.clear();
        self.finish()
    }

    /// The config service publishes the closed set K of sealed epoch
    /// `epoch` (epaxos.md §8.2 step 5). Persists `Closed(E, K)`; from now on
    /// Recover, Validate and non-Nop Accept for an E-id outside K are
    /// answered with `Excluded`, and every such id known here is decided
    /// Nop locally (see `decide_excluded`).
    /// Every id of K not committed here is chased (Learn, then recovery)
    /// until the closure of K is executed; then the epoch is reported in
    /// [`Output::completed_epochs`] and the epoch barrier lifts.
    ///
    /// Ignored unless `epoch` is sealed here (or this replica is not a
    /// member of it) and not yet closed; the caller delivers
    /// [`Replica::begin_epoch`] first and may retry.
    pub fn close_epoch(&mut self, epoch: u64, k: BTreeSet<CmdId>) -> Output {
        let ready = epoch < self.config.epoch
            && self
                .epochs
                .seals
                .get(&epoch)
                .is_none_or(|s| s.closed.is_none())
            && (self.epochs.seals.contains_key(&epoch)
                || !self
                    .epochs
                    .configs
                    .get(&epoch)
                    .is_some_and(|c| c.contains(self.me)));
        if !ready {
            return self.finish();
        }
        let w = Write::Closed {
            epoch,
            k: k.clone(),
        };
        self.epochs.apply(&w);
        self.out.writes.push(w);
        let left: BTreeSet<CmdId> = k
            .into_iter()
            .filter(|x| !self.executor.is_processed(*x))
            .collect();
        if self.member_of(epoch) {
            for &x in &left {
                if self
                    .insts
                    .get(&x)
                    .is_none_or(|r| r.phase != Phase::Committed)
                {
                    self.watch(x, 0);
                }
            }
        }
        if left.is_empty() {
            self.out.completed_epochs.push(epoch);
        }
        self.remaining.insert(epoch, left);
        if self.member_of(epoch) {
            let outside: Vec<CmdId> = self
                .insts
                .range(
                    CmdId {
                        epoch,
                        seq: 0,
                        origin: 0,
                    }..CmdId {
                        epoch: epoch + 1,
                        seq: 0,
                        origin: 0,
                    },
                )
                .filter(|(x, r)| r.phase != Phase::Committed && self.gate(**x) == Gate::Excluded)
                .map(|(x, _)| *x)
                .collect();
            for x in outside {
                self.decide_excluded(x);
            }
        }
        self.finish()
    }

    /// The durable epoch state (configurations and seals).
    pub fn epoch_state(&self) -> &EpochState {
        &self.epochs
    }

    /// The seal report of `epoch`, if sealed here (for a config service
    /// that lost it).
    pub fn seal_report(&self, epoch: u64) -> Option<SealReport> {
        self.epochs.seals.get(&epoch).map(|s| SealReport {
            epoch,
            from: self.me,
            known: s.known.clone(),
        })
    }

    /// True once `epoch` is closed and its closure is executed here (or it
    /// is the current epoch's predecessor chain's end: epochs this replica
    /// was never a member of and holds no seal for count as complete).
    pub fn epoch_complete(&self, epoch: u64) -> bool {
        match self.epochs.seals.get(&epoch) {
            Some(s) => {
                s.closed.is_some() && self.remaining.get(&epoch).is_none_or(|r| r.is_empty())
            }
            None => epoch < self.config.epoch && !self.member_of(epoch),
        }
    }

    fn member_of(&self, epoch: u64) -> bool {
        self.epochs
            .configs
            .get(&epoch)
            .is_some_and(|c| c.contains(self.me))
    }

    /// The configuration of `epoch` (known: messages of unknown epochs are
    /// dropped in `step`).
    fn cfg(&self, epoch: u64) -> &QuorumConfig {
        self.epochs.configs.get(&epoch).unwrap_or(&self.config)
    }

    /// Ids of epochs above this one wait for the barrier.
    fn barrier(&self) -> u64 {
        if self.opts.mutation == Some(Mutation::NoEpochBarrier) {
            return u64::MAX;
        }
        self.epochs
            .configs
            .keys()
            .copied()
            .filter(|&e| e < self.config.epoch)
            .find(|&e| !self.epoch_complete(e))
            .unwrap_or(u64::MAX)
    }

    /// §8.2 steps 3 and 5 for a peer's non-Nop vote request (Accept,
    /// Validate) on an uncommitted `id`: `true` if the seal refuses it
    /// (counted as dropped), after answering `Excluded` to `from` when `id`
    /// is outside K and `tell`.
    fn seal_refuses_vote(&mut self, id: CmdId, from: NodeId, b: Ballot, tell: bool) -> bool {
        match self.gate(id) {
            Gate::Open => false,
            Gate::Refuse => {
                self.stats.dropped += 1;
                true
            }
            Gate::Excluded => {
                if tell {
                    self.send(from, Message::Excluded { ballot: b, id });
                }
                self.stats.dropped += 1;
                true
            }
        }
    }

    fn gate(&self, id: CmdId) -> Gate {
        match self.epochs.seals.get(&id.epoch) {
            None => Gate::Open,
            Some(s) => match &s.closed {
                Some(k) if k.contains(&id) => Gate::Open,
                Some(_) => Gate::Excluded,
                None if s.known.contains(&id) => Gate::Open,
                None => Gate::Refuse,
            },
        }
    }

    /// Hands committed `id` to the executor, or holds it behind the epoch
    /// barrier.
    fn hand_to_executor(&mut self, id: CmdId) {
        if id.epoch > self.barrier() {
            self.held.insert(id);
            return;
        }
        let rec = &self.insts[&id];
        let nop = matches!(rec.cmd, Some(Payload::Nop));
        let edges = self.exec_edges(id, rec);
        let ready = self.executor.commit(id, &edges, nop);
        self.emit_executions(ready);
    }

    /// Drops processed ids from `remaining`, reports epochs that became
    /// complete and releases what the barrier held.
    fn settle_epochs(&mut self) {
        loop {
            let mut done = Vec::new();
            for (&e, left) in self.remaining.iter_mut() {
                if left.is_empty() {
                    continue;
                }
                let ex = &self.executor;
                left.retain(|x| !ex.is_processed(*x));
                if left.is_empty() {
                    done.push(e);
                }
            }
            self.out.completed_epochs.extend(done.iter().copied());
            if self.held.is_empty() {
                return;
            }
            let barrier = self.barrier();
            let free: Vec<CmdId> = self
                .held
                .iter()
                .copied()
                .filter(|x| x.epoch <= barrier)
                .collect();
            if free.is_empty() {
                return;
            }
            for x in free {
                self.held.remove(&x);
                self.hand_to_executor(x);
            }
            self.advance_executed();
        }
    }

    /// A recovery or proposal of `id` at `ballot` met an id outside K
    /// (epaxos.md §8.2 step 6). Once K is known here too, Nop is decided.
    /// Before that (K reaches members at different times) the message is
    /// ignored: this replica's watch retries, and decides once K arrives.
    fn on_excluded(&mut self, id: CmdId, _ballot: Ballot) {
        if self.gate(id) != Gate::Excluded {
            self.stats.dropped += 1;
            return;
        }
        self.decide_excluded(id);
    }

    /// `id` is outside the published K of its epoch, so Nop is the only
    /// value that was or can ever be chosen for it (the §8.2 argument: every
    /// non-Nop decision needs a quorum that meets S, and S members neither
    /// pre-accept after sealing nor take non-Nop votes outside their K_s).
    /// So the publication of K decides it, and each member commits the Nop
    /// locally, without a ballot round. This deviates from §8.2 step 6
    /// ("the recoverer proposes Nop") on purpose: after the epoch is
    /// complete, removed members are gone and E's quorums may no longer be
    /// reachable, but an E-member may still hold a record of such an id.
    fn decide_excluded(&mut self, id: CmdId) {
        if self
            .insts
            .get(&id)
            .is_some_and(|r| r.phase == Phase::Committed)
        {
            return;
        }
        self.commit_locally(id, Ballot::initial(id), Payload::Nop, Deps::new());
    }

    // ----------------------------------------------------------------------
    // Output plumbing

    fn finish(&mut self) -> Output {
        if !self.remaining.is_empty() {
            self.settle_epochs();
        }
        if self.recheck_waiting {
            self.recheck_waiting = false;
            let waiting: Vec<CmdId> = self
                .recoveries
                .iter()
                .filter(|(_, r)| matches!(r.stage, Stage::Waiting { .. }))
                .map(|(id, _)| *id)
                .collect();
            for id in waiting {
                self.evaluate_waiting(id);
            }
        }
        let dirty = std::mem::take(&mut self.dirty);
        let mut out = std::mem::take(&mut self.out);
        let mut writes = Vec::with_capacity(dirty.len() + out.writes.len());
        writes.append(&mut out.writes);
        for id in dirty {
            let record = self.insts[&id].clone();
            writes.push(Write::Instance {
                id,
                record: Box::new(record),
            });
        }
        out.writes = writes;
        out
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        debug_assert_ne!(to, self.me);
        self.out.messages.push(Envelope { to, msg });
    }

    fn send_each(&mut self, targets: impl IntoIterator<Item = NodeId>, msg: &Message) {
        for to in targets {
            self.send(to, msg.clone());
        }
    }

    /// Sends to every other member of the epoch of the message's id (of the
    /// current epoch for `Heartbeat`).
    fn send_all(&mut self, msg: &Message) {
        let epoch = msg.id().map_or(self.config.epoch, |id| id.epoch);
        let others = self.others(epoch);
        self.send_each(others, msg);
    }

    /// The other members of `epoch`.
    fn others(&self, epoch: u64) -> Vec<NodeId> {
        let me = self.me;
        self.cfg(epoch)
            .members()
            .iter()
            .copied()
            .filter(|&m| m != me)
            .collect()
    }

    /// The `count` other members closest to this one on the ring (the thrifty
    /// set, epaxos.md §3.8).
    fn closest(&self, epoch: u64, count: usize) -> Vec<NodeId> {
        let members = self.cfg(epoch).members();
        let pos = members.iter().position(|&m| m == self.me).expect("member");
        (1..members.len())
            .map(|i| members[(pos + i) % members.len()])
            .take(count)
            .collect()
    }

    fn rank_from(&self, epoch: u64, origin: NodeId) -> u64 {
        let members = self.cfg(epoch).members();
        let n = members.len();
        let o = members.iter().position(|&m| m == origin).unwrap_or(0);
        let p = members.iter().position(|&m| m == self.me).unwrap_or(0);
        ((p + n - o) % n) as u64
    }

    fn record_mut(&mut self, id: CmdId) -> &mut InstanceRecord {
        self.insts
            .entry(id)
            .or_insert_with(|| InstanceRecord::new(id))
    }

    // ----------------------------------------------------------------------
    // Conflict bookkeeping

    /// Keeps `key_index` and `nops` in step with a record whose payload
    /// fields may have changed from `before`.
    fn index_payload(&mut self, id: CmdId, before: Option<&InstanceRecord>, rec: &InstanceRecord) {
        fn batch_of(r: &InstanceRecord) -> Option<&Batch> {
            match (&r.cmd, &r.init_cmd) {
                (Some(Payload::Op(b)), _) => Some(b),
                (_, Some(b)) => Some(b),
                _ => None,
            }
        }
        // Indexed by key iff its batch is known and it is not a committed
        // Nop (a committed Nop is in `nops`, and is never a Validate witness).
        fn indexed(r: &InstanceRecord) -> bool {
            batch_of(r).is_some()
                && !(r.phase == Phase::Committed && matches!(r.cmd, Some(Payload::Nop)))
        }
        let was = before.is_some_and(indexed);
        let now = indexed(rec);
        if was != now {
            let batch = batch_of(rec).or(before.and_then(batch_of)).cloned();
            for c in batch.iter().flat_map(|b| b.iter()) {
                for (k, a) in &c.keys {
                    if now {
                        let slot = self
                            .key_index
                            .entry(k.clone())
                            .or_default()
                            .entry(okey(id))
                            .or_insert(*a);
                        if *a == Access::Write {
                            *slot = Access::Write;
                        }
                    } else if let Some(m) = self.key_index.get_mut(k) {
                        m.remove(&okey(id));
                        if m.is_empty() {
                            self.key_index.remove(k);
                        }
                    }
                }
            }
        }
        if matches!(rec.cmd, Some(Payload::Nop)) {
            self.nops.insert(okey(id), ());
        } else {
            self.nops.remove(&okey(id));
        }
    }

    /// Ids `x` in `key_index` above `floor` whose batch conflicts with
    /// `batch` (by key access), excluding `except`.
    fn conflicting_known(
        &self,
        batch: &[Command],
        except: CmdId,
        floor: &Floor,
    ) -> BTreeSet<CmdId> {
        let mut out = BTreeSet::new();
        for c in batch {
            for (k, a) in &c.keys {
                if let Some(m) = self.key_index.get(k) {
                    for (x, xa) in above_floor(m, floor) {
                        if x != except && (*a == Access::Write || *xa == Access::Write) {
                            out.insert(x);
                        }
                    }
                }
            }
        }
        out
    }

    /// `{ x ≠ id : cmd[x] ≠ ⊥ ∧ cmd[x] ⋈ c }` (epaxos.md §3.2 step 2, §3.3),
    /// as `floor` plus the ids above it: everything the floor covers is
    /// executed at every member (see [`Replica::stable_floor`]), so this is
    /// the same set, without walking the history below the floor.
    ///
    /// Only ids of `id`'s own epoch are listed: the epoch barrier (§8.4)
    /// already runs every executed id of an earlier epoch before any id of
    /// a later one on every replica, and an id of a later epoch is never
    /// known here while `id`'s epoch still pre-accepts (a replica seals
    /// before it learns the next epoch). So Visibility across epochs holds
    /// through the barrier, and dependency sets never cross an epoch.
    fn local_deps(&self, batch: &[Command], id: CmdId, floor: &Floor) -> Deps {
        let mut deps = Deps::with_floor(floor.clone());
        deps.extend(
            self.conflicting_known(batch, id, floor)
                .into_iter()
                .filter(|x| {
                    x.epoch == id.epoch && self.insts.get(x).is_some_and(|r| r.cmd.is_some())
                }),
        );
        deps.extend(
            above_floor(&self.nops, floor)
                .map(|(x, _)| x)
                .filter(|x| *x != id && x.epoch == id.epoch),
        );
        deps
    }

    /// The floor for a new dependency set: per origin, the prefix of its
    /// current-epoch ids that every member has reported executing (its own
    /// report for this replica). Each of those ids is committed and executed
    /// here, so this replica knows every one of them (§2.5 "lossless").
    fn stable_floor(&self) -> Floor {
        let epoch = self.config.epoch;
        let mut floor = Floor::new();
        let own_only = self.opts.mutation == Some(Mutation::FloorFromOwnExecution);
        for &o in self.config.members() {
            let mut n = self.executed_prefix.get(&o).copied().unwrap_or(0);
            if !own_only {
                for &m in self.config.members() {
                    if m != self.me {
                        let theirs = self
                            .peer_executed
                            .get(&m)
                            .and_then(|p| p.get(&o))
                            .copied()
                            .unwrap_or(0);
                        n = n.min(theirs);
                    }
                }
            }
            floor.raise(epoch, o, n);
        }
        floor
    }

    /// The executor's edges for committed `id`: the explicit dependencies,
    /// plus every conflicting id its floor covers that is not yet processed
    /// here. The latter is empty in steady state (a floor only covers what
    /// this replica reported executed) and non-empty while a restarted
    /// replica re-executes: those ids must still run first.
    fn exec_edges(&self, id: CmdId, rec: &InstanceRecord) -> BTreeSet<CmdId> {
        let mut edges = rec.dep.explicit().clone();
        let batch = match &rec.cmd {
            Some(Payload::Op(b)) => b,
            _ => return edges,
        };
        for ((epoch, origin), n) in rec.dep.floor().iter() {
            let done = if epoch == self.config.epoch {
                self.executed_prefix.get(&origin).copied().unwrap_or(0)
            } else {
                0
            };
            for seq in done..n {
                let x = CmdId { epoch, seq, origin };
                if x == id || self.executor.is_processed(x) {
                    continue;
                }
                let conflicts = self.insts.get(&x).is_some_and(|r| match &r.cmd {
                    Some(Payload::Nop) => true,
                    Some(Payload::Op(b)) => synod_types::batches_conflict(b, batch),
                    None => r
                        .init_cmd
                        .as_ref()
                        .is_some_and(|b| synod_types::batches_conflict(b, batch)),
                });
                if conflicts {
                    edges.insert(x);
                }
            }
        }
        edges
    }

    /// Current-epoch instances some peer reported executed (its last
    /// heartbeat) that are beyond this replica's executed prefix, summed
    /// over origins: how far this replica's state lags the most advanced
    /// peer, as far as it knows.
    pub fn executed_behind_peers(&self) -> u64 {
        let mut behind = 0;
        for &o in self.config.members() {
            let mine = self.executed_prefix.get(&o).copied().unwrap_or(0);
            let best = self
                .peer_executed
                .values()
                .filter_map(|p| p.get(&o).copied())
                .max()
                .unwrap_or(0);
            behind += best.saturating_sub(mine);
        }
        behind
    }

    /// Advances `executed_prefix` over ids the executor has processed.
    fn advance_executed(&mut self) {
        let epoch = self.config.epoch;
        for &origin in self.config.members() {
            let n = self.executed_prefix.entry(origin).or_insert(0);
            while self.executor.is_processed(CmdId {
                epoch,
                seq: *n,
                origin,
            }) {
                *n += 1;
            }
        }
    }

    /// Applies a change to `id`'s record through `f`, keeping indexes in
    /// step and marking it dirty.
    fn update(&mut self, id: CmdId, f: impl FnOnce(&mut InstanceRecord)) {
        let before = self.insts.get(&id).cloned();
        let rec = self.record_mut(id);
        f(rec);
        let rec = rec.clone();
        assert!(
            rec.abal <= rec.bal,
            "I10: abal {:?} > bal {:?} for {id:?}",
            rec.abal,
            rec.bal
        );
        if let Some(b) = &before {
            assert!(b.phase <= rec.phase, "I11: phase of {id:?} went back");
            assert!(
                b.bal <= rec.bal && b.abal <= rec.abal,
                "I10: ballot of {id:?} went back"
            );
        }
        self.index_payload(id, before.as_ref(), &rec);
        self.dirty.insert(id);
        if rec.phase != Phase::Committed && !self.watches.contains_key(&id) {
            self.watch(id, self.opts.commit_timeout_ticks);
        }
    }

    fn watch(&mut self, id: CmdId, delay: u64) {
        let stagger = self.rank_from(id.epoch, id.origin) * 2;
        let next_action = self.now + delay + stagger;
        self.watches.entry(id).or_insert(Watch {
            next_action,
            learn_sent: false,
            attempts: 0,
            seen: None,
        });
    }

    // ----------------------------------------------------------------------
    // Normal path (epaxos.md §3)

    /// SUBMIT (§3.2), for the queued batch.
    fn submit_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        if !self.config.contains(self.me) {
            // Removed in the current epoch: hand the commands to its members
            // (their owners); clients' retries cover a lost Forward.
            self.batch_bytes = 0;
            for cmd in std::mem::take(&mut self.batch) {
                let key = cmd.keys.first().map_or("", |(k, _)| &**k);
                let owner = self.owner_of(key);
                self.send(owner, Message::Forward { cmds: vec![cmd] });
            }
            return;
        }
        let batch: Batch = Arc::new(std::mem::take(&mut self.batch));
        self.batch_bytes = 0;
        let id = CmdId {
            epoch: self.config.epoch,
            seq: self.next_seq,
            origin: self.me,
        };
        self.next_seq += 1;
        self.out.writes.push(Write::NextSeq(self.next_seq));
        self.stats.submitted += 1;
        // Steps 2–3: D0 and the own PreAccept, in one atomic step (§1.5).
        let floor = self.stable_floor();
        let d0 = self.local_deps(&batch, id, &floor);
        let listed = d0.explicit().len() as u64;
        self.stats.deps_listed += listed;
        self.stats.deps_listed_max = self.stats.deps_listed_max.max(listed);
        assert!(!self.insts.contains_key(&id), "I21: id {id:?} reused");
        let concurrent: Vec<CmdId> = d0
            .explicit()
            .iter()
            .copied()
            .filter(|x| {
                x.origin != self.me
                    && self
                        .insts
                        .get(x)
                        .is_some_and(|r| r.phase != Phase::Committed)
            })
            .collect();
        self.mark_contended(&batch, &concurrent);
        self.update(id, |r| {
            r.phase = Phase::PreAccepted;
            r.cmd = Some(Payload::Op(batch.clone()));
            r.init_cmd = Some(batch.clone());
            r.init_dep = d0.clone();
            r.dep = d0.clone();
        });
        let targets = if self.opts.thrifty {
            self.closest(id.epoch, self.config.fast_quorum() - 1)
        } else {
            self.others(id.epoch)
        };
        let mut replies = BTreeMap::new();
        replies.insert(self.me, d0.clone());
        self.coords.insert(
            id,
            Coord {
                replies,
                asked: targets.iter().copied().collect(),
                started: self.now,
                last_send: self.now,
            },
        );
        let msg = Message::PreAccept {
            id,
            cmd: batch,
            dep: d0,
        };
        self.send_each(targets, &msg);
        // A fast quorum of one (never with n ≥ 3) would decide at once.
        self.try_decide_fast_or_slow(id, false);
    }

    /// PreAccept handler (§3.3).
    fn on_pre_accept(&mut self, from: NodeId, id: CmdId, cmd: Batch, dep: Deps) {
        if id.origin != from || self.epochs.seals.contains_key(&id.epoch) {
            // §8.2 step 2: a sealed epoch takes no more PreAccepts (as if
            // the message were lost).
            self.stats.dropped += 1;
            return;
        }
        if let Some(r) = self.insts.get(&id) {
            let (phase, initial) = (r.phase, r.bal.is_initial());
            if phase == Phase::PreAccepted && initial {
                // Idempotent re-reply: dep cannot change while PreAccepted.
                let dep = r.dep.clone();
                self.send(from, Message::PreAcceptOk { id, dep });
                return;
            }
            if !(initial && phase == Phase::Initial) {
                self.stats.dropped += 1;
                if phase == Phase::Committed {
                    // Help a slow origin finish (S11 "late PreAccept").
                    self.send_commit_to(from, id);
                }
                return;
            }
        }
        // The coordinator's floor, and what this replica knows above it.
        let mut d = self.local_deps(&cmd, id, dep.floor());
        d.union_with(&dep);
        d.remove(&id);
        // Another origin's command races one of ours on a shared key: that
        // key is contended (see `Options::forward_contended`).
        let racing: Vec<CmdId> = d
            .explicit()
            .iter()
            .copied()
            .filter(|x| x.origin == self.me && self.coords.contains_key(x))
            .collect();
        self.mark_contended(&cmd, &racing);
        self.update(id, |r| {
            r.cmd = Some(Payload::Op(cmd.clone()));
            r.init_cmd = Some(cmd);
            r.init_dep = dep;
            r.dep = d.clone();
            r.phase = Phase::PreAccepted;
        });
        self.send(from, Message::PreAcceptOk { id, dep: d });
    }

    /// Collecting PreAcceptOk (§3.4).
    fn on_pre_accept_ok(&mut self, from: NodeId, id: CmdId, dep: Deps) {
        let Some(coord) = self.coords.get_mut(&id) else {
            self.stats.dropped += 1;
            return;
        };
        coord.replies.entry(from).or_insert(dep);
        self.try_decide_fast_or_slow(id, false);
    }

    /// The exact fast-path rule of §3.4. `timed_out` is T_fast expiry.
    fn try_decide_fast_or_slow(&mut self, id: CmdId, timed_out: bool) {
        let Some(rec) = self.insts.get(&id) else {
            return;
        };
        if rec.phase != Phase::PreAccepted
            || !rec.bal.is_initial()
            || self.gate(id) == Gate::Excluded
        {
            // The instance is in someone else's hands (or decided), or
            // outside K: only a recovery's Nop can decide it now.
            self.coords.remove(&id);
            return;
        }
        let Some(coord) = self.coords.get(&id) else {
            return;
        };
        let d0 = &rec.init_dep;
        let matching = coord.replies.values().filter(|d| *d == d0).count();
        let received = coord.replies.len();
        let mismatched = received - matching;
        let cfg = self.cfg(id.epoch);
        let mut fast_quorum = cfg.fast_quorum();
        if self.opts.mutation == Some(Mutation::FastQuorumTooSmall) {
            fast_quorum -= 1;
        }
        let (e, slow_quorum) = (cfg.e(), cfg.slow_quorum());
        if matching >= fast_quorum {
            // FAST: commit locally in the same atomic step (§1.5).
            let batch = rec.init_cmd.clone().expect("origin knows its batch");
            let d0 = d0.clone();
            self.coords.remove(&id);
            self.stats.fast_commits += 1;
            let ballot = Ballot::initial(id);
            self.commit_locally(id, ballot, Payload::Op(batch.clone()), d0.clone());
            let msg = Message::Commit {
                ballot,
                id,
                payload: Payload::Op(batch),
                dep: d0,
            };
            self.send_all(&msg);
        } else if received >= slow_quorum
            && (mismatched > e || timed_out || received == coord.asked.len() + 1)
        {
            // SLOW: Accept(initial) with the union of the replies.
            let mut d: Deps = Deps::new();
            for dq in coord.replies.values() {
                d.union_with(dq);
            }
            d.remove(&id);
            let batch = rec.init_cmd.clone().expect("origin knows its batch");
            let extra: Vec<CmdId> = d
                .explicit()
                .difference(rec.init_dep.explicit())
                .copied()
                .collect();
            self.mark_contended(&batch, &extra);
            self.coords.remove(&id);
            self.stats.slow_paths += 1;
            self.propose_value(id, Ballot::initial(id), Payload::Op(batch), d);
        }
    }

    /// PROPOSE(v, D) at ballot `b` (§4.3) — also the origin's slow path.
    /// Applies the own Accept synchronously and sends Accept.
    fn propose_value(&mut self, id: CmdId, b: Ballot, payload: Payload, dep: Deps) {
        debug_assert!(!payload.is_nop() || dep.is_empty(), "I8: Nop with deps");
        let rec = &self.insts[&id];
        if rec.phase == Phase::Committed || rec.bal != b {
            return;
        }
        if !payload.is_nop() {
            match self.gate(id) {
                Gate::Open => {}
                // §8.2 step 3 applies to our own vote too; a later attempt
                // (after K) proposes Nop.
                Gate::Refuse => return,
                Gate::Excluded => return self.propose_value(id, b, Payload::Nop, Deps::new()),
            }
        }
        let (p2, d2) = (payload.clone(), dep.clone());
        self.update(id, |r| {
            r.abal = b;
            r.cmd = Some(p2);
            r.dep = d2;
            r.phase = Phase::Accepted;
        });
        let targets = if self.opts.thrifty {
            self.closest(id.epoch, self.cfg(id.epoch).slow_quorum() - 1)
        } else {
            self.others(id.epoch)
        };
        let msg = Message::Accept {
            ballot: b,
            id,
            payload: payload.clone(),
            dep: dep.clone(),
        };
        self.send_each(targets, &msg);
        let mut oks = BTreeSet::new();
        oks.insert(self.me);
        self.proposals.insert(
            id,
            Proposal {
                ballot: b,
                payload,
                dep,
                oks,
                last_send: self.now,
            },
        );
    }

    /// Accept handler (§3.5, with §3.7.2 for Committed instances).
    fn on_accept(&mut self, from: NodeId, b: Ballot, id: CmdId, payload: Payload, dep: Deps) {
        if b.node != from {
            self.stats.dropped += 1;
            return;
        }
        if !payload.is_nop()
            && self
                .insts
                .get(&id)
                .is_none_or(|r| r.phase != Phase::Committed)
            && self.seal_refuses_vote(id, from, b, true)
        {
            return;
        }
        if let Some(r) = self.insts.get(&id) {
            if r.bal > b {
                self.stats.dropped += 1;
                let bal = r.bal;
                self.send(from, Message::Nack { id, bal });
                return;
            }
            if r.phase == Phase::Committed {
                assert!(
                    r.cmd.as_ref() == Some(&payload) && r.dep == dep,
                    "I12: Accept {b:?} for committed {id:?} carries a different value"
                );
                // Answer with the commit so the proposer finishes at once.
                self.send_commit_to(from, id);
                return;
            }
        }
        self.update(id, |r| {
            r.bal = b;
            r.abal = b;
            r.cmd = Some(payload);
            r.dep = dep;
            r.phase = Phase::Accepted;
        });
        self.send(from, Message::AcceptOk { ballot: b, id });
    }

    /// AcceptOk at the owner of `b` (§3.5).
    fn on_accept_ok(&mut self, from: NodeId, b: Ballot, id: CmdId) {
        let Some(p) = self.proposals.get_mut(&id) else {
            self.stats.dropped += 1;
            return;
        };
        let rec = &self.insts[&id];
        if p.ballot != b || rec.bal != b || rec.phase != Phase::Accepted {
            self.stats.dropped += 1;
            return;
        }
        p.oks.insert(from);
        if p.oks.len() >= self.cfg(id.epoch).slow_quorum() {
            let p = self.proposals.remove(&id).expect("present");
            debug_assert_eq!(rec.cmd.as_ref(), Some(&p.payload));
            self.commit_locally(id, b, p.payload.clone(), p.dep.clone());
            let msg = Message::Commit {
                ballot: b,
                id,
                payload: p.payload,
                dep: p.dep,
            };
            self.send_all(&msg);
        }
    }

    /// Commit handler (§3.6, relaxed per §3.7.1 unless strict mode).
    fn on_commit(&mut self, b: Ballot, id: CmdId, payload: Payload, dep: Deps) {
        if let Some(r) = self.insts.get(&id) {
            if r.phase == Phase::Committed {
                assert!(
                    r.cmd.as_ref() == Some(&payload) && r.dep == dep,
                    "I12: Commit {b:?} for {id:?} differs from the committed value"
                );
                return;
            }
            if self.opts.strict_paper_mode && r.bal != b {
                self.stats.dropped += 1;
                return;
            }
        } else if self.opts.strict_paper_mode && b != Ballot::initial(id) {
            self.stats.dropped += 1;
            return;
        }
        // A proposer that learns the decision from a Commit (e.g. the §3.7.2
        // answer to its Accept) still owes "send Commit to all" (§4.3
        // PROPOSE): replicas that accepted its value wait for it.
        // It re-broadcasts under its own recovery ballot: only the origin
        // sends Commits at the initial ballot (I6).
        let ours = self
            .proposals
            .get(&id)
            .map(|p| p.ballot)
            .or(self.recoveries.get(&id).map(|r| r.ballot));
        self.commit_locally(id, b, payload.clone(), dep.clone());
        if let Some(ours) = ours {
            self.send_all(&Message::Commit {
                ballot: if ours.is_initial() { b } else { ours },
                id,
                payload,
                dep,
            });
        }
    }

    /// Marks `id` Committed with `(payload, dep)` and hands it to the
    /// executor. Ends every volatile activity for `id`.
    fn commit_locally(&mut self, id: CmdId, b: Ballot, payload: Payload, dep: Deps) {
        let nop = payload.is_nop();
        if let Some(r) = self.insts.get(&id) {
            if r.phase == Phase::Committed {
                assert!(
                    r.cmd.as_ref() == Some(&payload) && r.dep == dep,
                    "I12: {id:?} committed twice with different values"
                );
                return;
            }
        }
        let (p2, d2) = (payload.clone(), dep.clone());
        self.update(id, |r| {
            r.bal = r.bal.max(b);
            r.abal = r.abal.max(b);
            r.cmd = Some(p2);
            r.dep = d2;
            r.phase = Phase::Committed;
        });
        self.coords.remove(&id);
        self.proposals.remove(&id);
        if let Some(rec) = self.recoveries.remove(&id) {
            if nop && rec.ballot == b {
                self.stats.nops += 1;
            }
        }
        self.watches.remove(&id);
        self.recheck_waiting = true;
        if nop && id.origin == self.me {
            if let Some(batch) = self.insts[&id].init_cmd.clone() {
                self.out.aborted.push(Aborted { id, batch });
            }
        }
        if !nop {
            self.out.committed.push(id);
        }
        self.hand_to_executor(id);
        if id.epoch == self.config.epoch {
            self.advance_prefix(id.origin);
        }
        self.advance_executed();
    }

    fn advance_prefix(&mut self, origin: NodeId) {
        let epoch = self.config.epoch;
        let n = self.committed_prefix.entry(origin).or_insert(0);
        while self
            .insts
            .get(&CmdId {
                epoch,
                seq: *n,
                origin,
            })
            .is_some_and(|r| r.phase == Phase::Committed)
        {
            *n += 1;
        }
    }

    /// Anti-entropy: chase every id a peer has committed that is not
    /// committed here (at most `heartbeat_chase_max` per message).
    /// Also records what the peer has executed, which moves the stable
    /// floor of new dependency sets.
    fn on_heartbeat(
        &mut self,
        from: NodeId,
        epoch: u64,
        prefix: Vec<(NodeId, u64)>,
        executed: Vec<(NodeId, u64)>,
    ) {
        if epoch != self.config.epoch || !self.config.contains(from) {
            return;
        }
        let reported = self.peer_executed.entry(from).or_default();
        for (origin, n) in executed {
            if self.config.contains(origin) {
                let v = reported.entry(origin).or_insert(0);
                *v = (*v).max(n);
            }
        }
        let mut budget = self.opts.heartbeat_chase_max;
        for (origin, theirs) in prefix {
            if !self.config.contains(origin) {
                continue;
            }
            let mine = self.committed_prefix.get(&origin).copied().unwrap_or(0);
            for seq in mine..theirs {
                if budget == 0 {
                    return;
                }
                let id = CmdId { epoch, seq, origin };
                if self
                    .insts
                    .get(&id)
                    .is_some_and(|r| r.phase == Phase::Committed)
                {
                    continue;
                }
                if !self.watches.contains_key(&id) {
                    budget -= 1;
                    self.watch(id, 0);
                }
            }
        }
    }

    fn emit_executions(&mut self, ready: Vec<CmdId>) {
        for x in ready {
            match &self.insts[&x].cmd {
                Some(Payload::Op(batch)) => {
                    if !self.forwarded.is_empty() {
                        for c in batch.iter() {
                            self.forwarded.remove(&(c.client, c.request));
                        }
                    }
                    self.out.executions.push(Execution {
                        id: x,
                        batch: batch.clone(),
                    })
                }
                other => panic!("executor returned {x:?} with payload {other:?}"),
            }
        }
    }

    // ----------------------------------------------------------------------
    // Contention routing (`Options::forward_contended`)

    /// The owner replica of `key`: a fixed hash every replica agrees on.
    fn owner_of(&self, key: &str) -> NodeId {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let members = self.config.members();
        members[(h % members.len() as u64) as usize]
    }

    /// Where `cmd` should be submitted, if not here.
    fn forward_target(&self, cmd: &Command) -> Option<(NodeId, Key)> {
        if !self.opts.forward_contended || self.forwarded.len() >= self.opts.forwarded_max {
            return None;
        }
        let key = cmd
            .keys
            .iter()
            .find(|(k, _)| self.contended.get(k).is_some_and(|&t| t >= self.now))?;
        let owner = self.owner_of(&key.0);
        let suspect = self.suspect.get(&owner).is_some_and(|&t| t >= self.now);
        (owner != self.me && !suspect).then(|| (owner, key.0.clone()))
    }

    /// Marks the keys `batch` shares with the batches of `others` contended.
    fn mark_contended(&mut self, batch: &[Command], others: &[CmdId]) {
        if !self.opts.forward_contended || others.is_empty() {
            return;
        }
        let until = self.now + self.opts.contention_ticks;
        for x in others {
            let Some(other) = self.insts.get(x).and_then(|r| r.init_cmd.clone()) else {
                continue;
            };
            for c in batch {
                for (k, _) in &c.keys {
                    if other.iter().any(|o| o.keys.iter().any(|(ok, _)| ok == k)) {
                        self.contended.insert(k.clone(), until);
                    }
                }
            }
        }
    }

    /// Submits locally every forwarded command whose owner did not get it
    /// executed in time, and stops using that owner for a while.
    fn expire_forwarded(&mut self) {
        let now = self.now;
        let late: Vec<(u64, u64)> = self
            .forwarded
            .iter()
            .filter(|(_, (_, _, deadline))| *deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in late {
            let (cmd, owner, _) = self.forwarded.remove(&k).expect("present");
            self.suspect.insert(owner, now + self.opts.contention_ticks);
            self.batch.push(cmd);
        }
        self.contended.retain(|_, until| *until >= now);
        self.suspect.retain(|_, until| *until >= now);
    }

    fn send_commit_to(&mut self, to: NodeId, id: CmdId) {
        let r = &self.insts[&id];
        debug_assert_eq!(r.phase, Phase::Committed);
        let msg = Message::Commit {
            ballot: r.abal,
            id,
            payload: r.cmd.clone().expect("committed payload"),
            dep: r.dep.clone(),
        };
        self.send(to, msg);
    }

    fn on_learn(&mut self, from: NodeId, id: CmdId) {
        if self
            .insts
            .get(&id)
            .is_some_and(|r| r.phase == Phase::Committed)
        {
            self.send_commit_to(from, id);
        }
    }

    fn on_nack(&mut self, id: CmdId, bal: Ballot) {
        if let Some(w) = self.watches.get_mut(&id) {
            w.seen = w.seen.max(Some(bal));
        }
        if self.recoveries.get(&id).is_some_and(|r| r.ballot < bal) {
            // §4.1.6: a higher ballot is active; stay passive for now.
            self.abandon_recovery(id);
        }
        if self.proposals.get(&id).is_some_and(|p| p.ballot < bal) {
            self.proposals.remove(&id);
        }
    }

    // ----------------------------------------------------------------------
    // Recovery, acceptor side (§4.2)

    fn on_recover(&mut self, from: NodeId, b: Ballot, id: CmdId) {
        if b.node != from || b.is_initial() {
            self.stats.dropped += 1;
            return;
        }
        let rec = self.insts.get(&id);
        let bal = rec.map_or(Ballot::initial(id), |r| r.bal);
        if bal > b {
            self.stats.dropped += 1;
            self.send(from, Message::Nack { id, bal });
            return;
        }
        if bal == b {
            // A retransmitted Recover(b): re-reply while nothing was
            // accepted at b (the promise is unchanged).
            let r = rec.expect("bal == b implies a record");
            if r.abal >= b {
                self.stats.dropped += 1;
                return;
            }
        } else {
            self.update(id, |r| r.bal = b);
        }
        let r = &self.insts[&id];
        if r.phase != Phase::Committed && self.gate(id) == Gate::Excluded {
            // §8.2 step 5: promised b, and only Nop can be chosen.
            if self.recoveries.get(&id).is_some_and(|rc| rc.ballot < b) {
                self.abandon_recovery(id);
            }
            self.send(from, Message::Excluded { ballot: b, id });
            return;
        }
        // Mutation (a): a single ballot variable reports the promise held
        // before this Recover where the vote ballot belongs (Sutra's bug).
        let abal = if self.opts.mutation == Some(Mutation::SingleBallot) {
            bal
        } else {
            r.abal
        };
        let msg = Message::RecoverOk {
            ballot: b,
            id,
            abal,
            cmd: r.cmd.clone(),
            dep: r.dep.clone(),
            init_dep: r.init_dep.clone(),
            phase: r.phase,
        };
        if self.recoveries.get(&id).is_some_and(|rc| rc.ballot < b) {
            self.abandon_recovery(id);
        }
        self.send(from, msg);
    }

    fn on_validate(&mut self, from: NodeId, b: Ballot, id: CmdId, c: Batch, d: Deps) {
        let Some(r) = self.insts.get(&id) else {
            self.stats.dropped += 1;
            return;
        };
        if r.phase != Phase::Committed {
            let tell = r.bal == b && b.node == from;
            if self.seal_refuses_vote(id, from, b, tell) {
                return;
            }
        }
        let r = &self.insts[&id];
        if r.bal != b || b.node != from {
            self.stats.dropped += 1;
            if r.bal > b {
                let bal = r.bal;
                self.send(from, Message::Nack { id, bal });
            }
            return;
        }
        if r.phase == Phase::Committed {
            self.send_commit_to(from, id);
            return;
        }
        if let Some(existing) = &r.init_cmd {
            assert!(
                *existing == c,
                "I9: Validate for {id:?} carries a different batch"
            );
        }
        let conflicts = self.apply_validate(id, c, d);
        self.send(
            from,
            Message::ValidateOk {
                ballot: b,
                id,
                conflicts,
            },
        );
    }

    /// The effect of Validate(b, id, c, D) at this replica (§4.2), for a
    /// peer's message and for the recoverer's own copy alike: computes `I_q`,
    /// then records `(c, D)` as `cmd`, `init_cmd` and `init_dep`; `phase`,
    /// `dep`, `bal` and `abal` are not changed (I11).
    fn apply_validate(&mut self, id: CmdId, c: Batch, d: Deps) -> Vec<(CmdId, Phase)> {
        let conflicts = self.validate_conflicts(id, &c, &d);
        self.update(id, |r| {
            if r.cmd.is_none() || matches!(r.cmd, Some(Payload::Op(_))) {
                // cmd is ⊥ or already this batch; an Accepted Nop cannot be
                // here (nothing in Q accepted at this point, §4.3).
                r.cmd = Some(Payload::Op(c.clone()));
            }
            r.init_cmd = Some(c);
            r.init_dep = d;
        });
        conflicts
    }

    /// `I_q` of §4.2: conflicting ids that could witness that `(c, D)` was
    /// not fast-committed.
    fn validate_conflicts(&self, id: CmdId, c: &[Command], d: &Deps) -> Vec<(CmdId, Phase)> {
        let mut out = Vec::new();
        // Ids under `d`'s floor are in `d`: skipping them skips nothing.
        for x in self.conflicting_known(c, id, d.floor()) {
            // Other epochs are ordered by the barrier, not by deps (see
            // `local_deps`): they witness nothing about a fast commit.
            if d.contains(&x) || x.epoch != id.epoch {
                continue;
            }
            let r = &self.insts[&x];
            let witness = if r.phase == Phase::Committed {
                matches!(r.cmd, Some(Payload::Op(_))) && !r.dep.contains(&id)
            } else {
                r.init_cmd.is_some() && !r.init_dep.contains(&id)
            };
            if witness {
                out.push((x, r.phase));
            }
        }
        out
    }

    fn on_waiting(&mut self, id: CmdId, k: usize) {
        let hint = self.waiting_hint.entry(id).or_insert(0);
        if k > *hint {
            *hint = k;
            self.recheck_waiting = true;
        }
    }

    // ----------------------------------------------------------------------
    // Recovery, recoverer side (§4.3)

    /// R1.
    fn start_recovery(&mut self, id: CmdId) {
        if self.gate(id) == Gate::Excluded && self.member_of(id.epoch) {
            return self.decide_excluded(id);
        }
        let cur = self.insts.get(&id).map_or(Ballot::initial(id), |r| r.bal);
        if self
            .insts
            .get(&id)
            .is_some_and(|r| r.phase == Phase::Committed)
            || !self.member_of(id.epoch)
        {
            return;
        }
        let seen = self.watches.get(&id).and_then(|w| w.seen);
        let top = cur.max(seen.unwrap_or(cur));
        let b = Ballot {
            epoch: self.config.epoch.max(top.epoch),
            round: top.round + 1,
            node: self.me,
        };
        self.stats.recoveries += 1;
        self.proposals.remove(&id);
        self.coords.remove(&id);
        // Own copy of Recover, applied synchronously.
        self.update(id, |r| r.bal = b);
        let r = &self.insts[&id];
        let own = RecoverReply {
            abal: if self.opts.mutation == Some(Mutation::SingleBallot) {
                cur
            } else {
                r.abal
            },
            cmd: r.cmd.clone(),
            dep: r.dep.clone(),
            init_dep: r.init_dep.clone(),
            phase: r.phase,
        };
        let mut replies = BTreeMap::new();
        replies.insert(self.me, own);
        self.recoveries.insert(
            id,
            Recovery {
                ballot: b,
                stage: Stage::Collect,
                replies,
                q: BTreeSet::new(),
                late: BTreeMap::new(),
                c: None,
                d: Deps::new(),
                k: 0,
                last_send: self.now,
                started: self.now,
            },
        );
        self.send_all(&Message::Recover { ballot: b, id });
    }

    fn abandon_recovery(&mut self, id: CmdId) {
        self.recoveries.remove(&id);
        if let Some(p) = self.proposals.get(&id) {
            if !p.ballot.is_initial() {
                self.proposals.remove(&id);
            }
        }
    }

    fn active_recovery(&self, id: CmdId, b: Ballot) -> bool {
        self.recoveries.get(&id).is_some_and(|r| r.ballot == b)
            && self
                .insts
                .get(&id)
                .is_some_and(|r| r.bal == b && r.phase != Phase::Committed)
    }

    fn on_recover_ok(&mut self, from: NodeId, b: Ballot, id: CmdId, reply: RecoverReply) {
        if !self.active_recovery(id, b) {
            self.stats.dropped += 1;
            return;
        }
        let n_f = self.cfg(id.epoch).slow_quorum();
        let rc = self.recoveries.get_mut(&id).expect("active");
        match rc.stage {
            Stage::Collect => {
                rc.replies.entry(from).or_insert(reply);
                if rc.replies.len() >= n_f {
                    rc.q = rc.replies.keys().copied().collect();
                    self.classify(id);
                }
            }
            // Replies after Q was fixed are kept for W4 (§4.3 R2), whether
            // they arrive while validating or while waiting.
            Stage::Validating { .. } | Stage::Waiting { .. } if !rc.q.contains(&from) => {
                rc.late.entry(from).or_insert(reply);
                self.evaluate_waiting(id);
            }
            _ => {}
        }
    }

    /// R3.
    fn classify(&mut self, id: CmdId) {
        let rc = &self.recoveries[&id];
        let b = rc.ballot;
        let q = &rc.replies;
        let bmax = q.values().map(|r| r.abal).max().expect("non-empty Q");
        let u: Vec<&RecoverReply> = q.values().filter(|r| r.abal == bmax).collect();
        // R3.2
        if let Some(c) = u.iter().find(|r| r.phase == Phase::Committed) {
            let (p, d) = (c.cmd.clone().expect("committed payload"), c.dep.clone());
            self.finish_with_commit(id, b, p, d);
            return;
        }
        // R3.3
        if let Some(a) = u.iter().find(|r| r.phase == Phase::Accepted) {
            let (p, d) = (a.cmd.clone().expect("accepted payload"), a.dep.clone());
            self.propose_in_recovery(id, b, p, d);
            return;
        }
        debug_assert!(bmax.is_initial(), "nothing accepted in Q from R3.4 on");
        // R3.4
        if q.contains_key(&id.origin) {
            self.propose_in_recovery(id, b, Payload::Nop, Deps::new());
            return;
        }
        // R3.5
        let r_max: Vec<&RecoverReply> = q
            .values()
            .filter(|r| r.phase == Phase::PreAccepted && r.dep == r.init_dep)
            .collect();
        let k = r_max.len();
        if k >= q.len() - self.cfg(id.epoch).e() && k > 0 {
            let (c, d) = match &r_max[0].cmd {
                Some(Payload::Op(batch)) => (batch.clone(), r_max[0].dep.clone()),
                other => panic!("PreAccepted {id:?} with payload {other:?}"),
            };
            match self.gate(id) {
                Gate::Open => {}
                // Our own Validate counts as one of S's; retry after K.
                Gate::Refuse => return self.abandon_recovery(id),
                Gate::Excluded => {
                    return self.propose_in_recovery(id, b, Payload::Nop, Deps::new())
                }
            }
            // R4: Validate to Q, own copy synchronously.
            let members: Vec<NodeId> = q.keys().copied().filter(|&m| m != self.me).collect();
            let own = self.apply_validate(id, c.clone(), d.clone());
            let rc = self.recoveries.get_mut(&id).expect("active");
            rc.c = Some(c.clone());
            rc.d = d.clone();
            rc.k = k;
            let mut oks = BTreeMap::new();
            oks.insert(self.me, own);
            rc.stage = Stage::Validating { oks };
            rc.last_send = self.now;
            let msg = Message::Validate {
                ballot: b,
                id,
                cmd: c,
                dep: d,
            };
            self.send_each(members, &msg);
            self.after_validate_ok(id);
        } else {
            self.propose_in_recovery(id, b, Payload::Nop, Deps::new());
        }
    }

    fn on_validate_ok(
        &mut self,
        from: NodeId,
        b: Ballot,
        id: CmdId,
        conflicts: Vec<(CmdId, Phase)>,
    ) {
        if !self.active_recovery(id, b) {
            self.stats.dropped += 1;
            return;
        }
        let rc = self.recoveries.get_mut(&id).expect("active");
        if !rc.q.contains(&from) {
            return;
        }
        if let Stage::Validating { oks } = &mut rc.stage {
            oks.entry(from).or_insert(conflicts);
            self.after_validate_ok(id);
        }
    }

    /// R4 completion and R5.
    fn after_validate_ok(&mut self, id: CmdId) {
        let rc = &self.recoveries[&id];
        let Stage::Validating { oks } = &rc.stage else {
            return;
        };
        if oks.len() < rc.q.len() {
            return;
        }
        let b = rc.ballot;
        let mut i: BTreeMap<CmdId, BTreeSet<Phase>> = BTreeMap::new();
        for list in oks.values() {
            for (x, ph) in list {
                i.entry(*x).or_default().insert(*ph);
            }
        }
        let c = rc.c.clone().expect("validated batch");
        let d = rc.d.clone();
        // R5.1
        if i.is_empty() {
            self.propose_in_recovery(id, b, Payload::Op(c), d);
            return;
        }
        // R5.2
        if i.values().any(|ph| ph.contains(&Phase::Committed)) {
            self.propose_in_recovery(id, b, Payload::Nop, Deps::new());
            return;
        }
        // R5.3
        if rc.k == rc.q.len() - self.cfg(id.epoch).e()
            && i.keys().any(|x| !rc.q.contains(&x.origin))
        {
            self.propose_in_recovery(id, b, Payload::Nop, Deps::new());
            return;
        }
        // R5.4
        let k = rc.k;
        let xs: Vec<CmdId> = i.keys().copied().collect();
        let rc = self.recoveries.get_mut(&id).expect("active");
        rc.stage = Stage::Waiting { i };
        rc.last_send = self.now;
        self.on_waiting(id, k);
        self.send_all(&Message::Waiting { id, k });
        // Trigger 3 (§4.1): make sure every x we wait on is being chased.
        for x in xs {
            if self
                .insts
                .get(&x)
                .is_none_or(|r| r.phase != Phase::Committed)
            {
                self.watch(x, self.opts.exec_timeout_ticks);
            }
        }
        self.evaluate_waiting(id);
    }

    /// W: W1 > W2 > W4 > W3.
    fn evaluate_waiting(&mut self, id: CmdId) {
        let Some(rc) = self.recoveries.get(&id) else {
            return;
        };
        let Stage::Waiting { i } = &rc.stage else {
            return;
        };
        let b = rc.ballot;
        if !self.active_recovery(id, b) {
            return;
        }
        let committed = |x: &CmdId| self.insts.get(x).filter(|r| r.phase == Phase::Committed);
        // W1
        let w1 = i.keys().any(|x| {
            committed(x)
                .is_some_and(|r| matches!(r.cmd, Some(Payload::Op(_))) && !r.dep.contains(&id))
        });
        if w1 {
            self.propose_in_recovery(id, b, Payload::Nop, Deps::new());
            return;
        }
        // W2
        let w2 = i.keys().all(|x| {
            committed(x).is_some_and(|r| matches!(r.cmd, Some(Payload::Nop)) || r.dep.contains(&id))
        });
        if w2 {
            let c = rc.c.clone().expect("validated batch");
            let d = rc.d.clone();
            self.propose_in_recovery(id, b, Payload::Op(c), d);
            return;
        }
        // W4
        let late = rc
            .late
            .iter()
            .filter(|(q, r)| {
                r.phase == Phase::Committed || r.phase == Phase::Accepted || **q == id.origin
            })
            .max_by_key(|(_, r)| (r.phase == Phase::Committed, r.abal))
            .map(|(_, r)| r.clone());
        if let Some(r) = late {
            match r.phase {
                Phase::Committed => {
                    self.finish_with_commit(id, b, r.cmd.expect("payload"), r.dep);
                }
                Phase::Accepted => self.propose_in_recovery(id, b, r.cmd.expect("payload"), r.dep),
                _ => self.propose_in_recovery(id, b, Payload::Nop, Deps::new()),
            }
            return;
        }
        // W3
        let cfg = self.cfg(id.epoch);
        let limit = cfg.n() - cfg.f() - cfg.e();
        if i.keys()
            .any(|x| self.waiting_hint.get(x).is_some_and(|&k| k > limit))
        {
            self.propose_in_recovery(id, b, Payload::Nop, Deps::new());
        }
    }

    fn propose_in_recovery(&mut self, id: CmdId, b: Ballot, payload: Payload, dep: Deps) {
        if let Some(rc) = self.recoveries.get_mut(&id) {
            rc.stage = Stage::Finished;
        }
        self.propose_value(id, b, payload, dep);
    }

    fn finish_with_commit(&mut self, id: CmdId, b: Ballot, payload: Payload, dep: Deps) {
        if let Some(rc) = self.recoveries.get_mut(&id) {
            rc.stage = Stage::Finished;
        }
        self.commit_locally(id, b, payload.clone(), dep.clone());
        let msg = Message::Commit {
            ballot: b,
            id,
            payload,
            dep,
        };
        self.send_all(&msg);
    }

    // ----------------------------------------------------------------------
    // Timers (§4.1)

    fn tick_coordinators(&mut self) {
        let ids: Vec<CmdId> = self.coords.keys().copied().collect();
        for id in ids {
            let (expired, narrow) = {
                let c = &self.coords[&id];
                (
                    self.now >= c.started + self.opts.fast_timeout_ticks,
                    c.asked.len() + 1 < self.cfg(id.epoch).n(),
                )
            };
            if expired && self.epochs.seals.contains_key(&id.epoch) {
                // Sealed members ignore PreAccepts (§8.2 step 2), so no more
                // replies will come: decide with what arrived (slow path if
                // ≥ n − f), else stop coordinating so that the watch
                // recovers the instance (a live coordinator never is).
                self.try_decide_fast_or_slow(id, true);
                self.coords.remove(&id);
                continue;
            }
            // Thrifty (§3.8): when the fast set is late, first widen to every
            // replica and give the fast path one more T_fast; go slow after.
            let widen = expired && narrow;
            if expired && !narrow {
                self.try_decide_fast_or_slow(id, true);
            }
            let Some(c) = self.coords.get(&id) else {
                continue;
            };
            if widen || self.now >= c.last_send + self.opts.retransmit_ticks {
                if widen {
                    self.coords.get_mut(&id).expect("present").started = self.now;
                }
                let c = &self.coords[&id];
                // Retransmit to every peer that has not answered; a thrifty
                // set widens to everyone (§3.8).
                let missing: Vec<NodeId> = self
                    .others(id.epoch)
                    .into_iter()
                    .filter(|m| !c.replies.contains_key(m))
                    .collect();
                let r = &self.insts[&id];
                let msg = Message::PreAccept {
                    id,
                    cmd: r.init_cmd.clone().expect("origin batch"),
                    dep: r.init_dep.clone(),
                };
                let c = self.coords.get_mut(&id).expect("present");
                c.last_send = self.now;
                c.asked.extend(missing.iter().copied());
                self.send_each(missing, &msg);
            }
        }
    }

    fn tick_proposals(&mut self) {
        let ids: Vec<CmdId> = self.proposals.keys().copied().collect();
        for id in ids {
            let p = &self.proposals[&id];
            if self.now < p.last_send + self.opts.retransmit_ticks {
                continue;
            }
            let r = &self.insts[&id];
            if r.bal != p.ballot || r.phase != Phase::Accepted {
                self.proposals.remove(&id);
                continue;
            }
            let missing: Vec<NodeId> = self
                .others(id.epoch)
                .into_iter()
                .filter(|m| !p.oks.contains(m))
                .collect();
            let msg = Message::Accept {
                ballot: p.ballot,
                id,
                payload: p.payload.clone(),
                dep: p.dep.clone(),
            };
            let p = self.proposals.get_mut(&id).expect("present");
            p.last_send = self.now;
            self.send_each(missing, &msg);
        }
    }

    fn tick_recoveries(&mut self) {
        let ids: Vec<CmdId> = self.recoveries.keys().copied().collect();
        for id in ids {
            let rc = &self.recoveries[&id];
            if !self.active_recovery(id, rc.ballot) {
                if matches!(rc.stage, Stage::Finished) && self.proposals.contains_key(&id) {
                    continue;
                }
                self.recoveries.remove(&id);
                continue;
            }
            if self.now < rc.last_send + self.opts.retransmit_ticks {
                continue;
            }
            let b = rc.ballot;
            let (targets, msg): (Vec<NodeId>, Message) = match &rc.stage {
                Stage::Collect => (
                    self.others(id.epoch)
                        .into_iter()
                        .filter(|m| !rc.replies.contains_key(m))
                        .collect(),
                    Message::Recover { ballot: b, id },
                ),
                Stage::Validating { oks } => (
                    rc.q.iter()
                        .copied()
                        .filter(|m| *m != self.me && !oks.contains_key(m))
                        .collect(),
                    Message::Validate {
                        ballot: b,
                        id,
                        cmd: rc.c.clone().expect("batch"),
                        dep: rc.d.clone(),
                    },
                ),
                Stage::Waiting { .. } => (
                    // Re-send the hint, and ask the rest for late replies (W4).
                    self.others(id.epoch),
                    Message::Waiting { id, k: rc.k },
                ),
                Stage::Finished => continue,
            };
            let in_wait = matches!(rc.stage, Stage::Waiting { .. });
            let outside_q: Vec<NodeId> = self
                .others(id.epoch)
                .into_iter()
                .filter(|m| !rc.q.contains(m) && !rc.late.contains_key(m))
                .collect();
            self.recoveries.get_mut(&id).expect("present").last_send = self.now;
            self.send_each(targets, &msg);
            if in_wait {
                self.send_each(outside_q, &Message::Recover { ballot: b, id });
            }
        }
    }

    fn tick_watches(&mut self) {
        // Trigger 1: dependencies that block execution.
        if self.executor.pending_len() > 0 {
            for x in self.executor.blocked_on() {
                if !self.watches.contains_key(&x) {
                    self.watch(x, self.opts.exec_timeout_ticks);
                }
            }
        }
        if !self.opts.auto_recovery {
            return;
        }
        let due: Vec<CmdId> = self
            .watches
            .iter()
            .filter(|(_, w)| w.next_action <= self.now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if self
                .insts
                .get(&id)
                .is_some_and(|r| r.phase == Phase::Committed)
            {
                self.watches.remove(&id);
                continue;
            }
            // Trigger 4: never recover an own command the coordinator still
            // drives; it retransmits instead.
            let live = self.coords.contains_key(&id)
                || self
                    .proposals
                    .get(&id)
                    .is_some_and(|p| self.insts[&id].bal == p.ballot)
                || self.recoveries.get(&id).is_some_and(|r| {
                    self.active_recovery(id, r.ballot)
                        && self.now < r.started + self.opts.recovery_attempt_ticks
                });
            let w = self.watches.get_mut(&id).expect("present");
            if live {
                w.next_action = self.now + self.opts.retransmit_ticks;
                continue;
            }
            if !w.learn_sent {
                // §4.1.7: ask for the commit before recovering.
                w.learn_sent = true;
                w.next_action = self.now + self.opts.retransmit_ticks;
                self.send_all(&Message::Learn { id });
                continue;
            }
            let attempts = w.attempts.min(16);
            w.attempts += 1;
            w.learn_sent = false;
            let base = self.opts.retransmit_ticks.max(1) << attempts.min(6);
            let cap = self.opts.recovery_backoff_max_ticks.max(1);
            let jitter = self.rng.below(base.min(cap));
            w.next_action = self.now + base.min(cap) + jitter + 4 * self.opts.retransmit_ticks;
            self.start_recovery(id);
        }
    }
}
