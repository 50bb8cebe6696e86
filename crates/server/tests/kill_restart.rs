//! Real processes on loopback: propose continuously while one replica is
//! killed with SIGKILL, restart it, and check that it catches up and that
//! every acknowledged decision is executed exactly once on every replica,
//! in the same per-key order.

mod cluster;

use cluster::*;
use std::thread;
use std::time::Duration;

fn kill_restart(name: &str, base_port: u16, extra: &str, full_history_after_restart: bool) {
    let mut c = Cluster::new(name, 3, base_port, extra);
    c.start_all();
    c.wait_ready(Duration::from_secs(20));
    setup_counters(&c.client(0));
    let load = Load::start(c.endpoints(), 6);
    thread::sleep(Duration::from_millis(1500));
    let before_kill = load.acked_len();
    assert!(before_kill > 0, "no progress before the kill");
    c.kill(2);
    thread::sleep(Duration::from_millis(1500));
    let during = load.acked_len() - before_kill;
    assert!(during > 0, "no progress with one replica down");
    c.start(2);
    thread::sleep(Duration::from_millis(1500));
    let acked = load.stop();
    c.wait_converged(Duration::from_secs(30));
    eprintln!(
        "{name}: {} decisions acknowledged ({before_kill} before the kill, {during} while node 2 was down)",
        acked.len()
    );
    let logs: Vec<_> = (0..3).map(|i| c.log(i)).collect();
    for i in 0..2u16 {
        check_exactly_once(i, &logs[i as usize], &acked);
    }
    let reference = per_key(&logs[0]);
    check_same_order(&reference, &per_key(&logs[1]), true);
    if full_history_after_restart {
        check_exactly_once(2, &logs[2], &acked);
        check_same_order(&reference, &per_key(&logs[2]), true);
    } else {
        check_same_order(&reference, &per_key(&logs[2]), false);
    }
    // The counters hold exactly one unit per applied load decision (the
    // set-up decision touched every counter once and added nothing).
    let applied: u64 = reference
        .iter()
        .filter(|(k, _)| k.starts_with("c/"))
        .map(|(_, v)| v.len() as u64)
        .sum::<u64>()
        - COUNTERS;
    assert!(applied >= acked.len() as u64);
    for i in 0..3u16 {
        let mut total = 0;
        for k in 0..COUNTERS {
            let r = c.client(i).read(&format!("c/{k}")).unwrap();
            match r.value {
                Some(synod_decision::Value::Stock(s)) => total += s,
                other => panic!("node {i}: c/{k} is {other:?}"),
            }
        }
        assert_eq!(total, applied, "node {i}: counter total");
    }
}

/// No snapshot during the run: the restarted replica re-executes its whole
/// WAL, so its log holds the full history.
#[test]
fn sigkill_and_restart_loses_nothing() {
    kill_restart("kill", 21000, "", true);
}

/// Snapshots every 200 WAL records: the restarted replica starts from a
/// snapshot plus the WAL after it.
#[test]
fn sigkill_and_restart_from_snapshot_loses_nothing() {
    kill_restart(
        "kill-snap",
        21200,
        "[storage]\nsnapshot_every_records = 200\n",
        false,
    );
}

/// Five replicas, f = 2: two replicas are SIGKILLed one after the other
/// under load (the cluster keeps a quorum of three), then both restart.
#[test]
fn five_replicas_survive_two_sigkills() {
    let mut c = Cluster::new("kill5", 5, 21400, "");
    c.start_all();
    c.wait_ready(Duration::from_secs(20));
    setup_counters(&c.client(0));
    let load = Load::start(c.endpoints(), 6);
    let progress = |load: &Load, from: usize, what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while load.acked_len() < from + 200 {
            assert!(std::time::Instant::now() < deadline, "no progress {what}");
            thread::sleep(Duration::from_millis(20));
        }
        load.acked_len()
    };
    let n = progress(&load, 0, "at start");
    c.kill(3);
    let n = progress(&load, n, "with replica 3 down");
    c.kill(1);
    let n = progress(&load, n, "with replicas 1 and 3 down");
    c.start(3);
    c.start(1);
    progress(&load, n, "after the restarts");
    let acked = load.stop();
    c.wait_converged(Duration::from_secs(30));
    let logs: Vec<_> = (0..5).map(|i| c.log(i)).collect();
    let reference = per_key(&logs[0]);
    for (i, l) in logs.iter().enumerate() {
        // No snapshots: the restarted replicas re-executed their whole WAL.
        check_exactly_once(i as u16, l, &acked);
        check_same_order(&reference, &per_key(l), true);
    }
    eprintln!("five replicas: {} decisions acknowledged", acked.len());
}

/// SIGSTOP freezes a replica with its connections open (its peers' queues
/// to it fill, its clients time out and fail over); after SIGCONT it catches
/// up and every acknowledged decision is applied exactly once everywhere.
#[test]
fn sigstop_and_sigcont_lose_nothing() {
    let mut c = Cluster::new("stop", 3, 21600, "");
    c.start_all();
    c.wait_ready(Duration::from_secs(20));
    setup_counters(&c.client(0));
    let load = Load::start(c.endpoints(), 6);
    thread::sleep(Duration::from_millis(1000));
    c.signal(1, "STOP");
    let frozen_at = load.acked_len();
    thread::sleep(Duration::from_millis(2000));
    let during = load.acked_len() - frozen_at;
    assert!(during > 0, "no progress while replica 1 was frozen");
    c.signal(1, "CONT");
    thread::sleep(Duration::from_millis(1000));
    let acked = load.stop();
    c.wait_converged(Duration::from_secs(30));
    let logs: Vec<_> = (0..3).map(|i| c.log(i)).collect();
    let reference = per_key(&logs[0]);
    for (i, l) in logs.iter().enumerate() {
        check_exactly_once(i as u16, l, &acked);
        check_same_order(&reference, &per_key(l), true);
    }
    eprintln!(
        "sigstop: {} acknowledged, {during} while replica 1 was frozen",
        acked.len()
    );
}
