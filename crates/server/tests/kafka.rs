//! Kafka ingest and egress of a real 3-replica cluster (kafka.md §1–2),
//! checked like Jepsen checks a queue (quality bar R8): every proposal
//! record applied exactly once, every executed decision in the committed
//! topic (no loss), duplicates only as republished records with the same
//! decision id (dropped by id, none applied twice), per-key order in the
//! topic equal to the execution order, offsets increasing, each key in one
//! partition; across kill -9 of the publisher and, against a real broker
//! process, of the broker.
//!
//! Brokers: librdkafka's mock cluster (in this process, real TCP ports,
//! with transactions) and tansu (`synod_kafka::testkit`, a separate
//! process with sqlite storage, without transactions).
//!
//! Ports 29900–29999.

mod cluster;

use cluster::Cluster;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};
use synod_client::wire::LogEntry;
use synod_kafka::egress::{EgressRecord, HEADER_DECISION_ID, HEADER_GENERATION};
use synod_kafka::ingest::{idempotency_client, HEADER_DLQ_REASON, HEADER_DLQ_SOURCE};

const PROPOSALS: &str = "engine.proposals";
const COMMITTED: &str = "engine.committed";
const DLQ: &str = "engine.proposals.dlq";
/// Partitions of the proposals and committed topics: two per replica, so
/// that one replica proposes for two partitions at once and, with
/// `max_waiting_proposals = 1`, is overloaded now and then.
const PARTITIONS: i32 = 6;
/// Keys the proposals write; few, so that each key sees many decisions
/// and the per-key order check has something to check.
const KEYS: u64 = 6;
/// How long the cluster may take to drain everything produced.
const DRAIN: Duration = Duration::from_secs(90);

fn section(brokers: &str, transactions: bool) -> String {
    format!(
        r#"
[limits]
# Two partitions per replica propose at once: overload happens, and ingest
# must pause and retry rather than spin or drop.
max_waiting_proposals = 1

[kafka]
brokers = "{brokers}"

[kafka.properties]
"topic.metadata.refresh.interval.ms" = "1000"
# A killed replica's partitions move after the session timeout; the
# default (45 s) would dominate the test.
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[kafka.ingest]
topic = "{PROPOSALS}"
dead_letter_topic = "{DLQ}"
# Small, so that the first burst fills it and pauses partitions.
partition_queue_max = 4

[kafka.egress]
topic = "{COMMITTED}"
transactions = {transactions}
batch_max = 64
"#
    )
}

fn base(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// The proposal of record `i`: a stock level on key `k/(i % KEYS)`.
fn proposal(i: u64) -> String {
    format!(
        r#"{{"ops":[{{"SetStock":{{"key":"k/{}","qty":{i}}}}}]}}"#,
        i % KEYS
    )
}

fn key_of(i: u64) -> String {
    format!("p-{i}")
}

/// Produces proposals `range` (idempotent producer, acks=all), each
/// acknowledged before this returns.
fn produce(brokers: &str, range: std::ops::Range<u64>) {
    let p = synod_kafka::producer::create(base(brokers), None).unwrap();
    let pending: Vec<_> = range
        .map(|i| send(&p, PROPOSALS, &key_of(i), &proposal(i)))
        .collect();
    for x in pending {
        x.wait(Duration::from_secs(60)).unwrap();
    }
}

fn produce_raw(brokers: &str, topic: &str, key: &str, value: &str) {
    let p = synod_kafka::producer::create(base(brokers), None).unwrap();
    send(&p, topic, key, value)
        .wait(Duration::from_secs(60))
        .unwrap();
}

fn send(
    p: &synod_kafka::producer::Producer,
    topic: &str,
    key: &str,
    value: &str,
) -> synod_kafka::producer::Pending {
    synod_kafka::producer::send(
        p,
        topic,
        Some(key.as_bytes()),
        Some(value.as_bytes()),
        OwnedHeaders::new(),
    )
    .unwrap()
}

/// One record read back from a topic.
#[derive(Clone, Debug)]
struct Read {
    partition: i32,
    offset: i64,
    key: String,
    headers: BTreeMap<String, String>,
    value: Vec<u8>,
}

/// Everything in `topic` now (read_committed), from the beginning.
fn read_all(brokers: &str, topic: &str) -> Vec<Read> {
    let mut c = base(brokers);
    c.set("group.id", "synod-test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer = c.create().unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut at_end = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while at_end.len() < parts.len() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Read {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    headers,
                    value: m.payload().unwrap_or_default().to_vec(),
                });
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => eprintln!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// The applied decisions of one replica's log, keyed by decision id
/// (`<instance>/<index>`), and per user key the ids in execution order.
fn executed(log: &[LogEntry]) -> (BTreeSet<String>, BTreeMap<String, Vec<String>>) {
    let mut ids = BTreeSet::new();
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in log {
        for (i, c) in e.commands.iter().enumerate() {
            if c.duplicate || c.client == synod_decision::READ_ONLY_CLIENT {
                continue;
            }
            let id = format!("{}/{i}", e.instance);
            for k in c.keys.iter().filter(|k| !k.starts_with('\0')) {
                per_key.entry(k.clone()).or_default().push(id.clone());
            }
            ids.insert(id);
        }
    }
    (ids, per_key)
}

/// Applied commands per session in one replica's log.
fn applied_per_client(log: &[LogEntry]) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for e in log {
        for c in e.commands.iter().filter(|c| c.applied) {
            *m.entry(c.client).or_default() += 1;
        }
    }
    m
}

/// Waits until replica `id` has applied every proposal `0..n`.
fn wait_applied(c: &Cluster, id: u16, n: u64) -> Vec<LogEntry> {
    let deadline = Instant::now() + DRAIN;
    loop {
        let log = c.log(id);
        let applied = applied_per_client(&log);
        let missing = (0..n)
            .filter(|i| !applied.contains_key(&idempotency_client(key_of(*i).as_bytes())))
            .count();
        if missing == 0 {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "node {id}: {missing} of {n} proposal records not applied within {DRAIN:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// The queue check. `log` is a complete execution log of one replica
/// (never restarted, or replayed from its WAL), `n` the number of proposal
/// records produced (keys `p-0..n`, some produced twice). Returns how many
/// records were republished duplicates.
fn check_queue(log: &[LogEntry], topic: &[Read], n: u64) -> usize {
    // Ingest: every proposal record applied exactly once.
    let applied = applied_per_client(log);
    for i in 0..n {
        let client = idempotency_client(key_of(i).as_bytes());
        assert_eq!(
            applied.get(&client).copied().unwrap_or(0),
            1,
            "proposal record {} applied {} times",
            key_of(i),
            applied.get(&client).copied().unwrap_or(0)
        );
    }
    // Offsets increase per partition, and a key stays in one partition.
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    let mut partition_of: BTreeMap<&str, i32> = BTreeMap::new();
    for r in topic {
        let prev = last.insert(r.partition, r.offset);
        assert!(
            prev.is_none_or(|p| p < r.offset),
            "partition {}: offset {} after {prev:?}",
            r.partition,
            r.offset
        );
        let p = *partition_of.entry(&r.key).or_insert(r.partition);
        assert_eq!(p, r.partition, "key {} in two partitions", r.key);
    }
    // De-duplicate by decision id, keeping the first copy; a duplicate
    // must be the same decision.
    let mut first: BTreeMap<(String, String), EgressRecord> = BTreeMap::new();
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut duplicates = 0;
    for r in topic {
        let id = r
            .headers
            .get(HEADER_DECISION_ID)
            .expect("decision id header");
        assert!(r.headers.contains_key(HEADER_GENERATION));
        let rec: EgressRecord = serde_json::from_slice(&r.value).expect("record value");
        assert_eq!(&rec.id, id);
        assert_eq!(rec.key, r.key);
        match first.entry((id.clone(), r.key.clone())) {
            std::collections::btree_map::Entry::Occupied(o) => {
                duplicates += 1;
                let mut a = o.get().clone();
                a.generation = rec.generation;
                assert_eq!(a, rec, "two different records share the id {id}");
            }
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(rec);
                per_key.entry(r.key.clone()).or_default().push(id.clone());
            }
        }
    }
    // No loss, and per-key order is the execution order.
    let (ids, exec_per_key) = executed(log);
    let published: BTreeSet<&String> = first.keys().map(|(id, _)| id).collect();
    let lost: Vec<&String> = ids.iter().filter(|id| !published.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} executed decisions never published: {lost:?}",
        lost.len()
    );
    let invented: Vec<&&String> = published.iter().filter(|id| !ids.contains(**id)).collect();
    assert!(
        invented.is_empty(),
        "published but never executed: {invented:?}"
    );
    for (k, seq) in &exec_per_key {
        assert_eq!(
            per_key.get(k),
            Some(seq),
            "key {k}: the topic's order differs from the execution order"
        );
    }
    duplicates
}

/// Waits until the committed topic holds every decision `log` executed.
fn wait_published(brokers: &str, log: &[LogEntry]) -> Vec<Read> {
    let (ids, _) = executed(log);
    let deadline = Instant::now() + DRAIN;
    loop {
        let topic = read_all(brokers, COMMITTED);
        let have: BTreeSet<&str> = topic
            .iter()
            .filter_map(|r| r.headers.get(HEADER_DECISION_ID).map(String::as_str))
            .collect();
        let missing = ids.iter().filter(|id| !have.contains(id.as_str())).count();
        if missing == 0 {
            return topic;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} executed decisions not published within {DRAIN:?}",
            ids.len()
        );
        thread::sleep(Duration::from_millis(500));
    }
}

fn scrape(addr: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut all = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut all);
    all
}

/// The sum of every sample of `metric` (all label sets).
fn metric_sum(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(metric)
                && (l[metric.len()..].starts_with(' ') || l[metric.len()..].starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The replica that holds the egress lease, waiting for one.
fn holder(base: u16) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for id in 0..3 {
            if metric_sum(&scrape(&cluster::api_addr(base, id)), "kafka_egress_holder") == 1.0 {
                return id;
            }
        }
        assert!(Instant::now() < deadline, "no egress holder within 30 s");
        thread::sleep(Duration::from_millis(100));
    }
}

fn dead_letters(brokers: &str) -> Vec<Read> {
    read_all(brokers, DLQ)
}

#[test]
fn mock_cluster_ingest_and_transactional_egress_survive_a_publisher_kill() {
    let mock = MockCluster::new(3).unwrap();
    let brokers = mock.bootstrap_servers();
    for t in [PROPOSALS, COMMITTED] {
        mock.create_topic(t, PARTITIONS, 3).unwrap();
    }
    mock.create_topic(DLQ, 1, 3).unwrap();

    // A burst before the cluster starts: the first fetch fills the small
    // partition queues, so partitions must pause and resume.
    produce(&brokers, 0..150);
    // Redelivery: the same records again (same keys).
    produce(&brokers, 0..20);
    produce_raw(&brokers, PROPOSALS, "bad-json", "{not json");
    produce_raw(&brokers, PROPOSALS, "bad-decision", r#"{"ops":[]}"#);

    let t0 = Instant::now();
    let mut c = Cluster::new("kafka-mock", 3, 29900, &section(&brokers, true));
    c.start_all();
    c.wait_ready(Duration::from_secs(30));
    wait_applied(&c, 0, 150);
    eprintln!("mock: 150 records applied after {:?}", t0.elapsed());

    // kill -9 the publisher while more proposals arrive.
    let h = holder(29900);
    c.kill(h);
    produce(&brokers, 150..300);
    thread::sleep(Duration::from_secs(1));
    c.start(h);
    c.wait_ready(Duration::from_secs(30));
    let survivor = (h + 1) % 3;
    let log = wait_applied(&c, survivor, 300);
    eprintln!("mock: 300 records applied after {:?}", t0.elapsed());
    let topic = wait_published(&brokers, &log);
    eprintln!("mock: all published after {:?}", t0.elapsed());
    let dups = check_queue(&log, &topic, 300);
    eprintln!(
        "mock: {} records in {COMMITTED}, {dups} republished duplicates dropped by id",
        topic.len()
    );

    // Dead letters: both bad records, with their reason and source.
    let dl = dead_letters(&brokers);
    let keys: BTreeSet<&str> = dl.iter().map(|r| r.key.as_str()).collect();
    assert!(
        keys.contains("bad-json") && keys.contains("bad-decision"),
        "{dl:?}"
    );
    for r in &dl {
        assert!(!r.headers[HEADER_DLQ_REASON].is_empty());
        assert!(r.headers[HEADER_DLQ_SOURCE].starts_with(PROPOSALS));
    }
    let bad = dl.iter().find(|r| r.key == "bad-decision").unwrap();
    assert!(bad.headers[HEADER_DLQ_REASON].contains("ops"), "{bad:?}");

    // Back-pressure paused partitions; lag drains to 0.
    let texts: Vec<String> = (0..3)
        .map(|i| scrape(&cluster::api_addr(29900, i)))
        .collect();
    let paused = |reason: &str| -> f64 {
        texts
            .iter()
            .map(|t| {
                metric_sum(
                    t,
                    &format!("kafka_ingest_paused_total{{reason=\"{reason}\"}}"),
                )
            })
            .sum()
    };
    let overloaded: f64 = texts
        .iter()
        .map(|t| metric_sum(t, "kafka_ingest_overloaded_total"))
        .sum();
    eprintln!(
        "mock: partitions paused {} times on overload, {} times on a full queue; {overloaded} proposals refused as overloaded",
        paused("overloaded"),
        paused("queue_full")
    );
    assert!(
        paused("queue_full") > 0.0,
        "no partition was paused on a full queue"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let lag: f64 = (0..3)
            .map(|i| metric_sum(&scrape(&cluster::api_addr(29900, i)), "kafka_consumer_lag"))
            .sum();
        let seen =
            (0..3).any(|i| scrape(&cluster::api_addr(29900, i)).contains("kafka_consumer_lag{"));
        if seen && lag == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "consumer lag stayed at {lag} (seen: {seen})"
        );
        thread::sleep(Duration::from_millis(300));
    }
}

/// The queue check must be able to fail: fed a log and a topic with a lost
/// record, a swapped per-key order, or a record applied twice, it panics.
#[test]
fn the_queue_check_catches_loss_reordering_and_double_application() {
    use synod_client::wire::LogCommand;
    use synod_types::CmdId;
    let client = |i: u64| idempotency_client(key_of(i).as_bytes());
    let entry = |seq: u64, i: u64| LogEntry {
        index: seq,
        instance: CmdId {
            epoch: 0,
            seq,
            origin: 0,
        },
        commands: vec![LogCommand {
            client: client(i),
            request: 1,
            keys: vec!["k/0".into(), format!("\0session/{}", client(i))],
            applied: true,
            duplicate: false,
            decision: None,
            outcome: None,
        }],
    };
    let log: Vec<LogEntry> = (0..3).map(|i| entry(i, i)).collect();
    let read = |offset: i64, e: &LogEntry| {
        let id = format!("{}/0", e.instance);
        let rec = EgressRecord {
            id: id.clone(),
            key: "k/0".into(),
            keys: vec!["k/0".into()],
            client: e.commands[0].client,
            request: 1,
            applied: true,
            decision: None,
            outcome: None,
            generation: 1,
        };
        Read {
            partition: 0,
            offset,
            key: "k/0".into(),
            headers: [
                (HEADER_DECISION_ID.to_string(), id),
                (HEADER_GENERATION.to_string(), "1".to_string()),
            ]
            .into(),
            value: serde_json::to_vec(&rec).unwrap(),
        }
    };
    let good: Vec<Read> = log
        .iter()
        .enumerate()
        .map(|(o, e)| read(o as i64, e))
        .collect();
    // With a republished duplicate it passes and counts it.
    let mut dup = good.clone();
    dup.push(read(3, &log[1]));
    assert_eq!(check_queue(&log, &dup, 3), 1);
    let fails = |log: &[LogEntry], topic: &[Read]| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check_queue(log, topic, 3)))
            .is_err()
    };
    assert!(fails(&log, &good[..2]), "a lost record must fail");
    let mut swapped = good.clone();
    swapped.swap(0, 1);
    swapped[0].offset = 0;
    swapped[1].offset = 1;
    assert!(fails(&log, &swapped), "a per-key reordering must fail");
    let mut twice = log.clone();
    twice.push(entry(3, 0));
    let mut topic = good.clone();
    topic.push(read(3, &twice[3]));
    assert!(fails(&twice, &topic), "a record applied twice must fail");
}

/// The same queue check against a real broker process (tansu, sqlite
/// storage, no transactions), killed with SIGKILL and restarted, and the
/// publisher killed after it.
#[test]
fn tansu_ingest_and_egress_survive_kill9_of_the_broker_and_the_publisher() {
    let Some(bin) = synod_kafka::testkit::tansu_or_skip() else {
        return;
    };
    const BASE: u16 = 29930;
    let dir = std::env::temp_dir().join(format!("synod-test-tansu-egress-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut broker = synod_kafka::testkit::Tansu::start(&bin, &dir, 29960).unwrap();
    let brokers = broker.bootstrap();
    for t in [PROPOSALS, COMMITTED] {
        broker.create_topic(t, PARTITIONS).unwrap();
    }
    broker.create_topic(DLQ, 1).unwrap();

    produce(&brokers, 0..100);
    let t0 = Instant::now();
    let mut c = Cluster::new("kafka-tansu", 3, BASE, &section(&brokers, false));
    c.start_all();
    c.wait_ready(Duration::from_secs(30));
    wait_applied(&c, 0, 50);
    eprintln!("tansu: first records applied after {:?}", t0.elapsed());

    // kill -9 the broker in the middle of ingest and egress.
    broker.kill9();
    thread::sleep(Duration::from_secs(2));
    broker.restart().unwrap();
    produce(&brokers, 100..200);
    let h = holder(BASE);
    let survivor = (h + 1) % 3;
    wait_applied(&c, survivor, 200);
    eprintln!("tansu: 200 records applied after {:?}", t0.elapsed());
    // Then kill -9 the publisher. Everything is ingested by now: tansu
    // 0.6's consumer group was seen to leave a killed consumer's partition
    // unassigned for the rest of a test (README, note), so ingest across a
    // replica kill is checked on the mock cluster only.
    c.kill(h);
    thread::sleep(Duration::from_secs(1));
    c.start(h);
    c.wait_ready(Duration::from_secs(30));
    let log = c.log(survivor);
    let topic = wait_published(&brokers, &log);
    let dups = check_queue(&log, &topic, 200);
    eprintln!(
        "tansu: {} records in {COMMITTED} after {:?}, {dups} republished duplicates dropped by id",
        topic.len(),
        t0.elapsed()
    );
    drop(c);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
