//! Prometheus metrics of one replica (`GET /metrics`), in the OpenMetrics
//! text format of `prometheus-client`.
//!
//! One [`Registry`] per node, built once in [`Metrics::new`] and never
//! changed after: every metric in it is a handle on atomics (or a short
//! `parking_lot` lock for the histogram and the rejection family), so
//!
//! - the replica loop records into its clones of the handles without any
//!   lock of ours and without ever waiting for a scrape;
//! - the HTTP handler encodes the shared `Arc<Registry>` directly. It does
//!   not go through the loop's query channel on purpose: the metrics must
//!   still answer when the loop is stuck or backlogged, which is when an
//!   operator needs them most.
//!
//! Three ways values get in, each where its source lives:
//!
//! 1. **Events the loop sees** (a proposal accepted, a command applied, a
//!    rejection, a commit latency) are recorded when they happen.
//! 2. **State only the loop can read** (`Replica::stats()` and the gauges
//!    `pending_execution`, `in_flight`, waiting proposals, unsynced WAL
//!    records) is copied by [`Metrics::refresh`], which the loop calls on a
//!    tick at most every [`REFRESH_INTERVAL`] (a handful of loads and
//!    stores). The replica's cumulative stats become counters by
//!    `inc_by(total - current)`: prometheus-client counters have no `set`,
//!    the loop is their only writer, and the stats only grow within one
//!    process, so the counter equals the stat after every refresh and stays
//!    monotonic (a restart resets both, which Prometheus handles as a counter
//!    reset).
//! 3. **State readable from any thread** (`Wal::stats()` and
//!    `Transport::stats()`, both relaxed atomics) is read at scrape time by a
//!    [`Collector`] and encoded as constant metrics: exact at every scrape
//!    and no work at all for the loop.
//!
//! Names follow Prometheus conventions (base units, `_total`, `_seconds`);
//! `epaxos_proposals_total` and `epaxos_fast_path_success_ratio` keep the
//! names the seeds' alert rules use (architecture.md §6). Registered metrics
//! are named without `_total` and unit: the encoder appends both (and a `.`
//! to the help, which the scrape-time helps therefore carry themselves).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use synod_storage::WalStats;
use synod_types::NodeId;

/// The `Content-Type` of `GET /metrics`: what `prometheus_client`'s text
/// encoder produces (OpenMetrics 1.0, ending in `# EOF`).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How often the loop copies its gauges and the replica's stats into the
/// registry. Far below any scrape interval (≥ 1 s in practice), far above
/// the tick (5 ms by default), so the copying costs the loop nothing.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// Upper bounds (seconds) of the commit-latency histogram: 1-2.5-5 steps
/// from 100 µs (a loopback cluster on a fast disk) to 10 s (beyond the
/// default propose timeout; slower is `+Inf`).
pub const COMMIT_LATENCY_BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Why a proposal did not get an outcome: the `reason` label of
/// `synod_proposals_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// A limit was reached: the proposal queue into the loop (counted by the
    /// HTTP layer) or the proposals waiting for a result (by the loop).
    Overloaded,
    /// The instance was replaced by a Nop too often (the loop).
    Aborted,
    /// The replica was stopping (the loop, or the HTTP layer if the loop had
    /// already gone).
    ShuttingDown,
    /// Malformed or out-of-range input (the HTTP layer).
    Invalid,
    /// No result within the request's deadline (the HTTP layer). The decision
    /// may still execute and is then also observed in the latency histogram.
    Timeout,
}

impl Rejection {
    /// Every reason, so each series exists (at 0) from the start.
    pub const ALL: [Rejection; 5] = [
        Rejection::Overloaded,
        Rejection::Aborted,
        Rejection::ShuttingDown,
        Rejection::Invalid,
        Rejection::Timeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Overloaded => "overloaded",
            Rejection::Aborted => "aborted",
            Rejection::ShuttingDown => "shutting_down",
            Rejection::Invalid => "invalid",
            Rejection::Timeout => "timeout",
        }
    }

    fn labels(self) -> [(&'static str, &'static str); 1] {
        [("reason", self.as_str())]
    }
}

/// What [`Metrics::refresh`] copies from the loop's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopState {
    /// `Stats::fast_commits`: own instances committed on the fast path.
    pub fast_commits: u64,
    /// `Stats::slow_paths`: own instances that took the slow path.
    pub slow_paths: u64,
    /// `Stats::recoveries`: recovery attempts started.
    pub recoveries: u64,
    /// `Stats::nops`: instances committed as Nop through recovery.
    pub nops: u64,
    /// `Replica::pending_execution()`.
    pub pending_execution: u64,
    /// Age of the oldest instance committed here and not yet executed
    /// (`None`: nothing waits).
    pub oldest_unexecuted: Option<Duration>,
    /// `Stats::deps_listed`: explicit ids in own initial dependency sets.
    pub deps_listed: u64,
    /// `Stats::submitted`: own instances submitted.
    pub submitted: u64,
    /// `Replica::in_flight()`.
    pub in_flight: u64,
    /// Proposals waiting for their result.
    pub waiting_proposals: u64,
    /// WAL records appended but not yet durable.
    pub wal_unsynced_records: u64,
}

/// Reads the WAL's counters at scrape time; `None` once the WAL is gone.
pub type WalStatsFn = Box<dyn Fn() -> Option<WalStats> + Send + Sync>;

/// Reads each peer's connection state at scrape time.
pub type PeersFn = Box<dyn Fn() -> Vec<(NodeId, bool)> + Send + Sync>;

/// The control plane's gauges, read at scrape time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlGauges {
    /// The Raft term this replica is in.
    pub term: u64,
    /// This replica leads the control plane.
    pub is_leader: bool,
    /// The Raft log index committed (as applied here).
    pub commit_index: u64,
    /// The newest EPaxos\* epoch of the control state (0 before `Init`).
    pub epoch: u64,
}

/// Reads the control plane's gauges at scrape time.
pub type ControlFn = Box<dyn Fn() -> ControlGauges + Send + Sync>;

/// The metric handles of one replica and the registry that holds them.
/// Cheap to clone: every clone records into the same metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Registry>,
    proposals: Counter,
    fast_path_success_ratio: Gauge<f64, AtomicU64>,
    commit_latency: Histogram,
    slow_path: Counter,
    recoveries: Counter,
    nops: Counter,
    pending_execution: Gauge,
    in_flight_instances: Gauge,
    waiting_proposals: Gauge,
    wal_unsynced_records: Gauge,
    rejected: Family<[(&'static str, &'static str); 1], Counter>,
    executed: Counter,
    execute_latency: Histogram,
    oldest_unexecuted_age: Gauge<f64, AtomicU64>,
    subscribers: Gauge,
    subscriber_lag: Family<[(&'static str, String); 1], Gauge>,
    next_subscriber: Arc<AtomicU64>,
    instances_submitted: Counter,
    dependency_ids_listed: Counter,
    kafka: KafkaMetrics,
}

/// `(topic, partition)` labels of the Kafka consumer metrics.
pub type PartitionLabels = [(&'static str, String); 2];

/// The Kafka ingest and egress metrics (kafka.md §1–2); registered on every
/// replica, moving only where Kafka is configured. Clones record into the
/// same metrics.
#[derive(Clone, Debug, Default)]
pub struct KafkaMetrics {
    /// `kafka_consumer_lag{topic,partition}`: records in the partition after
    /// the last one this replica has made durable.
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    /// `kafka_consumer_lag_seconds{topic,partition}`: age (by the record's
    /// Kafka timestamp) of the oldest record fetched and not yet durable; 0
    /// when caught up.
    pub consumer_lag_seconds: Family<PartitionLabels, Gauge<f64, AtomicU64>>,
    /// `kafka_ingest_records_total{result}`: ingested records by result
    /// (`applied`, `rejected`: executed with a rejection outcome,
    /// `dead_lettered`).
    pub ingest_records: Family<[(&'static str, &'static str); 1], Counter>,
    /// `kafka_ingest_paused_total{reason}`: times a partition was paused,
    /// by reason (`overloaded`: the replica refused a proposal;
    /// `queue_full`: `partition_queue_max` records waited).
    pub ingest_paused: Family<[(&'static str, &'static str); 1], Counter>,
    /// `kafka_ingest_overloaded_total`: proposals the replica refused as
    /// overloaded; each is followed by a back-off before the retry.
    pub ingest_overloaded: Counter,
    /// `kafka_egress_published_total`: records this replica published.
    pub egress_published: Counter,
    /// `kafka_egress_holder`: 1 while this replica holds the egress lease.
    pub egress_holder: Gauge,
    /// `kafka_egress_generation`: the lease generation this replica
    /// publishes under (0: none).
    pub egress_generation: Gauge,
}

impl Metrics {
    /// A registry for one node. `wal`, `peers` and `control` are read at
    /// every scrape.
    pub fn new(wal: WalStatsFn, peers: PeersFn, control: ControlFn) -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            proposals: Counter::default(),
            fast_path_success_ratio: Gauge::default(),
            commit_latency: Histogram::new(COMMIT_LATENCY_BUCKETS),
            slow_path: Counter::default(),
            recoveries: Counter::default(),
            nops: Counter::default(),
            pending_execution: Gauge::default(),
            in_flight_instances: Gauge::default(),
            waiting_proposals: Gauge::default(),
            wal_unsynced_records: Gauge::default(),
            rejected: Family::default(),
            executed: Counter::default(),
            execute_latency: Histogram::new(COMMIT_LATENCY_BUCKETS),
            oldest_unexecuted_age: Gauge::default(),
            subscribers: Gauge::default(),
            subscriber_lag: Family::default(),
            next_subscriber: Arc::new(AtomicU64::new(0)),
            instances_submitted: Counter::default(),
            dependency_ids_listed: Counter::default(),
            kafka: KafkaMetrics::default(),
        };
        // NaN until the first own commit: "no data" rather than a ratio of 0
        // that would read as "every commit took the slow path".
        m.fast_path_success_ratio.set(f64::NAN);
        for reason in Rejection::ALL {
            let _ = m.rejected.get_or_create(&reason.labels());
        }
        // Counter names are given without `_total` and units are given as
        // `Unit`s: the encoder appends both.
        r.register(
            "synod_build",
            "Version of the synod binary",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        r.register(
            "epaxos_proposals",
            "Proposals the HTTP API handed to the replica loop and the loop accepted",
            m.proposals.clone(),
        );
        r.register(
            "epaxos_fast_path_success_ratio",
            "Own instances committed on the fast path / (fast + slow path), since start; NaN before the first",
            m.fast_path_success_ratio.clone(),
        );
        r.register_with_unit(
            "synod_commit_latency",
            "Time from a proposal entering the replica loop's queue to its outcome being replied",
            Unit::Seconds,
            m.commit_latency.clone(),
        );
        r.register(
            "synod_slow_path",
            "Own instances that took the slow path (Accept round) at the initial ballot",
            m.slow_path.clone(),
        );
        r.register(
            "synod_recoveries",
            "Recovery attempts started by this replica (each ballot counts)",
            m.recoveries.clone(),
        );
        r.register(
            "synod_nops",
            "Instances this replica committed as Nop through recovery",
            m.nops.clone(),
        );
        r.register(
            "synod_pending_execution",
            "Committed instances not yet executed (waiting for dependencies)",
            m.pending_execution.clone(),
        );
        r.register(
            "synod_in_flight_instances",
            "Commands batched for submission plus own instances not yet committed",
            m.in_flight_instances.clone(),
        );
        r.register(
            "synod_waiting_proposals",
            "Proposals waiting in the loop for their outcome (limit: limits.max_waiting_proposals)",
            m.waiting_proposals.clone(),
        );
        r.register(
            "synod_wal_unsynced_records",
            "WAL records appended but not yet durable (the loop stops reading input above MAX_UNSYNCED_RECORDS)",
            m.wal_unsynced_records.clone(),
        );
        r.register(
            "synod_proposals_rejected",
            "Proposals answered without an outcome, by reason",
            m.rejected.clone(),
        );
        r.register(
            "synod_executed",
            "Commands applied to the state machine by this process (re-executions after a restart included)",
            m.executed.clone(),
        );
        r.register_with_unit(
            "synod_execute_latency",
            "Time from an instance's commit being released here to its execution (the wait for its dependencies)",
            Unit::Seconds,
            m.execute_latency.clone(),
        );
        r.register_with_unit(
            "synod_oldest_unexecuted_age",
            "Age of the oldest instance committed here and not yet executed; 0 when none waits",
            Unit::Seconds,
            m.oldest_unexecuted_age.clone(),
        );
        r.register(
            "synod_subscribers",
            "Open committed-stream subscriptions (SSE and gRPC Subscribe)",
            m.subscribers.clone(),
        );
        r.register(
            "synod_subscriber_lag",
            "Executed instances a subscriber has not been sent yet, per open subscription (numbered per process)",
            m.subscriber_lag.clone(),
        );
        r.register(
            "synod_instances_submitted",
            "Own instances (batches of decisions) this replica submitted",
            m.instances_submitted.clone(),
        );
        r.register(
            "synod_dependency_ids_listed",
            "Explicit ids in the initial dependency sets of own instances (those above the stable floor); / synod_instances_submitted_total = mean dependency list length",
            m.dependency_ids_listed.clone(),
        );
        r.register(
            "kafka_consumer_lag",
            "Kafka ingest: records in the partition after the last one made durable here",
            m.kafka.consumer_lag.clone(),
        );
        r.register_with_unit(
            "kafka_consumer_lag",
            "Kafka ingest: age of the oldest fetched record not yet durable (by its Kafka timestamp); 0 when caught up",
            Unit::Seconds,
            m.kafka.consumer_lag_seconds.clone(),
        );
        r.register(
            "kafka_ingest_records",
            "Kafka ingest: records handled, by result (applied, rejected, dead_lettered)",
            m.kafka.ingest_records.clone(),
        );
        r.register(
            "kafka_ingest_paused",
            "Kafka ingest: times a partition was paused, by reason (overloaded, queue_full)",
            m.kafka.ingest_paused.clone(),
        );
        r.register(
            "kafka_ingest_overloaded",
            "Kafka ingest: proposals refused as overloaded (each followed by a back-off and a retry)",
            m.kafka.ingest_overloaded.clone(),
        );
        r.register(
            "kafka_egress_published",
            "Kafka egress: records this replica published",
            m.kafka.egress_published.clone(),
        );
        r.register(
            "kafka_egress_holder",
            "Kafka egress: 1 while this replica holds the egress lease",
            m.kafka.egress_holder.clone(),
        );
        r.register(
            "kafka_egress_generation",
            "Kafka egress: the lease generation this replica publishes under (0: none)",
            m.kafka.egress_generation.clone(),
        );
        r.register_collector(Box::new(ScrapeTime {
            wal,
            peers,
            control,
        }));
        Metrics {
            registry: Arc::new(r),
            ..m
        }
    }

    /// The Kafka metric handles (for `synod-kafka`).
    pub fn kafka(&self) -> KafkaMetrics {
        self.kafka.clone()
    }

    /// The registry in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut s, &self.registry)
            .expect("writing to a String cannot fail");
        s
    }

    /// The loop accepted a proposal (it now waits for its outcome).
    pub fn proposal_accepted(&self) {
        self.proposals.inc();
    }

    /// A proposal's outcome was replied `latency` after it entered the
    /// loop's queue.
    pub fn commit_replied(&self, latency: Duration) {
        self.commit_latency.observe(latency.as_secs_f64());
    }

    /// A proposal was answered without an outcome.
    pub fn rejected(&self, why: Rejection) {
        self.rejected.get_or_create(&why.labels()).inc();
    }

    /// A subscription opened: its lag gauge, removed when it is dropped.
    pub fn subscriber(&self) -> SubscriberLag {
        let n = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        self.subscribers.inc();
        let labels = [("subscriber", n.to_string())];
        // The series' handle shares its value with the registry, so
        // updates need no family lookup.
        let lag = self.subscriber_lag.get_or_create(&labels).clone();
        SubscriberLag {
            metrics: self.clone(),
            labels,
            lag,
        }
    }

    /// An instance executed `after` its commit was released here.
    pub fn executed_after(&self, after: Duration) {
        self.execute_latency.observe(after.as_secs_f64());
    }

    /// `n` commands were applied to the state machine.
    pub fn executed(&self, n: u64) {
        self.executed.inc_by(n);
    }

    /// Copies the loop's state. Call from one task only (the loop): the
    /// counters are advanced to the cumulative stats by their difference.
    pub fn refresh(&self, s: &LoopState) {
        advance_to(&self.slow_path, s.slow_paths);
        advance_to(&self.recoveries, s.recoveries);
        advance_to(&self.nops, s.nops);
        advance_to(&self.instances_submitted, s.submitted);
        advance_to(&self.dependency_ids_listed, s.deps_listed);
        self.oldest_unexecuted_age
            .set(s.oldest_unexecuted.map_or(0.0, |d| d.as_secs_f64()));
        let own = s.fast_commits + s.slow_paths;
        if own > 0 {
            self.fast_path_success_ratio
                .set(s.fast_commits as f64 / own as f64);
        }
        self.pending_execution.set(gauge(s.pending_execution));
        self.in_flight_instances.set(gauge(s.in_flight));
        self.waiting_proposals.set(gauge(s.waiting_proposals));
        self.wal_unsynced_records.set(gauge(s.wal_unsynced_records));
    }
}

/// One open subscription's `synod_subscriber_lag` series; dropping it
/// removes the series and decrements `synod_subscribers`.
#[derive(Debug)]
pub struct SubscriberLag {
    metrics: Metrics,
    labels: [(&'static str, String); 1],
    lag: Gauge,
}

impl SubscriberLag {
    /// Executed instances this subscriber has not been sent yet.
    pub fn set(&self, lag: u64) {
        self.lag.set(gauge(lag));
    }
}

impl Drop for SubscriberLag {
    fn drop(&mut self) {
        self.metrics.subscribers.dec();
        self.metrics.subscriber_lag.remove(&self.labels);
    }
}

/// Advances a counter to the cumulative `total` (single writer).
fn advance_to(c: &Counter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The metrics read at scrape time from sources that any thread may read.
struct ScrapeTime {
    wal: WalStatsFn,
    peers: PeersFn,
    control: ControlFn,
}

impl std::fmt::Debug for ScrapeTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrapeTime { wal, peers, control }")
    }
}

impl Collector for ScrapeTime {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(w) = (self.wal)() {
            counter(
                &mut enc,
                "synod_wal_fsyncs",
                "fdatasyncs of WAL segment data.",
                None,
                ConstCounter::new(w.fsyncs_total),
            )?;
            counter(
                &mut enc,
                "synod_wal_records",
                "WAL records made durable.",
                None,
                ConstCounter::new(w.records_total),
            )?;
            counter(
                &mut enc,
                "synod_wal_fsync",
                "Time spent inside WAL fdatasyncs.",
                Some(&Unit::Seconds),
                ConstCounter::new(w.fsync_time_ns_total as f64 / 1e9),
            )?;
        }
        let c = (self.control)();
        for (name, help, v) in [
            (
                "raft_term",
                "The control plane's Raft term at this replica.",
                c.term,
            ),
            (
                "raft_is_leader",
                "1 if this replica leads the control plane's Raft group.",
                u64::from(c.is_leader),
            ),
            (
                "raft_commit_index",
                "The control plane's Raft log index committed and applied here.",
                c.commit_index,
            ),
            (
                "synod_epoch",
                "The newest EPaxos* epoch (configuration) in the control state.",
                c.epoch,
            ),
        ] {
            ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
                .encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        let peers = (self.peers)();
        let mut m = enc.encode_descriptor(
            "synod_peer_connected",
            "1 if this replica's outbound connection to the peer is up (handshake done).",
            None,
            MetricType::Gauge,
        )?;
        for (peer, up) in peers {
            let labels = [("peer", peer.to_string())];
            ConstGauge::new(i64::from(up)).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

fn counter<N>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    c: ConstCounter<N>,
) -> Result<(), std::fmt::Error>
where
    ConstCounter<N>: EncodeMetric,
{
    c.encode(enc.encode_descriptor(name, help, unit, c.metric_type())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake() -> Metrics {
        Metrics::new(
            Box::new(|| {
                Some(WalStats {
                    fsyncs_total: 7,
                    records_total: 70,
                    fsync_time_ns_total: 1_500_000_000,
                    ..WalStats::default()
                })
            }),
            Box::new(|| vec![(2, true), (3, false)]),
            Box::new(|| ControlGauges {
                term: 4,
                is_leader: true,
                commit_index: 17,
                epoch: 2,
            }),
        )
    }

    /// The value of the sample `series` (name and labels, exactly as
    /// encoded); panics if it is absent.
    fn sample(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
            .parse()
            .expect("a number")
    }

    #[test]
    fn encodes_every_metric_name() {
        let m = fake();
        let kafka = m.kafka();
        let partition = [("topic", "t".to_string()), ("partition", "0".to_string())];
        kafka.consumer_lag.get_or_create(&partition).set(3);
        kafka
            .consumer_lag_seconds
            .get_or_create(&partition)
            .set(0.5);
        kafka
            .ingest_paused
            .get_or_create(&[("reason", "overloaded")])
            .inc();
        let text = m.encode();
        for series in [
            "epaxos_proposals_total",
            "epaxos_fast_path_success_ratio",
            "synod_commit_latency_seconds_count",
            "synod_commit_latency_seconds_sum",
            "synod_slow_path_total",
            "synod_recoveries_total",
            "synod_nops_total",
            "synod_wal_fsyncs_total",
            "synod_wal_records_total",
            "synod_wal_fsync_seconds_total",
            "synod_pending_execution",
            "synod_in_flight_instances",
            "synod_waiting_proposals",
            "synod_wal_unsynced_records",
            "synod_proposals_rejected_total{reason=\"overloaded\"}",
            "synod_proposals_rejected_total{reason=\"aborted\"}",
            "synod_proposals_rejected_total{reason=\"shutting_down\"}",
            "synod_proposals_rejected_total{reason=\"invalid\"}",
            "synod_proposals_rejected_total{reason=\"timeout\"}",
            "synod_executed_total",
            "synod_execute_latency_seconds_count",
            "synod_oldest_unexecuted_age_seconds",
            "raft_term",
            "raft_is_leader",
            "raft_commit_index",
            "synod_epoch",
            "synod_instances_submitted_total",
            "synod_dependency_ids_listed_total",
            "synod_peer_connected{peer=\"2\"}",
            "synod_peer_connected{peer=\"3\"}",
            "kafka_ingest_paused_total{reason=\"overloaded\"}",
            "kafka_egress_published_total",
            "kafka_ingest_overloaded_total",
            "kafka_egress_holder",
            "kafka_egress_generation",
            "kafka_consumer_lag{topic=\"t\",partition=\"0\"}",
            "kafka_consumer_lag_seconds{topic=\"t\",partition=\"0\"}",
        ] {
            let _ = sample(&text, series);
        }
        assert!(
            text.contains(&format!(
                "synod_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert_eq!(sample(&text, "raft_term"), 4.0);
        assert_eq!(sample(&text, "raft_is_leader"), 1.0);
        assert_eq!(sample(&text, "raft_commit_index"), 17.0);
        assert_eq!(sample(&text, "synod_epoch"), 2.0);
        assert!(text.ends_with("# EOF\n"), "{text}");
        // No `_total_total`, no unit twice.
        assert!(!text.contains("_total_total"), "{text}");
        assert!(!text.contains("_seconds_seconds"), "{text}");
    }

    #[test]
    fn scrape_time_sources_are_read_at_each_scrape() {
        let text = fake().encode();
        assert_eq!(sample(&text, "synod_wal_fsyncs_total"), 7.0);
        assert_eq!(sample(&text, "synod_wal_records_total"), 70.0);
        assert_eq!(sample(&text, "synod_wal_fsync_seconds_total"), 1.5);
        assert_eq!(sample(&text, "synod_peer_connected{peer=\"2\"}"), 1.0);
        assert_eq!(sample(&text, "synod_peer_connected{peer=\"3\"}"), 0.0);
        // A closed WAL leaves its series out instead of failing the scrape.
        let gone = Metrics::new(
            Box::new(|| None),
            Box::new(Vec::new),
            Box::new(ControlGauges::default),
        )
        .encode();
        assert!(!gone.contains("synod_wal_fsyncs"), "{gone}");
        assert!(gone.contains("synod_executed_total 0"), "{gone}");
    }

    #[test]
    fn recording_functions_move_their_metrics() {
        let m = fake();
        m.proposal_accepted();
        m.proposal_accepted();
        m.executed(5);
        m.rejected(Rejection::Timeout);
        m.rejected(Rejection::Timeout);
        m.rejected(Rejection::ShuttingDown);
        m.commit_replied(Duration::from_micros(300));
        m.commit_replied(Duration::from_secs(20));
        let t = m.encode();
        assert_eq!(sample(&t, "epaxos_proposals_total"), 2.0);
        assert_eq!(sample(&t, "synod_executed_total"), 5.0);
        let rej = |r: &str| {
            sample(
                &t,
                &format!("synod_proposals_rejected_total{{reason=\"{r}\"}}"),
            )
        };
        assert_eq!(rej("timeout"), 2.0);
        assert_eq!(rej("shutting_down"), 1.0);
        assert_eq!(rej("overloaded"), 0.0);
        assert_eq!(sample(&t, "synod_commit_latency_seconds_count"), 2.0);
        // 300 µs falls in the 500 µs bucket, not the 250 µs one; 20 s only
        // in +Inf.
        let bucket = |le: &str| {
            sample(
                &t,
                &format!("synod_commit_latency_seconds_bucket{{le=\"{le}\"}}"),
            )
        };
        assert_eq!(bucket("0.00025"), 0.0);
        assert_eq!(bucket("0.0005"), 1.0);
        assert_eq!(bucket("10.0"), 1.0);
        assert_eq!(bucket("+Inf"), 2.0);
    }

    #[test]
    fn refresh_tracks_cumulative_stats_and_gauges() {
        let m = fake();
        assert!(sample(&m.encode(), "epaxos_fast_path_success_ratio").is_nan());
        let mut s = LoopState {
            fast_commits: 3,
            slow_paths: 1,
            recoveries: 2,
            nops: 1,
            pending_execution: 4,
            oldest_unexecuted: Some(Duration::from_millis(250)),
            deps_listed: 12,
            submitted: 4,
            in_flight: 5,
            waiting_proposals: 6,
            wal_unsynced_records: 7,
        };
        m.refresh(&s);
        m.refresh(&s); // idempotent: counters equal the stats, not twice them
        let t = m.encode();
        assert_eq!(sample(&t, "epaxos_fast_path_success_ratio"), 0.75);
        assert_eq!(sample(&t, "synod_slow_path_total"), 1.0);
        assert_eq!(sample(&t, "synod_recoveries_total"), 2.0);
        assert_eq!(sample(&t, "synod_nops_total"), 1.0);
        assert_eq!(sample(&t, "synod_pending_execution"), 4.0);
        assert_eq!(sample(&t, "synod_in_flight_instances"), 5.0);
        assert_eq!(sample(&t, "synod_waiting_proposals"), 6.0);
        assert_eq!(sample(&t, "synod_wal_unsynced_records"), 7.0);
        assert_eq!(sample(&t, "synod_oldest_unexecuted_age_seconds"), 0.25);
        assert_eq!(sample(&t, "synod_instances_submitted_total"), 4.0);
        assert_eq!(sample(&t, "synod_dependency_ids_listed_total"), 12.0);
        s.recoveries = 10;
        s.pending_execution = 0;
        s.oldest_unexecuted = None;
        m.refresh(&s);
        let t = m.encode();
        assert_eq!(sample(&t, "synod_recoveries_total"), 10.0);
        assert_eq!(sample(&t, "synod_pending_execution"), 0.0);
        assert_eq!(sample(&t, "synod_oldest_unexecuted_age_seconds"), 0.0);
        {
            let a = m.subscriber();
            let _b = m.subscriber();
            a.set(42);
            let t = m.encode();
            assert_eq!(sample(&t, "synod_subscribers"), 2.0);
            assert_eq!(sample(&t, "synod_subscriber_lag{subscriber=\"0\"}"), 42.0);
            assert_eq!(sample(&t, "synod_subscriber_lag{subscriber=\"1\"}"), 0.0);
        }
        let t = m.encode();
        assert_eq!(sample(&t, "synod_subscribers"), 0.0);
        assert!(
            !t.contains("synod_subscriber_lag{"),
            "closed subscriptions leave no series"
        );
        m.executed_after(Duration::from_millis(3));
        let t = m.encode();
        assert_eq!(sample(&t, "synod_execute_latency_seconds_count"), 1.0);
    }
}
