//! The listener task and the per-connection reader tasks (see the crate
//! docs, "Connections").
//!
//! Invariants:
//! - no message is pushed before the connection's Hello passed (magic,
//!   version, cluster id, sender in the peer table at that moment);
//! - no buffer larger than `max_frame_bytes` is ever allocated for a frame:
//!   the length prefix is checked first;
//! - any protocol error closes only that connection; nothing here panics on
//!   peer input;
//! - at most [`MAX_INBOUND_CONNECTIONS`] reader tasks exist, and at most one
//!   per peer has passed the handshake and is still reading (a newer one
//!   supersedes it, and removing the peer closes it).

use crate::codec::{self, Hello, FRAME_HEADER_LEN, HELLO_LEN};
use crate::peer::PeerLink;
use crate::stats::{bump, PeerCounters};
use crate::{
    shutdown_signal, Shared, MAX_INBOUND_CONNECTIONS, READ_BUFFER_BYTES,
    READ_BUFFER_RETAINED_MAX_BYTES,
};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use synod_types::NodeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop
/// does not spin; short enough that a transient error costs little.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

pub(crate) async fn accept_loop<M: DeserializeOwned + Send + 'static>(
    shared: Arc<Shared>,
    listener: TcpListener,
    inbound: mpsc::Sender<(NodeId, M)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut readers = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown_signal(&mut shutdown) => break,
            r = listener.accept() => r,
        };
        while readers.try_join_next().is_some() {}
        match accepted {
            Ok((stream, _addr)) => {
                bump(&shared.global.accepted, 1);
                if readers.len() >= MAX_INBOUND_CONNECTIONS {
                    bump(&shared.global.refused_over_limit, 1);
                    drop(stream);
                    continue;
                }
                let shared = Arc::clone(&shared);
                let inbound = inbound.clone();
                let shutdown = shutdown.clone();
                readers.spawn(read_connection(shared, stream, inbound, shutdown));
            }
            Err(_) => {
                tokio::select! {
                    biased;
                    _ = shutdown_signal(&mut shutdown) => break,
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                }
            }
        }
    }
    drop(listener);
    readers.shutdown().await;
}

/// Handshakes, then reads frames until an error, EOF, shutdown, or a newer
/// connection from the same peer.
async fn read_connection<M: DeserializeOwned + Send + 'static>(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    inbound: mpsc::Sender<(NodeId, M)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (from, link) = tokio::select! {
        biased;
        _ = shutdown_signal(&mut shutdown) => return,
        r = handshake(&shared, &mut stream) => match r {
            Some(accepted) => accepted,
            None => {
                bump(&shared.global.handshakes_refused, 1);
                return;
            }
        },
    };
    // `None`: the peer was removed since its Hello was checked. Counted as
    // refused; the dialer, which already has our Hello, sees a close.
    let Some((mine, mut superseded)) = link.register_inbound() else {
        bump(&shared.global.handshakes_refused, 1);
        return;
    };
    bump(&link.counters.inbound_connections, 1);
    tokio::select! {
        biased;
        _ = shutdown_signal(&mut shutdown) => {}
        _ = superseded.wait_for(|g| *g != mine) => {}
        _ = read_frames(&shared, &link.counters, stream, from, &inbound) => {}
    }
}

/// Reads and checks the dialer's Hello (the sender must be in the peer
/// table now), answers with ours. `None` when refused (the connection is
/// then dropped without an answer).
async fn handshake(shared: &Shared, stream: &mut TcpStream) -> Option<(NodeId, Arc<PeerLink>)> {
    let cfg = &shared.cfg;
    let _ = stream.set_nodelay(true);
    let mut bytes = [0u8; HELLO_LEN];
    tokio::time::timeout(cfg.connect_timeout, stream.read_exact(&mut bytes))
        .await
        .ok()?
        .ok()?;
    let hello = Hello::decode(&bytes).ok()?;
    let link = shared.link(hello.from);
    hello.verify(cfg.cluster_id, |_| link.is_some()).ok()?;
    let answer = Hello::new(cfg.cluster_id, cfg.me).encode();
    tokio::time::timeout(cfg.connect_timeout, stream.write_all(&answer))
        .await
        .ok()?
        .ok()?;
    Some((hello.from, link?))
}

/// The frame loop. Returns on EOF, I/O error, protocol error (counted), or
/// when the inbound receiver is gone.
async fn read_frames<M: DeserializeOwned>(
    shared: &Shared,
    counters: &PeerCounters,
    stream: TcpStream,
    from: NodeId,
    inbound: &mpsc::Sender<(NodeId, M)>,
) {
    let max = shared.cfg.max_frame_bytes;
    let mut rd = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
    let mut body = Vec::new();
    loop {
        let mut header = [0u8; FRAME_HEADER_LEN];
        if rd.read_exact(&mut header).await.is_err() {
            return;
        }
        let len = match codec::check_frame_len(header, max) {
            Ok(len) => len,
            Err(_) => {
                bump(&counters.decode_errors, 1);
                return;
            }
        };
        body.clear();
        body.resize(len, 0);
        if rd.read_exact(&mut body).await.is_err() {
            return;
        }
        let msgs = match codec::decode_frame::<M>(&body) {
            Ok(msgs) => msgs,
            Err(_) => {
                bump(&counters.decode_errors, 1);
                return;
            }
        };
        bump(&counters.received_frames, 1);
        bump(&counters.received_bytes, (FRAME_HEADER_LEN + len) as u64);
        if body.capacity() > READ_BUFFER_RETAINED_MAX_BYTES {
            body = Vec::new();
        }
        for msg in msgs {
            if inbound.send((from, msg)).await.is_err() {
                return;
            }
            bump(&counters.received_messages, 1);
        }
    }
}
