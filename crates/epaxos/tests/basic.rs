//! Small, hand-driven checks of the EPaxos* core (epaxos.md §3, §4). The
//! randomized fault testing lives in the `synod-sim` crate; these tests pin
//! down the basic message flow with a lossless FIFO network.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use synod_epaxos::{Envelope, Message, Options, Output, Replica};
use synod_types::{Access, Ballot, CmdId, Command, Payload, Phase, QuorumConfig};

struct Net {
    replicas: Vec<Replica>,
    queue: VecDeque<(u16, Envelope)>,
    executed: BTreeMap<u16, Vec<CmdId>>,
    down: Vec<bool>,
}

impl Net {
    fn new(n: usize, opts: Options) -> Net {
        let cfg = QuorumConfig::standard(n).unwrap();
        Net {
            replicas: (0..n)
                .map(|i| Replica::new(i as u16, cfg.clone(), opts.clone()))
                .collect(),
            queue: VecDeque::new(),
            executed: BTreeMap::new(),
            down: vec![false; n],
        }
    }

    fn absorb(&mut self, from: u16, out: Output) {
        for e in out.messages {
            self.queue.push_back((from, e));
        }
        for x in out.executions {
            self.executed.entry(from).or_default().push(x.id);
        }
    }

    fn propose(&mut self, at: u16, key: &str) {
        let cmd = Command {
            keys: vec![(Arc::from(key), Access::Write)],
            body: Arc::from(&b"x"[..]),
            client: 1,
            request: 1,
        };
        let out = self.replicas[at as usize].propose(cmd);
        self.absorb(at, out);
        let out = self.replicas[at as usize].flush();
        self.absorb(at, out);
    }

    /// Delivers until quiet; `drop` filters messages out.
    fn run(&mut self, drop: impl Fn(u16, &Envelope) -> bool) {
        while let Some((from, env)) = self.queue.pop_front() {
            if self.down[env.to as usize] || self.down[from as usize] || drop(from, &env) {
                continue;
            }
            let to = env.to;
            let out = self.replicas[to as usize].step(from, env.msg);
            self.absorb(to, out);
        }
    }

    fn ticks(&mut self, k: usize) {
        for _ in 0..k {
            for i in 0..self.replicas.len() {
                if !self.down[i] {
                    let out = self.replicas[i].tick();
                    self.absorb(i as u16, out);
                }
            }
            self.run(|_, _| false);
        }
    }
}

fn phase(net: &Net, at: usize, id: CmdId) -> Option<Phase> {
    net.replicas[at].instance(id).map(|r| r.phase)
}

/// §3.2–3.4: with no conflicts every command commits on the fast path.
#[test]
fn conflict_free_commands_take_the_fast_path() {
    let mut net = Net::new(3, Options::default());
    net.propose(0, "a");
    net.propose(1, "b");
    net.run(|_, _| false);
    for r in &net.replicas[..2] {
        assert_eq!(r.stats().fast_commits, 1);
        assert_eq!(r.stats().slow_paths, 0);
    }
    for (i, r) in net.replicas.iter().enumerate() {
        assert_eq!(r.instances().count(), 2, "replica {i}");
        assert!(r.instances().all(|(_, rec)| rec.phase == Phase::Committed));
    }
    assert!(net.executed.values().all(|v| v.len() == 2));
}

/// §3.4: the fast path needs n−e replies equal to the coordinator's own D0;
/// with 5 replicas and concurrent conflicting commands someone goes slow,
/// and every replica executes the conflicting pair in the same order (I17).
#[test]
fn concurrent_conflicts_agree_on_order() {
    let mut net = Net::new(5, Options::default());
    net.propose(0, "hot");
    net.propose(4, "hot");
    // Interleave: 4's PreAccept reaches 1 and 2 before 0's does.
    let mut q: Vec<_> = net.queue.drain(..).collect();
    q.sort_by_key(|(from, _)| if *from == 4 { 0 } else { 1 });
    net.queue.extend(q);
    net.run(|_, _| false);
    net.ticks(10);
    let orders: Vec<_> = net.executed.values().cloned().collect();
    assert_eq!(orders.len(), 5);
    assert!(
        orders.iter().all(|o| o.len() == 2 && *o == orders[0]),
        "{orders:?}"
    );
    let slow: u64 = net.replicas.iter().map(|r| r.stats().slow_paths).sum();
    let fast: u64 = net.replicas.iter().map(|r| r.stats().fast_commits).sum();
    assert_eq!(slow + fast, 2);
}

/// §4: the origin crashes right after sending PreAccept; the survivors learn
/// nothing, time out and recover. Both outcomes (commit the command, or Nop)
/// are allowed; they must agree.
#[test]
fn survivors_recover_a_crashed_origins_command() {
    let mut net = Net::new(3, Options::default());
    net.propose(0, "k");
    // PreAccept reaches 1 only; 0 crashes before hearing back.
    net.queue.retain(|(_, env)| env.to == 1);
    let (from, env) = net.queue.pop_front().unwrap();
    let out = net.replicas[1].step(from, env.msg);
    net.absorb(1, out);
    net.down[0] = true;
    net.run(|_, _| false);
    net.ticks(200);
    let id = CmdId {
        epoch: 0,
        seq: 0,
        origin: 0,
    };
    let r1 = net.replicas[1].instance(id).unwrap().clone();
    let r2 = net.replicas[2].instance(id).unwrap().clone();
    assert_eq!(r1.phase, Phase::Committed);
    assert_eq!((r1.cmd.clone(), r1.dep.clone()), (r2.cmd, r2.dep));
    // Only replica 1 pre-accepted with dep = D0, so |R_max| = 1 = |Q| − e,
    // Validate finds no conflict and the command itself commits (R5.1).
    assert!(matches!(r1.cmd, Some(Payload::Op(_))));
    assert!(r1.bal > Ballot::initial(id));
    assert_eq!(phase(&net, 2, id), Some(Phase::Committed));
}

/// S6(a): Recover reaches the origin before its fast quorum; the origin
/// joins the higher ballot and never decides at the initial ballot; with the
/// origin in Q recovery commits Nop (R3.4) and the origin reports it aborted.
#[test]
fn early_recovery_with_origin_in_q_commits_nop() {
    let mut net = Net::new(3, Options::default());
    net.propose(0, "k");
    let id = CmdId {
        epoch: 0,
        seq: 0,
        origin: 0,
    };
    // Hold every PreAccept.
    let held: Vec<_> = net.queue.drain(..).collect();
    let out = net.replicas[1].recover(id);
    net.absorb(1, out);
    let mut aborted = 0;
    while let Some((from, env)) = net.queue.pop_front() {
        let to = env.to;
        let out = net.replicas[to as usize].step(from, env.msg);
        aborted += out.aborted.len();
        net.absorb(to, out);
    }
    // Late PreAccepts are refused by replicas that joined the recovery.
    for (from, env) in held {
        if let Message::PreAccept { .. } = env.msg {
            let to = env.to;
            let out = net.replicas[to as usize].step(from, env.msg);
            net.absorb(to, out);
        }
    }
    net.run(|_, _| false);
    for i in 0..3 {
        let r = net.replicas[i].instance(id).unwrap();
        assert_eq!(r.phase, Phase::Committed, "replica {i}");
        assert_eq!(r.cmd, Some(Payload::Nop));
        assert!(r.dep.is_empty(), "I8");
    }
    assert_eq!(aborted, 1, "the origin tells its client to retry");
    assert_eq!(net.replicas[0].stats().fast_commits, 0);
}

/// `batch_bytes_max` splits batches by size: no instance carries more than
/// the limit unless a single command is larger on its own.
#[test]
fn batches_are_split_by_bytes() {
    let opts = Options {
        batch_size_max: 64,
        batch_bytes_max: 1000,
        ..Options::default()
    };
    let cfg = QuorumConfig::standard(3).unwrap();
    let mut r = Replica::new(0, cfg, opts);
    let mut out = Output::default();
    // 400-byte bodies: two fit in 1000 bytes, a third does not.
    for req in 1..=5u64 {
        out.extend(r.propose(Command {
            keys: vec![(Arc::from(format!("k{req}").as_str()), Access::Write)],
            body: Arc::from(vec![7u8; 400]),
            client: 9,
            request: req,
        }));
    }
    // One command above the limit goes alone.
    out.extend(r.propose(Command {
        keys: vec![(Arc::from("big"), Access::Write)],
        body: Arc::from(vec![7u8; 5000]),
        client: 9,
        request: 6,
    }));
    out.extend(r.flush());
    let mut sizes: BTreeMap<CmdId, usize> = BTreeMap::new();
    for e in &out.messages {
        if let Message::PreAccept { id, cmd, .. } = &e.msg {
            sizes.insert(*id, cmd.len());
        }
    }
    let sizes: Vec<usize> = sizes.into_values().collect();
    assert_eq!(
        sizes,
        vec![2, 2, 1, 1],
        "batches of 400-byte commands under a 1000-byte limit"
    );
}

/// §2.5: with heartbeats, each new dependency set of a hot key lists only
/// what is not yet executed everywhere; the rest is its stable floor. With
/// heartbeats off (no floor) every instance lists the key's whole history.
/// Execution order stays identical on every replica either way.
#[test]
fn a_hot_keys_dependency_lists_stay_bounded() {
    const ROUNDS: u64 = 300;
    let run = |heartbeat_ticks: u64| {
        let opts = Options {
            heartbeat_ticks,
            ..Options::default()
        };
        let mut net = Net::new(3, opts);
        for i in 0..ROUNDS {
            net.propose((i % 3) as u16, "hot");
            net.run(|_, _| false);
            net.ticks(1);
        }
        net.ticks(20);
        let orders: Vec<_> = net.executed.values().cloned().collect();
        assert_eq!(orders.len(), 3);
        assert!(orders
            .iter()
            .all(|o| o.len() == ROUNDS as usize && *o == orders[0]));
        let listed: u64 = net.replicas.iter().map(|r| r.stats().deps_listed).sum();
        let max = net
            .replicas
            .iter()
            .map(|r| r.stats().deps_listed_max)
            .max()
            .unwrap();
        (listed, max)
    };
    let (with_floor, max_with_floor) = run(2);
    let (without, max_without) = run(0);
    // Without a floor instance i lists all i earlier ones.
    assert_eq!(without, ROUNDS * (ROUNDS - 1) / 2);
    assert_eq!(max_without, ROUNDS - 1);
    // With heartbeats every 2 ticks, a handful.
    assert!(max_with_floor <= 10, "max listed {max_with_floor}");
    assert!(with_floor <= ROUNDS * 10, "listed {with_floor}");
}
