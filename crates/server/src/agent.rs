//! `synod agent --kafka-log`: a sidecar whose decision log is one Kafka
//! partition (kafka.md §3; `synod_kafka::kafkalog`).

use crate::cli::AgentArgs;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;
use synod_kafka::kafkalog::{http, Agent, AgentConfig};

/// Runs the agent until Ctrl-C or SIGTERM; errors go to stderr.
pub fn run(args: AgentArgs) -> ExitCode {
    match agent(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("synod: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn required<T>(v: Option<T>, flag: &str) -> Result<T, String> {
    v.ok_or_else(|| format!("synod agent --kafka-log needs {flag}"))
}

fn agent(args: AgentArgs) -> Result<(), String> {
    if !args.kafka_log {
        return Err(
            "only Kafka-log mode exists: run `synod agent --kafka-log --brokers ... --node-id ... --listen ... --data-dir ...`"
                .into(),
        );
    }
    let brokers = required(args.brokers, "--brokers")?;
    let node = required(args.node_id, "--node-id")?;
    let listen = required(args.listen, "--listen")?;
    let data_dir = required(args.data_dir, "--data-dir")?;
    let mut properties = BTreeMap::new();
    for (k, v) in args.properties {
        if properties.insert(k.clone(), v).is_some() {
            return Err(format!("--property {k}: given twice"));
        }
    }
    let mut cfg = AgentConfig::new(
        &brokers,
        node,
        args.advertise.as_deref().unwrap_or(&listen),
        data_dir,
    );
    cfg.topic = args.topic;
    cfg.election_topic = args.election_topic;
    cfg.transactions = !args.no_transactions;
    cfg.properties = properties;
    cfg.election_timeout = Duration::from_millis(args.election_timeout);
    cfg.heartbeat_interval = Duration::from_millis(args.heartbeat_interval);
    cfg.snapshot_every_records = args.snapshot_every;
    crate::commands::init_tracing(args.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("synod-agent")
        .build()
        .map_err(|e| format!("starting the tokio runtime: {e}"))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| format!("--listen {listen}: {e}"))?;
        let agent = Agent::start(cfg).map_err(|e| format!("agent {node}: {e}"))?;
        tracing::info!(node, %listen, "agent serving");
        let served =
            http::serve(listener, agent.handle(), crate::commands::shutdown_signal()).await;
        tokio::task::spawn_blocking(move || agent.shutdown())
            .await
            .map_err(|e| format!("stopping: {e}"))?;
        served.map_err(|e| format!("serving HTTP: {e}"))?;
        tracing::info!(node, "agent stopped cleanly");
        Ok(())
    })
}
