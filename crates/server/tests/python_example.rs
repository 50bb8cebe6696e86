//! The Python example (`examples/python/synod_agent.py`) against a real
//! 3-replica cluster: its agents sell out the stock, and its stream follower,
//! which hangs up every few events and resumes on the next replica with the
//! last token, sees each of their decisions exactly once. The script checks
//! all of that itself and exits 0 only if it holds; this test runs it and
//! reads its verdict.

mod cluster;

use cluster::*;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const AGENTS: u32 = 3;
const STOCK: u32 = 15;
const SKUS: u32 = 2;
const SWITCH_AFTER: u32 = 4;

#[test]
fn the_python_example_sells_out_and_follows_the_stream_across_replicas() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/python/synod_agent.py")
        .canonicalize()
        .expect("examples/python/synod_agent.py exists");
    match Command::new("python3").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("`python3 --version` failed: {o:?}"),
        Err(e) => panic!(
            "python3 is not on PATH ({e}): this test runs examples/python/synod_agent.py \
             and needs a Python 3 interpreter named `python3`"
        ),
    }

    let mut c = Cluster::new("python-example", 3, 23900, "");
    c.start_all();
    c.wait_ready(Duration::from_secs(20));

    let mut child = Command::new("python3")
        .arg("-u")
        .arg(&script)
        .arg("--endpoints")
        .arg(c.endpoints().join(","))
        .args(["--agents", &AGENTS.to_string()])
        .args(["--stock", &STOCK.to_string()])
        .args(["--skus", &SKUS.to_string()])
        .args(["--switch-after", &SWITCH_AFTER.to_string()])
        .args(["--timeout", "45"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let report = format!("stdout:\n{out}\nstderr:\n{err}");
    let status = status.unwrap_or_else(|| panic!("the script ran over 60 s; killed.\n{report}"));
    assert!(status.success(), "the script failed ({status}).\n{report}");

    let total = STOCK * SKUS;
    let ok = out
        .lines()
        .find(|l| l.starts_with("OK: "))
        .unwrap_or_else(|| panic!("no OK line.\n{report}"));
    assert!(
        ok.starts_with(&format!(
            "OK: {AGENTS} agents reserved {total} of {total} units; each of "
        )),
        "unexpected summary: {ok}"
    );
    // It hung up every SWITCH_AFTER events, so it resumed several times.
    let resumptions: u32 = ok
        .rsplit("across ")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no resumption count in: {ok}"));
    assert!(
        resumptions >= 3,
        "expected several stream resumptions: {ok}"
    );
    eprintln!("{out}");
}
