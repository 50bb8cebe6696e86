//! `synod up`: a local cluster of N replicas as child processes of this
//! executable, each running `synod server --config <data-dir>/node-<id>.toml`.
//!
//! Children's output lines are prefixed with `[node-<id>]`. Ctrl-C or
//! SIGTERM sends SIGTERM to every child, waits for them (up to
//! [`SHUTDOWN_GRACE`], then SIGKILL) and exits 0. A child that dies on its
//! own is reported and the others keep running.

use crate::cli::UpArgs;
use crate::config;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use synod_client::Client;
use synod_runtime::config::Member;
use synod_runtime::NodeConfig;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// How long to wait for every node's `/readyz` before settling for
/// `/livez`. A fresh local cluster is ready in well under a second; a
/// node replaying a large WAL may take longer, and then "live" is still
/// worth reporting rather than blocking the prompt.
pub const READY_WAIT: Duration = Duration::from_secs(10);

/// After [`READY_WAIT`], how long to wait for `/livez` of the nodes that
/// are not ready. A process that does not even answer `/livez` by then is
/// reported as not answering.
pub const LIVE_WAIT: Duration = Duration::from_secs(5);

/// Pause between readiness probes of one node.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// Per-probe connect and read bound: loopback answers in microseconds; a
/// probe must not hold up the loop over the other nodes.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// How long stopping waits for the children after SIGTERM before
/// SIGKILL. A replica's graceful stop makes its WAL durable (one fsync)
/// and closes connections: well under a second, even on a slow disk; 15 s
/// is generous so a slow machine never loses a clean shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Offset of the transport ports from the HTTP ports (HTTP BASE+i,
/// transport BASE+100+i), as in `NodeConfig::local`.
pub const TRANSPORT_PORT_OFFSET: u16 = 100;

/// Offset of the gRPC ports from the HTTP ports (gRPC BASE+200+i), as in
/// `NodeConfig::local`.
pub const GRPC_PORT_OFFSET: u16 = 200;

/// `SYNOD_*` variables that would make every child the same node; they are
/// removed from the children's environment. Other `SYNOD_*` overrides
/// (e.g. `SYNOD_PROTOCOL__TICK_MS`) pass through and apply to every node.
const ENV_PER_NODE: &[&str] = &[
    "SYNOD_ID",
    "SYNOD_DATA_DIR",
    "SYNOD_CONFIG",
    "SYNOD_MEMBERS",
];

/// Node `id`'s config in the local cluster of `n` replicas under `root`,
/// with HTTP ports from `base_port` (transport and gRPC at their offsets).
pub fn local_config(id: u16, n: u16, root: &Path, base_port: u16) -> NodeConfig {
    let mut cfg = NodeConfig::local(id, n, root);
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    cfg.members = (0..n)
        .map(|i| {
            Member::new(
                i,
                at(base_port + TRANSPORT_PORT_OFFSET + i),
                at(base_port + i),
            )
            .with_grpc(at(base_port + GRPC_PORT_OFFSET + i))
        })
        .collect();
    cfg
}

/// Fails with a message naming the first port on 127.0.0.1 that is
/// taken.
pub fn check_ports_free(n: u16, base_port: u16) -> Result<(), String> {
    for id in 0..n {
        for (port, what) in [
            (base_port + id, "HTTP API"),
            (base_port + TRANSPORT_PORT_OFFSET + id, "replica transport"),
            (base_port + GRPC_PORT_OFFSET + id, "gRPC API"),
        ] {
            if let Err(e) = TcpListener::bind(("127.0.0.1", port)) {
                return Err(format!(
                    "port {port} (node-{id} {what}) on 127.0.0.1 is not available: {e}; \
                     is another cluster running? Stop it or pick other ports with --base-port"
                ));
            }
        }
    }
    Ok(())
}

/// Removes `node-<digits>` directories and `node-<digits>.toml` files
/// directly in `root`, nothing else.
fn remove_node_entries(root: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(root).map_err(|e| format!("{}: {e}", root.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("node-") else {
            continue;
        };
        let path = entry.path();
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let res = if path.is_dir() && digits(rest) {
            std::fs::remove_dir_all(&path)
        } else if rest.strip_suffix(".toml").is_some_and(digits) {
            std::fs::remove_file(&path)
        } else {
            continue;
        };
        res.map_err(|e| format!("--fresh: removing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// One started child.
struct Node {
    id: u16,
    pid: u32,
    /// Set once its exit has been seen (by the waiter thread).
    exited: Arc<AtomicBool>,
    api: SocketAddr,
    grpc: Option<SocketAddr>,
}

/// How far a node got at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Readiness {
    Ready,
    LiveOnly,
    NotAnswering,
    Exited,
}

/// Runs `synod up`.
pub fn up(a: &UpArgs) -> Result<ExitCode, String> {
    let n = a.replicas;
    if ![3, 5, 7].contains(&n) {
        return Err(format!("--replicas {n}: Synod runs 3, 5 or 7 replicas"));
    }
    if a.base_port == 0 || u32::from(a.base_port) + u32::from(GRPC_PORT_OFFSET + n) > 65_536 {
        return Err(format!(
            "--base-port {}: ports {}..{} must fit in 1..=65535",
            a.base_port,
            a.base_port,
            u32::from(a.base_port) + u32::from(GRPC_PORT_OFFSET + n) - 1
        ));
    }
    check_ports_free(n, a.base_port)?;
    std::fs::create_dir_all(&a.data_dir)
        .map_err(|e| format!("creating {}: {e}", a.data_dir.display()))?;
    let root = a
        .data_dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", a.data_dir.display()))?;
    if a.fresh {
        remove_node_entries(&root)?;
    } else if (0..n).any(|id| root.join(format!("node-{id}")).exists()) {
        println!(
            "reusing the data in {} (--fresh starts empty)",
            root.display()
        );
    }
    let mut files = Vec::new();
    for id in 0..n {
        let mut cfg = local_config(id, n, &root, a.base_port);
        if let Some(brokers) = &a.kafka {
            cfg.kafka = Some(synod_runtime::config::KafkaConfig {
                brokers: brokers.clone(),
                ingest: Some(Default::default()),
                egress: Some(synod_runtime::config::EgressConfig {
                    transactions: !a.kafka_no_transactions,
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        cfg.validate().map_err(|e| format!("node-{id}: {e}"))?;
        let path = root.join(format!("node-{id}.toml"));
        let text = format!(
            "# Written by `synod up` for node-{id} of {n}; rewritten at every start.\n{}",
            config::to_toml(&cfg)
        );
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        let me = cfg.me().expect("validated");
        files.push((id, path, me.api_addr, me.grpc_addr));
    }
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the tokio runtime: {e}"))?;
    rt.block_on(supervise(exe, files, root, a.base_port))
}

async fn supervise(
    exe: PathBuf,
    files: Vec<(u16, PathBuf, SocketAddr, Option<SocketAddr>)>,
    root: PathBuf,
    base_port: u16,
) -> Result<ExitCode, String> {
    // Before the first child: from here on SIGINT/SIGTERM are ours to
    // handle, not fatal.
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let (exit_tx, mut exit_rx) = mpsc::unbounded_channel::<(u16, std::io::Result<ExitStatus>)>();
    let mut nodes = Vec::new();
    let mut pipes: Vec<JoinHandle<()>> = Vec::new();
    for (id, path, api, grpc) in &files {
        let mut cmd = Command::new(&exe);
        cmd.arg("server")
            .arg("--config")
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for v in ENV_PER_NODE {
            cmd.env_remove(v);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let mut reported = vec![false; nodes.len()];
                stop(&nodes, &mut reported, &mut exit_rx).await;
                return Err(format!("starting node-{id}: {e}"));
            }
        };
        let prefix = format!("[node-{id}] ");
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        pipes.push(forward(out, prefix.clone(), false));
        pipes.push(forward(err, prefix, true));
        let pid = child.id();
        let exited = Arc::new(AtomicBool::new(false));
        let (tx, flag, id) = (exit_tx.clone(), exited.clone(), *id);
        std::thread::spawn(move || {
            let st = child.wait();
            flag.store(true, Ordering::SeqCst);
            let _ = tx.send((id, st));
        });
        nodes.push(Node {
            id,
            pid,
            exited,
            api: *api,
            grpc: *grpc,
        });
    }
    println!(
        "[synod up] started {} replicas from {}",
        nodes.len(),
        root.display()
    );

    let probe_nodes: Vec<(SocketAddr, Arc<AtomicBool>)> =
        nodes.iter().map(|n| (n.api, n.exited.clone())).collect();
    let mut ready = tokio::task::spawn_blocking(move || wait_ready(&probe_nodes));
    let mut alive = nodes.len();
    // Exits already seen on `exit_rx`, by node id (ids are 0..n).
    let mut reported = vec![false; nodes.len()];
    let readiness = loop {
        tokio::select! {
            r = &mut ready => break r.map_err(|e| format!("readiness probe: {e}"))?,
            _ = int.recv() => return Ok(shutdown("SIGINT", &nodes, &mut reported, &mut exit_rx, pipes).await),
            _ = term.recv() => return Ok(shutdown("SIGTERM", &nodes, &mut reported, &mut exit_rx, pipes).await),
            Some((id, st)) = exit_rx.recv() => {
                if node_exited(id, st, &mut reported, &mut alive) {
                    join(pipes);
                    return Err("every node has exited".into());
                }
            }
        }
    };
    print_intro(&nodes, &readiness, base_port);

    loop {
        tokio::select! {
            _ = int.recv() => return Ok(shutdown("SIGINT", &nodes, &mut reported, &mut exit_rx, pipes).await),
            _ = term.recv() => return Ok(shutdown("SIGTERM", &nodes, &mut reported, &mut exit_rx, pipes).await),
            Some((id, st)) = exit_rx.recv() => {
                if node_exited(id, st, &mut reported, &mut alive) {
                    join(pipes);
                    return Err("every node has exited".into());
                }
            }
        }
    }
}

/// Copies `from` line by line to our stdout (or stderr), each line
/// prefixed; ends at the child's EOF.
fn forward(from: impl Read + Send + 'static, prefix: String, to_stderr: bool) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line.last() != Some(&b'\n') {
                line.push(b'\n');
            }
            // One write per line, under the lock, so lines of different
            // nodes never interleave.
            let mut buf = prefix.clone().into_bytes();
            buf.extend_from_slice(&line);
            let _ = if to_stderr {
                std::io::stderr().lock().write_all(&buf)
            } else {
                std::io::stdout().lock().write_all(&buf)
            };
        }
    })
}

/// Probes every node: `/readyz` until [`READY_WAIT`], then `/livez` for
/// the rest until [`LIVE_WAIT`] more.
fn wait_ready(nodes: &[(SocketAddr, Arc<AtomicBool>)]) -> Vec<Readiness> {
    let clients: Vec<Client> = nodes
        .iter()
        .map(|(addr, _)| {
            Client::new([addr])
                .expect("a socket address is a valid endpoint")
                .with_connect_timeout(PROBE_TIMEOUT)
                .with_read_timeout(PROBE_TIMEOUT)
        })
        .collect();
    let mut state = vec![Readiness::NotAnswering; nodes.len()];
    let start = Instant::now();
    let mut live_phase = false;
    loop {
        for (i, (_, exited)) in nodes.iter().enumerate() {
            if exited.load(Ordering::SeqCst) {
                state[i] = Readiness::Exited;
            }
            let want = if live_phase {
                Readiness::LiveOnly
            } else {
                Readiness::Ready
            };
            if state[i] != Readiness::NotAnswering {
                continue;
            }
            let ok = if live_phase {
                clients[i].livez()
            } else {
                clients[i].readyz()
            };
            if ok {
                state[i] = want;
            }
        }
        if state.iter().all(|s| *s != Readiness::NotAnswering) {
            return state;
        }
        let elapsed = start.elapsed();
        if !live_phase && elapsed >= READY_WAIT {
            live_phase = true;
            continue;
        }
        if elapsed >= READY_WAIT + LIVE_WAIT {
            return state;
        }
        std::thread::sleep(PROBE_INTERVAL);
    }
}

/// Records an unexpected exit of node `id` and reports it; true when no
/// node is left.
fn node_exited(
    id: u16,
    st: std::io::Result<ExitStatus>,
    reported: &mut [bool],
    alive: &mut usize,
) -> bool {
    reported[usize::from(id)] = true;
    *alive -= 1;
    report_exit(id, st, *alive);
    *alive == 0
}

fn report_exit(id: u16, st: std::io::Result<ExitStatus>, alive: usize) {
    let how = match st {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    };
    eprintln!(
        "[synod up] node-{id} exited unexpectedly ({how}); the other {alive} node(s) keep running \
         (Ctrl-C stops them; restart with `synod up` to bring it back)"
    );
}

fn print_intro(nodes: &[Node], readiness: &[Readiness], base_port: u16) {
    print!("{}", intro(nodes, readiness, base_port));
    let _ = std::io::stdout().flush();
}

/// What `synod up` prints once the nodes are up: each node's endpoints and
/// state, and how to send a first decision.
fn intro(nodes: &[Node], readiness: &[Readiness], base_port: u16) -> String {
    let mut s = String::from("\n[synod up] cluster endpoints:\n");
    for (n, r) in nodes.iter().zip(readiness) {
        let what = match r {
            Readiness::Ready => "ready (/readyz 200)".to_string(),
            Readiness::LiveOnly => format!(
                "live but not ready after {}s (/livez 200, /readyz not 200)",
                READY_WAIT.as_secs()
            ),
            Readiness::NotAnswering => "not answering /livez or /readyz".to_string(),
            Readiness::Exited => "exited".to_string(),
        };
        let grpc = n.grpc.map_or(String::new(), |g| format!("  grpc {g}"));
        s.push_str(&format!(
            "  node-{}  http://{}{grpc}  pid {}  {what}\n",
            n.id, n.api, n.pid
        ));
    }
    let url = |i: usize| format!("http://{}", nodes[i % nodes.len()].api);
    let endpoints = if base_port == 7000 {
        String::new()
    } else {
        let list: Vec<String> = nodes.iter().map(|n| n.api.to_string()).collect();
        format!(" -e {}", list.join(","))
    };
    s.push_str(&format!(
        "\nSend a first decision (stock 10 of sku-42, reserve one, read it back on another replica):\n\
         \x20 curl -s -X POST {u0}/v1/decisions -H 'content-type: application/json' -d '{{\"ops\":[{{\"SetStock\":{{\"key\":\"sku-42\",\"qty\":10}}}}]}}'\n\
         \x20 curl -s -X POST {u1}/v1/decisions -H 'content-type: application/json' -d '{{\"ops\":[{{\"Reserve\":{{\"key\":\"sku-42\",\"qty\":1}}}}]}}'\n\
         \x20 curl -s {u2}/v1/keys/sku-42\n\
         or with the CLI:\n\
         \x20 synod propose{endpoints} --op 'set-stock sku-42 10'\n\
         \x20 synod propose{endpoints} --op 'reserve sku-42 1'\n\
         \x20 synod status{endpoints}\n\
         \x20 synod member list{endpoints}   (grow or shrink: README, \"Growing and shrinking a cluster\")\n\
         gRPC: service synod.v1.Synod on the grpc addresses above (crates/runtime/proto/synod/v1/synod.proto).\n\
         Ctrl-C stops the cluster.\n",
        u0 = url(0),
        u1 = url(1),
        u2 = url(2),
    ));
    s
}

/// Stops every child and reports how each ended; the cluster was asked to
/// stop, so this is a clean exit.
async fn shutdown(
    why: &str,
    nodes: &[Node],
    reported: &mut [bool],
    exits: &mut mpsc::UnboundedReceiver<(u16, std::io::Result<ExitStatus>)>,
    pipes: Vec<JoinHandle<()>>,
) -> ExitCode {
    println!(
        "[synod up] {why}: stopping {} node(s) with SIGTERM",
        nodes
            .iter()
            .filter(|n| !n.exited.load(Ordering::SeqCst))
            .count()
    );
    stop(nodes, reported, exits).await;
    join(pipes);
    println!("[synod up] stopped");
    ExitCode::SUCCESS
}

/// SIGTERM to every child still running; waits up to [`SHUTDOWN_GRACE`]
/// for all exits not yet `reported`, then SIGKILLs the rest.
async fn stop(
    nodes: &[Node],
    reported: &mut [bool],
    exits: &mut mpsc::UnboundedReceiver<(u16, std::io::Result<ExitStatus>)>,
) {
    // `exited` is set by the waiter once the child is reaped, so a pid
    // whose flag is set may belong to another process by now: never
    // signal it.
    let running = |n: &&Node| !n.exited.load(Ordering::SeqCst);
    for n in nodes.iter().filter(running) {
        signal_pid(n.pid, "TERM");
    }
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    let mut killed = false;
    while reported.iter().any(|r| !r) {
        let next = if killed {
            // SIGKILL cannot be caught: the exits follow at once.
            exits.recv().await
        } else {
            match tokio::time::timeout_at(deadline, exits.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    for n in nodes.iter().filter(running) {
                        eprintln!(
                            "[synod up] node-{} did not stop within {}s: SIGKILL",
                            n.id,
                            SHUTDOWN_GRACE.as_secs()
                        );
                        signal_pid(n.pid, "KILL");
                    }
                    killed = true;
                    continue;
                }
            }
        };
        let Some((id, st)) = next else { break };
        reported[usize::from(id)] = true;
        match st {
            Ok(s) => println!("[synod up] node-{id} stopped ({s})"),
            Err(e) => println!("[synod up] node-{id}: wait failed: {e}"),
        }
    }
}

/// Sends `SIG<sig>` to `pid` with the system's `kill` (no unsafe code and
/// no signal crate needed; `Child::kill` can only SIGKILL).
fn signal_pid(pid: u32, sig: &str) {
    let r = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Err(e) = r {
        eprintln!("[synod up] cannot run `kill -{sig} {pid}`: {e}");
    }
}

fn join(pipes: Vec<JoinHandle<()>>) {
    for p in pipes {
        let _ = p.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_configs_use_the_base_port_and_validate() {
        let c = local_config(1, 5, Path::new("/tmp/x"), 9000);
        c.validate().unwrap();
        assert_eq!(c.me().unwrap().api_addr.port(), 9001);
        assert_eq!(c.me().unwrap().peer_addr.port(), 9101);
        assert_eq!(c.me().unwrap().grpc_addr.unwrap().port(), 9201);
        assert_eq!(c, {
            let mut d = NodeConfig::local(1, 5, Path::new("/tmp/x"));
            d.members = c.members.clone();
            d
        });
        // The default base port is NodeConfig::local's layout.
        assert_eq!(
            local_config(2, 3, Path::new("/r"), 7000),
            NodeConfig::local(2, 3, Path::new("/r"))
        );
    }

    #[test]
    fn a_taken_port_is_named() {
        // node-1's HTTP port is the taken one. The port below it must be
        // free for that: other tests' connections take ephemeral ports at
        // any time, so retry with another port if it is not (or stops
        // being free before the check).
        let mut named = false;
        for _ in 0..50 {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            if !(2..=65_000).contains(&port) || TcpListener::bind(("127.0.0.1", port - 1)).is_err()
            {
                continue;
            }
            let e = check_ports_free(3, port - 1).unwrap_err();
            if e.contains(&format!("port {} (node-0 HTTP API)", port - 1)) {
                continue; // taken meanwhile by someone else
            }
            assert!(e.contains(&format!("port {port} (node-1 HTTP API)")), "{e}");
            named = true;
            break;
        }
        assert!(named, "no ephemeral port with a free neighbour in 50 tries");
        // node-2's gRPC port is the taken one (HTTP and transport free),
        // with the same retry for ports other tests take meanwhile.
        let mut named = false;
        for _ in 0..50 {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            if port <= GRPC_PORT_OFFSET + 2 {
                continue;
            }
            let base = port - GRPC_PORT_OFFSET - 2;
            if !(0..3).all(|i| {
                TcpListener::bind(("127.0.0.1", base + i)).is_ok()
                    && TcpListener::bind(("127.0.0.1", base + TRANSPORT_PORT_OFFSET + i)).is_ok()
            }) {
                continue;
            }
            let e = check_ports_free(3, base).unwrap_err();
            if !e.contains("gRPC") {
                continue; // an HTTP or transport port was taken meanwhile
            }
            assert!(e.contains(&format!("port {port} (node-2 gRPC API)")), "{e}");
            named = true;
            break;
        }
        assert!(named, "no ephemeral port with free neighbours in 50 tries");
    }

    /// The per-node file `synod up` writes carries `grpc_addr` and reads
    /// back the same; a misspelt member key is still an error.
    #[test]
    fn node_files_carry_grpc_addr_and_refuse_unknown_member_keys() {
        let c = local_config(0, 3, Path::new("/r"), 9000);
        let text = config::to_toml(&c);
        assert!(text.contains("grpc_addr = \"127.0.0.1:9202\""), "{text}");
        let back: NodeConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        // Without grpc_addr a member serves no gRPC.
        let plain = text.replace("grpc_addr = ", "# grpc_addr = ");
        let back: NodeConfig = toml::from_str(&plain).unwrap();
        assert!(back.members.iter().all(|m| m.grpc_addr.is_none()));
        let typo = text.replace("grpc_addr", "grpc_adr");
        let e = toml::from_str::<NodeConfig>(&typo).unwrap_err().to_string();
        assert!(e.contains("grpc_adr"), "{e}");
    }

    #[test]
    fn intro_names_every_grpc_endpoint() {
        let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let nodes: Vec<Node> = (0..3)
            .map(|i| Node {
                id: i,
                pid: 1,
                exited: Arc::new(AtomicBool::new(false)),
                api: at(9000 + i),
                grpc: Some(at(9200 + i)),
            })
            .collect();
        let text = intro(&nodes, &[Readiness::Ready; 3], 9000);
        for i in 0..3 {
            assert!(
                text.contains(&format!(
                    "node-{i}  http://127.0.0.1:900{i}  grpc 127.0.0.1:920{i}"
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn fresh_removes_only_node_entries() {
        let root = std::env::temp_dir().join(format!("synod-up-fresh-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["node-0/wal", "node-12", "node-x", "other"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in ["node-0.toml", "node-a.toml", "notes.toml"] {
            std::fs::write(root.join(f), "").unwrap();
        }
        remove_node_entries(&root).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["node-a.toml", "node-x", "notes.toml", "other"]);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
