//! The committed stream (`GET /v1/stream`, Server-Sent Events): a subscriber
//! reads part of the stream from one replica, moves to another with its
//! resume token, and sees every executed instance exactly once, in an order
//! that agrees with every replica's per-key order. A replica that no longer
//! has the history a token lacks refuses it (410) instead of skipping it.

mod cluster;

use cluster::*;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use synod_client::wire::{LogEntry, StreamEvent};

/// The HTTP status a replica answers to a stream request from `token`
/// (the events themselves are read with `synod_client`'s subscription).
fn stream_status(addr: &str, token: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /v1/stream?from={} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n",
        synod_client::http::encode_path_segment(token)
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The body of a plain `GET path`.
fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = String::new();
    std::io::Read::read_to_string(&mut s, &mut all).unwrap();
    all.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// A subscription pinned to one replica (no failover).
fn subscribe_on(addr: &str, token: &str) -> synod_client::subscribe::Subscription {
    synod_client::Client::new([addr]).unwrap().subscribe(token)
}

fn as_entries(events: &[StreamEvent]) -> Vec<LogEntry> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| LogEntry {
            index: i as u64,
            instance: e.instance,
            commands: e.commands.clone(),
        })
        .collect()
}

#[test]
fn a_subscriber_moves_between_replicas_without_gaps_or_duplicates() {
    let mut c = Cluster::new(
        "stream",
        3,
        23700,
        "[storage]\nsnapshot_every_records = 300\n",
    );
    c.start_all();
    c.wait_ready(Duration::from_secs(20));
    setup_counters(&c.client(0));
    let load = Load::start(c.endpoints(), 4);
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.acked_len() < 300 {
        assert!(Instant::now() < deadline, "too slow");
        std::thread::sleep(Duration::from_millis(10));
    }

    // Read part of the stream from replica 0 while the load runs.
    let mut sub = subscribe_on(&api_addr(c.base_port, 0), "");
    let mut events = Vec::new();
    while events.len() < 150 {
        events.push(
            sub.next(Duration::from_secs(10))
                .unwrap()
                .expect("stream stalled"),
        );
    }
    let token = events.last().unwrap().token.clone();
    drop(sub);

    // Resume on replica 1 with the token; the load continues meanwhile.
    let mut sub = subscribe_on(&api_addr(c.base_port, 1), &token);
    std::thread::sleep(Duration::from_millis(300));
    let acked = load.stop();
    c.wait_converged(Duration::from_secs(30));
    while let Some(e) = sub.next(Duration::from_millis(800)).unwrap() {
        events.push(e);
    }
    // The replica counts the open subscription, and its lag is 0 now
    // that it has caught up (`synod_subscriber_lag`).
    let metrics = http_get(&api_addr(c.base_port, 1), "/metrics");
    let sample = |name: &str| -> Vec<f64> {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect()
    };
    assert_eq!(sample("synod_subscribers "), vec![1.0], "{metrics}");
    assert_eq!(sample("synod_subscriber_lag{"), vec![0.0], "{metrics}");

    // Exactly once: no instance twice, and every executed instance is there.
    let ids: Vec<_> = events.iter().map(|e| e.instance).collect();
    let unique: BTreeSet<_> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "an instance was streamed twice");
    let log1 = c.log(1);
    let executed: BTreeSet<_> = log1.iter().map(|e| e.instance).collect();
    assert_eq!(unique, executed, "the stream missed or invented instances");
    // Per-key order equals the replicas' order.
    let streamed = as_entries(&events);
    check_same_order(&per_key(&log1), &per_key(&streamed), true);
    check_exactly_once(1, &streamed, &acked);
    eprintln!("streamed {} instances across two replicas", events.len());

    // Replica 2 restarts from a snapshot: its log no longer reaches back
    // to the start, so a fresh subscriber is refused, not short-changed.
    c.kill(2);
    c.start(2);
    c.wait_ready(Duration::from_secs(20));
    let status = stream_status(&api_addr(c.base_port, 2), "");
    assert_eq!(
        status, 410,
        "a replica without the history served an empty token"
    );
    // A token that covers its snapshot is served.
    let last = events.last().unwrap().token.clone();
    assert_eq!(stream_status(&api_addr(c.base_port, 2), &last), 200);
}

/// The SDK's subscription (`Client::subscribe`) moves on by itself when the
/// replica it reads from is killed, and still sees every executed instance
/// exactly once.
#[test]
fn the_sdk_subscription_survives_a_killed_replica() {
    let mut c = Cluster::new("stream-sdk", 3, 23760, "");
    c.start_all();
    c.wait_ready(Duration::from_secs(20));
    setup_counters(&c.client(0));
    let load = Load::start(c.endpoints(), 4);
    let client = synod_client::Client::new(c.endpoints()).unwrap();
    let mut sub = client.subscribe("");
    let mut events = Vec::new();
    while events.len() < 200 {
        events.push(
            sub.next(Duration::from_secs(10))
                .unwrap()
                .expect("stream stalled"),
        );
    }
    // The subscription reads from the first endpoint, replica 0.
    c.kill(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while events.len() < 400 {
        assert!(
            Instant::now() < deadline,
            "the subscription did not move on"
        );
        if let Some(e) = sub.next(Duration::from_millis(500)).unwrap() {
            events.push(e);
        }
    }
    let acked = load.stop();
    c.wait_converged(Duration::from_secs(30));
    while let Some(e) = sub.next(Duration::from_millis(800)).unwrap() {
        events.push(e);
    }
    let ids: Vec<_> = events.iter().map(|e| e.instance).collect();
    let unique: BTreeSet<_> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "an instance was delivered twice");
    let log1 = c.log(1);
    let executed: BTreeSet<_> = log1.iter().map(|e| e.instance).collect();
    assert_eq!(
        unique, executed,
        "the subscription missed or invented instances"
    );
    let streamed = as_entries(&events);
    check_same_order(&per_key(&log1), &per_key(&streamed), true);
    check_exactly_once(1, &streamed, &acked);
    assert_eq!(sub.token(), events.last().unwrap().token);
}

/// `synod watch` prints one JSON event per line and the resume token;
/// resuming from it with `--from` continues without repeating; `synod get
/// --linearizable` reads through the protocol.
#[test]
fn cli_watch_resumes_and_get_reads() {
    let mut c = Cluster::new("cli-watch", 3, 23840, "");
    c.start_all();
    c.wait_ready(Duration::from_secs(20));
    let client = c.client(0);
    for r in 1..=30u64 {
        propose_retrying(
            &client,
            9,
            r,
            vec![synod_decision::Op::set_stock(format!("w/{r}"), r)],
            Duration::from_secs(10),
        )
        .unwrap();
    }
    let eps = c.endpoints().join(",");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_synod"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (first, err) = run(&["watch", "-e", &eps, "--count", "10"]);
    let first: Vec<StreamEvent> = first
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(first.len(), 10);
    let token = first.last().unwrap().token.clone();
    assert!(
        err.contains(&token),
        "the resume token is not printed: {err}"
    );
    let (rest, _) = run(&["watch", "-e", &eps, "--from", &token, "--idle", "1s"]);
    let rest: Vec<StreamEvent> = rest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(first.len() + rest.len(), 30, "events lost or repeated");
    let all: BTreeSet<_> = first.iter().chain(&rest).map(|e| e.instance).collect();
    assert_eq!(all.len(), 30);
    let (got, _) = run(&["get", "-e", &eps, "--linearizable", "w/7"]);
    let got: synod_client::wire::ReadResponse = serde_json::from_str(&got).unwrap();
    assert_eq!(got.value, Some(synod_decision::Value::Stock(7)));
    assert_eq!(got.consistency, "linearizable");
}
