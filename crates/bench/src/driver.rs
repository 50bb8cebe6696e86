//! The load loop shared by every system: one thread per client, warmup,
//! a measured window, server counters sampled at the window's edges.

use crate::args::BenchArgs;
use crate::workload::{Workload, Zipf};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Latency samples kept per trial over all clients; past it, further
/// samples are dropped (counted in `samples_dropped`) while throughput
/// still counts them. 2M × 8 bytes = 16 MB.
pub const SAMPLES_MAX: usize = 2_000_000;

/// Error kinds listed per trial; further kinds are folded into "other" so
/// a flood of distinct messages cannot grow the map without bound.
pub const ERROR_KINDS_MAX: usize = 32;

/// One client's connection to the system under test.
pub trait Session: Send {
    /// Writes `value` under `key` and waits until the system acknowledges
    /// it as durable and decided. An error is a short kind (e.g.
    /// `timeout`, `http_503_overloaded`) counted per kind.
    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), String>;
}

/// Server-side counters summed over the replicas (Synod only).
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// Σ fast_commits.
    pub fast_commits: u64,
    /// Σ slow_commits.
    pub slow_commits: u64,
    /// Σ recoveries.
    pub recoveries: u64,
    /// Σ wal_fsyncs.
    pub wal_fsyncs: u64,
    /// Σ wal_records.
    pub wal_records: u64,
    /// Σ applied.
    pub applied: u64,
}

impl Counters {
    /// `self - earlier`, saturating (a restarted replica resets).
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            fast_commits: self.fast_commits.saturating_sub(earlier.fast_commits),
            slow_commits: self.slow_commits.saturating_sub(earlier.slow_commits),
            recoveries: self.recoveries.saturating_sub(earlier.recoveries),
            wal_fsyncs: self.wal_fsyncs.saturating_sub(earlier.wal_fsyncs),
            wal_records: self.wal_records.saturating_sub(earlier.wal_records),
            applied: self.applied.saturating_sub(earlier.applied),
        }
    }
}

/// What a run of the load loop measured.
#[derive(Debug, Default)]
pub struct Measured {
    /// Acknowledged decisions sent and answered inside the window.
    pub decisions: u64,
    /// The measured window's length.
    pub window: Duration,
    /// Latencies in ns, sorted.
    pub latencies_ns: Vec<u64>,
    /// Samples not kept because of [`SAMPLES_MAX`].
    pub samples_dropped: u64,
    /// Failed requests inside the window, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Server counters over the window, if the system has them.
    pub counters: Option<Counters>,
}

/// Drives `sessions` (one per client) with the workload of `args`.
/// `counters` is called at the start and end of the measured window.
pub fn drive(
    args: &BenchArgs,
    sessions: Vec<Box<dyn Session>>,
    counters: &dyn Fn() -> Option<Counters>,
) -> Measured {
    let clients = sessions.len();
    assert!(clients > 0, "no sessions");
    let zipf = args.zipf.map(|s| Arc::new(Zipf::new(args.keys, s)));
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    // Open loop: each client sends every `interval`, staggered.
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(clients as f64 / r));
    let per_client_samples = SAMPLES_MAX / clients;
    let completed = Arc::new(AtomicU64::new(0));

    std::thread::scope(|scope| {
        let handles: Vec<_> = sessions
            .into_iter()
            .enumerate()
            .map(|(i, mut session)| {
                let completed = Arc::clone(&completed);
                let mut work = Workload::new(
                    i as u32,
                    args.conflict_rate,
                    zipf.clone(),
                    args.payload_bytes,
                );
                scope.spawn(move || {
                    let mut out = Measured::default();
                    let mut next = interval.map(|iv| start + iv.mul_f64(i as f64 / clients as f64));
                    loop {
                        let now = Instant::now();
                        if now >= end {
                            break;
                        }
                        let sent = match next {
                            Some(t) => {
                                if t >= end {
                                    break;
                                }
                                if t > now {
                                    std::thread::sleep(t - now);
                                }
                                t
                            }
                            None => now,
                        };
                        let key = work.next_key();
                        let result = session.put(&key, &work.value);
                        let done = Instant::now();
                        completed.fetch_add(1, Ordering::Relaxed);
                        if let (Some(t), Some(iv)) = (next.as_mut(), interval) {
                            *t += iv;
                        }
                        if sent < measure_from || done > end {
                            continue;
                        }
                        match result {
                            Ok(()) => {
                                out.decisions += 1;
                                if out.latencies_ns.len() < per_client_samples {
                                    out.latencies_ns.push((done - sent).as_nanos() as u64);
                                } else {
                                    out.samples_dropped += 1;
                                }
                            }
                            Err(kind) => count_error(&mut out.errors, kind),
                        }
                    }
                    out
                })
            })
            .collect();

        // The window's edges and the progress line.
        sleep_until(measure_from);
        let before = counters();
        let progress = args.progress();
        let mut last = (Instant::now(), completed.load(Ordering::Relaxed));
        while Instant::now() < end {
            sleep_until((Instant::now() + Duration::from_secs(1)).min(end));
            if progress {
                let now = Instant::now();
                let n = completed.load(Ordering::Relaxed);
                let rate = (n - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
                let left = end.saturating_duration_since(now).as_secs_f64();
                eprint!("\r[synod bench] {rate:>10.0} decisions/s, {left:>4.0}s left ");
                let _ = std::io::stderr().flush();
                last = (now, n);
            }
        }
        let after = counters();
        if progress {
            eprint!("\r{:60}\r", "");
        }

        let mut total = Measured {
            window: args.duration,
            counters: match (before, after) {
                (Some(b), Some(a)) => Some(a.since(&b)),
                _ => None,
            },
            ..Measured::default()
        };
        for h in handles {
            let m = h.join().expect("a bench client panicked");
            total.decisions += m.decisions;
            total.latencies_ns.extend(m.latencies_ns);
            total.samples_dropped += m.samples_dropped;
            for (k, n) in m.errors {
                *total.errors.entry(k).or_default() += n;
            }
        }
        total.latencies_ns.sort_unstable();
        total
    })
}

fn count_error(errors: &mut BTreeMap<String, u64>, kind: String) {
    if errors.len() >= ERROR_KINDS_MAX && !errors.contains_key(&kind) {
        *errors.entry("other".into()).or_default() += 1;
    } else {
        *errors.entry(kind).or_default() += 1;
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}
