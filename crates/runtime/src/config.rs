//! A replica's configuration: what `synod server --config node.toml` reads.
//!
//! Every field has a default, so an empty file is a valid single-node-less
//! config only in combination with `id` and `members`. Layering (defaults <
//! TOML file < `SYNOD_*` environment < flags) is done by the `synod` binary;
//! this module only defines the shape, the defaults and [`NodeConfig::validate`].

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use synod_types::NodeId;

/// One replica's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This replica's id; must appear in `members`.
    pub id: NodeId,
    /// Opaque cluster identity; peers with another id are refused.
    pub cluster_id: u64,
    /// Where this replica keeps its WAL and snapshots.
    pub data_dir: PathBuf,
    /// Every member of the cluster, this one included. For a replica that
    /// starts a cluster: the initial members (3, 5 or 7). For a joining
    /// replica (`join`): this one plus at least one running member to reach
    /// the cluster through; the real membership comes from the control
    /// plane (`synod member add`).
    pub members: Vec<Member>,
    /// Start as a new member of an existing cluster: wait until the control
    /// plane adds this id (`synod member add`), fetch a snapshot from a
    /// member once the previous epoch is complete, then serve
    /// (epaxos.md §8.4). Ignored once the snapshot is installed.
    pub join: bool,
    /// Protocol tunables.
    pub protocol: ProtocolConfig,
    /// WAL and snapshot tunables.
    pub storage: StorageConfig,
    /// Replica-to-replica transport limits.
    pub transport: TransportConfig,
    /// Client-facing limits.
    pub limits: LimitsConfig,
    /// Kafka ingest and egress (kafka.md §1–2); absent: no Kafka.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaConfig>,
}

/// One member: its id and addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Replica id (0..=65535).
    pub id: NodeId,
    /// Replica-to-replica address (transport).
    pub peer_addr: SocketAddr,
    /// Client API address (HTTP/JSON).
    pub api_addr: SocketAddr,
    /// Client API address (gRPC, `synod.v1.Synod`); absent: this member
    /// serves no gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_addr: Option<SocketAddr>,
}

impl Member {
    /// A member without gRPC.
    pub fn new(id: NodeId, peer_addr: SocketAddr, api_addr: SocketAddr) -> Member {
        Member {
            id,
            peer_addr,
            api_addr,
            grpc_addr: None,
        }
    }

    /// Serves gRPC on `addr` too (builder style).
    #[must_use]
    pub fn with_grpc(mut self, addr: SocketAddr) -> Member {
        self.grpc_addr = Some(addr);
        self
    }
}

/// Protocol tunables (see `synod_epaxos::Options` for their meaning).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtocolConfig {
    /// Length of one core tick in ms; every protocol timeout is a number of
    /// ticks.
    pub tick_ms: u64,
    /// Most commands in one instance.
    pub batch_size_max: usize,
    /// Thrifty mode: PreAccept to a fast quorum only.
    pub thrifty: bool,
    /// Ticks before an own instance gives up on the fast path.
    pub fast_timeout_ticks: u64,
    /// Ticks between retransmissions.
    pub retransmit_ticks: u64,
    /// Ticks a non-committed instance may wait before it is recovered.
    pub commit_timeout_ticks: u64,
    /// Route commands on contended keys to one owner (our addition).
    pub forward_contended: bool,
}

/// WAL and snapshot tunables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Size of one preallocated WAL segment.
    pub segment_bytes: u64,
    /// Take a snapshot after this many WAL records since the last one
    /// (0: never). Bounds WAL replay time at start.
    pub snapshot_every_records: u64,
    /// Extra wait before every WAL fdatasync, emulating a slow disk (crash
    /// tests use it to widen the written-but-not-durable window). Keep 0.
    pub emulated_sync_delay_ms: u64,
}

/// Replica-to-replica transport limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// Largest frame accepted or sent.
    pub max_frame_bytes: u32,
    /// Messages queued per peer before new ones are dropped (the protocol
    /// retransmits).
    pub peer_queue_capacity: usize,
}

/// Client-facing limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Proposals waiting for their result at once; beyond it a proposal is
    /// refused as overloaded (retryable).
    pub max_waiting_proposals: usize,
    /// Default and largest wait for a proposal's result, in ms.
    pub propose_timeout_ms: u64,
    /// Largest HTTP request body, and largest gRPC request message.
    pub max_request_bytes: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: 0,
            cluster_id: 1,
            data_dir: PathBuf::from("synod-data/node-0"),
            members: Vec::new(),
            join: false,
            protocol: ProtocolConfig::default(),
            storage: StorageConfig::default(),
            transport: TransportConfig::default(),
            limits: LimitsConfig::default(),
            kafka: None,
        }
    }
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            tick_ms: 5,
            batch_size_max: 64,
            thrifty: false,
            fast_timeout_ticks: 4,
            retransmit_ticks: 8,
            commit_timeout_ticks: 40,
            forward_contended: true,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            segment_bytes: 64 << 20,
            snapshot_every_records: 100_000,
            emulated_sync_delay_ms: 0,
        }
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_frame_bytes: 16 << 20,
            peer_queue_capacity: 65_536,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_waiting_proposals: 10_000,
            propose_timeout_ms: 10_000,
            max_request_bytes: 1 << 20,
        }
    }
}

/// Kafka ingest and egress of one replica (kafka.md §1–2). Every replica
/// of a cluster should carry the same section: each one consumes a share
/// of the proposal partitions (one consumer group), and whichever holds the
/// egress lease publishes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    /// Extra librdkafka properties passed through unchanged to every
    /// producer and consumer Synod creates, e.g. `security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `ssl.ca.location`. Properties
    /// Synod sets itself for correctness (`enable.idempotence`, `acks`,
    /// `isolation.level`, `enable.auto.offset.store`, `transactional.id`)
    /// cannot be overridden here.
    pub properties: std::collections::BTreeMap<String, String>,
    /// Consume proposals from a topic.
    pub ingest: Option<IngestConfig>,
    /// Publish executed decisions to a topic.
    pub egress: Option<EgressConfig>,
}

/// Ingest: proposals from a topic (kafka.md §1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// The proposals topic.
    pub topic: String,
    /// The consumer group all replicas share.
    pub group: String,
    /// Where records that are not a valid decision go, with the reason in
    /// the `synod-dlq-reason` header.
    pub dead_letter_topic: String,
    /// Records fetched but not yet decided, per partition; a full queue
    /// pauses the partition at the broker until it drains to half.
    pub partition_queue_max: usize,
}

/// Egress: executed decisions to a topic (kafka.md §2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgressConfig {
    /// The committed-decisions topic.
    pub topic: String,
    /// Publish in Kafka transactions (`transactional.id =
    /// synod-egress-<cluster_id>`), so a new lease holder fences the old one
    /// at the broker. Turn off only for brokers without transactions (tansu
    /// 0.6); the epoch header, the published frontier and de-duplication by
    /// decision id keep the stream correct either way.
    pub transactions: bool,
    /// Most records in one transaction (one batch between frontier saves).
    pub batch_max: usize,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            properties: std::collections::BTreeMap::new(),
            ingest: None,
            egress: None,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            topic: "engine.proposals".into(),
            group: "synod-ingest".into(),
            dead_letter_topic: "engine.proposals.dlq".into(),
            partition_queue_max: 1024,
        }
    }
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            topic: "engine.committed".into(),
            transactions: true,
            batch_max: 1000,
        }
    }
}

/// A configuration that cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl NodeConfig {
    /// The standard local cluster of `synod up`: `n` replicas with ids
    /// `0..n` on 127.0.0.1, HTTP ports `7000 + id`, transport ports
    /// `7100 + id`, gRPC ports `7200 + id`, data under `root/node-<id>`;
    /// this is node `id`.
    pub fn local(id: NodeId, n: u16, root: &std::path::Path) -> NodeConfig {
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let members = (0..n)
            .map(|i| Member::new(i, at(7100 + i), at(7000 + i)).with_grpc(at(7200 + i)))
            .collect();
        NodeConfig {
            id,
            data_dir: root.join(format!("node-{id}")),
            members,
            ..NodeConfig::default()
        }
    }

    /// This replica's member entry.
    pub fn me(&self) -> Option<&Member> {
        self.members.iter().find(|m| m.id == self.id)
    }

    /// Checks everything that would make the replica fail later.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |s: String| Err(ConfigError(s));
        if self.me().is_none() {
            return err(format!("id {} is not in members", self.id));
        }
        let mut ids: Vec<NodeId> = self.members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.members.len() {
            return err("members: duplicate id".into());
        }
        for m in &self.members {
            if m.grpc_addr == Some(m.api_addr) || m.grpc_addr == Some(m.peer_addr) {
                return err(format!(
                    "members: member {}'s grpc_addr {} is also its api_addr or peer_addr",
                    m.id,
                    m.grpc_addr.expect("compared equal to an address")
                ));
            }
        }
        if self.join {
            if self.members.len() < 2 {
                return err(
                    "join: members must list this replica and at least one running member to reach the cluster through"
                        .into(),
                );
            }
        } else if ![3, 5, 7].contains(&self.members.len()) {
            return err(format!(
                "members: {} replicas; Synod runs 3, 5 or 7",
                self.members.len()
            ));
        }
        let p = &self.protocol;
        if p.tick_ms == 0 || p.tick_ms > 1000 {
            return err(format!(
                "protocol.tick_ms = {}: must be 1..=1000",
                p.tick_ms
            ));
        }
        if p.batch_size_max == 0 || p.batch_size_max > 4096 {
            return err(format!(
                "protocol.batch_size_max = {}: must be 1..=4096",
                p.batch_size_max
            ));
        }
        if p.fast_timeout_ticks == 0 || p.retransmit_ticks == 0 || p.commit_timeout_ticks == 0 {
            return err("protocol: timeouts must be at least one tick".into());
        }
        if self.storage.segment_bytes < (1 << 20) {
            return err(format!(
                "storage.segment_bytes = {}: must be at least 1 MiB",
                self.storage.segment_bytes
            ));
        }
        if self.storage.emulated_sync_delay_ms > 1000 {
            return err("storage.emulated_sync_delay_ms must be at most 1000".into());
        }
        if self.transport.max_frame_bytes < (64 << 10) {
            return err("transport.max_frame_bytes must be at least 64 KiB".into());
        }
        if self.transport.peer_queue_capacity == 0 {
            return err("transport.peer_queue_capacity must be positive".into());
        }
        let l = &self.limits;
        if l.max_waiting_proposals == 0 || l.propose_timeout_ms == 0 || l.max_request_bytes == 0 {
            return err("limits: every limit must be positive".into());
        }
        if let Some(k) = &self.kafka {
            k.validate()?;
        }
        Ok(())
    }
}

/// Most records [`EgressConfig::batch_max`] may allow in one transaction:
/// a batch is held in memory until the broker acknowledges it.
pub const EGRESS_BATCH_MAX: usize = 100_000;

/// Most records [`IngestConfig::partition_queue_max`] may allow per
/// partition: they are held in memory.
pub const INGEST_QUEUE_MAX: usize = 100_000;

impl KafkaConfig {
    /// Checks the section; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |s: String| Err(ConfigError(s));
        if self.brokers.trim().is_empty() {
            return err("kafka.brokers: empty; give host:port[,host:port...]".into());
        }
        if self.ingest.is_none() && self.egress.is_none() {
            return err("kafka: neither [kafka.ingest] nor [kafka.egress] is configured".into());
        }
        if let Some(i) = &self.ingest {
            for (field, v) in [
                ("topic", &i.topic),
                ("group", &i.group),
                ("dead_letter_topic", &i.dead_letter_topic),
            ] {
                if v.trim().is_empty() {
                    return err(format!("kafka.ingest.{field}: empty"));
                }
            }
            if i.topic == i.dead_letter_topic {
                return err("kafka.ingest.dead_letter_topic: must differ from the topic".into());
            }
            if i.partition_queue_max == 0 || i.partition_queue_max > INGEST_QUEUE_MAX {
                return err(format!(
                    "kafka.ingest.partition_queue_max = {}: must be 1..={INGEST_QUEUE_MAX}",
                    i.partition_queue_max
                ));
            }
        }
        if let Some(e) = &self.egress {
            if e.topic.trim().is_empty() {
                return err("kafka.egress.topic: empty".into());
            }
            if self.ingest.as_ref().is_some_and(|i| i.topic == e.topic) {
                return err("kafka.egress.topic: must differ from kafka.ingest.topic".into());
            }
            if e.batch_max == 0 || e.batch_max > EGRESS_BATCH_MAX {
                return err(format!(
                    "kafka.egress.batch_max = {}: must be 1..={EGRESS_BATCH_MAX}",
                    e.batch_max
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_config_is_valid_and_ports_follow_ids() {
        let c = NodeConfig::local(2, 3, std::path::Path::new("/tmp/x"));
        c.validate().unwrap();
        assert_eq!(c.me().unwrap().api_addr.port(), 7002);
        assert_eq!(c.me().unwrap().peer_addr.port(), 7102);
        assert_eq!(c.me().unwrap().grpc_addr.unwrap().port(), 7202);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x/node-2"));
    }

    #[test]
    fn validate_names_the_bad_field() {
        let mut c = NodeConfig::local(0, 3, std::path::Path::new("/tmp/x"));
        c.protocol.batch_size_max = 0;
        assert!(c.validate().unwrap_err().0.contains("batch_size_max"));
        let mut c = NodeConfig::local(0, 3, std::path::Path::new("/tmp/x"));
        c.id = 9;
        assert!(c.validate().unwrap_err().0.contains("not in members"));
        let mut c = NodeConfig::local(0, 3, std::path::Path::new("/tmp/x"));
        c.members.pop();
        assert!(c.validate().unwrap_err().0.contains("3, 5 or 7"));
        let mut c = NodeConfig::local(0, 3, std::path::Path::new("/tmp/x"));
        c.members[1].grpc_addr = Some(c.members[1].api_addr);
        assert!(c.validate().unwrap_err().0.contains("grpc_addr"));
    }

    #[test]
    fn kafka_section_is_checked_field_by_field() {
        let mut c = NodeConfig::local(0, 3, std::path::Path::new("/tmp/x"));
        c.kafka = Some(KafkaConfig::default());
        assert!(c.validate().unwrap_err().0.contains("neither"));
        let k = c.kafka.as_mut().unwrap();
        k.ingest = Some(IngestConfig::default());
        k.egress = Some(EgressConfig::default());
        c.validate().unwrap();
        let k = c.kafka.as_mut().unwrap();
        k.egress.as_mut().unwrap().topic = "engine.proposals".into();
        assert!(c.validate().unwrap_err().0.contains("kafka.egress.topic"));
        let k = c.kafka.as_mut().unwrap();
        k.egress.as_mut().unwrap().topic = "engine.committed".into();
        k.ingest.as_mut().unwrap().partition_queue_max = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .0
            .contains("kafka.ingest.partition_queue_max"));
        let k = c.kafka.as_mut().unwrap();
        k.ingest.as_mut().unwrap().partition_queue_max = 10;
        k.brokers = " ".into();
        assert!(c.validate().unwrap_err().0.contains("kafka.brokers"));
    }
}
