//! The per-peer writer task: owns the peer's queue and outbound connection
//! (see the crate docs, "Connections").
//!
//! Invariants:
//! - at most one outbound connection per peer exists at a time (this task
//!   owns it; a writer that replaces another, because the peer moved, starts
//!   only once the aborted one has ended);
//! - `pending` holds at most one frame, whose write failed, so no complete
//!   copy of it reached the peer; it is written first on the next connection;
//! - `carry` holds at most one message, already taken from the queue, that
//!   did not fit into the previous frame; it starts the next frame.

use crate::codec::{CodecError, FrameBuilder, Hello, HELLO_LEN};
use crate::peer::PeerLink;
use crate::stats::bump;
use crate::{shutdown_signal, Shared};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use synod_types::{NodeId, SplitMix64};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// How a connection ended.
enum Ended {
    /// Shutdown: the task exits.
    Shutdown,
    /// The connection broke; redial.
    Broken,
}

/// A frame whose write failed, with its message count.
struct Pending {
    frame: Vec<u8>,
    messages: u64,
}

pub(crate) struct Writer<M> {
    shared: Arc<Shared>,
    peer: NodeId,
    addr: SocketAddr,
    /// The peer's record; a writer that replaces another (the peer moved)
    /// keeps counting into the same one.
    link: Arc<PeerLink>,
    queue: mpsc::Receiver<M>,
    shutdown: watch::Receiver<bool>,
    builder: FrameBuilder,
    carry: Option<M>,
    pending: Option<Pending>,
    /// Jitter for the backoff; seeded per node pair and start time so peers
    /// do not redial in lockstep (randomness is fine here: this is the I/O
    /// shell, not a core).
    rng: SplitMix64,
}

impl<M: Serialize + Send + 'static> Writer<M> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        peer: NodeId,
        addr: SocketAddr,
        link: Arc<PeerLink>,
        queue: mpsc::Receiver<M>,
        shutdown: watch::Receiver<bool>,
    ) -> Writer<M> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = nanos ^ (u64::from(shared.cfg.me) << 32) ^ u64::from(peer);
        Writer {
            shared,
            peer,
            addr,
            link,
            queue,
            shutdown,
            builder: FrameBuilder::new(),
            carry: None,
            pending: None,
            rng: SplitMix64::new(seed),
        }
    }

    pub(crate) async fn run(mut self) {
        let min = self.shared.cfg.reconnect_min;
        let max = self.shared.cfg.reconnect_max;
        let mut delay = min;
        // A writer replaced while connected (its task aborted) left the flag
        // set; this one has no connection yet.
        self.link.counters.connected.store(false, Ordering::Relaxed);
        loop {
            let mut shutdown = self.shutdown.clone();
            let dialed = tokio::select! {
                biased;
                _ = shutdown_signal(&mut shutdown) => return,
                r = connect(&self.shared, self.peer, self.addr) => r,
            };
            match dialed {
                Ok(stream) => {
                    delay = min;
                    bump(&self.link.counters.connects, 1);
                    self.link.counters.connected.store(true, Ordering::Relaxed);
                    let ended = self.serve(stream).await;
                    self.link.counters.connected.store(false, Ordering::Relaxed);
                    match ended {
                        Ended::Shutdown => return,
                        Ended::Broken => bump(&self.link.counters.disconnects, 1),
                    }
                }
                Err(_) => {
                    bump(&self.link.counters.connect_failures, 1);
                }
            }
            // Wait before the next dial, also after a break: a peer that
            // closes right after the handshake must not make us spin.
            let wait = self.jitter(delay);
            delay = (delay * 2).min(max);
            tokio::select! {
                biased;
                _ = shutdown_signal(&mut shutdown) => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// A wait drawn uniformly from `[delay/2, delay]`.
    fn jitter(&mut self, delay: Duration) -> Duration {
        let half = delay / 2;
        let span = (delay - half).as_micros() as u64;
        half + Duration::from_micros(self.rng.below(span.max(1)))
    }

    /// Writes frames on one connection until it breaks or shutdown.
    async fn serve(&mut self, stream: TcpStream) -> Ended {
        let (mut rd, mut wr) = stream.into_split();
        if let Some(p) = self.pending.take() {
            if wr.write_all(&p.frame).await.is_err() {
                self.pending = Some(p);
                return Ended::Broken;
            }
            self.count_sent(p.frame.len(), p.messages);
        }
        let mut shutdown = self.shutdown.clone();
        loop {
            let first = match self.carry.take() {
                Some(m) => m,
                None => {
                    tokio::select! {
                        biased;
                        _ = shutdown_signal(&mut shutdown) => {
                            self.flush(&mut wr).await;
                            return Ended::Shutdown;
                        }
                        _ = peer_closed(&mut rd) => return Ended::Broken,
                        m = self.queue.recv() => match m {
                            Some(m) => m,
                            None => {
                                // Every handle was dropped.
                                self.flush(&mut wr).await;
                                return Ended::Shutdown;
                            }
                        },
                    }
                }
            };
            self.fill_frame(first);
            if self.builder.is_empty() {
                continue;
            }
            if !self.write_frame(&mut wr).await {
                return Ended::Broken;
            }
        }
    }

    /// Encodes `first` and then whatever is queued, up to the batch limits.
    fn fill_frame(&mut self, first: M) {
        self.builder.clear();
        let max_messages = self.shared.cfg.batch_max_messages;
        let max_bytes = self.shared.cfg.batch_max_bytes;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            if !self.push(msg) {
                break;
            }
            if self.builder.len() >= max_messages || self.builder.body_len() >= max_bytes {
                break;
            }
            next = self.queue.try_recv().ok();
        }
    }

    /// Adds `msg` to the frame; false when it did not fit and was kept in
    /// `carry` for the next frame.
    fn push(&mut self, msg: M) -> bool {
        match self.builder.push(&msg, self.shared.cfg.max_frame_bytes) {
            Ok(()) => true,
            Err(CodecError::TooLarge { .. }) if self.builder.is_empty() => {
                bump(&self.link.counters.dropped_too_large, 1);
                true
            }
            Err(CodecError::TooLarge { .. }) => {
                self.carry = Some(msg);
                false
            }
            Err(_) => {
                bump(&self.link.counters.dropped_unencodable, 1);
                true
            }
        }
    }

    /// Writes the built frame; on failure keeps it as `pending`.
    async fn write_frame(&mut self, wr: &mut OwnedWriteHalf) -> bool {
        let messages = self.builder.len() as u64;
        let frame = self.builder.finish();
        match wr.write_all(frame).await {
            Ok(()) => {
                let len = frame.len();
                self.count_sent(len, messages);
                true
            }
            Err(_) => {
                self.pending = Some(Pending {
                    frame: frame.to_vec(),
                    messages,
                });
                false
            }
        }
    }

    fn count_sent(&self, bytes: usize, messages: u64) {
        bump(&self.link.counters.sent_frames, 1);
        bump(&self.link.counters.sent_messages, messages);
        bump(&self.link.counters.sent_bytes, bytes as u64);
    }

    /// Best-effort: writes what is queued now, then closes our direction.
    /// Bounded by the caller's [`SHUTDOWN_FLUSH_MAX`](crate::SHUTDOWN_FLUSH_MAX).
    async fn flush(&mut self, wr: &mut OwnedWriteHalf) {
        loop {
            let first = match self.carry.take() {
                Some(m) => m,
                None => match self.queue.try_recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            self.fill_frame(first);
            if !self.builder.is_empty() && !self.write_frame(wr).await {
                return;
            }
        }
        let _ = wr.shutdown().await;
    }
}

/// Dials and exchanges Hellos, each step within `connect_timeout`.
async fn connect(shared: &Shared, peer: NodeId, addr: SocketAddr) -> Result<TcpStream, String> {
    let timeout = shared.cfg.connect_timeout;
    let mut stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let hello = Hello::new(shared.cfg.cluster_id, shared.cfg.me).encode();
    let mut answer = [0u8; HELLO_LEN];
    tokio::time::timeout(timeout, async {
        stream.write_all(&hello).await?;
        stream.read_exact(&mut answer).await
    })
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let theirs = Hello::decode(&answer).map_err(|e| e.to_string())?;
    // The answer must come from the node we meant to dial: catches a
    // peer map pointing at the wrong address.
    theirs
        .verify(shared.cfg.cluster_id, |from| from == peer)
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Resolves when the peer closes or resets the connection. The acceptor
/// never writes after its Hello, so any read result means the connection is
/// over (data would be a protocol violation).
async fn peer_closed(rd: &mut OwnedReadHalf) {
    let mut probe = [0u8; 1];
    let _ = rd.read(&mut probe).await;
}
