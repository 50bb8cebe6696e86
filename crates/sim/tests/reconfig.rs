//! Epoch changes under chaos (epaxos.md §8, §7 S12): the config-service
//! oracle (`SimConfig::reconfig_p`) adds, removes and replaces replicas
//! (n in 3..=7) while clients run and faults fire; every invariant,
//! including the epoch barrier and the closed set, holds after every step,
//! and every epoch change completes (removed replicas stop, added ones
//! start from a snapshot). `synod-sim --reconfig P` runs the same from the
//! command line.

use synod_sim::{run, Profile, SimConfig};

#[test]
fn epoch_changes_under_chaos_zero_violations() {
    let profiles = [
        Profile::Default,
        Profile::Duel,
        Profile::Split,
        Profile::Crashy,
    ];
    let (mut started, mut completed, mut runs) = (0, 0, 0);
    for seed in 0..48u64 {
        let mut c = SimConfig::new(7_000 + seed).with_profile(profiles[(seed % 4) as usize]);
        c.replicas = [3, 5, 7][(seed / 4 % 3) as usize];
        c.conflict_rate = [0.1, 0.5][(seed / 12 % 2) as usize];
        c.thrifty = seed / 24 % 2 == 1;
        c.steps = 4_000;
        c.reconfig_p = 0.3;
        let r = run(c);
        if let Some(v) = &r.violation {
            panic!(
                "seed {}: {}: {}\n  replay: {}",
                r.seed, v.invariant, v.message, v.replay
            );
        }
        assert!(r.quiescent);
        assert_eq!(
            r.epochs_started, r.epochs_completed,
            "every change completes"
        );
        started += r.epochs_started;
        completed += r.epochs_completed;
        runs += 1;
    }
    println!("{runs} runs, {started} epoch changes started, {completed} completed");
    assert!(started >= 48, "the oracle changed epochs ({started})");
}

/// Reconfiguration off draws no random number for it: the default run is
/// unchanged (no `Oracle` events, no extra node slots).
#[test]
fn reconfig_off_changes_nothing() {
    let a = run(SimConfig::new(5));
    assert_eq!(a.epochs_started, 0);
    let b = run(SimConfig {
        reconfig_p: 0.0,
        ..SimConfig::new(5)
    });
    assert_eq!((a.steps, a.submitted), (b.steps, b.submitted));
}
