//! The Synod adapter: proposals over the HTTP API with `synod_client`, one
//! exactly-once session per bench client; optionally a fresh local
//! cluster (`synod up`) per trial.

use crate::args::BenchArgs;
use crate::driver::{self, Counters, Session};
use crate::floor;
use crate::report::Trial;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use synod_client::wire::ProposeRequest;
use synod_client::{Client, ClientError};
use synod_decision::Op;

/// Replicas of a `--start` cluster.
pub const REPLICAS: u16 = 3;

/// How long a fresh cluster may take to answer `/readyz` on every node.
pub const READY_WAIT: Duration = Duration::from_secs(30);

/// How long a stopped cluster may take to exit after SIGTERM before
/// SIGKILL (`synod up` itself gives its nodes 15 s).
pub const STOP_WAIT: Duration = Duration::from_secs(20);

/// Range of base ports `--start` picks from: above the ports of
/// `synod up`'s default (7000), the test suites (21000–29600) and Linux's
/// default ephemeral range (32768–60999), where the bench's own client
/// connections and etcd's could take a port between the probe and the
/// bind. The last base leaves room for the gRPC offset.
const START_PORTS: std::ops::Range<u16> = 61_000..65_200;

/// Offset of a node's transport port from its HTTP port (`synod up`).
const TRANSPORT_PORT_OFFSET: u16 = 100;

/// `synod up`'s gRPC port offset (`up.rs` `GRPC_PORT_OFFSET`).
const GRPC_PORT_OFFSET: u16 = 200;

/// Per-request wait the replica is asked for; the bench's decisions are
/// tiny, so anything slower is an error worth counting.
const PROPOSE_TIMEOUT_MS: u64 = 10_000;

/// One client: a session (`client`, increasing `request`) on a client whose
/// endpoint order starts at a different replica for each bench client, so
/// the load is spread over the leaderless cluster.
pub struct SynodSession {
    client: Client,
    session: u64,
    request: u64,
}

impl SynodSession {
    /// Session `session` on `endpoints` rotated by `index`.
    pub fn new(endpoints: &[String], index: usize, session: u64) -> Result<SynodSession, String> {
        let mut eps = endpoints.to_vec();
        eps.rotate_left(index % endpoints.len().max(1));
        let client = Client::new(eps).map_err(|e| e.to_string())?;
        Ok(SynodSession {
            client,
            session,
            request: 0,
        })
    }
}

impl Session for SynodSession {
    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        self.request += 1;
        let req = ProposeRequest {
            client: Some(self.session),
            request: Some(self.request),
            ops: vec![Op::put(key, value.to_vec())],
            guards: Vec::new(),
            issued_at_ms: None,
            timeout_ms: Some(PROPOSE_TIMEOUT_MS),
        };
        match self.client.propose(&req) {
            Ok(resp) if resp.outcome.is_applied() => Ok(()),
            Ok(_) => Err("rejected".into()),
            Err(e) => Err(error_kind(&e)),
        }
    }
}

/// A short, bounded name for an error (no addresses or messages).
fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::InvalidEndpoint(_) => "invalid_endpoint".into(),
        ClientError::Connect { .. } => "connect".into(),
        ClientError::Io { .. } => "io".into(),
        ClientError::Http { status, body } => format!("http_{status}_{}", body.code),
        ClientError::Decode(_) => "decode".into(),
        ClientError::Timeout { .. } => "timeout".into(),
        ClientError::AllEndpointsFailed { last } => format!("all_failed_{}", error_kind(last)),
    }
}

/// Sums the replicas' `status` counters; `None` if one does not answer.
pub fn counters(endpoints: &[String]) -> Option<Counters> {
    let mut sum = Counters::default();
    for ep in endpoints {
        let s = Client::new([ep])
            .ok()?
            .with_read_timeout(Duration::from_secs(5))
            .status()
            .ok()?;
        sum.fast_commits += s.fast_commits;
        sum.slow_commits += s.slow_commits;
        sum.recoveries += s.recoveries;
        sum.wal_fsyncs += s.wal_fsyncs;
        sum.wal_records += s.wal_records;
        sum.applied += s.applied;
    }
    Some(sum)
}

/// A session id unlikely to collide with an earlier run's on the same
/// cluster (sessions are exactly-once: a reused id with a lower request
/// number would be answered from the record, not decided).
fn session_base() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    // Leaves room for CLIENTS_MAX sessions per trial.
    (t << 16) ^ (u64::from(std::process::id()) << 40) ^ (NEXT.fetch_add(1, Ordering::Relaxed) << 12)
}

/// One Synod trial: start a cluster if asked, probe the floor, drive.
pub fn trial(args: &BenchArgs) -> Result<Trial, String> {
    let cluster = if args.start {
        Some(LocalCluster::start(args)?)
    } else {
        None
    };
    let endpoints = match &cluster {
        Some(c) => c.endpoints.clone(),
        None => args.endpoints.clone(),
    };
    let probe_dir = cluster
        .as_ref()
        .map_or_else(|| args.scratch_root(), |c| c.dir.clone());
    let floor = floor::probe(&probe_dir)?;
    let base = session_base();
    let sessions = (0..args.clients as usize)
        .map(|i| {
            SynodSession::new(&endpoints, i, base + i as u64)
                .map(|s| Box::new(s) as Box<dyn Session>)
        })
        .collect::<Result<Vec<_>, _>>()?;
    args.note(&format!(
        "synod: {} clients on {} for {:?} (+{:?} warmup)",
        args.clients,
        endpoints.join(","),
        args.duration,
        args.warmup
    ));
    let measured = driver::drive(args, sessions, &|| counters(&endpoints));
    drop(cluster);
    Ok(Trial {
        system: "synod",
        setup: args.setup_json(),
        floor,
        measured,
        notes: Vec::new(),
    })
}

/// A fresh `synod up` cluster in a temporary directory; stopped (SIGTERM)
/// and deleted on drop.
pub struct LocalCluster {
    child: Child,
    /// The temporary directory (data dirs, `up.log`).
    pub dir: PathBuf,
    /// HTTP endpoints of the nodes.
    pub endpoints: Vec<String>,
}

impl LocalCluster {
    /// Starts `synod up --fresh` on a free base port and waits for every
    /// node's `/readyz`.
    pub fn start(args: &BenchArgs) -> Result<LocalCluster, String> {
        let exe = match &args.synod_exe {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(|e| format!("current executable: {e}"))?,
        };
        let dir = scratch_dir(&args.scratch_root(), "synod")?;
        let base = free_base_port(REPLICAS)?;
        let log = std::fs::File::create(dir.join("up.log"))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&exe)
            .arg("up")
            .arg("--fresh")
            .arg("--replicas")
            .arg(REPLICAS.to_string())
            .arg("--base-port")
            .arg(base.to_string())
            .arg("--data-dir")
            .arg(&dir)
            .env_remove("SYNOD_ENDPOINTS")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("starting {} up: {e}", exe.display()))?;
        let endpoints: Vec<String> = (0..REPLICAS)
            .map(|i| format!("127.0.0.1:{}", base + i))
            .collect();
        let mut cluster = LocalCluster {
            child,
            dir,
            endpoints,
        };
        if let Err(e) = cluster.wait_ready() {
            // Dropping the cluster deletes its directory: keep the log's end.
            let log = std::fs::read_to_string(cluster.dir.join("up.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!("{e}\n--- end of up.log ---\n{}", tail.join("\n")));
        }
        args.note(&format!(
            "synod: fresh cluster on {} (data in {})",
            cluster.endpoints.join(","),
            cluster.dir.display()
        ));
        Ok(cluster)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_WAIT;
        let clients: Vec<Client> = self
            .endpoints
            .iter()
            .map(|e| {
                Client::new([e]).map(|c| {
                    c.with_connect_timeout(Duration::from_millis(500))
                        .with_read_timeout(Duration::from_millis(500))
                })
            })
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "synod up exited ({status}) before the cluster was ready"
                ));
            }
            if clients.iter().all(Client::readyz) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("the cluster was not ready within {READY_WAIT:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        stop_child(&mut self.child, STOP_WAIT);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL; reaps the child.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // std has no SIGTERM and the workspace forbids `unsafe` (libc::kill):
    // the `kill` utility sends it.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A new, empty directory `<root>/synod-bench-<what>-<pid>-<n>`.
pub fn scratch_dir(root: &Path, what: &str) -> Result<PathBuf, String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = root.join(format!(
        "synod-bench-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// A base port B such that B..B+n, B+100..B+100+n (transport) and
/// B+200..B+200+n (gRPC) are free now (a race
/// with other programs remains; `synod up` then fails and says so).
pub fn free_base_port(n: u16) -> Result<u16, String> {
    let span = START_PORTS.end - START_PORTS.start - GRPC_PORT_OFFSET - n;
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id();
    for attempt in 0..200u32 {
        let base = START_PORTS.start
            + (seed.wrapping_add(attempt.wrapping_mul(7919)) % u32::from(span)) as u16;
        let ports = (0..n).flat_map(|i| {
            [
                base + i,
                base + TRANSPORT_PORT_OFFSET + i,
                base + GRPC_PORT_OFFSET + i,
            ]
        });
        let held: Result<Vec<TcpListener>, _> =
            ports.map(|p| TcpListener::bind(("127.0.0.1", p))).collect();
        if held.is_ok() {
            return Ok(base);
        }
    }
    Err("no free base port found".into())
}
