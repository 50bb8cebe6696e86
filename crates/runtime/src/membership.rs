//! How a replica added to a running cluster gets its first state
//! (epaxos.md §8.4: "new members fetch E's committed log or a snapshot
//! before serving").
//!
//! A replica started with `join = true` and an empty data directory runs
//! only its control plane at first. Once the control plane has added it in
//! epoch E+1 (`synod member add`) and epoch E is complete, it asks a member
//! that has executed all of E for a [`JoinSnapshot`]
//! (`GET /v1/internal/snapshot?epoch=E+1` on that member's client API),
//! makes it its own durable snapshot ([`install`]), and only then starts the
//! EPaxos\* core and serves. It never voted before, so it has nothing to
//! forget; what it copies is committed (final) and executed state.

use crate::node::{Recovered, Snapshot};
use crate::{NodeConfig, RuntimeError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use synod_decision::StateMachine;
use synod_epaxos::{EpochState, InstanceRecord};
use synod_storage::Wal;
use synod_types::{CmdId, NodeId};

/// Largest snapshot a joining replica accepts. It holds the whole state
/// machine and the processed ids; 1 GiB is far above the test and bench
/// states and still fits in memory twice (body + decoded).
pub const JOIN_SNAPSHOT_MAX_BYTES: usize = 1 << 30;

/// Time a snapshot download may wait for its connection, and then for
/// each read, before the joiner tries another member.
pub const JOIN_FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// What a member hands a replica that joins in `join_epoch`.
#[derive(Serialize, Deserialize)]
pub struct JoinSnapshot {
    /// Must be the joiner's.
    pub cluster_id: u64,
    /// The member that made it.
    pub donor: NodeId,
    /// The epoch the joiner was added in.
    pub join_epoch: u64,
    /// Configurations and closed sets, without the donor's own seal reports.
    pub epochs: EpochState,
    /// Committed records of `join_epoch` and later.
    pub records: Vec<(CmdId, InstanceRecord)>,
    /// Ids processed by the donor's executor that `app` reflects (plus the
    /// Nops of the closed sets).
    pub processed: Vec<CmdId>,
    /// The donor's state machine (`StateMachine::snapshot`).
    pub app: Vec<u8>,
}

/// Downloads the snapshot for `join_epoch` from the member whose client API
/// is at `api` (the SDK's HTTP/1.1 reader, with [`JOIN_SNAPSHOT_MAX_BYTES`]
/// as its body limit), on a blocking thread.
pub async fn fetch(api: SocketAddr, join_epoch: u64) -> Result<JoinSnapshot, String> {
    let get = move || -> Result<JoinSnapshot, String> {
        let mut s = std::net::TcpStream::connect_timeout(&api, JOIN_FETCH_TIMEOUT)
            .map_err(|e| format!("connect {api}: {e}"))?;
        s.set_read_timeout(Some(JOIN_FETCH_TIMEOUT))
            .map_err(|e| e.to_string())?;
        synod_client::http::write_request(
            &mut s,
            "GET",
            &api.to_string(),
            &format!("/v1/internal/snapshot?epoch={join_epoch}"),
            None,
        )
        .map_err(|e| format!("{api}: {e}"))?;
        let resp = synod_client::http::read_response_max(
            &mut std::io::BufReader::new(s),
            JOIN_SNAPSHOT_MAX_BYTES,
        )
        .map_err(|e| format!("{api}: {e}"))?;
        if resp.status != 200 {
            return Err(format!(
                "{api} answered {}: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body[..resp.body.len().min(300)])
            ));
        }
        postcard::from_bytes::<JoinSnapshot>(&resp.body)
            .map_err(|e| format!("{api}: undecodable snapshot: {e}"))
    };
    tokio::task::spawn_blocking(get)
        .await
        .map_err(|e| format!("snapshot download task: {e}"))?
}

/// Makes `snap` this replica's durable snapshot (fsynced before this
/// returns) and returns the state to start the core from. `rec` is what
/// [`crate::node::open_storage`] recovered: an empty data directory.
pub fn install(
    cfg: &NodeConfig,
    wal: &Wal,
    mut rec: Recovered,
    snap: JoinSnapshot,
) -> Result<Recovered, RuntimeError> {
    if snap.cluster_id != cfg.cluster_id {
        return Err(RuntimeError(format!(
            "snapshot from node {} is of cluster {}, this is cluster {}",
            snap.donor, snap.cluster_id, cfg.cluster_id
        )));
    }
    if !snap.epochs.current().contains(cfg.id) {
        return Err(RuntimeError(format!(
            "snapshot from node {}: node {} is not a member of its epoch {}",
            snap.donor,
            cfg.id,
            snap.epochs.current().epoch
        )));
    }
    let app = StateMachine::restore(&snap.app).map_err(|e| {
        RuntimeError(format!(
            "snapshot from node {}: state machine: {e}",
            snap.donor
        ))
    })?;
    let own = Snapshot {
        node: cfg.id,
        cluster_id: cfg.cluster_id,
        next_seq: 0,
        records: snap.records,
        processed: snap.processed,
        app: snap.app,
        epochs: snap.epochs,
    };
    let bytes = postcard::to_allocvec(&own).map_err(|e| RuntimeError(format!("encoding: {e}")))?;
    wal.write_snapshot(wal.last_lsn(), &bytes)
        .map_err(|e| RuntimeError(format!("writing the joined snapshot: {e}")))?;
    rec.records = own.records.into_iter().collect::<BTreeMap<_, _>>();
    rec.processed = own.processed.into_iter().collect();
    rec.next_seq = 0;
    rec.app = app;
    rec.epochs = Some(own.epochs);
    Ok(rec)
}

/// Time between a joining replica's checks of the control state (besides
/// every change of it) and between snapshot attempts.
pub const JOIN_RETRY: Duration = Duration::from_millis(500);

/// What the replica transport carries: the data plane's and the control
/// plane's messages, on one connection per pair of replicas.
#[derive(Serialize, Deserialize)]
pub enum PeerMessage {
    /// EPaxos\*.
    Data(synod_epaxos::Message),
    /// The Raft control plane.
    Control(synod_control::ControlMessage),
}

/// How the control plane describes a member of `cfg`.
pub fn member_info(m: &crate::config::Member) -> synod_control::MemberInfo {
    synod_control::MemberInfo {
        peer_addr: m.peer_addr,
        api_addr: m.api_addr,
        grpc_addr: m.grpc_addr,
    }
}

/// Keeps the transport's peers equal to the nodes the control state names
/// (every member of the current epoch and of any epoch not yet complete),
/// or to the configured members until the control state is initialised.
/// Runs until the control plane stops publishing.
pub async fn sync_peers(
    me: NodeId,
    configured: BTreeMap<NodeId, SocketAddr>,
    transport: synod_transport::Transport<PeerMessage>,
    mut state: tokio::sync::watch::Receiver<std::sync::Arc<synod_control::ControlState>>,
) {
    loop {
        let want: BTreeMap<NodeId, SocketAddr> = {
            let st = state.borrow_and_update();
            if st.is_initialised() {
                st.nodes
                    .iter()
                    .filter(|(id, _)| **id != me)
                    .map(|(id, i)| (*id, i.peer_addr))
                    .collect()
            } else {
                configured.clone()
            }
        };
        let have = transport.peers();
        for (id, addr) in &want {
            if have.get(id) != Some(addr) {
                match transport.add_peer(*id, *addr) {
                    Ok(()) => tracing::info!(peer = id, %addr, "transport: peer added"),
                    Err(e) => tracing::warn!(peer = id, %addr, "transport: cannot add peer: {e}"),
                }
            }
        }
        for id in have.keys() {
            if !want.contains_key(id) && transport.remove_peer(*id) {
                tracing::info!(
                    peer = id,
                    "transport: peer removed (no longer in any live epoch)"
                );
            }
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

/// The joining phase of a replica without data-plane state: delivers
/// control-plane messages (data-plane ones are dropped: the senders
/// retransmit), waits until the control state makes this replica a member
/// of some epoch E+1 and epoch E is complete, then fetches a snapshot from
/// a member that executed E and installs it. Returns the state to start the
/// core from, or `None` if `shutdown` fired first.
pub async fn join(
    cfg: &NodeConfig,
    wal: &Wal,
    rec: Recovered,
    control: &synod_control::Control,
    inbound: &mut tokio::sync::mpsc::Receiver<(NodeId, PeerMessage)>,
    shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> Result<Option<Recovered>, RuntimeError> {
    let me = cfg.id;
    let mut state = control.state();
    let mut retry = tokio::time::interval(JOIN_RETRY);
    tracing::info!(
        node = me,
        "joining: waiting to be added (`synod member add {me} ...` on a member) and for the previous epoch to complete"
    );
    let mut announced = None;
    loop {
        tokio::select! {
            biased;
            _ = &mut *shutdown => return Ok(None),
            Some((from, m)) = inbound.recv() => {
                if let PeerMessage::Control(m) = m {
                    control.deliver(from, m);
                }
                continue;
            }
            _ = state.changed() => {}
            _ = retry.tick() => {}
        }
        let st = state.borrow_and_update().clone();
        let Some(first) = st
            .epochs
            .iter()
            .find(|(_, r)| r.config.contains(me))
            .map(|(e, _)| *e)
        else {
            continue;
        };
        if first == 0 {
            return Err(RuntimeError(format!(
                "node {me} is an initial member of the cluster, not a joining one: remove `join` from its config"
            )));
        }
        if announced != Some(first) {
            tracing::info!(
                node = me,
                epoch = first,
                "joining: added in epoch {first}; waiting for epoch {} to complete",
                first - 1
            );
            announced = Some(first);
        }
        if !st.complete(first - 1) {
            continue;
        }
        let donors: Vec<(NodeId, SocketAddr)> = st.epochs[&(first - 1)]
            .done
            .iter()
            .filter(|d| **d != me)
            .filter_map(|d| st.nodes.get(d).map(|i| (*d, i.api_addr)))
            .collect();
        for (donor, api) in donors {
            match fetch(api, first).await {
                Ok(snap) => {
                    tracing::info!(
                        node = me,
                        donor,
                        records = snap.records.len(),
                        processed = snap.processed.len(),
                        "joining: snapshot received; installing"
                    );
                    return tokio::task::block_in_place(|| install(cfg, wal, rec, snap)).map(Some);
                }
                Err(e) => tracing::warn!(
                    node = me,
                    donor,
                    "joining: no snapshot from node {donor}: {e}"
                ),
            }
        }
    }
}
