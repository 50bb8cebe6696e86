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
//!
//! [`services`] wires ingest and egress into a replica
//! (`synod_runtime::run_with`).
#![deny(missing_docs)]

pub mod egress;
pub mod ingest;
pub mod kafkalog;
pub mod producer;
pub mod props;
/// A real Kafka-compatible broker (tansu) for tests: install, start, kill -9
/// and restart it (kafka.md §4).
pub mod testkit;

use synod_runtime::{ServiceContext, StartServices, StopServices};

/// The replica's Kafka services, per its `[kafka]` section: ingest and
/// egress threads started once the replica serves and stopped first at
/// shutdown. A section that cannot start (a reserved passthrough property,
/// a client librdkafka refuses) is logged as an error and leaves the
/// replica running without Kafka; `NodeConfig::validate` has checked the
/// rest before.
pub fn services() -> StartServices {
    Box::new(|ctx: ServiceContext| -> StopServices {
        match start(&ctx) {
            Ok(stop) => stop,
            Err(e) => {
                tracing::error!("kafka: {e}");
                Box::new(|| {})
            }
        }
    })
}

fn start(ctx: &ServiceContext) -> Result<StopServices, String> {
    let Some(k) = ctx.config.kafka.clone() else {
        return Ok(Box::new(|| {}));
    };
    let base = props::base(&k.brokers, &k.properties).map_err(|e| e.to_string())?;
    let me = ctx
        .config
        .me()
        .ok_or_else(|| "this replica is not in members".to_string())?;
    // The local API first: ingest proposes there and egress streams from
    // there; the others are fallbacks.
    let mut endpoints = vec![me.api_addr.to_string()];
    endpoints.extend(
        ctx.config
            .members
            .iter()
            .filter(|m| m.id != ctx.config.id)
            .map(|m| m.api_addr.to_string()),
    );
    let ingest = match &k.ingest {
        Some(i) => Some(ingest::start(
            &base,
            i,
            endpoints.clone(),
            ctx.metrics.kafka(),
        )?),
        None => None,
    };
    let egress = match &k.egress {
        Some(e) => Some(egress::start(egress::EgressEnv {
            me: ctx.config.id,
            cluster_id: ctx.config.cluster_id,
            base,
            cfg: e.clone(),
            endpoints,
            control: ctx.control.clone(),
            runtime: ctx.runtime.clone(),
            metrics: ctx.metrics.kafka(),
        })?),
        None => None,
    };
    tracing::info!(
        brokers = %k.brokers,
        ingest = k.ingest.is_some(),
        egress = k.egress.is_some(),
        "kafka: started"
    );
    Ok(Box::new(move || {
        if let Some(i) = ingest {
            i.stop();
        }
        if let Some(e) = egress {
            e.stop();
        }
    }))
}
