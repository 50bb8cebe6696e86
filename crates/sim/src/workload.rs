//! The decisions simulated clients propose.
//!
//! With probability `conflict_rate` a decision targets the hot keys: the
//! single inventory counter under `Reserve` traffic (stock set once at the
//! start by client 0's first request), occasional `Get`s of it, and
//! `Claim`/`ReleaseClaim` on a few truck keys. Otherwise it touches one key
//! drawn from a large space with `Put`/`Get`/`Cas`, which practically never
//! conflicts.

use crate::rng::SimRng;
use synod_decision::{Decision, Op};

/// The hot inventory counter.
pub const INVENTORY_KEY: &str = "inventory/hot";
/// Stock set by the first request; small enough that high-conflict runs
/// sell out and exercise `InsufficientStock`.
pub const INVENTORY_STOCK: u64 = 300;
/// Truck keys under claim traffic.
pub const TRUCK_KEYS: [&str; 3] = ["truck/1", "truck/2", "truck/3"];
/// Lifetime of a claim, in the clients' `issued_at_ms` clock (= virtual time).
pub const CLAIM_TTL: u64 = 3_000;
/// Size of the cold key space.
pub const COLD_KEYS: u64 = 1_000_000;

/// The agent name of a client (claims are held by agents).
pub fn agent_name(client: u64) -> String {
    format!("agent-{client}")
}

/// The first decision of the run: stock the inventory counter.
pub fn set_stock(now: u64) -> Decision {
    Decision::new(vec![Op::set_stock(INVENTORY_KEY, INVENTORY_STOCK)], now)
}

/// A random decision for `client` at virtual time `now`.
pub fn next_decision(rng: &mut SimRng, conflict_rate: f64, client: u64, now: u64) -> Decision {
    let op = if rng.chance(conflict_rate) {
        match rng.below(10) {
            0..=5 => Op::reserve(INVENTORY_KEY, rng.range_inclusive(1, 3)),
            6 => Op::get(INVENTORY_KEY),
            7 | 8 => Op::claim(
                *rng.pick(&TRUCK_KEYS).expect("non-empty"),
                agent_name(client),
                CLAIM_TTL,
            ),
            _ => Op::release_claim(
                *rng.pick(&TRUCK_KEYS).expect("non-empty"),
                agent_name(client),
            ),
        }
    } else {
        let key = format!("k/{}", rng.below(COLD_KEYS));
        match rng.below(20) {
            0..=8 => Op::put(key, rng.next_u64().to_le_bytes().to_vec()),
            9..=15 => Op::get(key),
            _ => Op::cas(key, rng.below(3), rng.next_u64().to_le_bytes().to_vec()),
        }
    };
    Decision::new(vec![op], now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touches_hot(d: &Decision) -> bool {
        d.conflict_keys()
            .iter()
            .any(|(k, _)| &**k == INVENTORY_KEY || TRUCK_KEYS.contains(&&**k))
    }

    #[test]
    fn conflict_rate_zero_never_touches_hot_keys() {
        let mut rng = SimRng::new(1);
        for i in 0..2000 {
            let d = next_decision(&mut rng, 0.0, 3, i);
            assert!(!touches_hot(&d));
            assert!(d.validate().is_ok());
        }
    }

    #[test]
    fn conflict_rate_one_always_touches_hot_keys() {
        let mut rng = SimRng::new(2);
        for i in 0..2000 {
            let d = next_decision(&mut rng, 1.0, 3, i);
            assert!(touches_hot(&d));
            assert!(d.validate().is_ok(), "{d:?}");
        }
    }

    #[test]
    fn set_stock_is_valid() {
        assert!(set_stock(0).validate().is_ok());
    }
}
