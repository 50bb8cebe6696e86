//! Data-driven adversarial scenarios: `shared/design/epaxos.md` §7, S1–S11.
//!
//! Every file `crates/sim/scenarios/*.scn` is one scenario (style.md items
//! 8–9: scenarios are data; each file's header cites the §7 entry it
//! reproduces). The runner drives real [`Replica`]s by hand: every message any
//! replica produces goes into a HELD pool, and nothing is delivered unless a
//! command says so. After every protocol step the runner checks the safety
//! invariants of epaxos.md §6 over all replicas (crashed ones' last state
//! included) and over ghost state it keeps itself.
//!
//! # File format
//!
//! One command per line; `#` starts a comment. Tokens are separated by
//! whitespace. Spec process `p1..pn` is node `0..n-1`. `<p>` is a node number,
//! `<label>` names a command id (introduced by `submit` or `id`).
//!
//! A message `<filter>` is `<Kind> <label> <from> <to>`: `Kind` as in
//! `Message::kind` (`PreAccept`, `RecoverOk`, ...), `*` matches anything, `-`
//! as the label matches messages without an id (`Heartbeat`), trailing parts
//! may be left out; then options `round R` (the message's ballot round), `k K`
//! (`Waiting`'s k), `nop` / `op` (an `Accept`'s or `Commit`'s payload).
//! Commands:
//!
//! ```text
//! replicas N                       QuorumConfig::standard(N); required before any action
//! option strict                    strict_paper_mode (§3.7); the file then runs in strict mode only
//! option thrifty                   §3.8
//! option mutation single-ballot    Mutation::SingleBallot (S1 mutation)
//! option mutation fast-quorum-too-small
//! option heartbeat|fast-timeout|retransmit|commit-timeout|exec-timeout N   (ticks; 0 disables heartbeats)
//! option auto-recovery             let timers start recoveries (off by default)
//! option forward-contended         route contended keys to their owner (off by default, so
//!                                  that `submit <p>` always makes p the origin)
//! modes relaxed|strict|both        which modes to run (default: both, see below)
//! id <label> <origin> <seq>        name an id that is never submitted
//! submit <p> <label> <keys>        propose + flush at p; keys `k` or `k,j`; `k:r` is a read
//! deliver <filter>                 deliver the OLDEST matching held message (error if none);
//!                                  Kind and label are required
//! deliver-all [<filter>]           deliver matching messages, oldest first, including newly
//!                                  produced ones, until none is held
//! drop <filter>                    discard ALL matching held messages (error if none)
//! dup <filter>                     hold a second copy of the oldest match (at the end)
//! inject <from> <to> Commit <label> op|nop [deps {..}] [round R]
//!                                  deliver a forged Commit (S2c); `op` is the label's own batch
//! inject <from> <to> Waiting <label> k K      deliver a forged Waiting (S11)
//! inject <from> <to> Recover <label> round R  deliver a forged Recover at (R, from) (S11)
//! tick <p>|all <k>                 k ticks at p (or at every live node, in id order, k times)
//! recover <p> <label>              Replica::recover
//! crash <p>                        p stops; its held outgoing messages vanish; messages
//!                                  delivered to it while down are dropped
//! restart <p>                      Replica::restart from p's durable writes (every write is
//!                                  durable at once) and its processed set
//! dump                             print held messages and every record (authoring aid)
//! expect committed <label> op|nop [deps {l1,l2}] [at <p>|at all-live]   (default all-live)
//! expect not-committed <label> [at <p>|at all-live]
//! expect chosen <label> op|nop [deps {..}]   ghost: that value is chosen (n−f votes at one
//!                                  ballot, or the origin's fast decision)
//! expect phase <label> <Initial|PreAccepted|Accepted|Committed|none> at <p>
//! expect executed|not-executed <label> [at <p>|at all-live]
//! expect order <l1> <l2> [at <p>|at all-live]   both executed there, l1 first
//! expect aborted|not-aborted <label>             the origin's Output.aborted reported it
//! expect fast|slow <label>                       the origin's initial-ballot decision
//! expect held [count N] <filter>  N held matches (default: at least one)
//! expect violation <Name>          this invariant (or core assertion) must fire by the end;
//!                                  it is then not a failure
//! epoch <E> <m1,m2,..> <f> <e>     define configuration E (epaxos.md §8; the config service)
//! begin <p> <E>                    Replica::begin_epoch(config E) at p (seals the epoch before)
//! publish <E>                      K of sealed epoch E = union of the seal reports so far
//!                                  (error unless at least n−f members of E reported)
//! close <p> <E>                    Replica::close_epoch(E, K) at p
//! expect in-k|not-in-k <label> <E> the published K of E contains (or not) the label
//! expect complete <E> at <p>       p reports E's closure executed (Replica::epoch_complete)
//! ```
//!
//! `submit` names its id in the submitting replica's current epoch. I2 is
//! checked within an epoch only: across epochs the epoch barrier orders
//! conflicting commands (I17 still compares execution orders).
//!
//! A line may start with `strict:` or `relaxed:` to apply in that mode only.
//!
//! **Modes.** §7 says to run every scenario in `strict_paper_mode` too. Unless a
//! file says `option strict` or `modes ...`, it runs twice, relaxed (§3.7.1:
//! Commit applies at any ballot) and strict (the paper's guard `bal = b`;
//! a Commit failing it is dropped). Expectations that rely on §3.7.1 (for
//! example a replica that never joined the deciding ballot learning the
//! commit) carry a `relaxed:` prefix.
//!
//! **Known failures.** A comment line `# known-failing: <reason>` (or
//! `# known-failing(strict): ...`, `(relaxed)`) marks a scenario that shows a
//! core bug; the reason is that one line, details follow in comments. Its
//! failures are reported as expected, and an unexpected pass fails the test
//! so the marker gets removed.
//!
//! `SCENARIO_ONLY=<substring>` runs only the matching files;
//! `SCENARIO_DIR=<dir>` reads scenarios from elsewhere (authoring aids).
//!
//! # Invariants checked after every step (epaxos.md §6)
//!
//! I1 Agreement (ghost: every value ever committed per id, across time and
//! crashes); I2 Visibility; I3 single chosen value (ghost: chosen at b when
//! n−f distinct replicas wrote Accepted at abal = b with it, or the origin went
//! from PreAccepted to Committed at the initial ballot); I4 Commit soundness
//! (a Commit is only sent for a chosen value); I5 chosen stability; I6 one
//! proposal per ballot, owned by its sender, sent while the sender holds that
//! promise; I7 fast-path discipline (a fresh initial-ballot Commit comes from
//! the origin, carries D0, with the origin's `bal` still initial and ≥ n−e
//! PreAcceptOk(D0) delivered, own included); I8 Nop shape; I9 committed
//! payload integrity; I10 ballot monotonicity; I11 phase monotonicity; I12
//! commit immutability; I14 promise discipline (AcceptOk/RecoverOk/ValidateOk
//! at b only with `bal = b`); I15/I16 execution only of committed ids, at
//! most once; I17 consistent execution order of conflicting pairs. A panic
//! inside the core (its own assertions) is caught per step and reported as a
//! violation named after the first `I<n>` in its text (else `panic`); the
//! panicking replica is then treated as crashed.
//!
//! S9 (durability faults) is not a scenario file: it needs crashes between a
//! write and its fsync, which the randomized simulator covers (see
//! `scenarios/S09-durability.md`). S12 files keep the membership (a new
//! epoch of the same replicas); growing and shrinking are covered by
//! `crates/epaxos/tests/epochs.rs` and the simulator's `--reconfig`.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Once};
use synod_epaxos::{InstanceRecord, Message, Mutation, Options, Output, Replica, Write};
use synod_types::{
    batches_conflict, Access, Ballot, Batch, CmdId, Command, Deps, NodeId, Payload, Phase,
    QuorumConfig,
};

/// Most protocol steps one `deliver-all` may take before it is declared a
/// livelock (scenarios are a few dozen messages).
const DELIVER_ALL_STEPS_MAX: usize = 20_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Relaxed,
    Strict,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Relaxed => "relaxed",
            Mode::Strict => "strict",
        }
    }
}

/// A parsed scenario file.
struct Scenario {
    name: String,
    /// (line number, text without comment), non-empty lines only.
    lines: Vec<(usize, String)>,
    modes: Vec<Mode>,
    /// `None` = known-failing in every mode.
    known_failing: Vec<(Option<Mode>, String)>,
}

impl Scenario {
    fn parse(name: &str, text: &str) -> Scenario {
        let mut lines = Vec::new();
        let mut modes = vec![Mode::Relaxed, Mode::Strict];
        let mut known_failing = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let trimmed = raw.trim();
            if let Some(rest) = trimmed.strip_prefix('#') {
                let rest = rest.trim();
                if let Some(reason) = rest.strip_prefix("known-failing:") {
                    known_failing.push((None, reason.trim().to_string()));
                } else if let Some(reason) = rest.strip_prefix("known-failing(strict):") {
                    known_failing.push((Some(Mode::Strict), reason.trim().to_string()));
                } else if let Some(reason) = rest.strip_prefix("known-failing(relaxed):") {
                    known_failing.push((Some(Mode::Relaxed), reason.trim().to_string()));
                }
            }
            let body = raw.split('#').next().unwrap_or("").trim();
            if body.is_empty() {
                continue;
            }
            let toks: Vec<&str> = body.split_whitespace().collect();
            match toks.as_slice() {
                ["option", "strict"] => modes = vec![Mode::Strict],
                ["modes", "relaxed"] => modes = vec![Mode::Relaxed],
                ["modes", "strict"] => modes = vec![Mode::Strict],
                ["modes", "both"] => modes = vec![Mode::Relaxed, Mode::Strict],
                _ => {}
            }
            lines.push((i + 1, body.to_string()));
        }
        Scenario {
            name: name.to_string(),
            lines,
            modes,
            known_failing,
        }
    }

    fn known_failing_in(&self, mode: Mode) -> Option<&str> {
        self.known_failing
            .iter()
            .find(|(m, _)| m.is_none_or(|m| m == mode))
            .map(|(_, r)| r.as_str())
    }
}

/// A value an instance can decide.
type Value = (Payload, Deps);

/// The processes that wrote one value as Accepted at one ballot.
type Votes = Vec<(Value, BTreeSet<NodeId>)>;

#[derive(Debug)]
struct Violation {
    name: String,
    detail: String,
    line: usize,
}

struct Node {
    replica: Replica,
    up: bool,
    /// Every write, applied at once (durable at once).
    durable: BTreeMap<CmdId, InstanceRecord>,
    next_seq: u64,
    /// exec_p across incarnations.
    executed: Vec<CmdId>,
    aborted: BTreeSet<CmdId>,
    /// The executor's processed set as persisted at the last crash.
    processed: BTreeSet<CmdId>,
    /// `Epoch`, `Sealed` and `Closed` writes, in order.
    epoch_writes: Vec<Write>,
}

struct Held {
    from: NodeId,
    to: NodeId,
    msg: Message,
}

/// Ghost state (epaxos.md §6): never visible to the protocol.
#[derive(Default)]
struct Ghost {
    /// `orig(id) = (c, D0)` as submitted.
    orig: BTreeMap<CmdId, (Batch, Deps)>,
    /// Every value ever committed anywhere, per id.
    committed: BTreeMap<CmdId, Vec<Value>>,
    /// Per (id, b): values written as Accepted at abal = b, with the writers.
    votes: BTreeMap<(CmdId, Ballot), Votes>,
    /// Per id: (ballot, value) chosen.
    chosen: BTreeMap<CmdId, Vec<(Ballot, Value)>>,
    /// Every Accept ever sent: (id, b) → (sender, value).
    accepts: BTreeMap<(CmdId, Ballot), Vec<(NodeId, Value)>>,
    /// Senders whose PreAcceptOk(id, D0) was delivered to the origin.
    pre_accept_ok_d0: BTreeMap<CmdId, BTreeSet<NodeId>>,
    fast: BTreeSet<CmdId>,
    slow: BTreeSet<CmdId>,
}

enum Input {
    Flush(Command),
    Deliver(NodeId, Message),
    Tick,
    Recover(CmdId),
    Begin(QuorumConfig),
    Close(u64, BTreeSet<CmdId>),
}

/// Message filter of `deliver`, `drop`, `dup`, `expect held`.
struct Filter {
    kind: Option<String>,
    id: Option<Option<CmdId>>,
    from: Option<NodeId>,
    to: Option<NodeId>,
    round: Option<u32>,
    /// `Waiting`'s k.
    k: Option<usize>,
    /// Accept/Commit payload is (not) Nop.
    nop: Option<bool>,
}

impl Filter {
    fn matches(&self, h: &Held) -> bool {
        self.kind.as_deref().is_none_or(|k| k == h.msg.kind())
            && self.id.is_none_or(|id| id == h.msg.id())
            && self.from.is_none_or(|f| f == h.from)
            && self.to.is_none_or(|t| t == h.to)
            && self
                .round
                .is_none_or(|r| ballot_of(&h.msg).is_some_and(|b| b.round == r))
            && self
                .k
                .is_none_or(|k| matches!(h.msg, Message::Waiting { k: hk, .. } if hk == k))
            && self.nop.is_none_or(|nop| match &h.msg {
                Message::Accept { payload, .. } | Message::Commit { payload, .. } => {
                    payload.is_nop() == nop
                }
                _ => false,
            })
    }
}

fn ballot_of(msg: &Message) -> Option<Ballot> {
    match msg {
        Message::Accept { ballot, .. }
        | Message::AcceptOk { ballot, .. }
        | Message::Commit { ballot, .. }
        | Message::Recover { ballot, .. }
        | Message::RecoverOk { ballot, .. }
        | Message::Validate { ballot, .. }
        | Message::ValidateOk { ballot, .. } => Some(*ballot),
        _ => None,
    }
}

struct Run {
    mode: Mode,
    opts: Options,
    cfg: Option<QuorumConfig>,
    nodes: Vec<Node>,
    held: Vec<Held>,
    labels: BTreeMap<String, CmdId>,
    ghost: Ghost,
    violations: Vec<Violation>,
    expected_violations: BTreeSet<String>,
    line: usize,
    /// Expectation failures and unexpected violations: "line N: ...".
    failures: Vec<String>,
    request: u64,
    /// Configurations defined by `epoch`.
    epochs: BTreeMap<u64, QuorumConfig>,
    /// Seal reports per epoch: reporter → K_s.
    reports: BTreeMap<u64, BTreeMap<NodeId, BTreeSet<CmdId>>>,
    /// Published K per epoch.
    closed: BTreeMap<u64, BTreeSet<CmdId>>,
}

/// `a ⋈ b` for the pairs I2 and I17 constrain: two non-Nop payloads.
fn payload_conflict(a: &Payload, b: &Payload) -> bool {
    match (a, b) {
        (Payload::Op(x), Payload::Op(y)) => batches_conflict(x, y),
        _ => false,
    }
}

thread_local! {
    /// Set while a core call runs under `catch_unwind`: its assertion is
    /// reported as a violation, so the panic hook stays quiet.
    static IN_CORE: Cell<bool> = const { Cell::new(false) };
}

/// Installs (once) a panic hook that is silent for caught core panics.
fn quiet_core_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !IN_CORE.with(Cell::get) {
                default(info);
            }
        }));
    });
}

/// Runs a core call, turning a panic into its message.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    quiet_core_panics();
    IN_CORE.with(|c| c.set(true));
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    IN_CORE.with(|c| c.set(false));
    r.map_err(|e| panic_text(&*e))
}

fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = e.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".to_string()
    }
}

/// The first `I<digits>` token of a core assertion message.
fn invariant_name(text: &str) -> String {
    let b = text.as_bytes();
    for i in 0..b.len() {
        let starts_word = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        if b[i] == b'I' && starts_word {
            let digits: String = text[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            if !digits.is_empty() {
                return format!("I{digits}");
            }
        }
    }
    "panic".to_string()
}

impl Run {
    fn new(mode: Mode) -> Run {
        let opts = Options {
            auto_recovery: false,
            // `submit <p>` means "p is the origin" (§7 scripts name origins);
            // contention routing would move the command elsewhere.
            forward_contended: false,
            strict_paper_mode: mode == Mode::Strict,
            ..Options::default()
        };
        Run {
            mode,
            opts,
            cfg: None,
            nodes: Vec::new(),
            held: Vec::new(),
            labels: BTreeMap::new(),
            ghost: Ghost::default(),
            violations: Vec::new(),
            expected_violations: BTreeSet::new(),
            line: 0,
            failures: Vec::new(),
            request: 0,
            epochs: BTreeMap::new(),
            reports: BTreeMap::new(),
            closed: BTreeMap::new(),
        }
    }

    fn cfg(&self) -> &QuorumConfig {
        self.cfg.as_ref().expect("replicas declared")
    }

    fn name_of(&self, id: CmdId) -> String {
        self.labels
            .iter()
            .find(|(_, v)| **v == id)
            .map_or_else(|| format!("{id:?}"), |(k, _)| k.clone())
    }

    fn show_value(&self, v: &Value) -> String {
        let p = match &v.0 {
            Payload::Nop => "nop".to_string(),
            Payload::Op(b) => {
                let names: Vec<String> = b
                    .iter()
                    .map(|c| String::from_utf8_lossy(&c.body).into_owned())
                    .collect();
                format!("op[{}]", names.join(","))
            }
        };
        format!("({p}, {})", self.show_deps(&v.1))
    }

    fn show_deps(&self, d: &Deps) -> String {
        let names: Vec<String> = d.explicit().iter().map(|x| self.name_of(*x)).collect();
        if d.floor().is_empty() {
            format!("{{{}}}", names.join(","))
        } else {
            format!("{:?} ∪ {{{}}}", d.floor(), names.join(","))
        }
    }

    fn show_msg(&self, h: &Held) -> String {
        let id = h
            .msg
            .id()
            .map_or_else(|| "-".to_string(), |i| self.name_of(i));
        let extra = match &h.msg {
            Message::PreAccept { dep, .. } | Message::PreAcceptOk { dep, .. } => {
                format!(" dep={}", self.show_deps(dep))
            }
            Message::Accept {
                ballot,
                payload,
                dep,
                ..
            }
            | Message::Commit {
                ballot,
                payload,
                dep,
                ..
            } => format!(
                " {ballot:?} {}",
                self.show_value(&(payload.clone(), dep.clone()))
            ),
            Message::RecoverOk {
                ballot,
                abal,
                phase,
                dep,
                init_dep,
                ..
            } => format!(
                " {ballot:?} abal={abal:?} {phase:?} dep={} init_dep={}",
                self.show_deps(dep),
                self.show_deps(init_dep)
            ),
            Message::ValidateOk {
                ballot, conflicts, ..
            } => {
                let c: Vec<String> = conflicts
                    .iter()
                    .map(|(x, p)| format!("{}:{p:?}", self.name_of(*x)))
                    .collect();
                format!(" {ballot:?} I=[{}]", c.join(","))
            }
            Message::Waiting { k, .. } => format!(" k={k}"),
            Message::Nack { bal, .. } => format!(" bal={bal:?}"),
            m => ballot_of(m).map_or_else(String::new, |b| format!(" {b:?}")),
        };
        format!("{} {id} {}->{}{extra}", h.msg.kind(), h.from, h.to)
    }

    fn held_listing(&self) -> String {
        let mut s = String::new();
        for h in &self.held {
            let _ = write!(s, "\n      held: {}", self.show_msg(h));
        }
        s
    }

    // ------------------------------------------------------------------
    // Violations and failures

    fn violation(&mut self, name: &str, detail: String) {
        if self
            .violations
            .iter()
            .any(|v| v.name == name && v.detail == detail)
        {
            return;
        }
        if !self.expected_violations.contains(name) {
            self.failures.push(format!(
                "line {}: unexpected violation {name}: {detail}",
                self.line
            ));
        }
        self.violations.push(Violation {
            name: name.to_string(),
            detail,
            line: self.line,
        });
    }

    fn fail(&mut self, msg: String) {
        self.failures.push(format!("line {}: {msg}", self.line));
    }

    // ------------------------------------------------------------------
    // Driving replicas

    fn ensure_replicas(&mut self) -> Result<(), String> {
        if !self.nodes.is_empty() {
            return Ok(());
        }
        let cfg = self
            .cfg
            .clone()
            .ok_or("`replicas N` must come before this")?;
        for &m in cfg.members() {
            self.nodes.push(Node {
                replica: Replica::new(m, cfg.clone(), self.opts.clone()),
                up: true,
                durable: BTreeMap::new(),
                next_seq: 0,
                executed: Vec::new(),
                aborted: BTreeSet::new(),
                processed: BTreeSet::new(),
                epoch_writes: Vec::new(),
            });
        }
        Ok(())
    }

    fn node(&self, p: NodeId) -> Result<&Node, String> {
        self.nodes
            .get(p as usize)
            .ok_or_else(|| format!("no node {p}"))
    }

    /// One atomic protocol step at `p`, with every check.
    fn step(&mut self, p: NodeId, input: Input) -> Result<Output, String> {
        if !self.node(p)?.up {
            return Err(format!("node {p} is crashed"));
        }
        if let Input::Deliver(from, Message::PreAcceptOk { id, dep }) = &input {
            if id.origin == p && self.ghost.orig.get(id).is_some_and(|(_, d0)| d0 == dep) {
                self.ghost
                    .pre_accept_ok_d0
                    .entry(*id)
                    .or_default()
                    .insert(*from);
            }
        }
        let replica = &mut self.nodes[p as usize].replica;
        let result = guarded(|| match input {
            Input::Flush(cmd) => {
                let mut out = replica.propose(cmd);
                out.extend(replica.flush());
                out
            }
            Input::Deliver(from, msg) => replica.step(from, msg),
            Input::Tick => replica.tick(),
            Input::Recover(id) => replica.recover(id),
            Input::Begin(c) => replica.begin_epoch(c),
            Input::Close(e, k) => replica.close_epoch(e, k),
        });
        match result {
            Ok(out) => {
                self.absorb(p, &out);
                self.check_global();
                Ok(out)
            }
            Err(text) => {
                let name = invariant_name(&text);
                self.violation(&name, format!("core assertion at node {p}: {text}"));
                // A replica that panicked mid-step is treated as crashed.
                self.crash(p);
                Ok(Output::default())
            }
        }
    }

    fn absorb(&mut self, p: NodeId, out: &Output) {
        let pre = self.nodes[p as usize].durable.clone();
        for w in &out.writes {
            match w {
                Write::NextSeq(s) => self.nodes[p as usize].next_seq = *s,
                Write::Instance { id, record } => self.observe_write(p, *id, (**record).clone()),
                other => {
                    if matches!(other, Write::Epoch(_)) {
                        self.nodes[p as usize].next_seq = 0;
                    }
                    self.nodes[p as usize].epoch_writes.push(other.clone());
                }
            }
        }
        for r in &out.seal_reports {
            self.reports
                .entry(r.epoch)
                .or_default()
                .insert(r.from, r.known.clone());
        }
        for env in &out.messages {
            self.observe_send(p, &env.msg, &pre);
            self.held.push(Held {
                from: p,
                to: env.to,
                msg: env.msg.clone(),
            });
        }
        for ex in &out.executions {
            let committed = self.nodes[p as usize]
                .durable
                .get(&ex.id)
                .is_some_and(|r| r.phase == Phase::Committed);
            if !committed {
                self.violation(
                    "I15",
                    format!(
                        "node {p} executed {} before committing it",
                        self.name_of(ex.id)
                    ),
                );
            }
            if self.nodes[p as usize].executed.contains(&ex.id) {
                self.violation(
                    "I16",
                    format!("node {p} executed {} twice", self.name_of(ex.id)),
                );
            }
            self.nodes[p as usize].executed.push(ex.id);
        }
        for a in &out.aborted {
            self.nodes[p as usize].aborted.insert(a.id);
        }
    }

    fn observe_write(&mut self, p: NodeId, id: CmdId, rec: InstanceRecord) {
        let name = self.name_of(id);
        let prev = self.nodes[p as usize].durable.get(&id).cloned();
        if rec.abal > rec.bal {
            self.violation("I10", format!("node {p} {name}: abal > bal"));
        }
        if let Some(prev) = &prev {
            if rec.bal < prev.bal || rec.abal < prev.abal {
                self.violation("I10", format!("node {p} {name}: ballot went back"));
            }
            if rec.phase < prev.phase {
                self.violation("I11", format!("node {p} {name}: phase went back"));
            }
            if prev.phase == Phase::Committed && (rec.cmd != prev.cmd || rec.dep != prev.dep) {
                self.violation("I12", format!("node {p} {name}: committed value changed"));
            }
        }
        if p == id.origin && prev.is_none() && rec.phase == Phase::PreAccepted {
            if let Some(b) = &rec.init_cmd {
                self.ghost
                    .orig
                    .insert(id, (b.clone(), rec.init_dep.clone()));
            }
        }
        let value = rec.cmd.clone().map(|c| (c, rec.dep.clone()));
        if let Some(v) = &value {
            if v.0.is_nop() && !v.1.is_empty() && rec.phase >= Phase::Accepted {
                self.violation("I8", format!("node {p} {name}: Nop with deps"));
            }
        }
        if rec.phase == Phase::Accepted {
            let v = value.clone().expect("accepted value");
            let votes = self.ghost.votes.entry((id, rec.abal)).or_default();
            let count = match votes.iter_mut().find(|(w, _)| *w == v) {
                Some((_, who)) => {
                    who.insert(p);
                    who.len()
                }
                None => {
                    votes.push((v.clone(), BTreeSet::from([p])));
                    1
                }
            };
            if count >= self.cfg().slow_quorum() {
                self.mark_chosen(id, rec.abal, v);
            }
        }
        if rec.phase == Phase::Committed {
            let v = value.expect("committed value");
            // The origin going PreAccepted → Committed at the initial ballot
            // is the FAST branch of §3.4: chosen at the initial ballot.
            if p == id.origin
                && rec.abal.is_initial()
                && prev.as_ref().is_some_and(|r| r.phase == Phase::PreAccepted)
            {
                self.mark_chosen(id, rec.abal, v.clone());
            }
            if let (Payload::Op(b), Some((orig, _))) = (&v.0, self.ghost.orig.get(&id)) {
                if b != orig {
                    self.violation(
                        "I9",
                        format!(
                            "node {p} committed {name} with a payload that is not the origin's"
                        ),
                    );
                }
            }
            let all = self.ghost.committed.entry(id).or_default();
            if !all.contains(&v) {
                all.push(v);
            }
            let all = all.clone();
            if all.len() > 1 {
                let shown: Vec<String> = all.iter().map(|v| self.show_value(v)).collect();
                self.violation(
                    "I1",
                    format!(
                        "{name} committed with {} values: {}",
                        shown.len(),
                        shown.join(" vs ")
                    ),
                );
            }
        }
        self.nodes[p as usize].durable.insert(id, rec);
    }

    fn mark_chosen(&mut self, id: CmdId, b: Ballot, v: Value) {
        let chosen = self.ghost.chosen.entry(id).or_default();
        if !chosen.iter().any(|(cb, cv)| *cb == b && *cv == v) {
            chosen.push((b, v));
        }
    }

    fn observe_send(&mut self, p: NodeId, msg: &Message, pre: &BTreeMap<CmdId, InstanceRecord>) {
        let post_bal = |run: &Run, id: CmdId| {
            run.nodes[p as usize]
                .durable
                .get(&id)
                .map_or(Ballot::initial(id), |r| r.bal)
        };
        match msg {
            Message::Accept {
                ballot,
                id,
                payload,
                dep,
            } => {
                let name = self.name_of(*id);
                let v = (payload.clone(), dep.clone());
                if payload.is_nop() && !dep.is_empty() {
                    self.violation("I8", format!("Accept {ballot:?} {name}: Nop with deps"));
                }
                let owner = if ballot.is_initial() {
                    id.origin
                } else {
                    ballot.node
                };
                if owner != p {
                    self.violation(
                        "I6",
                        format!("node {p} sent Accept {ballot:?} for {name}, owned by {owner}"),
                    );
                }
                if post_bal(self, *id) != *ballot {
                    self.violation(
                        "I6",
                        format!(
                            "node {p} sent Accept {ballot:?} for {name} while its bal is {:?}",
                            post_bal(self, *id)
                        ),
                    );
                }
                let sent = self.ghost.accepts.entry((*id, *ballot)).or_default();
                let differs = sent.iter().any(|(_, w)| *w != v);
                sent.push((p, v));
                if differs {
                    self.violation(
                        "I6",
                        format!("two different Accept values for {name} at {ballot:?}"),
                    );
                }
                if ballot.is_initial() {
                    self.ghost.slow.insert(*id);
                }
            }
            Message::Commit {
                ballot,
                id,
                payload,
                dep,
            } => {
                let name = self.name_of(*id);
                let v = (payload.clone(), dep.clone());
                if payload.is_nop() && !dep.is_empty() {
                    self.violation("I8", format!("Commit {ballot:?} {name}: Nop with deps"));
                }
                let chosen = self
                    .ghost
                    .chosen
                    .get(id)
                    .is_some_and(|c| c.iter().any(|(_, w)| *w == v));
                if !chosen {
                    self.violation(
                        "I4",
                        format!(
                            "node {p} sent Commit {ballot:?} {name} {} for a value not chosen",
                            self.show_value(&v)
                        ),
                    );
                }
                let was_pre_accepted = pre.get(id).is_some_and(|r| r.phase == Phase::PreAccepted);
                if ballot.is_initial() && was_pre_accepted {
                    // PreAccepted → Commit(initial) in one step: the FAST
                    // branch (a slow-path Commit comes from Accepted).
                    let pre_bal = pre.get(id).map_or(Ballot::initial(*id), |r| r.bal);
                    let d0 = self.ghost.orig.get(id).map(|(_, d)| d.clone());
                    let mut oks = self
                        .ghost
                        .pre_accept_ok_d0
                        .get(id)
                        .cloned()
                        .unwrap_or_default();
                    oks.insert(id.origin);
                    if p != id.origin {
                        self.violation(
                            "I7",
                            format!("node {p} decided {name} at the initial ballot"),
                        );
                    } else if d0.as_ref() != Some(dep) {
                        self.violation("I7", format!("fast commit of {name} with deps ≠ D0"));
                    } else if !pre_bal.is_initial() {
                        self.violation(
                            "I7",
                            format!("origin fast-committed {name} after joining {pre_bal:?}"),
                        );
                    } else if oks.len() < self.cfg().fast_quorum() {
                        self.violation(
                            "I7",
                            format!(
                                "fast commit of {name} with {} matching PreAcceptOk (< n−e = {})",
                                oks.len(),
                                self.cfg().fast_quorum()
                            ),
                        );
                    }
                    // §1.5: the decision and the local commit are one step.
                    let own = self.nodes[p as usize].durable.get(id);
                    if !own.is_some_and(|r| {
                        r.phase == Phase::Committed
                            && r.cmd.as_ref() == Some(payload)
                            && r.dep == *dep
                    }) {
                        self.violation(
                            "I7",
                            format!("node {p} sent its fast Commit for {name} without committing it in the same step"),
                        );
                    }
                    self.ghost.fast.insert(*id);
                }
            }
            Message::AcceptOk { ballot, id }
            | Message::RecoverOk { ballot, id, .. }
            | Message::ValidateOk { ballot, id, .. } => {
                let bal = post_bal(self, *id);
                if bal != *ballot {
                    self.violation(
                        "I14",
                        format!(
                            "node {p} sent {} {ballot:?} for {} with bal {bal:?}",
                            msg.kind(),
                            self.name_of(*id)
                        ),
                    );
                }
            }
            _ => {}
        }
    }

    /// I2, I3, I5, I17 over ghost state and execution sequences.
    fn check_global(&mut self) {
        let mut found: Vec<(&str, String)> = Vec::new();
        // I2 Visibility over every committed value.
        let committed: Vec<(CmdId, &Value)> = self
            .ghost
            .committed
            .iter()
            .filter_map(|(id, vs)| vs.first().map(|v| (*id, v)))
            .collect();
        for (i, (a, va)) in committed.iter().enumerate() {
            for (b, vb) in &committed[i + 1..] {
                if a.epoch == b.epoch
                    && payload_conflict(&va.0, &vb.0)
                    && !va.1.contains(b)
                    && !vb.1.contains(a)
                {
                    found.push((
                        "I2",
                        format!(
                            "{} {} and {} {} conflict but neither depends on the other",
                            self.name_of(*a),
                            self.show_value(va),
                            self.name_of(*b),
                            self.show_value(vb)
                        ),
                    ));
                }
            }
        }
        // I3 single chosen value; I5 chosen stability.
        for (id, chosen) in &self.ghost.chosen {
            let mut values: Vec<&Value> = Vec::new();
            for (_, v) in chosen {
                if !values.contains(&v) {
                    values.push(v);
                }
            }
            if values.len() > 1 {
                let shown: Vec<String> = chosen
                    .iter()
                    .map(|(b, v)| format!("{} at {b:?}", self.show_value(v)))
                    .collect();
                found.push((
                    "I3",
                    format!(
                        "{} chosen twice: {}",
                        self.name_of(*id),
                        shown.join(" and ")
                    ),
                ));
            }
            for (b0, v) in chosen {
                for ((aid, b), sent) in self.ghost.accepts.range((*id, *b0)..) {
                    if aid != id {
                        break;
                    }
                    if b > b0 && sent.iter().any(|(_, w)| w != v) {
                        found.push((
                            "I5",
                            format!(
                                "{} chosen at {b0:?} but Accept {b:?} proposes another value",
                                self.name_of(*id)
                            ),
                        ));
                    }
                }
            }
        }
        // I17 consistent order of conflicting non-Nop pairs.
        let payload = |id: &CmdId| self.ghost.committed.get(id).and_then(|v| v.first());
        for p in 0..self.nodes.len() {
            for q in p + 1..self.nodes.len() {
                let (ep, eq) = (&self.nodes[p].executed, &self.nodes[q].executed);
                let pos_q: BTreeMap<CmdId, usize> =
                    eq.iter().enumerate().map(|(i, x)| (*x, i)).collect();
                let common: Vec<CmdId> = ep
                    .iter()
                    .filter(|x| pos_q.contains_key(x))
                    .copied()
                    .collect();
                for (i, a) in common.iter().enumerate() {
                    for b in &common[i + 1..] {
                        let conflict = match (payload(a), payload(b)) {
                            (Some(va), Some(vb)) => payload_conflict(&va.0, &vb.0),
                            _ => false,
                        };
                        if conflict && pos_q[a] > pos_q[b] {
                            found.push((
                                "I17",
                                format!(
                                    "node {p} executes {} before {}, node {q} the other way",
                                    self.name_of(*a),
                                    self.name_of(*b)
                                ),
                            ));
                        }
                    }
                }
            }
        }
        for (name, detail) in found {
            self.violation(name, detail);
        }
    }

    fn crash(&mut self, p: NodeId) {
        let node = &mut self.nodes[p as usize];
        node.up = false;
        node.processed = node
            .durable
            .keys()
            .copied()
            .filter(|id| node.replica.is_processed(*id))
            .collect();
        self.held.retain(|h| h.from != p);
    }

    fn deliver_index(&mut self, i: usize) -> Result<(), String> {
        let h = self.held.remove(i);
        if !self.nodes[h.to as usize].up {
            return Ok(()); // delivered to a crashed node: lost
        }
        self.step(h.to, Input::Deliver(h.from, h.msg)).map(|_| ())
    }

    // ------------------------------------------------------------------
    // Parsing helpers

    fn label(&self, s: &str) -> Result<CmdId, String> {
        self.labels
            .get(s)
            .copied()
            .ok_or_else(|| format!("unknown label `{s}`"))
    }

    fn parse_node(&self, s: &str) -> Result<NodeId, String> {
        let p: NodeId = s.parse().map_err(|_| format!("bad node `{s}`"))?;
        if (p as usize) < self.nodes.len() {
            Ok(p)
        } else {
            Err(format!("no node {p}"))
        }
    }

    /// `<Kind> <label> <from> <to>` (any prefix, `*` wildcards) followed by
    /// options `round R`, `k K`, `nop`, `op`.
    fn parse_filter(&self, toks: &[&str]) -> Result<Filter, String> {
        let mut f = Filter {
            kind: None,
            id: None,
            from: None,
            to: None,
            round: None,
            k: None,
            nop: None,
        };
        let opt_at = toks
            .iter()
            .position(|t| matches!(*t, "round" | "k" | "nop" | "op"))
            .unwrap_or(toks.len());
        let (pos, mut opts) = toks.split_at(opt_at);
        if pos.len() > 4 {
            return Err("a filter is <Kind> <label> <from> <to> [round R] [k K] [nop|op]".into());
        }
        let wild = |s: &&str| *s == "*";
        if let Some(k) = pos.first().filter(|s| !wild(s)) {
            f.kind = Some((*k).to_string());
        }
        if let Some(l) = pos.get(1).filter(|s| !wild(s)) {
            f.id = Some(if *l == "-" {
                None
            } else {
                Some(self.label(l)?)
            });
        }
        if let Some(p) = pos.get(2).filter(|s| !wild(s)) {
            f.from = Some(self.parse_node(p)?);
        }
        if let Some(p) = pos.get(3).filter(|s| !wild(s)) {
            f.to = Some(self.parse_node(p)?);
        }
        while let Some((first, rest)) = opts.split_first() {
            let num = |s: Option<&&str>| -> Result<u64, String> {
                s.ok_or("missing number")?
                    .parse()
                    .map_err(|_| "bad number".to_string())
            };
            opts = match *first {
                "round" => {
                    f.round = Some(u32::try_from(num(rest.first())?).map_err(|_| "bad round")?);
                    &rest[1..]
                }
                "k" => {
                    f.k = Some(usize::try_from(num(rest.first())?).map_err(|_| "bad k")?);
                    &rest[1..]
                }
                "nop" => {
                    f.nop = Some(true);
                    rest
                }
                "op" => {
                    f.nop = Some(false);
                    rest
                }
                other => return Err(format!("unexpected `{other}` in a message filter")),
            };
        }
        Ok(f)
    }

    fn parse_deps(&self, toks: &[&str]) -> Result<(Deps, usize), String> {
        // `{a,b}` possibly split over tokens; returns deps and tokens used.
        let mut text = String::new();
        let mut used = 0;
        for t in toks {
            text.push_str(t);
            used += 1;
            if t.ends_with('}') {
                break;
            }
        }
        let inner = text
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .ok_or_else(|| format!("bad dependency set `{text}`"))?;
        let mut d = Deps::new();
        for l in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            d.insert(self.label(l)?);
        }
        Ok((d, used))
    }

    /// `at <p>` / `at all-live` / nothing (all live) → nodes.
    fn parse_at(&self, toks: &[&str]) -> Result<Vec<NodeId>, String> {
        match toks {
            [] | ["at", "all-live"] => Ok((0..self.nodes.len() as NodeId)
                .filter(|p| self.nodes[*p as usize].up)
                .collect()),
            ["at", "all"] => Ok((0..self.nodes.len() as NodeId).collect()),
            ["at", p] => Ok(vec![self.parse_node(p)?]),
            other => Err(format!("expected `at <p>` or `at all-live`, got {other:?}")),
        }
    }

    fn record(&self, p: NodeId, id: CmdId) -> Option<&InstanceRecord> {
        self.nodes[p as usize].replica.instance(id)
    }

    // ------------------------------------------------------------------
    // Commands

    fn exec(&mut self, line: &str) -> Result<(), String> {
        let line = match line.split_once(':') {
            Some((m @ ("strict" | "relaxed"), rest)) => {
                if m != self.mode.name() {
                    return Ok(());
                }
                rest.trim()
            }
            _ => line,
        };
        let toks: Vec<&str> = line.split_whitespace().collect();
        match toks.as_slice() {
            ["replicas", n] => {
                let n: usize = n.parse().map_err(|_| "bad replica count")?;
                self.cfg = Some(QuorumConfig::standard(n).map_err(|e| e.to_string())?);
            }
            ["modes", _] => {}
            ["option", rest @ ..] => {
                if !self.nodes.is_empty() {
                    return Err("options must come before the first action".into());
                }
                let num = |s: Option<&&str>| -> Result<u64, String> {
                    s.ok_or("missing number")?
                        .parse()
                        .map_err(|_| "bad number".to_string())
                };
                match rest {
                    ["strict"] => self.opts.strict_paper_mode = true,
                    ["thrifty"] => self.opts.thrifty = true,
                    ["auto-recovery"] => self.opts.auto_recovery = true,
                    ["forward-contended"] => self.opts.forward_contended = true,
                    ["mutation", "single-ballot"] => {
                        self.opts.mutation = Some(Mutation::SingleBallot)
                    }
                    ["mutation", "fast-quorum-too-small"] => {
                        self.opts.mutation = Some(Mutation::FastQuorumTooSmall)
                    }
                    ["heartbeat", n] => self.opts.heartbeat_ticks = num(Some(n))?,
                    ["fast-timeout", n] => self.opts.fast_timeout_ticks = num(Some(n))?,
                    ["retransmit", n] => self.opts.retransmit_ticks = num(Some(n))?,
                    ["commit-timeout", n] => self.opts.commit_timeout_ticks = num(Some(n))?,
                    ["exec-timeout", n] => self.opts.exec_timeout_ticks = num(Some(n))?,
                    other => return Err(format!("unknown option {other:?}")),
                }
            }
            ["expect", "violation", name] => {
                self.expected_violations.insert((*name).to_string());
            }
            _ => {
                self.ensure_replicas()?;
                self.action(&toks)?;
            }
        }
        Ok(())
    }

    fn action(&mut self, toks: &[&str]) -> Result<(), String> {
        match toks {
            ["id", label, origin, seq] => {
                let id = CmdId {
                    epoch: self.cfg().epoch,
                    seq: seq.parse().map_err(|_| "bad seq")?,
                    origin: self.parse_node(origin)?,
                };
                self.labels.insert((*label).to_string(), id);
            }
            ["submit", p, label, keys] => {
                let p = self.parse_node(p)?;
                if self.labels.contains_key(*label) {
                    return Err(format!("label `{label}` already used"));
                }
                self.request += 1;
                let keys = keys
                    .split(',')
                    .map(|k| match k.split_once(':') {
                        Some((k, "r")) => (Arc::from(k), Access::Read),
                        _ => (Arc::from(k), Access::Write),
                    })
                    .collect();
                let cmd = Command {
                    keys,
                    body: Arc::from(label.as_bytes()),
                    client: u64::from(p),
                    request: self.request,
                };
                let out = self.step(p, Input::Flush(cmd))?;
                let seq = out
                    .writes
                    .iter()
                    .find_map(|w| match w {
                        Write::NextSeq(s) => s.checked_sub(1),
                        _ => None,
                    })
                    .ok_or_else(|| format!("submit at {p} issued no id"))?;
                let id = CmdId {
                    epoch: self.nodes[p as usize].replica.config().epoch,
                    seq,
                    origin: p,
                };
                if !self.nodes[p as usize].durable.contains_key(&id) {
                    return Err(format!("submit at {p} produced no record for {id:?}"));
                }
                self.labels.insert((*label).to_string(), id);
            }
            ["deliver", rest @ ..] => {
                let f = self.parse_filter(rest)?;
                if f.kind.is_none() || f.id.is_none() {
                    return Err("deliver needs <Kind> <label> <from> <to>".into());
                }
                let i = self.held.iter().position(|h| f.matches(h)).ok_or_else(|| {
                    format!(
                        "no held message matches `{}`{}",
                        rest.join(" "),
                        self.held_listing()
                    )
                })?;
                self.deliver_index(i)?;
            }
            ["deliver-all", rest @ ..] => {
                let f = self.parse_filter(rest)?;
                let mut steps = 0;
                while let Some(i) = self.held.iter().position(|h| f.matches(h)) {
                    steps += 1;
                    if steps > DELIVER_ALL_STEPS_MAX {
                        return Err("deliver-all does not quiesce".into());
                    }
                    self.deliver_index(i)?;
                }
            }
            ["drop", rest @ ..] => {
                let f = self.parse_filter(rest)?;
                let before = self.held.len();
                self.held.retain(|h| !f.matches(h));
                if self.held.len() == before {
                    return Err(format!(
                        "no held message matches `{}`{}",
                        rest.join(" "),
                        self.held_listing()
                    ));
                }
            }
            ["dup", rest @ ..] => {
                let f = self.parse_filter(rest)?;
                let h = self.held.iter().find(|h| f.matches(h)).ok_or_else(|| {
                    format!(
                        "no held message matches `{}`{}",
                        rest.join(" "),
                        self.held_listing()
                    )
                })?;
                let copy = Held {
                    from: h.from,
                    to: h.to,
                    msg: h.msg.clone(),
                };
                self.held.push(copy);
            }
            ["inject", from, to, "Commit", label, what, rest @ ..] => {
                let (from, to) = (self.parse_node(from)?, self.parse_node(to)?);
                let id = self.label(label)?;
                let payload = match *what {
                    "nop" => Payload::Nop,
                    "op" => Payload::Op(
                        self.ghost
                            .orig
                            .get(&id)
                            .ok_or("`op` needs a submitted label")?
                            .0
                            .clone(),
                    ),
                    other => return Err(format!("expected op|nop, got `{other}`")),
                };
                let mut dep = Deps::new();
                let mut round = 0;
                let mut i = 0;
                while i < rest.len() {
                    match rest[i] {
                        "deps" => {
                            let (d, used) = self.parse_deps(&rest[i + 1..])?;
                            dep = d;
                            i += 1 + used;
                        }
                        "round" => {
                            round = rest
                                .get(i + 1)
                                .ok_or("round?")?
                                .parse()
                                .map_err(|_| "bad round")?;
                            i += 2;
                        }
                        other => return Err(format!("unexpected `{other}`")),
                    }
                }
                let ballot = Ballot {
                    epoch: id.epoch,
                    round,
                    node: if round == 0 { id.origin } else { from },
                };
                let msg = Message::Commit {
                    ballot,
                    id,
                    payload,
                    dep,
                };
                if self.nodes[to as usize].up {
                    self.step(to, Input::Deliver(from, msg))?;
                }
            }
            ["inject", from, to, "Waiting", label, "k", k] => {
                let (from, to) = (self.parse_node(from)?, self.parse_node(to)?);
                let msg = Message::Waiting {
                    id: self.label(label)?,
                    k: k.parse().map_err(|_| "bad k")?,
                };
                if self.nodes[to as usize].up {
                    self.step(to, Input::Deliver(from, msg))?;
                }
            }
            ["inject", from, to, "Recover", label, "round", r] => {
                let (from, to) = (self.parse_node(from)?, self.parse_node(to)?);
                let id = self.label(label)?;
                let ballot = Ballot {
                    epoch: id.epoch,
                    round: r.parse().map_err(|_| "bad round")?,
                    node: from,
                };
                if self.nodes[to as usize].up {
                    self.step(to, Input::Deliver(from, Message::Recover { ballot, id }))?;
                }
            }
            ["tick", who, k] => {
                let k: usize = k.parse().map_err(|_| "bad tick count")?;
                for _ in 0..k {
                    let who: Vec<NodeId> = if *who == "all" {
                        (0..self.nodes.len() as NodeId)
                            .filter(|p| self.nodes[*p as usize].up)
                            .collect()
                    } else {
                        vec![self.parse_node(who)?]
                    };
                    for p in who {
                        self.step(p, Input::Tick)?;
                    }
                }
            }
            ["recover", p, label] => {
                let p = self.parse_node(p)?;
                let id = self.label(label)?;
                self.step(p, Input::Recover(id))?;
            }
            ["crash", p] => {
                let p = self.parse_node(p)?;
                if !self.nodes[p as usize].up {
                    return Err(format!("node {p} is already crashed"));
                }
                self.crash(p);
            }
            ["restart", p] => {
                let p = self.parse_node(p)?;
                let node = &self.nodes[p as usize];
                if node.up {
                    return Err(format!("node {p} is not crashed"));
                }
                let (records, next_seq, processed) =
                    (node.durable.clone(), node.next_seq, node.processed.clone());
                let mut epochs = synod_epaxos::EpochState::new(self.cfg().clone());
                for w in &node.epoch_writes {
                    epochs.apply(w);
                }
                let opts = self.opts.clone();
                let replica =
                    guarded(|| Replica::restart_in(p, epochs, opts, records, next_seq, processed))
                        .map_err(|e| format!("restart panicked: {e}"))?;
                let node = &mut self.nodes[p as usize];
                node.replica = replica;
                node.up = true;
            }
            ["epoch", e, members, f, ee] => {
                let e: u64 = e.parse().map_err(|_| "bad epoch")?;
                let members = members
                    .split(',')
                    .map(|m| self.parse_node(m))
                    .collect::<Result<Vec<_>, _>>()?;
                let f = f.parse().map_err(|_| "bad f")?;
                let ee = ee.parse().map_err(|_| "bad e")?;
                let c = QuorumConfig::new(e, members, f, ee).map_err(|x| x.to_string())?;
                self.epochs.insert(e, c);
            }
            ["begin", p, e] => {
                let p = self.parse_node(p)?;
                let e: u64 = e.parse().map_err(|_| "bad epoch")?;
                let c = self.epochs.get(&e).ok_or("epoch not defined")?.clone();
                self.step(p, Input::Begin(c))?;
            }
            ["publish", e] => {
                let e: u64 = e.parse().map_err(|_| "bad epoch")?;
                let c = self
                    .epochs
                    .get(&e)
                    .cloned()
                    .unwrap_or_else(|| self.cfg().clone());
                let reports = self.reports.get(&e).cloned().unwrap_or_default();
                if reports.len() < c.slow_quorum() {
                    return Err(format!(
                        "only {} seal reports of epoch {e}, need {}",
                        reports.len(),
                        c.slow_quorum()
                    ));
                }
                let k: BTreeSet<CmdId> = reports.values().flatten().copied().collect();
                self.closed.insert(e, k);
            }
            ["close", p, e] => {
                let p = self.parse_node(p)?;
                let e: u64 = e.parse().map_err(|_| "bad epoch")?;
                let k = self.closed.get(&e).ok_or("K not published")?.clone();
                self.step(p, Input::Close(e, k))?;
            }
            ["dump"] => println!("{}", self.dump()),
            ["expect", rest @ ..] => self.expect(rest)?,
            other => return Err(format!("unknown command {other:?}")),
        }
        Ok(())
    }

    fn dump(&self) -> String {
        let mut s = format!("--- dump at line {} ({})", self.line, self.mode.name());
        for (p, node) in self.nodes.iter().enumerate() {
            let _ = write!(
                s,
                "\n  node {p}{}: executed [{}]",
                if node.up { "" } else { " (crashed)" },
                node.executed
                    .iter()
                    .map(|x| self.name_of(*x))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            for (id, r) in node.replica.instances() {
                let v = r.cmd.clone().map(|c| self.show_value(&(c, r.dep.clone())));
                let _ = write!(
                    s,
                    "\n    {}: {:?} bal={:?} abal={:?} {} init_dep={}",
                    self.name_of(*id),
                    r.phase,
                    r.bal,
                    r.abal,
                    v.unwrap_or_else(|| "⊥".into()),
                    self.show_deps(&r.init_dep)
                );
            }
        }
        s.push_str(&self.held_listing());
        s
    }

    fn expect(&mut self, toks: &[&str]) -> Result<(), String> {
        match toks {
            ["committed", label, what, rest @ ..] => {
                let id = self.label(label)?;
                let mut rest = rest;
                let mut deps = None;
                if rest.first() == Some(&"deps") {
                    let (d, used) = self.parse_deps(&rest[1..])?;
                    deps = Some(d);
                    rest = &rest[1 + used..];
                }
                let want_nop = match *what {
                    "nop" => true,
                    "op" => false,
                    other => return Err(format!("expected op|nop, got `{other}`")),
                };
                for p in self.parse_at(rest)? {
                    let got = self.record(p, id).cloned();
                    let ok = got.as_ref().is_some_and(|r| {
                        r.phase == Phase::Committed
                            && r.cmd.as_ref().is_some_and(|c| c.is_nop() == want_nop)
                            && deps.as_ref().is_none_or(|d| *d == r.dep)
                    });
                    if !ok {
                        let shown = got.map_or("no record".to_string(), |r| {
                            format!(
                                "{:?} {}",
                                r.phase,
                                r.cmd.map_or("⊥".into(), |c| self.show_value(&(c, r.dep)))
                            )
                        });
                        self.fail(format!(
                            "expected {label} committed {what}{} at node {p}, found {shown}",
                            deps.as_ref()
                                .map_or(String::new(), |d| format!(" deps {}", self.show_deps(d)))
                        ));
                    }
                }
            }
            ["chosen", label, what, rest @ ..] => {
                let id = self.label(label)?;
                let want_nop = *what == "nop";
                let deps = match rest {
                    [] => None,
                    ["deps", d @ ..] => Some(self.parse_deps(d)?.0),
                    other => return Err(format!("unexpected {other:?}")),
                };
                let chosen = self.ghost.chosen.get(&id).cloned().unwrap_or_default();
                let ok = chosen.iter().any(|(_, (p, d))| {
                    p.is_nop() == want_nop && deps.as_ref().is_none_or(|w| w == d)
                });
                if !ok {
                    let shown: Vec<String> = chosen
                        .iter()
                        .map(|(b, v)| format!("{} at {b:?}", self.show_value(v)))
                        .collect();
                    self.fail(format!(
                        "expected {label} chosen as {what}, chosen: [{}]",
                        shown.join(", ")
                    ));
                }
            }
            ["not-committed", label, rest @ ..] => {
                let id = self.label(label)?;
                for p in self.parse_at(rest)? {
                    if self
                        .record(p, id)
                        .is_some_and(|r| r.phase == Phase::Committed)
                    {
                        self.fail(format!("expected {label} not committed at node {p}"));
                    }
                }
            }
            ["phase", label, phase, "at", p] => {
                let id = self.label(label)?;
                let p = self.parse_node(p)?;
                let got = self.record(p, id).map(|r| format!("{:?}", r.phase));
                let got = got.unwrap_or_else(|| "none".into());
                if got != *phase {
                    self.fail(format!("expected {label} {phase} at node {p}, found {got}"));
                }
            }
            [which @ ("executed" | "not-executed"), label, rest @ ..] => {
                let id = self.label(label)?;
                for p in self.parse_at(rest)? {
                    let done = self.nodes[p as usize].executed.contains(&id);
                    if done != (*which == "executed") {
                        self.fail(format!("expected {label} {which} at node {p}"));
                    }
                }
            }
            ["order", a, b, rest @ ..] => {
                let (ia, ib) = (self.label(a)?, self.label(b)?);
                for p in self.parse_at(rest)? {
                    let ex = &self.nodes[p as usize].executed;
                    let pa = ex.iter().position(|x| *x == ia);
                    let pb = ex.iter().position(|x| *x == ib);
                    if !matches!((pa, pb), (Some(x), Some(y)) if x < y) {
                        let shown: Vec<String> = ex.iter().map(|x| self.name_of(*x)).collect();
                        self.fail(format!(
                            "expected {a} executed before {b} at node {p}, executed [{}]",
                            shown.join(" ")
                        ));
                    }
                }
            }
            [which @ ("in-k" | "not-in-k"), label, e] => {
                let id = self.label(label)?;
                let e: u64 = e.parse().map_err(|_| "bad epoch")?;
                let k = self.closed.get(&e).ok_or("K not published")?;
                if k.contains(&id) != (*which == "in-k") {
                    self.fail(format!(
                        "{label} is {} K of epoch {e}",
                        if k.contains(&id) { "in" } else { "not in" }
                    ));
                }
            }
            ["complete", e, "at", p] => {
                let e: u64 = e.parse().map_err(|_| "bad epoch")?;
                let p = self.parse_node(p)?;
                if !self.node(p)?.replica.epoch_complete(e) {
                    self.fail(format!("epoch {e} is not complete at node {p}"));
                }
            }
            [which @ ("aborted" | "not-aborted"), label] => {
                let id = self.label(label)?;
                let got = self.nodes[id.origin as usize].aborted.contains(&id);
                if got != (*which == "aborted") {
                    self.fail(format!(
                        "expected {label} {which} at its origin {}",
                        id.origin
                    ));
                }
            }
            [which @ ("fast" | "slow"), label] => {
                let id = self.label(label)?;
                let (fast, slow) = (self.ghost.fast.contains(&id), self.ghost.slow.contains(&id));
                let ok = if *which == "fast" {
                    fast && !slow
                } else {
                    slow && !fast
                };
                if !ok {
                    self.fail(format!(
                        "expected {label} {which} (fast decision: {fast}, slow path: {slow})"
                    ));
                }
            }
            ["held", rest @ ..] => {
                let (count, rest) = match rest {
                    ["count", n, rest @ ..] => {
                        (Some(n.parse::<usize>().map_err(|_| "bad count")?), rest)
                    }
                    _ => (None, rest),
                };
                let f = self.parse_filter(rest)?;
                let got = self.held.iter().filter(|h| f.matches(h)).count();
                let ok = count.map_or(got > 0, |n| n == got);
                if !ok {
                    self.fail(format!(
                        "expected {} held `{}`, found {got}{}",
                        count.map_or("some".to_string(), |n| n.to_string()),
                        rest.join(" "),
                        self.held_listing()
                    ));
                }
            }
            other => return Err(format!("unknown expectation {other:?}")),
        }
        Ok(())
    }

    /// Runs every line; returns the failures ("line N: ...") and the
    /// violations observed (expected or not), for the report.
    fn run(mut self, sc: &Scenario) -> (Vec<String>, Vec<String>) {
        // `expect violation` is a declaration for the whole run.
        for (_, l) in &sc.lines {
            let l = match l.split_once(':') {
                Some((m @ ("strict" | "relaxed"), rest)) if m == self.mode.name() => rest.trim(),
                Some(("strict" | "relaxed", _)) => continue,
                _ => l.as_str(),
            };
            if let ["expect", "violation", name] = l.split_whitespace().collect::<Vec<_>>()[..] {
                self.expected_violations.insert(name.to_string());
            }
        }
        for (n, l) in &sc.lines {
            self.line = *n;
            if let Err(e) = self.exec(l) {
                self.fail(format!("`{l}`: {e} (scenario aborted)"));
                break;
            }
            self.check_global();
        }
        if !self
            .failures
            .iter()
            .any(|f| f.ends_with("(scenario aborted)"))
        {
            for name in self.expected_violations.clone() {
                if !self.violations.iter().any(|v| v.name == name) {
                    self.failures
                        .push(format!("end: expected violation {name} was never reported"));
                }
            }
        }
        let seen = self
            .violations
            .iter()
            .map(|v| format!("(line {}) {}: {}", v.line, v.name, v.detail))
            .collect();
        (self.failures, seen)
    }
}

/// Outcome of one scenario in one mode.
enum Verdict {
    Pass,
    Fail(Vec<String>),
    ExpectedFail(String, Vec<String>),
    UnexpectedPass(String),
}

/// Runs one scenario in one mode: its verdict and the violations it saw.
fn run_scenario(sc: &Scenario, mode: Mode) -> (Verdict, Vec<String>) {
    let (failures, seen) = Run::new(mode).run(sc);
    let verdict = match (sc.known_failing_in(mode), failures.is_empty()) {
        (None, true) => Verdict::Pass,
        (None, false) => Verdict::Fail(failures),
        (Some(r), false) => Verdict::ExpectedFail(r.to_string(), failures),
        (Some(r), true) => Verdict::UnexpectedPass(r.to_string()),
    };
    (verdict, seen)
}

/// Runs every scenario file (epaxos.md §7) in each of its modes; one report
/// line per scenario and mode; fails at the end listing every failure.
#[test]
fn scenarios() {
    let dir = std::env::var("SCENARIO_DIR").map_or_else(
        |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios"),
        std::path::PathBuf::from,
    );
    let only = std::env::var("SCENARIO_ONLY").ok();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "scn"))
        .filter(|p| {
            only.as_ref()
                .is_none_or(|o| p.to_string_lossy().contains(o.as_str()))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenario files in {}", dir.display());
    let mut failed = Vec::new();
    let (mut pass, mut xfail) = (0, 0);
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let sc = Scenario::parse(&path.file_name().unwrap().to_string_lossy(), &text);
        let name = &sc.name;
        for &mode in &sc.modes {
            let (verdict, seen) = run_scenario(&sc, mode);
            let mode = mode.name();
            match verdict {
                Verdict::Pass => {
                    pass += 1;
                    println!("scenario {name} [{mode}] ... ok");
                }
                Verdict::ExpectedFail(reason, fs) => {
                    xfail += 1;
                    println!(
                        "scenario {name} [{mode}] ... expected failure (known-failing: {reason})"
                    );
                    for f in fs {
                        println!("    {f}");
                    }
                }
                Verdict::UnexpectedPass(reason) => {
                    println!("scenario {name} [{mode}] ... UNEXPECTED PASS");
                    failed.push(format!(
                        "{name} [{mode}]: passes but is marked known-failing ({reason}); remove the marker"
                    ));
                }
                Verdict::Fail(fs) => {
                    println!("scenario {name} [{mode}] ... FAILED");
                    for f in fs {
                        println!("    {f}");
                        failed.push(format!("{name} [{mode}] {f}"));
                    }
                }
            }
            for v in seen {
                println!("    violation {v}");
            }
        }
    }
    println!(
        "scenarios: {pass} passed, {xfail} expected failures, {} failures",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "scenario failures:\n{}",
        failed.join("\n")
    );
}

/// The runner can fail (quality-bars.md R2): a wrong expectation, a missing
/// expected violation, an unexpected violation (here a core assertion) and a
/// bad command are all reported with their line numbers; mode prefixes and
/// known-failing markers work.
#[test]
fn runner_reports_failures() {
    let run = |text: &str, mode| Run::new(mode).run(&Scenario::parse("self-test", text)).0;

    let fs = run(
        "replicas 3\nsubmit 0 x k\ndeliver-all\nexpect committed x nop at 0\n",
        Mode::Relaxed,
    );
    assert_eq!(fs.len(), 1, "{fs:?}");
    assert!(
        fs[0].starts_with("line 4: expected x committed nop"),
        "{fs:?}"
    );

    let fs = run(
        "replicas 3\nexpect violation I1\nsubmit 0 x k\ndeliver-all\n",
        Mode::Relaxed,
    );
    assert!(
        fs.iter()
            .any(|f| f.contains("expected violation I1 was never reported")),
        "{fs:?}"
    );

    // A forged Commit with another value at a replica that committed x: the
    // core's I12 assertion is caught and reported as a violation.
    let fs = run(
        "replicas 3\nsubmit 0 x k\ndeliver-all\ninject 1 2 Commit x nop\n",
        Mode::Relaxed,
    );
    assert!(
        fs.iter()
            .any(|f| f.starts_with("line 4: unexpected violation I12")),
        "{fs:?}"
    );

    let fs = run(
        "replicas 3\nsubmit 0 x k\ndeliver Accept x 0 1\n",
        Mode::Relaxed,
    );
    assert!(
        fs.len() == 1 && fs[0].starts_with("line 3: `deliver Accept x 0 1`: no held message"),
        "{fs:?}"
    );

    let prefixed = "replicas 3\nsubmit 0 x k\ndeliver-all\nstrict: expect committed x nop at 0\n";
    assert!(run(prefixed, Mode::Relaxed).is_empty());
    assert_eq!(run(prefixed, Mode::Strict).len(), 1);

    let sc = Scenario::parse(
        "self-test",
        "# known-failing: demo\nreplicas 3\nsubmit 0 x k\n",
    );
    assert!(matches!(
        run_scenario(&sc, Mode::Relaxed).0,
        Verdict::UnexpectedPass(_)
    ));
    let sc = Scenario::parse(
        "self-test",
        "# known-failing(strict): demo\nreplicas 3\nsubmit 0 x k\nexpect committed x op\n",
    );
    assert!(matches!(
        run_scenario(&sc, Mode::Strict).0,
        Verdict::ExpectedFail(..)
    ));
    assert!(matches!(
        run_scenario(&sc, Mode::Relaxed).0,
        Verdict::Fail(_)
    ));
}
