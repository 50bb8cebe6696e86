//! Crash at every persistence point (quality-bars R4): for each name in
//! `FAILPOINTS`, a child process (this test binary re-executed, running only
//! `crash_child`) appends from several threads with `wait_durable`, writes
//! snapshots along the way, prints every LSN acknowledged as durable, and dies
//! at the failpoint with power-loss semantics (see `synod_storage::failpoint`).
//! The parent reopens the directory and asserts that every acknowledged record
//! is there, intact, exactly once.
//!
//! Works under `cargo test` and cargo-nextest alike: both run the same libtest
//! harness binary, which `--exact crash_child --include-ignored` narrows to the
//! child.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use synod_storage::failpoint::{self, FAILPOINTS};
use synod_storage::{check, Lsn, Wal, WalOptions};

/// Set by the parent: the child's data directory.
const CHILD_DIR_ENV: &str = "SYNOD_CRASH_CHILD_DIR";
/// Set by the parent instead of `SYNOD_FAILPOINT` to arm through the API.
const CHILD_ARM_ENV: &str = "SYNOD_CRASH_CHILD_ARM";
const THREADS: u64 = 4;
const PER_THREAD: u64 = 90;
/// Thread 0 writes a snapshot after these many of its own records.
const SNAPSHOT_AT: [u64; 3] = [25, 50, 75];

fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 8192,
        max_record_bytes: 1024,
        ..WalOptions::default()
    }
}

fn payload(t: u64, i: u64) -> Vec<u8> {
    format!("t{t}-i{i}-{}", "p".repeat(100)).into_bytes()
}

fn snapshot_body(lsn: Lsn) -> Vec<u8> {
    format!("snapshot@{lsn}").into_bytes()
}

/// The child. Does nothing unless started by `crash_at_every_failpoint`.
#[test]
#[ignore = "child process of crash_at_every_failpoint"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    if let Ok(spec) = std::env::var(CHILD_ARM_ENV) {
        let (name, n) = spec.split_once(':').expect("name:n");
        failpoint::arm(name, n.parse().expect("count")).expect("known failpoint");
    }
    let (wal, rec) = Wal::open(Path::new(&dir), opts(), Box::new(|_| {})).expect("open");
    assert!(
        rec.records.is_empty(),
        "the child starts from an empty directory"
    );
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let lsn = wal.append(payload(t, i)).expect("append");
                    wal.wait_durable(lsn).expect("wait_durable");
                    println!("ack {lsn} {t} {i}");
                    if t == 0 && SNAPSHOT_AT.contains(&i) {
                        let s = wal.durable_lsn();
                        wal.write_snapshot(s, &snapshot_body(s)).expect("snapshot");
                        println!("snapshot {s}");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("appender");
    }
    println!("done");
}

/// Which hit of `name` to fire on, so that each fires mid-run, after some
/// acknowledgements: hit 1 of the segment points is the first segment at open,
/// hit 2 of the spare points the spare made at open.
fn nth_hit(name: &str) -> u64 {
    match name {
        "wal.before_write" | "wal.after_write" | "wal.after_fsync" => 40,
        n if n.starts_with("wal.") => 3,
        _ => 2, // the second snapshot (which also compacts segments)
    }
}

#[test]
fn crash_at_every_failpoint() {
    let exe = std::env::current_exe().expect("test binary path");
    for (k, &name) in FAILPOINTS.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let spec = format!("{name}:{}", nth_hit(name));
        let mut cmd = Command::new(&exe);
        cmd.args(["--exact", "crash_child", "--nocapture", "--include-ignored"])
            .args(["--test-threads", "1"])
            .env(CHILD_DIR_ENV, dir.path())
            .env_remove(failpoint::ENV_VAR)
            .env_remove(CHILD_ARM_ENV);
        // Alternate between the environment variable and the API.
        if k % 2 == 0 {
            cmd.env(failpoint::ENV_VAR, &spec);
        } else {
            cmd.env(CHILD_ARM_ENV, &spec);
        }
        let out = cmd.output().expect("run child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("synod: failpoint {name} fired")),
            "{spec}: the failpoint never fired (status {})\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        assert!(!out.status.success(), "{spec}: the child must die");
        assert!(!stdout.contains("\ndone"), "{spec}: child finished");

        let mut acked: Vec<(Lsn, Vec<u8>)> = Vec::new();
        for line in stdout.lines() {
            let mut w = line.split(' ');
            if w.next() == Some("ack") {
                let mut n = || w.next().unwrap().parse::<u64>().unwrap();
                let (lsn, t, i) = (n(), n(), n());
                acked.push((lsn, payload(t, i)));
            }
        }
        assert!(
            !acked.is_empty(),
            "{spec}: fired before any acknowledgement"
        );

        let report = check(dir.path()).unwrap_or_else(|e| panic!("{spec}: check: {e}"));
        let (wal, rec) = Wal::open(dir.path(), opts(), Box::new(|_| {}))
            .unwrap_or_else(|e| panic!("{spec}: reopen: {e}\n{stderr}"));
        let snap_lsn = match &rec.snapshot {
            Some((s, body)) => {
                assert_eq!(body, &snapshot_body(*s), "{spec}: snapshot body");
                *s
            }
            None => 0,
        };
        let records: BTreeMap<Lsn, &Vec<u8>> = rec.records.iter().map(|(l, p)| (*l, p)).collect();
        assert_eq!(records.len(), rec.records.len(), "{spec}: an lsn twice");
        let mut seen = HashSet::new();
        for (lsn, p) in &rec.records {
            assert!(*lsn > snap_lsn, "{spec}: record {lsn} below the snapshot");
            assert!(
                seen.insert(p.clone()),
                "{spec}: a payload appears twice (lsn {lsn})"
            );
        }
        for (lsn, p) in &acked {
            if *lsn <= snap_lsn {
                continue; // covered by the snapshot
            }
            assert_eq!(
                records.get(lsn),
                Some(&p),
                "{spec}: acknowledged lsn {lsn} lost or changed"
            );
        }
        assert_eq!(
            report.next_lsn,
            wal.last_lsn() + 1,
            "{spec}: check and open agree"
        );
        // LSNs continue past everything acknowledged, never reused.
        let max_acked = acked.iter().map(|a| a.0).max().unwrap();
        let next = wal.append(b"after crash".to_vec()).unwrap();
        assert!(next > max_acked, "{spec}: lsn {next} reused");
        wal.wait_durable(next).unwrap();
        wal.close().unwrap();
        let (_, rec) = Wal::open(dir.path(), opts(), Box::new(|_| {})).unwrap();
        assert_eq!(
            rec.records.last().unwrap(),
            &(next, b"after crash".to_vec()),
            "{spec}"
        );
    }
}
