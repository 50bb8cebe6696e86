//! `synod`: see `synod --help` and the `synod_server` crate docs.

use clap::Parser;

fn main() -> std::process::ExitCode {
    synod_server::run(synod_server::Cli::parse())
}
