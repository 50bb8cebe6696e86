//! The `synod` command line: run a replica (`server`), start a local
//! cluster of child processes (`up`), print the effective configuration
//! (`config show`), propose decisions (`propose`) and show replica status
//! (`status`).
//!
//! The binary (`src/main.rs`) only parses the command line and calls
//! [`run`]; everything else lives here so tests can reach it.
#![deny(missing_docs)]

pub mod agent;
pub mod cli;
pub mod commands;
pub mod config;
pub mod kafka_cli;
pub mod members;
pub mod ops;
pub mod up;

pub use cli::Cli;
pub use commands::run;
