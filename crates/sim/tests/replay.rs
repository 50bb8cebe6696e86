//! Every failure replays from its seed (quality-bars.md R1): two runs of
//! one configuration are identical, event for event, including a violating
//! run of a broken variant.

use synod_sim::{run, Mutation, Profile, RunReport, SimConfig};

fn fingerprint(r: &RunReport) -> String {
    format!(
        "{} {} {} {:?} {} {} {} {} {} {} {} {} {:?}",
        r.steps,
        r.heal_steps,
        r.end_time,
        r.faults,
        r.submitted,
        r.fast_commits,
        r.slow_paths,
        r.recoveries,
        r.nops,
        r.commands_executed,
        r.requests_answered,
        r.max_pending_execution,
        r.violation
            .as_ref()
            .map(|v| (v.invariant, v.message.clone(), v.step, v.trace.clone()))
    )
}

#[test]
fn same_seed_same_run() {
    for replicas in [3, 5] {
        let mut c = SimConfig::new(11);
        c.replicas = replicas;
        c.conflict_rate = 0.5;
        c.steps = 4_000;
        let (a, b) = (run(c.clone()), run(c));
        assert!(a.violation.is_none(), "{}", a.violation.unwrap());
        assert_eq!(fingerprint(&a), fingerprint(&b));
    }
}

#[test]
fn a_violation_replays_identically() {
    let mut c = SimConfig::new(0).with_profile(Profile::Duel);
    c.mutation = Some(Mutation::SingleBallot);
    c.conflict_rate = 0.5;
    let mut seed = 0;
    let first = loop {
        c.seed = seed;
        let r = run(c.clone());
        if r.violation.is_some() {
            break r;
        }
        seed += 1;
        assert!(seed < 100, "no violation to replay");
    };
    let again = run(c);
    assert_eq!(fingerprint(&first), fingerprint(&again));
    let v = first.violation.unwrap();
    assert!(v.replay.contains(&format!("--seed {seed}")));
    assert!(v.replay.contains("--mutation single-ballot"));
    assert!(v.replay.contains("--profile duel"));
    assert!(!v.trace.is_empty());
}
