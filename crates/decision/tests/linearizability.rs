//! Compiles and runs the decision-history linearizability checker, whose home
//! is `crates/sim/src/linearizability.rs`, from this crate's tests.
//!
//! The checker depends only on `synod-types`, `synod-decision` and std, so it
//! builds here unchanged. This harness exists so `cargo test -p
//! synod-decision` exercises the checker against the state machine it models;
//! once `synod-sim` declares `pub mod linearizability;` the same tests also run
//! there and this file may be deleted.

#[path = "../../sim/src/linearizability.rs"]
mod linearizability;
