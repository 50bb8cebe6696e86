//! Counters: plain relaxed atomics bumped by the tasks, read as a snapshot by
//! [`Transport::stats`](crate::Transport::stats). Counts only grow; a
//! snapshot is not atomic across fields.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use synod_types::NodeId;

/// Adds `n` to a counter.
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Counters of one peer (both directions).
#[derive(Default, Debug)]
pub(crate) struct PeerCounters {
    pub(crate) connected: AtomicBool,
    pub(crate) sent_messages: AtomicU64,
    pub(crate) sent_frames: AtomicU64,
    pub(crate) sent_bytes: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_too_large: AtomicU64,
    pub(crate) dropped_unencodable: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) disconnects: AtomicU64,
    pub(crate) inbound_connections: AtomicU64,
    pub(crate) received_messages: AtomicU64,
    pub(crate) received_frames: AtomicU64,
    pub(crate) received_bytes: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
}

impl PeerCounters {
    pub(crate) fn snapshot(&self, queued_messages: usize) -> PeerStats {
        PeerStats {
            connected: self.connected.load(Ordering::Relaxed),
            queued_messages,
            sent_messages: get(&self.sent_messages),
            sent_frames: get(&self.sent_frames),
            sent_bytes: get(&self.sent_bytes),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_too_large: get(&self.dropped_too_large),
            dropped_unencodable: get(&self.dropped_unencodable),
            connects: get(&self.connects),
            connect_failures: get(&self.connect_failures),
            disconnects: get(&self.disconnects),
            inbound_connections: get(&self.inbound_connections),
            received_messages: get(&self.received_messages),
            received_frames: get(&self.received_frames),
            received_bytes: get(&self.received_bytes),
            decode_errors: get(&self.decode_errors),
        }
    }
}

/// Counters not tied to a known peer.
#[derive(Default, Debug)]
pub(crate) struct GlobalCounters {
    pub(crate) accepted: AtomicU64,
    pub(crate) refused_over_limit: AtomicU64,
    pub(crate) handshakes_refused: AtomicU64,
}

impl GlobalCounters {
    pub(crate) fn snapshot(&self, peers: BTreeMap<NodeId, PeerStats>) -> TransportStats {
        TransportStats {
            peers,
            inbound_accepted: get(&self.accepted),
            inbound_refused_over_limit: get(&self.refused_over_limit),
            handshakes_refused: get(&self.handshakes_refused),
        }
    }
}

/// One peer's counters at one moment. Counts are totals since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Our outbound connection to the peer is up (handshake done).
    pub connected: bool,
    /// Messages waiting in the peer's queue now.
    pub queued_messages: usize,
    /// Messages in frames fully written to the socket (written, not
    /// necessarily delivered: see the crate docs on loss).
    pub sent_messages: u64,
    /// Frames fully written.
    pub sent_frames: u64,
    /// Bytes fully written, length prefixes included.
    pub sent_bytes: u64,
    /// Messages refused by `send` because the queue was full.
    pub dropped_queue_full: u64,
    /// Messages dropped because one encodes larger than `max_frame_bytes`.
    pub dropped_too_large: u64,
    /// Messages dropped because serialization failed.
    pub dropped_unencodable: u64,
    /// Outbound connections established (handshake done); `connects - 1`
    /// is the number of reconnects.
    pub connects: u64,
    /// Outbound dials or handshakes that failed.
    pub connect_failures: u64,
    /// Established outbound connections that broke.
    pub disconnects: u64,
    /// Inbound connections from the peer that passed the handshake.
    pub inbound_connections: u64,
    /// Messages received and pushed to the inbound channel.
    pub received_messages: u64,
    /// Frames received and decoded.
    pub received_frames: u64,
    /// Bytes of decoded frames, length prefixes included.
    pub received_bytes: u64,
    /// Received frames that were oversized or did not decode; each closed
    /// its connection.
    pub decode_errors: u64,
}

/// All counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Per configured peer.
    pub peers: BTreeMap<NodeId, PeerStats>,
    /// Inbound connections accepted by the listener (before the handshake).
    pub inbound_accepted: u64,
    /// Inbound connections closed at once because
    /// [`MAX_INBOUND_CONNECTIONS`](crate::MAX_INBOUND_CONNECTIONS) were open.
    pub inbound_refused_over_limit: u64,
    /// Inbound connections whose Hello was missing, late, or wrong (magic,
    /// version, cluster id, unknown sender).
    pub handshakes_refused: u64,
}
