//! I22 Configuration sanity (epaxos.md §6 I22; [P-abs], [TLA]).
//!
//! `n ≥ max(2e+f−1, 2f+1)` and `1 ≤ e ≤ f`. Membership is fixed in the
//! simulator, so this is checked once, when a run starts.

use super::{ensure, Check};
use synod_types::QuorumConfig;

/// Invariant name.
pub const NAME: &str = "I22 Configuration sanity";

/// Checks the run's quorum configuration.
pub fn check(qc: &QuorumConfig) -> Check {
    let (n, f, e) = (qc.n(), qc.f(), qc.e());
    ensure(n >= (2 * e + f - 1).max(2 * f + 1), NAME, || {
        format!("n = {n} < max(2e+f−1, 2f+1) with f = {f}, e = {e}")
    })?;
    ensure(1 <= e && e <= f, NAME, || {
        format!("need 1 ≤ e ≤ f, got f = {f}, e = {e}")
    })?;
    ensure(
        qc.slow_quorum() == n - f && qc.fast_quorum() == n - e,
        NAME,
        || {
            format!(
                "quorum sizes {} / {} do not match n − f / n − e",
                qc.slow_quorum(),
                qc.fast_quorum()
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_configurations_pass() {
        for n in [3, 5, 7] {
            assert_eq!(check(&QuorumConfig::standard(n).unwrap()), Ok(()));
        }
    }
}
