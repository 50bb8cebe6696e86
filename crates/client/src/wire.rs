//! The JSON bodies of the replica's HTTP API (`/v1`), shared by the server
//! (`synod-runtime`) and every client.
//!
//! This is the minimal surface the durable-replica issue needs (propose,
//! local read, status, the execution log for tests). The client-API issue
//! replaces it with the versioned gRPC/HTTP API; keep field names stable
//! until then.

use serde::{Deserialize, Serialize};
use synod_decision::{Guard, Op, Outcome};
use synod_types::{CmdId, NodeId};

/// `POST /v1/decisions`: propose one decision and wait for its result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposeRequest {
    /// Client session id. With `request`, makes retries exactly-once: a
    /// retry of the same `(client, request)` returns the recorded result.
    /// Omitted: the replica makes a one-off session (no retry protection).
    #[serde(default)]
    pub client: Option<u64>,
    /// Per-client request number, ≥ 1, increasing.
    #[serde(default)]
    pub request: Option<u64>,
    /// The ops, applied in order, all-or-nothing.
    pub ops: Vec<Op>,
    /// Preconditions checked before the first op.
    #[serde(default)]
    pub guards: Vec<Guard>,
    /// Proposer's wall clock in ms (the claim TTL clock). Omitted: the
    /// replica's clock at arrival.
    #[serde(default)]
    pub issued_at_ms: Option<u64>,
    /// How long to wait for the result; capped by the server's limit.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl ProposeRequest {
    /// The session a replica (or a Kafka-log agent) runs this request
    /// under: `(client, request)` as given, or, with neither given, a
    /// one-off session `(one_off(), 1)`. The error names the field: only one
    /// of the two given, or `request` 0.
    pub fn session(&self, one_off: impl FnOnce() -> u64) -> Result<(u64, u64), String> {
        match (self.client, self.request) {
            (Some(c), Some(r)) if r >= 1 => Ok((c, r)),
            (Some(_), Some(_)) => Err("request: must be at least 1".into()),
            (Some(_), None) => Err("request: required when client is set".into()),
            (None, Some(_)) => Err("client: required when request is set".into()),
            (None, None) => Ok((one_off(), 1)),
        }
    }
}

/// A one-off session id, unique per process incarnation (`boot`, `node`)
/// and call (`n`), with the top bit set (never a client's own id in
/// practice).
pub fn one_off_client(boot: u64, node: NodeId, n: u64) -> u64 {
    (boot.rotate_left(20) ^ (u64::from(node) << 48))
        .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        | (1 << 63)
}

/// Answer to [`ProposeRequest`]: the decision was executed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposeResponse {
    /// Instance that carried the decision, e.g. `0.17@1`.
    pub instance: String,
    /// Session the decision ran under.
    pub client: u64,
    /// Request number within the session.
    pub request: u64,
    /// Applied with per-op results, or rejected with a reason.
    pub outcome: Outcome,
}

/// Every non-2xx answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `invalid_argument`, `overloaded`,
    /// `timeout`, `unavailable`.
    pub code: String,
    /// Human-readable detail naming the offending field or limit.
    pub message: String,
    /// True if the same request may be retried (same `client`/`request`).
    pub retryable: bool,
    /// Suggested wait before retrying, for overload.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// This replica.
    pub node: u16,
    /// Members of the current epoch.
    pub members: Vec<u16>,
    /// Current epoch.
    pub epoch: u64,
    /// Random id of this process incarnation (changes at every start).
    pub boot_id: u64,
    /// Commands applied to the state machine since start (including the
    /// ones re-executed while recovering).
    pub applied: u64,
    /// Digest of the decision state; equal on replicas that applied the
    /// same set of decisions.
    pub state_digest: u64,
    /// Committed instances not yet executed here.
    pub pending_execution: u64,
    /// Own instances still being decided.
    pub in_flight: u64,
    /// Proposals waiting for their result.
    pub waiting_proposals: u64,
    /// Highest WAL sequence number appended / made durable.
    pub wal_last_lsn: u64,
    /// Highest durable WAL sequence number.
    pub wal_durable_lsn: u64,
    /// fdatasyncs of WAL groups since start.
    #[serde(default)]
    pub wal_fsyncs: u64,
    /// WAL records made durable since start (records per fsync =
    /// `wal_records / wal_fsyncs`).
    #[serde(default)]
    pub wal_records: u64,
    /// Total time spent in WAL fdatasync since start, in microseconds.
    #[serde(default)]
    pub wal_fsync_micros: u64,
    /// Instances committed on the fast path / slow path (own).
    pub fast_commits: u64,
    /// Own instances committed after an Accept round.
    pub slow_commits: u64,
    /// Recovery attempts started here.
    pub recoveries: u64,
    /// Own instances on the fast path / all own committed instances;
    /// `None` before the first.
    #[serde(default)]
    pub fast_path_ratio: Option<f64>,
    /// Instances executed here, over the replica's whole life (the snapshot
    /// included): comparable across replicas, so the difference to the
    /// highest one is a replica's lag (`synod status` shows it).
    #[serde(default)]
    pub executed_instances: u64,
    /// This replica's view of its peers.
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
}

/// One peer as a replica sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer.
    pub node: u16,
    /// An outbound connection to it is up.
    pub connected: bool,
    /// Milliseconds since a message from it arrived; `None`: never.
    pub last_heard_ms: Option<u64>,
}

/// One executed instance in `GET /v1/log`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Position in this incarnation's execution log, from 0.
    pub index: u64,
    /// Instance id.
    pub instance: CmdId,
    /// The commands of the instance, in apply order.
    pub commands: Vec<LogCommand>,
}

/// One command of a [`LogEntry`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCommand {
    /// Session.
    pub client: u64,
    /// Request number.
    pub request: u64,
    /// Conflict keys, sorted (session keys included).
    pub keys: Vec<String>,
    /// True if this execution applied the decision; false if it was
    /// rejected or was a duplicate answered from the session table.
    pub applied: bool,
    /// True if this execution was a retry of an earlier request of the
    /// session, answered from the session table without applying anything.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// The decision as committed (absent if its body does not decode; the
    /// state machine rejected it then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<synod_decision::Decision>,
    /// What executing it produced (for a duplicate: the recorded outcome).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

/// `GET /v1/log?from=N&limit=M`: this incarnation's execution log. After
/// a restart it starts again at index 0 with what the replica re-executes
/// from its snapshot onwards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogResponse {
    /// This replica.
    pub node: u16,
    /// Incarnation the indexes belong to.
    pub boot_id: u64,
    /// Entries `from..`.
    pub entries: Vec<LogEntry>,
    /// Index to ask for next.
    pub next: u64,
    /// Index the next executed instance will get: `head - next` entries
    /// exist beyond this page (how far a reader of this page lags).
    #[serde(default)]
    pub head: u64,
    /// [`crate::frontier::Frontier`] token of the instances this replica
    /// applied before its log's first retained entry (from its snapshot, or
    /// dropped by the retention limit): a stream can resume here only from a
    /// token that contains all of them.
    #[serde(default)]
    pub base: String,
}

/// One event of the committed stream (`GET /v1/stream`, Server-Sent Events
/// with `event: decision`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEvent {
    /// The executed instance.
    pub instance: CmdId,
    /// Its commands, in apply order.
    pub commands: Vec<LogCommand>,
    /// Resume token after this event: pass it as `from` to continue on any
    /// replica without gaps or duplicates.
    pub token: String,
}

/// `GET /v1/keys/{key}[?consistency=linearizable]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadResponse {
    /// The key.
    pub key: String,
    /// Its version (0: absent).
    pub version: u64,
    /// Its value, if present.
    pub value: Option<synod_decision::Value>,
    /// `"local"`: the replica's own state, which may lag the cluster by
    /// the decisions it has not executed yet (see `staleness`);
    /// `"linearizable"`: ordered through the protocol.
    pub consistency: String,
    /// For a local read, how far this replica's state may be behind.
    /// Absent for a linearizable read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staleness: Option<Staleness>,
}

/// How stale a local read may be, as the replica saw it when it answered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staleness {
    /// Instances this replica has executed (its applied state).
    pub executed_instances: u64,
    /// Instances committed here but not executed yet (waiting for
    /// dependencies): decisions already decided that the read does not see.
    pub pending_execution: u64,
    /// Instances some peer reported executed (in its last heartbeat, at
    /// most a few ticks old) that this replica has not: an estimate of how
    /// far the read lags the most advanced replica.
    pub behind_peers: u64,
    /// Age of the oldest decision committed here and not executed, in
    /// milliseconds (0 if none waits).
    pub oldest_unexecuted_ms: u64,
}

/// `GET /v1/members`: the control plane's view of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersResponse {
    /// The replica that answered.
    pub node: NodeId,
    /// The cluster's id (0 before the control plane is initialised).
    pub cluster_id: u64,
    /// The newest EPaxos\* epoch.
    pub epoch: u64,
    /// The epoch being closed while a change is in progress; no other
    /// change is accepted until it is complete.
    pub change_in_progress: Option<u64>,
    /// The control plane's leader, if known here.
    pub leader: Option<NodeId>,
    /// The leader's HTTP API address, if known.
    pub leader_api: Option<String>,
    /// The Raft term at the answering replica.
    pub raft_term: u64,
    /// The Raft log index committed and applied at the answering replica.
    pub raft_commit_index: u64,
    /// Every node of the current epoch or of an epoch not yet complete.
    pub members: Vec<MemberEntry>,
    /// Every epoch the control state still records, oldest first.
    pub epochs: Vec<EpochEntry>,
    /// The Kafka egress lease holder (kafka.md §2), if one holds it.
    #[serde(default)]
    pub egress_holder: Option<NodeId>,
    /// The newest egress lease generation issued (0: never).
    #[serde(default)]
    pub egress_generation: u64,
}

/// One node in [`MembersResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEntry {
    /// Replica id.
    pub id: NodeId,
    /// Replica transport address.
    pub peer_addr: String,
    /// HTTP API address.
    pub api_addr: String,
    /// gRPC API address, if any.
    pub grpc_addr: Option<String>,
    /// `voter`, `learner`, or `none` in the control plane's Raft group.
    pub raft_role: String,
    /// True if it is a member of the newest epoch; false for a member
    /// being removed (it must stay up until its last epoch is complete).
    pub current: bool,
}

/// One epoch in [`MembersResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochEntry {
    /// Epoch number.
    pub epoch: u64,
    /// Its members.
    pub members: Vec<NodeId>,
    /// Failures tolerated.
    pub f: usize,
    /// Failures tolerated by the fast path.
    pub e: usize,
    /// Members whose seal report is in.
    pub sealed_by: Vec<NodeId>,
    /// The closed set is published (epaxos.md §8.2 step 5).
    pub closed: bool,
    /// Ids in the closed set.
    pub closed_ids: usize,
    /// Members that executed the epoch's closure.
    pub done: Vec<NodeId>,
    /// Complete: removed members may stop, new members may fetch it.
    pub complete: bool,
}

/// `POST /v1/members`: add a replica (it must be running with `join = true`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    /// A replica id never used in this cluster before.
    pub id: NodeId,
    /// Its replica transport address.
    pub peer_addr: String,
    /// Its HTTP API address.
    pub api_addr: String,
    /// Its gRPC API address, if it serves one.
    #[serde(default)]
    pub grpc_addr: Option<String>,
}

/// The answer to a membership change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChangeResponse {
    /// The epoch the change created (or had created, for a retry).
    pub epoch: u64,
}
