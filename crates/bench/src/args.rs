//! The flags of `synod bench`.

use clap::ValueEnum;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

/// The endpoints of the cluster `synod up` starts with its default base
/// port.
pub const ENDPOINTS_DEFAULT: &str = "127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002";

/// Upper bound on `--clients`: one OS thread each, with its own stack and
/// connection; past a few thousand the harness measures itself.
pub const CLIENTS_MAX: u32 = 4096;

/// Upper bound on `--keys` with `--zipf`: the sampler keeps one f64 per key
/// (80 MB at this bound).
pub const KEYS_MAX: u64 = 10_000_000;

/// Upper bound on `--payload-bytes`: etcd's default request limit is
/// 1.5 MiB and Synod's is smaller; a bench of huge values measures copying.
pub const PAYLOAD_BYTES_MAX: usize = 1 << 20;

/// The system a trial drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum System {
    /// Synod over its HTTP/JSON API (`synod_client`).
    Synod,
    /// etcd 3.x over its native gRPC KV API.
    Etcd,
}

impl System {
    /// Lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            System::Synod => "synod",
            System::Etcd => "etcd",
        }
    }
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned lines for people.
    Text,
    /// One JSON object.
    Json,
}

/// `synod bench`.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Synod replica HTTP endpoints, host:port, comma-separated (ignored
    /// with --start).
    #[arg(
        long,
        short = 'e',
        value_name = "HOST:PORT,..",
        value_delimiter = ',',
        default_value = ENDPOINTS_DEFAULT
    )]
    pub endpoints: Vec<String>,
    /// Start a fresh local 3-replica cluster for each trial (in a temporary
    /// directory under --data-dir) and stop it afterwards.
    #[arg(long)]
    pub start: bool,
    /// The system to drive.
    #[arg(long, value_enum, default_value_t = System::Synod)]
    pub system: System,
    /// Alternate Synod and this system, A B A B, and report per-pair ratios
    /// and their medians (implies fresh clusters: needs --start).
    #[arg(long, value_enum, value_name = "SYSTEM")]
    pub compare: Option<System>,
    /// Pairs of trials with --compare.
    #[arg(long, default_value_t = 3)]
    pub pairs: u32,
    /// Concurrent clients (one thread and one session each).
    #[arg(long, default_value_t = 16)]
    pub clients: u32,
    /// Measured time per trial (e.g. 10s, 500ms).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Load before measuring, not counted (e.g. 2s, 0s).
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub warmup: Duration,
    /// Open loop: total decisions per second over all clients. Default:
    /// closed loop (each client sends its next decision on the answer).
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<f64>,
    /// Bytes of each decision's value.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Share of decisions on the hot key `bench/hot` (0.0..=1.0); the
    /// others go to keys no other decision uses (or, with --zipf, to the
    /// skewed keyspace).
    #[arg(long, default_value_t = 0.0)]
    pub conflict_rate: f64,
    /// Zipf exponent over a keyspace of --keys keys for the decisions not
    /// on the hot key (e.g. 0.99).
    #[arg(long, value_name = "S")]
    pub zipf: Option<f64>,
    /// Keyspace size with --zipf.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Where temporary clusters' data directories and the fsync probe go
    /// (default: the system's temporary directory). Point it at the disk
    /// under test.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The etcd server binary (Debian's `etcd-server` package).
    #[arg(long, value_name = "PATH", default_value = "/usr/bin/etcd")]
    pub etcd_bin: PathBuf,
    /// Install etcd with apt-get if --etcd-bin is missing.
    #[arg(long)]
    pub install: bool,
    /// The `synod` executable --start runs (default: this executable).
    #[arg(long, value_name = "PATH", hide = true)]
    pub synod_exe: Option<PathBuf>,
    /// No progress line and no notes on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl BenchArgs {
    /// Checks the flags' ranges.
    pub fn validate(&self) -> Result<(), String> {
        if self.clients == 0 || self.clients > CLIENTS_MAX {
            return Err(format!("--clients must be 1..={CLIENTS_MAX}"));
        }
        if self.duration.is_zero() {
            return Err("--duration must be > 0".into());
        }
        if !(0.0..=1.0).contains(&self.conflict_rate) {
            return Err("--conflict-rate must be within 0.0..=1.0".into());
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                return Err("--rate must be > 0".into());
            }
        }
        if let Some(s) = self.zipf {
            if !(s.is_finite() && s > 0.0) {
                return Err("--zipf must be > 0".into());
            }
            if self.keys == 0 || self.keys > KEYS_MAX {
                return Err(format!("--keys must be 1..={KEYS_MAX}"));
            }
        }
        if self.payload_bytes > PAYLOAD_BYTES_MAX {
            return Err(format!("--payload-bytes must be ≤ {PAYLOAD_BYTES_MAX}"));
        }
        if self.pairs == 0 {
            return Err("--pairs must be ≥ 1".into());
        }
        Ok(())
    }

    /// The directory for temporary data and the fsync probe.
    pub fn scratch_root(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(std::env::temp_dir)
    }

    /// Prints a note to stderr unless --quiet.
    pub fn note(&self, s: &str) {
        if !self.quiet {
            eprintln!("[synod bench] {s}");
        }
    }

    /// True if the one-line progress indicator should be drawn.
    pub fn progress(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }
}

impl BenchArgs {
    /// The workload, as recorded with each trial's figures.
    pub fn setup_json(&self) -> serde_json::Value {
        serde_json::json!({
            "clients": self.clients,
            "loop": if self.rate.is_some() { "open" } else { "closed" },
            "rate_per_s": self.rate,
            "payload_bytes": self.payload_bytes,
            "conflict_rate": self.conflict_rate,
            "zipf": self.zipf,
            "keys": self.zipf.map(|_| self.keys),
            "warmup_s": self.warmup.as_secs_f64(),
        })
    }
}

/// Parses `1.5s`, `500ms`, `2m`, `10us` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 10s or 500ms"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" | "min" => n * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (us, ms, s, m)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn flags_and_defaults() {
        use clap::Parser;
        let a = Cli::try_parse_from(["bench"]).unwrap().bench;
        assert_eq!(a.clients, 16);
        assert_eq!(a.duration, Duration::from_secs(10));
        assert_eq!(a.warmup, Duration::from_secs(2));
        assert_eq!(a.endpoints.len(), 3);
        assert_eq!(a.rate, None);
        assert!(a.validate().is_ok());
        let a = Cli::try_parse_from([
            "bench",
            "--start",
            "--compare",
            "etcd",
            "--pairs",
            "2",
            "--clients",
            "4",
            "--duration",
            "5s",
            "--rate",
            "1000",
            "--conflict-rate",
            "0.5",
            "--zipf",
            "0.99",
            "--keys",
            "10",
            "-o",
            "json",
        ])
        .unwrap()
        .bench;
        assert_eq!(a.compare, Some(System::Etcd));
        assert_eq!(a.output, Format::Json);
        assert!(a.validate().is_ok());
        let bad = Cli::try_parse_from(["bench", "--conflict-rate", "1.5"])
            .unwrap()
            .bench;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("x").is_err());
    }
}
