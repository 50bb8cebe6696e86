//! `synod`: see `synod --help` and the `synod_server` crate docs.

mod agent;

use clap::Parser;
use synod_server::cli::{Synod, TopCommand};

fn main() -> std::process::ExitCode {
    match Synod::parse().command {
        TopCommand::Agent(args) => agent::run(args),
        TopCommand::Replica(command) => synod_server::run(synod_server::Cli { command }),
    }
}
