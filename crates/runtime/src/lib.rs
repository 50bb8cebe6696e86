//! The tokio shell around Synod's pure cores: one replica as a process.
//!
//! [`run`] opens the data directory (WAL + snapshots, `synod-storage`),
//! rebuilds the core from it, starts the replica transport
//! (`synod-transport`), the HTTP API ([`api`]) and, if the member has a
//! `grpc_addr`, the gRPC API ([`grpc`]), and drives the core in the replica
//! loop ([`node`]), which enforces persist → send → execute → reply for
//! every output.
#![deny(missing_docs)]

pub mod api;
pub mod config;
pub mod grpc;
pub mod members_api;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod release;
pub mod stream;
pub use config::NodeConfig;

use membership::PeerMessage;
use std::sync::Arc;
use synod_transport::{Transport, TransportConfig};
use tokio::sync::{mpsc, oneshot, watch};

/// Capacity of the query channel (status, reads, log pages) into the loop.
pub const QUERY_QUEUE: usize = 1024;

/// Why a replica stopped.
#[derive(Debug)]
pub struct RuntimeError(pub String);

impl std::fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RuntimeError {}

/// A random id for this process incarnation (the runtime may use OS
/// randomness; the cores may not).
fn boot_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// What an add-on service (Kafka ingest and egress, `synod-kafka`) gets
/// once the replica serves its API.
#[derive(Clone)]
pub struct ServiceContext {
    /// The replica's configuration.
    pub config: NodeConfig,
    /// The control plane (leases, replicated state).
    pub control: synod_control::Control,
    /// The replica's metrics (see [`metrics::Metrics::kafka`]).
    pub metrics: metrics::Metrics,
    /// The tokio runtime the replica runs on, for services that block on
    /// control-plane calls from their own threads.
    pub runtime: tokio::runtime::Handle,
}

/// Stops the services a [`StartServices`] started; called (on a blocking
/// thread) when the replica is asked to stop, before its loop stops, and
/// expected to return within a few seconds.
pub type StopServices = Box<dyn FnOnce() + Send>;

/// Starts add-on services once the replica serves; see [`run_with`].
pub type StartServices = Box<dyn FnOnce(ServiceContext) -> StopServices + Send>;

/// Runs one replica until `shutdown` resolves, then stops gracefully: stops
/// taking proposals, makes everything appended durable and releases it,
/// answers the remaining waiters "unavailable, retry", closes the WAL and
/// the connections.
pub async fn run(
    cfg: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), RuntimeError> {
    run_with(cfg, shutdown, None).await
}

/// [`run`], plus add-on services started once the API serves and stopped
/// first at shutdown.
pub async fn run_with(
    cfg: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
    services: Option<StartServices>,
) -> Result<(), RuntimeError> {
    cfg.validate().map_err(|e| RuntimeError(e.to_string()))?;
    let me = cfg.me().expect("validated").clone();
    let boot_id = boot_id();

    let (durable_tx, durable_rx) = mpsc::unbounded_channel();
    let scfg = cfg.clone();
    let (wal, rec) = tokio::task::spawn_blocking(move || {
        node::open_storage(
            &scfg,
            Box::new(move |lsn| {
                let _ = durable_tx.send(lsn);
            }),
        )
    })
    .await
    .map_err(|e| RuntimeError(format!("opening storage: {e}")))??;
    tracing::info!(
        node = cfg.id,
        instances = rec.records.len(),
        applied_in_snapshot = rec.processed.len(),
        replayed_wal_records = rec.replayed,
        data_dir = %cfg.data_dir.display(),
        "recovered"
    );
    let wal = Arc::new(wal);

    let peers: std::collections::BTreeMap<_, _> = cfg
        .members
        .iter()
        .filter(|m| m.id != cfg.id)
        .map(|m| (m.id, m.peer_addr))
        .collect();
    let mut tcfg = TransportConfig::new(cfg.id, cfg.cluster_id, me.peer_addr, peers.clone());
    tcfg.max_frame_bytes = cfg.transport.max_frame_bytes;
    tcfg.peer_queue_capacity = cfg.transport.peer_queue_capacity;
    let (transport, mut inbound) = Transport::<PeerMessage>::start(tcfg)
        .await
        .map_err(|e| RuntimeError(format!("transport: {e}")))?;

    // The control plane: its log in <data_dir>/control, its messages on the
    // same transport.
    let control = {
        let t = transport.clone();
        synod_control::Control::start(
            synod_control::ControlConfig {
                me: cfg.id,
                cluster_id: cfg.cluster_id,
                dir: cfg.data_dir.join("control"),
                me_info: membership::member_info(&me),
            },
            Arc::new(move |to, m| {
                let _ = t.send(to, PeerMessage::Control(m));
            }),
        )
        .await
        .map_err(|e| RuntimeError(format!("control plane: {e}")))?
    };
    if !cfg.join {
        let members = cfg
            .members
            .iter()
            .map(|m| (m.id, membership::member_info(m)))
            .collect();
        let c = control.clone();
        tokio::spawn(async move {
            if let Err(e) = c.initialize(members).await {
                tracing::warn!("control plane: initialize: {e}");
            }
        });
    }
    tokio::spawn(membership::sync_peers(
        cfg.id,
        peers,
        transport.clone(),
        control.state(),
    ));
    let mut shutdown = std::pin::pin!(shutdown);
    let rec = if rec.epochs.is_none() {
        match membership::join(&cfg, &wal, rec, &control, &mut inbound, &mut shutdown).await? {
            Some(rec) => rec,
            None => {
                transport.shutdown().await;
                control.shutdown().await;
                return Ok(());
            }
        }
    } else {
        rec
    };

    let (ptx, prx) = mpsc::channel(cfg.limits.max_waiting_proposals);
    let (qtx, qrx) = mpsc::channel(QUERY_QUEUE);
    let handle = node::Handle {
        proposals: ptx,
        queries: qtx,
        node: cfg.id,
        boot_id,
    };
    let metrics = {
        // Weak: the registry (held by the router) must not keep the WAL from
        // being closed at shutdown.
        let wal = Arc::downgrade(&wal);
        let transport = transport.clone();
        metrics::Metrics::new(
            Box::new(move || wal.upgrade().map(|w| w.stats())),
            Box::new(move || {
                let peers = transport.stats().peers;
                peers.into_iter().map(|(p, s)| (p, s.connected)).collect()
            }),
            {
                let control = control.clone();
                Box::new(move || {
                    let s = control.status();
                    metrics::ControlGauges {
                        term: s.term,
                        is_leader: s.is_leader,
                        commit_index: s.commit_index,
                        epoch: control.state().borrow().current_epoch().unwrap_or(0),
                    }
                })
            },
        )
    };
    let node = node::Node::new(
        cfg.clone(),
        boot_id,
        wal.clone(),
        rec,
        transport.clone(),
        control.clone(),
        metrics.clone(),
    )?;

    let listener = tokio::net::TcpListener::bind(me.api_addr)
        .await
        .map_err(|e| RuntimeError(format!("HTTP API: cannot listen on {}: {e}", me.api_addr)))?;
    let grpc_listener = match me.grpc_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| RuntimeError(format!("gRPC API: cannot listen on {addr}: {e}")))?,
        ),
        None => None,
    };
    // Both APIs stop once the loop has stopped (its waiters answered
    // "unavailable", streams ended), each after its open requests finish.
    let (stop_apis_tx, stop_apis_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let service_ctx = ServiceContext {
        config: cfg.clone(),
        control: control.clone(),
        metrics: metrics.clone(),
        runtime: tokio::runtime::Handle::current(),
    };
    let api = api::Api::new(
        handle,
        control.clone(),
        metrics,
        cfg.limits.propose_timeout_ms,
    );
    let router = api::router(api.clone(), cfg.limits.max_request_bytes);
    let http_stopped = stopped(stop_apis_rx.clone());
    let http = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(http_stopped)
            .await
    });
    let grpc = grpc_listener.map(|l| {
        tokio::spawn(grpc::serve(
            l,
            api,
            cfg.limits.max_request_bytes,
            stopped(stop_apis_rx),
        ))
    });
    tracing::info!(
        node = cfg.id,
        api = %me.api_addr,
        grpc = %me.grpc_addr.map_or("-".to_string(), |a| a.to_string()),
        peer = %me.peer_addr,
        "serving"
    );

    let (stop_tx, stop_rx) = oneshot::channel();
    let mut node_task = tokio::spawn(node.run(inbound, prx, qrx, durable_rx, stop_rx));
    let mut stop_services = services.map(|start| start(service_ctx));
    let result = tokio::select! {
        r = &mut node_task => r,
        _ = &mut shutdown => {
            tracing::info!(node = cfg.id, "stopping");
            if let Some(stop) = stop_services.take() {
                let _ = tokio::task::spawn_blocking(stop).await;
            }
            let _ = stop_tx.send(());
            (&mut node_task).await
        }
    };
    if let Some(stop) = stop_services.take() {
        let _ = tokio::task::spawn_blocking(stop).await;
    }
    let _ = stop_apis_tx.send(true);
    let _ = http.await;
    if let Some(grpc) = grpc {
        match grpc.await {
            Ok(Err(e)) => tracing::warn!("gRPC API: {e}"),
            Err(e) => tracing::warn!("gRPC API task: {e}"),
            Ok(Ok(())) => {}
        }
    }
    transport.shutdown().await;
    control.shutdown().await;
    let result = result.map_err(|e| RuntimeError(format!("replica loop: {e}")))?;
    match Arc::try_unwrap(wal) {
        Ok(wal) => wal
            .close()
            .map_err(|e| RuntimeError(format!("closing the WAL: {e}")))?,
        Err(_) => tracing::warn!("WAL still shared at shutdown (a snapshot is running)"),
    }
    result
}
