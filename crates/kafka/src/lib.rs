//! Synod and Kafka (`shared/design/kafka.md`).
//!
//! - [`ingest`]: a consumer group reads proposals from a topic and proposes
//!   them to the local replica; offsets are stored only once the decision
//!   is durable (kafka.md §1).
//! - [`egress`]: the holder of the control plane's egress lease publishes
//!   executed decisions to a topic, keyed by conflict key, resuming from
//!   the published frontier kept in the replicated control state
//!   (kafka.md §2).
//! - [`kafkalog`]: `synod agent --kafka-log`, a sidecar where a Kafka topic
//!   is the log and EPaxos\* is not involved (kafka.md §3).
#![deny(missing_docs)]

pub mod egress;
pub mod ingest;
pub mod kafkalog;
pub mod props;
/// A real Kafka-compatible broker (tansu) for tests: install, start, kill -9
/// and restart it (kafka.md §4).
pub mod testkit;
