//! The CI soak (quality-bars.md R1): ≥ 500 seeds × ≥ 10k fault-phase steps,
//! every fault kind on (drop, duplicate, reorder, long delay, symmetric and
//! asymmetric partitions, crash/restart losing un-fsynced writes), across 3,
//! 5 and 7 replicas, several conflict rates, both thrifty modes and the four
//! fault profiles (default, duel, split, crashy), with the
//! invariants of epaxos.md §6 checked after every step. Zero violations
//! allowed; any failure prints the command that replays it.
//!
//! `SYNOD_SOAK_SEEDS` overrides the seed count (e.g. 100000 for the long
//! soak of R1), `SYNOD_SOAK_FIRST_SEED` the first seed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use synod_sim::network::FaultCounts;
use synod_sim::{run, Profile, SimConfig};

const SEEDS_DEFAULT: u64 = 500;
const STEPS: u64 = 10_000;
const THREADS: usize = 2;
const REPLICAS: [usize; 3] = [3, 5, 7];
const CONFLICT_RATES: [f64; 4] = [0.0, 0.1, 0.5, 1.0];
/// Every profile injects every fault kind; they differ in the mix.
const PROFILES: [Profile; 4] = [
    Profile::Default,
    Profile::Duel,
    Profile::Split,
    Profile::Crashy,
];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The configuration of soak seed `seed`: replicas, conflict rate, thrifty
/// mode and fault profile rotate with the seed so every combination is
/// covered.
fn config(seed: u64) -> SimConfig {
    let mut c = SimConfig::new(seed).with_profile(PROFILES[((seed / 24) % 4) as usize]);
    c.steps = STEPS;
    c.replicas = REPLICAS[(seed % 3) as usize];
    c.conflict_rate = CONFLICT_RATES[((seed / 3) % 4) as usize];
    c.thrifty = (seed / 12) % 2 == 1;
    c
}

#[test]
fn soak_every_fault_zero_violations() {
    let first = env_u64("SYNOD_SOAK_FIRST_SEED", 0);
    let seeds = env_u64("SYNOD_SOAK_SEEDS", SEEDS_DEFAULT);
    let next = Arc::new(AtomicU64::new(first));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let totals: Arc<Mutex<(u64, u64, u64, FaultCounts)>> = Arc::default();
    let start = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (next, failures, totals) = (next.clone(), failures.clone(), totals.clone());
            std::thread::spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= first + seeds {
                    break;
                }
                let r = run(config(seed));
                {
                    let mut t = totals.lock().unwrap();
                    t.0 += r.steps;
                    t.1 += r.submitted;
                    t.2 += r.fast_commits;
                    t.3.add(&r.faults);
                }
                if let Some(v) = r.violation {
                    eprintln!("{v}");
                    failures.lock().unwrap().push(format!(
                        "seed {}: {}: {}\n    replay: {}",
                        v.seed, v.invariant, v.message, v.replay
                    ));
                } else {
                    assert!(
                        r.quiescent,
                        "seed {seed} ended without quiescence or violation"
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("soak worker panicked");
    }
    let (steps, submitted, fast, faults) = totals.lock().unwrap().clone();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "soak: {seeds} seeds, {steps} steps in {secs:.1}s ({:.1} seeds/s); fast-path ratio {:.3}; faults {faults:?}",
        seeds as f64 / secs,
        fast as f64 / submitted.max(1) as f64
    );
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} violating seed(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every fault kind was actually injected.
    let f = faults;
    for (kind, count) in [
        ("drop", f.dropped),
        ("duplicate", f.duplicated),
        ("reorder", f.reordered),
        ("long delay", f.long_delayed),
        ("symmetric partition", f.partitions_symmetric),
        ("asymmetric partition", f.partitions_asymmetric),
        ("crash", f.crashes),
        ("restart", f.restarts),
    ] {
        assert!(count > 0, "no {kind} fault was injected");
    }
}
