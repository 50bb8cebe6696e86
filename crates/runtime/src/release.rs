//! The gate between "appended to the WAL" and "released to the world".
//!
//! Every core output gets a *ticket*: the LSN of its last write, or, if it
//! has no writes, the last LSN appended before it. An output is released
//! only when its ticket is durable **and** every earlier output has been
//! released, so outputs leave in the order the core produced them and none
//! leaves before the writes of its own and every earlier output are on
//! disk (epaxos.md §2.4: persist → send → execute → reply).

use std::collections::VecDeque;
use synod_storage::Lsn;

/// Outputs (of any type `T`) waiting for durability, in production order.
#[derive(Debug)]
pub struct ReleaseQueue<T> {
    durable: Lsn,
    last_appended: Lsn,
    pending: VecDeque<(Lsn, T)>,
}

impl<T> ReleaseQueue<T> {
    /// A queue whose WAL has `last` appended and `durable` synced.
    pub fn new(last: Lsn, durable: Lsn) -> Self {
        ReleaseQueue {
            durable,
            last_appended: last,
            pending: VecDeque::new(),
        }
    }

    /// Records that the WAL assigned `lsn` to the latest write.
    pub fn appended(&mut self, lsn: Lsn) {
        debug_assert!(lsn >= self.last_appended, "LSNs only grow");
        self.last_appended = self.last_appended.max(lsn);
    }

    /// Queues an output produced after every append so far. Returns it back
    /// if it may be released at once (nothing before it is still waiting).
    #[must_use]
    pub fn push(&mut self, out: T) -> Option<T> {
        let ticket = self.last_appended;
        if ticket <= self.durable && self.pending.is_empty() {
            Some(out)
        } else {
            self.pending.push_back((ticket, out));
            None
        }
    }

    /// The WAL made everything up to `lsn` durable: returns the outputs that
    /// may now be released, in order.
    pub fn durable(&mut self, lsn: Lsn) -> Vec<T> {
        self.durable = self.durable.max(lsn);
        let mut ready = Vec::new();
        while self
            .pending
            .front()
            .is_some_and(|(t, _)| *t <= self.durable)
        {
            ready.push(self.pending.pop_front().expect("checked").1);
        }
        ready
    }

    /// Highest LSN appended.
    pub fn last_appended(&self) -> Lsn {
        self.last_appended
    }

    /// Highest LSN durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.durable
    }

    /// Records appended but not yet durable.
    pub fn unsynced(&self) -> u64 {
        self.last_appended.saturating_sub(self.durable)
    }

    /// Outputs waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True if nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_leaves_before_its_writes_are_durable() {
        let mut q = ReleaseQueue::new(0, 0);
        q.appended(3);
        assert_eq!(q.push("a"), None, "a's writes (lsn ≤ 3) are not durable");
        assert!(q.durable(2).is_empty(), "lsn 3 is not durable yet");
        assert_eq!(q.durable(3), vec!["a"]);
        assert_eq!(
            q.push("b"),
            Some("b"),
            "no writes, nothing pending: at once"
        );
    }

    #[test]
    fn an_output_without_writes_waits_for_earlier_writes() {
        let mut q = ReleaseQueue::new(10, 10);
        q.appended(11);
        assert_eq!(q.push("with-write"), None);
        // No write of its own, but it was produced after lsn 11 was
        // appended: it may not overtake (its messages could depend on it).
        assert_eq!(q.push("no-write"), None);
        assert_eq!(q.durable(11), vec!["with-write", "no-write"]);
    }

    #[test]
    fn release_order_is_production_order() {
        let mut q = ReleaseQueue::new(0, 0);
        let mut expect = Vec::new();
        for i in 1..=100u64 {
            if i % 3 != 0 {
                q.appended(i);
            }
            assert!(q.push(i).is_none());
            expect.push(i);
        }
        let mut got = Vec::new();
        for lsn in [5, 5, 40, 39, 100] {
            for o in q.durable(lsn) {
                // Every released output's ticket is ≤ the durable LSN.
                assert!(o <= lsn || o % 3 == 0);
                got.push(o);
            }
        }
        assert_eq!(got, expect);
        assert!(q.is_empty());
        assert_eq!(q.unsynced(), 0);
    }
}
