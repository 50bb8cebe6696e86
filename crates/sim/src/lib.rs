//! Deterministic simulator for Synod's EPaxos\* core.
//!
//! One run ([`run`]) drives `n` [`synod_epaxos::Replica`]s, a faulty network,
//! crashing nodes with a durable/volatile storage model and closed-loop
//! clients through a discrete event queue, all from one seed
//! (quality-bars.md R1). After every processed event the invariants of
//! `epaxos.md` §6 are checked incrementally (see [`invariants`]); at
//! quiescence after the heal, full-state checks, progress checks and the
//! linearizability checker run. A violation carries the seed, the
//! invariant, a message, the last trace lines and the command that replays
//! it.
//!
//! # The model
//!
//! * **Storage** (epaxos.md §2.4): every output of a replica is appended to
//!   its node's pending list; an `Fsync` event (a random short delay after
//!   the list becomes non-empty) makes all pending writes durable, then
//!   releases every pending output in order: messages into the network,
//!   executions into the node's decision state machine (atomically with
//!   the durable executed set), replies to clients. A crash drops the
//!   replica and the pending list; a restart rebuilds the replica from the
//!   durable records, `next_seq` and processed set. The broken variant
//!   `release_before_durable` releases at step time instead.
//! * **Network**: per-message drop, duplicate, reorder and long delay;
//!   symmetric and one-way partitions that start and heal; crashes of up to
//!   `f` nodes at once. After `steps` steps the heal (GST): faults stop,
//!   crashed nodes restart, links become timely, clients stop issuing new
//!   requests; quiescence is then required within `heal_steps_max` steps.
//!   With `dead_at_heal = K` (`--dead-at-heal K`, `K ≤ f`), K replicas
//!   stay down for good at the heal (crashed ones first, else crashed
//!   then): progress, completeness and end-of-run checks then cover the
//!   live replicas only, while the safety checks still see the dead
//!   replicas' durable state.
//! * **Clients**: closed loop, one request outstanding, retries of the same
//!   `(client, request)` elsewhere on abort, crash or timeout; a request
//!   given up on is indeterminate in the history.
//!
//! # Command line
//!
//! `cargo run -p synod-sim --release -- --seeds 500 --replicas 5
//! --conflict-rate 0.3` runs 500 seeds on two threads;
//! `--seed S` replays one with its full trace. `--help` lists every flag
//! (`--steps`, `--dead-at-heal`, `--no-faults`, `--thrifty`, `--profile`,
//! `--mutation`, `--release-before-durable`, `--disable`, ...).
//!
//! # Layout
//!
//! - [`rng`]: the seeded PRNG;
//! - [`network`]: virtual time, the event queue, the fault model;
//! - [`node`]: a replica with its durable store and pending (un-fsynced)
//!   outputs;
//! - [`workload`]: the decisions clients propose;
//! - [`clients`]: closed-loop clients and the history they record;
//! - [`trace`]: the bounded event log;
//! - [`invariants`]: one checker per file;
//! - [`linearizability`]: the per-key-group history checker;
//! - `sim`: the event loop.

#![deny(missing_docs)]

pub mod clients;
pub mod fxhash;
pub mod invariants;
pub mod linearizability;
pub mod network;
pub mod node;
pub mod rng;
mod sim;
pub mod trace;
pub mod workload;

use network::{FaultCounts, NetConfig, Time};
use std::fmt;
pub use synod_epaxos::Mutation;

/// Named fault mixes. The default soak uses [`Profile::Default`]; the other
/// profiles tune the mix so a broken variant is caught quickly
/// (quality-bars.md R2). A profile is part of the replay command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Every fault kind on, moderate rates.
    Default,
    /// Lossy, slow links and short recovery timers: many concurrent,
    /// duelling recoveries (for the single-ballot mutation).
    Duel,
    /// Frequent partitions, loss and reordering so fast quorums of
    /// conflicting commands see different pre-accept orders (for the
    /// too-small fast quorum).
    Split,
    /// Frequent crashes with slow fsyncs, so crashes lose un-synced writes
    /// (for releasing before durability).
    Crashy,
}

impl Profile {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Default => "default",
            Profile::Duel => "duel",
            Profile::Split => "split",
            Profile::Crashy => "crashy",
        }
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Option<Profile> {
        Some(match s {
            "default" => Profile::Default,
            "duel" => Profile::Duel,
            "split" => Profile::Split,
            "crashy" => Profile::Crashy,
            _ => return None,
        })
    }
}

/// Parses a mutation name as used on the command line.
pub fn parse_mutation(s: &str) -> Option<Mutation> {
    match s {
        "single-ballot" => Some(Mutation::SingleBallot),
        "fast-quorum-too-small" => Some(Mutation::FastQuorumTooSmall),
        "floor-from-own-execution" => Some(Mutation::FloorFromOwnExecution),
        "no-epoch-barrier" => Some(Mutation::NoEpochBarrier),
        _ => None,
    }
}

/// The command-line name of a mutation.
pub fn mutation_name(m: Mutation) -> &'static str {
    match m {
        Mutation::SingleBallot => "single-ballot",
        Mutation::FastQuorumTooSmall => "fast-quorum-too-small",
        Mutation::FloorFromOwnExecution => "floor-from-own-execution",
        Mutation::NoEpochBarrier => "no-epoch-barrier",
    }
}

/// Timing of the simulated world, in virtual time units.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// Every node calls `tick()` this often.
    pub tick_interval: Time,
    /// Delay between a node's first un-synced output and its fsync.
    pub fsync_delay_min: Time,
    /// See `fsync_delay_min`.
    pub fsync_delay_max: Time,
    /// A client waits this long for a reply before retrying elsewhere.
    pub client_timeout: Time,
    /// Pause between a reply and a client's next request.
    pub think_time_max: Time,
    /// After this many attempts a client gives up on a request during the
    /// fault phase (the op becomes indeterminate) and moves on.
    pub client_attempts_max: u32,
    /// Time between two chaos decisions (crash, partition).
    pub chaos_interval: Time,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            tick_interval: 100,
            fsync_delay_min: 5,
            fsync_delay_max: 30,
            client_timeout: 4_000,
            think_time_max: 60,
            client_attempts_max: 6,
            chaos_interval: 400,
        }
    }
}

/// Fault injection settings.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultConfig {
    /// Master switch; `false` gives a timely, lossless, crash-free run.
    pub enabled: bool,
    /// Per-message faults and delays while faults are on.
    pub net: NetConfig,
    /// Per chaos round: probability of crashing a random up node (never
    /// more than `f` down at once).
    pub crash_p: f64,
    /// A crashed node restarts after a delay in this range.
    pub downtime_min: Time,
    /// See `downtime_min`.
    pub downtime_max: Time,
    /// Per chaos round: probability of starting a symmetric partition.
    pub partition_symmetric_p: f64,
    /// Per chaos round: probability of starting a one-way partition.
    pub partition_asymmetric_p: f64,
    /// A partition heals after a delay in this range.
    pub partition_min: Time,
    /// See `partition_min`.
    pub partition_max: Time,
}

impl FaultConfig {
    /// The fault mix of `profile`.
    pub fn for_profile(profile: Profile) -> FaultConfig {
        let base = FaultConfig {
            enabled: true,
            net: NetConfig {
                delay_min: 5,
                delay_max: 40,
                drop_p: 0.02,
                dup_p: 0.02,
                reorder_p: 0.05,
                reorder_extra_max: 150,
                long_delay_p: 0.01,
                long_delay_min: 300,
                long_delay_max: 3_000,
            },
            crash_p: 0.06,
            downtime_min: 300,
            downtime_max: 4_000,
            partition_symmetric_p: 0.04,
            partition_asymmetric_p: 0.04,
            partition_min: 300,
            partition_max: 4_000,
        };
        match profile {
            Profile::Default => base,
            Profile::Duel => FaultConfig {
                net: NetConfig {
                    drop_p: 0.08,
                    dup_p: 0.05,
                    reorder_p: 0.2,
                    reorder_extra_max: 400,
                    long_delay_p: 0.08,
                    long_delay_min: 500,
                    long_delay_max: 4_000,
                    ..base.net
                },
                crash_p: 0.08,
                partition_symmetric_p: 0.06,
                partition_asymmetric_p: 0.1,
                ..base
            },
            Profile::Split => FaultConfig {
                net: NetConfig {
                    drop_p: 0.05,
                    reorder_p: 0.3,
                    reorder_extra_max: 300,
                    long_delay_p: 0.05,
                    ..base.net
                },
                crash_p: 0.03,
                partition_symmetric_p: 0.1,
                partition_asymmetric_p: 0.15,
                ..base
            },
            Profile::Crashy => FaultConfig {
                crash_p: 0.3,
                downtime_min: 100,
                downtime_max: 1_500,
                ..base
            },
        }
    }

    /// No faults at all.
    pub fn none() -> FaultConfig {
        FaultConfig {
            enabled: false,
            ..FaultConfig::for_profile(Profile::Default)
        }
    }
}

/// Everything that determines a run. Two runs with equal configs are
/// identical, event for event.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed of every random choice.
    pub seed: u64,
    /// Number of replicas (3, 5 or 7; `QuorumConfig::standard`).
    pub replicas: usize,
    /// Probability a decision targets the hot keys (the inventory counter
    /// and the truck claims); otherwise a random key of a large space.
    pub conflict_rate: f64,
    /// Steps (processed events) of the fault phase; then the heal.
    pub steps: u64,
    /// Step budget after the heal to reach quiescence; exceeding it is a
    /// liveness violation (epaxos.md §6 progress checks).
    pub heal_steps_max: u64,
    /// Replicas that stay down for good at the heal (`0..=f`; chosen from
    /// the seed, preferring replicas that are down at that moment, else
    /// crashing up ones). Progress and the end-of-run completeness checks
    /// then cover the live replicas only. See [`SimConfig::validate`].
    pub dead_at_heal: usize,
    /// Fault mix; `faults.enabled = false` is `--no-faults`.
    pub faults: FaultConfig,
    /// The named profile `faults` came from (for the replay command).
    pub profile: Profile,
    /// Thrifty mode of the core (epaxos.md §3.8).
    pub thrifty: bool,
    /// Turn off the core's routing of contended keys to their owner
    /// (`Options::forward_contended`), to measure plain EPaxos* fast paths.
    pub no_forward: bool,
    /// Broken core variants (a) and (b) of quality-bars.md R2.
    pub mutation: Option<Mutation>,
    /// Broken harness variant (c): release messages, executions and replies
    /// at step time, before the output's writes are durable.
    pub release_before_durable: bool,
    /// Number of closed-loop clients.
    pub clients: usize,
    /// Lines of trace kept for a violation report.
    pub trace_lines: usize,
    /// Print dependency sets in full in the trace (slower); otherwise sets
    /// of more than a few ids are abbreviated.
    pub trace_verbose: bool,
    /// Invariant names (as in [`invariants`]) whose violations are ignored.
    /// Used by the mutation tests to show that deeper invariants also
    /// catch a broken variant.
    pub disabled_invariants: Vec<&'static str>,
    /// Search budget of the linearizability checker (GaveUp is a failure).
    pub linearizability_budget: u64,
    /// Per chaos round, while no epoch change is under way: probability
    /// that the config-service oracle starts one (add, remove or replace a
    /// replica, n staying in 3..=7; epaxos.md §8). 0 (the default) keeps
    /// the membership fixed and the run identical to one without the
    /// oracle. See `sim.rs` "Reconfiguration".
    pub reconfig_p: f64,
    /// Time constants.
    pub timing: Timing,
}

impl SimConfig {
    /// The default soak configuration for `seed`: 3 replicas, 10% conflicts,
    /// 10k fault steps, every fault on.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            replicas: 3,
            conflict_rate: 0.1,
            steps: 10_000,
            heal_steps_max: 200_000,
            dead_at_heal: 0,
            faults: FaultConfig::for_profile(Profile::Default),
            profile: Profile::Default,
            thrifty: false,
            no_forward: false,
            mutation: None,
            release_before_durable: false,
            clients: 6,
            trace_lines: trace::TRACE_LINES_DEFAULT,
            trace_verbose: false,
            disabled_invariants: Vec::new(),
            linearizability_budget: 2_000_000,
            reconfig_p: 0.0,
            timing: Timing::default(),
        }
    }

    /// Selects a fault profile.
    pub fn with_profile(mut self, profile: Profile) -> SimConfig {
        self.profile = profile;
        self.faults = FaultConfig::for_profile(profile);
        self
    }

    /// Turns every fault off.
    pub fn without_faults(mut self) -> SimConfig {
        self.faults.enabled = false;
        self
    }

    /// Rejects configurations no run can pass: a replica count without a
    /// standard quorum configuration, and more than `f` replicas dead after the heal (with
    /// `f + 1` down no quorum is left, so progress is impossible by
    /// design, not by a bug). [`run`] panics with this message.
    pub fn validate(&self) -> Result<(), String> {
        let qc = synod_types::QuorumConfig::standard(self.replicas)
            .map_err(|e| format!("replicas must be 3, 5 or 7 (got {}: {e})", self.replicas))?;
        if self.reconfig_p > 0.0 && self.dead_at_heal > 0 {
            return Err("--reconfig and --dead-at-heal cannot be combined (yet)".into());
        }
        if self.dead_at_heal > qc.f() {
            return Err(format!(
                "dead_at_heal = {} but {} replicas tolerate at most f = {} dead \
                 ones: with more, no quorum is left and progress is impossible",
                self.dead_at_heal,
                self.replicas,
                qc.f()
            ));
        }
        Ok(())
    }

    /// The command line that replays this run.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!(
            "cargo run -p synod-sim --release -- --seed {} --replicas {} --conflict-rate {} --steps {} --clients {}",
            self.seed, self.replicas, self.conflict_rate, self.steps, self.clients
        );
        if !self.faults.enabled {
            cmd.push_str(" --no-faults");
        }
        if self.profile != Profile::Default {
            cmd.push_str(&format!(" --profile {}", self.profile.name()));
        }
        // Probabilities tuned away from the profile's.
        let p = FaultConfig::for_profile(self.profile);
        let f = &self.faults;
        for (flag, got, base) in [
            ("--drop", f.net.drop_p, p.net.drop_p),
            ("--dup", f.net.dup_p, p.net.dup_p),
            ("--reorder", f.net.reorder_p, p.net.reorder_p),
            ("--long-delay", f.net.long_delay_p, p.net.long_delay_p),
            ("--crash", f.crash_p, p.crash_p),
            (
                "--partition-sym",
                f.partition_symmetric_p,
                p.partition_symmetric_p,
            ),
            (
                "--partition-asym",
                f.partition_asymmetric_p,
                p.partition_asymmetric_p,
            ),
        ] {
            if got != base {
                cmd.push_str(&format!(" {flag} {got}"));
            }
        }
        if self.no_forward {
            cmd.push_str(" --no-forward");
        }
        if self.thrifty {
            cmd.push_str(" --thrifty");
        }
        if let Some(m) = self.mutation {
            cmd.push_str(&format!(" --mutation {}", mutation_name(m)));
        }
        if self.release_before_durable {
            cmd.push_str(" --release-before-durable");
        }
        if self.heal_steps_max != SimConfig::new(0).heal_steps_max {
            cmd.push_str(&format!(" --heal-steps {}", self.heal_steps_max));
        }
        if self.dead_at_heal != 0 {
            cmd.push_str(&format!(" --dead-at-heal {}", self.dead_at_heal));
        }
        if self.reconfig_p > 0.0 {
            cmd.push_str(&format!(" --reconfig {}", self.reconfig_p));
        }
        for name in &self.disabled_invariants {
            cmd.push_str(&format!(" --disable '{name}'"));
        }
        cmd
    }
}

/// A broken invariant.
#[derive(Clone, Debug)]
pub struct Violation {
    /// The run's seed.
    pub seed: u64,
    /// Invariant name, e.g. "I1 Agreement".
    pub invariant: &'static str,
    /// What was seen.
    pub message: String,
    /// Step at which it was detected.
    pub step: u64,
    /// Virtual time at which it was detected.
    pub time: Time,
    /// The last trace lines, oldest first.
    pub trace: Vec<String>,
    /// The command that replays the run.
    pub replay: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "VIOLATION of {} (seed {}, step {}, t={}): {}",
            self.invariant, self.seed, self.step, self.time, self.message
        )?;
        writeln!(f, "replay: {}", self.replay)?;
        writeln!(f, "last {} trace events:", self.trace.len())?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// What one run did.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Events processed, fault phase and heal together.
    pub steps: u64,
    /// Events processed after the heal.
    pub heal_steps: u64,
    /// Virtual time at the end.
    pub end_time: Time,
    /// Injected faults by kind.
    pub faults: FaultCounts,
    /// Σ `stats.submitted` over replicas (own instances submitted).
    pub submitted: u64,
    /// Σ `stats.deps_listed` (explicit ids in initial dependency sets).
    pub deps_listed: u64,
    /// Max `stats.deps_listed_max`.
    pub deps_listed_max: u64,
    /// Σ `stats.fast_commits`.
    pub fast_commits: u64,
    /// Σ `stats.slow_paths`.
    pub slow_paths: u64,
    /// Σ `stats.recoveries`.
    pub recoveries: u64,
    /// Σ `stats.nops`.
    pub nops: u64,
    /// Commands applied to state machines (summed over replicas, duplicates
    /// filtered by sessions included).
    pub commands_executed: u64,
    /// Largest `pending_execution()` seen at any replica.
    pub max_pending_execution: usize,
    /// Highest recovery ballot round seen in any Recover message.
    pub max_recovery_round: u32,
    /// Client requests answered.
    pub requests_answered: u64,
    /// Client requests given up on (indeterminate in the history).
    pub requests_indeterminate: u64,
    /// True if the run reached quiescence after the heal.
    pub quiescent: bool,
    /// Replicas that stayed down for good at the heal (`dead_at_heal`),
    /// and replicas removed by an epoch change.
    pub dead_nodes: Vec<synod_types::NodeId>,
    /// Epoch changes started and completed by the config-service oracle.
    pub epochs_started: u64,
    /// See `epochs_started`.
    pub epochs_completed: u64,
    /// The first violation, if any.
    pub violation: Option<Violation>,
}

impl RunReport {
    /// `fast_commits / submitted` (0 when nothing was submitted).
    pub fn fast_path_ratio(&self) -> f64 {
        if self.submitted == 0 {
            0.0
        } else {
            self.fast_commits as f64 / self.submitted as f64
        }
    }
}

/// Runs one simulation to quiescence (or to the first violation).
///
/// # Panics
///
/// If `config` fails [`SimConfig::validate`].
pub fn run(config: SimConfig) -> RunReport {
    if let Err(e) = config.validate() {
        panic!("invalid SimConfig: {e}");
    }
    sim::Sim::new(config).run()
}
