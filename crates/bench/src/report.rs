//! Figures of a trial and of a comparison, as text or JSON.

use crate::driver::Measured;
use crate::floor::{quantile, Floor};
use serde_json::{json, Value};
use std::fmt::Write;

/// One trial's figures.
#[derive(Debug)]
pub struct Trial {
    /// "synod" or "etcd".
    pub system: &'static str,
    /// How it was driven (clients, loop, payload, conflicts), for the record.
    pub setup: Value,
    /// The floor probed just before.
    pub floor: Floor,
    /// The load loop's results.
    pub measured: Measured,
    /// Caveats to print with the figures (e.g. a fallback protocol).
    pub notes: Vec<String>,
}

fn us(ns: Option<u64>) -> f64 {
    ns.map_or(0.0, |n| n as f64 / 1e3)
}

impl Trial {
    /// Acknowledged decisions per second in the window.
    pub fn throughput(&self) -> f64 {
        self.measured.decisions as f64 / self.measured.window.as_secs_f64()
    }

    /// Commit latency at quantile `q`, µs.
    pub fn latency_us(&self, q: f64) -> f64 {
        us(quantile(&self.measured.latencies_ns, q))
    }

    /// Σfast / (Σfast + Σslow), if the system reports them.
    pub fn fast_path_ratio(&self) -> Option<f64> {
        let c = self.measured.counters?;
        let all = c.fast_commits + c.slow_commits;
        (all > 0).then(|| c.fast_commits as f64 / all as f64)
    }

    /// Δ Σ wal_fsyncs / decisions, if the system reports them.
    pub fn fsyncs_per_decision(&self) -> Option<f64> {
        let c = self.measured.counters?;
        (self.measured.decisions > 0).then(|| c.wal_fsyncs as f64 / self.measured.decisions as f64)
    }

    /// p50 over the floor (P1's ratio).
    pub fn p50_over_floor(&self) -> f64 {
        self.latency_us(0.5) / self.floor.floor_us().max(1e-9)
    }

    /// The JSON object `-o json` prints.
    pub fn json(&self) -> Value {
        let m = &self.measured;
        let c = m.counters;
        // Commit paths are Synod's; other systems report only fsyncs.
        let paths = c.filter(|_| self.system == "synod");
        json!({
            "system": self.system,
            "setup": self.setup,
            "duration_s": m.window.as_secs_f64(),
            "decisions": m.decisions,
            "throughput_per_s": self.throughput(),
            "latency_us": {
                "p50": self.latency_us(0.5),
                "p99": self.latency_us(0.99),
                "p999": self.latency_us(0.999),
                "max": us(m.latencies_ns.last().copied()),
                "samples": m.latencies_ns.len(),
                "samples_dropped": m.samples_dropped,
            },
            "errors": m.errors,
            "fast_commits": paths.map(|c| c.fast_commits),
            "slow_commits": paths.map(|c| c.slow_commits),
            "recoveries": paths.map(|c| c.recoveries),
            "fast_path_ratio": paths.and(self.fast_path_ratio()),
            "wal_fsyncs": c.map(|c| c.wal_fsyncs),
            "fsyncs_per_decision": self.fsyncs_per_decision(),
            "floor": {
                "fsync_p50_us": self.floor.fsync_p50_us,
                "fsync_p99_us": self.floor.fsync_p99_us,
                "rtt_p50_us": self.floor.rtt_p50_us,
                "floor_us": self.floor.floor_us(),
            },
            "p50_over_floor": self.p50_over_floor(),
            "notes": self.notes,
        })
    }

    /// The lines `-o text` prints.
    pub fn text(&self) -> String {
        let m = &self.measured;
        let f = &self.floor;
        let mut s = String::new();
        let _ = writeln!(s, "system            {}   {}", self.system, self.setup);
        for n in &self.notes {
            let _ = writeln!(s, "NOTE              {n}");
        }
        let _ = writeln!(
            s,
            "floor             {:.0} µs = RTT {:.1} µs + fsync {:.0} µs (fsync p99 {:.0} µs)",
            f.floor_us(),
            f.rtt_p50_us,
            f.fsync_p50_us,
            f.fsync_p99_us
        );
        let _ = writeln!(
            s,
            "throughput        {:.0} decisions/s ({} in {:.1}s)",
            self.throughput(),
            m.decisions,
            m.window.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "commit latency    p50 {:.0} µs   p99 {:.0} µs   p99.9 {:.0} µs   max {:.0} µs",
            self.latency_us(0.5),
            self.latency_us(0.99),
            self.latency_us(0.999),
            us(m.latencies_ns.last().copied())
        );
        let _ = writeln!(s, "p50 / floor       {:.2}", self.p50_over_floor());
        if let Some(c) = m.counters.filter(|_| self.system == "synod") {
            let _ = writeln!(
                s,
                "fast path         {} fast, {} slow instances ({}), {} recoveries",
                c.fast_commits,
                c.slow_commits,
                self.fast_path_ratio()
                    .map_or("n/a".into(), |r| format!("{:.2}% fast", r * 100.0)),
                c.recoveries
            );
        }
        if let Some(c) = m.counters {
            let _ = writeln!(
                s,
                "fsyncs/decision   {}   ({} fsyncs over 3 replicas)",
                self.fsyncs_per_decision()
                    .map_or("n/a".into(), |r| format!("{r:.3}")),
                c.wal_fsyncs
            );
        }
        if m.errors.is_empty() {
            let _ = writeln!(s, "errors            none");
        } else {
            let list: Vec<String> = m.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            let _ = writeln!(s, "errors            {}", list.join(", "));
        }
        if m.samples_dropped > 0 {
            let _ = writeln!(
                s,
                "NOTE              {} latency samples dropped (cap)",
                m.samples_dropped
            );
        }
        s
    }
}

/// One Synod trial and the trial of the other system right after it.
#[derive(Debug)]
pub struct Pair {
    /// Synod.
    pub a: Trial,
    /// The other system.
    pub b: Trial,
}

impl Pair {
    /// Pairs two trials.
    pub fn new(a: Trial, b: Trial) -> Pair {
        Pair { a, b }
    }

    /// Throughput Synod / other.
    pub fn throughput_ratio(&self) -> f64 {
        self.a.throughput() / self.b.throughput().max(1e-9)
    }

    /// p50 other / Synod (> 1: Synod is faster).
    pub fn p50_ratio(&self) -> f64 {
        self.b.latency_us(0.5) / self.a.latency_us(0.5).max(1e-9)
    }
}

/// The result of `--compare`.
#[derive(Debug)]
pub struct Comparison {
    /// The pairs, in run order.
    pub pairs: Vec<Pair>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Comparison {
    /// Wraps the pairs.
    pub fn new(pairs: Vec<Pair>) -> Comparison {
        Comparison { pairs }
    }

    /// Median over pairs of throughput Synod / other.
    pub fn median_throughput_ratio(&self) -> f64 {
        median(self.pairs.iter().map(Pair::throughput_ratio).collect())
    }

    /// Median over pairs of p50 other / Synod.
    pub fn median_p50_ratio(&self) -> f64 {
        median(self.pairs.iter().map(Pair::p50_ratio).collect())
    }

    /// One JSON object.
    pub fn json(&self) -> Value {
        json!({
            "pairs": self.pairs.iter().map(|p| json!({
                "synod": p.a.json(),
                "other": p.b.json(),
                "throughput_ratio": p.throughput_ratio(),
                "p50_ratio": p.p50_ratio(),
            })).collect::<Vec<_>>(),
            "median_throughput_ratio": self.median_throughput_ratio(),
            "median_p50_ratio": self.median_p50_ratio(),
        })
    }

    /// Every trial's lines, then the ratios.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for (i, p) in self.pairs.iter().enumerate() {
            let _ = writeln!(s, "=== pair {} ===", i + 1);
            s.push_str(&p.a.text());
            s.push('\n');
            s.push_str(&p.b.text());
            let _ = writeln!(
                s,
                "ratio             throughput synod/{} {:.2}x   p50 {}/synod {:.2}x\n",
                p.b.system,
                p.throughput_ratio(),
                p.b.system,
                p.p50_ratio()
            );
        }
        let other = self.pairs.first().map_or("other", |p| p.b.system);
        let _ = writeln!(
            s,
            "median of {} pairs: throughput synod/{other} {:.2}x, p50 {other}/synod {:.2}x",
            self.pairs.len(),
            self.median_throughput_ratio(),
            self.median_p50_ratio()
        );
        s
    }
}
