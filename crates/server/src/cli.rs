//! Command-line shape (clap derive). Flags are kebab-case; every
//! client-side default can also come from a `SYNOD_*` variable.

use crate::config::ConfigFlags;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// `synod agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Kafka-log mode: the only agent mode there is, so required.
    #[arg(long)]
    pub kafka_log: bool,
    /// Kafka bootstrap servers, host:port,...
    #[arg(long, value_name = "HOST:PORT,..", env = "SYNOD_KAFKA_BROKERS")]
    pub brokers: Option<String>,
    /// This agent's id, unique among the agents of one log.
    #[arg(long, value_name = "N")]
    pub node_id: Option<u16>,
    /// HTTP API address to listen on.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// The API address other agents and clients reach this one at
    /// (redirects point there); default: --listen.
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Directory for the state snapshots.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The decisions log topic (partition 0 is the log).
    #[arg(long, default_value = "engine.decisions")]
    pub topic: String,
    /// The election (heartbeat) topic.
    #[arg(long, default_value = "engine.election")]
    pub election_topic: String,
    /// No transactional fencing, for brokers without transactions (e.g.
    /// tansu); safety does not depend on it.
    #[arg(long)]
    pub no_transactions: bool,
    /// A librdkafka property, repeatable: --property security.protocol=SSL.
    #[arg(long = "property", value_name = "K=V", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
    /// Silence from the leader after which an agent claims the next term
    /// (randomized up to twice this).
    #[arg(long, value_name = "DURATION", default_value = "1500ms", value_parser = parse_duration)]
    pub election_timeout: u64,
    /// The leader's heartbeat period.
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = parse_duration)]
    pub heartbeat_interval: u64,
    /// Write a snapshot every this many log records.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub snapshot_every: u64,
    /// Log line format. The level comes from RUST_LOG (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "SYNOD_LOG_FORMAT")]
    pub log_format: LogFormat,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// The endpoints of the cluster `synod up` starts with its default base
/// port: what `propose` and `status` talk to unless told otherwise.
pub const ENDPOINTS_DEFAULT: &str = "127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002";

/// Synod: a consensus engine for fleets of decision-making agents.
#[derive(Debug, Parser)]
#[command(name = "synod", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one replica until Ctrl-C or SIGTERM.
    ///
    /// Configuration layers, later wins: defaults < TOML file (--config) <
    /// SYNOD_* environment (SYNOD_ID, SYNOD_DATA_DIR, nested keys with a
    /// double underscore: SYNOD_PROTOCOL__TICK_MS=2) < flags.
    Server(ServerArgs),
    /// Start a local cluster of N replicas as child processes of this
    /// executable, on 127.0.0.1; Ctrl-C stops them all.
    Up(UpArgs),
    /// Inspect configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Verify a replica's data directory offline (WAL segments, snapshots),
    /// with the rules the replica applies at start; modifies nothing.
    Check(CheckArgs),
    /// Propose one decision and print its outcome as JSON (exit status 0
    /// if applied, 1 if rejected or failed).
    Propose(ProposeArgs),
    /// Print each endpoint's status.
    Status(StatusArgs),
    /// Show or change the cluster's membership (the Raft control plane).
    #[command(subcommand)]
    Member(MemberCommand),
    /// Read one key: local (this replica's state) or, with
    /// --linearizable, through the protocol.
    Get(GetArgs),
    /// Follow the committed stream: one JSON line per executed instance,
    /// resumable with --from (the last event's token), moving to another
    /// replica when one fails.
    Watch(WatchArgs),
    /// Run a sidecar agent with no Synod cluster: `--kafka-log` makes one
    /// Kafka partition the decision log (kafka.md §3); it serves the
    /// replica's HTTP API for proposing and reading. Until Ctrl-C/SIGTERM.
    Agent(AgentArgs),
    /// Kafka helpers for trying the Kafka backbone without other tools:
    /// create the topics, send a proposal record, follow a topic.
    #[command(subcommand)]
    Kafka(KafkaCommand),
    /// Load a cluster (this one, a fresh local one, or etcd for
    /// comparison) and print throughput, commit latency and the machine's
    /// floor (fsync + loopback RTT).
    Bench(synod_bench::BenchArgs),
}

/// `synod server`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Config layers.
    #[command(flatten)]
    pub config: ConfigFlags,
    /// Log line format. The level comes from RUST_LOG (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "SYNOD_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `synod up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Number of replicas: 3, 5 or 7.
    #[arg(long, short = 'n', default_value_t = 3)]
    pub replicas: u16,
    /// Directory for the per-node config files and data directories.
    #[arg(long, value_name = "DIR", default_value = "./synod-data")]
    pub data_dir: PathBuf,
    /// Delete the nodes' earlier data (node-<id> directories and
    /// node-<id>.toml files in --data-dir, nothing else) before starting.
    #[arg(long)]
    pub fresh: bool,
    /// HTTP port of node 0; node i listens on BASE+i (HTTP) and
    /// BASE+100+i (replica transport).
    #[arg(long, value_name = "PORT", default_value_t = 7000)]
    pub base_port: u16,
    /// Kafka bootstrap servers: every node consumes proposals from
    /// `engine.proposals` and the egress lease holder publishes executed
    /// decisions to `engine.committed` (kafka.md §1–2).
    #[arg(long, value_name = "HOST:PORT[,...]")]
    pub kafka: Option<String>,
    /// With --kafka: publish without Kafka transactions, for brokers that
    /// lack them (tansu 0.6).
    #[arg(long, requires = "kafka")]
    pub kafka_no_transactions: bool,
}

/// `synod kafka ...`.
#[derive(Debug, Subcommand)]
pub enum KafkaCommand {
    /// Create the proposals, dead-letter and committed topics (an existing
    /// topic is left as it is).
    Topics(KafkaTopicsArgs),
    /// Produce one proposal record (a decision as JSON) to the proposals
    /// topic and wait for the broker's acknowledgement.
    Send(KafkaSendArgs),
    /// Print the records of a topic, one JSON line each, from the
    /// beginning; keeps following until Ctrl-C (or --idle passes).
    Tail(KafkaTailArgs),
}

/// Brokers, shared by the `synod kafka` commands.
#[derive(Debug, clap::Args)]
pub struct KafkaBrokers {
    /// Kafka bootstrap servers.
    #[arg(long, value_name = "HOST:PORT[,...]", default_value = "127.0.0.1:9092")]
    pub brokers: String,
}

/// `synod kafka topics`.
#[derive(Debug, clap::Args)]
pub struct KafkaTopicsArgs {
    /// Brokers.
    #[command(flatten)]
    pub brokers: KafkaBrokers,
    /// Partitions of the proposals and committed topics.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// Replication factor of every topic.
    #[arg(long, default_value_t = 1)]
    pub replication: i32,
    /// Create the Kafka-log agent's topics instead (`engine.decisions`
    /// and `engine.election`, one partition each; kafka.md §3).
    #[arg(long)]
    pub kafka_log: bool,
}

/// `synod kafka send`.
#[derive(Debug, clap::Args)]
pub struct KafkaSendArgs {
    /// Brokers.
    #[command(flatten)]
    pub brokers: KafkaBrokers,
    /// The record key: the decision's idempotency key (a second record with
    /// the same key is the same request and applies nothing).
    #[arg(long)]
    pub key: Option<String>,
    /// The topic.
    #[arg(long, default_value = "engine.proposals")]
    pub topic: String,
    /// The decision, as JSON: `{"ops":[...],"guards":[...]}`.
    pub decision: String,
}

/// `synod kafka tail`.
#[derive(Debug, clap::Args)]
pub struct KafkaTailArgs {
    /// Brokers.
    #[command(flatten)]
    pub brokers: KafkaBrokers,
    /// The topic.
    #[arg(long, default_value = "engine.committed")]
    pub topic: String,
    /// Stop after this long without a new record (e.g. 5s), in ms once
    /// parsed; default: never.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub idle: Option<u64>,
}

/// `synod check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// A replica's data directory (its `data_dir`, e.g. synod-data/node-0).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
}

/// `synod config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (what `synod server` with the
    /// same flags and environment would run with) as TOML.
    Show(ConfigFlags),
}

/// Where the client commands send their requests.
#[derive(Debug, clap::Args)]
pub struct EndpointArgs {
    /// Replica HTTP endpoints, host:port, comma-separated; tried in order.
    #[arg(
        long,
        short = 'e',
        value_name = "HOST:PORT,..",
        value_delimiter = ',',
        env = "SYNOD_ENDPOINTS",
        default_value = ENDPOINTS_DEFAULT
    )]
    pub endpoints: Vec<String>,
}

/// `synod propose`.
#[derive(Debug, clap::Args)]
pub struct ProposeArgs {
    /// Endpoints.
    #[command(flatten)]
    pub endpoints: EndpointArgs,
    /// One op, repeatable, applied in order, all-or-nothing: put KEY VALUE |
    /// get KEY | delete KEY | cas KEY VERSION VALUE | set-stock KEY QTY |
    /// reserve KEY QTY | release KEY QTY | claim KEY AGENT TTL |
    /// release-claim KEY AGENT.
    #[arg(
        long = "op",
        value_name = "OP",
        required_unless_present = "json",
        conflicts_with = "json"
    )]
    pub ops: Vec<String>,
    /// A raw ProposeRequest JSON from FILE, or stdin with `-`.
    #[arg(long, value_name = "FILE|-")]
    pub json: Option<PathBuf>,
    /// Session id; with --request, makes retries exactly-once.
    #[arg(long, requires = "request")]
    pub client: Option<u64>,
    /// Request number within the session (≥ 1).
    #[arg(long, requires = "client")]
    pub request: Option<u64>,
    /// How long the replica should wait for the result (e.g. 5s, 500ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<u64>,
}

/// `synod get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// Endpoints.
    #[command(flatten)]
    pub endpoints: EndpointArgs,
    /// The key.
    pub key: String,
    /// Read through the protocol: sees every write acknowledged before it.
    #[arg(long)]
    pub linearizable: bool,
}

/// `synod watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Endpoints.
    #[command(flatten)]
    pub endpoints: EndpointArgs,
    /// Resume token (a previous event's `token`); empty: from the start of
    /// the replica's history.
    #[arg(long, default_value = "")]
    pub from: String,
    /// Stop after this many events (default: follow until Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this long without an event (e.g. 5s; default: never).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub idle: Option<u64>,
}

/// `synod status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Endpoints.
    #[command(flatten)]
    pub endpoints: EndpointArgs,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `synod member ...`.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List the members (addresses, Raft role, current or leaving), the
    /// control plane's leader and term, and every epoch still recorded.
    List(MemberListArgs),
    /// Add a replica. Start it first with `join = true` in its config
    /// (listing itself and at least one running member); it catches up
    /// from a member's snapshot once the previous epoch is complete, then
    /// serves.
    Add(MemberAddArgs),
    /// Remove a replica. Keep it running until this returns (its last epoch
    /// is complete: every decision it acknowledged is executed elsewhere);
    /// then stop it.
    Remove(MemberRemoveArgs),
}

/// `synod member list`.
#[derive(Debug, clap::Args)]
pub struct MemberListArgs {
    /// Endpoints.
    #[command(flatten)]
    pub endpoints: EndpointArgs,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `synod member add`.
#[derive(Debug, clap::Args)]
pub struct MemberAddArgs {
    /// The new replica's id (never used in this cluster before).
    pub id: u16,
    /// Its replica transport address.
    #[arg(long, value_name = "HOST:PORT")]
    pub peer_addr: String,
    /// Its HTTP API address.
    #[arg(long, value_name = "HOST:PORT")]
    pub api_addr: String,
    /// Its gRPC API address, if it serves one.
    #[arg(long, value_name = "HOST:PORT")]
    pub grpc_addr: Option<String>,
    /// Endpoints.
    #[command(flatten)]
    pub endpoints: EndpointArgs,
    /// How long to wait for the change to finish (the new member a voter,
    /// the previous epoch complete); 0 returns at once.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
    pub wait: u64,
}

/// `synod member remove`.
#[derive(Debug, clap::Args)]
pub struct MemberRemoveArgs {
    /// The replica to remove.
    pub id: u16,
    /// Endpoints.
    #[command(flatten)]
    pub endpoints: EndpointArgs,
    /// How long to wait for the removed replica's last epoch to complete
    /// (after which it may be stopped); 0 returns at once.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
    pub wait: u64,
}

/// Output format of `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// An aligned table.
    Table,
    /// JSON: one object per endpoint.
    Json,
}

fn parse_duration(s: &str) -> Result<u64, String> {
    crate::ops::parse_duration_ms(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn agent_flags() {
        let c = Cli::try_parse_from([
            "synod",
            "agent",
            "--kafka-log",
            "--brokers",
            "k:9092",
            "--node-id",
            "2",
            "--listen",
            "127.0.0.1:7100",
            "--data-dir",
            "/tmp/a",
            "--no-transactions",
            "--property",
            "security.protocol=SSL",
        ])
        .unwrap();
        let Command::Agent(a) = c.command else {
            panic!()
        };
        assert!(a.kafka_log && a.no_transactions);
        assert_eq!(a.node_id, Some(2));
        assert_eq!(a.topic, "engine.decisions");
        assert_eq!(a.properties, [("security.protocol".into(), "SSL".into())]);
        assert!(Cli::try_parse_from(["synod", "agent", "--property", "x"]).is_err());
    }

    #[test]
    fn propose_flags() {
        let c = Cli::try_parse_from([
            "synod",
            "propose",
            "-e",
            "a:1,b:2",
            "--op",
            "put k v",
            "--op",
            "get k",
            "--timeout",
            "2s",
        ])
        .unwrap();
        let Command::Propose(p) = c.command else {
            panic!()
        };
        assert_eq!(p.endpoints.endpoints, ["a:1", "b:2"]);
        assert_eq!(p.ops, ["put k v", "get k"]);
        assert_eq!(p.timeout, Some(2000));
        assert!(
            Cli::try_parse_from(["synod", "propose"]).is_err(),
            "needs --op or --json"
        );
    }
}
