//! Measures the disk and the WAL on it (figures for quality-bars.md).
//!
//! ```text
//! cargo run -p synod-storage --release --example wal_bench -- \
//!     --dir /tmp/x --seconds 5 --writers 1,16,64 --record-bytes 200
//! ```
//!
//! 1. Raw fdatasync of 4 KiB writes, three ways: into a zero-filled
//!    preallocated file (what the WAL does), into a `set_len` (sparse) file,
//!    and appending to a growing file.
//! 2. The WAL with N appender threads, each looping append + wait_durable:
//!    fsyncs/s, records per fsync, records/s, append-to-durable latency.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use synod_storage::{Wal, WalOptions};

struct Args {
    dir: PathBuf,
    seconds: f64,
    writers: Vec<usize>,
    record_bytes: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        dir: std::env::temp_dir().join("synod-wal-bench"),
        seconds: 5.0,
        writers: vec![1, 16, 64],
        record_bytes: 200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--dir" => a.dir = PathBuf::from(value()),
            "--seconds" => a.seconds = value().parse().unwrap_or_else(|_| usage("bad --seconds")),
            "--writers" => {
                a.writers = value()
                    .split(',')
                    .map(|w| w.parse().unwrap_or_else(|_| usage("bad --writers")))
                    .collect()
            }
            "--record-bytes" => {
                a.record_bytes = value()
                    .parse()
                    .unwrap_or_else(|_| usage("bad --record-bytes"))
            }
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    a
}

fn usage(msg: &str) -> ! {
    eprintln!("wal_bench: {msg}\nusage: wal_bench [--dir DIR] [--seconds S] [--writers N[,N..]] [--record-bytes B]");
    std::process::exit(2);
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn us(ns: u64) -> String {
    format!("{:.0} µs", ns as f64 / 1000.0)
}

/// fdatasyncs 4 KiB writes for `secs`; returns per-sync latencies in ns.
fn raw_fsync(path: &Path, mode: &str, secs: f64) -> Vec<u64> {
    const PAGE: usize = 4096;
    const FILE_BYTES: u64 = 256 << 20;
    let _ = fs::remove_file(path);
    let f = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    match mode {
        "zero-filled" => {
            let zeros = vec![0u8; 1 << 20];
            for i in 0..FILE_BYTES >> 20 {
                f.write_all_at(&zeros, i << 20).unwrap();
            }
            f.sync_all().unwrap();
        }
        "set_len" => {
            f.set_len(FILE_BYTES).unwrap();
            f.sync_all().unwrap();
        }
        _ => {}
    }
    File::open(path.parent().unwrap())
        .unwrap()
        .sync_all()
        .unwrap();
    let page = vec![0xA5u8; PAGE];
    let mut lat = Vec::new();
    let mut off = 0u64;
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end && off + (PAGE as u64) <= FILE_BYTES {
        let t0 = Instant::now();
        f.write_all_at(&page, off).unwrap();
        f.sync_data().unwrap();
        lat.push(t0.elapsed().as_nanos() as u64);
        off += PAGE as u64;
    }
    drop(f);
    fs::remove_file(path).unwrap();
    lat
}

fn main() {
    let args = parse_args();
    fs::create_dir_all(&args.dir).unwrap();
    let raw_secs = args.seconds.min(3.0);

    println!(
        "raw fdatasync, 4 KiB writes, {raw_secs:.0} s each, in {}",
        args.dir.display()
    );
    println!(
        "{:<14} {:>10} {:>10} {:>10}",
        "file", "p50", "p99", "syncs/s"
    );
    for mode in ["zero-filled", "set_len", "growing"] {
        let mut lat = raw_fsync(&args.dir.join("raw.bench"), mode, raw_secs);
        let total: u64 = lat.iter().sum();
        lat.sort_unstable();
        println!(
            "{:<14} {:>10} {:>10} {:>10.0}",
            mode,
            us(percentile(&lat, 0.5)),
            us(percentile(&lat, 0.99)),
            lat.len() as f64 / (total as f64 / 1e9)
        );
    }

    println!();
    println!(
        "WAL, append + wait_durable loops, {}-byte records, {:.0} s each",
        args.record_bytes, args.seconds
    );
    println!(
        "{:>7} {:>10} {:>9} {:>14} {:>10} {:>10} {:>12}",
        "writers", "records/s", "fsyncs/s", "records/fsync", "p50", "p99", "fsync p-avg"
    );
    for &writers in &args.writers {
        let dir = args.dir.join(format!("wal-{writers}"));
        let _ = fs::remove_dir_all(&dir);
        let (wal, _) = Wal::open(&dir, WalOptions::default(), Box::new(|_| {})).unwrap();
        let wal = Arc::new(wal);
        // Let the spare segment's preallocation finish before measuring.
        std::thread::sleep(Duration::from_millis(500));
        let before = wal.stats();
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(args.seconds);
        let threads: Vec<_> = (0..writers)
            .map(|_| {
                let wal = Arc::clone(&wal);
                let payload = vec![0x5Au8; args.record_bytes];
                std::thread::spawn(move || {
                    let mut lat = Vec::new();
                    while Instant::now() < end {
                        let t0 = Instant::now();
                        let lsn = wal.append(payload.clone()).unwrap();
                        wal.wait_durable(lsn).unwrap();
                        lat.push(t0.elapsed().as_nanos() as u64);
                    }
                    lat
                })
            })
            .collect();
        let mut lat: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let elapsed = start.elapsed().as_secs_f64();
        let s = wal.stats();
        let fsyncs = s.fsyncs_total - before.fsyncs_total;
        let records = s.records_total - before.records_total;
        let fsync_ns = s.fsync_time_ns_total - before.fsync_time_ns_total;
        lat.sort_unstable();
        println!(
            "{:>7} {:>10.0} {:>9.0} {:>14.1} {:>10} {:>10} {:>12}",
            writers,
            records as f64 / elapsed,
            fsyncs as f64 / elapsed,
            records as f64 / fsyncs.max(1) as f64,
            us(percentile(&lat, 0.5)),
            us(percentile(&lat, 0.99)),
            us(fsync_ns / fsyncs.max(1)),
        );
        std::io::stdout().flush().unwrap();
        Arc::try_unwrap(wal).unwrap().close().unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
