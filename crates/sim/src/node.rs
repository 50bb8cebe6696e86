//! One simulated replica: the `Replica` object (volatile, lost on crash),
//! its durable store, and the outputs whose writes are not yet fsynced.
//!
//! epaxos.md §2.4 / the crate docs of `synod_epaxos`: an output's writes
//! must be durable before anything of that output or a later one is
//! released. The simulator models group commit: outputs queue in
//! `pending`; an `Fsync` event makes all their writes durable at once and
//! then releases them in order. A crash discards `pending` and the replica;
//! the durable store (records, `next_seq`, the executed set, the decision
//! state machine and the execution log) survives.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use synod_decision::StateMachine;
use synod_epaxos::{InstanceRecord, Output, Replica, Write};
use synod_types::{CmdId, NodeId, Payload, Phase, QuorumConfig};

/// An output waiting for its fsync.
#[derive(Debug)]
pub struct PendingOutput {
    /// The output.
    pub output: Output,
    /// True if its messages/executions/replies were already released
    /// (only under the broken `release_before_durable` variant).
    pub released: bool,
}

/// What survives a crash.
#[derive(Debug, Default)]
pub struct Durable {
    /// Last durable record per instance.
    pub records: BTreeMap<CmdId, InstanceRecord>,
    /// Last durable id high-water mark.
    pub next_seq: u64,
    /// Ids applied to the state machine (persisted atomically with it).
    pub executed: BTreeSet<CmdId>,
    /// The decision state machine.
    pub app: StateMachine,
    /// Execution order at this replica (`exec_p` of epaxos.md §6).
    pub exec_log: Vec<CmdId>,
    /// The durable `Epoch`, `Sealed` and `Closed` writes, in order (folded
    /// into a `synod_epaxos::EpochState` at restart).
    pub epoch_log: Vec<Write>,
    /// Per `(epoch, origin)`, a prefix of ids known to be [`Durable::is_done`]
    /// (a cache for [`Durable::done_prefix`]; done is permanent).
    done_prefix: std::cell::RefCell<BTreeMap<(u64, NodeId), u64>>,
}

impl Durable {
    /// Makes one write durable.
    pub fn apply(&mut self, write: Write) {
        match write {
            Write::Instance { id, record } => {
                self.records.insert(id, *record);
            }
            Write::NextSeq(s) => self.next_seq = self.next_seq.max(s),
            Write::Epoch(_) => {
                // Ids restart at seq 0 in a new epoch.
                self.next_seq = 0;
                self.epoch_log.push(write);
            }
            Write::Sealed { .. } | Write::Closed { .. } => self.epoch_log.push(write),
        }
    }

    /// The processed set a restart hands to the core: executed ids plus
    /// committed Nops (a committed Nop has no deps, so the executor skips it
    /// as soon as it is committed).
    pub fn processed(&self) -> BTreeSet<CmdId> {
        let mut p = self.executed.clone();
        for (id, r) in &self.records {
            if r.phase == Phase::Committed && matches!(r.cmd, Some(Payload::Nop)) {
                p.insert(*id);
            }
        }
        p
    }

    /// The length of the prefix of `(epoch, origin)`'s ids that are all
    /// [`Durable::is_done`] here. Lets the checkers skip, in a dependency
    /// floor, the ids that are settled, without walking the history.
    pub fn done_prefix(&self, epoch: u64, origin: NodeId) -> u64 {
        let mut cache = self.done_prefix.borrow_mut();
        let n = cache.entry((epoch, origin)).or_insert(0);
        while self.is_done(CmdId {
            epoch,
            seq: *n,
            origin,
        }) {
            *n += 1;
        }
        *n
    }

    /// What a member added in a new epoch starts from (epaxos.md §8.4 "a
    /// snapshot"): this store's committed records (chosen values, never
    /// votes: an uncommitted record would be this node's vote counted a
    /// second time), executed set, application state, execution log and
    /// epoch state; `next_seq` 0 (its ids are new in the current epoch).
    pub fn snapshot(&self) -> Durable {
        Durable {
            records: self
                .records
                .iter()
                .filter(|(_, r)| r.phase == Phase::Committed)
                .map(|(id, r)| (*id, r.clone()))
                .collect(),
            next_seq: 0,
            executed: self.executed.clone(),
            app: self.app.clone(),
            exec_log: self.exec_log.clone(),
            epoch_log: self.epoch_log.clone(),
            done_prefix: Default::default(),
        }
    }

    /// The durable epoch state, given the initial configuration.
    pub fn epochs(&self, initial: &QuorumConfig) -> synod_epaxos::EpochState {
        let mut e = synod_epaxos::EpochState::new(initial.clone());
        for w in &self.epoch_log {
            e.apply(w);
        }
        e
    }

    /// True if `id` is committed durably and processed here.
    pub fn is_done(&self, id: CmdId) -> bool {
        match self.records.get(&id) {
            Some(r) if r.phase == Phase::Committed => match r.cmd {
                Some(Payload::Nop) => true,
                _ => self.executed.contains(&id),
            },
            _ => false,
        }
    }
}

/// A simulated replica.
pub struct SimNode {
    /// Its id.
    pub id: NodeId,
    /// The live replica; `None` while crashed.
    pub replica: Option<Replica>,
    /// Durable state.
    pub durable: Durable,
    /// Outputs not yet fsynced, oldest first.
    pub pending: VecDeque<PendingOutput>,
    /// An `Fsync` event is scheduled for this incarnation.
    pub fsync_scheduled: bool,
    /// Bumped at every crash; events of older incarnations are ignored.
    pub incarnation: u64,
    /// Down for good since the heal (`SimConfig::dead_at_heal`): never
    /// restarts. Progress and the end-of-run completeness checks skip it;
    /// the safety checks still see its durable state.
    pub dead: bool,
}

impl SimNode {
    /// A fresh, running node.
    pub fn new(id: NodeId, replica: Replica) -> Self {
        SimNode {
            id,
            replica: Some(replica),
            durable: Durable::default(),
            pending: VecDeque::new(),
            fsync_scheduled: false,
            incarnation: 0,
            dead: false,
        }
    }

    /// A node slot that is not (yet) a member: down, and `dead` so that
    /// nothing restarts it; the config-service oracle brings it in.
    pub fn absent(id: NodeId) -> Self {
        SimNode {
            id,
            replica: None,
            durable: Durable::default(),
            pending: VecDeque::new(),
            fsync_scheduled: false,
            incarnation: 0,
            dead: true,
        }
    }

    /// True while running.
    pub fn is_up(&self) -> bool {
        self.replica.is_some()
    }

    /// The record of `id` as last written by this incarnation: the newest
    /// pending write, else the durable record.
    pub fn volatile_record(&self, id: CmdId) -> Option<&InstanceRecord> {
        for p in self.pending.iter().rev() {
            for w in p.output.writes.iter().rev() {
                if let Write::Instance { id: wid, record } = w {
                    if *wid == id {
                        return Some(record);
                    }
                }
            }
        }
        self.durable.records.get(&id)
    }

    /// True if `id` was executed durably or is in a pending execution.
    pub fn executed_or_pending(&self, id: CmdId) -> bool {
        self.durable.executed.contains(&id)
            || self
                .pending
                .iter()
                .any(|p| !p.released && p.output.executions.iter().any(|e| e.id == id))
    }

    /// Crashes the node: drops the replica and every pending output.
    /// Returns the discarded outputs (for the durability check).
    pub fn crash(&mut self) -> Vec<PendingOutput> {
        self.replica = None;
        self.fsync_scheduled = false;
        self.incarnation += 1;
        self.pending.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use synod_types::Ballot;

    fn id(seq: u64) -> CmdId {
        CmdId {
            epoch: 0,
            seq,
            origin: 0,
        }
    }

    fn rec(i: CmdId, phase: Phase, cmd: Option<Payload>) -> InstanceRecord {
        InstanceRecord {
            phase,
            cmd,
            ..InstanceRecord::new(i)
        }
    }

    #[test]
    fn durable_apply_and_processed() {
        let mut d = Durable::default();
        d.apply(Write::NextSeq(5));
        d.apply(Write::NextSeq(3));
        assert_eq!(d.next_seq, 5);
        d.apply(Write::Instance {
            id: id(1),
            record: Box::new(rec(id(1), Phase::Committed, Some(Payload::Nop))),
        });
        let op = Payload::Op(Arc::new(Vec::new()));
        d.apply(Write::Instance {
            id: id(2),
            record: Box::new(rec(id(2), Phase::Committed, Some(op.clone()))),
        });
        d.apply(Write::Instance {
            id: id(3),
            record: Box::new(rec(id(3), Phase::Accepted, Some(op))),
        });
        assert_eq!(d.processed(), [id(1)].into_iter().collect());
        assert!(d.is_done(id(1)));
        assert!(!d.is_done(id(2)));
        d.executed.insert(id(2));
        assert!(d.is_done(id(2)));
        assert!(!d.is_done(id(3)));
    }

    #[test]
    fn volatile_record_prefers_newest_pending_write() {
        let mut d = Durable::default();
        d.apply(Write::Instance {
            id: id(1),
            record: Box::new(rec(id(1), Phase::PreAccepted, None)),
        });
        let mut pending = VecDeque::new();
        let mut newer = rec(id(1), Phase::Accepted, None);
        newer.bal = Ballot {
            epoch: 0,
            round: 1,
            node: 2,
        };
        pending.push_back(PendingOutput {
            output: Output {
                writes: vec![Write::Instance {
                    id: id(1),
                    record: Box::new(newer),
                }],
                ..Output::default()
            },
            released: false,
        });
        // A node without a replica is enough to test the storage model.
        let node = SimNode {
            id: 0,
            replica: None,
            durable: d,
            pending,
            fsync_scheduled: true,
            incarnation: 0,
            dead: false,
        };
        assert_eq!(node.volatile_record(id(1)).unwrap().phase, Phase::Accepted);
        assert!(node.volatile_record(id(2)).is_none());
        let mut node = node;
        let lost = node.crash();
        assert_eq!(lost.len(), 1);
        assert_eq!(
            node.volatile_record(id(1)).unwrap().phase,
            Phase::PreAccepted
        );
        assert_eq!(node.incarnation, 1);
    }
}
