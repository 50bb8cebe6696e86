//! A data directory belongs to one replica process: a second process on the
//! same directory, or another node's config pointed at it, is refused with a
//! clear error, and the running replica is not disturbed.

mod cluster;

use cluster::*;
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `synod server` on `config` and expects it to exit non-zero within
/// a few seconds with `needle` in its output.
fn expect_refused(config: &std::path::Path, needle: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_synod"))
        .arg("server")
        .arg("--config")
        .arg(config)
        .env_remove("SYNOD_FAILPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A replica that was not refused runs until it is stopped: give it a
    // few seconds, then fail (after killing it) instead of hanging.
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "a second replica started on {}:\n{}",
                config.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "a second replica started:\n{text}");
    assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
}

#[test]
fn a_data_directory_serves_one_replica_only() {
    let mut c = Cluster::new("datadir", 3, 23400, "");
    c.start_all();
    c.wait_ready(Duration::from_secs(20));

    // Same data directory, other ports: the lock refuses it.
    let text = fs::read_to_string(&c.procs[0].config).unwrap();
    let second = c.dir.join("second.toml");
    fs::write(
        &second,
        text.replace("127.0.0.1:23400", "127.0.0.1:23420")
            .replace("127.0.0.1:23410", "127.0.0.1:23430"),
    )
    .unwrap();
    expect_refused(&second, "in use by another process");

    // Node 1's identity pointed at node 0's (stopped) directory.
    assert!(c.stop(0).unwrap().success());
    let other = c.dir.join("other-id.toml");
    let node1 = fs::read_to_string(&c.procs[1].config).unwrap();
    let node0_dir = c.data_dir(0).display().to_string();
    let node1_dir = c.data_dir(1).display().to_string();
    fs::write(&other, node1.replace(&node1_dir, &node0_dir)).unwrap();
    // Node 1 is running on its own ports; stop it so only the identity check
    // can refuse the start.
    assert!(c.stop(1).unwrap().success());
    expect_refused(&other, "refusing another replica's data");

    // The rightful owner still starts and serves.
    c.start(0);
    c.start(1);
    c.wait_ready(Duration::from_secs(20));
    setup_counters(&c.client(0));
}
