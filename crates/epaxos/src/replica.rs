//! The EPaxos\* replica.

use crate::messages::{Envelope, Message};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use synod_types::{Ballot, Batch, CmdId, Command, Deps, NodeId, Payload, Phase, QuorumConfig};

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
    /// The id high-water mark: no id with `seq < next_seq` from this origin
    /// will ever be issued again (epaxos.md §2.2, I21).
    NextSeq(u64),
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
}

impl Output {
    /// True if the output carries nothing.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
            && self.messages.is_empty()
            && self.executions.is_empty()
            && self.aborted.is_empty()
    }

    /// Appends `other` after `self`.
    pub fn extend(&mut self, other: Output) {
        self.writes.extend(other.writes);
        self.messages.extend(other.messages);
        self.executions.extend(other.executions);
        self.aborted.extend(other.aborted);
    }
}

/// Deliberately broken variants, for showing that the simulator's checkers
/// can fail (quality-bars.md R2). Never set outside tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// (a) One ballot variable: `RecoverOk` reports `bal` where it should
    /// report `abal` (Sutra's bug; epaxos.md S1 mutation).
    SingleBallot,
    /// (b) The fast quorum is one smaller than `n − e`.
    FastQuorumTooSmall,
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
    /// Start recoveries automatically from timers. Scenario tests turn this
    /// off and call [`Replica::recover`] themselves.
    pub auto_recovery: bool,
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
            fast_timeout_ticks: 4,
            retransmit_ticks: 8,
            commit_timeout_ticks: 20,
            exec_timeout_ticks: 10,
            recovery_backoff_max_ticks: 64,
            auto_recovery: true,
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

/// One EPaxos\* replica. See the crate docs.
pub struct Replica {
    _private: (),
}

impl Replica {
    /// A fresh replica `me` of `config`. `me` must be a member.
    pub fn new(me: NodeId, config: QuorumConfig, options: Options) -> Self {
        let _ = (me, config, options);
        todo!()
    }

    /// Rebuilds a replica after a crash from its durable state: the last
    /// durable record of every instance, the last durable `NextSeq`, and the
    /// ids already processed by the executor (executed, or skipped Nops) as
    /// persisted atomically with the application state.
    pub fn restart(
        me: NodeId,
        config: QuorumConfig,
        options: Options,
        records: BTreeMap<CmdId, InstanceRecord>,
        next_seq: u64,
        processed: BTreeSet<CmdId>,
    ) -> Self {
        let _ = (me, config, options, records, next_seq, processed);
        todo!()
    }

    /// This replica's id.
    pub fn id(&self) -> NodeId {
        todo!()
    }

    /// Queues a client command. It is submitted in the next batch: at once if
    /// the batch is full, else at the next [`Replica::tick`] or
    /// [`Replica::flush`].
    pub fn propose(&mut self, cmd: Command) -> Output {
        let _ = cmd;
        todo!()
    }

    /// Submits the queued commands, if any, as one instance now.
    pub fn flush(&mut self) -> Output {
        todo!()
    }

    /// Handles one message from `from`.
    pub fn step(&mut self, from: NodeId, msg: Message) -> Output {
        let _ = (from, msg);
        todo!()
    }

    /// Advances logical time by one tick: flushes the batch, fires
    /// retransmissions, fast-path timeouts and recovery triggers.
    pub fn tick(&mut self) -> Output {
        todo!()
    }

    /// Starts (or restarts at a higher ballot) recovery of `id` now,
    /// bypassing the timers. Used by scenario tests and operators.
    pub fn recover(&mut self, id: CmdId) -> Output {
        let _ = id;
        todo!()
    }

    /// The durable-state view of `id`, if this replica has heard of it.
    pub fn instance(&self, id: CmdId) -> Option<&InstanceRecord> {
        let _ = id;
        todo!()
    }

    /// Every instance this replica holds a record for, in `CmdId` order.
    pub fn instances(&self) -> Box<dyn Iterator<Item = (&CmdId, &InstanceRecord)> + '_> {
        todo!()
    }

    /// True if the executor has processed `id` (executed or skipped Nop).
    pub fn is_processed(&self, id: CmdId) -> bool {
        let _ = id;
        todo!()
    }

    /// Committed ids not yet executed (epaxos.md §5.4.4 monitoring).
    pub fn pending_execution(&self) -> usize {
        todo!()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        todo!()
    }

    /// The quorum configuration.
    pub fn config(&self) -> &QuorumConfig {
        todo!()
    }

    /// Number of commands queued for the next batch plus own instances not
    /// yet committed. Used for admission control.
    pub fn in_flight(&self) -> usize {
        todo!()
    }
}
