//! Epoch changes in the core (epaxos.md §8, §7 S12), hand-driven over a
//! lossless FIFO network with an explicit config service: `begin_epoch`
//! delivered to each member at a chosen moment, seal reports collected,
//! `close_epoch(E, K)` with K the union of n−f reports, a new member built
//! from a complete member's snapshot. The randomized version is the
//! simulator's `--reconfig` chaos (crates/sim).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use synod_epaxos::{
    Envelope, EpochState, InstanceRecord, Message, Options, Output, Replica, SealReport, Write,
};
use synod_types::{Access, CmdId, Command, Payload, Phase, QuorumConfig};

struct Net {
    replicas: BTreeMap<u16, Replica>,
    queue: VecDeque<(u16, Envelope)>,
    executed: BTreeMap<u16, Vec<CmdId>>,
    reports: Vec<SealReport>,
    aborted: Vec<CmdId>,
    completed: BTreeMap<u16, Vec<u64>>,
    /// Durable writes per node (the snapshot a new member copies).
    writes: BTreeMap<u16, Vec<Write>>,
    next_request: u64,
}

fn id(epoch: u64, seq: u64, origin: u16) -> CmdId {
    CmdId { epoch, seq, origin }
}

impl Net {
    fn new(n: usize) -> Net {
        let cfg = QuorumConfig::standard(n).unwrap();
        Net {
            replicas: (0..n as u16)
                .map(|i| (i, Replica::new(i, cfg.clone(), Options::default())))
                .collect(),
            queue: VecDeque::new(),
            executed: BTreeMap::new(),
            reports: Vec::new(),
            aborted: Vec::new(),
            completed: BTreeMap::new(),
            writes: BTreeMap::new(),
            next_request: 1,
        }
    }

    fn absorb(&mut self, from: u16, out: Output) {
        for e in out.messages {
            self.queue.push_back((from, e));
        }
        for x in out.executions {
            self.executed.entry(from).or_default().push(x.id);
        }
        self.reports.extend(out.seal_reports);
        self.aborted.extend(out.aborted.iter().map(|a| a.id));
        self.completed
            .entry(from)
            .or_default()
            .extend(out.completed_epochs);
        self.writes.entry(from).or_default().extend(out.writes);
    }

    fn with(&mut self, at: u16, f: impl FnOnce(&mut Replica) -> Output) {
        let out = f(self.replicas.get_mut(&at).unwrap());
        self.absorb(at, out);
    }

    fn propose(&mut self, at: u16, key: &str) {
        let cmd = Command {
            keys: vec![(Arc::from(key), Access::Write)],
            body: Arc::from(&b"x"[..]),
            client: 1,
            request: self.next_request,
        };
        self.next_request += 1;
        self.with(at, |r| r.propose(cmd));
        self.with(at, |r| r.flush());
    }

    /// Delivers until quiet; `hold` keeps matching messages back (returned).
    fn run(&mut self, hold: impl Fn(u16, &Envelope) -> bool) -> Vec<(u16, Envelope)> {
        let mut held = Vec::new();
        while let Some((from, env)) = self.queue.pop_front() {
            if hold(from, &env) {
                held.push((from, env));
                continue;
            }
            let to = env.to;
            if self.replicas.contains_key(&to) {
                self.with(to, |r| r.step(from, env.msg));
            }
        }
        held
    }

    fn ticks(&mut self, k: usize) {
        for _ in 0..k {
            let ids: Vec<u16> = self.replicas.keys().copied().collect();
            for i in ids {
                self.with(i, |r| r.tick());
            }
            self.run(|_, _| false);
        }
    }

    fn phase(&self, at: u16, x: CmdId) -> Option<(Phase, Option<Payload>)> {
        self.replicas[&at]
            .instance(x)
            .map(|r| (r.phase, r.cmd.clone()))
    }

    /// K = the union of the first `n − f` seal reports of `epoch`.
    fn closed_set(&self, epoch: u64, quorum: usize) -> BTreeSet<CmdId> {
        let mut from = BTreeSet::new();
        let mut k = BTreeSet::new();
        for r in self.reports.iter().filter(|r| r.epoch == epoch) {
            if from.len() < quorum && from.insert(r.from) {
                k.extend(r.known.iter().copied());
            }
        }
        assert_eq!(from.len(), quorum, "not enough seal reports");
        k
    }

    /// A member added in a new epoch: a copy of `donor`'s epoch state and
    /// committed records of the completed epochs, and its processed set.
    fn join(&mut self, new: u16, donor: u16, initial: &QuorumConfig) {
        let d = &self.replicas[&donor];
        let current = d.config().epoch;
        let mut epochs = EpochState::new(initial.clone());
        for w in &self.writes[&donor] {
            epochs.apply(w);
        }
        let records: BTreeMap<CmdId, InstanceRecord> = d
            .instances()
            .filter(|(x, r)| x.epoch < current && r.phase == Phase::Committed)
            .map(|(x, r)| (*x, r.clone()))
            .collect();
        let processed: BTreeSet<CmdId> = records
            .keys()
            .copied()
            .filter(|x| d.is_processed(*x))
            .collect();
        let r = Replica::restart_in(new, epochs, Options::default(), records, 0, processed);
        self.replicas.insert(new, r);
    }
}

fn committed_value(net: &Net, x: CmdId) -> Payload {
    let mut v = None;
    for (i, r) in &net.replicas {
        if let Some(rec) = r.instance(x) {
            assert_eq!(rec.phase, Phase::Committed, "{x:?} at {i}");
            let c = rec.cmd.clone().unwrap();
            if let Some(prev) = &v {
                assert_eq!(prev, &c, "I1 for {x:?}");
            }
            v = Some(c);
        }
    }
    v.expect("committed somewhere")
}

/// S12: seal epoch 0 of {0,1,2} while x (pre-accepted by 0 and 1) and y
/// (pre-accepted only by its origin 2, which seals last) are in flight;
/// grow to {0,1,2,3}. x is in K and commits; y is outside K and ends as a
/// Nop its origin reports aborted; a new-epoch command on the same key
/// gets an epoch-1 id, waits at the barrier until the epoch-0 closure is
/// executed, and runs after x everywhere, the new member included.
#[test]
fn s12_seal_with_in_flight_instances_then_grow() {
    let c0 = QuorumConfig::standard(3).unwrap();
    let c1 = QuorumConfig::new(1, vec![0, 1, 2, 3], 1, 1).unwrap();
    let mut net = Net::new(3);
    let x = id(0, 0, 0);
    let y = id(0, 0, 2);
    net.propose(0, "k");
    // x's PreAccept reaches 1 only; its reply is held (x stays PreAccepted).
    let held_x = net.run(|from, env| {
        !(from == 0 && env.to == 1 && matches!(env.msg, Message::PreAccept { .. }))
    });
    net.propose(2, "k");
    let held_y: Vec<_> = net.queue.drain(..).collect();
    assert_eq!(net.phase(1, x).unwrap().0, Phase::PreAccepted);
    // 0 and 1 learn epoch 1 and seal; 2 has not heard yet.
    net.with(0, |r| r.begin_epoch(c1.clone()));
    net.with(1, |r| r.begin_epoch(c1.clone()));
    // A late PreAccept of y at a sealed member is ignored.
    for (from, env) in held_y {
        if env.to == 0 || env.to == 1 {
            net.with(env.to, |r| r.step(from, env.msg));
        }
    }
    assert!(net.phase(0, y).is_none() && net.phase(1, y).is_none());
    let k = net.closed_set(0, c0.slow_quorum());
    assert!(k.contains(&x) && !k.contains(&y), "K = {k:?}");
    // New commands at a member that learned epoch 1 get epoch-1 ids.
    net.propose(1, "k");
    let z = id(1, 0, 1);
    assert!(net.replicas[&1].instance(z).is_some());
    // 2 learns epoch 1 late, then K is published everywhere.
    net.with(2, |r| r.begin_epoch(c1.clone()));
    for (from, env) in held_x {
        net.queue.push_back((from, env));
    }
    net.run(|_, env| env.to == 3);
    // z may commit in epoch 1 but not execute before x's epoch is complete.
    for i in 0..3 {
        assert!(
            !net.executed.get(&i).is_some_and(|e| e.contains(&z)),
            "z executed at {i} before epoch 0 was closed"
        );
    }
    for i in 0..3 {
        net.with(i, |r| r.close_epoch(0, k.clone()));
    }
    net.run(|_, env| env.to == 3);
    net.ticks(300);
    assert!(matches!(committed_value(&net, x), Payload::Op(_)));
    assert_eq!(committed_value(&net, y), Payload::Nop);
    assert!(net.aborted.contains(&y), "y's origin tells its client");
    for i in 0..3u16 {
        assert!(net.completed[&i].contains(&0), "epoch 0 complete at {i}");
        assert!(net.replicas[&i].epoch_complete(0));
    }
    // The new member joins from 0's snapshot and catches up on epoch 1.
    net.join(3, 0, &c0);
    net.propose(3, "k");
    net.ticks(300);
    let z3 = id(1, 0, 3);
    for i in 0..4u16 {
        let e = &net.executed.get(&i).cloned().unwrap_or_default();
        let pos = |a: CmdId| e.iter().position(|b| *b == a);
        if i < 3 {
            assert!(
                pos(x).unwrap() < pos(z).unwrap(),
                "x before z at {i}: {e:?}"
            );
        }
        assert!(
            pos(z).unwrap() < pos(z3).unwrap(),
            "z before z3 at {i}: {e:?}"
        );
        let deps = &net.replicas[&i].instance(z3).unwrap().dep;
        assert!(!deps.contains(&x), "epoch-1 deps list no epoch-0 id");
    }
}

/// S12: a recovery of an E-instance races with the seal. 1 recovers x
/// (pre-accepted by its origin 0 only) while 0 and 2 seal; 2's refusal of
/// Validate for an id outside its K_s stalls the recovery until K is
/// published; then Excluded makes it Nop.
#[test]
fn s12_recovery_racing_the_seal_ends_in_nop_for_excluded_ids() {
    let c1 = QuorumConfig::new(1, vec![0, 1, 2], 1, 1).unwrap();
    let mut net = Net::new(3);
    let x = id(0, 0, 0);
    net.propose(0, "k");
    let _lost: Vec<_> = net.queue.drain(..).collect();
    // 1 and 2 seal first: neither knows x. 0 seals later (x ∈ K_0).
    net.with(1, |r| r.begin_epoch(c1.clone()));
    net.with(2, |r| r.begin_epoch(c1.clone()));
    // 1 recovers x: Recover reaches 0 (PreAccepted, origin in Q → Nop)
    // or 2; either way only Nop can come out.
    net.with(1, |r| r.recover(x));
    net.run(|_, _| false);
    net.with(0, |r| r.begin_epoch(c1.clone()));
    let k = net.closed_set(0, 2);
    assert!(!k.contains(&x));
    for i in 0..3 {
        net.with(i, |r| r.close_epoch(0, k.clone()));
    }
    net.run(|_, _| false);
    net.ticks(300);
    assert_eq!(committed_value(&net, x), Payload::Nop);
    for i in 0..3u16 {
        assert!(net.replicas[&i].epoch_complete(0), "complete at {i}");
    }
    // The aborted command comes back in epoch 1 through its client.
    assert!(net.aborted.contains(&x));
    net.propose(0, "k");
    net.ticks(50);
    assert!(matches!(committed_value(&net, id(1, 0, 0)), Payload::Op(_)));
}

/// A restart keeps the seal: a sealed replica rebuilt from its durable
/// writes still ignores PreAccepts of the sealed epoch and still holds the
/// new epoch behind the barrier.
#[test]
fn restart_restores_the_seal_and_the_barrier() {
    let c0 = QuorumConfig::standard(3).unwrap();
    let c1 = QuorumConfig::new(1, vec![0, 1, 2], 1, 1).unwrap();
    let mut net = Net::new(3);
    net.with(1, |r| r.begin_epoch(c1.clone()));
    let mut epochs = EpochState::new(c0.clone());
    let mut records: BTreeMap<CmdId, InstanceRecord> = BTreeMap::new();
    let mut next_seq = 0;
    for w in &net.writes[&1] {
        epochs.apply(w);
        match w {
            Write::Instance { id, record } => {
                records.insert(*id, (**record).clone());
            }
            Write::NextSeq(s) => next_seq = *s,
            Write::Epoch(_) => next_seq = 0,
            _ => {}
        }
    }
    assert_eq!(epochs.current().epoch, 1);
    assert!(epochs.seals.contains_key(&0));
    let r = Replica::restart_in(
        1,
        epochs,
        Options::default(),
        records,
        next_seq,
        BTreeSet::new(),
    );
    net.replicas.insert(1, r);
    net.propose(0, "k");
    // Without 2, nothing but 1's PreAcceptOk could make progress.
    net.run(|_, env| env.to == 2);
    assert!(
        net.phase(1, id(0, 0, 0)).is_none(),
        "a sealed replica ignores PreAccept"
    );
    assert!(!net.replicas[&1].epoch_complete(0));
}
