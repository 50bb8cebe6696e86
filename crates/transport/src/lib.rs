//! Replica-to-replica messaging over TCP (architecture.md §2, "Replica
//! transport"): length-prefixed postcard frames, batched per peer, bounded
//! queues, reconnect with backoff.
//!
//! The message type `M` is generic; in production it is
//! `synod_epaxos::Message`. The wire format is in [`codec`].
//!
//! # Connections
//!
//! Every node *dials* every peer for its own outbound traffic and *accepts*
//! connections that carry the peers' traffic to it, so each ordered pair of
//! nodes has its own one-way TCP connection:
//!
//! - one **writer task per peer** owns that peer's bounded queue and its
//!   outbound connection. It connects (with [`TransportConfig::connect_timeout`]),
//!   exchanges [`codec::Hello`]s, then loops: wait for a message, drain more
//!   from the queue up to the batch limits, encode one frame, write it. There
//!   is no linger timer: a lone message goes out at once, and under load the
//!   queue fills while a frame is being written, so frames grow by themselves.
//!   While idle it also watches the socket for EOF, so a peer that restarted
//!   is redialled before the next message is written into a dead socket.
//!   On any error it redials with exponential backoff and jitter between
//!   [`TransportConfig::reconnect_min`] and [`TransportConfig::reconnect_max`],
//!   keeping the queue and the one frame whose write failed (resent first).
//! - the **listener task** accepts connections; each gets a **reader task**
//!   that reads the dialer's Hello (magic, version, cluster id, sender is a
//!   known peer), answers with its own Hello, and from then on only reads:
//!   each frame's length prefix is checked against
//!   [`TransportConfig::max_frame_bytes`] before the body is allocated, the
//!   body is decoded, and each message is pushed into the inbound channel
//!   tagged with the sender's id. A new accepted connection from a peer
//!   closes the previous one from that peer (it is stale: the peer only
//!   redials after giving it up).
//!
//! # Delivery guarantees (what the consensus layer may assume)
//!
//! - **No duplicates, no corruption**: a frame is decoded whole or the
//!   connection is closed; a frame is resent only if its write failed, and
//!   then no complete copy can have reached the peer.
//! - **FIFO per peer while one connection lives**: messages to one peer go
//!   out in `send` order over one TCP stream.
//! - **Loss is possible** and must be handled by retransmission (the EPaxos\*
//!   core retransmits): a full queue refuses new messages
//!   ([`SendError::QueueFull`]); frames already written into a socket that
//!   then breaks are lost; messages queued when [`Transport::shutdown`]
//!   runs are written best-effort only; a message that encodes larger than
//!   `max_frame_bytes` is dropped and counted; a reader stopped because its
//!   peer reconnected loses what it had not yet delivered.
//! - **Back-pressure on receive**: the inbound channel is bounded; when the
//!   application does not keep up, readers stop reading and TCP flow control
//!   pushes back to the senders, whose queues then fill and refuse.
//!
//! # Limits (every one bounded; see [`TransportConfig`] for the defaults)
//!
//! | limit | bounds |
//! |---|---|
//! | `max_frame_bytes` | one allocation per received frame; larger is a protocol error. Only a connection past the handshake allocates, and only one such connection per peer lives, so receive buffers total ≤ peers × `max_frame_bytes` |
//! | `peer_queue_capacity` | memory held for one unreachable peer |
//! | `batch_max_messages`, `batch_max_bytes` | one frame's size and encode time, so one peer cannot hog the writer |
//! | `inbound_capacity` | memory between the sockets and the application |
//! | [`MAX_INBOUND_CONNECTIONS`] | sockets and tasks an unauthenticated flood can create |
//! | `connect_timeout` | one connection attempt and one handshake (both directions) |
//! | `reconnect_min`/`reconnect_max` | redial rate towards a dead peer |
//! | [`SHUTDOWN_FLUSH_MAX`] | how long `shutdown` waits for best-effort flushing |
//! | [`READ_BUFFER_RETAINED_MAX_BYTES`] | memory one idle connection keeps after a large frame |
//!
//! Not yet: TLS between replicas (quality-bars R10) and a way to change the
//! peer set without a restart.

#![deny(missing_docs)]

pub mod codec;
mod reader;
mod stats;
mod writer;

pub use stats::{PeerStats, TransportStats};

use stats::{GlobalCounters, PeerCounters};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synod_types::NodeId;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Default [`TransportConfig::max_frame_bytes`]: 16 MiB. Far above a
/// default batch (1 MiB soft, [`DEFAULT_BATCH_MAX_BYTES`]) so that one large
/// message (a PreAccept carrying a batch of big decisions) still fits, yet
/// small enough that a corrupt or hostile length prefix cannot make a reader
/// allocate much.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 16 << 20;

/// Default [`TransportConfig::peer_queue_capacity`]: 65 536 messages. At
/// ~100–200 bytes per message that is ≤ ~13 MiB per unreachable peer, and at
/// the 100k decisions/s target (quality-bars P3) it covers ~0.5 s of traffic
/// to a peer that is briefly slow or reconnecting.
pub const DEFAULT_PEER_QUEUE_CAPACITY: usize = 65_536;

/// Default [`TransportConfig::batch_max_messages`]: 1024 messages per frame.
/// Amortises the per-frame syscall and header over many messages; past a
/// thousand the gain is nil and the frame just delays the next one.
pub const DEFAULT_BATCH_MAX_MESSAGES: usize = 1024;

/// Default [`TransportConfig::batch_max_bytes`]: 1 MiB per frame (soft: the
/// message that crosses it is still included). Keeps a frame's write time on
/// loopback in the sub-millisecond range so small urgent messages behind it
/// are not held long.
pub const DEFAULT_BATCH_MAX_BYTES: usize = 1 << 20;

/// Default [`TransportConfig::inbound_capacity`]: 65 536 messages, the same
/// as one peer queue, so a burst one peer may queue fits on the receive side.
pub const DEFAULT_INBOUND_CAPACITY: usize = 65_536;

/// Default [`TransportConfig::reconnect_min`]: 10 ms. A peer that restarted
/// is usually back within that; redialling faster only burns CPU.
pub const DEFAULT_RECONNECT_MIN: Duration = Duration::from_millis(10);

/// Default [`TransportConfig::reconnect_max`]: 1 s. Caps how long a healed
/// peer waits for our traffic, while a dead peer costs one dial per second.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(1);

/// Default [`TransportConfig::connect_timeout`]: 1 s. Hundreds of
/// round-trips even across regions; a dial that takes longer is treated as
/// failed and retried with backoff.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Accepted connections alive at once (handshaking or reading). A healthy
/// cluster needs one per peer (a stale one is closed when its peer
/// reconnects); 256 is far above any cluster size we run (≤ 7 replicas) and
/// bounds the sockets and tasks a connection flood can make us hold. Beyond
/// it a new connection is closed at once and counted.
pub const MAX_INBOUND_CONNECTIONS: usize = 256;

/// How long [`Transport::shutdown`] waits for tasks to flush their queues
/// and exit before aborting them. Flushing is best-effort (the protocol
/// retransmits), so this only needs to cover a few frames on a live
/// connection, not a slow or stopped peer.
pub const SHUTDOWN_FLUSH_MAX: Duration = Duration::from_secs(1);

/// A reader keeps its frame buffer between frames up to this capacity and
/// frees it after a larger frame, so one 16 MiB frame does not pin 16 MiB for
/// the connection's lifetime. 4 MiB is above a default batch
/// ([`DEFAULT_BATCH_MAX_BYTES`]), so normal traffic never reallocates.
pub const READ_BUFFER_RETAINED_MAX_BYTES: usize = 4 << 20;

/// Bytes of the buffered reader in front of each accepted socket: many small
/// frames are read with one syscall.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// Largest queue or channel capacity tokio's bounded channel accepts.
const CHANNEL_CAPACITY_MAX: usize = usize::MAX >> 3;

/// Everything a transport needs; build with [`TransportConfig::new`] and
/// adjust fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// This node's id, sent in every Hello.
    pub me: NodeId,
    /// Both ends must agree; a mismatch is refused at handshake, so two
    /// clusters sharing hosts never exchange messages.
    pub cluster_id: u64,
    /// Address [`Transport::start`] binds (port 0 picks a free port; see
    /// [`Transport::local_addr`]).
    pub listen: SocketAddr,
    /// The other replicas and where to dial them. Excludes `me`. Only these
    /// ids are accepted in an inbound Hello.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Largest frame body in bytes, sent or received
    /// ([`DEFAULT_MAX_FRAME_BYTES`]). A larger length prefix on receive is a
    /// protocol error that closes the connection; on send, a single message
    /// that encodes larger is dropped and counted.
    pub max_frame_bytes: u32,
    /// Messages queued per peer ([`DEFAULT_PEER_QUEUE_CAPACITY`]); when full,
    /// [`Transport::send`] returns [`SendError::QueueFull`] and drops the
    /// message (older queued messages are kept).
    pub peer_queue_capacity: usize,
    /// Most messages in one frame ([`DEFAULT_BATCH_MAX_MESSAGES`]).
    pub batch_max_messages: usize,
    /// Soft limit on one frame's body ([`DEFAULT_BATCH_MAX_BYTES`]): no
    /// message is added once it is reached. Must be ≤ `max_frame_bytes`.
    pub batch_max_bytes: usize,
    /// Capacity of the receive channel ([`DEFAULT_INBOUND_CAPACITY`]); when
    /// full, readers stop reading (TCP back-pressure).
    pub inbound_capacity: usize,
    /// First redial delay after a failure ([`DEFAULT_RECONNECT_MIN`]).
    pub reconnect_min: Duration,
    /// Largest redial delay ([`DEFAULT_RECONNECT_MAX`]); the delay doubles
    /// from `reconnect_min` up to it, each wait drawn uniformly from
    /// `[delay/2, delay]` so peers do not redial in lockstep.
    pub reconnect_max: Duration,
    /// Limit for one TCP connect and, separately, for one Hello exchange
    /// ([`DEFAULT_CONNECT_TIMEOUT`]). Also the time an accepted connection
    /// has to send its Hello.
    pub connect_timeout: Duration,
}

impl TransportConfig {
    /// A configuration with every limit at its default.
    pub fn new(
        me: NodeId,
        cluster_id: u64,
        listen: SocketAddr,
        peers: BTreeMap<NodeId, SocketAddr>,
    ) -> TransportConfig {
        TransportConfig {
            me,
            cluster_id,
            listen,
            peers,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            peer_queue_capacity: DEFAULT_PEER_QUEUE_CAPACITY,
            batch_max_messages: DEFAULT_BATCH_MAX_MESSAGES,
            batch_max_bytes: DEFAULT_BATCH_MAX_BYTES,
            inbound_capacity: DEFAULT_INBOUND_CAPACITY,
            reconnect_min: DEFAULT_RECONNECT_MIN,
            reconnect_max: DEFAULT_RECONNECT_MAX,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Checks the limits are usable; [`Transport::start`] calls it.
    pub fn validate(&self) -> Result<(), TransportError> {
        let bad = |why: String| Err(TransportError::InvalidConfig(why));
        if self.peers.contains_key(&self.me) {
            return bad(format!("peers must not contain me ({})", self.me));
        }
        if (self.max_frame_bytes as usize) < codec::FRAME_HEADER_LEN + 16 {
            return bad(format!(
                "max_frame_bytes {} is too small",
                self.max_frame_bytes
            ));
        }
        for (name, v) in [
            ("peer_queue_capacity", self.peer_queue_capacity),
            ("inbound_capacity", self.inbound_capacity),
        ] {
            if v == 0 || v > CHANNEL_CAPACITY_MAX {
                return bad(format!(
                    "{name} must be in 1..={CHANNEL_CAPACITY_MAX}, got {v}"
                ));
            }
        }
        if self.batch_max_messages == 0 {
            return bad("batch_max_messages must be positive".into());
        }
        if self.batch_max_bytes == 0 || self.batch_max_bytes > self.max_frame_bytes as usize {
            return bad(format!(
                "batch_max_bytes must be in 1..=max_frame_bytes ({}), got {}",
                self.max_frame_bytes, self.batch_max_bytes
            ));
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            return bad("need 0 < reconnect_min <= reconnect_max".into());
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout must be positive".into());
        }
        Ok(())
    }
}

/// Why a transport could not start.
#[derive(Debug)]
pub enum TransportError {
    /// The listener could not be bound.
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bound listener could not report its address.
    LocalAddr(std::io::Error),
    /// A limit in [`TransportConfig`] is unusable (see
    /// [`TransportConfig::validate`]).
    InvalidConfig(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Bind { addr, source } => write!(f, "cannot bind {addr}: {source}"),
            TransportError::LocalAddr(e) => write!(f, "cannot read the listener's address: {e}"),
            TransportError::InvalidConfig(why) => write!(f, "invalid transport config: {why}"),
        }
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TransportError::Bind { source, .. } => Some(source),
            TransportError::LocalAddr(e) => Some(e),
            TransportError::InvalidConfig(_) => None,
        }
    }
}

/// Why [`Transport::send`] dropped a message. All are retryable by the
/// protocol's own retransmission; none is a bug in the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// `to` is not in [`TransportConfig::peers`].
    UnknownPeer(NodeId),
    /// The peer's queue holds `capacity` messages already (it is slow or
    /// unreachable).
    QueueFull {
        /// The destination.
        peer: NodeId,
        /// [`TransportConfig::peer_queue_capacity`].
        capacity: usize,
    },
    /// The transport was shut down.
    Closed,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::UnknownPeer(p) => write!(f, "unknown peer {p}"),
            SendError::QueueFull { peer, capacity } => {
                write!(f, "queue to peer {peer} is full ({capacity} messages)")
            }
            SendError::Closed => write!(f, "transport is shut down"),
        }
    }
}

impl std::error::Error for SendError {}

/// State shared by the handle and the tasks.
pub(crate) struct Shared {
    pub(crate) cfg: TransportConfig,
    /// Per-peer counters, shared by that peer's writer and readers.
    pub(crate) peers: BTreeMap<NodeId, Arc<PeerCounters>>,
    /// Per-peer generation of the current accepted connection: a reader
    /// that sees the generation move on was superseded and exits.
    pub(crate) inbound_generation: BTreeMap<NodeId, watch::Sender<u64>>,
    pub(crate) global: GlobalCounters,
}

/// Waits until `shutdown` says so (or its sender is gone, which also means
/// the transport is gone).
pub(crate) async fn shutdown_signal(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

struct Inner<M> {
    shared: Arc<Shared>,
    queues: BTreeMap<NodeId, mpsc::Sender<M>>,
    local_addr: SocketAddr,
    closed: AtomicBool,
    shutdown: watch::Sender<bool>,
    /// The listener and writer tasks; taken by the first `shutdown`.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A running transport. A cheap [`Clone`] handle: all clones share the same
/// tasks, queues and counters. Dropping every handle stops the tasks too
/// (without waiting for them); [`Transport::shutdown`] stops and waits.
pub struct Transport<M> {
    inner: Arc<Inner<M>>,
}

impl<M> Clone for Transport<M> {
    fn clone(&self) -> Self {
        Transport {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<M> fmt::Debug for Transport<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("me", &self.inner.shared.cfg.me)
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

/// What [`Transport::start`] returns: the handle and the inbound messages,
/// each tagged with its sender.
pub type Started<M> = (Transport<M>, mpsc::Receiver<(NodeId, M)>);

impl<M> Transport<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    /// Binds `cfg.listen` and spawns the listener and one writer per peer on
    /// the current tokio runtime, which must have I/O and time enabled
    /// (`Builder::enable_all`). Either runtime flavour works.
    pub async fn start(cfg: TransportConfig) -> Result<Started<M>, TransportError> {
        cfg.validate()?;
        let listener =
            TcpListener::bind(cfg.listen)
                .await
                .map_err(|source| TransportError::Bind {
                    addr: cfg.listen,
                    source,
                })?;
        Self::start_with_listener(cfg, listener).await
    }

    /// Like [`start`](Transport::start) with a listener the caller bound
    /// (`cfg.listen` is ignored): tests bind every node's port first and
    /// then build the peer maps.
    pub async fn start_with_listener(
        cfg: TransportConfig,
        listener: TcpListener,
    ) -> Result<Started<M>, TransportError> {
        cfg.validate()?;
        let local_addr = listener.local_addr().map_err(TransportError::LocalAddr)?;
        let (inbound_tx, inbound_rx) = mpsc::channel(cfg.inbound_capacity);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let peers = cfg
            .peers
            .keys()
            .map(|&p| (p, Arc::new(PeerCounters::default())))
            .collect();
        let inbound_generation = cfg
            .peers
            .keys()
            .map(|&p| (p, watch::channel(0u64).0))
            .collect();
        let shared = Arc::new(Shared {
            cfg,
            peers,
            inbound_generation,
            global: GlobalCounters::default(),
        });

        let mut tasks = Vec::with_capacity(shared.cfg.peers.len() + 1);
        tasks.push(tokio::spawn(reader::accept_loop::<M>(
            Arc::clone(&shared),
            listener,
            inbound_tx,
            shutdown_rx.clone(),
        )));
        let mut queues = BTreeMap::new();
        for (&peer, &addr) in &shared.cfg.peers {
            let (tx, rx) = mpsc::channel(shared.cfg.peer_queue_capacity);
            queues.insert(peer, tx);
            let w = writer::Writer::new(Arc::clone(&shared), peer, addr, rx, shutdown_rx.clone());
            tasks.push(tokio::spawn(w.run()));
        }
        let inner = Inner {
            shared,
            queues,
            local_addr,
            closed: AtomicBool::new(false),
            shutdown: shutdown_tx,
            tasks: Mutex::new(tasks),
        };
        Ok((
            Transport {
                inner: Arc::new(inner),
            },
            inbound_rx,
        ))
    }
}

impl<M> Transport<M> {
    /// Queues `msg` for `to`. Never awaits. On error the message is dropped.
    pub fn send(&self, to: NodeId, msg: M) -> Result<(), SendError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        let Some(queue) = self.inner.queues.get(&to) else {
            return Err(SendError::UnknownPeer(to));
        };
        match queue.try_send(msg) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                if let Some(c) = self.inner.shared.peers.get(&to) {
                    stats::bump(&c.dropped_queue_full, 1);
                }
                Err(SendError::QueueFull {
                    peer: to,
                    capacity: self.inner.shared.cfg.peer_queue_capacity,
                })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Closed),
        }
    }

    /// The address the listener is bound to (the real port when
    /// `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.inner.shared.cfg.me
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> TransportStats {
        let shared = &self.inner.shared;
        let peers = shared
            .peers
            .iter()
            .map(|(&p, c)| {
                let queued = self
                    .inner
                    .queues
                    .get(&p)
                    .map_or(0, |q| q.max_capacity() - q.capacity());
                (p, c.snapshot(queued))
            })
            .collect();
        shared.global.snapshot(peers)
    }

    /// Stops accepting and reading, lets each writer flush what is queued
    /// on a live connection (best-effort, up to [`SHUTDOWN_FLUSH_MAX`]),
    /// closes every socket and the listener, and waits for the tasks. Every
    /// clone's `send` returns [`SendError::Closed`] from now on; the inbound
    /// receiver ends once the readers are gone. A second call returns at once.
    pub async fn shutdown(self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.shutdown.send_replace(true);
        let tasks =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let deadline = tokio::time::Instant::now() + SHUTDOWN_FLUSH_MAX;
        for task in tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
            }
        }
    }
}
