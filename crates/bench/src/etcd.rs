//! The etcd adapter: a fresh 3-member etcd cluster on loopback per trial
//! (Debian's `etcd-server`, v3.4), driven through etcd's native gRPC
//! `KV.Put` with the same clients, keys and payload as Synod.
//!
//! etcd fsyncs its WAL before it acknowledges a put, as Synod does, so the
//! two are compared at the same durability.

use crate::args::BenchArgs;
use crate::driver::{self, Counters, Session};
use crate::floor;
use crate::report::Trial;
use crate::synod::{free_base_port, scratch_dir, stop_child};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// Generated from proto/etcd_kv.proto by build.rs.
#[allow(missing_docs, clippy::all)] // generated code
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

use etcdserverpb::kv_client::KvClient;
use etcdserverpb::PutRequest;

/// Members of the etcd cluster, as many as Synod's replicas.
pub const MEMBERS: u16 = 3;

/// How long a fresh etcd cluster may take to elect a leader and accept a
/// put on every member.
pub const READY_WAIT: Duration = Duration::from_secs(30);

/// How long a stopped etcd member may take to exit after SIGTERM.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Per-put deadline, as Synod's proposals get.
const PUT_TIMEOUT: Duration = Duration::from_secs(10);

/// Worker threads of the runtime that carries the gRPC connections: the
/// bench's client threads do the waiting; the runtime only moves bytes.
const RUNTIME_WORKERS: usize = 2;

/// The command that installs etcd on Debian.
pub const INSTALL_COMMAND: &str = "apt-get update && apt-get install -y etcd-server";

/// One client: a gRPC channel to one member (members taken in turn).
pub struct EtcdSession {
    rt: tokio::runtime::Handle,
    kv: KvClient<Channel>,
}

impl Session for EtcdSession {
    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        let req = PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.to_vec(),
            ..PutRequest::default()
        };
        let mut kv = self.kv.clone();
        self.rt
            .block_on(async move { tokio::time::timeout(PUT_TIMEOUT, kv.put(req)).await })
            .map_err(|_| "timeout".to_string())?
            .map(|_| ())
            .map_err(|s| format!("grpc_{:?}", s.code()).to_lowercase())
    }
}

/// Makes sure the etcd binary is there, installing it with apt-get if
/// `--install` was given.
fn ensure_installed(args: &BenchArgs) -> Result<(), String> {
    if args.etcd_bin.exists() {
        return Ok(());
    }
    if !args.install {
        return Err(format!(
            "etcd not found at {}; install it with `{INSTALL_COMMAND}` or pass --install",
            args.etcd_bin.display()
        ));
    }
    args.note(&format!("installing etcd: {INSTALL_COMMAND}"));
    let ok = Command::new("sh")
        .arg("-c")
        .arg(INSTALL_COMMAND)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("running apt-get: {e}"))?
        .success();
    if !ok || !args.etcd_bin.exists() {
        return Err(format!(
            "`{INSTALL_COMMAND}` did not install {}",
            args.etcd_bin.display()
        ));
    }
    Ok(())
}

/// A fresh etcd cluster; members stopped (SIGTERM) and data deleted on drop.
pub struct EtcdCluster {
    children: Vec<Child>,
    /// Data directories and logs.
    pub dir: PathBuf,
    /// Client URLs, `http://127.0.0.1:PORT`.
    pub endpoints: Vec<String>,
}

impl EtcdCluster {
    /// Starts `MEMBERS` members: client port BASE+i, peer port BASE+100+i.
    pub fn start(args: &BenchArgs) -> Result<EtcdCluster, String> {
        ensure_installed(args)?;
        let dir = scratch_dir(&args.scratch_root(), "etcd")?;
        let base = free_base_port(MEMBERS)?;
        let peer = |i: u16| format!("http://127.0.0.1:{}", base + 100 + i);
        let client = |i: u16| format!("http://127.0.0.1:{}", base + i);
        let initial: Vec<String> = (0..MEMBERS).map(|i| format!("m{i}={}", peer(i))).collect();
        let mut cluster = EtcdCluster {
            children: Vec::new(),
            endpoints: (0..MEMBERS).map(client).collect(),
            dir,
        };
        for i in 0..MEMBERS {
            let log = std::fs::File::create(cluster.dir.join(format!("m{i}.log")))
                .map_err(|e| format!("{}: {e}", cluster.dir.display()))?;
            let log2 = log.try_clone().map_err(|e| e.to_string())?;
            let child = Command::new(&args.etcd_bin)
                .arg("--name")
                .arg(format!("m{i}"))
                .arg("--data-dir")
                .arg(cluster.dir.join(format!("m{i}")))
                .arg("--listen-client-urls")
                .arg(client(i))
                .arg("--advertise-client-urls")
                .arg(client(i))
                .arg("--listen-peer-urls")
                .arg(peer(i))
                .arg("--initial-advertise-peer-urls")
                .arg(peer(i))
                .arg("--initial-cluster")
                .arg(initial.join(","))
                .arg("--initial-cluster-token")
                .arg(format!("synod-bench-{}-{base}", std::process::id()))
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--logger")
                .arg("zap")
                .arg("--log-outputs")
                .arg("stderr")
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .map_err(|e| format!("starting {}: {e}", args.etcd_bin.display()))?;
            cluster.children.push(child);
        }
        Ok(cluster)
    }

    /// Waits until every member accepts a put.
    fn wait_ready(&mut self, rt: &tokio::runtime::Runtime) -> Result<(), String> {
        let deadline = Instant::now() + READY_WAIT;
        for (i, url) in self.endpoints.clone().iter().enumerate() {
            loop {
                if let Some(Ok(Some(status))) = self.children.get_mut(i).map(Child::try_wait) {
                    return Err(format!(
                        "etcd member {i} exited ({status}); see {}",
                        self.log(i).display()
                    ));
                }
                let ok = rt.block_on(async {
                    let ch = Endpoint::from_shared(url.clone())
                        .map_err(|e| e.to_string())?
                        .connect_timeout(Duration::from_millis(500))
                        .timeout(Duration::from_secs(2))
                        .connect()
                        .await
                        .map_err(|e| e.to_string())?;
                    KvClient::new(ch)
                        .put(PutRequest {
                            key: b"bench/ready".to_vec(),
                            value: b"1".to_vec(),
                            ..PutRequest::default()
                        })
                        .await
                        .map_err(|e| e.to_string())
                });
                if ok.is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "etcd member {i} did not accept a put within {READY_WAIT:?} ({}); see {}",
                        ok.err().unwrap_or_default(),
                        self.log(i).display()
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("m{i}.log"))
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            stop_child(c, STOP_WAIT);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Σ `etcd_disk_wal_fsync_duration_seconds_count` over the members'
/// `/metrics` (served on the client port), as [`Counters::wal_fsyncs`];
/// `None` if a member does not answer.
fn wal_fsyncs(members: &[String]) -> Option<Counters> {
    let mut sum = Counters::default();
    for m in members {
        let text = http_get(m, "/metrics").ok()?;
        let line = text
            .lines()
            .find(|l| l.starts_with("etcd_disk_wal_fsync_duration_seconds_count"))?;
        let n: f64 = line.split_whitespace().last()?.parse().ok()?;
        sum.wal_fsyncs += n as u64;
    }
    Some(sum)
}

/// A plain HTTP/1.0 GET of `path` on `addr`; the body.
fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text
        .split_once("\r\n\r\n")
        .map_or(text.clone(), |(_, b)| b.to_string()))
}

/// One etcd trial: fresh cluster, floor probe, drive.
pub fn trial(args: &BenchArgs) -> Result<Trial, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_WORKERS)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let mut cluster = EtcdCluster::start(args)?;
    cluster.wait_ready(&rt)?;
    args.note(&format!(
        "etcd: fresh cluster on {} (data in {})",
        cluster.endpoints.join(","),
        cluster.dir.display()
    ));
    let floor = floor::probe(Path::new(&cluster.dir))?;
    let sessions = (0..args.clients as usize)
        .map(|i| {
            let url = cluster.endpoints[i % cluster.endpoints.len()].clone();
            let ch = rt.block_on(async {
                Endpoint::from_shared(url)
                    .map_err(|e| e.to_string())?
                    .connect()
                    .await
                    .map_err(|e| format!("connecting to etcd: {e}"))
            })?;
            Ok(Box::new(EtcdSession {
                rt: rt.handle().clone(),
                kv: KvClient::new(ch),
            }) as Box<dyn Session>)
        })
        .collect::<Result<Vec<_>, String>>()?;
    args.note(&format!(
        "etcd: {} clients for {:?} (+{:?} warmup), gRPC KV.Put",
        args.clients, args.duration, args.warmup
    ));
    let metrics: Vec<String> = cluster
        .endpoints
        .iter()
        .map(|u| u.trim_start_matches("http://").to_string())
        .collect();
    let measured = driver::drive(args, sessions, &|| wal_fsyncs(&metrics));
    drop(cluster);
    drop(rt);
    Ok(Trial {
        system: "etcd",
        setup: args.setup_json(),
        floor,
        measured,
        notes: Vec::new(),
    })
}
