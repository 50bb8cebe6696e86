//! Synod's write-ahead log and snapshots (architecture.md §2, "Storage").
//!
//! A [`Wal`] is a directory:
//!
//! ```text
//! <dir>/wal/wal-{first_lsn:020}.seg   segments, name order = LSN order
//! <dir>/wal/spare.tmp                 the next segment, preallocated ahead of time
//! <dir>/snap/snap-{lsn:020}.snap      snapshots (the newest two are kept)
//! ```
//!
//! # Format
//!
//! See the `format` module: every segment starts with a crc-protected header
//! (`"SYNODWAL"`, version, first LSN); each record is `len | crc32c | lsn |
//! payload` with the crc over `lsn | payload`; snapshots carry their own header
//! (`"SYNODSNP"`, version, LSN, length, crc32c over the body).
//!
//! # Invariants
//!
//! * LSNs are assigned by [`Wal::append`], start at 1, increase by exactly one
//!   per record, and are never reused, also across restarts.
//! * `durable_lsn <= last_lsn`; [`Wal::durable_lsn`] only moves after an
//!   `fdatasync` covering every record up to it returned successfully.
//! * Segments are preallocated to [`WalOptions::segment_bytes`] with zeros
//!   written out (not a sparse `set_len`: an fdatasync into a hole must also
//!   allocate blocks, which is what made the growing-file case ~2x slower in
//!   quality-bars.md). A zero record header marks the end of the log.
//! * A segment becomes visible under its `wal-*.seg` name only after its header
//!   is fsynced (rename + directory fsync), and records are written to it only
//!   after that, so every named segment has a valid header.
//! * The previous segment is fsynced before the first record goes to the next
//!   one, so only the last segment can have a torn tail.
//! * A snapshot is written only once the WAL is durable up to its LSN, and
//!   compaction deletes only files the newest durable snapshot supersedes.
//!
//! # Recovery
//!
//! [`Wal::open`] reads the newest snapshot and every record after it. A torn
//! tail (an incomplete or crc-failing record, or garbage, at the end of the
//! last segment with no valid record after it) is zeroed out and reported in
//! [`Recovered::truncated_tail`]. Any other damage (a bad record followed by a
//! valid one, an LSN gap, a bad segment header, a bad newest snapshot) is
//! [`StorageError::Corrupt`] and the WAL refuses to open: a replica must then
//! be rebuilt from its peers, never served from bad data (quality-bars R5).
//! [`check`] applies the same rules without modifying anything.
//!
//! # Failpoints
//!
//! [`failpoint::FAILPOINTS`] names a crash point at every write and fsync
//! boundary; see [`failpoint`] for how to arm them and exactly what a firing
//! models (power loss: unsynced writes reverted, then `abort`).

#![deny(missing_docs)]

mod error;
pub mod failpoint;
mod format;
mod recovery;
mod wal;

pub use error::StorageError;
pub use wal::{Wal, WalStats};

use std::fmt;
use std::path::{Path, PathBuf};

/// Log sequence number: assigned by [`Wal::append`], starts at 1, strictly
/// increasing, never reused (also across restarts).
pub type Lsn = u64;

/// Tuning of a [`Wal`]. Every limit is a bound on memory or latency.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Size each segment file is preallocated to. Larger segments roll over
    /// less often; compaction frees space only in whole segments. Default
    /// 64 MiB. Must hold at least one record of `max_record_bytes`.
    pub segment_bytes: u64,
    /// Largest accepted payload; bigger appends get
    /// [`StorageError::RecordTooLarge`]. Default 16 MiB.
    pub max_record_bytes: u32,
    /// Most records one fdatasync covers; bounds the latency one batch adds to
    /// the records behind it. Default 4096.
    pub group_commit_max_records: usize,
    /// Most payload bytes one fdatasync covers (a single larger record still
    /// goes alone). Default 8 MiB.
    pub group_commit_max_bytes: usize,
    /// Most records queued and not yet taken by the writer; appends beyond it
    /// get [`StorageError::Overloaded`] (retryable). Default 65536.
    pub queue_max_records: usize,
    /// Extra wait before every group-commit fdatasync, emulating a slow disk.
    /// Zero (the default) in production; crash tests raise it so that much
    /// more is written-but-not-durable when the power goes.
    pub emulated_sync_delay: std::time::Duration,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            max_record_bytes: 16 << 20,
            group_commit_max_records: 4096,
            group_commit_max_bytes: 8 << 20,
            queue_max_records: 65536,
            emulated_sync_delay: std::time::Duration::ZERO,
        }
    }
}

impl WalOptions {
    fn validate(&self) -> Result<(), StorageError> {
        let need = (format::SEG_HEADER_LEN + format::REC_HEADER_LEN) as u64
            + u64::from(self.max_record_bytes);
        let bad = |reason: String| Err(StorageError::Config { reason });
        if self.segment_bytes < need {
            return bad(format!(
                "segment_bytes {} cannot hold one record of max_record_bytes {} (needs {need})",
                self.segment_bytes, self.max_record_bytes
            ));
        }
        if self.group_commit_max_records == 0
            || self.group_commit_max_bytes == 0
            || self.queue_max_records == 0
        {
            return bad("group-commit and queue limits must be at least 1".into());
        }
        Ok(())
    }
}

/// What [`Wal::open`] found on disk.
#[derive(Debug)]
pub struct Recovered {
    /// The newest valid snapshot and the LSN it covers: every record with
    /// `lsn <=` it is superseded.
    pub snapshot: Option<(Lsn, Vec<u8>)>,
    /// Every WAL record with `lsn >` the snapshot's LSN, in LSN order.
    pub records: Vec<(Lsn, Vec<u8>)>,
    /// Where a torn tail was cut off, if one was; worth a log line.
    pub truncated_tail: Option<TornTail>,
}

/// An incomplete or damaged end of the last segment that recovery cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub path: PathBuf,
    /// Offset of the first byte dropped; the log ends here.
    pub offset: u64,
    /// How many bytes (up to the last non-zero one) were zeroed.
    pub bytes_dropped: u64,
    /// What was wrong with the first dropped record.
    pub reason: String,
}

impl fmt::Display for TornTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "torn tail in {} at offset {}: {} bytes dropped ({})",
            self.path.display(),
            self.offset,
            self.bytes_dropped,
            self.reason
        )
    }
}

/// The result of [`check`]: a directory that verified.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// Each segment: path, first LSN, records read (`None` = superseded by the
    /// snapshot and not read).
    pub segments: Vec<(PathBuf, Lsn, Option<u64>)>,
    /// Valid records read.
    pub records: u64,
    /// Lowest and highest LSN read.
    pub lsn_range: Option<(Lsn, Lsn)>,
    /// Each snapshot, newest first: path, LSN, body length or what is wrong
    /// with it (only an older snapshot can be bad in a report; a bad newest one
    /// makes `check` fail).
    pub snapshots: Vec<(PathBuf, Lsn, Result<u64, String>)>,
    /// A torn tail open would cut off.
    pub torn_tail: Option<TornTail>,
    /// Leftover temp files open would delete.
    pub temp_files: Vec<PathBuf>,
    /// The LSN the next append would get.
    pub next_lsn: Lsn,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "segments: {}", self.segments.len())?;
        for (path, first, records) in &self.segments {
            match records {
                Some(n) => writeln!(f, "  {} first lsn {first}, {n} records", path.display())?,
                None => writeln!(
                    f,
                    "  {} first lsn {first}, superseded by snapshot",
                    path.display()
                )?,
            }
        }
        match self.lsn_range {
            Some((lo, hi)) => writeln!(f, "records: {} (lsn {lo}..={hi})", self.records)?,
            None => writeln!(f, "records: 0")?,
        }
        writeln!(f, "next lsn: {}", self.next_lsn)?;
        writeln!(f, "snapshots: {}", self.snapshots.len())?;
        for (path, lsn, status) in &self.snapshots {
            match status {
                Ok(len) => writeln!(f, "  {} lsn {lsn}, {len} bytes, ok", path.display())?,
                Err(e) => writeln!(f, "  {} lsn {lsn}, CORRUPT {e}", path.display())?,
            }
        }
        for t in &self.temp_files {
            writeln!(f, "leftover temp file (deleted at open): {}", t.display())?;
        }
        match &self.torn_tail {
            Some(t) => writeln!(f, "{t} (cut off at open)"),
            None => writeln!(f, "torn tail: none"),
        }
    }
}

/// Verifies a data directory offline with the rules of [`Wal::open`],
/// modifying nothing. Damage is an `Err`, as it would be at open.
pub fn check(dir: &Path) -> Result<CheckReport, StorageError> {
    let scan = recovery::scan(dir, false, true)?;
    Ok(CheckReport {
        segments: scan
            .segments
            .iter()
            .map(|s| (s.path.clone(), s.first_lsn, s.end_offset.map(|_| s.records)))
            .collect(),
        records: scan.records_read,
        lsn_range: scan.lsn_range,
        snapshots: scan
            .snapshots
            .iter()
            .map(|s| (s.path.clone(), s.lsn, s.status.clone().unwrap_or(Ok(0))))
            .collect(),
        torn_tail: scan.torn,
        temp_files: scan.temp_files,
        next_lsn: scan.next_lsn,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn wal_is_send_and_sync() {
        fn shared_across_threads<T: Send + Sync>() {}
        shared_across_threads::<crate::Wal>();
        shared_across_threads::<crate::StorageError>();
    }
}
