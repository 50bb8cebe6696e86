//! Ingest against librdkafka's mock cluster and a fake replica API that
//! answers `429 overloaded` before it accepts: the partition is paused, the
//! proposals back off instead of spinning, each record is proposed until it
//! is accepted and no more, and the group's committed offset covers exactly
//! the accepted records.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedHeaders;
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use synod_client::wire::ProposeRequest;
use synod_kafka::ingest::idempotency_client;
use synod_runtime::config::IngestConfig;
use synod_runtime::metrics::KafkaMetrics;

/// What the fake replica saw: each proposal and whether it was refused.
type Seen = Arc<Mutex<Vec<(ProposeRequest, bool)>>>;

/// How long the fake replica asks the client to wait after a refusal.
const RETRY_AFTER_MS: u64 = 50;

/// A fake replica API on an ephemeral port: the first `refuse` proposals
/// get `429 overloaded`, the rest an applied outcome. HTTP/1.1 keep-alive,
/// as the SDK uses it.
fn fake_replica(refuse: usize) -> (String, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            let s = s.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    let req: ProposeRequest = serde_json::from_slice(&body).unwrap();
                    let mut seen = s.lock().unwrap();
                    let refused = seen.iter().filter(|(_, r)| *r).count() < refuse;
                    let (status, text) = if refused {
                        (
                            "429 Too Many Requests",
                            format!(
                                r#"{{"code":"overloaded","message":"test","retryable":true,"retry_after_ms":{RETRY_AFTER_MS}}}"#
                            ),
                        )
                    } else {
                        (
                            "200 OK",
                            format!(
                                r#"{{"instance":"0.{}@0","client":{},"request":{},"outcome":{{"Applied":{{"results":[]}}}}}}"#,
                                seen.len(),
                                req.client.unwrap(),
                                req.request.unwrap()
                            ),
                        )
                    };
                    seen.push((req, refused));
                    drop(seen);
                    let _ = write!(
                        w,
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                        text.len()
                    );
                }
            });
        }
    });
    (addr, seen)
}

fn committed(brokers: &str, group: &str, topic: &str) -> i64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    match got.find_partition(topic, 0).unwrap().offset() {
        Offset::Offset(o) => o,
        _ => -1,
    }
}

#[test]
fn an_overloaded_replica_pauses_the_partition_and_nothing_is_lost_or_proposed_twice() {
    const RECORDS: usize = 3;
    const REFUSE: usize = 4;
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    let cfg = IngestConfig {
        topic: "proposals".into(),
        group: "ingest-test".into(),
        dead_letter_topic: "proposals.dlq".into(),
        partition_queue_max: 100,
    };
    mock.create_topic(&cfg.topic, 1, 1).unwrap();
    mock.create_topic(&cfg.dead_letter_topic, 1, 1).unwrap();
    let mut base = ClientConfig::new();
    base.set("bootstrap.servers", &brokers);
    let p = synod_kafka::producer::create(base.clone(), None).unwrap();
    for i in 0..RECORDS {
        let v = format!(r#"{{"ops":[{{"SetStock":{{"key":"k","qty":{i}}}}}]}}"#);
        synod_kafka::producer::send(
            &p,
            &cfg.topic,
            Some(format!("order-{i}").as_bytes()),
            Some(v.as_bytes()),
            OwnedHeaders::new(),
        )
        .unwrap()
        .wait(Duration::from_secs(10))
        .unwrap();
    }

    let (api, seen) = fake_replica(REFUSE);
    let metrics = KafkaMetrics::default();
    let started = Instant::now();
    let ingest = synod_kafka::ingest::start(&base, &cfg, vec![api], metrics.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().iter().filter(|(_, r)| !*r).count() < RECORDS {
        assert!(Instant::now() < deadline, "records not proposed: {seen:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    // Let the pause be observed and offsets be stored, then stop: closing
    // commits the stored offsets.
    std::thread::sleep(Duration::from_millis(300));
    ingest.stop();

    let seen = seen.lock().unwrap().clone();
    let accepted: Vec<&ProposeRequest> = seen.iter().filter(|(_, r)| !*r).map(|(q, _)| q).collect();
    assert_eq!(
        seen.len(),
        REFUSE + RECORDS,
        "each record proposed until accepted, no more"
    );
    for (i, q) in accepted.iter().enumerate() {
        assert_eq!(
            q.client,
            Some(idempotency_client(format!("order-{i}").as_bytes())),
            "records proposed in offset order, each under its key's session"
        );
        assert_eq!(q.request, Some(1));
    }
    assert_eq!(metrics.ingest_overloaded.get(), REFUSE as u64);
    assert!(
        metrics
            .ingest_paused
            .get_or_create(&[("reason", "overloaded")])
            .get()
            >= 1,
        "an overloaded replica must pause the partition"
    );
    assert!(
        took >= Duration::from_millis(RETRY_AFTER_MS * REFUSE as u64),
        "the retries did not wait retry_after_ms: {took:?}"
    );
    assert_eq!(
        metrics
            .ingest_records
            .get_or_create(&[("result", "applied")])
            .get(),
        RECORDS as u64
    );
    assert_eq!(committed(&brokers, &cfg.group, &cfg.topic), RECORDS as i64);
}
