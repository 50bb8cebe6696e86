//! The oversell case (the client-API issue's acceptance test, through the
//! HTTP API): 50 concurrent agents reserve units from a stock of 1000 on 3
//! replicas while one replica is killed and restarted. Exactly 1000 units
//! are reserved, each remaining count 999..0 is handed out once, every
//! other request is rejected with the reason (insufficient stock), and every
//! replica applied the reservations in the same order.
//!
//! Per-key order is read from each replica's committed stream
//! (`/v1/stream`, subscribed on that replica alone).

mod cluster;

use cluster::*;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use synod_client::wire::ProposeRequest;
use synod_client::Client;
use synod_decision::{Failure, Op, OpResult, Outcome, Reason};

const STOCK: u64 = 1000;
const AGENTS: u64 = 50;

#[derive(Debug)]
enum Answer {
    Reserved(u64),
    SoldOut,
}

/// Proposes one reservation until it is answered (same session on every
/// retry, so a retry can never reserve twice).
fn reserve(c: &Client, client: u64, request: u64) -> Answer {
    let req = ProposeRequest {
        client: Some(client),
        request: Some(request),
        ops: vec![Op::reserve("sku-42", 1)],
        guards: Vec::new(),
        issued_at_ms: Some(0),
        timeout_ms: Some(3000),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match c.propose(&req) {
            Ok(r) => match r.outcome {
                Outcome::Applied { results } => match results.as_slice() {
                    [OpResult::Reserve { remaining, .. }] => return Answer::Reserved(*remaining),
                    other => panic!("unexpected results {other:?}"),
                },
                Outcome::Rejected {
                    reason:
                        Reason::OpFailed {
                            failure:
                                Failure::InsufficientStock {
                                    requested: 1,
                                    available: 0,
                                },
                            ..
                        },
                } => return Answer::SoldOut,
                Outcome::Rejected { reason } => panic!("rejected for another reason: {reason}"),
            },
            Err(e) => {
                assert!(Instant::now() < deadline, "no answer within 60 s: {e}");
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn fifty_agents_never_oversell_across_a_replica_restart() {
    let mut c = Cluster::new("oversell", 3, 23500, "");
    c.start_all();
    c.wait_ready(Duration::from_secs(20));
    let setup = ProposeRequest {
        client: Some(1),
        request: Some(1),
        ops: vec![Op::set_stock("sku-42", STOCK)],
        guards: Vec::new(),
        issued_at_ms: Some(0),
        timeout_ms: None,
    };
    assert!(c.client(0).propose(&setup).unwrap().outcome.is_applied());

    let reserved = Arc::new(AtomicU64::new(0));
    let remaining_seen = Arc::new(Mutex::new(Vec::new()));
    let sold_out = Arc::new(AtomicU64::new(0));
    let endpoints = c.endpoints();
    let agents: Vec<_> = (0..AGENTS)
        .map(|a| {
            let mut eps = endpoints.clone();
            let n = eps.len();
            eps.rotate_left(a as usize % n);
            let reserved = reserved.clone();
            let remaining_seen = remaining_seen.clone();
            let sold_out = sold_out.clone();
            thread::spawn(move || {
                let client = Client::new(eps)
                    .unwrap()
                    .with_connect_timeout(Duration::from_millis(300))
                    .with_read_timeout(Duration::from_secs(5));
                let session = 10_000 + a;
                let mut request = 1;
                loop {
                    match reserve(&client, session, request) {
                        Answer::Reserved(left) => {
                            reserved.fetch_add(1, Ordering::SeqCst);
                            remaining_seen.lock().unwrap().push(left);
                        }
                        Answer::SoldOut => {
                            sold_out.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    }
                    request += 1;
                }
            })
        })
        .collect();

    // Kill replica 2 a fifth of the way in, restart it halfway.
    let wait_for = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while reserved.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "stuck below {n} reservations");
            thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for(STOCK / 5);
    c.kill(2);
    let at_kill = reserved.load(Ordering::SeqCst);
    wait_for(STOCK / 2);
    c.start(2);
    let at_restart = reserved.load(Ordering::SeqCst);
    for a in agents {
        a.join().unwrap();
    }
    eprintln!("killed at {at_kill} reserved, restarted at {at_restart}");

    // Exactly the stock, each remaining count handed out once.
    assert_eq!(reserved.load(Ordering::SeqCst), STOCK, "units reserved");
    let seen: BTreeSet<u64> = remaining_seen.lock().unwrap().iter().copied().collect();
    assert_eq!(
        seen,
        (0..STOCK).collect(),
        "each remaining count exactly once"
    );
    assert_eq!(
        sold_out.load(Ordering::SeqCst),
        AGENTS,
        "every agent ends sold out"
    );

    c.wait_converged(Duration::from_secs(30));
    // Each replica's committed stream, read from that replica alone.
    let streams: Vec<Vec<synod_client::wire::LogEntry>> = (0..3u16)
        .map(|i| {
            let one = Client::new([api_addr(c.base_port, i)]).unwrap();
            let mut sub = one.subscribe("");
            let mut entries = Vec::new();
            while let Some(e) = sub.next(Duration::from_millis(800)).unwrap() {
                entries.push(synod_client::wire::LogEntry {
                    index: entries.len() as u64,
                    instance: e.instance,
                    commands: e.commands,
                });
            }
            entries
        })
        .collect();
    let orders: Vec<Vec<(u64, u64)>> = streams
        .iter()
        .map(|l| per_key(l).remove("sku-42").unwrap_or_default())
        .collect();
    // Set-up + 1000 reservations + the sold-out rejections are not
    // "applied"; the applied sequence is set-up plus 1000 reservations.
    assert_eq!(orders[0].len() as u64, STOCK + 1);
    for (i, o) in orders.iter().enumerate() {
        assert_eq!(o, &orders[0], "replica {i} applied sku-42 in another order");
    }
    for i in 0..3u16 {
        let r = c.client(i).read("sku-42").unwrap();
        assert_eq!(
            r.value,
            Some(synod_decision::Value::Stock(0)),
            "replica {i}"
        );
        // A local read states how stale it may be: after convergence this
        // replica executed the set-up and the reservations (in batches),
        // and nothing committed waits.
        assert_eq!(r.consistency, "local");
        let st = r.staleness.expect("a local read states its staleness");
        assert!(st.executed_instances >= 2, "replica {i}: {st:?}");
        assert_eq!(st.pending_execution, 0, "replica {i}: {st:?}");
    }
}

/// A linearizable read (`?consistency=linearizable`) goes through the
/// protocol: right after a write is acknowledged by one replica, a
/// linearizable read on any other replica sees it, every time; a bad
/// consistency value is a 400 naming the parameter.
#[test]
fn linearizable_reads_see_every_acknowledged_write() {
    let mut c = Cluster::new("linread", 3, 23800, "");
    c.start_all();
    c.wait_ready(Duration::from_secs(20));
    for round in 1..=200u64 {
        let writer = c.client((round % 3) as u16);
        let req = ProposeRequest {
            client: Some(42),
            request: Some(round),
            ops: vec![Op::put("lin/key", round.to_be_bytes().to_vec())],
            guards: Vec::new(),
            issued_at_ms: Some(0),
            timeout_ms: None,
        };
        assert!(writer.propose(&req).unwrap().outcome.is_applied());
        let reader = c.client(((round + 1) % 3) as u16);
        let r = reader.read_linearizable("lin/key").unwrap();
        assert_eq!(r.consistency, "linearizable");
        assert!(r.staleness.is_none());
        assert_eq!(
            r.value,
            Some(synod_decision::Value::Bytes(round.to_be_bytes().to_vec())),
            "round {round}: the read missed an acknowledged write"
        );
    }
    let mut s = std::net::TcpStream::connect(api_addr(c.base_port, 0)).unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "GET /v1/keys/lin%2Fkey?consistency=eventual HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("consistency"), "{resp}");
}
