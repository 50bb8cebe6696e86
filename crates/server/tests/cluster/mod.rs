//! A real-process cluster on loopback for tests: `synod server` children,
//! one config file each, SIGKILL / restart, and history checks over the
//! replicas' execution logs.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use synod_client::wire::{LogEntry, ProposeRequest};
use synod_client::{Client, ClientError};
use synod_decision::Op;

/// One replica process.
pub struct Proc {
    pub id: u16,
    pub config: PathBuf,
    pub child: Option<Child>,
    pub log_path: PathBuf,
    pub env: Vec<(String, String)>,
}

/// A cluster of `synod server` processes.
pub struct Cluster {
    pub dir: PathBuf,
    pub base_port: u16,
    pub procs: Vec<Proc>,
}

pub fn api_addr(base: u16, id: u16) -> String {
    format!("127.0.0.1:{}", base + id)
}

/// Replica `id`'s gRPC address in a cluster made by [`Cluster::with_grpc`].
pub fn grpc_addr(base: u16, id: u16) -> String {
    format!("127.0.0.1:{}", base + 20 + id)
}

impl Cluster {
    /// Writes configs for `n` replicas (HTTP `base+id`, transport
    /// `base+10+id`; so tests 20 ports apart never collide) under a fresh temp dir. `extra` is appended to every
    /// node's TOML (e.g. a `[storage]` section).
    pub fn new(name: &str, n: u16, base_port: u16, extra: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!("synod-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut members = String::new();
        for i in 0..n {
            members.push_str(&format!(
                "[[members]]\nid = {i}\npeer_addr = \"127.0.0.1:{}\"\napi_addr = \"127.0.0.1:{}\"\n\n",
                base_port + 10 + i,
                base_port + i
            ));
        }
        let procs = (0..n)
            .map(|i| {
                let config = dir.join(format!("node-{i}.toml"));
                let data = dir.join(format!("node-{i}"));
                fs::write(
                    &config,
                    format!(
                        "id = {i}\ndata_dir = \"{}\"\n\n{members}{extra}\n",
                        data.display()
                    ),
                )
                .unwrap();
                Proc {
                    id: i,
                    config,
                    child: None,
                    log_path: dir.join(format!("node-{i}.log")),
                    env: Vec::new(),
                }
            })
            .collect();
        Cluster {
            dir,
            base_port,
            procs,
        }
    }

    /// Like [`Cluster::new`], and every member also serves gRPC on
    /// `base+20+id` ([`grpc_addr`]); so a gRPC cluster spans 30 ports.
    pub fn with_grpc(name: &str, n: u16, base_port: u16, extra: &str) -> Cluster {
        let c = Cluster::new(name, n, base_port, extra);
        for p in &c.procs {
            let mut text = fs::read_to_string(&p.config).unwrap();
            for i in 0..n {
                let api = format!("api_addr = \"{}\"\n", api_addr(base_port, i));
                assert!(text.contains(&api), "{text}");
                text = text.replace(
                    &api,
                    &format!("{api}grpc_addr = \"{}\"\n", grpc_addr(base_port, i)),
                );
            }
            fs::write(&p.config, text).unwrap();
        }
        c
    }

    /// Adds replica `id` (the next id) as a *joining* replica: its config has
    /// `join = true` and lists every replica so far plus itself (HTTP
    /// `base+id`, transport `base+10+id`). Not started; the cluster adds it
    /// with `synod member add` (or `Client::add_member`).
    pub fn add_joiner(&mut self, id: u16) {
        assert_eq!(id as usize, self.procs.len(), "joiners get the next id");
        let text = fs::read_to_string(&self.procs[0].config).unwrap();
        let members_at = text.find("[[members]]").unwrap();
        let mut members = text[members_at..].to_string();
        let extra_at = members.rfind("api_addr = ").unwrap();
        let extra_at = extra_at + members[extra_at..].find('\n').unwrap() + 1;
        let extra = members.split_off(extra_at);
        members.push_str(&format!(
            "\n[[members]]\nid = {id}\npeer_addr = \"127.0.0.1:{}\"\napi_addr = \"127.0.0.1:{}\"\n",
            self.base_port + 10 + id,
            self.base_port + id
        ));
        let config = self.dir.join(format!("node-{id}.toml"));
        fs::write(
            &config,
            format!(
                "id = {id}\njoin = true\ndata_dir = \"{}\"\n\n{members}{extra}",
                self.data_dir(id).display()
            ),
        )
        .unwrap();
        self.procs.push(Proc {
            id,
            config,
            child: None,
            log_path: self.dir.join(format!("node-{id}.log")),
            env: Vec::new(),
        });
    }

    /// Replica `id`'s member request for `Client::add_member`.
    pub fn member_request(&self, id: u16) -> synod_client::wire::AddMemberRequest {
        synod_client::wire::AddMemberRequest {
            id,
            peer_addr: format!("127.0.0.1:{}", self.base_port + 10 + id),
            api_addr: api_addr(self.base_port, id),
            grpc_addr: None,
        }
    }

    pub fn data_dir(&self, id: u16) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..self.procs.len() as u16)
            .map(|i| api_addr(self.base_port, i))
            .collect()
    }

    pub fn client(&self, id: u16) -> Client {
        Client::new([api_addr(self.base_port, id)])
            .unwrap()
            .with_read_timeout(Duration::from_secs(5))
    }

    /// Starts (or restarts) replica `id`; its output is appended to its log.
    pub fn start(&mut self, id: u16) {
        let p = &mut self.procs[id as usize];
        assert!(p.child.is_none(), "node {id} is running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.log_path)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_synod"));
        cmd.arg("server")
            .arg("--config")
            .arg(&p.config)
            .env_remove("SYNOD_FAILPOINT")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &p.env {
            cmd.env(k, v);
        }
        p.child = Some(cmd.spawn().expect("spawn synod server"));
    }

    pub fn start_all(&mut self) {
        for i in 0..self.procs.len() as u16 {
            self.start(i);
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self, id: u16) {
        if let Some(mut c) = self.procs[id as usize].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to replica `id`.
    pub fn signal(&self, id: u16, signal: &str) {
        let pid = self.procs[id as usize]
            .child
            .as_ref()
            .expect("running")
            .id();
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} {pid}");
    }

    /// SIGTERM and wait (graceful stop); returns the exit status.
    pub fn stop(&mut self, id: u16) -> Option<std::process::ExitStatus> {
        let mut c = self.procs[id as usize].child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status if replica `id` has exited on its own.
    pub fn exited(&mut self, id: u16) -> Option<std::process::ExitStatus> {
        let p = &mut self.procs[id as usize];
        let s = p.child.as_mut()?.try_wait().unwrap()?;
        p.child = None;
        Some(s)
    }

    pub fn output(&self, id: u16) -> String {
        fs::read_to_string(&self.procs[id as usize].log_path).unwrap_or_default()
    }

    /// Waits until every running replica answers `/readyz`.
    pub fn wait_ready(&self, timeout: Duration) {
        let all: Vec<u16> = (0..self.procs.len() as u16).collect();
        self.wait_ready_of(&all, timeout)
    }

    /// Waits until the running replicas among `ids` answer `/readyz`.
    pub fn wait_ready_of(&self, ids: &[u16], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for p in &self.procs {
            if p.child.is_none() || !ids.contains(&p.id) {
                continue;
            }
            let c = self.client(p.id);
            while !c.readyz() {
                assert!(
                    Instant::now() < deadline,
                    "node {} not ready within {timeout:?}; its output:\n{}",
                    p.id,
                    self.output(p.id)
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Waits until the running replicas agree: same state digest, nothing
    /// pending execution, nothing in flight.
    pub fn wait_converged(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let st: Vec<_> = self
                .procs
                .iter()
                .filter(|p| p.child.is_some())
                .map(|p| self.client(p.id).status())
                .collect();
            if st.iter().all(|s| s.is_ok()) {
                let st: Vec<_> = st.into_iter().map(Result::unwrap).collect();
                let d = st[0].state_digest;
                if st
                    .iter()
                    .all(|s| s.state_digest == d && s.pending_execution == 0 && s.in_flight == 0)
                {
                    return;
                }
                if Instant::now() > deadline {
                    panic!("replicas did not converge within {timeout:?}: {st:#?}");
                }
            } else if Instant::now() > deadline {
                panic!("replicas did not answer status within {timeout:?}: {st:?}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// This incarnation's whole execution log of replica `id`.
    pub fn log(&self, id: u16) -> Vec<LogEntry> {
        let c = self.client(id);
        let mut from = 0;
        let mut out = Vec::new();
        loop {
            let page = c.log(from, 10_000).expect("log");
            if page.entries.is_empty() {
                return out;
            }
            from = page.next;
            out.extend(page.entries);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.procs.len() as u16 {
            self.kill(i);
        }
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("cluster files kept in {}", self.dir.display());
        }
    }
}

/// A decision acknowledged to a client.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Acked {
    pub client: u64,
    pub request: u64,
}

/// Closed-loop load: `workers` clients, each its own session, retrying
/// each request (same session) on every endpoint until it is answered.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub acked: Arc<Mutex<Vec<Acked>>>,
    pub errors: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<()>>,
}

/// Keys the load writes: `k/0..KEYS` and counters `c/0..COUNTERS`.
pub const KEYS: u64 = 8;
pub const COUNTERS: u64 = 4;

/// Creates the counters the load releases into.
pub fn setup_counters(c: &Client) {
    let ops = (0..COUNTERS)
        .map(|i| Op::set_stock(format!("c/{i}"), 0))
        .collect();
    propose_retrying(c, 1, 1, ops, Duration::from_secs(30)).expect("setup");
}

pub fn load_ops(client: u64, request: u64) -> Vec<Op> {
    vec![
        Op::put(
            format!("k/{}", (client * 7 + request) % KEYS),
            format!("{client}-{request}").into_bytes(),
        ),
        Op::release(format!("c/{}", request % COUNTERS), 1),
    ]
}

/// Proposes until an answer arrives or `deadline` passes.
pub fn propose_retrying(
    c: &Client,
    client: u64,
    request: u64,
    ops: Vec<Op>,
    patience: Duration,
) -> Result<(), ClientError> {
    propose_until(c, client, request, ops, patience, &AtomicBool::new(false))
}

/// Like [`propose_retrying`], but gives up as soon as `stop` is set.
pub fn propose_until(
    c: &Client,
    client: u64,
    request: u64,
    ops: Vec<Op>,
    patience: Duration,
    stop: &AtomicBool,
) -> Result<(), ClientError> {
    let deadline = Instant::now() + patience;
    let req = ProposeRequest {
        client: Some(client),
        request: Some(request),
        ops,
        guards: Vec::new(),
        issued_at_ms: Some(0),
        timeout_ms: Some(3000),
    };
    loop {
        match c.propose(&req) {
            Ok(r) => {
                assert!(r.outcome.is_applied(), "{r:?}");
                return Ok(());
            }
            Err(e) if Instant::now() < deadline && !stop.load(Ordering::Relaxed) => {
                let _ = e;
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

impl Load {
    pub fn start(endpoints: Vec<String>, workers: u64) -> Load {
        Load::start_at(endpoints, workers, 1000)
    }

    /// Like [`Load::start`], with sessions `first_client..first_client+workers`
    /// (two loads at once need disjoint sessions).
    pub fn start_at(endpoints: Vec<String>, workers: u64, first_client: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(AtomicU64::new(0));
        let threads = (0..workers)
            .map(|w| {
                let stop = stop.clone();
                let acked = acked.clone();
                let errors = errors.clone();
                // Each worker starts at a different endpoint.
                let mut eps = endpoints.clone();
                eps.rotate_left((w as usize) % endpoints.len());
                thread::spawn(move || {
                    let c = Client::new(eps)
                        .unwrap()
                        .with_connect_timeout(Duration::from_millis(300))
                        .with_read_timeout(Duration::from_secs(5));
                    let client = first_client + w;
                    let mut request = 1;
                    while !stop.load(Ordering::Relaxed) {
                        let ops = load_ops(client, request);
                        match propose_until(
                            &c,
                            client,
                            request,
                            ops,
                            Duration::from_secs(60),
                            &stop,
                        ) {
                            Ok(()) => {
                                acked.lock().unwrap().push(Acked { client, request });
                                request += 1;
                            }
                            Err(_) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            acked,
            errors,
            threads,
        }
    }

    pub fn acked_len(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops the workers (each finishes its current request) and returns
    /// what was acknowledged.
    pub fn stop(self) -> Vec<Acked> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let mut a = self.acked.lock().unwrap().clone();
        a.sort();
        a
    }
}

/// Per key, the sequence of (client, request) applied, from one log.
pub fn per_key(log: &[LogEntry]) -> BTreeMap<String, Vec<(u64, u64)>> {
    let mut m: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for e in log {
        for c in &e.commands {
            if !c.applied {
                continue;
            }
            for k in &c.keys {
                if k.starts_with('\0') {
                    continue;
                }
                m.entry(k.clone()).or_default().push((c.client, c.request));
            }
        }
    }
    m
}

/// Checks one replica's log: every acked decision applied exactly once.
pub fn check_exactly_once(node: u16, log: &[LogEntry], acked: &[Acked]) {
    let mut seen: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for e in log {
        assert!(
            ids.insert(e.instance),
            "node {node}: instance {:?} executed twice",
            e.instance
        );
        for c in &e.commands {
            if c.applied {
                *seen.entry((c.client, c.request)).or_default() += 1;
            }
        }
    }
    for (k, n) in &seen {
        assert_eq!(*n, 1, "node {node}: decision {k:?} applied {n} times");
    }
    for a in acked {
        assert!(
            seen.contains_key(&(a.client, a.request)),
            "node {node}: acknowledged decision {a:?} was never applied"
        );
    }
}

/// Checks that two replicas applied the decisions on every key in the same
/// order: `b` may have executed a suffix only (it restarted from a snapshot)
/// — then its sequence must be a contiguous suffix... of `a`'s, or equal.
pub fn check_same_order(
    a: &BTreeMap<String, Vec<(u64, u64)>>,
    b: &BTreeMap<String, Vec<(u64, u64)>>,
    full: bool,
) {
    for (k, sa) in a {
        let sb = b.get(k).cloned().unwrap_or_default();
        if full {
            assert_eq!(sa, &sb, "key {k}: replicas applied different sequences");
        } else {
            assert!(
                sa.ends_with(&sb),
                "key {k}: the restarted replica's sequence is not a suffix of the other's"
            );
        }
    }
}
