//! Virtual time, the discrete event queue, and the faulty network.
//!
//! Time is a plain `u64` of abstract units. The queue orders events by
//! `(time, seq)`, where `seq` is the insertion counter, so two events at the
//! same instant run in the order they were scheduled and a seed replays
//! exactly. The network decides, per released message, whether it is lost,
//! duplicated, reordered or delayed long, and whether a partition blocks the
//! link at delivery time (quality-bars.md R1: drop, duplicate, reorder,
//! delay, symmetric and asymmetric partitions).

use crate::rng::SimRng;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use synod_types::NodeId;

/// Virtual time in abstract units.
pub type Time = u64;

struct Scheduled<E> {
    time: Time,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}
impl<E> Eq for Scheduled<E> {}
impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Scheduled<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, we want the earliest first.
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

/// A discrete event queue ordered by `(time, insertion order)`.
pub struct EventQueue<E> {
    heap: BinaryHeap<Scheduled<E>>,
    next_seq: u64,
    now: Time,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> EventQueue<E> {
    /// An empty queue at time 0.
    pub fn new() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            next_seq: 0,
            now: 0,
        }
    }

    /// The time of the last popped event.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Schedules `event` at absolute time `at` (never before now).
    pub fn schedule_at(&mut self, at: Time, event: E) {
        let time = at.max(self.now);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Scheduled { time, seq, event });
    }

    /// Schedules `event` after `delay` units.
    pub fn schedule_in(&mut self, delay: Time, event: E) {
        self.schedule_at(self.now.saturating_add(delay), event);
    }

    /// Pops the earliest event and advances time to it.
    pub fn pop(&mut self) -> Option<(Time, E)> {
        let s = self.heap.pop()?;
        debug_assert!(s.time >= self.now);
        self.now = s.time;
        Some((s.time, s.event))
    }

    /// Number of scheduled events.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True if nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// Per-message fault probabilities and delay ranges.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    /// Normal one-way delay, uniform in `delay_min..=delay_max`.
    pub delay_min: Time,
    /// See `delay_min`.
    pub delay_max: Time,
    /// Probability a message is lost.
    pub drop_p: f64,
    /// Probability a message is delivered twice (the copy gets its own delay).
    pub dup_p: f64,
    /// Probability a message gets an extra random delay in
    /// `0..=reorder_extra_max`, so later messages may overtake it.
    pub reorder_p: f64,
    /// See `reorder_p`.
    pub reorder_extra_max: Time,
    /// Probability a message is delayed long, uniform in
    /// `long_delay_min..=long_delay_max` (beyond protocol timeouts).
    pub long_delay_p: f64,
    /// See `long_delay_p`.
    pub long_delay_min: Time,
    /// See `long_delay_p`.
    pub long_delay_max: Time,
}

impl NetConfig {
    /// A timely, lossless network (used after the heal, and with `--no-faults`).
    pub fn timely(delay_min: Time, delay_max: Time) -> Self {
        NetConfig {
            delay_min,
            delay_max,
            drop_p: 0.0,
            dup_p: 0.0,
            reorder_p: 0.0,
            reorder_extra_max: 0,
            long_delay_p: 0.0,
            long_delay_min: 0,
            long_delay_max: 0,
        }
    }
}

/// Counts of injected faults, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Messages lost at random.
    pub dropped: u64,
    /// Messages delivered twice.
    pub duplicated: u64,
    /// Messages given an extra random delay.
    pub reordered: u64,
    /// Messages delayed long.
    pub long_delayed: u64,
    /// Messages lost because a partition blocked the link at delivery.
    pub partition_dropped: u64,
    /// Messages lost because the destination was down at delivery.
    pub down_dropped: u64,
    /// Symmetric partitions started.
    pub partitions_symmetric: u64,
    /// Asymmetric (one-way) partitions started.
    pub partitions_asymmetric: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Node restarts.
    pub restarts: u64,
}

impl FaultCounts {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &FaultCounts) {
        self.dropped += other.dropped;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.long_delayed += other.long_delayed;
        self.partition_dropped += other.partition_dropped;
        self.down_dropped += other.down_dropped;
        self.partitions_symmetric += other.partitions_symmetric;
        self.partitions_asymmetric += other.partitions_asymmetric;
        self.crashes += other.crashes;
        self.restarts += other.restarts;
    }
}

/// A set of blocked directed links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partition {
    /// Nodes in `side` cannot talk to the others, in either direction.
    Symmetric {
        /// one side of the cut
        side: Vec<NodeId>,
    },
    /// Messages on each `(from, to)` link are lost; the reverse direction works.
    Asymmetric {
        /// blocked directed links
        links: Vec<(NodeId, NodeId)>,
    },
}

impl Partition {
    /// A random symmetric partition of `n` nodes: a non-empty proper subset
    /// on one side.
    pub fn random_symmetric(rng: &mut SimRng, n: usize) -> Partition {
        assert!(n >= 2);
        let mut nodes: Vec<NodeId> = (0..n as NodeId).collect();
        rng.shuffle(&mut nodes);
        let size = rng.range_inclusive(1, (n / 2) as u64) as usize;
        let mut side = nodes[..size].to_vec();
        side.sort_unstable();
        Partition::Symmetric { side }
    }

    /// A random one-way partition: 1 to `n` distinct directed links.
    pub fn random_asymmetric(rng: &mut SimRng, n: usize) -> Partition {
        assert!(n >= 2);
        let count = rng.range_inclusive(1, n as u64) as usize;
        let mut links = Vec::with_capacity(count);
        while links.len() < count {
            let from = rng.below(n as u64) as NodeId;
            let to = rng.below(n as u64) as NodeId;
            if from != to && !links.contains(&(from, to)) {
                links.push((from, to));
            }
        }
        links.sort_unstable();
        Partition::Asymmetric { links }
    }

    /// True if this partition blocks `from → to`.
    pub fn blocks(&self, from: NodeId, to: NodeId) -> bool {
        match self {
            Partition::Symmetric { side } => side.contains(&from) != side.contains(&to),
            Partition::Asymmetric { links } => links.contains(&(from, to)),
        }
    }
}

/// Link state plus the per-message fault model.
pub struct Network {
    n: usize,
    config: NetConfig,
    faults_on: bool,
    /// Active partitions by handle; `None` once healed.
    partitions: Vec<Option<Partition>>,
    /// `blocked[from * n + to]`, recomputed when partitions change.
    blocked: Vec<bool>,
    /// What was injected so far.
    pub counts: FaultCounts,
    /// `fifo_last[from * n + to]`: latest delivery time scheduled on the
    /// link while faults are off. Without faults every link is FIFO, like the
    /// one TCP connection per peer the runtime uses; reordering is a fault.
    fifo_last: Vec<Time>,
}

impl Network {
    /// A network of `n` nodes with the given fault model.
    pub fn new(n: usize, config: NetConfig, faults_on: bool) -> Self {
        Network {
            n,
            config,
            faults_on,
            partitions: Vec::new(),
            blocked: vec![false; n * n],
            counts: FaultCounts::default(),
            fifo_last: vec![0; n * n],
        }
    }

    /// Stops all message faults and heals every partition (the GST).
    pub fn heal_all(&mut self) {
        self.faults_on = false;
        self.partitions.clear();
        self.recompute();
    }

    /// True while message faults are injected.
    pub fn faults_on(&self) -> bool {
        self.faults_on
    }

    /// Starts a partition and returns its handle for [`Network::heal`].
    pub fn start_partition(&mut self, p: Partition) -> usize {
        match p {
            Partition::Symmetric { .. } => self.counts.partitions_symmetric += 1,
            Partition::Asymmetric { .. } => self.counts.partitions_asymmetric += 1,
        }
        self.partitions.push(Some(p));
        self.recompute();
        self.partitions.len() - 1
    }

    /// Heals the partition `handle` (no-op if already healed).
    pub fn heal(&mut self, handle: usize) {
        if let Some(slot) = self.partitions.get_mut(handle) {
            *slot = None;
        }
        self.recompute();
    }

    /// Number of partitions currently active.
    pub fn active_partitions(&self) -> usize {
        self.partitions.iter().filter(|p| p.is_some()).count()
    }

    fn recompute(&mut self) {
        let n = self.n;
        for from in 0..n {
            for to in 0..n {
                self.blocked[from * n + to] = self
                    .partitions
                    .iter()
                    .flatten()
                    .any(|p| p.blocks(from as NodeId, to as NodeId));
            }
        }
    }

    /// True if a partition currently blocks `from → to`.
    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked[from as usize * self.n + to as usize]
    }

    /// Decides the fate of one message sent now: the delays of its
    /// deliveries (none if lost, two if duplicated). While faults are off a
    /// link is FIFO: a message is never delivered before an earlier one.
    pub fn plan_send(&mut self, rng: &mut SimRng, from: usize, to: usize, now: Time) -> Vec<Time> {
        let c = &self.config;
        if !self.faults_on {
            let at = (now + rng.range_inclusive(c.delay_min, c.delay_max))
                .max(self.fifo_last[from * self.n + to]);
            self.fifo_last[from * self.n + to] = at;
            return vec![at - now];
        }
        if rng.chance(c.drop_p) {
            self.counts.dropped += 1;
            return Vec::new();
        }
        let copies = if rng.chance(c.dup_p) {
            self.counts.duplicated += 1;
            2
        } else {
            1
        };
        let mut out = Vec::with_capacity(copies);
        for _ in 0..copies {
            let mut d = rng.range_inclusive(c.delay_min, c.delay_max);
            if rng.chance(c.reorder_p) {
                self.counts.reordered += 1;
                d += rng.range_inclusive(0, c.reorder_extra_max);
            }
            if rng.chance(c.long_delay_p) {
                self.counts.long_delayed += 1;
                d += rng.range_inclusive(c.long_delay_min, c.long_delay_max);
            }
            out.push(d);
        }
        out
    }

    /// Decides at delivery time whether a message on `from → to` gets
    /// through the current partitions; counts it if not.
    pub fn admit(&mut self, from: NodeId, to: NodeId) -> bool {
        if self.is_blocked(from, to) {
            self.counts.partition_dropped += 1;
            false
        } else {
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_orders_by_time_then_insertion() {
        let mut q = EventQueue::new();
        q.schedule_at(10, "c");
        q.schedule_at(5, "a");
        q.schedule_at(10, "d");
        q.schedule_at(5, "b");
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec![(5, "a"), (5, "b"), (10, "c"), (10, "d")]);
        assert_eq!(q.now(), 10);
    }

    #[test]
    fn queue_never_schedules_in_the_past() {
        let mut q = EventQueue::new();
        q.schedule_at(100, 1);
        assert_eq!(q.pop(), Some((100, 1)));
        q.schedule_at(50, 2);
        q.schedule_in(0, 3);
        assert_eq!(q.pop(), Some((100, 2)));
        assert_eq!(q.pop(), Some((100, 3)));
        assert!(q.is_empty());
    }

    #[test]
    fn symmetric_partition_blocks_both_directions_across_the_cut_only() {
        let p = Partition::Symmetric { side: vec![0, 2] };
        assert!(p.blocks(0, 1) && p.blocks(1, 0));
        assert!(p.blocks(2, 3) && p.blocks(3, 2));
        assert!(!p.blocks(0, 2) && !p.blocks(1, 3));
    }

    #[test]
    fn asymmetric_partition_is_one_way() {
        let p = Partition::Asymmetric {
            links: vec![(0, 1)],
        };
        assert!(p.blocks(0, 1));
        assert!(!p.blocks(1, 0));
    }

    #[test]
    fn random_partitions_are_well_formed() {
        let mut rng = SimRng::new(5);
        for n in [3usize, 5, 7] {
            for _ in 0..100 {
                match Partition::random_symmetric(&mut rng, n) {
                    Partition::Symmetric { side } => {
                        assert!(!side.is_empty() && side.len() <= n / 2);
                    }
                    _ => unreachable!(),
                }
                match Partition::random_asymmetric(&mut rng, n) {
                    Partition::Asymmetric { links } => {
                        assert!(!links.is_empty());
                        assert!(links.iter().all(|(a, b)| a != b));
                    }
                    _ => unreachable!(),
                }
            }
        }
    }

    #[test]
    fn partitions_start_and_heal() {
        let mut net = Network::new(3, NetConfig::timely(1, 1), true);
        let a = net.start_partition(Partition::Symmetric { side: vec![0] });
        let b = net.start_partition(Partition::Asymmetric {
            links: vec![(1, 2)],
        });
        assert!(!net.admit(0, 1));
        assert!(!net.admit(1, 2));
        assert!(net.admit(2, 1));
        net.heal(a);
        assert!(net.admit(0, 1));
        assert!(!net.admit(1, 2));
        net.heal(b);
        assert!(net.admit(1, 2));
        assert_eq!(net.counts.partition_dropped, 3);
        assert_eq!(net.active_partitions(), 0);
        assert_eq!(
            (
                net.counts.partitions_symmetric,
                net.counts.partitions_asymmetric
            ),
            (1, 1)
        );
    }

    #[test]
    fn fault_model_injects_every_kind_and_heal_stops_it() {
        let cfg = NetConfig {
            delay_min: 10,
            delay_max: 20,
            drop_p: 0.1,
            dup_p: 0.1,
            reorder_p: 0.1,
            reorder_extra_max: 100,
            long_delay_p: 0.1,
            long_delay_min: 1000,
            long_delay_max: 2000,
        };
        let mut net = Network::new(3, cfg, true);
        let mut rng = SimRng::new(11);
        let mut lost = 0;
        let mut dups = 0;
        for _ in 0..10_000 {
            let plan = net.plan_send(&mut rng, 0, 1, 0);
            match plan.len() {
                0 => lost += 1,
                2 => dups += 1,
                _ => {}
            }
            assert!(plan.iter().all(|d| *d >= 10 && *d <= 20 + 100 + 2000));
        }
        assert!(lost > 500 && dups > 500);
        let c = net.counts.clone();
        assert!(c.reordered > 500 && c.long_delayed > 500);
        net.heal_all();
        for _ in 0..1000 {
            let plan = net.plan_send(&mut rng, 0, 1, 0);
            assert_eq!(plan.len(), 1);
            assert!((10..=20).contains(&plan[0]));
        }
        assert_eq!(net.counts.dropped, c.dropped);
    }

    #[test]
    fn fault_counts_add() {
        let mut a = FaultCounts {
            crashes: 1,
            dropped: 2,
            ..Default::default()
        };
        a.add(&FaultCounts {
            crashes: 3,
            restarts: 4,
            ..Default::default()
        });
        assert_eq!((a.crashes, a.dropped, a.restarts), (4, 2, 4));
    }
}
