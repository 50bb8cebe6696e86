//! Process-level smoke test of `synod up`: three real replica processes on
//! loopback, a decision through the client, a read on another replica, and
//! a clean stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use synod_client::wire::ProposeRequest;
use synod_client::Client;
use synod_decision::{Op, Value};

/// Bound on the cluster coming up (build caches are warm: the processes
/// start in well under a second; the rest is slack for a loaded CI box).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Bound on the clean stop (the cluster's own grace is 15 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

fn request(op: Op) -> ProposeRequest {
    ProposeRequest {
        client: None,
        request: None,
        ops: vec![op],
        guards: vec![],
        issued_at_ms: None,
        timeout_ms: None,
    }
}

#[test]
fn up_serves_decisions_and_stops_cleanly_on_sigterm() {
    let pid = std::process::id();
    // Away from the default 7000.. so a developer's own `synod up` does not
    // collide; spread by pid so concurrent runs rarely do either.
    // 24000..=28990 (+100 for transport, +200 for gRPC, so up to 29192):
    // clear of the other process tests (21000..23999, 29200..) and below
    // the ephemeral port range (32768..).
    let base_port = 24_000 + (pid % 500) as u16 * 10;
    let dir = std::env::temp_dir().join(format!("synod-up-smoke-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut up = Command::new(env!("CARGO_BIN_EXE_synod"))
        .args([
            "up",
            "--fresh",
            "--base-port",
            &base_port.to_string(),
            "--data-dir",
        ])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    for pipe in [
        Box::new(up.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(up.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let mut out = Vec::new();
    let deadline = Instant::now() + START_TIMEOUT;
    while !out
        .iter()
        .any(|l: &String| l.contains("Ctrl-C stops the cluster"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => out.push(l),
            Err(e) => {
                let _ = up.kill();
                panic!("cluster did not come up ({e}):\n{}", out.join("\n"));
            }
        }
    }
    let ready = out
        .iter()
        .filter(|l| l.contains("ready (/readyz 200)"))
        .count();
    assert_eq!(ready, 3, "{}", out.join("\n"));

    let endpoints: Vec<String> = (0..3)
        .map(|i| format!("127.0.0.1:{}", base_port + i))
        .collect();
    let c = Client::new(&endpoints).unwrap();
    let r = c
        .propose(&request(Op::SetStock {
            key: "sku-42".into(),
            qty: 10,
        }))
        .unwrap();
    assert!(r.outcome.is_applied(), "{r:?}");
    let r = c
        .propose(&request(Op::Reserve {
            key: "sku-42".into(),
            qty: 1,
        }))
        .unwrap();
    assert!(r.outcome.is_applied(), "{r:?}");
    // A local read on another replica catches up once it executes both.
    let other = Client::new([&endpoints[2]]).unwrap();
    let read_deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = other.read("sku-42").unwrap();
        if v.value == Some(Value::Stock(9)) {
            break;
        }
        assert!(
            Instant::now() < read_deadline,
            "node-2 never saw stock 9: {v:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let st = Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + STOP_TIMEOUT;
    let status = loop {
        if let Some(s) = up.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = up.kill();
            panic!("synod up did not stop");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    out.extend(rx.iter());
    let text = out.join("\n");
    assert!(status.success(), "{status}\n{text}");
    for id in 0..3 {
        assert!(
            text.contains(&format!("[synod up] node-{id} stopped (exit status: 0)")),
            "{text}"
        );
    }
    // Every child is gone: its ports are free again.
    for i in 0..3 {
        std::net::TcpListener::bind(("127.0.0.1", base_port + i)).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
