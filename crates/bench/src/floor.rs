//! The machine's floor under one commit: an fdatasync and a loopback round
//! trip, probed before every trial and printed beside its results.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// fdatasyncs per probe: enough for a stable p99 in well under a second on
/// a disk at ≈ 135 µs per sync, few enough not to disturb the trial.
pub const FSYNC_SAMPLES: usize = 200;

/// Bytes written before each fdatasync: one page, a typical WAL group.
pub const FSYNC_WRITE_BYTES: usize = 4096;

/// Ping-pongs per RTT probe (plus [`RTT_WARMUP`] not counted).
pub const RTT_SAMPLES: usize = 2000;

/// Ping-pongs before measuring, so the first connection's costs are out.
const RTT_WARMUP: usize = 100;

/// The probe's figures, in microseconds.
#[derive(Clone, Copy, Debug)]
pub struct Floor {
    /// fdatasync of 4 KiB into a preallocated file: median.
    pub fsync_p50_us: f64,
    /// fdatasync: 99th percentile.
    pub fsync_p99_us: f64,
    /// Loopback TCP round trip of one byte: median.
    pub rtt_p50_us: f64,
}

impl Floor {
    /// One round trip plus one fsync: no commit can be faster.
    pub fn floor_us(&self) -> f64 {
        self.rtt_p50_us + self.fsync_p50_us
    }
}

/// Probes fsync in `dir` (its filesystem) and loopback TCP.
pub fn probe(dir: &Path) -> Result<Floor, String> {
    let (fsync_p50_us, fsync_p99_us) = probe_fsync(dir)?;
    let rtt_p50_us = probe_rtt()?;
    Ok(Floor {
        fsync_p50_us,
        fsync_p99_us,
        rtt_p50_us,
    })
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Value at quantile `q` of sorted `v` (nearest rank).
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn probe_fsync(dir: &Path) -> Result<(f64, f64), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("synod-bench-fsync-{}.probe", std::process::id()));
    let result = (|| {
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // Preallocate by writing the whole file and syncing it, so the
        // probe measures overwrites, as a WAL with preallocated segments.
        let block = vec![0u8; FSYNC_WRITE_BYTES];
        for i in 0..FSYNC_SAMPLES {
            f.write_all_at(&block, (i * FSYNC_WRITE_BYTES) as u64)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        f.sync_all()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let data = vec![0x5Au8; FSYNC_WRITE_BYTES];
        let mut samples = Vec::with_capacity(FSYNC_SAMPLES);
        for i in 0..FSYNC_SAMPLES {
            let t = Instant::now();
            f.write_all_at(&data, (i * FSYNC_WRITE_BYTES) as u64)
                .and_then(|()| f.sync_data())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            samples.push(micros(t.elapsed()));
        }
        samples.sort_by(f64::total_cmp);
        Ok((
            quantile(&samples, 0.5).unwrap_or(0.0),
            quantile(&samples, 0.99).unwrap_or(0.0),
        ))
    })();
    let _ = std::fs::remove_file(&path);
    result
}

fn probe_rtt() -> Result<f64, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("rtt probe: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("rtt probe: {e}"))?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 1];
        loop {
            match s.read(&mut b)? {
                0 => return Ok(()),
                _ => s.write_all(&b)?,
            }
        }
    });
    let mut s = TcpStream::connect(addr).map_err(|e| format!("rtt probe: {e}"))?;
    s.set_nodelay(true).map_err(|e| format!("rtt probe: {e}"))?;
    let mut samples = Vec::with_capacity(RTT_SAMPLES);
    let mut b = [7u8; 1];
    for i in 0..RTT_WARMUP + RTT_SAMPLES {
        let t = Instant::now();
        s.write_all(&b)
            .and_then(|()| s.read_exact(&mut b))
            .map_err(|e| format!("rtt probe: {e}"))?;
        if i >= RTT_WARMUP {
            samples.push(micros(t.elapsed()));
        }
    }
    drop(s);
    let _ = echo.join();
    samples.sort_by(f64::total_cmp);
    Ok(quantile(&samples, 0.5).unwrap_or(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&v, 0.999), Some(100));
        assert_eq!(quantile(&v, 0.0), Some(1));
        assert_eq!(quantile::<u32>(&[], 0.5), None);
    }
}
