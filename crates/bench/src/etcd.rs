//! The etcd adapter (not wired yet).

use crate::args::BenchArgs;
use crate::report::Trial;

/// One etcd trial.
pub fn trial(_args: &BenchArgs) -> Result<Trial, String> {
    Err("--system etcd: not implemented yet".into())
}
