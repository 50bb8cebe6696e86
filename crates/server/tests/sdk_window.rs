//! The Rust SDK's bounded in-flight window (`synod_client::Pipeline`)
//! against real replica processes (base ports 29500–29599):
//!
//! - 2,000 decisions through a window of 32 while one replica is SIGKILLed
//!   and restarted: every decision is acknowledged, applied exactly once on
//!   every replica (same per-key order everywhere), nothing the pipeline did
//!   not acknowledge is applied, and never more than 32 were outstanding;
//! - replicas that admit only two waiting proposals each: the window's
//!   surplus is refused with 429, retried after the hint with the same key,
//!   and every decision ends acknowledged or with the typed overload error
//!   (never applied), none hangs.

mod cluster;

use cluster::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use synod_client::wire::ProposeResponse;
use synod_client::{Client, Pipeline, PipelineError, Ticket};
use synod_decision::Op;

/// A put on one of `KEYS` keys and one unit into one of `COUNTERS`
/// counters, so that per-key order and the counters' totals can be checked.
fn ops(i: u64) -> Vec<Op> {
    vec![
        Op::put(format!("k/{}", i % KEYS), format!("d{i}").into_bytes()),
        Op::release(format!("c/{}", i % COUNTERS), 1),
    ]
}

fn client(c: &Cluster) -> Client {
    Client::new(c.endpoints())
        .unwrap()
        .with_connect_timeout(Duration::from_millis(300))
        .with_read_timeout(Duration::from_secs(5))
}

/// Submits `n` decisions from another thread (`submit` blocks while the
/// window is full) and returns the tickets in submission order.
fn submit_all(p: &Arc<Pipeline>, n: u64) -> thread::JoinHandle<Vec<Ticket>> {
    let p = p.clone();
    thread::spawn(move || {
        (0..n)
            .map(|i| p.submit(ops(i), Vec::new()).expect("submit"))
            .collect()
    })
}

/// Waits until the pipeline has answered `n` decisions.
fn wait_completed(p: &Pipeline, n: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while p.stats().completed < n {
        assert!(
            Instant::now() < deadline,
            "{what}: stuck at {:?}",
            p.stats()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// The sum of the counters on replica `id`.
fn counter_total(c: &Cluster, id: u16) -> u64 {
    (0..COUNTERS)
        .map(
            |k| match c.client(id).read(&format!("c/{k}")).unwrap().value {
                Some(synod_decision::Value::Stock(s)) => s,
                other => panic!("node {id}: c/{k} is {other:?}"),
            },
        )
        .sum()
}

/// Every (client, request) of the pipeline's sessions that replica `id`
/// applied.
fn applied_by_pipeline(
    log: &[synod_client::wire::LogEntry],
    sessions: &BTreeSet<u64>,
) -> Vec<Acked> {
    let mut out: Vec<Acked> = log
        .iter()
        .flat_map(|e| &e.commands)
        .filter(|c| c.applied && sessions.contains(&c.client))
        .map(|c| Acked {
            client: c.client,
            request: c.request,
        })
        .collect();
    out.sort();
    out
}

const W: usize = 32;
const DECISIONS: u64 = 2000;

#[test]
fn window_of_32_exactly_once_across_a_sigkill_and_restart() {
    let mut c = Cluster::new("sdk-window", 3, 29500, "");
    c.start_all();
    c.wait_ready(Duration::from_secs(20));
    setup_counters(&c.client(0));

    let pipe = Arc::new(client(&c).pipeline(W).unwrap());
    let sessions: BTreeSet<u64> = pipe.sessions().iter().copied().collect();
    assert_eq!(sessions.len(), W);
    let submitter = submit_all(&pipe, DECISIONS);

    // Kill replica 2 at 30%, restart it at 60%.
    wait_completed(&pipe, DECISIONS * 3 / 10, "before the kill");
    c.kill(2);
    let at_kill = pipe.stats().completed;
    wait_completed(&pipe, DECISIONS * 6 / 10, "with replica 2 down");
    c.start(2);
    let at_restart = pipe.stats().completed;
    let tickets = submitter.join().unwrap();
    pipe.drain();
    let stats = pipe.stats();
    eprintln!("killed at {at_kill}, restarted at {at_restart}; {stats:?}");

    // Every decision acknowledged (applied) under the key its ticket names.
    let mut acked = Vec::new();
    for t in tickets {
        let key = (t.client(), t.request());
        let r: ProposeResponse = t.wait().unwrap_or_else(|e| panic!("decision {key:?}: {e}"));
        assert_eq!((r.client, r.request), key);
        assert!(r.outcome.is_applied(), "{key:?}: {:?}", r.outcome);
        acked.push(Acked {
            client: r.client,
            request: r.request,
        });
    }
    acked.sort();
    assert_eq!(acked.len() as u64, DECISIONS);
    // Each slot's session numbered its requests 1..=k without gaps.
    let mut per_session: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for a in &acked {
        per_session.entry(a.client).or_default().push(a.request);
    }
    for (s, rs) in &per_session {
        assert!(sessions.contains(s), "session {s} is not the pipeline's");
        assert_eq!(
            *rs,
            (1..=rs.len() as u64).collect::<Vec<_>>(),
            "session {s}"
        );
    }

    // The window: never more than W outstanding, and W were used.
    assert!(
        stats.peak_outstanding <= W && stats.peak_on_wire <= W,
        "window exceeded: {stats:?}"
    );
    assert_eq!(stats.peak_outstanding, W, "the window was never full");
    assert_eq!((stats.submitted, stats.completed), (DECISIONS, DECISIONS));
    assert!(stats.failovers > 0, "the kill was never noticed: {stats:?}");

    // Exactly once on every replica (replica 2 re-executed its whole WAL),
    // in the same per-key order, and nothing applied that was not acked.
    c.wait_converged(Duration::from_secs(60));
    let logs: Vec<_> = (0..3).map(|i| c.log(i)).collect();
    let reference = per_key(&logs[0]);
    for i in 0..3u16 {
        let log = &logs[i as usize];
        check_exactly_once(i, log, &acked);
        assert_eq!(
            applied_by_pipeline(log, &sessions),
            acked,
            "node {i}: the pipeline's applied decisions are exactly the acknowledged ones"
        );
        check_same_order(&reference, &per_key(log), true);
        assert_eq!(counter_total(&c, i), DECISIONS, "node {i}: counter total");
    }
}

/// Replicas admit two waiting proposals each (`limits.max_waiting_proposals`),
/// so most of a window of 32 is refused with 429 at any moment.
#[test]
fn overload_is_retried_with_the_same_key_and_never_hangs() {
    const N: u64 = 400;
    let mut c = Cluster::new(
        "sdk-overload",
        3,
        29520,
        "[limits]\nmax_waiting_proposals = 2\n",
    );
    c.start_all();
    c.wait_ready(Duration::from_secs(20));
    setup_counters(&c.client(0));

    let pipe = Arc::new(client(&c).pipeline(W).unwrap());
    let sessions: BTreeSet<u64> = pipe.sessions().iter().copied().collect();
    let t0 = Instant::now();
    let tickets = submit_all(&pipe, N).join().unwrap();
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    for t in tickets {
        let key = (t.client(), t.request());
        match t.wait() {
            Ok(r) => {
                assert!(r.outcome.is_applied(), "{key:?}: {:?}", r.outcome);
                acked.push(Acked {
                    client: r.client,
                    request: r.request,
                });
            }
            Err(
                e @ PipelineError::Overloaded {
                    maybe_applied: false,
                    ..
                },
            ) => {
                assert!(e.is_retryable());
                assert_eq!(e.key(), Some(key));
                refused.push(Acked {
                    client: key.0,
                    request: key.1,
                });
            }
            Err(e) => panic!("decision {key:?}: unexpected {e}"),
        }
    }
    let elapsed = t0.elapsed();
    let stats = pipe.stats();
    eprintln!(
        "{} acknowledged, {} refused as overloaded in {elapsed:?}; {stats:?}",
        acked.len(),
        refused.len()
    );
    assert!(stats.overloaded > 0, "no 429 was ever answered: {stats:?}");
    assert!(
        stats.attempts > N,
        "refused decisions were not retried: {stats:?}"
    );
    assert!(!acked.is_empty(), "nothing got through the overload");
    assert!(stats.peak_outstanding <= W);
    acked.sort();

    c.wait_converged(Duration::from_secs(60));
    for i in 0..3u16 {
        let log = c.log(i);
        check_exactly_once(i, &log, &acked);
        // A decision refused as overloaded on every attempt was never
        // applied: the applied ones are exactly the acknowledged ones.
        assert_eq!(applied_by_pipeline(&log, &sessions), acked, "node {i}");
        assert_eq!(counter_total(&c, i), acked.len() as u64, "node {i}");
    }
}
