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
//! # Membership
//!
//! The peer set starts as [`TransportConfig::peers`] and changes at runtime
//! with [`Transport::add_peer`] and [`Transport::remove_peer`] (the control
//! plane adds and removes replicas). Both sides of a pair must add each
//! other: a node only accepts Hellos from its current peers. Adding spawns
//! the peer's writer; removing aborts it (dropping its queue), closes the
//! peer's accepted connection and refuses its later Hellos. At most
//! [`PEERS_MAX`] peers exist at once. [`Transport::send`] looks the peer up
//! under a read lock, so membership changes never make it await.
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
//!   peer reconnected or was removed loses what it had not yet delivered;
//!   removing a peer, or adding it at a new address, drops its queue.
//! - **Back-pressure on receive**: the inbound channel is bounded; when the
//!   application does not keep up, readers stop reading and TCP flow control
//!   pushes back to the senders, whose queues then fill and refuse.
//!
//! # Limits (every one bounded; see [`TransportConfig`] for the defaults)
//!
//! | limit | bounds |
//! |---|---|
//! | `max_frame_bytes` | one allocation per received frame; larger is a protocol error. Only a connection past the handshake allocates, and only one such connection per peer lives, so receive buffers total ≤ [`PEERS_MAX`] × `max_frame_bytes` |
//! | [`PEERS_MAX`] | writer tasks, peer queues and outbound sockets |
//! | `peer_queue_capacity` | memory held for one unreachable peer |
//! | `batch_max_messages`, `batch_max_bytes` | one frame's size and encode time, so one peer cannot hog the writer |
//! | `inbound_capacity` | memory between the sockets and the application |
//! | [`MAX_INBOUND_CONNECTIONS`] | sockets and tasks an unauthenticated flood can create |
//! | `connect_timeout` | one connection attempt and one handshake (both directions) |
//! | `reconnect_min`/`reconnect_max` | redial rate towards a dead peer |
//! | [`SHUTDOWN_FLUSH_MAX`] | how long `shutdown` waits for best-effort flushing |
//! | [`READ_BUFFER_RETAINED_MAX_BYTES`] | memory one idle connection keeps after a large frame |
//!
//! Not yet: TLS between replicas (quality-bars R10).

#![deny(missing_docs)]

pub mod codec;
mod peer;
mod reader;
mod stats;
mod writer;

pub use stats::{PeerStats, TransportStats};

use peer::PeerLink;
use stats::GlobalCounters;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
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

/// Most peers a transport has at once (at start and after
/// [`Transport::add_peer`]). We run clusters of ≤ 7 replicas and a
/// membership change adds one at a time, so 64 leaves room for any
/// reconfiguration while bounding what peers cost: one writer task, one
/// queue of up to `peer_queue_capacity` messages and one outbound socket
/// each, and one accepted connection each, well under
/// [`MAX_INBOUND_CONNECTIONS`].
pub const PEERS_MAX: usize = 64;

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
    /// The other replicas at start and where to dial them. Excludes `me`;
    /// at most [`PEERS_MAX`]. Only current peers' ids are accepted in an
    /// inbound Hello; change the set later with [`Transport::add_peer`] and
    /// [`Transport::remove_peer`].
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
        if self.peers.len() > PEERS_MAX {
            return bad(format!("{} peers, at most {PEERS_MAX}", self.peers.len()));
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
    /// `to` is not a current peer (never added, or removed).
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

/// Why [`Transport::add_peer`] refused a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerError {
    /// The id is this node's own ([`TransportConfig::me`]).
    IsMe(NodeId),
    /// [`PEERS_MAX`] peers exist already; remove one first.
    TooManyPeers {
        /// The peer that was not added.
        peer: NodeId,
        /// [`PEERS_MAX`].
        max: usize,
    },
    /// The transport was shut down.
    Closed,
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::IsMe(p) => write!(f, "node {p} cannot be its own peer"),
            PeerError::TooManyPeers { peer, max } => {
                write!(f, "cannot add peer {peer}: already {max} peers")
            }
            PeerError::Closed => write!(f, "transport is shut down"),
        }
    }
}

impl std::error::Error for PeerError {}

/// State shared by the handle and the tasks.
pub(crate) struct Shared {
    /// The limits. Its `peers` is emptied at start: the peer set lives in
    /// `links` and in the handle's `peers`.
    pub(crate) cfg: TransportConfig,
    /// The current peers as readers see them: a Hello is accepted only from
    /// an id in here. Always the same keys and links as [`Inner::peers`]
    /// (both are changed under that table's write lock).
    links: RwLock<BTreeMap<NodeId, Arc<PeerLink>>>,
    pub(crate) global: GlobalCounters,
}

impl Shared {
    /// The link of `peer` if it is a current peer.
    pub(crate) fn link(&self, peer: NodeId) -> Option<Arc<PeerLink>> {
        read(&self.links).get(&peer).cloned()
    }
}

/// Read access that ignores poisoning: every writer of our locks leaves the
/// map consistent at each step (inserts and removes only).
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write access that ignores poisoning (see [`read`]).
fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Waits until `shutdown` says so (or its sender is gone, which also means
/// the transport is gone).
pub(crate) async fn shutdown_signal(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// One current peer as the handle sees it.
struct Peer<M> {
    /// Where its writer dials.
    addr: SocketAddr,
    /// Its queue; `send` pushes here and its writer drains it.
    queue: mpsc::Sender<M>,
    /// Its counters and inbound connection (shared with [`Shared::links`]).
    link: Arc<PeerLink>,
    /// Its writer task (for a moved peer, the task that waits for the old
    /// writer to end and then runs the new one); taken by `shutdown`.
    writer: Option<JoinHandle<()>>,
}

impl<M> Peer<M> {
    /// Stops the writer at its next await, dropping its queue and its
    /// socket without flushing.
    fn abort_writer(&mut self) -> Option<JoinHandle<()>> {
        let writer = self.writer.take()?;
        writer.abort();
        Some(writer)
    }
}

struct Inner<M> {
    shared: Arc<Shared>,
    /// The current peers. Lock order: this table, then `shared.links`.
    /// `shutdown` sets `closed` under its write lock, so no writer is added
    /// after `shutdown` took the writers.
    peers: RwLock<BTreeMap<NodeId, Peer<M>>>,
    local_addr: SocketAddr,
    /// Where writers added later are spawned: the runtime `start` ran on,
    /// so `add_peer` works from any thread.
    runtime: tokio::runtime::Handle,
    closed: AtomicBool,
    shutdown: watch::Sender<bool>,
    /// The listener task; taken by the first `shutdown`.
    listener: Mutex<Option<JoinHandle<()>>>,
}

/// A running transport. A cheap [`Clone`] handle: all clones share the same
/// tasks, queues, counters and peer set. Dropping every handle stops the
/// tasks too (without waiting for them); [`Transport::shutdown`] stops and
/// waits.
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
    /// (`Builder::enable_all`). Either runtime flavour works. Writers of
    /// peers added later are spawned on the same runtime.
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
        let mut cfg = cfg;
        let initial = std::mem::take(&mut cfg.peers);
        let shared = Arc::new(Shared {
            cfg,
            links: RwLock::new(BTreeMap::new()),
            global: GlobalCounters::default(),
        });
        let listener = tokio::spawn(reader::accept_loop::<M>(
            Arc::clone(&shared),
            listener,
            inbound_tx,
            shutdown_rx,
        ));
        let transport = Transport {
            inner: Arc::new(Inner {
                shared,
                peers: RwLock::new(BTreeMap::new()),
                local_addr,
                runtime: tokio::runtime::Handle::current(),
                closed: AtomicBool::new(false),
                shutdown: shutdown_tx,
                listener: Mutex::new(Some(listener)),
            }),
        };
        for (peer, addr) in initial {
            // Cannot fail: `validate` checked the count and `me`, and
            // nothing closed the transport yet.
            transport
                .add_peer(peer, addr)
                .expect("validated initial peer");
        }
        Ok((transport, inbound_rx))
    }

    /// Makes `peer` a peer at `addr`: from now on [`send`](Transport::send)
    /// queues for it (a writer task dials it), Hellos from it are accepted,
    /// and [`stats`](Transport::stats) reports it with counters starting
    /// from zero (also for a peer removed earlier). The other node must add
    /// us too before its Hellos reach us and ours reach it; until then our
    /// writer redials with backoff, keeping the queue.
    ///
    /// Adding a current peer at the same address does nothing. At another
    /// address the peer moved: its writer is replaced by one that dials the
    /// new address, with a new, empty queue (messages queued for the old
    /// address are dropped; the protocol retransmits); its counters and its
    /// accepted connection stay.
    pub fn add_peer(&self, peer: NodeId, addr: SocketAddr) -> Result<(), PeerError> {
        let inner = &self.inner;
        if peer == inner.shared.cfg.me {
            return Err(PeerError::IsMe(peer));
        }
        let mut peers = write(&inner.peers);
        if inner.closed.load(Ordering::Acquire) {
            return Err(PeerError::Closed);
        }
        if let Some(current) = peers.get_mut(&peer) {
            if current.addr == addr {
                return Ok(());
            }
            let old = current.abort_writer();
            let (queue, writer) = self.spawn_writer(peer, addr, &current.link, old);
            current.addr = addr;
            current.queue = queue;
            current.writer = Some(writer);
            return Ok(());
        }
        if peers.len() >= PEERS_MAX {
            return Err(PeerError::TooManyPeers {
                peer,
                max: PEERS_MAX,
            });
        }
        let link = Arc::new(PeerLink::new());
        write(&inner.shared.links).insert(peer, Arc::clone(&link));
        let (queue, writer) = self.spawn_writer(peer, addr, &link, None);
        peers.insert(
            peer,
            Peer {
                addr,
                queue,
                link,
                writer: Some(writer),
            },
        );
        Ok(())
    }

    /// A new queue for `peer` and its writer task, which first waits for
    /// `previous` (an aborted writer) to end so one peer never has two
    /// outbound connections.
    fn spawn_writer(
        &self,
        peer: NodeId,
        addr: SocketAddr,
        link: &Arc<PeerLink>,
        previous: Option<JoinHandle<()>>,
    ) -> (mpsc::Sender<M>, JoinHandle<()>) {
        let inner = &self.inner;
        let (tx, rx) = mpsc::channel(inner.shared.cfg.peer_queue_capacity);
        let w = writer::Writer::new(
            Arc::clone(&inner.shared),
            peer,
            addr,
            Arc::clone(link),
            rx,
            inner.shutdown.subscribe(),
        );
        let task = inner.runtime.spawn(async move {
            if let Some(previous) = previous {
                // Err is the expected `cancelled`; either way it has ended.
                let _ = previous.await;
            }
            w.run().await;
        });
        (tx, task)
    }
}

impl<M> Transport<M> {
    /// Queues `msg` for `to`. Never awaits (it takes the peer table's read
    /// lock, held by membership changes only briefly). On error the message
    /// is dropped.
    pub fn send(&self, to: NodeId, msg: M) -> Result<(), SendError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        let peers = read(&self.inner.peers);
        let Some(peer) = peers.get(&to) else {
            return Err(SendError::UnknownPeer(to));
        };
        match peer.queue.try_send(msg) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                stats::bump(&peer.link.counters.dropped_queue_full, 1);
                Err(SendError::QueueFull {
                    peer: to,
                    capacity: self.inner.shared.cfg.peer_queue_capacity,
                })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Closed),
        }
    }

    /// Stops treating `peer` as a peer: its writer is aborted (queued
    /// messages and any frame in flight are dropped), its accepted
    /// connection is closed (its reader exits; what it had not yet delivered
    /// is lost), its later Hellos are refused and counted in
    /// [`TransportStats::handshakes_refused`], it leaves
    /// [`stats`](Transport::stats), and [`send`](Transport::send) to it
    /// returns [`SendError::UnknownPeer`]. Returns whether it was a peer.
    pub fn remove_peer(&self, peer: NodeId) -> bool {
        let inner = &self.inner;
        let mut peers = write(&inner.peers);
        let Some(mut removed) = peers.remove(&peer) else {
            return false;
        };
        removed.abort_writer();
        write(&inner.shared.links).remove(&peer);
        removed.link.close_inbound();
        true
    }

    /// The current peers and the addresses their writers dial.
    pub fn peers(&self) -> BTreeMap<NodeId, SocketAddr> {
        read(&self.inner.peers)
            .iter()
            .map(|(&p, peer)| (p, peer.addr))
            .collect()
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

    /// A snapshot of the counters of the current peers. A peer's counts are
    /// totals since it was last added (or since start).
    pub fn stats(&self) -> TransportStats {
        let peers = read(&self.inner.peers)
            .iter()
            .map(|(&p, peer)| {
                let queued = peer.queue.max_capacity() - peer.queue.capacity();
                (p, peer.link.counters.snapshot(queued))
            })
            .collect();
        self.inner.shared.global.snapshot(peers)
    }

    /// Stops accepting and reading, lets each writer flush what is queued
    /// on a live connection (best-effort, up to [`SHUTDOWN_FLUSH_MAX`]),
    /// closes every socket and the listener, and waits for the tasks,
    /// writers of peers added at runtime included. Every clone's `send`
    /// returns [`SendError::Closed`] and `add_peer` [`PeerError::Closed`]
    /// from now on; the inbound receiver ends once the readers are gone. A
    /// second call returns at once.
    pub async fn shutdown(self) {
        let mut tasks = Vec::new();
        {
            let mut peers = write(&self.inner.peers);
            self.inner.closed.store(true, Ordering::Release);
            self.inner.shutdown.send_replace(true);
            tasks.extend(peers.values_mut().filter_map(|p| p.writer.take()));
        }
        let listener = self
            .inner
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        tasks.extend(listener);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_FLUSH_MAX;
        for task in tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
            }
        }
    }
}
