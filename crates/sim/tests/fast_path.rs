//! Fault-free fast-path ratio (quality-bars.md P4: ≥ 99% at 3 replicas with
//! no faults, at any conflict rate). The simulator is deterministic, so the
//! ratio is a property of the protocol and the workload, not of the machine:
//! asserting it guards against regressions without timing anything.
//!
//! Plain EPaxos* cannot reach the target at high conflict rates: two origins
//! that submit conflicting commands concurrently cannot both see replies equal
//! to their own D0, so one of them goes slow. The core's contention routing
//! (`Options::forward_contended`) sends commands on contended keys to one
//! owner replica, and commands from one origin do not race. The test prints
//! both so the cost of turning it off stays visible.

use synod_sim::{run, SimConfig};

const SEEDS: u64 = 5;

/// (fast-path ratio, instances, slow paths) over `SEEDS` fault-free seeds.
fn measure(replicas: usize, rate: f64, forward: bool) -> (f64, u64, u64) {
    let (mut submitted, mut fast, mut slow) = (0, 0, 0);
    for seed in 0..SEEDS {
        let mut c = SimConfig::new(seed).without_faults();
        c.replicas = replicas;
        c.conflict_rate = rate;
        c.no_forward = !forward;
        let r = run(c);
        if let Some(v) = &r.violation {
            panic!("{v}");
        }
        assert!(r.quiescent);
        submitted += r.submitted;
        fast += r.fast_commits;
        slow += r.slow_paths;
    }
    (fast as f64 / submitted.max(1) as f64, submitted, slow)
}

#[test]
fn fault_free_fast_path_ratio_meets_p4_at_three_replicas() {
    for rate in [0.0, 0.1, 1.0] {
        let (ratio, n, slow) = measure(3, rate, true);
        let (plain, _, plain_slow) = measure(3, rate, false);
        println!(
            "3 replicas, no faults, conflict rate {rate}: fast-path ratio {ratio:.4} \
             ({n} instances, {slow} slow); without contention routing {plain:.4} ({plain_slow} slow)"
        );
        assert!(
            ratio >= 0.99,
            "P4: fast-path ratio {ratio:.4} < 0.99 at conflict rate {rate}"
        );
        assert!(
            ratio >= plain,
            "contention routing made the fast path rarer"
        );
    }
}

#[test]
fn fault_free_fast_path_ratio_at_five_and_seven_replicas() {
    for replicas in [5, 7] {
        for rate in [0.0, 1.0] {
            let (ratio, n, slow) = measure(replicas, rate, true);
            println!(
                "{replicas} replicas, no faults, conflict rate {rate}: fast-path ratio {ratio:.4} \
                 ({n} instances, {slow} slow)"
            );
            assert!(
                ratio > 0.9,
                "fast path mostly lost at {replicas} replicas, rate {rate}"
            );
        }
    }
}
