//! `synod-sim`: run the deterministic simulator from the command line.
//!
//! ```text
//! synod-sim --seeds 1000 --replicas 5 --conflict-rate 0.3
//! synod-sim --seed 42 --replicas 3 --conflict-rate 0.1 --steps 10000   # replay one seed, full trace
//! ```
//!
//! Exits non-zero on any violation, after printing the replay command and
//! the trace. Seeds run on `--threads` OS threads (default 2).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use synod_sim::network::FaultCounts;
use synod_sim::{invariants, parse_mutation, run, Profile, RunReport, SimConfig};

const USAGE: &str = "\
usage: synod-sim [options]
  --seeds N                 run seeds first..first+N (default 100)
  --first-seed S            first seed for --seeds (default 0)
  --seed S                  run one seed and print its full trace on a violation
  --replicas 3|5|7          replicas (default 3)
  --conflict-rate R         0.0..=1.0, share of decisions on the hot keys (default 0.1)
  --steps N                 fault-phase steps per seed (default 10000)
  --heal-steps N            step budget to quiesce after the heal (default 200000)
  --dead-at-heal K          K replicas (0..=f) stay down for good at the heal; progress
                            is then required of the live ones (default 0)
  --clients N               closed-loop clients (default 6)
  --no-faults               no message faults, crashes or partitions
  --profile NAME            fault mix: default | duel | split | crashy
  --drop P --dup P --reorder P --long-delay P
                            per-message fault probabilities (override the profile)
  --crash P --partition-sym P --partition-asym P
                            per-chaos-round probabilities (override the profile)
  --reconfig P              per chaos round, probability that the config-service oracle
                            starts an epoch change (add/remove/replace a replica; default 0)
  --thrifty                 thrifty mode of the core
  --no-forward              do not route contended keys to their owner replica
  --mutation NAME           broken core: single-ballot | fast-quorum-too-small |
                            floor-from-own-execution | no-epoch-barrier
  --release-before-durable  broken harness: release outputs before their fsync
  --disable NAME            ignore violations of an invariant (repeatable)
  --trace-lines N           trace lines kept for a report (default 200; --seed keeps all)
  --threads N               worker threads for --seeds (default 2)
  --keep-going              do not stop at the first violating seed
  -h, --help                this text";

struct Args {
    config: SimConfig,
    seeds: u64,
    first_seed: u64,
    single: Option<u64>,
    threads: usize,
    keep_going: bool,
    trace_lines_set: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        config: SimConfig::new(0),
        seeds: 100,
        first_seed: 0,
        single: None,
        threads: 2,
        keep_going: false,
        trace_lines_set: false,
    };
    let mut it = std::env::args().skip(1);
    fn value<T: std::str::FromStr>(
        it: &mut impl Iterator<Item = String>,
        flag: &str,
    ) -> Result<T, String> {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        v.parse().map_err(|_| format!("{flag}: cannot parse {v:?}"))
    }
    fn prob(it: &mut impl Iterator<Item = String>, flag: &str) -> Result<f64, String> {
        let p: f64 = value(it, flag)?;
        if (0.0..=1.0).contains(&p) {
            Ok(p)
        } else {
            Err(format!("{flag} must be in 0.0..=1.0"))
        }
    }
    let mut profile: Option<Profile> = None;
    let mut overrides: Vec<(String, f64)> = Vec::new();
    while let Some(flag) = it.next() {
        let c = &mut a.config;
        match flag.as_str() {
            "--seeds" => a.seeds = value(&mut it, &flag)?,
            "--first-seed" => a.first_seed = value(&mut it, &flag)?,
            "--seed" => a.single = Some(value(&mut it, &flag)?),
            "--replicas" => {
                c.replicas = value(&mut it, &flag)?;
                if ![3, 5, 7].contains(&c.replicas) {
                    return Err("--replicas must be 3, 5 or 7".into());
                }
            }
            "--conflict-rate" => {
                c.conflict_rate = value(&mut it, &flag)?;
                if !(0.0..=1.0).contains(&c.conflict_rate) {
                    return Err("--conflict-rate must be in 0.0..=1.0".into());
                }
            }
            "--steps" => c.steps = value(&mut it, &flag)?,
            "--heal-steps" => c.heal_steps_max = value(&mut it, &flag)?,
            "--dead-at-heal" => c.dead_at_heal = value(&mut it, &flag)?,
            "--reconfig" => {
                c.reconfig_p = value(&mut it, &flag)?;
                if !(0.0..=1.0).contains(&c.reconfig_p) {
                    return Err("--reconfig must be in 0.0..=1.0".into());
                }
            }
            "--clients" => {
                c.clients = value(&mut it, &flag)?;
                if c.clients == 0 {
                    return Err("--clients must be at least 1".into());
                }
            }
            "--no-faults" => c.faults.enabled = false,
            "--profile" => {
                let name: String = value(&mut it, &flag)?;
                profile = Some(Profile::parse(&name).ok_or(format!("unknown profile {name:?}"))?);
            }
            "--drop" | "--dup" | "--reorder" | "--long-delay" | "--crash" | "--partition-sym"
            | "--partition-asym" => overrides.push((flag.clone(), prob(&mut it, &flag)?)),
            "--thrifty" => c.thrifty = true,
            "--no-forward" => c.no_forward = true,
            "--mutation" => {
                let name: String = value(&mut it, &flag)?;
                c.mutation =
                    Some(parse_mutation(&name).ok_or(format!("unknown mutation {name:?}"))?);
            }
            "--release-before-durable" => c.release_before_durable = true,
            "--disable" => {
                let name: String = value(&mut it, &flag)?;
                let known = invariants::ALL.iter().find(|n| **n == name).ok_or(format!(
                    "unknown invariant {name:?}; known: {:?}",
                    invariants::ALL
                ))?;
                c.disabled_invariants.push(known);
            }
            "--trace-lines" => {
                c.trace_lines = value(&mut it, &flag)?;
                a.trace_lines_set = true;
            }
            "--threads" => a.threads = value::<usize>(&mut it, &flag)?.max(1),
            "--keep-going" => a.keep_going = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    // The profile first, then the probabilities that override it.
    let c = &mut a.config;
    if let Some(p) = profile {
        let enabled = c.faults.enabled;
        *c = c.clone().with_profile(p);
        c.faults.enabled = enabled;
    }
    for (flag, p) in overrides {
        let f = &mut c.faults;
        match flag.as_str() {
            "--drop" => f.net.drop_p = p,
            "--dup" => f.net.dup_p = p,
            "--reorder" => f.net.reorder_p = p,
            "--long-delay" => f.net.long_delay_p = p,
            "--crash" => f.crash_p = p,
            "--partition-sym" => f.partition_symmetric_p = p,
            _ => f.partition_asymmetric_p = p,
        }
    }
    c.validate()?;
    Ok(a)
}

#[derive(Default)]
struct Totals {
    seeds: u64,
    steps: u64,
    faults: FaultCounts,
    submitted: u64,
    deps_listed: u64,
    deps_listed_max: u64,
    fast: u64,
    slow: u64,
    recoveries: u64,
    nops: u64,
    executed: u64,
    answered: u64,
    indeterminate: u64,
    max_pending: usize,
    max_round: u32,
    max_heal_steps: u64,
    epochs_started: u64,
    epochs_completed: u64,
    violations: Vec<RunReport>,
}

impl Totals {
    fn add(&mut self, r: RunReport) {
        self.seeds += 1;
        self.steps += r.steps;
        self.faults.add(&r.faults);
        self.submitted += r.submitted;
        self.epochs_started += r.epochs_started;
        self.epochs_completed += r.epochs_completed;
        self.deps_listed += r.deps_listed;
        self.deps_listed_max = self.deps_listed_max.max(r.deps_listed_max);
        self.fast += r.fast_commits;
        self.slow += r.slow_paths;
        self.recoveries += r.recoveries;
        self.nops += r.nops;
        self.executed += r.commands_executed;
        self.answered += r.requests_answered;
        self.indeterminate += r.requests_indeterminate;
        self.max_pending = self.max_pending.max(r.max_pending_execution);
        self.max_round = self.max_round.max(r.max_recovery_round);
        self.max_heal_steps = self.max_heal_steps.max(r.heal_steps);
        if r.violation.is_some() {
            self.violations.push(r);
        }
    }
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{USAGE}");
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let start = Instant::now();
    let totals = Arc::new(Mutex::new(Totals::default()));
    if let Some(seed) = args.single {
        let mut c = args.config.clone();
        c.seed = seed;
        if !args.trace_lines_set {
            c.trace_lines = 1_000_000;
        }
        c.trace_verbose = true;
        let r = run(c);
        totals.lock().expect("totals").add(r);
    } else {
        let next = Arc::new(AtomicU64::new(args.first_seed));
        let stop = Arc::new(AtomicBool::new(false));
        let end = args.first_seed + args.seeds;
        let workers: Vec<_> = (0..args.threads)
            .map(|_| {
                let (next, stop, totals) = (next.clone(), stop.clone(), totals.clone());
                let base = args.config.clone();
                let keep_going = args.keep_going;
                std::thread::spawn(move || loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    let mut c = base.clone();
                    c.seed = seed;
                    let r = run(c);
                    if r.violation.is_some() && !keep_going {
                        stop.store(true, Ordering::Relaxed);
                    }
                    totals.lock().expect("totals").add(r);
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker thread");
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let t = totals.lock().expect("totals");
    for r in &t.violations {
        println!("{}", r.violation.as_ref().expect("violation"));
    }
    let f = &t.faults;
    println!(
        "seeds: {} in {:.1}s ({:.1} seeds/s); steps: {} ({:.0} steps/s); max heal steps {}",
        t.seeds,
        secs,
        t.seeds as f64 / secs,
        t.steps,
        t.steps as f64 / secs,
        t.max_heal_steps
    );
    println!(
        "faults: dropped {} duplicated {} reordered {} long-delayed {} partition-dropped {} \
         down-dropped {} partitions {} symmetric + {} one-way, crashes {} restarts {}",
        f.dropped,
        f.duplicated,
        f.reordered,
        f.long_delayed,
        f.partition_dropped,
        f.down_dropped,
        f.partitions_symmetric,
        f.partitions_asymmetric,
        f.crashes,
        f.restarts
    );
    let ratio = if t.submitted == 0 {
        0.0
    } else {
        t.fast as f64 / t.submitted as f64
    };
    println!(
        "instances submitted {}; fast-path ratio {:.4}; slow paths {}; recoveries {}; nops {}; \
         commands executed {}; requests answered {}, indeterminate {}; max pending execution {}; \
         max recovery round {}; dependency ids listed per instance: mean {:.1}, max {}",
        t.submitted,
        ratio,
        t.slow,
        t.recoveries,
        t.nops,
        t.executed,
        t.answered,
        t.indeterminate,
        t.max_pending,
        t.max_round,
        t.deps_listed as f64 / t.submitted.max(1) as f64,
        t.deps_listed_max
    );
    if t.epochs_started > 0 {
        println!(
            "epoch changes: {} started, {} completed",
            t.epochs_started, t.epochs_completed
        );
    }
    if t.violations.is_empty() {
        println!("0 violations");
        println!(
            "next: --help for fault profiles and broken variants; --seed S --replicas N \
             replays one run; README.md \"The simulator\" explains these figures"
        );
        ExitCode::SUCCESS
    } else {
        println!("{} violating seed(s):", t.violations.len());
        for r in &t.violations {
            let v = r.violation.as_ref().expect("violation");
            println!("  seed {}: {}: {}", v.seed, v.invariant, v.replay);
        }
        ExitCode::FAILURE
    }
}
