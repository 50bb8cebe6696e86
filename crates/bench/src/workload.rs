//! What each client proposes: which key, which value.
//!
//! A share `conflict_rate` of decisions goes to the hot key
//! [`HOT_KEY`] (the EPaxos paper's definition of conflict rate); the rest
//! go to keys no other decision touches, or with `--zipf` to a skewed
//! keyspace shared by all clients.

use std::sync::Arc;

/// The key every conflicting decision writes.
pub const HOT_KEY: &str = "bench/hot";

/// The generator that picks keys: the project's one seeded PRNG.
pub use synod_types::SplitMix64 as Rng;

/// Zipf(s) over `0..n` by inverse CDF (binary search over the cumulative
/// weights, computed once and shared by every client).
#[derive(Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// The distribution with exponent `s` over `n ≥ 1` ranks.
    pub fn new(n: u64, s: f64) -> Zipf {
        assert!(n >= 1, "Zipf over an empty keyspace");
        let mut cdf = Vec::with_capacity(n as usize);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / (k as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf { cdf }
    }

    /// A rank in `0..n`, 0 the most frequent.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.next_f64();
        let i = self.cdf.partition_point(|&c| c < u);
        i.min(self.cdf.len() - 1) as u64
    }
}

/// One client's key and value source.
#[derive(Debug)]
pub struct Workload {
    client: u32,
    seq: u64,
    conflict_rate: f64,
    zipf: Option<Arc<Zipf>>,
    rng: Rng,
    /// The value of every decision (content does not matter; size does).
    pub value: Vec<u8>,
}

impl Workload {
    /// The source of client `client` (seeds differ per client).
    pub fn new(
        client: u32,
        conflict_rate: f64,
        zipf: Option<Arc<Zipf>>,
        payload_bytes: usize,
    ) -> Workload {
        Workload {
            client,
            seq: 0,
            conflict_rate,
            zipf,
            rng: Rng::new(0x5EED ^ (u64::from(client) << 32)),
            value: (0..payload_bytes).map(|i| b'a' + (i % 26) as u8).collect(),
        }
    }

    /// The key of the next decision.
    pub fn next_key(&mut self) -> String {
        self.seq += 1;
        if self.conflict_rate > 0.0 && self.rng.next_f64() < self.conflict_rate {
            return HOT_KEY.to_string();
        }
        match &self.zipf {
            Some(z) => format!("bench/k{}", z.sample(&mut self.rng)),
            None => format!("bench/c{}/{}", self.client, self.seq),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_rate_extremes() {
        let mut all = Workload::new(0, 1.0, None, 10);
        assert!((0..100).all(|_| all.next_key() == HOT_KEY));
        let mut none = Workload::new(0, 0.0, None, 10);
        let keys: std::collections::BTreeSet<_> = (0..100).map(|_| none.next_key()).collect();
        assert_eq!(keys.len(), 100, "distinct keys without conflicts");
        assert_eq!(none.value.len(), 10);
    }

    #[test]
    fn zipf_prefers_low_ranks() {
        let z = Zipf::new(1000, 1.0);
        let mut rng = Rng::new(1);
        let hits0 = (0..10_000).filter(|_| z.sample(&mut rng) == 0).count();
        // P(rank 0) = 1/H(1000) ≈ 0.134.
        assert!((1000..1700).contains(&hits0), "{hits0}");
    }
}
