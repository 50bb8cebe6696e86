//! `synod bench`: a load harness for Synod and, for comparison, etcd.
//!
//! One harness, one adapter per system ([`Target`]): each bench client is
//! one OS thread with one blocking session, closed loop (send, wait,
//! repeat) or open loop (`--rate`, latency measured from the intended send
//! time so a stall is not hidden). Before each trial the machine's floor is
//! probed ([`floor`]): fdatasync of 4 KiB and loopback TCP round trip, since
//! one commit costs at least one round trip plus one fsync
//! (quality-bars.md "Performance").
//!
//! Timings are printed, never asserted.

pub mod args;
pub mod driver;
pub mod etcd;
pub mod floor;
pub mod report;
pub mod synod;
pub mod workload;

pub use args::{BenchArgs, Format, System};

use report::{Comparison, Pair, Trial};

/// Runs the bench the flags describe and prints the results to stdout.
pub fn run(args: BenchArgs) -> Result<(), String> {
    args.validate()?;
    if let Some(other) = args.compare {
        let cmp = compare(&args, other)?;
        match args.output {
            Format::Text => print!("{}", cmp.text()),
            Format::Json => println!("{}", cmp.json()),
        }
        return Ok(());
    }
    let trial = trial(&args, args.system)?;
    match args.output {
        Format::Text => print!("{}", trial.text()),
        Format::Json => println!("{}", trial.json()),
    }
    Ok(())
}

/// Runs one trial and returns its figures (what `run` prints).
pub fn trial(args: &BenchArgs, system: System) -> Result<Trial, String> {
    match system {
        System::Synod => synod::trial(args),
        System::Etcd => etcd::trial(args),
    }
}

/// `--compare`: `--pairs` pairs of trials, Synod then the other system,
/// each on fresh data directories with its own floor probe.
fn compare(args: &BenchArgs, other: System) -> Result<Comparison, String> {
    if other == System::Synod {
        return Err("--compare synod: compare against another system (etcd)".into());
    }
    if !args.start {
        return Err(
            "--compare needs --start: every trial starts a fresh cluster of each system".into(),
        );
    }
    let mut pairs = Vec::new();
    for i in 0..args.pairs {
        args.note(&format!("pair {}/{}: synod", i + 1, args.pairs));
        let a = trial(args, System::Synod)?;
        args.note(&format!("pair {}/{}: {}", i + 1, args.pairs, other.name()));
        let b = trial(args, other)?;
        pairs.push(Pair::new(a, b));
    }
    Ok(Comparison::new(pairs))
}
