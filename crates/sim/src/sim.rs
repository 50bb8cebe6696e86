//! The event loop: one [`Sim`] is one seeded run.
//!
//! A step is one event popped from the queue and processed: a message
//! delivery, a node's tick, a node's fsync, a client submission or retry, a
//! chaos decision (crash, partition), a restart or a partition heal. After
//! `config.steps` steps the heal happens (the GST): faults stop, every
//! crashed node restarts, links become timely and clients stop issuing new
//! requests. With `config.dead_at_heal = K`, K nodes (crashed ones first,
//! else up ones crashed at the heal) stay down for good instead; clients
//! only ever pick up nodes, so they retry at live ones. The run then
//! continues until quiescence of the live nodes (checked every
//! [`QUIESCENCE_CHECK_EVERY`] steps) or until the heal budget is exhausted,
//! which is a liveness violation.

use crate::clients::Clients;
use crate::invariants::{self, progress, Applied, Check, Checker, Fail, Input};
use crate::network::{EventQueue, Network, Partition, Time};
use crate::node::{PendingOutput, SimNode};
use crate::rng::{splitmix64, SimRng};
use crate::trace::Trace;
use crate::workload;
use crate::{Profile, RunReport, SimConfig, Violation};
use std::collections::{BTreeMap, BTreeSet};
use synod_epaxos::{Message, Options, Output, Replica, Stats};
use synod_types::{CmdId, Command, NodeId, Payload, QuorumConfig};

/// How often (in steps) the heal phase tests for quiescence.
pub const QUIESCENCE_CHECK_EVERY: u64 = 32;

enum Event {
    Deliver {
        from: NodeId,
        to: NodeId,
        msg: Message,
    },
    Tick {
        node: NodeId,
        incarnation: u64,
    },
    Fsync {
        node: NodeId,
        incarnation: u64,
    },
    ClientSubmit {
        client: usize,
    },
    ClientRetry {
        client: usize,
        request: u64,
        attempt: u32,
    },
    Chaos,
    Restart {
        node: NodeId,
    },
    PartitionHeal {
        handle: usize,
    },
    /// The config-service oracle's periodic step (only with `--reconfig`).
    Oracle,
}

/// Node slots with `--reconfig`: ids are never reused (a replica that
/// leaves never comes back under its id), so added replicas take fresh ids
/// up to this bound.
const RECONFIG_SLOTS: usize = 16;

/// One epoch change in progress (epaxos.md §8).
struct Change {
    from: QuorumConfig,
    to: QuorumConfig,
    /// K_s per reporting member of `from`.
    reports: BTreeMap<NodeId, BTreeSet<CmdId>>,
    /// K, once published.
    k: Option<BTreeSet<CmdId>>,
    added: Vec<NodeId>,
    removed: Vec<NodeId>,
}

/// The config service, modelled as an oracle (in a process it is the Raft
/// control plane, `synod-control`, whose `ControlState` applies the same K
/// rule; its completion rule is weaker: `n_E − f_E` members of E and one
/// of E+1 executed E, where this oracle waits for every member of E, so
/// that difference is not simulated here). It starts an epoch
/// change at a random chaos round, tells each member of E the new
/// configuration at its own random moment (each oracle step, each up
/// member that has not learned it yet learns it with probability 1/3; a
/// member that crashed before its `Epoch` write was durable learns it
/// again), collects the seal reports members release after their fsync,
/// publishes K (union of the reports) once `n_E − f_E` have arrived, and
/// delivers K the same way. E is complete when every member of E is up,
/// fsynced and reports its closure executed; then each added replica starts
/// from a snapshot of a staying member (`Durable::snapshot` +
/// `Replica::restart_in`), and each removed replica stops for good.
struct Oracle {
    current: QuorumConfig,
    change: Option<Change>,
    next_id: NodeId,
    started: u64,
    completed: u64,
}

pub(crate) struct Sim {
    cfg: SimConfig,
    qc: QuorumConfig,
    rng: SimRng,
    workload_rng: SimRng,
    queue: EventQueue<Event>,
    net: Network,
    nodes: Vec<SimNode>,
    clients: Clients,
    checker: Checker,
    trace: Trace,
    step: u64,
    healed_at: Option<u64>,
    violation: Option<Violation>,
    /// Stats of replica incarnations that crashed (a crash loses them).
    dead_stats: Stats,
    max_pending_execution: usize,
    commands_executed: u64,
    quiescent: bool,
    oracle: Oracle,
}

fn add_stats(acc: &mut Stats, s: &Stats) {
    acc.submitted += s.submitted;
    acc.deps_listed += s.deps_listed;
    acc.deps_listed_max = acc.deps_listed_max.max(s.deps_listed_max);
    acc.fast_commits += s.fast_commits;
    acc.slow_paths += s.slow_paths;
    acc.recoveries += s.recoveries;
    acc.nops += s.nops;
    acc.dropped += s.dropped;
}

/// A dependency set for the trace: in full, or abbreviated when large.
struct ShowDeps<'a>(&'a synod_types::Deps, bool);

impl std::fmt::Debug for ShowDeps<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ShowDeps(d, verbose) = *self;
        let ids = d.explicit();
        if verbose || ids.len() <= 6 {
            write!(f, "{d:?}")
        } else {
            if !d.floor().is_empty() {
                write!(f, "{:?} ∪ ", d.floor())?;
            }
            let last: Vec<_> = ids.iter().rev().take(3).collect();
            write!(
                f,
                "{{{} ids … {:?}, {:?}, {:?}}}",
                ids.len(),
                last[2],
                last[1],
                last[0]
            )
        }
    }
}

/// One-line description of a message for the trace.
fn describe(msg: &Message, verbose: bool) -> String {
    let sd = |d| ShowDeps(d, verbose);
    let pay = |p: &Payload| match p {
        Payload::Nop => "Nop".to_string(),
        Payload::Op(b) => format!("Op×{}", b.len()),
    };
    match msg {
        Message::PreAccept { id, dep, .. } => format!("PreAccept {id:?} D0={:?}", sd(dep)),
        Message::PreAcceptOk { id, dep } => format!("PreAcceptOk {id:?} dep={:?}", sd(dep)),
        Message::Accept {
            ballot,
            id,
            payload,
            dep,
        } => format!(
            "Accept {id:?} {ballot:?} {} dep={:?}",
            pay(payload),
            sd(dep)
        ),
        Message::AcceptOk { ballot, id } => format!("AcceptOk {id:?} {ballot:?}"),
        Message::Commit {
            ballot,
            id,
            payload,
            dep,
        } => format!(
            "Commit {id:?} {ballot:?} {} dep={:?}",
            pay(payload),
            sd(dep)
        ),
        Message::Recover { ballot, id } => format!("Recover {id:?} {ballot:?}"),
        Message::RecoverOk {
            ballot,
            id,
            abal,
            phase,
            dep,
            init_dep,
            cmd,
        } => format!(
            "RecoverOk {id:?} {ballot:?} abal={abal:?} {phase:?} cmd={} dep={:?} init_dep={:?}",
            invariants::show_payload(cmd),
            sd(dep),
            sd(init_dep)
        ),
        Message::Validate {
            ballot, id, dep, ..
        } => format!("Validate {id:?} {ballot:?} D={:?}", sd(dep)),
        Message::ValidateOk {
            ballot,
            id,
            conflicts,
        } => format!("ValidateOk {id:?} {ballot:?} I={conflicts:?}"),
        Message::Waiting { id, k } => format!("Waiting {id:?} k={k}"),
        Message::Learn { id } => format!("Learn {id:?}"),
        Message::Nack { id, bal } => format!("Nack {id:?} bal={bal:?}"),
        Message::Excluded { ballot, id } => format!("Excluded {id:?} {ballot:?}"),
        Message::Heartbeat {
            epoch,
            committed_prefix,
            executed_prefix,
        } => format!(
            "Heartbeat e{epoch} committed {committed_prefix:?} executed {executed_prefix:?}"
        ),
        Message::Forward { cmds } => {
            let reqs: Vec<String> = cmds
                .iter()
                .map(|c| format!("c{}r{}", c.client, c.request))
                .collect();
            format!("Forward [{}]", reqs.join(","))
        }
    }
}

impl Sim {
    pub(crate) fn new(cfg: SimConfig) -> Sim {
        if let Err(e) = cfg.validate() {
            panic!("invalid SimConfig: {e}");
        }
        let qc = QuorumConfig::standard(cfg.replicas).expect("validated");
        let mut seed_state = cfg.seed;
        let rng = SimRng::new(splitmix64(&mut seed_state));
        let workload_rng = SimRng::new(splitmix64(&mut seed_state));
        let n = qc.n();
        let reconfig = cfg.reconfig_p > 0.0;
        let slots = if reconfig { RECONFIG_SLOTS } else { n };
        let mut sim = Sim {
            net: Network::new(slots, cfg.faults.net.clone(), cfg.faults.enabled),
            clients: Clients::new(cfg.clients, n),
            checker: Checker::new(slots, qc.f(), qc.e(), cfg.disabled_invariants.clone()),
            oracle: Oracle {
                current: qc.clone(),
                change: None,
                next_id: n as NodeId,
                started: 0,
                completed: 0,
            },
            trace: Trace::new(cfg.trace_lines),
            qc,
            rng,
            workload_rng,
            queue: EventQueue::new(),
            nodes: Vec::with_capacity(n),
            step: 0,
            healed_at: None,
            violation: None,
            dead_stats: Stats::default(),
            max_pending_execution: 0,
            commands_executed: 0,
            quiescent: false,
            cfg,
        };
        if !sim.cfg.faults.enabled {
            let (lo, hi) = (sim.cfg.faults.net.delay_min, sim.cfg.faults.net.delay_max);
            sim.net = Network::new(slots, crate::network::NetConfig::timely(lo, hi), false);
        }
        for i in 0..n as NodeId {
            let replica = Replica::new(i, sim.qc.clone(), sim.options(i, 0));
            sim.nodes.push(SimNode::new(i, replica));
            let offset = sim.rng.below(sim.cfg.timing.tick_interval);
            sim.queue.schedule_at(
                offset,
                Event::Tick {
                    node: i,
                    incarnation: 0,
                },
            );
        }
        for c in 0..sim.cfg.clients {
            let at = sim.rng.below(sim.cfg.timing.tick_interval);
            sim.queue.schedule_at(at, Event::ClientSubmit { client: c });
        }
        let r = invariants::config_sanity::check(&sim.qc);
        sim.check(r);
        if reconfig {
            for i in n..slots {
                sim.nodes.push(SimNode::absent(i as NodeId));
            }
            let r = sim.checker.on_config(&sim.qc.clone());
            sim.check(r);
            sim.queue
                .schedule_at(sim.cfg.timing.tick_interval, Event::Oracle);
        }
        if sim.cfg.faults.enabled {
            sim.queue
                .schedule_at(sim.cfg.timing.chaos_interval, Event::Chaos);
        }
        sim
    }

    fn options(&self, node: NodeId, incarnation: u64) -> Options {
        let mut s = self.cfg.seed ^ (u64::from(node) << 48) ^ (incarnation << 32);
        let mut o = Options {
            thrifty: self.cfg.thrifty,
            forward_contended: !self.cfg.no_forward,
            mutation: self.cfg.mutation,
            seed: splitmix64(&mut s),
            ..Options::default()
        };
        if self.cfg.profile == Profile::Duel {
            // Impatient recoverers: more concurrent, duelling recoveries.
            o.commit_timeout_ticks = 6;
            o.exec_timeout_ticks = 4;
            o.recovery_backoff_max_ticks = 8;
        }
        o
    }

    fn now(&self) -> Time {
        self.queue.now()
    }

    fn healed(&self) -> bool {
        self.healed_at.is_some()
    }

    fn log(&mut self, f: impl FnOnce() -> String) {
        if self.trace.enabled() {
            let line = format!("#{} t{} {}", self.step, self.now(), f());
            self.trace.push(line);
        }
    }

    fn fail(&mut self, f: Fail) {
        if self.violation.is_none() {
            self.log(|| format!("VIOLATION {}: {}", f.invariant, f.message));
            self.violation = Some(Violation {
                seed: self.cfg.seed,
                invariant: f.invariant,
                message: f.message,
                step: self.step,
                time: self.now(),
                trace: self.trace.snapshot(),
                replay: self.cfg.replay_command(),
            });
        }
    }

    fn check(&mut self, r: Check) -> bool {
        match r {
            Ok(()) => true,
            Err(f) => {
                self.fail(f);
                false
            }
        }
    }

    pub(crate) fn run(mut self) -> RunReport {
        loop {
            if self.healed_at.is_none() && self.step >= self.cfg.steps {
                self.heal();
            }
            if self.violation.is_some() {
                break;
            }
            let Some((_, ev)) = self.queue.pop() else {
                break;
            };
            self.step += 1;
            // A panic (an assertion in the core, or in the harness) is a
            // violation of this seed, reported with its trace.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.process(ev)));
            if let Err(payload) = r {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "non-string panic payload".into());
                self.fail(Fail {
                    invariant: invariants::PANIC,
                    message,
                });
            }
            if self.violation.is_some() {
                break;
            }
            if let Some(h) = self.healed_at {
                let since = self.step - h;
                if since.is_multiple_of(QUIESCENCE_CHECK_EVERY) {
                    // An epoch change under way must finish too (its removed
                    // replicas stop, its added ones start).
                    if self.oracle.change.is_none()
                        && progress::missing(&self.nodes, &self.checker.ghost, &self.clients)
                            .is_none()
                    {
                        self.quiescent = true;
                        self.log(|| "quiescent: running final checks".into());
                        let r = self.checker.final_checks(
                            &self.nodes,
                            &self.clients,
                            self.cfg.linearizability_budget,
                        );
                        self.check(r);
                        break;
                    }
                    if since >= self.cfg.heal_steps_max {
                        let mut what =
                            progress::missing(&self.nodes, &self.checker.ghost, &self.clients)
                                .unwrap_or_default();
                        if let Some(ch) = &self.oracle.change {
                            what.push_str(&format!(
                                "; epoch change e{} → e{} unfinished (K published: {})",
                                ch.from.epoch,
                                ch.to.epoch,
                                ch.k.is_some()
                            ));
                        }
                        let budget = self.cfg.heal_steps_max;
                        self.fail(Fail {
                            invariant: progress::NAME,
                            message: format!("not quiescent {budget} steps after the heal: {what}"),
                        });
                        break;
                    }
                }
            }
        }
        self.report()
    }

    fn report(&self) -> RunReport {
        let mut stats = self.dead_stats.clone();
        for n in &self.nodes {
            if let Some(r) = &n.replica {
                add_stats(&mut stats, r.stats());
            }
        }
        RunReport {
            seed: self.cfg.seed,
            steps: self.step,
            heal_steps: self.healed_at.map_or(0, |h| self.step - h),
            end_time: self.now(),
            faults: self.net.counts.clone(),
            submitted: stats.submitted,
            deps_listed: stats.deps_listed,
            deps_listed_max: stats.deps_listed_max,
            fast_commits: stats.fast_commits,
            slow_paths: stats.slow_paths,
            recoveries: stats.recoveries,
            nops: stats.nops,
            commands_executed: self.commands_executed,
            max_pending_execution: self.max_pending_execution,
            max_recovery_round: self.checker.progress.max_round,
            requests_answered: self.clients.answered,
            requests_indeterminate: self.clients.indeterminate,
            quiescent: self.quiescent,
            dead_nodes: self
                .nodes
                .iter()
                .filter(|n| n.dead && n.replica.is_none() && n.incarnation > 0)
                .map(|n| n.id)
                .collect(),
            epochs_started: self.oracle.started,
            epochs_completed: self.oracle.completed,
            violation: self.violation.clone(),
        }
    }

    fn process(&mut self, ev: Event) {
        match ev {
            Event::Deliver { from, to, msg } => self.deliver(from, to, msg),
            Event::Tick { node, incarnation } => {
                let n = &self.nodes[node as usize];
                if !n.is_up() || n.incarnation != incarnation {
                    return;
                }
                let out = self.nodes[node as usize]
                    .replica
                    .as_mut()
                    .expect("up")
                    .tick();
                self.handle_output(node, Input::Tick, out);
                let next = self.cfg.timing.tick_interval;
                self.queue
                    .schedule_in(next, Event::Tick { node, incarnation });
            }
            Event::Fsync { node, incarnation } => {
                if self.nodes[node as usize].incarnation == incarnation {
                    self.fsync(node);
                }
            }
            Event::ClientSubmit { client } => self.client_submit(client),
            Event::ClientRetry {
                client,
                request,
                attempt,
            } => {
                let current = self.clients.clients[client]
                    .outstanding
                    .as_ref()
                    .is_some_and(|o| o.request == request && o.attempt == attempt);
                if current {
                    self.client_retry(client);
                }
            }
            Event::Chaos => self.chaos(),
            Event::Restart { node } => {
                let n = &self.nodes[node as usize];
                if !n.is_up() && !n.dead {
                    self.restart(node);
                }
            }
            Event::PartitionHeal { handle } => {
                self.log(|| format!("partition {handle} heals"));
                self.net.heal(handle);
            }
            Event::Oracle => {
                self.oracle_step();
                self.queue
                    .schedule_in(self.cfg.timing.tick_interval, Event::Oracle);
            }
        }
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, msg: Message) {
        if !self.nodes[to as usize].is_up() {
            self.net.counts.down_dropped += 1;
            return;
        }
        if !self.net.admit(from, to) {
            let v = self.cfg.trace_verbose;
            self.log(|| format!("n{from}→n{to} blocked: {}", describe(&msg, v)));
            return;
        }
        let v = self.cfg.trace_verbose;
        self.log(|| format!("n{from}→n{to} {}", describe(&msg, v)));
        let r = self
            .checker
            .on_deliver(&self.nodes[to as usize], from, &msg);
        if !self.check(r) {
            return;
        }
        let input = Input::Step {
            from,
            kind: msg.kind(),
            id: msg.id(),
        };
        let out = self.nodes[to as usize]
            .replica
            .as_mut()
            .expect("up")
            .step(from, msg);
        self.handle_output(to, input, out);
    }

    fn ensure_fsync(&mut self, node: NodeId) {
        let n = &mut self.nodes[node as usize];
        if !n.fsync_scheduled {
            n.fsync_scheduled = true;
            let incarnation = n.incarnation;
            let t = &self.cfg.timing;
            let d = self
                .rng
                .range_inclusive(t.fsync_delay_min, t.fsync_delay_max);
            self.queue
                .schedule_in(d, Event::Fsync { node, incarnation });
        }
    }

    fn summarize(node: NodeId, out: &Output) -> String {
        let writes: Vec<String> = out
            .writes
            .iter()
            .map(|w| match w {
                synod_epaxos::Write::Instance { id, record } => format!(
                    "{id:?}:{:?}/{:?}/{:?}{}",
                    record.phase,
                    record.bal,
                    record.abal,
                    match &record.cmd {
                        Some(Payload::Nop) => "/Nop",
                        _ => "",
                    }
                ),
                synod_epaxos::Write::NextSeq(s) => format!("next_seq={s}"),
                synod_epaxos::Write::Epoch(c) => format!("epoch={}{:?}", c.epoch, c.members()),
                synod_epaxos::Write::Sealed { epoch, known } => {
                    format!("sealed e{epoch} |Ks|={}", known.len())
                }
                synod_epaxos::Write::Closed { epoch, k } => {
                    format!("closed e{epoch} |K|={}", k.len())
                }
            })
            .collect();
        let execs: Vec<String> = out
            .executions
            .iter()
            .map(|e| format!("{:?}", e.id))
            .collect();
        let aborted: Vec<String> = out.aborted.iter().map(|a| format!("{:?}", a.id)).collect();
        format!(
            "  n{node} out: writes[{}] msgs={} exec[{}] aborted[{}]",
            writes.join(" "),
            out.messages.len(),
            execs.join(" "),
            aborted.join(" ")
        )
    }

    fn handle_output(&mut self, node: NodeId, input: Input, out: Output) {
        let i = node as usize;
        let pe = self.nodes[i]
            .replica
            .as_ref()
            .map_or(0, |r| r.pending_execution());
        self.max_pending_execution = self.max_pending_execution.max(pe);
        if out.is_empty() {
            return;
        }
        if self.trace.enabled() {
            let line = Self::summarize(node, &out);
            self.log(|| line);
        }
        let r = self
            .checker
            .on_output(&self.nodes[i], self.step, input, &out);
        if !self.check(r) {
            return;
        }
        if self.cfg.release_before_durable {
            // Broken variant (c): release now, persist later.
            let Output {
                writes,
                messages,
                executions,
                aborted,
                committed,
                seal_reports,
                ..
            } = out;
            let r = self.checker.on_release_point(node);
            if !self.check(r) {
                return;
            }
            self.release(
                node,
                Output {
                    writes: Vec::new(),
                    messages,
                    executions,
                    aborted,
                    committed,
                    seal_reports,
                    ..Output::default()
                },
            );
            if !writes.is_empty() {
                self.nodes[i].pending.push_back(PendingOutput {
                    output: Output {
                        writes,
                        ..Output::default()
                    },
                    released: true,
                });
                self.ensure_fsync(node);
            }
        } else if self.nodes[i].pending.is_empty() && out.writes.is_empty() {
            self.release(node, out);
        } else {
            self.nodes[i].pending.push_back(PendingOutput {
                output: out,
                released: false,
            });
            self.ensure_fsync(node);
        }
    }

    fn fsync(&mut self, node: NodeId) {
        let i = node as usize;
        self.nodes[i].fsync_scheduled = false;
        let pending: Vec<PendingOutput> = self.nodes[i].pending.drain(..).collect();
        if pending.is_empty() {
            return;
        }
        self.log(|| format!("n{node} fsync ({} outputs)", pending.len()));
        let mut releases = Vec::with_capacity(pending.len());
        for p in pending {
            let PendingOutput {
                output:
                    Output {
                        writes,
                        messages,
                        executions,
                        aborted,
                        committed,
                        seal_reports,
                        ..
                    },
                released,
            } = p;
            for w in writes {
                if let synod_epaxos::Write::Instance { id, record } = &w {
                    let r = self.checker.on_durable(node, self.step, *id, record);
                    if !self.check(r) {
                        return;
                    }
                }
                self.nodes[i].durable.apply(w);
            }
            if !released {
                releases.push(Output {
                    writes: Vec::new(),
                    messages,
                    executions,
                    aborted,
                    committed,
                    seal_reports,
                    ..Output::default()
                });
            }
        }
        let r = self.checker.on_release_point(node);
        if !self.check(r) {
            return;
        }
        for out in releases {
            self.release(node, out);
            if self.violation.is_some() {
                return;
            }
        }
    }

    /// Releases messages, executions and client replies of `out`, in order.
    fn release(&mut self, node: NodeId, out: Output) {
        let i = node as usize;
        for rep in out.seal_reports {
            if let Some(ch) = self.oracle.change.as_mut() {
                if ch.from.epoch == rep.epoch {
                    let n = rep.known.len();
                    ch.reports.entry(rep.from).or_insert(rep.known);
                    self.log(|| {
                        format!(
                            "oracle: seal report of e{} from n{node}, |Ks|={n}",
                            rep.epoch
                        )
                    });
                }
            }
        }
        for env in out.messages {
            let r = self.checker.on_send(&self.nodes[i], &env);
            if !self.check(r) {
                return;
            }
            let now = self.queue.now();
            let delays = self
                .net
                .plan_send(&mut self.rng, node as usize, env.to as usize, now);
            if delays.is_empty() {
                let d = describe(&env.msg, self.cfg.trace_verbose);
                let to = env.to;
                self.log(|| format!("n{node}→n{to} lost: {d}"));
            }
            let mut msg = Some(env.msg);
            for (k, d) in delays.iter().enumerate() {
                let m = if k + 1 == delays.len() {
                    msg.take().expect("last copy")
                } else {
                    msg.clone().expect("copy")
                };
                self.queue.schedule_in(
                    *d,
                    Event::Deliver {
                        from: node,
                        to: env.to,
                        msg: m,
                    },
                );
            }
        }
        for ex in out.executions {
            self.apply_execution(node, ex.id, &ex.batch);
            if self.violation.is_some() {
                return;
            }
        }
        for ab in out.aborted {
            for cmd in ab.batch.iter() {
                if let Some(c) = self.clients.waiting_at(cmd.client, cmd.request, node) {
                    let o = self.clients.clients[c]
                        .outstanding
                        .as_ref()
                        .expect("waiting");
                    let (request, attempt) = (o.request, o.attempt);
                    self.log(|| {
                        format!(
                            "client {} request {request}: aborted at n{node}",
                            cmd.client
                        )
                    });
                    self.queue.schedule_in(
                        1,
                        Event::ClientRetry {
                            client: c,
                            request,
                            attempt,
                        },
                    );
                }
            }
        }
    }

    fn apply_execution(&mut self, node: NodeId, id: CmdId, batch: &[Command]) {
        let i = node as usize;
        let durable = &mut self.nodes[i].durable;
        durable.executed.insert(id);
        durable.exec_log.push(id);
        let mut outcomes = Vec::with_capacity(batch.len());
        for cmd in batch {
            let fresh = match durable.app.session(cmd.client) {
                Some((last, _)) => cmd.request > last,
                None => true,
            };
            let outcome = durable.app.apply(cmd);
            outcomes.push((fresh, outcome));
        }
        self.commands_executed += outcomes.iter().filter(|(f, _)| *f).count() as u64;
        let applied: Vec<Applied<'_>> = batch
            .iter()
            .zip(&outcomes)
            .map(|(cmd, (fresh, outcome))| Applied {
                cmd,
                outcome,
                fresh: *fresh,
            })
            .collect();
        let r = self.checker.on_apply(
            node,
            id,
            batch,
            &applied,
            &self.nodes[i].durable.app,
            &self.clients,
        );
        drop(applied);
        if !self.check(r) {
            return;
        }
        for (cmd, (_, outcome)) in batch.iter().zip(outcomes) {
            if let Some(c) = self.clients.waiting_at(cmd.client, cmd.request, node) {
                self.log(|| {
                    format!(
                        "client {} request {} answered by n{node} ({id:?}): {}",
                        cmd.client,
                        cmd.request,
                        if outcome.is_applied() {
                            "applied"
                        } else {
                            "rejected"
                        }
                    )
                });
                self.clients.complete(c, outcome, self.step);
                let think = self.rng.below(self.cfg.timing.think_time_max + 1);
                self.queue
                    .schedule_in(think + 1, Event::ClientSubmit { client: c });
            }
        }
    }

    fn up_nodes(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.is_up())
            .map(|n| n.id)
            .collect()
    }

    fn propose_at(&mut self, node: NodeId, cmd: Command) {
        let i = node as usize;
        let out = self.nodes[i].replica.as_mut().expect("up").propose(cmd);
        self.handle_output(node, Input::Propose, out);
        if self.violation.is_none() && self.rng.chance(0.5) {
            let out = self.nodes[i].replica.as_mut().expect("up").flush();
            self.handle_output(node, Input::Flush, out);
        }
    }

    fn client_submit(&mut self, c: usize) {
        if self.healed() || self.clients.clients[c].outstanding.is_some() {
            return;
        }
        let now = self.now();
        let decision = if c == 0 && self.clients.clients[0].next_request == 1 {
            workload::set_stock(now)
        } else {
            let id = self.clients.clients[c].id;
            workload::next_decision(&mut self.workload_rng, self.cfg.conflict_rate, id, now)
        };
        let home = self.clients.clients[c].home;
        let node = if self.nodes[home as usize].is_up() {
            home
        } else {
            let up = self.up_nodes();
            *self.rng.pick(&up).expect("at most f nodes are down")
        };
        let cmd = self.clients.invoke(c, decision, node, self.step);
        let (client, request) = (cmd.client, cmd.request);
        self.log(|| format!("client {client} request {request} → n{node}"));
        self.propose_at(node, cmd);
        self.queue.schedule_in(
            self.cfg.timing.client_timeout,
            Event::ClientRetry {
                client: c,
                request,
                attempt: 1,
            },
        );
    }

    fn client_retry(&mut self, c: usize) {
        let o = self.clients.clients[c]
            .outstanding
            .clone()
            .expect("outstanding");
        if !self.healed() && o.attempt >= self.cfg.timing.client_attempts_max {
            let id = self.clients.clients[c].id;
            self.log(|| format!("client {id} gives up on request {}", o.request));
            self.clients.give_up(c);
            let think = self.rng.below(self.cfg.timing.think_time_max + 1);
            self.queue
                .schedule_in(think + 1, Event::ClientSubmit { client: c });
            return;
        }
        let up = self.up_nodes();
        let others: Vec<NodeId> = up.iter().copied().filter(|n| *n != o.node).collect();
        let node = *self
            .rng
            .pick(if others.is_empty() { &up } else { &others })
            .expect("some node is up");
        let attempt = o.attempt + 1;
        {
            let out = self.clients.clients[c]
                .outstanding
                .as_mut()
                .expect("outstanding");
            out.node = node;
            out.attempt = attempt;
        }
        let id = self.clients.clients[c].id;
        self.log(|| {
            format!(
                "client {id} retries request {} at n{node} (attempt {attempt})",
                o.request
            )
        });
        self.propose_at(node, o.command);
        self.queue.schedule_in(
            self.cfg.timing.client_timeout,
            Event::ClientRetry {
                client: c,
                request: o.request,
                attempt,
            },
        );
    }

    fn chaos(&mut self) {
        if self.healed() || !self.cfg.faults.enabled {
            return;
        }
        let fc = self.cfg.faults.clone();
        let n = self.nodes.len();
        let down = n - self.up_nodes().len();
        let candidates = if self.cfg.reconfig_p > 0.0 {
            self.crash_candidates()
        } else if down < self.qc.f() {
            self.up_nodes()
        } else {
            Vec::new()
        };
        if !candidates.is_empty() && self.rng.chance(fc.crash_p) {
            let victim = *self.rng.pick(&candidates).expect("some node is up");
            self.crash(victim);
            let d = self.rng.range_inclusive(fc.downtime_min, fc.downtime_max);
            self.queue.schedule_in(d, Event::Restart { node: victim });
        }
        for symmetric in [true, false] {
            let p = if symmetric {
                fc.partition_symmetric_p
            } else {
                fc.partition_asymmetric_p
            };
            if self.rng.chance(p) {
                let part = if symmetric {
                    Partition::random_symmetric(&mut self.rng, n)
                } else {
                    Partition::random_asymmetric(&mut self.rng, n)
                };
                let desc = format!("{part:?}");
                let handle = self.net.start_partition(part);
                self.log(|| format!("partition {handle} starts: {desc}"));
                let d = self.rng.range_inclusive(fc.partition_min, fc.partition_max);
                self.queue.schedule_in(d, Event::PartitionHeal { handle });
            }
        }
        if self.cfg.reconfig_p > 0.0
            && self.oracle.change.is_none()
            && self.rng.chance(self.cfg.reconfig_p)
        {
            self.start_change();
        }
        self.queue
            .schedule_in(self.cfg.timing.chaos_interval, Event::Chaos);
    }

    // ----------------------------------------------------------------------
    // Reconfiguration: the config-service oracle (see `Oracle`)

    /// Up nodes whose crash keeps every configuration in use (the current
    /// one, and the one being retired) within its `f` down members (an
    /// added member not yet started counts as down).
    fn crash_candidates(&self) -> Vec<NodeId> {
        let mut active = vec![&self.oracle.current];
        if let Some(ch) = &self.oracle.change {
            active.push(&ch.from);
        }
        let down = |c: &QuorumConfig| {
            c.members()
                .iter()
                .filter(|m| !self.nodes[**m as usize].is_up())
                .count()
        };
        self.up_nodes()
            .into_iter()
            .filter(|v| {
                active
                    .iter()
                    .filter(|c| c.contains(*v))
                    .all(|c| down(c) < c.f())
            })
            .collect()
    }

    fn start_change(&mut self) {
        let cur = self.oracle.current.clone();
        let n = cur.n();
        let fresh = (self.oracle.next_id as usize) < RECONFIG_SLOTS;
        let mut ops = Vec::new();
        if n < 7 && fresh {
            ops.push("add");
        }
        if n > 3 {
            ops.push("remove");
        }
        if fresh {
            ops.push("replace");
        }
        let Some(&op) = self.rng.pick(&ops) else {
            return;
        };
        let mut members = cur.members().to_vec();
        let mut removed = Vec::new();
        let mut added = Vec::new();
        if op != "add" {
            let j = self.rng.below(members.len() as u64) as usize;
            removed.push(members.remove(j));
        }
        if op != "remove" {
            added.push(self.oracle.next_id);
            members.push(self.oracle.next_id);
            self.oracle.next_id += 1;
        }
        let n = members.len();
        let f = (n - 1) / 2;
        let mut e = f;
        while e > 1 && n < 2 * e + f - 1 {
            e -= 1;
        }
        let to = QuorumConfig::new(cur.epoch + 1, members, f, e).expect("I22 by construction");
        let r = self.checker.on_config(&to);
        if !self.check(r) {
            return;
        }
        let desc = format!(
            "{op}: e{} {:?} → e{} {:?} (f={f}, e={e})",
            cur.epoch,
            cur.members(),
            to.epoch,
            to.members()
        );
        self.log(|| format!("oracle: epoch change {desc}"));
        self.oracle.started += 1;
        self.oracle.current = to.clone();
        self.oracle.change = Some(Change {
            from: cur,
            to,
            reports: BTreeMap::new(),
            k: None,
            added,
            removed,
        });
    }

    fn oracle_step(&mut self) {
        let Some(ch) = &self.oracle.change else {
            return;
        };
        let (from, to, k) = (ch.from.clone(), ch.to.clone(), ch.k.clone());
        let e = from.epoch;
        for &v in from.members() {
            if self.violation.is_some() || !self.nodes[v as usize].is_up() || !self.rng.chance(0.33)
            {
                continue;
            }
            let r = self.nodes[v as usize].replica.as_mut().expect("up");
            let out = if r.config().epoch < to.epoch {
                r.begin_epoch(to.clone())
            } else if let Some(k) = k.as_ref().filter(|_| {
                r.epoch_state()
                    .seals
                    .get(&e)
                    .is_some_and(|s| s.closed.is_none())
            }) {
                r.close_epoch(e, k.clone())
            } else {
                continue;
            };
            self.handle_output(v, Input::Reconfig, out);
        }
        if self.violation.is_some() {
            return;
        }
        let ch = self.oracle.change.as_mut().expect("in progress");
        if ch.k.is_none() && ch.reports.len() >= from.slow_quorum() {
            let mut k = BTreeSet::new();
            for ks in ch.reports.values() {
                k.extend(ks.iter().copied());
            }
            let (reports, size) = (ch.reports.len(), k.len());
            ch.k = Some(k.clone());
            self.log(|| format!("oracle: K of e{e} published from {reports} reports, |K|={size}"));
            let r = self.checker.on_publish(e, &k);
            if !self.check(r) {
                return;
            }
        }
        let ch = self.oracle.change.as_ref().expect("in progress");
        let complete = ch.k.is_some()
            && from.members().iter().all(|&v| {
                let node = &self.nodes[v as usize];
                node.pending.is_empty()
                    && node.replica.as_ref().is_some_and(|r| r.epoch_complete(e))
            });
        if !complete {
            return;
        }
        let ch = self.oracle.change.take().expect("in progress");
        let donor = *from
            .members()
            .iter()
            .find(|m| to.contains(**m))
            .expect("a member stays");
        self.log(|| format!("oracle: e{e} complete; donor n{donor}"));
        for &a in &ch.added {
            let snap = self.nodes[donor as usize].durable.snapshot();
            let node = &mut self.nodes[a as usize];
            node.durable = snap;
            node.dead = false;
            self.checker.on_join(a, donor);
            self.log(|| format!("oracle: n{a} joins from n{donor}'s snapshot"));
            self.restart(a);
        }
        for &r in &ch.removed {
            if self.nodes[r as usize].is_up() {
                self.crash(r);
            }
            self.nodes[r as usize].dead = true;
            self.log(|| format!("oracle: n{r} removed"));
        }
        self.oracle.completed += 1;
    }

    fn crash(&mut self, node: NodeId) {
        let i = node as usize;
        if let Some(r) = &self.nodes[i].replica {
            add_stats(&mut self.dead_stats, r.stats());
        }
        let lost = self.nodes[i].crash();
        self.net.counts.crashes += 1;
        self.log(|| format!("n{node} CRASHES, losing {} un-synced outputs", lost.len()));
        let r = self.checker.on_crash(node, &lost);
        if !self.check(r) {
            return;
        }
        // Connections to the crashed node reset: its clients retry soon.
        for c in 0..self.clients.clients.len() {
            if let Some(o) = &self.clients.clients[c].outstanding {
                if o.node == node {
                    let (request, attempt) = (o.request, o.attempt);
                    self.queue.schedule_in(
                        1,
                        Event::ClientRetry {
                            client: c,
                            request,
                            attempt,
                        },
                    );
                }
            }
        }
    }

    fn restart(&mut self, node: NodeId) {
        let i = node as usize;
        let incarnation = self.nodes[i].incarnation;
        let options = self.options(node, incarnation);
        let d = &self.nodes[i].durable;
        let replica = Replica::restart_in(
            node,
            d.epochs(&self.qc),
            options,
            d.records.clone(),
            d.next_seq,
            d.processed(),
        );
        self.nodes[i].replica = Some(replica);
        self.net.counts.restarts += 1;
        self.log(|| format!("n{node} RESTARTS (incarnation {incarnation})"));
        let r = self.checker.on_restart(&self.nodes[i]);
        if !self.check(r) {
            return;
        }
        let offset = 1 + self.rng.below(self.cfg.timing.tick_interval);
        self.queue
            .schedule_in(offset, Event::Tick { node, incarnation });
    }

    fn heal(&mut self) {
        self.healed_at = Some(self.step);
        self.checker.progress.heal();
        self.net.heal_all();
        self.log(|| "HEAL: faults stop, crashed nodes restart, links timely".into());
        for node in self.pick_dead_at_heal() {
            if self.nodes[node as usize].is_up() {
                self.crash(node);
            }
            self.nodes[node as usize].dead = true;
            self.log(|| format!("n{node} stays down for good"));
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_up() && !self.nodes[i].dead {
                self.restart(i as NodeId);
            }
        }
    }

    /// The `dead_at_heal` nodes that stay down: nodes down at the heal
    /// first, then up ones, each group in a seeded random order. Draws no
    /// random number when `dead_at_heal` is 0, so such runs are unchanged.
    fn pick_dead_at_heal(&mut self) -> Vec<NodeId> {
        let k = self.cfg.dead_at_heal;
        if k == 0 {
            return Vec::new();
        }
        let (mut down, mut up): (Vec<NodeId>, Vec<NodeId>) = self
            .nodes
            .iter()
            .map(|n| n.id)
            .partition(|&id| !self.nodes[id as usize].is_up());
        let mut picked = Vec::with_capacity(k);
        for group in [&mut down, &mut up] {
            while picked.len() < k && !group.is_empty() {
                let j = self.rng.below(group.len() as u64) as usize;
                picked.push(group.swap_remove(j));
            }
        }
        assert_eq!(picked.len(), k, "dead_at_heal <= f < n (validated)");
        picked
    }
}
