//! Corruption (quality-bars.md R5) with real processes: a flipped bit inside
//! a replica's WAL or snapshot stops it with an error naming the file and
//! offset (it never serves from bad data), `synod check` reports the same,
//! and a torn tail is cut off so the replica restarts and catches up.

mod cluster;

use cluster::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == ext))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Offset just past the last non-zero byte of a preallocated segment.
fn used_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)
}

/// A cluster that ran some load, with replica `victim` stopped cleanly.
fn cluster_with_history(name: &str, port: u16, extra: &str, victim: u16) -> Cluster {
    let mut c = Cluster::new(name, 3, port, extra);
    c.start_all();
    c.wait_ready(Duration::from_secs(20));
    setup_counters(&c.client(0));
    let load = Load::start(c.endpoints(), 3);
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.acked_len() < 400 {
        assert!(Instant::now() < deadline, "too slow");
        thread::sleep(Duration::from_millis(20));
    }
    load.stop();
    let status = c.stop(victim).expect("was running");
    assert!(
        status.success(),
        "graceful stop failed: {}",
        c.output(victim)
    );
    c
}

/// Starts `victim` and expects it to refuse: exit non-zero, naming `file`.
fn expect_refusal(c: &mut Cluster, victim: u16, file: &Path) {
    let before = c.output(victim).len();
    c.start(victim);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = c.exited(victim) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the replica kept running on corrupt data: {}",
            c.output(victim)
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let out = c.output(victim)[before..].to_string();
    let fname = file.file_name().unwrap().to_string_lossy().to_string();
    assert!(out.contains(&fname), "error does not name {fname}:\n{out}");
    assert!(
        out.contains("offset"),
        "error does not name the offset:\n{out}"
    );
    // `synod check` says the same, offline.
    let check = Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(["check", "--data-dir"])
        .arg(c.data_dir(victim))
        .output()
        .unwrap();
    assert!(!check.status.success(), "synod check passed a corrupt dir");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        text.contains(&fname),
        "synod check does not name {fname}:\n{text}"
    );
}

#[test]
fn bit_flip_inside_the_wal_stops_the_replica() {
    let mut c = cluster_with_history("flip-wal", 23000, "", 1);
    let seg = files(&c.data_dir(1).join("wal"), "seg")
        .into_iter()
        .next()
        .expect("a WAL segment");
    let mut bytes = fs::read(&seg).unwrap();
    let used = used_len(&bytes);
    assert!(used > 4096, "segment too short: {used}");
    // Middle of the used part: valid records follow, so this is corruption
    // inside the log, not a torn tail.
    bytes[used / 2] ^= 0x10;
    fs::write(&seg, &bytes).unwrap();
    expect_refusal(&mut c, 1, &seg);
}

#[test]
fn bit_flip_in_a_snapshot_stops_the_replica() {
    let mut c = cluster_with_history(
        "flip-snap",
        23100,
        "[storage]\nsnapshot_every_records = 200\n",
        1,
    );
    let snap = files(&c.data_dir(1).join("snap"), "snap")
        .pop()
        .expect("a snapshot");
    let mut bytes = fs::read(&snap).unwrap();
    let at = bytes.len() * 2 / 3;
    bytes[at] ^= 0x01;
    fs::write(&snap, &bytes).unwrap();
    expect_refusal(&mut c, 1, &snap);
}

#[test]
fn truncated_snapshot_stops_the_replica() {
    let mut c = cluster_with_history(
        "trunc-snap",
        23200,
        "[storage]\nsnapshot_every_records = 200\n",
        2,
    );
    let snap = files(&c.data_dir(2).join("snap"), "snap")
        .pop()
        .expect("a snapshot");
    let len = fs::metadata(&snap).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&snap)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    expect_refusal(&mut c, 2, &snap);
}

#[test]
fn torn_wal_tail_is_cut_and_the_replica_catches_up() {
    let mut c = cluster_with_history("torn", 23300, "", 2);
    let seg = files(&c.data_dir(2).join("wal"), "seg")
        .pop()
        .expect("a WAL segment");
    let mut bytes = fs::read(&seg).unwrap();
    let used = used_len(&bytes);
    // Tear the last record: zero its final bytes, as a crash mid-write
    // leaves it.
    for b in &mut bytes[used - 7..used] {
        *b = 0;
    }
    fs::write(&seg, &bytes).unwrap();
    c.start(2);
    c.wait_ready(Duration::from_secs(20));
    let out = c.output(2);
    assert!(
        out.contains("torn tail"),
        "the cut was not reported:\n{out}"
    );
    // It serves and converges with the others.
    let client = c.client(2);
    propose_retrying(&client, 77, 1, load_ops(77, 1), Duration::from_secs(20)).unwrap();
    c.wait_converged(Duration::from_secs(30));
}
