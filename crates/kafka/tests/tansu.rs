//! What tansu 0.6.0, a real Kafka-compatible broker process, supports when
//! driven by rdkafka 0.39 (kafka.md §4; findings summarised in
//! `synod_kafka::testkit`'s docs). Every test asserts real behaviour, the
//! unsupported features included, so that a tansu upgrade that changes any
//! of it is noticed.
//!
//! Each test runs its own broker on its own port, in 29700..=29799, so the
//! tests can run in parallel (nextest runs each in its own process).
//! Without tansu installed they print "skipped" and pass, unless
//! `REQUIRE_TANSU=1` (as `scripts/test.sh` sets it).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, CommitMode, Consumer as _},
    error::KafkaError,
    producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext},
    types::RDKafkaErrorCode,
    ClientContext, Message as _, Offset, TopicPartitionList,
};
use synod_kafka::testkit::{tansu_or_skip, Tansu};

/// The ports of these tests (the range reserved for them is 29700..=29799).
const PORT_TOPICS: u16 = 29700;
const PORT_IDEMPOTENT: u16 = 29701;
const PORT_GROUP: u16 = 29702;
const PORT_KILL9: u16 = 29703;
const PORT_TXN: u16 = 29704;
const PORT_FENCE: u16 = 29705;

/// Upper bound for the producer to get every delivery report, and for a
/// consumer to read what a test expects: a local broker needs milliseconds
/// per record; the margin covers a loaded 2-core machine (and a consumer
/// group's first join), while a hang still fails within a minute.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// One `poll` of a consumer or producer; short, the loops re-poll until
/// [`IO_TIMEOUT`].
const POLL: Duration = Duration::from_millis(100);

/// Timeout of a synchronous request (metadata, watermarks, committed
/// offsets, transaction calls) to the local broker.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A test's broker and its directory. The fields drop in order: the broker
/// is killed before its directory is removed (with a tuple binding the
/// directory would go first, taking the log a failing test prints).
struct Broker {
    tansu: Tansu,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Broker {
    type Target = Tansu;
    fn deref(&self) -> &Tansu {
        &self.tansu
    }
}

impl std::ops::DerefMut for Broker {
    fn deref_mut(&mut self) -> &mut Tansu {
        &mut self.tansu
    }
}

/// Starts a broker on `port` in a fresh directory, or `None` if tansu is
/// not installed (and not required).
fn broker(port: u16) -> Option<Broker> {
    let bin = tansu_or_skip()?;
    let dir = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let tansu = Tansu::start(&bin, dir.path(), port).expect("start tansu");
    eprintln!("tansu on port {port} ready in {:?}", started.elapsed());
    Some(Broker { tansu, _dir: dir })
}

/// One delivery report: `Ok((partition, offset, key))` or `Err(error)`.
type Delivery = Result<(i32, i64, String), String>;

/// A producer context that records every delivery report.
#[derive(Default, Clone)]
struct Deliveries(Arc<Mutex<Vec<Delivery>>>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let report = match result {
            Ok(m) => Ok((
                m.partition(),
                m.offset(),
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
            )),
            Err((e, _)) => Err(e.to_string()),
        };
        self.0.lock().unwrap().push(report);
    }
}

/// An idempotent, `acks=all` producer (the settings kafka.md §3 requires),
/// with its delivery reports.
fn idempotent_producer(tansu: &Tansu) -> (BaseProducer<Deliveries>, Deliveries) {
    let deliveries = Deliveries::default();
    let producer = tansu
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create_with_context(deliveries.clone())
        .expect("producer");
    (producer, deliveries)
}

/// Sends `count` records `key-i`/`value-i` (i from `first`) to partition 0
/// of `topic`, and waits until all are acknowledged; returns their offsets,
/// in order of acknowledgement.
fn produce_acked(tansu: &Tansu, topic: &str, first: usize, count: usize) -> Vec<i64> {
    let (producer, deliveries) = idempotent_producer(tansu);
    for i in first..first + count {
        let (key, value) = (format!("key-{i}"), format!("value-{i}"));
        producer
            .send(BaseRecord::to(topic).partition(0).key(&key).payload(&value))
            .map_err(|(e, _)| e)
            .expect("enqueue record");
    }
    producer.flush(IO_TIMEOUT).expect("flush");
    let reports = deliveries.0.lock().unwrap().clone();
    assert_eq!(reports.len(), count, "one delivery report per record");
    reports
        .into_iter()
        .enumerate()
        .map(|(n, report)| {
            let (partition, offset, key) = report.expect("record acknowledged");
            assert_eq!(partition, 0);
            assert_eq!(
                key,
                format!("key-{}", first + n),
                "acknowledged in send order"
            );
            offset
        })
        .collect()
}

/// Reads partition 0 of `topic` from offset `from` until `count` records
/// have arrived (or [`IO_TIMEOUT`]); returns (offset, key, value).
fn read(tansu: &Tansu, topic: &str, from: i64, count: usize) -> Vec<(i64, String, String)> {
    let consumer: BaseConsumer = tansu
        .client_config()
        .set("group.id", "synod-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(from))
        .unwrap();
    consumer.assign(&tpl).expect("assign");
    poll_records(&consumer, count)
}

/// Polls `consumer` until `count` records have arrived (or [`IO_TIMEOUT`]).
fn poll_records(consumer: &BaseConsumer, count: usize) -> Vec<(i64, String, String)> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut out = Vec::new();
    while out.len() < count && Instant::now() < deadline {
        match consumer.poll(POLL) {
            Some(Ok(m)) => out.push((
                m.offset(),
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(e)) => panic!("consume: {e}"),
            None => {}
        }
    }
    out
}

/// The records `produce_acked(first, count)` wrote, at offsets from `offset`.
fn expected(offset: i64, first: usize, count: usize) -> Vec<(i64, String, String)> {
    (0..count)
        .map(|n| {
            (
                offset + n as i64,
                format!("key-{}", first + n),
                format!("value-{}", first + n),
            )
        })
        .collect()
}

/// A consumer of `group` with manual commits, reading from the start when
/// the group has no committed offset.
fn group_consumer(tansu: &Tansu, group: &str) -> BaseConsumer {
    tansu
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("group consumer")
}

/// The group's committed offset for partition 0 of `topic` (`Offset::Invalid`
/// when none).
fn committed(consumer: &BaseConsumer, topic: &str) -> Offset {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let tpl = consumer
        .committed_offsets(tpl, REQUEST_TIMEOUT)
        .expect("committed offsets");
    tpl.find_partition(topic, 0).expect("partition 0").offset()
}

#[test]
fn creates_topics_with_their_partitions() {
    let Some(tansu) = broker(PORT_TOPICS) else {
        return;
    };
    tansu.create_topic("three", 3).expect("create topic");
    tansu.create_topic("one", 1).expect("create topic");

    let client: BaseProducer = tansu.client_config().create().unwrap();
    let metadata = client
        .client()
        .fetch_metadata(Some("three"), REQUEST_TIMEOUT)
        .unwrap();
    let topic = &metadata.topics()[0];
    assert_eq!(topic.name(), "three");
    assert_eq!(topic.error(), None);
    let mut ids: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
    ids.sort();
    assert_eq!(ids, [0, 1, 2]);
    let broker_id = metadata.brokers()[0].id();
    assert!(topic.partitions().iter().all(|p| p.leader() == broker_id));

    // A second creation is refused, as by Kafka.
    let admin: AdminClient<DefaultClientContext> = tansu.client_config().create().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let results = runtime
        .block_on(admin.create_topics(
            [&NewTopic::new("three", 3, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)),
        ))
        .expect("admin request");
    assert_eq!(
        results,
        [Err((
            "three".to_owned(),
            RDKafkaErrorCode::TopicAlreadyExists
        ))]
    );
}

#[test]
fn idempotent_acks_all_produce_reads_back_in_order() {
    let Some(tansu) = broker(PORT_IDEMPOTENT) else {
        return;
    };
    const N: usize = 100;
    tansu.create_topic("log", 1).unwrap();
    let offsets = produce_acked(&tansu, "log", 0, N);
    assert_eq!(offsets, (0..N as i64).collect::<Vec<_>>());
    assert_eq!(read(&tansu, "log", 0, N), expected(0, 0, N));

    let consumer = group_consumer(&tansu, "watermarks");
    assert_eq!(
        consumer
            .fetch_watermarks("log", 0, REQUEST_TIMEOUT)
            .unwrap(),
        (0, N as i64)
    );
}

#[test]
fn consumer_group_resumes_after_committed_offset() {
    let Some(tansu) = broker(PORT_GROUP) else {
        return;
    };
    const N: usize = 10;
    const COMMITTED: usize = 4;
    tansu.create_topic("proposals", 1).unwrap();
    produce_acked(&tansu, "proposals", 0, N);

    {
        let first = group_consumer(&tansu, "ingest");
        first.subscribe(&["proposals"]).unwrap();
        let got = poll_records(&first, COMMITTED);
        assert_eq!(got, expected(0, 0, COMMITTED));
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("proposals", 0, Offset::Offset(COMMITTED as i64))
            .unwrap();
        first.commit(&tpl, CommitMode::Sync).expect("commit");
        assert_eq!(
            committed(&first, "proposals"),
            Offset::Offset(COMMITTED as i64)
        );
        first.unsubscribe();
    }

    let second = group_consumer(&tansu, "ingest");
    second.subscribe(&["proposals"]).unwrap();
    let got = poll_records(&second, N - COMMITTED);
    assert_eq!(got, expected(COMMITTED as i64, COMMITTED, N - COMMITTED));
}

#[test]
fn acknowledged_records_and_offsets_survive_kill9_of_the_broker() {
    let Some(mut tansu) = broker(PORT_KILL9) else {
        return;
    };
    const N: usize = 200;
    const COMMITTED: i64 = 120;
    const MORE: usize = 10;
    tansu.create_topic("decisions", 1).unwrap();
    let offsets = produce_acked(&tansu, "decisions", 0, N);
    assert_eq!(offsets, (0..N as i64).collect::<Vec<_>>());
    {
        let consumer = group_consumer(&tansu, "egress");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("decisions", 0, Offset::Offset(COMMITTED))
            .unwrap();
        consumer.commit(&tpl, CommitMode::Sync).expect("commit");
        assert_eq!(committed(&consumer, "decisions"), Offset::Offset(COMMITTED));
    }

    let pid = tansu.pid();
    tansu.kill9();
    let restarted = Instant::now();
    tansu.restart().expect("restart on the same database");
    eprintln!("restart after kill -9 ready in {:?}", restarted.elapsed());
    assert_ne!(tansu.pid(), pid, "a new process");

    assert_eq!(read(&tansu, "decisions", 0, N), expected(0, 0, N));
    let consumer = group_consumer(&tansu, "egress");
    assert_eq!(committed(&consumer, "decisions"), Offset::Offset(COMMITTED));
    assert_eq!(
        consumer
            .fetch_watermarks("decisions", 0, REQUEST_TIMEOUT)
            .unwrap(),
        (0, N as i64)
    );
    // The log continues where it was: new records get the next offsets.
    let offsets = produce_acked(&tansu, "decisions", N, MORE);
    assert_eq!(offsets, (N as i64..(N + MORE) as i64).collect::<Vec<_>>());
}

/// A reader with the given `isolation.level`, assigned partition 0 of
/// `topic` from the beginning.
fn reader(tansu: &Tansu, topic: &str, isolation_level: &str) -> BaseConsumer {
    let consumer: BaseConsumer = tansu
        .client_config()
        .set("group.id", "synod-test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation_level)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).expect("assign");
    consumer
}

/// A transactional producer with `transactional.id = id`, and its delivery
/// reports.
fn transactional_producer(tansu: &Tansu, id: &str) -> BaseProducer<Deliveries> {
    tansu
        .client_config()
        .set("transactional.id", id)
        .create_with_context(Deliveries::default())
        .expect("transactional producer")
}

/// Sends one record with `key` to partition 0 of `topic` and flushes.
fn send_one(producer: &BaseProducer<Deliveries>, topic: &str, key: &str) {
    producer
        .send(BaseRecord::to(topic).partition(0).key(key).payload("v"))
        .map_err(|(e, _)| e)
        .expect("enqueue");
    producer.flush(IO_TIMEOUT).expect("flush");
}

/// tansu 0.6.0 has no `EndTxn`: `init_transactions` (InitProducerId with a
/// transactional id), `begin_transaction` and producing inside the
/// transaction (AddPartitionsToTxn) work, but a transaction can never be
/// committed (nor, afterwards, aborted: librdkafka holds the commit as
/// retriable and in progress). And `isolation.level=read_committed` does
/// not hide the records of the open transaction.
#[test]
fn transactions_cannot_commit_end_txn_is_unsupported() {
    let Some(tansu) = broker(PORT_TXN) else {
        return;
    };
    tansu.create_topic("egress", 1).unwrap();
    let producer = transactional_producer(&tansu, "synod-egress-test");
    producer
        .init_transactions(REQUEST_TIMEOUT)
        .expect("init_transactions");
    producer.begin_transaction().expect("begin_transaction");
    send_one(&producer, "egress", "in-txn");
    assert_eq!(
        producer.context().0.lock().unwrap().as_slice(),
        [Ok((0, 0, "in-txn".to_owned()))],
        "produced inside the transaction"
    );

    match producer.commit_transaction(REQUEST_TIMEOUT) {
        Err(KafkaError::Transaction(e)) => {
            assert_eq!(e.code(), RDKafkaErrorCode::UnsupportedFeature, "{e}");
            assert!(e.to_string().contains("EndTxnRequest"), "{e}");
            assert!(!e.is_fatal() && e.is_retriable() && !e.txn_requires_abort());
        }
        other => {
            panic!("commit_transaction: expected UnsupportedFeature (no EndTxn), got {other:?}")
        }
    }
    match producer.abort_transaction(REQUEST_TIMEOUT) {
        Err(KafkaError::Transaction(e)) => {
            assert!(
                e.to_string().contains("Conflicting commit_transaction"),
                "{e}"
            )
        }
        other => panic!("abort_transaction after the failed commit: got {other:?}"),
    }

    // Kafka would hide the open transaction's record from read_committed
    // readers; tansu 0.6.0 hands it out. Yet its ListOffsets, for such a
    // reader, puts the end of the partition before that record.
    let read_committed = reader(&tansu, "egress", "read_committed");
    let got = poll_records(&read_committed, 1);
    assert_eq!(got, [(0, "in-txn".to_owned(), "v".to_owned())]);
    assert_eq!(
        read_committed
            .fetch_watermarks("egress", 0, REQUEST_TIMEOUT)
            .unwrap(),
        (0, 0)
    );
}

/// What does work: `init_transactions` by a newer producer with the same
/// `transactional.id` bumps the epoch and the broker fences the older one
/// (its next produce fails with `ProducerFenced`), as kafka.md §2 and §3
/// rule 5 use it. The older producer's earlier, never-committed record
/// stays in the log and is visible, to read_committed readers too.
#[test]
fn transactional_id_fences_an_older_producer() {
    let Some(tansu) = broker(PORT_FENCE) else {
        return;
    };
    tansu.create_topic("egress", 1).unwrap();
    let old = transactional_producer(&tansu, "synod-egress-fence");
    old.init_transactions(REQUEST_TIMEOUT).unwrap();
    old.begin_transaction().unwrap();
    send_one(&old, "egress", "old-1");

    let new = transactional_producer(&tansu, "synod-egress-fence");
    new.init_transactions(REQUEST_TIMEOUT).unwrap();
    new.begin_transaction().unwrap();
    send_one(&new, "egress", "new-1");

    send_one(&old, "egress", "old-2");
    let old_reports = old.context().0.lock().unwrap().clone();
    assert_eq!(old_reports.len(), 2);
    assert!(matches!(&old_reports[0], Ok((0, _, key)) if key == "old-1"));
    match &old_reports[1] {
        Err(e) => assert!(e.contains("ProducerFenced"), "{e}"),
        ok => panic!("the fenced producer's record was accepted: {ok:?}"),
    }
    let new_reports = new.context().0.lock().unwrap().clone();
    assert!(matches!(new_reports.as_slice(), [Ok((0, _, key))] if key == "new-1"));

    // An end marker from a plain producer bounds the read.
    let end = produce_acked(&tansu, "egress", 0, 1);
    let keys: Vec<String> = poll_records(&reader(&tansu, "egress", "read_committed"), 3)
        .into_iter()
        .map(|(_, key, _)| key)
        .collect();
    assert_eq!(keys, ["old-1", "new-1", "key-0"], "end marker at {end:?}");
}
