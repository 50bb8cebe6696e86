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
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest snapshot a joining replica accepts. It holds the whole state
/// machine and the processed ids; 1 GiB is far above the test and bench
/// states and still fits in memory twice (body + decoded).
pub const JOIN_SNAPSHOT_MAX_BYTES: usize = 1 << 30;

/// Time one snapshot download may take before the joiner tries another
/// member.
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
/// is at `api`.
pub async fn fetch(api: SocketAddr, join_epoch: u64) -> Result<JoinSnapshot, String> {
    let run = async {
        let mut s = tokio::net::TcpStream::connect(api)
            .await
            .map_err(|e| format!("connect {api}: {e}"))?;
        let mut req = Vec::new();
        synod_client::http::write_request(
            &mut req,
            "GET",
            &api.to_string(),
            &format!("/v1/internal/snapshot?epoch={join_epoch}"),
            None,
        )
        .map_err(|e| e.to_string())?;
        s.write_all(&req).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        (&mut s)
            .take(JOIN_SNAPSHOT_MAX_BYTES as u64 + 64 * 1024)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| format!("reading from {api}: {e}"))?;
        let split = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("{api}: malformed response"))?;
        let head = String::from_utf8_lossy(&buf[..split]).to_string();
        let body = &buf[split + 4..];
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if status != "200" {
            return Err(format!(
                "{api} answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        if body.len() > JOIN_SNAPSHOT_MAX_BYTES {
            return Err(format!(
                "{api}: snapshot above JOIN_SNAPSHOT_MAX_BYTES ({JOIN_SNAPSHOT_MAX_BYTES})"
            ));
        }
        postcard::from_bytes::<JoinSnapshot>(body)
            .map_err(|e| format!("{api}: undecodable snapshot: {e}"))
    };
    tokio::time::timeout(JOIN_FETCH_TIMEOUT, run)
        .await
        .map_err(|_| format!("{api}: no snapshot within {JOIN_FETCH_TIMEOUT:?}"))?
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
