//! Ingest: proposals from a topic (kafka.md §1).
//!
//! Every replica with `[kafka.ingest]` joins one consumer group
//! (`kafka.ingest.group`, default `synod-ingest`) on the proposals topic, so
//! the partitions are shared among the replicas and move when one fails.
//!
//! - **Record format.** A record's value is a decision in the JSON form
//!   `POST /v1/decisions` takes ([`synod_client::wire::ProposeRequest`]).
//! - **Idempotency.** The header [`HEADER_IDEMPOTENCY_KEY`], else the
//!   record key, else the value's own `client`/`request`, else
//!   `topic/partition/offset` identifies the request. A key becomes a
//!   session of its own ([`idempotency_client`], request 1), so a second
//!   record with the same key, or the same record delivered again after a
//!   crash, is answered from the session table and applies nothing. Two
//!   different records with the same key are therefore one request: the
//!   key must identify the request, not the entity it is about.
//! - **Order and durability.** Records of one partition are proposed one
//!   at a time, in offset order, so conflicting decisions of a partition
//!   execute in partition order; partitions run in parallel, one thread
//!   each. A record's offset is stored for the group's commit only after
//!   the local replica answered with the executed outcome, which it does
//!   only once the decision is durable on a quorum (persist → execute →
//!   reply). A crash in between re-proposes the record, which the
//!   idempotency key makes harmless: the effect is exactly-once.
//! - **Dead letters.** A record that is not a decision (empty, not JSON,
//!   or refused by the API as invalid, 4xx) is produced to the dead-letter
//!   topic with [`HEADER_DLQ_REASON`] and [`HEADER_DLQ_SOURCE`], and only
//!   once that record is acknowledged is its offset stored: it never blocks
//!   the partition and is never silently dropped. A decision that executes
//!   and is rejected (say, not enough stock) is a result, not a dead letter.
//! - **Back-pressure.** When the replica answers `overloaded`, or a
//!   partition's queue holds `partition_queue_max` records, the partition is
//!   paused at the broker (librdkafka stops fetching it and keeps its
//!   position); it is resumed once the replica accepts again and the queue
//!   has drained to half. The consumer keeps polling meanwhile, so the
//!   group does not evict it.
//! - **Metrics.** `kafka_consumer_lag{topic,partition}` (records after the
//!   last durable one, against the partition's high watermark, refreshed
//!   every [`LAG_REFRESH`]) and `kafka_consumer_lag_seconds` (age of the
//!   oldest fetched record not yet durable), `kafka_ingest_records_total`,
//!   `kafka_ingest_paused_total{reason}`, `kafka_ingest_overloaded_total`.
//!
//! Results go to the committed stream and, with `[kafka.egress]`, to the
//! committed topic; there is no per-record reply topic.

use crate::producer::{self, Producer};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use synod_client::wire::ProposeRequest;
use synod_client::{Client, ClientError};
use synod_runtime::config::IngestConfig;
use synod_runtime::metrics::KafkaMetrics;

/// Header naming a record's idempotency key (takes precedence over the
/// record key).
pub const HEADER_IDEMPOTENCY_KEY: &str = "synod-idempotency-key";

/// Dead-letter header: why the record is not a decision.
pub const HEADER_DLQ_REASON: &str = "synod-dlq-reason";

/// Dead-letter header: where the record came from, `topic/partition/offset`.
pub const HEADER_DLQ_SOURCE: &str = "synod-dlq-source";

/// How long one consumer poll waits; also how often pauses are reconciled.
pub const POLL: Duration = Duration::from_millis(50);

/// How often the consumer lag gauges are refreshed (one watermark query
/// per assigned partition).
pub const LAG_REFRESH: Duration = Duration::from_secs(1);

/// Timeout of one watermark query.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(1);

/// First wait before re-proposing after a retryable error; doubles up to
/// [`RETRY_BACKOFF_MAX`].
pub const RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// Longest wait between two attempts of one record.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// How long a dead-letter record may wait for the broker's
/// acknowledgement before the attempt is repeated.
pub const DLQ_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Most partitions one replica works on at once (one thread each); records
/// of further partitions wait in their queues until the group moves them.
pub const PARTITIONS_MAX: usize = 256;

/// How long [`Ingest::stop`] waits for a partition thread blocked in a
/// proposal before leaving it behind (its record is re-proposed by whoever
/// owns the partition next; the idempotency key makes that harmless).
pub const STOP_WAIT: Duration = Duration::from_secs(5);

/// One fetched record, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestRecord {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Value of the [`HEADER_IDEMPOTENCY_KEY`] header.
    pub idempotency_key: Option<Vec<u8>>,
    /// Record value.
    pub payload: Option<Vec<u8>>,
    /// Kafka timestamp in ms since the epoch, if the record has one.
    pub timestamp_ms: Option<i64>,
}

impl IngestRecord {
    fn from_message(m: &impl Message) -> IngestRecord {
        let idempotency_key = m.headers().and_then(|hs| {
            hs.iter()
                .find(|h| h.key == HEADER_IDEMPOTENCY_KEY)
                .and_then(|h| h.value.map(<[u8]>::to_vec))
        });
        IngestRecord {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            idempotency_key,
            payload: m.payload().map(<[u8]>::to_vec),
            timestamp_ms: m.timestamp().to_millis(),
        }
    }

    fn source(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// The session id an idempotency key stands for: FNV-1a (64 bit) of a
/// domain tag and the key, with the top bit set, so it is never
/// [`synod_decision::READ_ONLY_CLIENT`] and differs from the small ids
/// clients usually pick. Two different keys collide with probability
/// about 2⁻⁶³ per pair.
pub fn idempotency_client(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"synod-kafka-idempotency\0".iter().chain(key) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | (1 << 63)
}

/// What one record asks for: the proposal to make, or why it is a dead
/// letter. Pure.
pub fn plan(rec: &IngestRecord) -> Result<ProposeRequest, String> {
    let payload = match rec.payload.as_deref() {
        None | Some([]) => return Err("empty value: expected a decision as JSON".into()),
        Some(p) => p,
    };
    let mut req: ProposeRequest = serde_json::from_slice(payload)
        .map_err(|e| format!("value is not a decision as JSON: {e}"))?;
    let key = rec.idempotency_key.as_deref().or(rec.key.as_deref());
    match (key, req.client, req.request) {
        (Some([]), _, _) => return Err("empty idempotency key".into()),
        (Some(k), _, _) => {
            req.client = Some(idempotency_client(k));
            req.request = Some(1);
        }
        (None, Some(_), Some(_)) => {}
        (None, None, None) => {
            req.client = Some(idempotency_client(rec.source().as_bytes()));
            req.request = Some(1);
        }
        (None, _, _) => {
            return Err("value: `client` and `request` must be given together".into());
        }
    }
    Ok(req)
}

/// How one record ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handled {
    Applied,
    Rejected,
    DeadLettered,
    /// Ingest is stopping; the record is left for the next owner.
    Stopped,
}

impl Handled {
    fn label(self) -> &'static str {
        match self {
            Handled::Applied => "applied",
            Handled::Rejected => "rejected",
            Handled::DeadLettered => "dead_lettered",
            Handled::Stopped => "stopped",
        }
    }
}

#[derive(Default)]
struct Part {
    queue: VecDeque<IngestRecord>,
    /// The record being proposed: its offset and timestamp.
    in_flight: Option<(i64, Option<i64>)>,
    /// Offset after the last record made durable in this assignment.
    durable_next: Option<i64>,
    /// The replica answered `overloaded` to the record in flight.
    overloaded: bool,
    /// Paused at the broker by us.
    paused: bool,
    /// A thread serves this partition.
    worker: bool,
    /// Bumped when the partition is revoked: completions of an older
    /// assignment store no offset.
    assignment: u64,
}

struct Shared {
    topic: String,
    parts: Mutex<BTreeMap<i32, Part>>,
    cv: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, Part>> {
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Ctx(Arc<Shared>);

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = r {
            let mut parts = self.0.lock();
            for e in tpl.elements() {
                if let Some(p) = parts.get_mut(&e.partition()) {
                    p.queue.clear();
                    p.assignment += 1;
                    p.durable_next = None;
                }
            }
            tracing::info!(partitions = tpl.count(), "kafka ingest: partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = r {
            let ps: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            // librdkafka keeps a partition's pause across a revoke and a
            // new assignment; start every assignment unpaused, so that our
            // flags and the broker's state agree.
            if let Err(e) = consumer.resume(tpl) {
                tracing::warn!("kafka ingest: resuming assigned partitions: {e}");
            }
            let mut parts = self.0.lock();
            for p in &ps {
                let part = parts.entry(*p).or_default();
                part.paused = false;
                part.overloaded = false;
            }
            tracing::info!(?ps, "kafka ingest: partitions assigned");
        }
    }
}

type IngestConsumer = BaseConsumer<Ctx>;

/// Everything a partition thread needs.
struct Env {
    shared: Arc<Shared>,
    consumer: Arc<IngestConsumer>,
    client: Client,
    dlq: Arc<Producer>,
    dlq_topic: String,
    metrics: KafkaMetrics,
}

/// A running ingest; [`Ingest::stop`] ends it.
pub struct Ingest {
    shared: Arc<Shared>,
    consumer: Option<std::thread::JoinHandle<()>>,
}

/// Starts ingest: `base` is the client config with the brokers and the
/// user's passthrough properties, `endpoints` the replica APIs to propose
/// to (the local one first).
pub fn start(
    base: &ClientConfig,
    cfg: &IngestConfig,
    endpoints: Vec<String>,
    metrics: KafkaMetrics,
) -> Result<Ingest, String> {
    let shared = Arc::new(Shared {
        topic: cfg.topic.clone(),
        parts: Mutex::new(BTreeMap::new()),
        cv: Condvar::new(),
        stop: AtomicBool::new(false),
    });
    let mut c = base.clone();
    c.set("group.id", &cfg.group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false");
    crate::props::set_default(&mut c, "auto.offset.reset", "earliest");
    let consumer: IngestConsumer = c
        .create_with_context(Ctx(shared.clone()))
        .map_err(|e| format!("creating the Kafka ingest consumer: {e}"))?;
    consumer
        .subscribe(&[&cfg.topic])
        .map_err(|e| format!("subscribing to {}: {e}", cfg.topic))?;
    let dlq = producer::create(base.clone(), None)?;
    let client = Client::new(endpoints).map_err(|e| e.to_string())?;
    let env = Arc::new(Env {
        shared: shared.clone(),
        consumer: Arc::new(consumer),
        client,
        dlq: Arc::new(dlq),
        dlq_topic: cfg.dead_letter_topic.clone(),
        metrics,
    });
    let queue_max = cfg.partition_queue_max;
    let consumer = std::thread::Builder::new()
        .name("kafka-ingest".into())
        .spawn(move || consume(env, queue_max))
        .map_err(|e| format!("spawning the ingest thread: {e}"))?;
    Ok(Ingest {
        shared,
        consumer: Some(consumer),
    })
}

impl Ingest {
    /// Stops fetching, lets the partition threads finish the record in
    /// hand (at most [`STOP_WAIT`]), and closes the consumer, which commits
    /// the stored offsets.
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.cv.notify_all();
        if let Some(t) = self.consumer.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.cv.notify_all();
    }
}

fn labels(topic: &str, partition: i32) -> [(&'static str, String); 2] {
    [
        ("topic", topic.to_string()),
        ("partition", partition.to_string()),
    ]
}

fn tpl(topic: &str, partition: i32) -> TopicPartitionList {
    let mut t = TopicPartitionList::new();
    t.add_partition(topic, partition);
    t
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The consumer thread: fetches, queues per partition, pauses and resumes,
/// refreshes the lag gauges; at stop waits for the partition threads and
/// closes the consumer.
fn consume(env: Arc<Env>, queue_max: usize) {
    let shared = &env.shared;
    let mut workers: Vec<(std::thread::JoinHandle<()>, Arc<AtomicBool>)> = Vec::new();
    let mut last_lag = Instant::now();
    let mut reported = BTreeSet::new();
    while !shared.stop.load(Ordering::SeqCst) {
        match env.consumer.poll(POLL) {
            Some(Ok(m)) => {
                let rec = IngestRecord::from_message(&m);
                let p = rec.partition;
                let mut parts = shared.lock();
                let n = parts.len();
                let part = parts.entry(p).or_default();
                if !part.worker && n <= PARTITIONS_MAX {
                    part.worker = true;
                    let env = env.clone();
                    let done = Arc::new(AtomicBool::new(false));
                    let d = done.clone();
                    match std::thread::Builder::new()
                        .name(format!("kafka-ingest-{p}"))
                        .spawn(move || {
                            serve_partition(&env, p);
                            d.store(true, Ordering::SeqCst);
                        }) {
                        Ok(t) => workers.push((t, done)),
                        Err(e) => {
                            part.worker = false;
                            tracing::error!("kafka ingest: cannot spawn a partition thread: {e}");
                        }
                    }
                }
                part.queue.push_back(rec);
                drop(parts);
                shared.cv.notify_all();
            }
            Some(Err(e)) => tracing::warn!("kafka ingest: {e}"),
            None => {}
        }
        reconcile_pauses(&env, queue_max);
        if last_lag.elapsed() >= LAG_REFRESH {
            last_lag = Instant::now();
            refresh_lag(&env, &mut reported);
        }
    }
    shared.cv.notify_all();
    let deadline = Instant::now() + STOP_WAIT;
    for (t, done) in workers {
        while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if done.load(Ordering::SeqCst) {
            let _ = t.join();
        }
    }
    // Dropping the consumer closes it: the stored offsets are committed.
    if let Err(e) = env
        .consumer
        .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
    {
        tracing::debug!("kafka ingest: final commit: {e}");
    }
}

fn reconcile_pauses(env: &Env, queue_max: usize) {
    let shared = &env.shared;
    let mut parts = shared.lock();
    for (p, part) in parts.iter_mut() {
        let full = part.queue.len() >= queue_max;
        if !part.paused && (part.overloaded || full) {
            match env.consumer.pause(&tpl(&shared.topic, *p)) {
                Ok(()) => {
                    part.paused = true;
                    let reason = if part.overloaded {
                        "overloaded"
                    } else {
                        "queue_full"
                    };
                    env.metrics
                        .ingest_paused
                        .get_or_create(&[("reason", reason)])
                        .inc();
                    tracing::debug!(
                        partition = p,
                        overloaded = part.overloaded,
                        queued = part.queue.len(),
                        "kafka ingest: partition paused"
                    );
                }
                Err(e) => tracing::debug!("kafka ingest: pause {p}: {e}"),
            }
        } else if part.paused && !part.overloaded && part.queue.len() <= queue_max / 2 {
            match env.consumer.resume(&tpl(&shared.topic, *p)) {
                Ok(()) => part.paused = false,
                Err(e) => tracing::debug!("kafka ingest: resume {p}: {e}"),
            }
        }
    }
}

/// Refreshes the lag gauges of the assigned partitions and removes those
/// of partitions the group moved elsewhere (`reported`: the partitions
/// with gauges now).
fn refresh_lag(env: &Env, reported: &mut BTreeSet<i32>) {
    let topic = &env.shared.topic;
    let Ok(assigned) = env.consumer.assignment() else {
        return;
    };
    let now: BTreeSet<i32> = assigned.elements().iter().map(|e| e.partition()).collect();
    for gone in reported.difference(&now) {
        let l = labels(topic, *gone);
        env.metrics.consumer_lag.remove(&l);
        env.metrics.consumer_lag_seconds.remove(&l);
    }
    *reported = now;
    let position = env.consumer.position().ok();
    for e in assigned.elements() {
        let p = e.partition();
        let (next, oldest) = {
            let parts = env.shared.lock();
            match parts.get(&p) {
                Some(part) => {
                    let first_open = part
                        .in_flight
                        .map(|(o, _)| o)
                        .or_else(|| part.queue.front().map(|r| r.offset));
                    let oldest_ts = part
                        .in_flight
                        .and_then(|(_, t)| t)
                        .or_else(|| part.queue.front().and_then(|r| r.timestamp_ms));
                    (first_open.or(part.durable_next), oldest_ts)
                }
                None => (None, None),
            }
        };
        let next = next.or_else(|| {
            position
                .as_ref()
                .and_then(|t| t.find_partition(topic, p))
                .and_then(|e| e.offset().to_raw())
                .filter(|o| *o >= 0)
        });
        let l = labels(topic, p);
        if let (Some(next), Ok((_, high))) = (
            next,
            env.consumer.fetch_watermarks(topic, p, WATERMARK_TIMEOUT),
        ) {
            env.metrics
                .consumer_lag
                .get_or_create(&l)
                .set((high - next).max(0));
        }
        let age = oldest.map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0);
        env.metrics.consumer_lag_seconds.get_or_create(&l).set(age);
    }
}

/// One partition's thread: its records in offset order, one at a time.
fn serve_partition(env: &Env, p: i32) {
    let shared = &env.shared;
    loop {
        let (rec, assignment) = {
            let mut parts = shared.lock();
            loop {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let part = parts.entry(p).or_default();
                if let Some(r) = part.queue.pop_front() {
                    part.in_flight = Some((r.offset, r.timestamp_ms));
                    break (r, part.assignment);
                }
                parts = shared
                    .cv
                    .wait_timeout(parts, POLL)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        };
        let handled = handle(env, &rec);
        env.metrics
            .ingest_records
            .get_or_create(&[("result", handled.label())])
            .inc();
        let mut parts = shared.lock();
        let part = parts.entry(p).or_default();
        part.in_flight = None;
        part.overloaded = false;
        if handled == Handled::Stopped {
            return;
        }
        if part.assignment == assignment {
            let mut t = TopicPartitionList::new();
            if t.add_partition_offset(&rec.topic, p, Offset::Offset(rec.offset + 1))
                .is_ok()
            {
                if let Err(e) = env.consumer.store_offsets(&t) {
                    // Revoked meanwhile: the next owner re-proposes it.
                    tracing::debug!("kafka ingest: store offset {}: {e}", rec.source());
                }
            }
            part.durable_next = Some(rec.offset + 1);
        }
    }
}

fn stopping(env: &Env) -> bool {
    env.shared.stop.load(Ordering::SeqCst)
}

fn set_overloaded(env: &Env, p: i32, on: bool) {
    if let Some(part) = env.shared.lock().get_mut(&p) {
        part.overloaded = on;
    }
}

fn handle(env: &Env, rec: &IngestRecord) -> Handled {
    let req = match plan(rec) {
        Ok(r) => r,
        Err(why) => return dead_letter(env, rec, &why),
    };
    let mut backoff = RETRY_BACKOFF;
    loop {
        if stopping(env) {
            return Handled::Stopped;
        }
        match env.client.propose(&req) {
            Ok(resp) => {
                return if resp.outcome.is_applied() {
                    Handled::Applied
                } else {
                    Handled::Rejected
                };
            }
            Err(e) if e.is_overloaded() => {
                env.metrics.ingest_overloaded.inc();
                set_overloaded(env, rec.partition, true);
                std::thread::sleep(e.retry_after().unwrap_or(backoff).min(RETRY_BACKOFF_MAX));
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            }
            Err(ClientError::Http { status, body })
                if (400..500).contains(&status) && !body.retryable =>
            {
                return dead_letter(env, rec, &format!("{}: {}", body.code, body.message));
            }
            Err(e) => {
                tracing::warn!("kafka ingest: proposing {}: {e}; retrying", rec.source());
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            }
        }
    }
}

fn dead_letter(env: &Env, rec: &IngestRecord, why: &str) -> Handled {
    let source = rec.source();
    let mut backoff = RETRY_BACKOFF;
    loop {
        if stopping(env) {
            return Handled::Stopped;
        }
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_DLQ_REASON,
                value: Some(why),
            })
            .insert(Header {
                key: HEADER_DLQ_SOURCE,
                value: Some(&source),
            });
        let sent = producer::send(
            &env.dlq,
            &env.dlq_topic,
            rec.key.as_deref(),
            rec.payload.as_deref(),
            headers,
        )
        .and_then(|p| p.wait(DLQ_ACK_TIMEOUT));
        match sent {
            Ok(_) => {
                tracing::info!(source, reason = why, "kafka ingest: dead-lettered");
                return Handled::DeadLettered;
            }
            Err(e) => {
                tracing::warn!("kafka ingest: dead-lettering {source}: {e}; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: Option<&str>, header: Option<&str>, value: &str) -> IngestRecord {
        IngestRecord {
            topic: "engine.proposals".into(),
            partition: 2,
            offset: 17,
            key: key.map(|k| k.as_bytes().to_vec()),
            idempotency_key: header.map(|k| k.as_bytes().to_vec()),
            payload: Some(value.as_bytes().to_vec()),
            timestamp_ms: None,
        }
    }

    const PUT: &str = r#"{"ops":[{"SetStock":{"key":"a","qty":1}}]}"#;

    #[test]
    fn the_header_wins_over_the_key_and_the_key_over_the_offset() {
        let by_header = plan(&rec(Some("k"), Some("h"), PUT)).unwrap();
        assert_eq!(by_header.client, Some(idempotency_client(b"h")));
        assert_eq!(by_header.request, Some(1));
        let by_key = plan(&rec(Some("k"), None, PUT)).unwrap();
        assert_eq!(by_key.client, Some(idempotency_client(b"k")));
        let by_offset = plan(&rec(None, None, PUT)).unwrap();
        assert_eq!(
            by_offset.client,
            Some(idempotency_client(b"engine.proposals/2/17"))
        );
        assert_ne!(by_key.client, by_offset.client);
    }

    #[test]
    fn a_value_with_its_own_session_keeps_it_without_a_key() {
        let v = r#"{"client":7,"request":3,"ops":[{"SetStock":{"key":"a","qty":1}}]}"#;
        let r = plan(&rec(None, None, v)).unwrap();
        assert_eq!((r.client, r.request), (Some(7), Some(3)));
        let half = r#"{"client":7,"ops":[{"SetStock":{"key":"a","qty":1}}]}"#;
        assert!(plan(&rec(None, None, half))
            .unwrap_err()
            .contains("together"));
    }

    #[test]
    fn records_that_are_not_decisions_are_dead_letters_with_a_reason() {
        assert!(plan(&rec(None, None, "")).unwrap_err().contains("empty"));
        assert!(plan(&rec(None, None, "{not json"))
            .unwrap_err()
            .contains("not a decision"));
        assert!(plan(&rec(None, None, r#"{"guards":[]}"#))
            .unwrap_err()
            .contains("ops"));
        assert!(plan(&rec(Some(""), None, PUT))
            .unwrap_err()
            .contains("empty idempotency key"));
    }

    #[test]
    fn idempotency_sessions_are_never_the_read_only_client_and_differ_by_key() {
        let a = idempotency_client(b"order-1");
        let b = idempotency_client(b"order-2");
        assert_ne!(a, b);
        assert_ne!(a, synod_decision::READ_ONLY_CLIENT);
        assert!(a >= 1 << 63);
        assert_eq!(a, idempotency_client(b"order-1"), "stable");
    }
}
