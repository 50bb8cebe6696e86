//! Fault-free fast-path ratio (quality-bars.md P4 asks ≥ 99% at 3 replicas
//! with no faults at any conflict rate; this test only measures and prints
//! it, the lead decides the target). Also a clean fault-free run must reach
//! quiescence without violations.

use synod_sim::{run, SimConfig};

const SEEDS: u64 = 5;

#[test]
fn fault_free_fast_path_ratio() {
    for rate in [0.0, 0.1, 1.0] {
        let (mut submitted, mut fast, mut slow) = (0, 0, 0);
        for seed in 0..SEEDS {
            let mut c = SimConfig::new(seed).without_faults();
            c.replicas = 3;
            c.conflict_rate = rate;
            let r = run(c);
            if let Some(v) = &r.violation {
                panic!("{v}");
            }
            assert!(r.quiescent);
            submitted += r.submitted;
            fast += r.fast_commits;
            slow += r.slow_paths;
        }
        let ratio = fast as f64 / submitted.max(1) as f64;
        println!(
            "3 replicas, no faults, conflict rate {rate}: fast-path ratio {ratio:.4} \
             ({fast} fast of {submitted} instances, {slow} slow paths)"
        );
        assert!(ratio > 0.0, "no instance took the fast path");
    }
}
