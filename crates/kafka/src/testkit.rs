//! A real Kafka-compatible broker for tests: [tansu](https://tansu.io) 0.6.0,
//! run as a child process with SQLite storage in a directory
//! (`shared/design/kafka.md` §4).
//!
//! ```no_run
//! use synod_kafka::testkit::{tansu_or_skip, Tansu};
//!
//! let Some(bin) = tansu_or_skip() else { return };
//! let dir = std::env::temp_dir().join("my-test");
//! let broker = Tansu::start(&bin, &dir, 29799).unwrap();
//! broker.create_topic("engine.proposals", 1).unwrap();
//! let config = broker.client_config(); // bootstrap.servers = 127.0.0.1:29799
//! ```
//!
//! # Installing
//!
//! `scripts/install-tansu.sh` builds it (`cargo install tansu --version 0.6.0
//! --features libsql --debug --locked`) into
//! `${TANSU_TOOLS_DIR:-$HOME/.cache/synod-tools}/tansu-0.6.0-libsql-debug/bin/tansu`, once
//! per cache; `scripts/test.sh` runs it and exports `TANSU_BIN=<path>` and
//! `REQUIRE_TANSU=1`, so in the project's test command a missing broker
//! fails the tests instead of skipping them. tansu's default features store
//! nothing (`null` storage): `libsql` provides `sqlite://` (`dynostore`
//! would provide `memory://`). A release build with both took 30 min of CPU
//! (38.7 min wall on 2 shared cores; a 62 MB binary); the debug build with
//! `libsql` alone takes 12.5 min of CPU (13.4 min wall; a 475 MB binary, most
//! of it debug info), and the tests run as fast against it.
//!
//! # Why the variables are not called `SYNOD_*`
//!
//! The `synod` binary reads every `SYNOD_*` environment variable as node
//! config (`crates/server/src/config.rs`, `Env::prefixed("SYNOD_")`) and
//! refuses unknown keys: with `SYNOD_TANSU` and `SYNOD_REQUIRE_TANSU` in the
//! test environment, every test that spawns `synod` failed ("unknown field:
//! found `require_tansu`"). Hence `TANSU_BIN`, `REQUIRE_TANSU`,
//! `TANSU_TOOLS_DIR` and `TANSU_TEST_LOG`. (Adding them to the config's
//! `ENV_NOT_CONFIG` would be the alternative.)
//!
//! # The command line
//!
//! [`Tansu::start`] runs, with the current directory set to the broker's
//! directory:
//!
//! ```text
//! tansu broker --cluster-id synod-test \
//!     --listener-url tcp://127.0.0.1:PORT \
//!     --advertised-listener-url tcp://127.0.0.1:PORT \
//!     --storage-engine sqlite://tansu.db
//! ```
//!
//! - `sqlite://` paths are resolved against the *current directory*, even
//!   ones that look absolute: tansu pushes the URL's host and path onto
//!   `current_dir()`, so `sqlite:///x/y.db` opens `./x/y.db` (checked: it
//!   fails with "Unable to open connection to local database
//!   <cwd>/x/y.db"). Hence the `current_dir` and the relative
//!   `sqlite://tansu.db`.
//! - Every flag also has an environment variable (`CLUSTER_ID`,
//!   `LISTENER_URL`, `ADVERTISED_LISTENER_URL`, `STORAGE_ENGINE`,
//!   `SCHEMA_REGISTRY`, `OTEL_EXPORTER_OTLP_ENDPOINT`), and tansu loads a
//!   `.env` file from its current directory or any ancestor (dotenv). The
//!   flags above win over both; the two optional ones are removed from the
//!   child's environment. No schema registry, no TLS, no authentication.
//!   The default listener is `tcp://0.0.0.0:9092`, the default advertised
//!   address `tcp://localhost:9092` (whatever the listener), the default
//!   storage `memory://tansu/`: all three must be given.
//! - Logging is `tracing`'s `RUST_LOG` filter (errors only when unset); the
//!   child gets `RUST_LOG=$TANSU_TEST_LOG`, default [`DEFAULT_LOG_FILTER`],
//!   and `NO_COLOR=1`.
//! - On start it prints `tansu broker 0.6.0`, `listening on: ... (advertised:
//!   ...)`, `storage: sqlite://tansu.db ["libsql"]` and, once the
//!   port is bound, `ready in NNms` (~100 ms). Stdout and stderr go to
//!   [`LOG_FILE`] in the directory (appended across restarts, with a header
//!   line per start and a line when it is ready). Readiness is not taken
//!   from the log: [`Tansu::start`] waits until the port accepts connections
//!   and a metadata request lists the broker.
//!
//! # What tansu 0.6.0 supports (as driven by rdkafka 0.39)
//!
//! Established by `crates/kafka/tests/tansu.rs`, which asserts each point,
//! the unsupported ones included (so a tansu upgrade that changes any of it
//! is noticed):
//!
//! - topic creation through the admin API (`CreateTopics`), with the
//!   requested partition count, all led by the one broker; a second
//!   creation fails with `TopicAlreadyExists`;
//! - the idempotent producer (`enable.idempotence=true`, `acks=all`):
//!   records are acknowledged with consecutive offsets from 0 and read back
//!   in order, keys and values intact; watermarks are right;
//! - consumer groups (`subscribe`, i.e. JoinGroup/SyncGroup), synchronous
//!   offset commits, and a new consumer of the same group resuming at the
//!   committed offset;
//! - durability across `kill -9` of the broker: every acknowledged record
//!   is still there, in order, after a restart on the same SQLite file, as
//!   are the group's committed offset and the high watermark (new records
//!   continue the offsets). Only a process kill is tested, not a machine
//!   crash (the SQLite file is in the default rollback-journal mode);
//! - fencing by `transactional.id`: `init_transactions` by a newer producer
//!   with the same id makes the broker reject the older producer's next
//!   record with `ProducerFenced`;
//! - **not transactions**: `init_transactions`, `begin_transaction` and
//!   producing inside the transaction succeed, but tansu has no `EndTxn`
//!   (it does not advertise it in ApiVersions), so `commit_transaction`
//!   fails with `UnsupportedFeature` ("EndTxnRequest (KIP-98) not supported
//!   by broker"), which librdkafka reports as *retriable*, so the
//!   following `abort_transaction` fails too ("Conflicting
//!   commit_transaction API call is already in progress"): a transactional
//!   producer is stuck after its first commit;
//! - **not `isolation.level=read_committed`**: a read_committed consumer is
//!   handed the records of an open, never-committed transaction, and those
//!   of a fenced producer's transaction. (`ListOffsets`, on the other hand,
//!   reports a high watermark of 0 while such a transaction is open.)
//!
//! So transactional commit/abort and read_committed are tested against
//! librdkafka's mock cluster only, and the design must not rely on them
//! with a real broker (kafka.md §2 already dedupes by decision id).
//!
//! # Timings (2-core machine, shared with other builds)
//!
//! - start, spawn to answering metadata: 160-420 ms (tansu itself reports
//!   `ready in` ~100 ms);
//! - restart after `kill -9` on an existing SQLite file: ~120 ms;
//! - the six tests of `tests/tansu.rs` together: ~6 s.
//!
//! # Cleaning up
//!
//! Dropping a [`Tansu`] kills the broker (SIGKILL) and, if the thread is
//! panicking, prints the tail of its log. A test process killed outright
//! (say by nextest's timeout) cannot run `Drop`; nextest then kills the
//! test's whole process group, which includes the broker. If a broker
//! does leak, the next [`Tansu::start`] on its port fails at once, saying
//! so, rather than testing the stale broker.

use std::{
    fs::{self, OpenOptions},
    io::{self, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    error::KafkaError,
    producer::{BaseProducer, Producer as _},
    types::RDKafkaErrorCode,
    ClientConfig,
};

/// The tansu version `scripts/install-tansu.sh` installs and the tests were
/// written against.
pub const TANSU_VERSION: &str = "0.6.0";

/// The broker's log (its stdout and stderr), in its directory.
pub const LOG_FILE: &str = "tansu.log";

/// The broker's SQLite database, in its directory.
pub const DB_FILE: &str = "tansu.db";

/// The cluster id the test brokers run with.
pub const CLUSTER_ID: &str = "synod-test";

/// `RUST_LOG` for the broker when `$TANSU_TEST_LOG` is not set: warnings
/// and errors, which keeps the log short but shows why a request failed.
pub const DEFAULT_LOG_FILTER: &str = "warn";

/// How long [`Tansu::start`] and [`Tansu::restart`] wait for the broker to
/// answer a metadata request before giving up. It is normally ready in well
/// under a second (the SQLite schema is created or opened, then the port is
/// bound); the margin covers a 2-core machine busy compiling.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Tansu::create_topic`] waits for the admin request and then for
/// the topic to show up in metadata with all its partitions. Normally
/// milliseconds; generous for a loaded machine.
pub const TOPIC_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between attempts to connect to the broker's port while it starts:
/// short, because start-up itself takes only a few hundred milliseconds.
const CONNECT_RETRY: Duration = Duration::from_millis(20);

/// Timeout of one TCP connection attempt to the local port: a local connect
/// either succeeds or is refused at once, so this only bounds pathologies.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);

/// Pause between metadata polls while waiting for a topic to appear.
const METADATA_RETRY: Duration = Duration::from_millis(50);

/// Timeout of one metadata request inside a wait loop: a local broker
/// answers in milliseconds; a request that takes longer is retried while
/// the overall deadline allows.
const METADATA_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Lines of the broker's log printed when it fails to start, or when a test
/// panics while it runs: enough for a panic message and its context.
pub const LOG_TAIL_LINES: usize = 40;

/// The default install location,
/// `${TANSU_TOOLS_DIR:-$HOME/.cache/synod-tools}/tansu-0.6.0-libsql-debug/bin/tansu`,
/// kept in step with `scripts/install-tansu.sh`; `None` when neither
/// variable is set.
pub fn default_tansu_path() -> Option<PathBuf> {
    let tools = match std::env::var_os("TANSU_TOOLS_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?)
            .join(".cache")
            .join("synod-tools"),
    };
    Some(
        tools
            .join(format!("tansu-{TANSU_VERSION}-libsql-debug"))
            .join("bin")
            .join("tansu"),
    )
}

/// Path of the tansu binary: `$TANSU_BIN`, else the default cache path
/// ([`default_tansu_path`]); `None` if that file does not exist.
pub fn tansu_binary() -> Option<PathBuf> {
    let path = match std::env::var_os("TANSU_BIN").filter(|v| !v.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => default_tansu_path()?,
    };
    path.is_file().then_some(path)
}

/// For tests: `Some(path)`, or `None` after printing a loud
/// "skipped: tansu not installed, run scripts/install-tansu.sh", but panics
/// instead if `REQUIRE_TANSU=1` (as `scripts/test.sh` sets it, so that
/// the project's test command never silently skips the broker tests).
pub fn tansu_or_skip() -> Option<PathBuf> {
    if let Some(path) = tansu_binary() {
        return Some(path);
    }
    let where_ = format!(
        "TANSU_BIN={:?}, default path {:?}",
        std::env::var_os("TANSU_BIN"),
        default_tansu_path()
    );
    if std::env::var_os("REQUIRE_TANSU").is_some_and(|v| v == "1") {
        panic!(
            "REQUIRE_TANSU=1 but tansu is not installed ({where_}); run scripts/install-tansu.sh"
        );
    }
    eprintln!("**********************************************************************");
    eprintln!("*** skipped: tansu not installed, run scripts/install-tansu.sh");
    eprintln!("*** ({where_})");
    eprintln!("**********************************************************************");
    None
}

/// A running tansu broker process with SQLite (persistent) storage in a
/// directory, listening on `127.0.0.1:port`. Dropping it kills the broker.
#[derive(Debug)]
pub struct Tansu {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    starts: u32,
}

impl Tansu {
    /// Starts a broker on `127.0.0.1:port` with its database and log in
    /// `dir` (created if missing; an existing database is reused), and waits
    /// until it answers metadata requests (at most [`START_TIMEOUT`]).
    ///
    /// Fails if something already listens on the port (a broker leaked by an
    /// earlier run would otherwise be tested instead), if the broker exits,
    /// or if it is not ready in time; the error includes the log's tail.
    pub fn start(bin: &Path, dir: &Path, port: u16) -> io::Result<Tansu> {
        fs::create_dir_all(dir)?;
        let mut tansu = Tansu {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            port,
            child: None,
            starts: 0,
        };
        tansu.launch()?;
        Ok(tansu)
    }

    /// `"127.0.0.1:port"`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's directory (database and log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The broker's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// The broker's process id, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A client configuration with `bootstrap.servers` set to this broker;
    /// add the producer or consumer settings and `create()`.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap());
        config
    }

    /// Creates `name` with `partitions` partitions (replication factor 1)
    /// through rdkafka's `AdminClient`, and waits until metadata shows it
    /// with all its partitions (at most [`TOPIC_TIMEOUT`]). A topic that
    /// already exists is not an error, so that setup code can be re-run
    /// against a restarted broker.
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), String> {
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(|e| format!("admin client for {}: {e}", self.bootstrap()))?;
        let options = AdminOptions::new()
            .request_timeout(Some(TOPIC_TIMEOUT))
            .operation_timeout(Some(TOPIC_TIMEOUT));
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let results = block_on(admin.create_topics([&topic], &options))
            .and_then(|results| results)
            .map_err(|e| format!("create topic {name}: {e}"))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(format!("create topic {topic}: {code}")),
            }
        }
        self.wait_for_topic(name, partitions)
    }

    /// Waits until metadata lists `name` with `partitions` partitions, each
    /// with a leader (at most [`TOPIC_TIMEOUT`]).
    pub fn wait_for_topic(&self, name: &str, partitions: i32) -> Result<(), String> {
        let client: BaseProducer = self
            .client_config()
            .create()
            .map_err(|e| format!("client for {}: {e}", self.bootstrap()))?;
        let deadline = Instant::now() + TOPIC_TIMEOUT;
        loop {
            let last = match client
                .client()
                .fetch_metadata(Some(name), METADATA_REQUEST_TIMEOUT)
            {
                Ok(metadata) => match metadata.topics().iter().find(|t| t.name() == name) {
                    Some(t)
                        if t.error().is_none()
                            && t.partitions().len() == partitions as usize
                            && t.partitions().iter().all(|p| p.leader() >= 0) =>
                    {
                        return Ok(());
                    }
                    Some(t) => format!(
                        "topic {name}: error {:?}, {} partitions",
                        t.error(),
                        t.partitions().len()
                    ),
                    None => format!("topic {name} not in metadata"),
                },
                Err(e) => format!("metadata: {e}"),
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "topic {name} with {partitions} partitions not visible after {TOPIC_TIMEOUT:?}: {last}"
                ));
            }
            thread::sleep(METADATA_RETRY);
        }
    }

    /// Kills the broker with SIGKILL (no chance to flush or clean up) and
    /// waits for it to exit. Does nothing if it is not running.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` is SIGKILL on Unix. An error means it has
            // already exited, which `wait` then reaps.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same directory (database) and port,
    /// killing it first (SIGKILL) if it still runs, and waits until it
    /// answers metadata requests, as [`Tansu::start`] does.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill9();
        self.launch()
    }

    /// The last `lines` lines of the broker's log (empty if it has none).
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Spawns the broker and waits until it is ready; on failure kills it
    /// and returns an error that carries the log's tail.
    fn launch(&mut self) -> io::Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        if TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "something already listens on {addr} (a leaked tansu? `ss -ltnp | grep {}`)",
                    self.port
                ),
            ));
        }
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        writeln!(
            log,
            "=== synod testkit: start #{} of {} on port {} at unix time {}.{:03} ===",
            self.starts,
            self.bin.display(),
            self.port,
            since_epoch.as_secs(),
            since_epoch.subsec_millis()
        )?;
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let log_filter = std::env::var("TANSU_TEST_LOG")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_LOG_FILTER.to_owned());
        let child = Command::new(&self.bin)
            .arg("broker")
            .args(["--cluster-id", CLUSTER_ID])
            .args(["--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", &format!("sqlite://{DB_FILE}")])
            // sqlite:// paths are relative to the current directory.
            .current_dir(&self.dir)
            .env("RUST_LOG", log_filter)
            // Plain text in the log file: no ANSI colour codes.
            .env("NO_COLOR", "1")
            .env_remove("SCHEMA_REGISTRY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run tansu {}: {e}", self.bin.display()),
                )
            })?;
        self.child = Some(child);
        let started = Instant::now();
        match self.wait_ready(started + START_TIMEOUT) {
            Ok(()) => {
                // Recorded in the log, for the timings in the module docs
                // and for diagnosis.
                if let Ok(mut log) = OpenOptions::new().append(true).open(self.log_path()) {
                    let _ = writeln!(
                        log,
                        "=== synod testkit: ready (answers metadata) after {} ms ===",
                        started.elapsed().as_millis()
                    );
                }
                Ok(())
            }
            Err(e) => {
                self.kill9();
                Err(io::Error::new(
                    e.kind(),
                    format!(
                        "tansu on port {} in {}: {e}\n--- last {LOG_TAIL_LINES} lines of {} ---\n{}",
                        self.port,
                        self.dir.display(),
                        self.log_path().display(),
                        self.log_tail(LOG_TAIL_LINES)
                    ),
                ))
            }
        }
    }

    /// Waits until the port accepts connections, then until a metadata
    /// request lists a broker; fails early if the process exits.
    fn wait_ready(&mut self, deadline: Instant) -> io::Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        // First the port, cheaply: a Kafka client created before the broker
        // listens backs off exponentially between reconnects, which would
        // add seconds.
        loop {
            self.check_running()?;
            if TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("port not open after {START_TIMEOUT:?}"),
                ));
            }
            thread::sleep(CONNECT_RETRY);
        }
        let client: BaseProducer = self
            .client_config()
            .create()
            .map_err(|e| io::Error::other(format!("client: {e}")))?;
        loop {
            self.check_running()?;
            let last = match client
                .client()
                .fetch_metadata(None, METADATA_REQUEST_TIMEOUT)
            {
                Ok(metadata) if !metadata.brokers().is_empty() => return Ok(()),
                Ok(_) => "metadata lists no broker".to_owned(),
                Err(e) => format!("metadata: {e}"),
            };
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("not answering metadata after {START_TIMEOUT:?}: {last}"),
                ));
            }
            thread::sleep(METADATA_RETRY);
        }
    }

    /// An error if the broker process has exited.
    fn check_running(&mut self) -> io::Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Err(io::Error::other("tansu is not running"));
        };
        match child.try_wait()? {
            None => Ok(()),
            Some(status) => {
                self.child = None;
                Err(io::Error::other(format!("tansu exited: {status}")))
            }
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if thread::panicking() && self.child.is_some() {
            eprintln!(
                "--- a test panicked; last {LOG_TAIL_LINES} lines of {} ---\n{}",
                self.log_path().display(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
        self.kill9();
    }
}

/// Drives an rdkafka admin future to completion on a current-thread tokio
/// runtime (the admin futures are oneshot channels fed by rdkafka's own
/// polling thread, so any executor does; the crate has no other one).
fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, KafkaError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| KafkaError::AdminOpCreation(format!("tokio runtime: {e}")))?;
    Ok(runtime.block_on(future))
}
