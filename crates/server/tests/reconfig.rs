//! Growing a cluster 3 → 5 and shrinking it back to 3 under load, with
//! real `synod server` processes (issue 5; epaxos.md §8).
//!
//! Two closed-loop loads run through the changes: one on the three
//! original replicas the whole time, one on the two added replicas while
//! they are members. Then every decision acknowledged to any client, also
//! those acknowledged by the replicas that were removed, must be applied
//! exactly once on every remaining replica, in the same per-key order, and
//! the joiners' histories (which start at their snapshot) must be suffixes
//! of the same order.
//!
//! Ports 29600–29699.

mod cluster;

use cluster::*;
use std::time::{Duration, Instant};
use synod_client::wire::MembersResponse;
use synod_client::Client;

const BASE: u16 = 29600;

fn members(c: &Client) -> MembersResponse {
    c.members().expect("GET /v1/members")
}

/// Waits until epoch `epoch − 1` is complete and `also` holds.
fn wait_change(c: &Client, epoch: u64, what: &str, also: impl Fn(&MembersResponse) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = c.members();
        if let Ok(m) = &m {
            let complete = m.epochs.iter().any(|e| e.epoch + 1 == epoch && e.complete);
            if complete && also(m) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not done within 60 s: {m:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Retries a membership call while it fails (no leader during an
/// election, a change still completing), for at most 30 s.
fn retrying<T>(what: &str, f: impl Fn() -> Result<T, synod_client::ClientError>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) => {
                assert!(Instant::now() < deadline, "{what}: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn voter(m: &MembersResponse, id: u16) -> bool {
    m.members
        .iter()
        .any(|e| e.id == id && e.raft_role == "voter")
}

/// Waits until `l` has `n` more acknowledged decisions (at most 60 s).
fn wait_acked(l: &Load, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let start = l.acked_len();
    while l.acked_len() < start + n {
        assert!(Instant::now() < deadline, "load made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Three running replicas with counters set up, `joiners` more configured
/// (`join = true`, not started), a client of the three, and a load of 4
/// sessions on them that has had 50 decisions acknowledged.
fn three_under_load(name: &str, base: u16, joiners: u16) -> (Cluster, Client, Load) {
    let mut c = Cluster::new(name, 3, base, "");
    for id in 3..3 + joiners {
        c.add_joiner(id);
    }
    for id in 0..3 {
        c.start(id);
    }
    c.wait_ready_of(&[0, 1, 2], Duration::from_secs(30));
    let admin = Client::new(c.endpoints()[..3].to_vec())
        .unwrap()
        .with_read_timeout(Duration::from_secs(10));
    setup_counters(&admin);
    let load = Load::start(c.endpoints()[..3].to_vec(), 4);
    wait_acked(&load, 50);
    (c, admin, load)
}

#[test]
fn growing_3_to_5_and_shrinking_back_under_load_loses_no_acknowledged_decision() {
    let (mut c, admin, original) = three_under_load("reconfig", BASE, 2);

    // 3 → 4 → 5: each joiner is started first (it waits), then added.
    for id in [3u16, 4] {
        c.start(id);
        let r = retrying("add", || admin.add_member(&c.member_request(id)));
        wait_change(&admin, r.epoch, &format!("adding {id}"), |m| voter(m, id));
        c.wait_ready_of(&[id], Duration::from_secs(60));
        wait_acked(&original, 30);
    }
    let m = members(&admin);
    assert_eq!(m.epoch, 2, "{m:#?}");
    assert_eq!(
        m.epochs.last().unwrap().members,
        vec![0, 1, 2, 3, 4],
        "{m:#?}"
    );
    // The added replicas take proposals too.
    let added = Load::start_at(c.endpoints()[3..].to_vec(), 2, 2000);
    wait_acked(&added, 40);
    wait_acked(&original, 30);
    let mut acked = added.stop();
    acked.extend(original.stop());
    // All five agree: the joiners started from correct snapshots.
    c.wait_converged(Duration::from_secs(30));
    let original = Load::start_at(c.endpoints()[..3].to_vec(), 4, 3000);
    wait_acked(&original, 30);

    // 5 → 4 → 3: remove the added replicas; each stays up until its last
    // epoch is complete, then stops.
    let mut joiner_logs = Vec::new();
    for id in [4u16, 3] {
        let r = retrying("remove", || admin.remove_member(id));
        wait_change(&admin, r.epoch, &format!("removing {id}"), |m| {
            !voter(m, id) && m.leader.is_some_and(|l| l != id)
        });
        joiner_logs.push((id, c.log(id)));
        assert!(c.stop(id).is_some_and(|s| s.success()), "node {id} stopped");
        // Its data directory, control plane's WAL included, verifies offline.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_synod"))
            .arg("check")
            .arg("--data-dir")
            .arg(c.data_dir(id))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "synod check: {text}");
        assert!(text.contains("control: ok"), "synod check: {text}");
        wait_acked(&original, 30);
    }
    let m = members(&admin);
    assert_eq!(m.epoch, 4, "{m:#?}");
    assert_eq!(m.epochs.last().unwrap().members, vec![0, 1, 2], "{m:#?}");

    acked.extend(original.stop());
    acked.sort();
    assert!(
        acked.len() >= 200,
        "only {} decisions acknowledged",
        acked.len()
    );
    c.wait_converged(Duration::from_secs(30));
    let logs: Vec<_> = (0..3).map(|id| c.log(id)).collect();
    for (id, log) in logs.iter().enumerate() {
        check_exactly_once(id as u16, log, &acked);
    }
    let reference = per_key(&logs[0]);
    for log in &logs[1..] {
        check_same_order(&reference, &per_key(log), true);
    }
    for (id, log) in &joiner_logs {
        assert!(!log.is_empty(), "node {id} executed nothing while a member");
        // A joiner executed a contiguous stretch of each key's history:
        // from its snapshot until it stopped.
        for (k, seq) in per_key(log) {
            let all = reference.get(&k).cloned().unwrap_or_default();
            assert!(
                all.windows(seq.len()).any(|w| w == seq.as_slice()),
                "node {id}, key {k}: its sequence {seq:?} is not a contiguous part of node 0's"
            );
        }
    }
}

/// A continuing member (maybe the control plane's leader) is killed with
/// SIGKILL right after a replica is added and restarted while the epoch
/// closes; then an *original* member is removed and stopped. Nothing
/// acknowledged is lost, and the survivors agree.
#[test]
fn a_member_killed_during_a_change_and_an_original_member_removed_lose_nothing() {
    let base = BASE + 40;
    let (mut c, admin, load) = three_under_load("reconfig-kill", base, 1);

    c.start(3);
    let r = retrying("add", || admin.add_member(&c.member_request(3)));
    c.kill(0);
    wait_acked(&load, 20);
    c.start(0);
    wait_change(&admin, r.epoch, "adding 3 across a crash", |m| voter(m, 3));
    c.wait_ready_of(&[0, 3], Duration::from_secs(60));
    wait_acked(&load, 30);

    let r = retrying("remove", || admin.remove_member(2));
    wait_change(&admin, r.epoch, "removing 2", |m| {
        !voter(m, 2) && m.leader.is_some_and(|l| l != 2)
    });
    assert!(c.stop(2).is_some_and(|s| s.success()), "node 2 stopped");
    wait_acked(&load, 30);
    let m = members(&admin);
    assert_eq!(m.epochs.last().unwrap().members, vec![0, 1, 3], "{m:#?}");

    let acked = load.stop();
    c.wait_converged(Duration::from_secs(30));
    // Node 1 ran throughout: its log is the whole history.
    let full = c.log(1);
    check_exactly_once(1, &full, &acked);
    let reference = per_key(&full);
    // Node 0 restarted (its log starts at its snapshot) and node 3 joined
    // (at its snapshot): each executed a suffix of the same order.
    for id in [0u16, 3] {
        check_same_order(&reference, &per_key(&c.log(id)), false);
    }

    // Replicated settings: a follower redirects the write to the leader,
    // bad input is refused, every replica then reads the new settings.
    let leader = members(&admin).leader.expect("a control-plane leader");
    let follower = [0u16, 1, 3].into_iter().find(|i| *i != leader).unwrap();
    let body = br#"{"thrifty":true,"batch_size_max":32}"#;
    let r = http(&api_addr(base, follower), "PUT", "/v1/settings", Some(body));
    assert_eq!(r.status, 307, "{r:?}");
    assert_eq!(r.header("synod-leader"), Some(leader.to_string().as_str()));
    let location = r.header("location").expect("Location").to_string();
    let (at, path) = location
        .strip_prefix("http://")
        .and_then(|l| l.split_once('/'))
        .expect("http://host:port/path");
    assert_eq!(at, api_addr(base, leader));
    let bad = http(at, "PUT", "/v1/settings", Some(br#"{"batch_size_max":0}"#));
    assert_eq!(bad.status, 400, "{bad:?}");
    let ok = http(at, "PUT", &format!("/{path}"), Some(body));
    assert_eq!(ok.status, 200, "{ok:?}");
    for id in [0u16, 1, 3] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = http(&api_addr(base, id), "GET", "/v1/settings", None);
            let text = String::from_utf8_lossy(&r.body).to_string();
            if text.contains("\"batch_size_max\":32") && text.contains("\"thrifty\":true") {
                break;
            }
            assert!(Instant::now() < deadline, "node {id} settings: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One HTTP/1.1 exchange (no redirects followed).
fn http(addr: &str, method: &str, path: &str, body: Option<&[u8]>) -> synod_client::http::Response {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    synod_client::http::write_request(&mut s, method, addr, path, body).expect("write");
    synod_client::http::read_response(&mut std::io::BufReader::new(s)).expect("response")
}
