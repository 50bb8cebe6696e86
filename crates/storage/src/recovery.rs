//! Reading a data directory back: snapshot selection, segment scan, torn-tail
//! detection. Shared by [`crate::Wal::open`] (which then repairs a torn tail)
//! and [`crate::check`] (which modifies nothing).
//!
//! Rules, in order:
//!
//! 1. The newest `snap/snap-*.snap` must verify (magic, version, length, crc,
//!    LSN equal to its name); otherwise `Corrupt`. Older snapshots are not
//!    read by open. `*.tmp` files are leftovers of an interrupted snapshot or
//!    preallocation and are not corruption.
//! 2. Segments are taken in name (= first-LSN) order. A segment whose
//!    successor starts at or below `snapshot_lsn + 1` is superseded (awaiting
//!    compaction) and not read. The first segment read must start at or below
//!    `snapshot_lsn + 1`, each next one exactly where the previous ended.
//! 3. Inside a segment records must carry consecutive LSNs, each crc-valid,
//!    until a zero header or too little room for one; what follows must be
//!    zeros.
//! 4. A bad record, or non-zero bytes after the end, is a **torn tail** only if
//!    it is in the last segment and no valid record with a later LSN exists
//!    anywhere after it (searched at every byte offset). Anything else is
//!    `Corrupt`: the WAL never drops a record that something after it
//!    depends on.
//! 5. The WAL must reach at least the snapshot's LSN.

use crate::format::{self, RecordAt, REC_HEADER_LEN, SEG_HEADER_LEN};
use crate::{Lsn, StorageError, TornTail};
use std::fs;
use std::path::{Path, PathBuf};

/// One segment as found on disk.
#[derive(Debug, Clone)]
pub(crate) struct SegmentInfo {
    pub path: PathBuf,
    pub first_lsn: Lsn,
    /// File length (its capacity for records).
    pub len: u64,
    /// Offset just past the last valid record; `None` if superseded (unread).
    pub end_offset: Option<u64>,
    /// Valid records read from it.
    pub records: u64,
}

/// One snapshot as found on disk.
#[derive(Debug, Clone)]
pub(crate) struct SnapInfo {
    pub path: PathBuf,
    pub lsn: Lsn,
    /// `None` if not verified (open reads only the newest), else the result.
    pub status: Option<Result<u64, String>>,
}

pub(crate) struct Scan {
    pub snapshot: Option<(Lsn, Vec<u8>)>,
    pub snapshots: Vec<SnapInfo>,
    pub segments: Vec<SegmentInfo>,
    /// Records with lsn > snapshot lsn (only if asked to keep them).
    pub records: Vec<(Lsn, Vec<u8>)>,
    /// Valid records read, including those below the snapshot.
    pub records_read: u64,
    /// LSN range of the records read.
    pub lsn_range: Option<(Lsn, Lsn)>,
    pub torn: Option<TornTail>,
    pub temp_files: Vec<PathBuf>,
    /// The first LSN the next append gets.
    pub next_lsn: Lsn,
}

fn list(dir: &Path) -> Result<Vec<(String, PathBuf)>, StorageError> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StorageError::io(dir, "read_dir")(e)),
    };
    for entry in rd {
        let entry = entry.map_err(StorageError::io(dir, "read_dir"))?;
        if let Some(name) = entry.file_name().to_str() {
            out.push((name.to_string(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn scan(
    dir: &Path,
    keep_records: bool,
    verify_all_snaps: bool,
) -> Result<Scan, StorageError> {
    let mut temp_files = Vec::new();

    // 1. snapshots, newest first
    let mut snapshots = Vec::new();
    for (name, path) in list(&dir.join("snap"))? {
        if let Some(lsn) = format::parse_snap_name(&name) {
            snapshots.push(SnapInfo {
                path,
                lsn,
                status: None,
            });
        } else if name.ends_with(".tmp") {
            temp_files.push(path);
        }
    }
    snapshots.reverse();
    let mut snapshot = None;
    for (i, s) in snapshots.iter_mut().enumerate() {
        if i > 0 && !verify_all_snaps {
            break;
        }
        let bytes = fs::read(&s.path).map_err(StorageError::io(&s.path, "read"))?;
        let verified = match format::decode_snap(&bytes) {
            Ok((lsn, _)) if lsn != s.lsn => {
                Err((16, format!("header lsn {lsn} differs from file name")))
            }
            other => other,
        };
        match verified {
            Ok((_, body)) => {
                s.status = Some(Ok(body.len() as u64));
                if i == 0 {
                    snapshot = Some((s.lsn, bytes[body].to_vec()));
                }
            }
            Err((offset, reason)) => {
                if i == 0 {
                    return Err(StorageError::corrupt(
                        &s.path,
                        offset,
                        format!("newest snapshot: {reason}"),
                    ));
                }
                s.status = Some(Err(format!("at offset {offset}: {reason}")));
            }
        }
    }
    let snap_lsn = snapshot.as_ref().map_or(0, |(l, _)| *l);

    // 2. segments
    let wal_dir = dir.join("wal");
    let mut segments = Vec::new();
    for (name, path) in list(&wal_dir)? {
        if let Some(first_lsn) = format::parse_seg_name(&name) {
            let len = fs::metadata(&path)
                .map_err(StorageError::io(&path, "stat"))?
                .len();
            segments.push(SegmentInfo {
                path,
                first_lsn,
                len,
                end_offset: None,
                records: 0,
            });
        } else if name.ends_with(".tmp") {
            temp_files.push(path);
        }
    }

    let mut scan = Scan {
        snapshot,
        snapshots,
        segments: Vec::new(),
        records: Vec::new(),
        records_read: 0,
        lsn_range: None,
        torn: None,
        temp_files,
        next_lsn: 1,
    };
    if segments.is_empty() {
        if let Some(s) = scan.snapshots.first() {
            return Err(StorageError::corrupt(
                &s.path,
                0,
                "a snapshot exists but the WAL has no segments",
            ));
        }
        scan.segments = segments;
        return Ok(scan);
    }

    let n = segments.len();
    let mut expected: Option<Lsn> = None;
    for i in 0..n {
        if i + 1 < n && segments[i + 1].first_lsn <= snap_lsn + 1 {
            continue; // superseded by the snapshot
        }
        let seg = &mut segments[i];
        let bytes = fs::read(&seg.path).map_err(StorageError::io(&seg.path, "read"))?;
        let first = format::decode_seg_header(&bytes)
            .map_err(|r| StorageError::corrupt(&seg.path, 0, r))?;
        if first != seg.first_lsn {
            return Err(StorageError::corrupt(
                &seg.path,
                16,
                format!("header first lsn {first} differs from file name"),
            ));
        }
        match expected {
            None if first > snap_lsn + 1 => {
                return Err(StorageError::corrupt(
                    &seg.path,
                    16,
                    format!("oldest segment starts at lsn {first}, but lsns up to {snap_lsn} are all that is covered (gap)"),
                ));
            }
            Some(e) if first != e => {
                return Err(StorageError::corrupt(
                    &seg.path,
                    16,
                    format!("segment starts at lsn {first}, previous segment ended before lsn {e}"),
                ));
            }
            _ => {}
        }
        let is_last = i + 1 == n;
        let mut lsn_next = first;
        let mut pos = SEG_HEADER_LEN;
        let problem = loop {
            match format::decode_record(&bytes, pos) {
                RecordAt::End => break None,
                RecordAt::Bad(reason) => break Some(reason),
                RecordAt::Valid { lsn, payload } => {
                    if lsn != lsn_next {
                        return Err(StorageError::corrupt(
                            &seg.path,
                            pos as u64,
                            format!("record has lsn {lsn}, expected {lsn_next}"),
                        ));
                    }
                    if keep_records && lsn > snap_lsn {
                        scan.records.push((lsn, bytes[payload.clone()].to_vec()));
                    }
                    scan.records_read += 1;
                    seg.records += 1;
                    scan.lsn_range = Some((scan.lsn_range.map_or(lsn, |r| r.0), lsn));
                    lsn_next += 1;
                    pos = payload.end;
                }
            }
        };
        let rest_nonzero_end = bytes[pos..]
            .iter()
            .rposition(|&b| b != 0)
            .map(|p| pos + p + 1);
        let problem = match (problem, rest_nonzero_end) {
            (Some(reason), _) => Some(reason),
            (None, Some(_)) => Some("non-zero bytes after the end of the records".to_string()),
            (None, None) => None,
        };
        if let Some(reason) = problem {
            if let Some(at) = find_valid_record(&bytes, pos + 1, lsn_next) {
                return Err(StorageError::corrupt(
                    &seg.path,
                    pos as u64,
                    format!("{reason}; a valid record follows at offset {at}"),
                ));
            }
            if !is_last {
                return Err(StorageError::corrupt(
                    &seg.path,
                    pos as u64,
                    format!("{reason} (not the last segment)"),
                ));
            }
            let end = rest_nonzero_end.unwrap_or(pos + 1).max(pos + 1);
            scan.torn = Some(TornTail {
                path: seg.path.clone(),
                offset: pos as u64,
                bytes_dropped: (end - pos) as u64,
                reason,
            });
        }
        seg.end_offset = Some(pos as u64);
        expected = Some(lsn_next);
    }
    let wal_end = expected.expect("at least the last segment is read") - 1;
    if wal_end < snap_lsn {
        let last = &segments[n - 1];
        return Err(StorageError::corrupt(
            &last.path,
            last.end_offset.unwrap_or(0),
            format!("the WAL ends at lsn {wal_end} but the newest snapshot covers lsn {snap_lsn}"),
        ));
    }
    scan.next_lsn = wal_end + 1;
    scan.segments = segments;
    Ok(scan)
}

/// Searches every byte offset from `from` for a crc-valid record whose LSN is
/// at least `min_lsn` (and plausibly close to it). Returns its offset.
fn find_valid_record(bytes: &[u8], from: usize, min_lsn: Lsn) -> Option<usize> {
    // Each record takes at least REC_HEADER_LEN bytes, so a record after
    // `from` cannot be more than this many LSNs ahead.
    let max_ahead = (bytes.len() / REC_HEADER_LEN) as u64 + 1;
    let last = bytes.len().checked_sub(REC_HEADER_LEN)?;
    (from..=last).find(|&q| {
        let lsn = u64::from_le_bytes(bytes[q + 8..q + 16].try_into().expect("8 bytes"));
        lsn >= min_lsn
            && lsn - min_lsn <= max_ahead
            && matches!(format::decode_record(bytes, q), RecordAt::Valid { .. })
    })
}
