//! One peer's membership record, shared by its writer, its readers and the
//! handle: its counters and the register of its accepted connection.
//!
//! A link lives from the peer's `add_peer` (or start) to its `remove_peer`;
//! a peer added again gets a new link, so its counters restart from zero
//! and no reader of the old link can register with the new one.
//!
//! Invariants:
//! - at most one accepted connection per link is registered (the newest);
//!   registering supersedes the previous one;
//! - once closed, a link registers nothing: a reader that passed the
//!   handshake just before the removal exits instead of reading.

use crate::stats::PeerCounters;
use tokio::sync::watch;

/// Generation value meaning "the peer was removed": every reader of the
/// link sees its generation move on (and exits), and no reader can register.
/// Real generations count up from 1 and cannot reach it.
const REMOVED: u64 = u64::MAX;

/// A current peer as readers and writers see it.
pub(crate) struct PeerLink {
    /// Both directions' counters; reported by `stats` while the link is in
    /// the peer table.
    pub(crate) counters: PeerCounters,
    /// Generation of the current accepted connection, or [`REMOVED`]: a
    /// reader that sees it differ from its own was superseded and exits.
    inbound_generation: watch::Sender<u64>,
}

impl PeerLink {
    pub(crate) fn new() -> PeerLink {
        PeerLink {
            counters: PeerCounters::default(),
            inbound_generation: watch::channel(0).0,
        }
    }

    /// Registers a new accepted connection, superseding the previous one.
    /// Returns its generation and a receiver that changes when it is
    /// superseded or the link closed; `None` when the link is closed.
    pub(crate) fn register_inbound(&self) -> Option<(u64, watch::Receiver<u64>)> {
        let mut mine = None;
        self.inbound_generation.send_if_modified(|g| {
            if *g == REMOVED {
                return false;
            }
            *g += 1;
            mine = Some(*g);
            true
        });
        let mine = mine?;
        Some((mine, self.inbound_generation.subscribe()))
    }

    /// Closes the link: its current reader exits and no reader registers
    /// again. Idempotent.
    pub(crate) fn close_inbound(&self) {
        self.inbound_generation.send_replace(REMOVED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_registration_supersedes_and_close_refuses_the_next() {
        let link = PeerLink::new();
        let (first, mut rx1) = link.register_inbound().unwrap();
        let (second, _rx2) = link.register_inbound().unwrap();
        assert_ne!(first, second);
        assert_ne!(*rx1.borrow_and_update(), first, "first is superseded");
        link.close_inbound();
        assert!(link.register_inbound().is_none());
        link.close_inbound();
        assert!(link.register_inbound().is_none());
    }
}
