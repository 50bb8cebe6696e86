//! The simulator can fail (quality-bars.md R2): each deliberately broken
//! variant is caught within a bounded number of seeds.
//!
//! - (a) `Mutation::SingleBallot`: RecoverOk reports `bal` for `abal`
//!   (Sutra's bug, epaxos.md §2.1, S1). Needs duelling recoveries: the
//!   `duel` profile (lossy, slow links, impatient recoverers).
//! - (b) `Mutation::FastQuorumTooSmall`: fast quorum `n − e − 1`. Needs
//!   conflicting commands whose fast quorums see different orders: loss,
//!   reordering and partitions (`split`).
//! - (c) `release_before_durable`: the harness releases messages,
//!   executions and replies before the output's writes are durable
//!   (efficient/epaxos#28). Needs crashes (`crashy`).
//! - (d) `Mutation::FloorFromOwnExecution`: a coordinator's dependency floor
//!   (`synod_types::Deps`) is what it executed itself, not what every member
//!   executed. Needs a replica that lags (loss, partitions: `default`).
//! - (e) `Mutation::NoEpochBarrier`: an instance of epoch E+1 executes
//!   before the closure of E (epaxos.md §8.4). Needs epoch changes under
//!   load (`--reconfig`) and conflicts.
//!
//! For each variant, one test with every invariant on (the most direct
//! checker fires first) and one with the direct checkers disabled, showing
//! that the deeper ones (agreement, chosen value, visibility, ...) catch
//! the consequence too. A panic of the core's own assertions is reported as
//! the `Panic` invariant and counts as caught: in test builds the core's
//! `debug_assert!`s (e.g. "nothing accepted in Q from R3.4 on") often fire
//! before the simulator's checkers; in release builds (`synod-sim
//! --mutation single-ballot --profile duel`) I5, then with I5 disabled I3,
//! catch variant (a).

use synod_sim::{run, Mutation, Profile, RunReport, SimConfig};

/// Every variant must be caught within this many seeds.
const SEEDS_MAX: u64 = 100;

fn first_violation(make: impl Fn(u64) -> SimConfig) -> RunReport {
    for seed in 0..SEEDS_MAX {
        let r = run(make(seed));
        if let Some(v) = &r.violation {
            println!(
                "caught at seed {seed}: {}: {}\n  replay: {}",
                v.invariant, v.message, v.replay
            );
            return r;
        }
    }
    panic!("broken variant not caught within {SEEDS_MAX} seeds");
}

fn base(seed: u64, profile: Profile, replicas: usize, conflict_rate: f64) -> SimConfig {
    let mut c = SimConfig::new(seed).with_profile(profile);
    c.replicas = replicas;
    c.conflict_rate = conflict_rate;
    c
}

#[test]
fn a_single_ballot_is_caught() {
    first_violation(|seed| SimConfig {
        mutation: Some(Mutation::SingleBallot),
        ..base(seed, Profile::Duel, 3, 0.5)
    });
}

#[test]
fn a_single_ballot_is_caught_by_agreement_level_checks() {
    let r = first_violation(|seed| SimConfig {
        mutation: Some(Mutation::SingleBallot),
        disabled_invariants: vec!["I5 Chosen stability"],
        ..base(seed, Profile::Duel, 3, 0.5)
    });
    assert_ne!(r.violation.unwrap().invariant, "I5 Chosen stability");
}

#[test]
fn b_fast_quorum_too_small_is_caught() {
    for replicas in [3, 5] {
        first_violation(|seed| SimConfig {
            mutation: Some(Mutation::FastQuorumTooSmall),
            ..base(seed, Profile::Split, replicas, 0.5)
        });
    }
}

#[test]
fn b_fast_quorum_too_small_is_caught_without_the_fast_path_checker() {
    for replicas in [3, 5] {
        let r = first_violation(|seed| SimConfig {
            mutation: Some(Mutation::FastQuorumTooSmall),
            disabled_invariants: vec!["I7 Fast-path discipline"],
            ..base(seed, Profile::Split, replicas, 0.5)
        });
        assert_ne!(r.violation.unwrap().invariant, "I7 Fast-path discipline");
    }
}

#[test]
fn c_release_before_durable_is_caught() {
    first_violation(|seed| SimConfig {
        release_before_durable: true,
        ..base(seed, Profile::Crashy, 3, 0.5)
    });
}

#[test]
fn c_release_before_durable_is_caught_without_the_durability_checkers() {
    let r = first_violation(|seed| SimConfig {
        release_before_durable: true,
        disabled_invariants: vec!["I4 Commit soundness", "I20 Durability"],
        ..base(seed, Profile::Crashy, 3, 0.5)
    });
    let inv = r.violation.unwrap().invariant;
    assert!(inv != "I4 Commit soundness" && inv != "I20 Durability");
}

#[test]
fn d_floor_from_own_execution_is_caught() {
    first_violation(|seed| SimConfig {
        mutation: Some(Mutation::FloorFromOwnExecution),
        ..base(seed, Profile::Default, 3, 0.5)
    });
}

/// Without the checkers that expand floors (I15, I16), the replicas'
/// per-key orders diverge (I17) or a later check fails.
#[test]
fn d_floor_from_own_execution_is_caught_without_the_floor_checkers() {
    let r = first_violation(|seed| SimConfig {
        mutation: Some(Mutation::FloorFromOwnExecution),
        disabled_invariants: vec![
            "I15 No execution before commit",
            "I16 Execution well-formedness",
        ],
        ..base(seed, Profile::Default, 3, 0.5)
    });
    let inv = r.violation.unwrap().invariant;
    assert!(inv != "I15 No execution before commit" && inv != "I16 Execution well-formedness");
}

fn reconfig(seed: u64) -> SimConfig {
    SimConfig {
        mutation: Some(Mutation::NoEpochBarrier),
        reconfig_p: 0.5,
        steps: 3_000,
        ..base(seed, Profile::Default, 3, 0.5)
    }
}

#[test]
fn e_no_epoch_barrier_is_caught() {
    first_violation(reconfig);
}

/// Without the barrier checker, replicas run conflicting commands of two
/// epochs in different orders (dependency sets never cross an epoch: the
/// barrier is what orders them), and I17 or a later check fails.
#[test]
fn e_no_epoch_barrier_is_caught_without_the_barrier_checker() {
    let r = first_violation(|seed| SimConfig {
        disabled_invariants: vec!["Epoch barrier"],
        ..reconfig(seed)
    });
    assert_ne!(r.violation.unwrap().invariant, "Epoch barrier");
}
