//! `synod kafka topics|send|tail`: enough Kafka tooling to try the Kafka
//! backbone (README "Kafka quickstart") without installing a Kafka CLI.

use crate::cli::{KafkaCommand, KafkaSendArgs, KafkaTailArgs, KafkaTopicsArgs};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use synod_runtime::config::{EgressConfig, IngestConfig};

/// How long `send` waits for the broker's acknowledgement, and `topics`
/// for the broker to answer.
const BROKER_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs one `synod kafka` command.
pub fn run(cmd: &KafkaCommand) -> Result<ExitCode, String> {
    match cmd {
        KafkaCommand::Topics(a) => topics(a),
        KafkaCommand::Send(a) => send(a),
        KafkaCommand::Tail(a) => tail(a),
    }
}

fn base(brokers: &str) -> ClientConfig {
    synod_kafka::props::base(brokers, &Default::default())
        .expect("no passthrough properties, so none is reserved")
}

fn topics(a: &KafkaTopicsArgs) -> Result<ExitCode, String> {
    let admin: AdminClient<DefaultClientContext> = base(&a.brokers.brokers)
        .create()
        .map_err(|e| format!("Kafka admin client: {e}"))?;
    let (i, e) = (IngestConfig::default(), EgressConfig::default());
    let names = if a.kafka_log {
        // The agent's defaults (`synod agent --topic/--election-topic`).
        vec![
            ("engine.decisions".to_string(), 1),
            ("engine.election".to_string(), 1),
        ]
    } else {
        vec![
            (i.topic.clone(), a.partitions),
            (i.dead_letter_topic.clone(), 1),
            (e.topic.clone(), a.partitions),
        ]
    };
    let new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(a.replication)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let opts = AdminOptions::new().operation_timeout(Some(BROKER_TIMEOUT));
    let results = rt
        .block_on(admin.create_topics(&new, &opts))
        .map_err(|e| format!("creating topics on {}: {e}", a.brokers.brokers))?;
    for r in results {
        match r {
            Ok(t) => println!("created {t}"),
            Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => println!("exists  {t}"),
            Err((t, code)) => return Err(format!("creating {t}: {code}")),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn send(a: &KafkaSendArgs) -> Result<ExitCode, String> {
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&a.decision) {
        return Err(format!("the decision is not JSON: {e}"));
    }
    let p = synod_kafka::producer::create(base(&a.brokers.brokers), None)?;
    let (partition, offset) = synod_kafka::producer::send(
        &p,
        &a.topic,
        a.key.as_deref().map(str::as_bytes),
        Some(a.decision.as_bytes()),
        OwnedHeaders::new(),
    )?
    .wait(BROKER_TIMEOUT)?;
    println!("sent to {}/{partition} at offset {offset}", a.topic);
    Ok(ExitCode::SUCCESS)
}

fn tail(a: &KafkaTailArgs) -> Result<ExitCode, String> {
    let mut c = base(&a.brokers.brokers);
    // A group of its own that commits nothing: every tail starts from the
    // beginning.
    c.set("group.id", format!("synod-tail-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer = c.create().map_err(|e| format!("Kafka consumer: {e}"))?;
    consumer
        .subscribe(&[&a.topic])
        .map_err(|e| format!("subscribing to {}: {e}", a.topic))?;
    let idle = a.idle.map(Duration::from_millis);
    let mut last = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last = Instant::now();
                let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
                let headers: serde_json::Map<String, serde_json::Value> = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| (h.key.to_string(), text(h.value).into()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = m.payload().map(|v| {
                    serde_json::from_slice::<serde_json::Value>(v)
                        .unwrap_or_else(|_| String::from_utf8_lossy(v).into_owned().into())
                });
                let line = serde_json::json!({
                    "partition": m.partition(),
                    "offset": m.offset(),
                    "key": text(m.key()),
                    "headers": headers,
                    "value": value,
                });
                println!("{line}");
            }
            Some(Err(e)) => eprintln!("{}: {e}", a.topic),
            None => {}
        }
        if idle.is_some_and(|d| last.elapsed() >= d) {
            return Ok(ExitCode::SUCCESS);
        }
    }
}
