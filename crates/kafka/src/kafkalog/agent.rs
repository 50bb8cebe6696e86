//! The Kafka-log agent: the threads around the pure fold (kafka.md §3).
//!
//! Two threads, each owning its Kafka clients (librdkafka's `Base*`
//! clients, polled from the owning thread; no async runtime):
//!
//! - the **reader** consumes partition 0 of the decisions topic with
//!   `isolation.level=read_committed` from the snapshot's offset (or the
//!   beginning), folds every record into the [`LogState`], answers the
//!   proposals waiting for their record (rule 4) and writes a snapshot
//!   every `snapshot_every_records` records (rule 6);
//! - the **driver** runs leadership liveness on the election topic
//!   (heartbeats; a claim after a randomized election timeout of silence)
//!   and, while this incarnation leads the current term, appends the
//!   proposals handed to it, numbering them `seq = 1, 2, ...` in the term.
//!
//! Leadership itself is only what the fold says: this node leads term T
//! iff the claim that won T in the log carries this node's id *and this
//! process's boot id*. A proposal is answered only once the reader has
//! folded its record: valid there → the outcome; skipped (deposed, or a
//! gap in the term) → `not_leader`, retryable. Anything the driver could
//! not append is answered `unavailable`/`overloaded`, retryable; a retry
//! with the same `(client, request)` is exactly-once by the state
//! machine's sessions.
//!
//! Rule 7 (external side effects): Synod has no callbacks today. Anything
//! added that acts outside the log (webhooks, egress) must run from the
//! reader, at the position of the decision that causes it, and only if the
//! fold at that position names this incarnation as the current leader;
//! never from the driver's belief that it leads.

use super::fold::{Counters, Leader, LogState, Rules, Step};
use super::record::{Claim, DecisionRecord, ElectionMessage, LogRecord};
use super::store;
use crate::props;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use synod_client::wire::ProposeRequest;
use synod_decision::{Decision, Outcome};
use synod_types::{NodeId, SplitMix64};
use tokio::sync::oneshot;

/// Proposals queued between the HTTP handlers and the driver. Beyond it a
/// proposal is refused as overloaded (429, retryable): a burst larger than
/// this is better pushed back to clients than buffered without bound.
pub const PROPOSAL_QUEUE_MAX: usize = 1024;

/// Appended proposals waiting for the reader to fold their record. Bounds
/// the memory a slow or stuck reader can make the leader hold; beyond it
/// proposals are refused as overloaded.
pub const PENDING_MAX: usize = 4096;

/// Proposals the driver appends in one go (one transaction when
/// transactions are on): amortizes the commit round trip without letting
/// one batch delay heartbeats for long.
pub const BATCH_MAX: usize = 256;

/// Upper bound (and default) of a proposal's wait for its result.
pub const PROPOSE_TIMEOUT_MAX: Duration = Duration::from_secs(30);

/// How long one blocking Kafka operation may take (init/commit/abort a
/// transaction, flush, watermarks) before it is treated as failed.
pub const KAFKA_OP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long each thread blocks in one poll: the latency floor of noticing
/// a stop request, a new heartbeat or a queued proposal.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// A reader that has not polled for this long makes `/readyz` fail.
pub const READER_STALL_MAX: Duration = Duration::from_secs(5);

/// Election timeouts after start after which a node may claim on silence
/// even if its heartbeat feed never reported being live.
pub const ELECTION_FEED_GRACE_TIMEOUTS: u32 = 5;

/// Default `fetch.wait.max.ms` of the agent's consumers (librdkafka's is
/// 500); a `--property` overrides it.
pub const FETCH_WAIT_MAX_MS_DEFAULT: &str = "100";

/// How often the reader asks the broker for the log's end offset (status
/// and read staleness only).
const WATERMARK_INTERVAL: Duration = Duration::from_secs(1);

/// Configuration of one agent.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// This node's id; unique among the agents sharing the log.
    pub node: NodeId,
    /// This agent's HTTP API address as other agents and clients reach it
    /// (`host:port`): claims carry it, followers redirect there.
    pub api_addr: String,
    /// Snapshots live here (created if missing).
    pub data_dir: PathBuf,
    /// The decisions log (partition 0 is the log).
    pub topic: String,
    /// Heartbeats (liveness only).
    pub election_topic: String,
    /// Candidates share `transactional.id = synod-kafkalog-<topic>` so a new
    /// leader's `init_transactions` fences the old one (rule 5). Off for
    /// brokers without transactions; rules 2–4 keep the log safe alone.
    pub transactions: bool,
    /// librdkafka passthrough properties (`props::base`).
    pub properties: BTreeMap<String, String>,
    /// The leader's heartbeat period.
    pub heartbeat_interval: Duration,
    /// Silence after which a node claims the next term; each wait is drawn
    /// uniformly from `[election_timeout, 2 × election_timeout)`, so
    /// candidates rarely claim together (and when they do, the log orders
    /// their claims and the second is ignored).
    pub election_timeout: Duration,
    /// A snapshot every this many folded records; 0: only at shutdown.
    pub snapshot_every_records: u64,
    /// Default and largest wait of a proposal (≤ [`PROPOSE_TIMEOUT_MAX`]).
    pub propose_timeout: Duration,
    /// Validity rules of the fold; [`Rules::Spec`] except in the test that
    /// shows the checks can fail.
    pub rules: Rules,
    /// Test hook: once this incarnation has led a term it keeps appending
    /// with that term after being deposed, as a leader that missed the new
    /// claim would. The fold must skip every such record.
    pub test_keep_leading_after_deposed: bool,
}

impl AgentConfig {
    /// Defaults for everything but the four required settings.
    pub fn new(brokers: &str, node: NodeId, api_addr: &str, data_dir: PathBuf) -> AgentConfig {
        AgentConfig {
            brokers: brokers.into(),
            node,
            api_addr: api_addr.into(),
            data_dir,
            topic: "engine.decisions".into(),
            election_topic: "engine.election".into(),
            transactions: true,
            properties: BTreeMap::new(),
            heartbeat_interval: Duration::from_millis(200),
            election_timeout: Duration::from_millis(1500),
            snapshot_every_records: 10_000,
            propose_timeout: Duration::from_secs(10),
            rules: Rules::Spec,
            test_keep_leading_after_deposed: false,
        }
    }

    /// The `transactional.id` every candidate of this log shares.
    pub fn transactional_id(&self) -> String {
        format!("synod-kafkalog-{}", self.topic)
    }
}

/// Every way an agent operation fails (the HTTP mapping is in
/// `super::http`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentError {
    /// Malformed or out-of-range input; names the field.
    InvalidArgument(String),
    /// A limit is reached; retry later.
    Overloaded(String),
    /// The agent cannot serve now (starting, Kafka failing, stopping).
    Unavailable(String),
    /// No result within the deadline (ms); the decision may still be
    /// applied: retry with the same client and request.
    Timeout(u64),
    /// This agent does not lead the current term (or was deposed before
    /// its record was valid); the leader and its API address if known.
    NotLeader {
        /// the current leader
        leader: Option<(NodeId, String)>,
    },
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentError::InvalidArgument(m) | AgentError::Overloaded(m) | AgentError::Unavailable(m) => {
                write!(f, "{m}")
            }
            AgentError::Timeout(ms) => write!(
                f,
                "no result within {ms} ms; the decision may still be applied: retry with the same client and request"
            ),
            AgentError::NotLeader { leader: Some((n, a)) } => write!(
                f,
                "this agent does not lead the Kafka log; node {n} does (its API: {a})"
            ),
            AgentError::NotLeader { leader: None } => write!(
                f,
                "this agent does not lead the Kafka log and knows no leader (an election is under way); retry"
            ),
        }
    }
}

impl std::error::Error for AgentError {}

/// A proposal's result: its record was valid at `offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposed {
    /// The term it was appended in.
    pub term: u64,
    /// Its seq in the term.
    pub seq: u64,
    /// The leader that appended it (this node).
    pub leader: NodeId,
    /// Its offset in the log.
    pub offset: u64,
    /// Session.
    pub client: u64,
    /// Request number.
    pub request: u64,
    /// Applied with per-op results, or rejected with a reason.
    pub outcome: Outcome,
}

impl Proposed {
    /// The replica API's `instance` field: `term.seq@leader`, the
    /// counterpart of a replica's `epoch.seq@origin`.
    pub fn instance(&self) -> String {
        format!("{}.{}@{}", self.term, self.seq, self.leader)
    }
}

/// `GET /v1/status` of an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// This node.
    pub node: NodeId,
    /// Random id of this process incarnation.
    pub boot_id: u64,
    /// The decisions topic.
    pub topic: String,
    /// The current term at the fold's position.
    pub term: u64,
    /// Its leader.
    pub leader: Option<NodeId>,
    /// The leader's API address.
    pub leader_api: Option<String>,
    /// This incarnation is appending as the leader of `term`.
    pub is_leader: bool,
    /// The next offset the fold will read.
    pub next_offset: u64,
    /// The last offset folded, if any.
    pub applied_offset: Option<u64>,
    /// The log's end (high watermark) at the last look, 0 before one.
    pub log_end_offset: u64,
    /// The reader has reached the end of the log once since start.
    pub caught_up: bool,
    /// What the fold has seen (since the beginning of the log).
    pub counters: Counters,
    /// `StateMachine::digest` of the applied state.
    pub state_digest: u64,
    /// Offset of the snapshot this incarnation started from.
    pub started_from_offset: Option<u64>,
    /// Offset of the newest snapshot this incarnation wrote.
    pub snapshot_offset: Option<u64>,
    /// Transactional fencing is on.
    pub transactions: bool,
    /// Proposals appended and waiting for their record.
    pub waiting_proposals: u64,
}

/// A proposal on its way to the driver.
struct Proposal {
    client: u64,
    request: u64,
    body: Vec<u8>,
    reply: oneshot::Sender<Result<Proposed, AgentError>>,
}

/// A proposal appended, waiting for the reader.
struct Pending {
    client: u64,
    request: u64,
    reply: oneshot::Sender<Result<Proposed, AgentError>>,
}

struct Inner {
    cfg: AgentConfig,
    boot: u64,
    state: Mutex<LogState>,
    /// By `(term, seq)`: the key of a record this incarnation appended.
    pending: Mutex<BTreeMap<(u64, u64), Pending>>,
    proposals: SyncSender<Proposal>,
    caught_up: AtomicBool,
    log_end: AtomicU64,
    /// A term whose sequence this incarnation broke (a record of it was
    /// skipped or lost): it must not append to it again. 0: none.
    lost_term: AtomicU64,
    /// The term the driver appends in; 0: not leading.
    leading_term: AtomicU64,
    /// Asks the driver to claim now: 0 no, [`u64::MAX`] the next term,
    /// otherwise that term.
    campaign: AtomicU64,
    stop: AtomicBool,
    started_from: Option<u64>,
    snapshot_offset: AtomicU64,
    /// Milliseconds since `started` of the reader's last poll.
    reader_tick_ms: AtomicU64,
    started: Instant,
    one_off: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock is a bug that already
    // crashed a thread; the data is still consistent (every mutation is
    // one call), so keep serving rather than cascade.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running agent. Dropping it without [`Agent::shutdown`] leaves its
/// threads running until the process exits.
pub struct Agent {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
    /// Holds the data directory's lock while the agent runs.
    _dir_lock: std::fs::File,
}

/// A cheap, cloneable handle on a running agent, for the HTTP API and tests.
#[derive(Clone)]
pub struct AgentHandle {
    inner: Arc<Inner>,
}

fn boot_id(node: NodeId) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut r = SplitMix64::new(nanos ^ (u64::from(std::process::id()) << 32) ^ u64::from(node));
    r.next_u64()
}

impl Agent {
    /// Starts an agent: loads the newest snapshot in `data_dir`, checks
    /// that the log still holds every record after it, and starts the
    /// reader and the driver.
    pub fn start(cfg: AgentConfig) -> Result<Agent, AgentError> {
        if cfg.propose_timeout.is_zero() || cfg.propose_timeout > PROPOSE_TIMEOUT_MAX {
            return Err(AgentError::InvalidArgument(format!(
                "propose_timeout: must be in (0, {PROPOSE_TIMEOUT_MAX:?}]"
            )));
        }
        if cfg.heartbeat_interval >= cfg.election_timeout {
            return Err(AgentError::InvalidArgument(
                "heartbeat_interval: must be shorter than election_timeout".into(),
            ));
        }
        if cfg.api_addr.len() > super::record::MAX_API_ADDR_BYTES {
            return Err(AgentError::InvalidArgument(format!(
                "api_addr: at most {} bytes",
                super::record::MAX_API_ADDR_BYTES
            )));
        }
        let io = |what: &str, e: std::io::Error| AgentError::Unavailable(format!("{what}: {e}"));
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| io("data_dir", e))?;
        // One agent per data directory: two would overwrite each other's
        // snapshots. Released when the agent (its file) is dropped.
        let dir_lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(cfg.data_dir.join("LOCK"))
            .map_err(|e| io("data_dir", e))?;
        dir_lock.try_lock().map_err(|e| {
            AgentError::Unavailable(format!(
                "data_dir {}: in use by another agent ({e})",
                cfg.data_dir.display()
            ))
        })?;
        let (state, started_from) = match store::load_newest(&cfg.data_dir, cfg.rules)
            .map_err(|e| io("data_dir", e))?
        {
            Some((state, file)) => {
                tracing::info!(path = %file.path.display(), offset = file.offset, term = file.term, "starting from snapshot");
                (state, Some(file.offset))
            }
            None => (LogState::new(cfg.rules), None),
        };
        let boot = boot_id(cfg.node);
        let reader = reader_consumer(&cfg, boot, state.next_offset())?;
        let (low, _high) = reader
            .fetch_watermarks(&cfg.topic, 0, KAFKA_OP_TIMEOUT)
            .map_err(|e| {
                AgentError::Unavailable(format!(
                    "topic {}: watermarks: {e} (does the topic exist? `synod kafka topics --kafka-log` creates it)",
                    cfg.topic
                ))
            })?;
        if low > 0 && (low as u64) > state.next_offset() {
            return Err(AgentError::Unavailable(format!(
                "the log {} starts at offset {low} but this node needs offset {}: records were deleted (retention or compaction must be off, kafka.md §3 rule 1); start from a snapshot at or after {low}",
                cfg.topic,
                state.next_offset()
            )));
        }
        let election = election_consumer(&cfg, boot)?;
        let heartbeats = heartbeat_producer(&cfg)?;
        let (tx, rx) = mpsc::sync_channel(PROPOSAL_QUEUE_MAX);
        let inner = Arc::new(Inner {
            boot,
            state: Mutex::new(state),
            pending: Mutex::new(BTreeMap::new()),
            proposals: tx,
            caught_up: AtomicBool::new(false),
            log_end: AtomicU64::new(0),
            lost_term: AtomicU64::new(0),
            leading_term: AtomicU64::new(0),
            campaign: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            started_from,
            snapshot_offset: AtomicU64::new(started_from.unwrap_or(0)),
            reader_tick_ms: AtomicU64::new(0),
            started: Instant::now(),
            one_off: AtomicU64::new(0),
            cfg,
        });
        let r = inner.clone();
        let reader = std::thread::Builder::new()
            .name(format!("kafkalog-reader-{}", r.cfg.node))
            .spawn(move || run_reader(r, reader))
            .map_err(|e| io("spawn", e))?;
        let d = inner.clone();
        let driver = std::thread::Builder::new()
            .name(format!("kafkalog-driver-{}", d.cfg.node))
            .spawn(move || Driver::new(d, election, heartbeats, rx).run())
            .map_err(|e| io("spawn", e))?;
        Ok(Agent {
            inner,
            threads: vec![reader, driver],
            _dir_lock: dir_lock,
        })
    }

    /// A handle for the HTTP API and tests.
    pub fn handle(&self) -> AgentHandle {
        AgentHandle {
            inner: self.inner.clone(),
        }
    }

    /// Stops both threads (the reader writes a final snapshot) and waits
    /// for them. Waiting proposals are answered `unavailable`.
    pub fn shutdown(self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        let pending = std::mem::take(&mut *lock(&self.inner.pending));
        for (_, p) in pending {
            let _ = p
                .reply
                .send(Err(AgentError::Unavailable("the agent is stopping".into())));
        }
    }
}

// ---------------------------------------------------------------------------
// Kafka clients

fn kafka_err(what: &str) -> impl Fn(KafkaError) -> AgentError + '_ {
    move |e| AgentError::Unavailable(format!("{what}: {e}"))
}

fn base(cfg: &AgentConfig) -> Result<ClientConfig, AgentError> {
    props::base(&cfg.brokers, &cfg.properties)
        .map_err(|e| AgentError::InvalidArgument(e.to_string()))
}

fn reader_consumer(cfg: &AgentConfig, boot: u64, from: u64) -> Result<BaseConsumer, AgentError> {
    let mut c = base(cfg)?;
    // Never committed: the position lives in the snapshots.
    c.set(
        "group.id",
        format!("synod-kafkalog-{}-{}-{boot:x}", cfg.topic, cfg.node),
    )
    .set("enable.auto.commit", "false")
    .set("enable.auto.offset.store", "false")
    .set("isolation.level", "read_committed")
    .set("enable.partition.eof", "true")
    .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = c.create().map_err(kafka_err("decisions consumer"))?;
    let mut tpl = TopicPartitionList::new();
    let offset = if from == 0 {
        Offset::Beginning
    } else {
        Offset::Offset(from as i64)
    };
    tpl.add_partition_offset(&cfg.topic, 0, offset)
        .map_err(kafka_err("decisions consumer"))?;
    consumer
        .assign(&tpl)
        .map_err(kafka_err("decisions consumer"))?;
    Ok(consumer)
}

fn election_consumer(cfg: &AgentConfig, boot: u64) -> Result<BaseConsumer, AgentError> {
    let mut c = base(cfg)?;
    c.set(
        "group.id",
        format!("synod-kafkalog-election-{}-{boot:x}", cfg.node),
    )
    .set("enable.auto.commit", "false")
    .set("enable.auto.offset.store", "false")
    .set("isolation.level", "read_uncommitted")
    .set("auto.offset.reset", "latest");
    let consumer: BaseConsumer = c.create().map_err(kafka_err("election consumer"))?;
    // Only heartbeats from now on matter. A concrete offset rather than
    // `Offset::End`: librdkafka reports the end of the partition for the
    // former, which is how the driver learns its feed is live.
    let (_, high) = consumer
        .fetch_watermarks(&cfg.election_topic, 0, KAFKA_OP_TIMEOUT)
        .map_err(kafka_err("election topic watermarks"))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&cfg.election_topic, 0, Offset::Offset(high.max(0)))
        .map_err(kafka_err("election consumer"))?;
    consumer
        .assign(&tpl)
        .map_err(kafka_err("election consumer"))?;
    Ok(consumer)
}

fn heartbeat_producer(cfg: &AgentConfig) -> Result<BaseProducer, AgentError> {
    let mut c = base(cfg)?;
    // Heartbeats are liveness only: a lost one costs at most an election.
    c.set("acks", "1").set("enable.idempotence", "false");
    props::set_default(&mut c, "linger.ms", "0");
    let ms = (cfg.election_timeout.as_millis() as u64).max(1000);
    props::set_default(&mut c, "message.timeout.ms", &ms.to_string());
    c.create().map_err(kafka_err("heartbeat producer"))
}

/// Which record a delivery report is about.
#[derive(Clone, Copy, Debug)]
struct Tag {
    term: u64,
    /// 0 for a claim.
    seq: u64,
}

/// Collects failed deliveries for the driver.
#[derive(Default)]
struct DeliveryContext {
    failed: Mutex<Vec<(Tag, String)>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Tag>;

    fn delivery(&self, result: &DeliveryResult<'_>, tag: Box<Tag>) {
        if let Err((e, _)) = result {
            lock(&self.failed).push((*tag, e.to_string()));
        }
    }
}

type LogProducer = BaseProducer<DeliveryContext>;

fn log_producer(cfg: &AgentConfig) -> Result<LogProducer, AgentError> {
    let mut c = base(cfg)?;
    c.set("enable.idempotence", "true").set("acks", "all");
    props::set_default(&mut c, "linger.ms", "1");
    props::set_default(
        &mut c,
        "message.timeout.ms",
        &KAFKA_OP_TIMEOUT.as_millis().to_string(),
    );
    if cfg.transactions {
        c.set("transactional.id", cfg.transactional_id());
        props::set_default(
            &mut c,
            "transaction.timeout.ms",
            &(KAFKA_OP_TIMEOUT.as_millis() * 3).to_string(),
        );
    }
    let p: LogProducer = c
        .create_with_context(DeliveryContext::default())
        .map_err(kafka_err("decisions producer"))?;
    if cfg.transactions {
        // Rule 5: fences every earlier producer with this transactional.id,
        // aborting its open transaction.
        p.init_transactions(KAFKA_OP_TIMEOUT)
            .map_err(kafka_err("init_transactions"))?;
    }
    Ok(p)
}

// ---------------------------------------------------------------------------
// The reader

fn run_reader(inner: Arc<Inner>, consumer: BaseConsumer) {
    let mut since_snapshot = 0u64;
    let mut last_watermarks: Option<Instant> = None;
    while !inner.stop.load(Ordering::SeqCst) {
        inner.reader_tick_ms.store(
            inner.started.elapsed().as_millis() as u64,
            Ordering::Relaxed,
        );
        match consumer.poll(POLL_INTERVAL) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => inner.mark_caught_up(),
            Some(Err(e)) => tracing::warn!(error = %e, "decisions consumer"),
            Some(Ok(m)) => {
                let Ok(offset) = u64::try_from(m.offset()) else {
                    continue;
                };
                let bytes = m.payload().unwrap_or(&[]);
                let (step, leader) = {
                    let mut st = lock(&inner.state);
                    let step = st.fold(offset, bytes);
                    (step, st.leader().cloned())
                };
                inner.answer(offset, step, leader);
                since_snapshot += 1;
                let every = inner.cfg.snapshot_every_records;
                if every > 0 && since_snapshot >= every {
                    inner.snapshot();
                    since_snapshot = 0;
                }
            }
        }
        if last_watermarks.is_none_or(|t| t.elapsed() >= WATERMARK_INTERVAL) {
            last_watermarks = Some(Instant::now());
            if let Ok((_, high)) =
                consumer.fetch_watermarks(&inner.cfg.topic, 0, POLL_INTERVAL * 20)
            {
                inner.log_end.store(high.max(0) as u64, Ordering::Relaxed);
            }
        }
    }
    inner.snapshot();
}

impl Inner {
    fn mark_caught_up(&self) {
        if !self.caught_up.swap(true, Ordering::SeqCst) {
            tracing::info!(node = self.cfg.node, "caught up with the log");
        }
    }

    fn leader_hint(leader: Option<&Leader>) -> Option<(NodeId, String)> {
        leader.map(|l| (l.node, l.api_addr.clone()))
    }

    /// Rule 4: answers the proposal whose record was just folded.
    fn answer(&self, offset: u64, step: Step, leader: Option<Leader>) {
        let me = self.cfg.node;
        let mut pending = lock(&self.pending);
        match step {
            Step::Applied { record, outcome } if record.leader == me => {
                let Some(p) = pending.remove(&(record.term, record.seq)) else {
                    return;
                };
                let r = if (p.client, p.request) == (record.client, record.request) {
                    Ok(Proposed {
                        term: record.term,
                        seq: record.seq,
                        leader: me,
                        offset,
                        client: record.client,
                        request: record.request,
                        outcome,
                    })
                } else {
                    // Cannot happen: (term, seq) of this incarnation's
                    // terms are appended once. Refuse rather than answer
                    // with another request's outcome.
                    tracing::error!(
                        term = record.term,
                        seq = record.seq,
                        "record does not match its waiter"
                    );
                    Err(AgentError::Unavailable("record mismatch; retry".into()))
                };
                let _ = p.reply.send(r);
            }
            Step::Skipped { record, why } if record.leader == me => {
                if let Some(p) = pending.remove(&(record.term, record.seq)) {
                    tracing::info!(term = record.term, seq = record.seq, %why, "own record skipped: not leading that term any more");
                    self.lost_term.fetch_max(record.term, Ordering::SeqCst);
                    let _ = p.reply.send(Err(AgentError::NotLeader {
                        leader: Inner::leader_hint(leader.as_ref()),
                    }));
                }
            }
            Step::ClaimWon { term, .. } => {
                // A record of an older term not folded yet comes after this
                // claim: it can never be valid.
                let stale: Vec<_> = pending.range(..(term, 0)).map(|(k, _)| *k).collect();
                for k in stale {
                    if let Some(p) = pending.remove(&k) {
                        let _ = p.reply.send(Err(AgentError::NotLeader {
                            leader: Inner::leader_hint(leader.as_ref()),
                        }));
                    }
                }
            }
            _ => {}
        }
    }

    fn snapshot(&self) {
        let (bytes, offset, term) = {
            let st = lock(&self.state);
            (st.snapshot(), st.next_offset(), st.term())
        };
        if offset == 0 || offset == self.snapshot_offset.load(Ordering::SeqCst) {
            return;
        }
        match store::write(&self.cfg.data_dir, offset, term, &bytes) {
            Ok(path) => {
                self.snapshot_offset.store(offset, Ordering::SeqCst);
                tracing::debug!(path = %path.display(), offset, term, "snapshot written");
            }
            Err(e) => {
                tracing::error!(error = %e, "writing a snapshot failed; will retry at the next one")
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The driver

/// The term this incarnation appends in.
#[derive(Clone, Copy, Debug)]
struct Lead {
    term: u64,
    next_seq: u64,
}

struct Driver {
    inner: Arc<Inner>,
    election: BaseConsumer,
    heartbeats: BaseProducer,
    proposals: Receiver<Proposal>,
    producer: Option<LogProducer>,
    lead: Option<Lead>,
    rng: SplitMix64,
    timeout: Duration,
    last_heard: Instant,
    next_heartbeat: Instant,
    /// A claim appended and not yet folded: (term, when).
    claim_sent: Option<(u64, Instant)>,
    /// The election consumer has reached the topic's end once (or heard a
    /// heartbeat), so heartbeats reach us. Until then silence means
    /// nothing: without this a restarting node whose consumer takes longer
    /// than the timeout to start fetching would claim and depose a healthy
    /// leader. After [`ELECTION_FEED_GRACE_TIMEOUTS`] election timeouts
    /// the feed is assumed live anyway, so a broker that never reports the
    /// end cannot stop elections.
    election_live: bool,
    started: Instant,
}

impl Driver {
    fn new(
        inner: Arc<Inner>,
        election: BaseConsumer,
        heartbeats: BaseProducer,
        proposals: Receiver<Proposal>,
    ) -> Driver {
        let mut rng = SplitMix64::new(inner.boot ^ u64::from(inner.cfg.node));
        let timeout = Self::draw(&mut rng, inner.cfg.election_timeout);
        Driver {
            inner,
            election,
            heartbeats,
            proposals,
            producer: None,
            lead: None,
            rng,
            timeout,
            last_heard: Instant::now(),
            next_heartbeat: Instant::now(),
            claim_sent: None,
            election_live: false,
            started: Instant::now(),
        }
    }

    fn draw(rng: &mut SplitMix64, base: Duration) -> Duration {
        let ms = base.as_millis().max(1) as u64;
        Duration::from_millis(ms + rng.below(ms))
    }

    fn run(mut self) {
        while !self.inner.stop.load(Ordering::SeqCst) {
            self.poll_election();
            let (term, leader) = {
                let st = lock(&self.inner.state);
                (st.term(), st.leader().cloned())
            };
            self.update_lead(term, leader.as_ref());
            self.heartbeat();
            self.maybe_claim(term);
            self.serve_proposals(leader.as_ref());
            self.check_deliveries();
        }
        if let Some(p) = self.producer.take() {
            let _ = p.flush(Duration::from_secs(1));
        }
        let _ = self.heartbeats.flush(Duration::from_millis(200));
        let mut rest = Vec::new();
        while let Ok(p) = self.proposals.try_recv() {
            rest.push(p);
        }
        for p in rest {
            let _ = p
                .reply
                .send(Err(AgentError::Unavailable("the agent is stopping".into())));
        }
    }

    fn me(&self, l: &Leader) -> bool {
        l.node == self.inner.cfg.node && l.boot == self.inner.boot
    }

    fn poll_election(&mut self) {
        let mut wait = POLL_INTERVAL;
        let fold_term = lock(&self.inner.state).term();
        while let Some(r) = self.election.poll(wait) {
            wait = Duration::ZERO;
            let m = match r {
                Ok(m) => m,
                Err(KafkaError::PartitionEOF(_)) => {
                    if !self.election_live {
                        self.election_live = true;
                        self.last_heard = Instant::now();
                    }
                    continue;
                }
                Err(_) => continue,
            };
            let Ok(ElectionMessage::Heartbeat { term, node, boot }) =
                ElectionMessage::decode(m.payload().unwrap_or(&[]))
            else {
                continue;
            };
            self.election_live = true;
            let own = node == self.inner.cfg.node && boot == self.inner.boot;
            if !own && term >= fold_term {
                self.last_heard = Instant::now();
            }
        }
    }

    fn update_lead(&mut self, term: u64, leader: Option<&Leader>) {
        let lost = self.inner.lost_term.load(Ordering::SeqCst);
        let mine = leader.is_some_and(|l| self.me(l)) && term != lost && term > 0;
        if mine && self.producer.is_none() {
            // Our claim won although its append reported a failure: we have
            // no producer to continue the term with. Abandon it; the next
            // election (ours or another node's) moves on.
            self.give_up(term, "the claim's producer is gone");
            return;
        }
        if mine {
            if self.lead.map(|l| l.term) != Some(term) {
                let next_seq = lock(&self.inner.state).next_seq();
                tracing::info!(node = self.inner.cfg.node, term, "leading");
                self.lead = Some(Lead { term, next_seq });
            }
        } else if self.lead.is_some() && !self.inner.cfg.test_keep_leading_after_deposed {
            tracing::info!(node = self.inner.cfg.node, term, "not leading any more");
            self.lead = None;
        }
        let t = self.lead.map_or(0, |l| l.term);
        self.inner.leading_term.store(t, Ordering::SeqCst);
    }

    fn heartbeat(&mut self) {
        if let Some(l) = self.lead {
            self.last_heard = Instant::now();
            if Instant::now() >= self.next_heartbeat {
                self.next_heartbeat = Instant::now() + self.inner.cfg.heartbeat_interval;
                let hb = ElectionMessage::Heartbeat {
                    term: l.term,
                    node: self.inner.cfg.node,
                    boot: self.inner.boot,
                }
                .encode();
                let rec = BaseRecord::<(), [u8]>::to(&self.inner.cfg.election_topic)
                    .partition(0)
                    .payload(&hb);
                if let Err((e, _)) = self.heartbeats.send(rec) {
                    tracing::warn!(error = %e, "heartbeat not sent");
                }
            }
        }
        self.heartbeats.poll(Duration::ZERO);
    }

    fn maybe_claim(&mut self, term: u64) {
        if let Some((t, at)) = self.claim_sent {
            if term >= t || at.elapsed() > self.timeout {
                self.claim_sent = None;
            }
        }
        let campaign = self.inner.campaign.swap(0, Ordering::SeqCst);
        if !self.election_live
            && self.started.elapsed()
                > self.inner.cfg.election_timeout * ELECTION_FEED_GRACE_TIMEOUTS
        {
            self.election_live = true;
            self.last_heard = Instant::now();
        }
        let silent = self.election_live && self.last_heard.elapsed() > self.timeout;
        if self.lead.is_some()
            || self.claim_sent.is_some()
            || !self.inner.caught_up.load(Ordering::SeqCst)
            || !(campaign != 0 || silent)
        {
            return;
        }
        let next = match campaign {
            0 | u64::MAX => term + 1,
            t => t,
        };
        match self.append_claim(next) {
            Ok(()) => {
                tracing::info!(node = self.inner.cfg.node, term = next, "claimed");
                self.claim_sent = Some((next, Instant::now()));
            }
            Err(e) => {
                tracing::warn!(node = self.inner.cfg.node, term = next, error = %e, "claim failed")
            }
        }
        self.last_heard = Instant::now();
        self.timeout = Self::draw(&mut self.rng, self.inner.cfg.election_timeout);
    }

    fn append_claim(&mut self, term: u64) -> Result<(), AgentError> {
        let cfg = &self.inner.cfg;
        if cfg.transactions || self.producer.is_none() {
            // Transactional: a fresh producer per claim, whose
            // init_transactions fences every other candidate and leader.
            self.producer = None;
            self.producer = Some(log_producer(cfg)?);
        }
        let p = self.producer.as_ref().expect("created above");
        let claim = LogRecord::Claim(Claim {
            term,
            node: cfg.node,
            boot: self.inner.boot,
            api_addr: cfg.api_addr.clone(),
        })
        .encode();
        if cfg.transactions {
            p.begin_transaction()
                .map_err(kafka_err("begin_transaction"))?;
        }
        let rec = BaseRecord::<(), [u8], Box<Tag>>::with_opaque_to(
            &cfg.topic,
            Box::new(Tag { term, seq: 0 }),
        )
        .partition(0)
        .payload(&claim);
        let sent = p.send(rec).map_err(|(e, _)| kafka_err("claim")(e));
        let done = sent.and_then(|()| {
            if cfg.transactions {
                p.commit_transaction(KAFKA_OP_TIMEOUT)
                    .map_err(kafka_err("commit_transaction"))
            } else {
                p.flush(KAFKA_OP_TIMEOUT).map_err(kafka_err("flush"))
            }
        });
        if done.is_err() {
            self.producer = None;
        }
        done
    }

    fn serve_proposals(&mut self, leader: Option<&Leader>) {
        let mut batch = Vec::new();
        while batch.len() < BATCH_MAX {
            match self.proposals.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            return;
        }
        let (Some(lead), true) = (self.lead, self.producer.is_some()) else {
            let hint = Inner::leader_hint(leader.filter(|l| !self.me(l)));
            for p in batch {
                let _ = p.reply.send(Err(AgentError::NotLeader {
                    leader: hint.clone(),
                }));
            }
            return;
        };
        self.append_batch(lead, batch);
    }

    /// Appends `batch` in `lead.term` with consecutive seqs, registering
    /// each waiter before its record can be folded.
    fn append_batch(&mut self, lead: Lead, batch: Vec<Proposal>) {
        let txn = self.inner.cfg.transactions;
        let p = self.producer.as_ref().expect("checked by the caller");
        if txn {
            if let Err(e) = p.begin_transaction() {
                self.give_up(lead.term, &format!("begin_transaction: {e}"));
                for pr in batch {
                    let _ = pr.reply.send(Err(AgentError::Unavailable(format!(
                        "begin_transaction: {e}"
                    ))));
                }
                return;
            }
        }
        let mut seq = lead.next_seq;
        let mut appended = Vec::new();
        let mut batch = batch.into_iter();
        while let Some(pr) = batch.next() {
            let record = LogRecord::Decision(DecisionRecord {
                term: lead.term,
                leader: self.inner.cfg.node,
                seq,
                client: pr.client,
                request: pr.request,
                body: pr.body,
            })
            .encode();
            let key = (lead.term, seq);
            lock(&self.inner.pending).insert(
                key,
                Pending {
                    client: pr.client,
                    request: pr.request,
                    reply: pr.reply,
                },
            );
            let rec = BaseRecord::<(), [u8], Box<Tag>>::with_opaque_to(
                &self.inner.cfg.topic,
                Box::new(Tag {
                    term: lead.term,
                    seq,
                }),
            )
            .partition(0)
            .payload(&record);
            if let Err((e, _)) = p.send(rec) {
                // Nothing enqueued: the seq is not used and the chain is
                // intact. Refuse this proposal and the rest of the batch.
                let why = format!("the producer's queue refused the record: {e}");
                if let Some(w) = lock(&self.inner.pending).remove(&key) {
                    let _ = w.reply.send(Err(AgentError::Overloaded(why.clone())));
                }
                for rest in batch.by_ref() {
                    let _ = rest.reply.send(Err(AgentError::Overloaded(why.clone())));
                }
                break;
            }
            appended.push(key);
            seq += 1;
        }
        if let Some(l) = self.lead.as_mut() {
            l.next_seq = seq;
        }
        if txn {
            if let Err(e) = p.commit_transaction(KAFKA_OP_TIMEOUT) {
                // Aborted or unknown: the records may never be visible, so
                // the term's sequence may have a gap. Stop leading it.
                let _ = p.abort_transaction(KAFKA_OP_TIMEOUT);
                let mut pending = lock(&self.inner.pending);
                for k in appended {
                    if let Some(w) = pending.remove(&k) {
                        let _ = w.reply.send(Err(AgentError::Unavailable(format!(
                            "the append's transaction failed ({e}); retry with the same client and request"
                        ))));
                    }
                }
                drop(pending);
                self.give_up(lead.term, &format!("commit_transaction: {e}"));
            }
        }
    }

    /// Stops leading `term` for good (its sequence may have a gap).
    fn give_up(&mut self, term: u64, why: &str) {
        tracing::warn!(node = self.inner.cfg.node, term, why, "giving up the term");
        self.inner.lost_term.fetch_max(term, Ordering::SeqCst);
        self.lead = None;
        self.producer = None;
        self.inner.leading_term.store(0, Ordering::SeqCst);
        // Claim the next term at once rather than leave the log leaderless
        // for an election timeout: the usual cause with transactions is a
        // losing candidate's init_transactions fencing this leader, and a
        // fresh producer's init fences it back. One attempt; if it fails
        // the timers take over.
        self.inner.campaign.store(u64::MAX, Ordering::SeqCst);
    }

    fn check_deliveries(&mut self) {
        let Some(p) = self.producer.as_ref() else {
            return;
        };
        p.poll(Duration::ZERO);
        let failed = std::mem::take(&mut *lock(&p.context().failed));
        let mut lost = None;
        for (tag, e) in failed {
            if tag.seq > 0 {
                if let Some(w) = lock(&self.inner.pending).remove(&(tag.term, tag.seq)) {
                    let _ = w.reply.send(Err(AgentError::Unavailable(format!(
                        "the append failed ({e}); retry with the same client and request"
                    ))));
                }
                lost = Some(tag.term);
            }
        }
        if let Some(t) = lost {
            self.give_up(t, "a record of the term was not delivered");
        }
    }
}

// ---------------------------------------------------------------------------
// Operations

impl AgentHandle {
    /// This node.
    pub fn node(&self) -> NodeId {
        self.inner.cfg.node
    }

    /// Asks the driver to claim the next term now, as after an election
    /// timeout (operators: leadership transfer to this node; tests: two
    /// claims of the same term at once).
    pub fn campaign(&self) {
        self.inner.campaign.store(u64::MAX, Ordering::SeqCst);
    }

    /// Like [`AgentHandle::campaign`] but claims exactly `term` (≥ 1), even
    /// one the log has already seen (then the claim is ignored): lets a
    /// test make two agents claim the same term at once, which the log
    /// must resolve (rule 2).
    pub fn campaign_term(&self, term: u64) {
        self.inner.campaign.store(term.max(1), Ordering::SeqCst);
    }

    /// Proposes one decision: checks the session fields and the
    /// decision's limits; if this agent leads, hands it to the driver and
    /// waits (up to `timeout_ms`, default and cap the agent's
    /// `propose_timeout`) until its record is folded (rule 4).
    pub async fn propose(&self, req: ProposeRequest) -> Result<Proposed, AgentError> {
        let (client, request) = req
            .session(|| {
                let n = self.inner.one_off.fetch_add(1, Ordering::Relaxed);
                synod_client::wire::one_off_client(self.inner.boot, self.inner.cfg.node, n)
            })
            .map_err(AgentError::InvalidArgument)?;
        if client == synod_decision::READ_ONLY_CLIENT {
            return Err(AgentError::InvalidArgument(
                "client: 0 is reserved for read-only commands".into(),
            ));
        }
        let decision = Decision {
            ops: req.ops,
            guards: req.guards,
            issued_at_ms: req.issued_at_ms.unwrap_or_else(now_ms),
        };
        decision
            .validate()
            .map_err(|e| AgentError::InvalidArgument(e.to_string()))?;
        let cap = self.inner.cfg.propose_timeout.as_millis() as u64;
        let timeout_ms = req.timeout_ms.unwrap_or(cap).clamp(1, cap);
        if self.inner.leading_term.load(Ordering::SeqCst) == 0 {
            return Err(self.not_leader());
        }
        if lock(&self.inner.pending).len() >= PENDING_MAX {
            return Err(AgentError::Overloaded(format!(
                "{PENDING_MAX} proposals already wait for their record (PENDING_MAX)"
            )));
        }
        let (tx, rx) = oneshot::channel();
        self.inner
            .proposals
            .try_send(Proposal {
                client,
                request,
                body: decision.encode(),
                reply: tx,
            })
            .map_err(|e| match e {
                TrySendError::Full(_) => AgentError::Overloaded(format!(
                    "the proposal queue is full (PROPOSAL_QUEUE_MAX = {PROPOSAL_QUEUE_MAX})"
                )),
                TrySendError::Disconnected(_) => {
                    AgentError::Unavailable("the agent is stopping".into())
                }
            })?;
        match tokio::time::timeout(Duration::from_millis(timeout_ms), rx).await {
            Err(_) => Err(AgentError::Timeout(timeout_ms)),
            Ok(Err(_)) => Err(AgentError::Unavailable("the agent is stopping".into())),
            Ok(Ok(r)) => r,
        }
    }

    fn not_leader(&self) -> AgentError {
        let st = lock(&self.inner.state);
        let leader = st
            .leader()
            .filter(|l| !(l.node == self.inner.cfg.node && l.boot == self.inner.boot))
            .map(|l| (l.node, l.api_addr.clone()));
        AgentError::NotLeader { leader }
    }

    /// The agent's status.
    pub fn status(&self) -> AgentStatus {
        let st = lock(&self.inner.state);
        let snapshot_offset = self.inner.snapshot_offset.load(Ordering::SeqCst);
        AgentStatus {
            node: self.inner.cfg.node,
            boot_id: self.inner.boot,
            topic: self.inner.cfg.topic.clone(),
            term: st.term(),
            leader: st.leader().map(|l| l.node),
            leader_api: st.leader().map(|l| l.api_addr.clone()),
            is_leader: self.inner.leading_term.load(Ordering::SeqCst) != 0,
            next_offset: st.next_offset(),
            applied_offset: st.next_offset().checked_sub(1),
            log_end_offset: self.inner.log_end.load(Ordering::Relaxed),
            caught_up: self.inner.caught_up.load(Ordering::SeqCst),
            counters: st.counters(),
            state_digest: st.state_digest(),
            started_from_offset: self.inner.started_from,
            snapshot_offset: (snapshot_offset > 0).then_some(snapshot_offset),
            transactions: self.inner.cfg.transactions,
            waiting_proposals: lock(&self.inner.pending).len() as u64,
        }
    }

    /// Runs `f` on the fold's state under its lock (reads, tests).
    pub fn with_state<T>(&self, f: impl FnOnce(&LogState) -> T) -> T {
        f(&lock(&self.inner.state))
    }

    /// `Ok` when ready to serve: caught up with the log once, the reader
    /// polling; otherwise why not.
    pub fn ready(&self) -> Result<(), String> {
        if !self.inner.caught_up.load(Ordering::SeqCst) {
            return Err("not ready: reading the log up to its end".into());
        }
        let tick = Duration::from_millis(self.inner.reader_tick_ms.load(Ordering::Relaxed));
        if self.inner.started.elapsed().saturating_sub(tick) > READER_STALL_MAX {
            return Err("not ready: the log reader is stalled".into());
        }
        Ok(())
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
