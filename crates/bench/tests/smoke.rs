//! A 1-second Synod bench against a 3-replica cluster this test runs
//! in-process: the harness produces figures and the JSON has its fields.
//! Timings are never asserted (quality-bars.md "Performance": timings go
//! in benchmarks and reports, never in pass/fail tests).

use std::net::SocketAddr;
use std::time::Duration;
use synod_bench::{BenchArgs, Format, System};
use synod_runtime::config::Member;
use synod_runtime::NodeConfig;

/// HTTP ports 29200..29203, transport 29210..29213: inside the range kept
/// for this crate's tests (29200..29300), outside the other suites'.
const BASE_PORT: u16 = 29200;

fn args(endpoints: Vec<String>, dir: &std::path::Path) -> BenchArgs {
    BenchArgs {
        endpoints,
        start: false,
        system: System::Synod,
        compare: None,
        pairs: 1,
        clients: 2,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        rate: None,
        payload_bytes: 100,
        conflict_rate: 0.5,
        zipf: None,
        keys: 1000,
        output: Format::Json,
        data_dir: Some(dir.to_path_buf()),
        etcd_bin: "/nonexistent/etcd".into(),
        install: false,
        synod_exe: None,
        quiet: true,
    }
}

#[test]
fn one_second_bench_reports_throughput_and_fields() {
    let dir = std::env::temp_dir().join(format!("synod-bench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let members: Vec<Member> = (0..3u16)
        .map(|i| Member {
            id: i,
            peer_addr: SocketAddr::from(([127, 0, 0, 1], BASE_PORT + 10 + i)),
            api_addr: SocketAddr::from(([127, 0, 0, 1], BASE_PORT + i)),
            grpc_addr: None,
        })
        .collect();
    let endpoints: Vec<String> = members.iter().map(|m| m.api_addr.to_string()).collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let nodes: Vec<_> = members
        .iter()
        .map(|m| {
            let cfg = NodeConfig {
                id: m.id,
                data_dir: dir.join(format!("node-{}", m.id)),
                members: members.clone(),
                ..NodeConfig::default()
            };
            let mut stop = stop_rx.clone();
            rt.spawn(synod_runtime::run(cfg, async move {
                let _ = stop.wait_for(|s| *s).await;
            }))
        })
        .collect();

    // Ready: every node answers /readyz.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for ep in &endpoints {
        let c = synod_client::Client::new([ep]).unwrap();
        while !c.readyz() {
            assert!(std::time::Instant::now() < deadline, "{ep} not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let a = args(endpoints, &dir);
    let trial = synod_bench::trial(&a, System::Synod).expect("bench ran");
    let json = trial.json();

    stop_tx.send(true).unwrap();
    for n in nodes {
        rt.block_on(n).unwrap().expect("node stopped cleanly");
    }
    let _ = std::fs::remove_dir_all(&dir);

    assert!(trial.throughput() > 0.0, "no decision acknowledged: {json}");
    for field in [
        "system",
        "setup",
        "decisions",
        "throughput_per_s",
        "latency_us",
        "errors",
        "fast_commits",
        "slow_commits",
        "recoveries",
        "fast_path_ratio",
        "fsyncs_per_decision",
        "floor",
        "p50_over_floor",
    ] {
        assert!(json.get(field).is_some(), "missing {field}: {json}");
    }
    for q in ["p50", "p99", "p999"] {
        assert!(json["latency_us"].get(q).is_some(), "missing latency {q}");
    }
    for f in ["fsync_p50_us", "fsync_p99_us", "rtt_p50_us", "floor_us"] {
        assert!(json["floor"].get(f).is_some(), "missing floor {f}");
    }
    assert_eq!(json["system"], "synod");
    assert!(
        json["fast_commits"].as_u64().is_some(),
        "status counters were read: {json}"
    );
}
