//! Raft RPCs over the runtime's transport.
//!
//! Outbound: the runtime gives a non-blocking send callback; each RPC is a
//! [`ControlMessage::Request`] with a fresh id, and the caller waits for the
//! [`ControlMessage::Response`] with that id from that peer, or times out
//! ([`RPC_TIMEOUT`]) and reports the peer unreachable (openraft backs off
//! and retries). Inbound requests are handled by `Control::deliver`.

use crate::raft_types::{from_raft, SnapshotMeta, TypeConfig, Vote};
use crate::state::{ControlCommand, MemberInfo};
use crate::state_machine::{SnapshotData, CONTROL_SNAPSHOT_MAX_BYTES};
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkFactory, RaftNetworkV2};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synod_types::NodeId;
use tokio::sync::oneshot;

/// Longest wait for the answer to an AppendEntries or Vote request. A
/// healthy link answers in milliseconds; past one second (above the
/// election timeout's lower bound) the peer is as good as unreachable, and
/// openraft's retry with backoff is the better use of the slot.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest wait for a snapshot installation (one message of at most
/// `CONTROL_SNAPSHOT_MAX_BYTES`, then an fsynced file on the receiver).
pub const SNAPSHOT_RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// Most outbound RPCs awaiting a response. openraft keeps about one in
/// flight per peer and kind, so this is only reached if responses never
/// come back; then new RPCs fail at once instead of growing the table.
pub const PENDING_RPCS_MAX: usize = 1024;

/// The runtime's outbound send: non-blocking; may drop the message.
pub type SendFn = Arc<dyn Fn(NodeId, ControlMessage) + Send + Sync>;

/// A control-plane message between two nodes, carried by the runtime's
/// transport (any serde codec).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ControlMessage {
    /// A Raft RPC; answer with a `Response` carrying the same `id`.
    Request {
        /// Chosen by the sender, unique among its pending requests.
        id: u64,
        /// The RPC (opaque outside this crate).
        rpc: Rpc,
    },
    /// The answer to the sender's `Request` with `id`.
    Response {
        /// The request's id.
        id: u64,
        /// The result (opaque outside this crate).
        result: RpcReply,
    },
    /// Fire-and-forget: a follower asks the leader to write `cmd` (seal
    /// reports, epoch done: idempotent and retried by the runtime).
    Submit {
        /// The command.
        cmd: ControlCommand,
    },
}

/// A Raft RPC request (opaque: the wire format is this crate's business).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Rpc(pub(crate) RpcKind);

/// A Raft RPC result (opaque).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RpcReply(pub(crate) ReplyKind);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum RpcKind {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    InstallSnapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: SnapshotData,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum ReplyKind {
    AppendEntries(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    InstallSnapshot(SnapshotResponse<TypeConfig>),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    /// The receiver could not handle the request (shutting down, snapshot
    /// too large, ...).
    Error(String),
}

type Pending = HashMap<u64, (NodeId, oneshot::Sender<ReplyKind>)>;

/// Outbound request/response correlation, shared by every peer client.
pub(crate) struct Transport {
    pub(crate) send: SendFn,
    pending: Mutex<Pending>,
    next_id: AtomicU64,
}

impl Transport {
    pub(crate) fn new(send: SendFn) -> Self {
        Transport {
            send,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `rpc` to `target` and waits for its response.
    async fn call(
        &self,
        target: u64,
        rpc: RpcKind,
        timeout: Duration,
    ) -> Result<ReplyKind, String> {
        let to = from_raft(target).ok_or_else(|| format!("node id {target} out of range"))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending();
            if p.len() >= PENDING_RPCS_MAX {
                return Err(format!(
                    "{} control RPCs pending (PENDING_RPCS_MAX)",
                    p.len()
                ));
            }
            p.insert(id, (to, tx));
        }
        (self.send)(to, ControlMessage::Request { id, rpc: Rpc(rpc) });
        let r = tokio::time::timeout(timeout, rx).await;
        self.pending().remove(&id);
        match r {
            Ok(Ok(ReplyKind::Error(e))) => Err(format!("node {to}: {e}")),
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(format!("request to node {to} dropped")),
            Err(_) => Err(format!("no answer from node {to} within {timeout:?}")),
        }
    }

    /// Completes the pending request `id`, if `from` is the node it went to.
    pub(crate) fn on_response(&self, from: NodeId, id: u64, reply: ReplyKind) {
        let mut p = self.pending();
        if p.get(&id).is_some_and(|(to, _)| *to == from) {
            if let Some((_, tx)) = p.remove(&id) {
                let _ = tx.send(reply);
            }
        }
    }
}

/// Creates a [`PeerClient`] per target.
pub(crate) struct NetworkFactory {
    pub(crate) transport: Arc<Transport>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, _node: &MemberInfo) -> PeerClient {
        PeerClient {
            target,
            transport: Arc::clone(&self.transport),
        }
    }
}

/// openraft's client for one peer.
pub(crate) struct PeerClient {
    target: u64,
    transport: Arc<Transport>,
}

fn unreachable(msg: String) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::from_string(msg))
}

fn ttl(option: &RPCOption) -> Duration {
    option.hard_ttl().min(RPC_TIMEOUT)
}

impl PeerClient {
    async fn vote_kind(
        &mut self,
        rpc: RpcKind,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.transport.call(self.target, rpc, ttl(&option)).await {
            Ok(ReplyKind::Vote(r)) => Ok(r),
            Ok(other) => Err(unreachable(format!("unexpected reply {other:?}"))),
            Err(e) => Err(unreachable(e)),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let r = self
            .transport
            .call(self.target, RpcKind::AppendEntries(rpc), ttl(&option))
            .await;
        match r {
            Ok(ReplyKind::AppendEntries(r)) => Ok(r),
            Ok(other) => Err(unreachable(format!("unexpected reply {other:?}"))),
            Err(e) => Err(unreachable(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_kind(RpcKind::Vote(rpc), option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_kind(RpcKind::PreVote(rpc), option).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let r = self
            .transport
            .call(self.target, RpcKind::TransferLeader(req), ttl(&option))
            .await;
        match r {
            Ok(ReplyKind::TransferLeader(r)) => Ok(r),
            Ok(other) => Err(unreachable(format!("unexpected reply {other:?}"))),
            Err(e) => Err(unreachable(e)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let len = snapshot.snapshot.len();
        if len > CONTROL_SNAPSHOT_MAX_BYTES {
            let msg = format!(
                "control snapshot of {len} bytes exceeds CONTROL_SNAPSHOT_MAX_BYTES {CONTROL_SNAPSHOT_MAX_BYTES}; not sent"
            );
            tracing::error!("{msg}");
            return Err(StreamingError::Unreachable(Unreachable::from_string(msg)));
        }
        let rpc = RpcKind::InstallSnapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot,
        };
        match self
            .transport
            .call(self.target, rpc, SNAPSHOT_RPC_TIMEOUT)
            .await
        {
            Ok(ReplyKind::InstallSnapshot(r)) => Ok(r),
            Ok(other) => Err(StreamingError::Unreachable(Unreachable::from_string(
                format!("unexpected reply {other:?}"),
            ))),
            Err(e) => Err(StreamingError::Unreachable(Unreachable::from_string(e))),
        }
    }
}
