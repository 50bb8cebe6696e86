//! WAL behaviour: round trips, group commit, torn tails and corruption
//! (quality-bars R5). Crash points (R4) are in `tests/crash.rs`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use synod_storage::{check, Lsn, Recovered, StorageError, Wal, WalOptions};

/// Small segments so a few hundred records roll over several times.
fn small_opts() -> WalOptions {
    WalOptions {
        segment_bytes: 4096,
        max_record_bytes: 1024,
        ..WalOptions::default()
    }
}

fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, Recovered), StorageError> {
    Wal::open(dir, opts, Box::new(|_| {}))
}

fn payload(i: u64) -> Vec<u8> {
    format!("record-{i}-{}", "x".repeat((i % 97) as usize)).into_bytes()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Writes records 1..=n (payload(i)) durably and closes.
/// Options for the single-segment logs of the torn-tail and bit-flip tests:
/// defaults but a 1 MiB segment (a 64 MiB preallocation per test is slow).
fn one_segment_opts() -> WalOptions {
    WalOptions {
        segment_bytes: 1 << 20,
        ..small_opts()
    }
}

fn write_log(dir: &Path, opts: WalOptions, n: u64) {
    let (wal, rec) = open(dir, opts).unwrap();
    assert!(rec.records.is_empty());
    for i in 1..=n {
        assert_eq!(wal.append(payload(i)).unwrap(), i);
    }
    wal.wait_durable(n).unwrap();
    wal.close().unwrap();
}

fn assert_prefix(records: &[(Lsn, Vec<u8>)], n: usize) {
    assert_eq!(records.len(), n);
    for (k, (lsn, bytes)) in records.iter().enumerate() {
        assert_eq!(*lsn, k as u64 + 1);
        assert_eq!(bytes, &payload(*lsn), "lsn {lsn}");
    }
}

#[test]
fn round_trip_across_rollovers_and_lsn_continuity_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), small_opts(), 300);
    assert!(
        segments(dir.path()).len() >= 5,
        "expected several rollovers"
    );

    let (wal, rec) = open(dir.path(), small_opts()).unwrap();
    assert!(rec.snapshot.is_none());
    assert!(rec.truncated_tail.is_none());
    assert_prefix(&rec.records, 300);
    assert_eq!(wal.last_lsn(), 300);
    assert_eq!(wal.durable_lsn(), 300);
    let next = wal.append_batch(vec![payload(301), payload(302)]).unwrap();
    assert_eq!(next, Some(302));
    assert_eq!(wal.append_batch(vec![]).unwrap(), None);
    wal.wait_durable(302).unwrap();
    wal.close().unwrap();

    let (wal, rec) = open(dir.path(), small_opts()).unwrap();
    assert_prefix(&rec.records, 302);
    drop(wal);
    let report = check(dir.path()).unwrap();
    assert_eq!(report.records, 302);
    assert_eq!(report.lsn_range, Some((1, 302)));
    assert!(
        report.to_string().contains("records: 302 (lsn 1..=302)"),
        "{report}"
    );
}

#[test]
fn group_commit_groups_concurrent_appenders() {
    let dir = tempfile::tempdir().unwrap();
    let durable_calls = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&durable_calls);
    let (wal, _) = Wal::open(
        dir.path(),
        WalOptions::default(),
        Box::new(move |_| {
            seen.fetch_add(1, Ordering::Relaxed);
        }),
    )
    .unwrap();
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..32)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                for i in 0..50 {
                    let lsn = wal.append(payload(t * 1000 + i)).unwrap();
                    wal.wait_durable(lsn).unwrap();
                    assert!(wal.durable_lsn() >= lsn);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = wal.stats();
    assert_eq!(stats.records_total, 1600);
    assert!(
        stats.fsyncs_total < stats.records_total / 2,
        "no grouping: {stats:?}"
    );
    Arc::try_unwrap(wal).ok().unwrap().close().unwrap();
    // close joins the writer, so every on_durable call has returned.
    assert_eq!(durable_calls.load(Ordering::Relaxed), stats.fsyncs_total);
}

#[test]
fn group_commit_max_records_bounds_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        group_commit_max_records: 1,
        ..small_opts()
    };
    let (wal, _) = open(dir.path(), opts).unwrap();
    assert_eq!(
        wal.append_batch((1..=20).map(payload).collect()).unwrap(),
        Some(20)
    );
    wal.wait_durable(20).unwrap();
    let stats = wal.stats();
    assert_eq!((stats.records_total, stats.fsyncs_total), (20, 20));
    assert_eq!(stats.records_per_fsync(), 1.0);
}

#[test]
fn limits_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        queue_max_records: 4,
        ..small_opts()
    };
    let (wal, _) = open(dir.path(), opts).unwrap();
    assert!(matches!(
        wal.append(vec![0; 1025]),
        Err(StorageError::RecordTooLarge {
            len: 1025,
            max: 1024
        })
    ));
    let e = wal.append_batch(vec![vec![1]; 5]).unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(matches!(
        wal.wait_durable(99),
        Err(StorageError::LsnOutOfRange { lsn: 99, last: 0 })
    ));
    assert!(matches!(
        open(
            tempfile::tempdir().unwrap().path(),
            WalOptions {
                segment_bytes: 100,
                ..small_opts()
            }
        ),
        Err(StorageError::Config { .. })
    ));
}

#[test]
fn snapshot_compacts_and_recovers_only_later_records() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), small_opts()).unwrap();
    for i in 1..=200 {
        wal.append(payload(i)).unwrap();
    }
    wal.wait_durable(200).unwrap();
    let before = segments(dir.path()).len();
    wal.write_snapshot(150, b"state@150").unwrap();
    let after = segments(dir.path()).len();
    assert!(
        after < before,
        "compaction deleted nothing: {before} -> {after}"
    );
    assert!(matches!(
        wal.write_snapshot(100, b"old"),
        Err(StorageError::StaleSnapshot { .. })
    ));
    assert!(matches!(
        wal.write_snapshot(201, b"future"),
        Err(StorageError::LsnOutOfRange {
            lsn: 201,
            last: 200
        })
    ));
    wal.write_snapshot(150, b"same lsn: no-op").unwrap();
    wal.write_snapshot(180, b"state@180").unwrap();
    wal.write_snapshot(190, b"state@190").unwrap();
    let snaps = fs::read_dir(dir.path().join("snap")).unwrap().count();
    assert_eq!(snaps, 2, "keeps the newest two snapshots");
    wal.close().unwrap();

    let (wal, rec) = open(dir.path(), small_opts()).unwrap();
    assert_eq!(rec.snapshot, Some((190, b"state@190".to_vec())));
    let lsns: Vec<Lsn> = rec.records.iter().map(|r| r.0).collect();
    assert_eq!(lsns, (191..=200).collect::<Vec<_>>());
    for (lsn, bytes) in &rec.records {
        assert_eq!(bytes, &payload(*lsn));
    }
    assert_eq!(wal.append(b"next".to_vec()).unwrap(), 201);
}

#[test]
fn snapshot_of_everything_then_reopen_continues_lsns() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), small_opts()).unwrap();
    for i in 1..=100 {
        wal.append(payload(i)).unwrap();
    }
    wal.write_snapshot(100, b"all").unwrap();
    wal.close().unwrap();
    let (wal, rec) = open(dir.path(), small_opts()).unwrap();
    assert_eq!(rec.snapshot, Some((100, b"all".to_vec())));
    assert!(rec.records.is_empty());
    assert_eq!(wal.append(payload(101)).unwrap(), 101);
    wal.close().unwrap();
    let (_, rec) = open(dir.path(), small_opts()).unwrap();
    assert_eq!(rec.records, vec![(101, payload(101))]);
}

/// Offset of record `lsn` in the single-segment log written by `write_log`.
fn record_offset(lsn: Lsn) -> u64 {
    24 + (1..lsn).map(|i| 16 + payload(i).len() as u64).sum::<u64>()
}

#[test]
fn torn_tail_mid_record_is_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), one_segment_opts(), 10);
    let seg = &segments(dir.path())[0];
    // Zero the second half of record 10, as if its last sectors never landed.
    let start = record_offset(10);
    let end = record_offset(11);
    let mut bytes = fs::read(seg).unwrap();
    let mid = ((start + end) / 2) as usize;
    bytes[mid..end as usize].fill(0);
    fs::write(seg, &bytes).unwrap();

    let report = check(dir.path()).unwrap();
    let torn = report
        .torn_tail
        .clone()
        .expect("check reports the torn tail");
    assert_eq!((torn.path.as_path(), torn.offset), (seg.as_path(), start));

    let (wal, rec) = open(dir.path(), one_segment_opts()).unwrap();
    assert_prefix(&rec.records, 9);
    let t = rec.truncated_tail.expect("reported");
    assert_eq!(t.offset, start);
    assert_eq!(t.bytes_dropped, mid as u64 - start);
    assert_eq!(wal.append(b"again".to_vec()).unwrap(), 10);
    wal.close().unwrap();
    let (_, rec) = open(dir.path(), one_segment_opts()).unwrap();
    assert!(rec.truncated_tail.is_none(), "the tail was zeroed at open");
    assert_eq!(rec.records[9], (10, b"again".to_vec()));
}

#[test]
fn garbage_after_the_tail_is_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), one_segment_opts(), 10);
    let seg = &segments(dir.path())[0];
    let end = record_offset(11) as usize;
    let mut bytes = fs::read(seg).unwrap();
    for (k, b) in bytes[end + 100..end + 300].iter_mut().enumerate() {
        *b = (k as u8).wrapping_mul(31) | 1;
    }
    fs::write(seg, &bytes).unwrap();
    let (_, rec) = open(dir.path(), one_segment_opts()).unwrap();
    assert_prefix(&rec.records, 10);
    let t = rec.truncated_tail.expect("reported");
    assert_eq!((t.offset, t.bytes_dropped), (end as u64, 300));
}

#[test]
fn truncated_segment_file_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), one_segment_opts(), 10);
    let seg = &segments(dir.path())[0];
    let f = fs::OpenOptions::new().write(true).open(seg).unwrap();
    f.set_len(record_offset(10) + 20).unwrap();
    let (_, rec) = open(dir.path(), one_segment_opts()).unwrap();
    assert_prefix(&rec.records, 9);
    assert_eq!(rec.truncated_tail.unwrap().offset, record_offset(10));
}

fn flip_bit(path: &Path, byte: u64, bit: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[byte as usize] ^= 1 << bit;
    fs::write(path, &bytes).unwrap();
}

fn expect_corrupt(e: StorageError, want_path: &Path, want_offset: u64) {
    match e {
        StorageError::Corrupt {
            path,
            offset,
            reason,
        } => {
            assert_eq!(
                (path.as_path(), offset),
                (want_path, want_offset),
                "{reason}"
            );
        }
        other => panic!("expected Corrupt, got {other}"),
    }
}

#[test]
fn bit_flip_in_the_middle_of_the_log_is_corrupt_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), one_segment_opts(), 10);
    let seg = segments(dir.path())[0].clone();
    flip_bit(&seg, record_offset(5) + 20, 3); // inside record 5's payload
    let e = open(dir.path(), one_segment_opts()).unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("at offset {}", record_offset(5))),
        "{e}"
    );
    expect_corrupt(e, &seg, record_offset(5));
    expect_corrupt(check(dir.path()).unwrap_err(), &seg, record_offset(5));
}

#[test]
fn bit_flip_in_an_earlier_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), small_opts(), 200);
    let segs = segments(dir.path());
    // The last record of the first segment: a torn tail anywhere but the last
    // segment is corruption.
    let bytes = fs::read(&segs[0]).unwrap();
    let mut pos = 24usize;
    let mut last = pos;
    while u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) != 0 || bytes[pos + 8] != 0 {
        last = pos;
        pos += 16 + u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
    }
    flip_bit(&segs[0], last as u64 + 17, 0);
    expect_corrupt(
        open(dir.path(), small_opts()).unwrap_err(),
        &segs[0],
        last as u64,
    );
}

#[test]
fn bad_segment_header_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), small_opts(), 100);
    let segs = segments(dir.path());
    flip_bit(&segs[1], 2, 0);
    expect_corrupt(open(dir.path(), small_opts()).unwrap_err(), &segs[1], 0);
}

#[test]
fn missing_segment_is_an_lsn_gap() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), small_opts(), 200);
    let segs = segments(dir.path());
    fs::remove_file(&segs[1]).unwrap();
    expect_corrupt(open(dir.path(), small_opts()).unwrap_err(), &segs[2], 16);
    fs::remove_file(&segs[0]).unwrap();
    // Now the log starts above lsn 1 with no snapshot covering the gap.
    assert!(matches!(
        check(dir.path()),
        Err(StorageError::Corrupt { .. })
    ));
}

fn write_with_snapshot(dir: &Path) -> PathBuf {
    let (wal, _) = open(dir, small_opts()).unwrap();
    for i in 1..=50 {
        wal.append(payload(i)).unwrap();
    }
    wal.write_snapshot(40, b"snapshot body at forty").unwrap();
    wal.close().unwrap();
    dir.join("snap").join(format!("snap-{:020}.snap", 40))
}

#[test]
fn bit_flip_in_snapshot_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let snap = write_with_snapshot(dir.path());
    flip_bit(&snap, 40, 5);
    expect_corrupt(open(dir.path(), small_opts()).unwrap_err(), &snap, 12);
    expect_corrupt(check(dir.path()).unwrap_err(), &snap, 12);
}

#[test]
fn truncated_snapshot_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let snap = write_with_snapshot(dir.path());
    let len = fs::metadata(&snap).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&snap)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    expect_corrupt(open(dir.path(), small_opts()).unwrap_err(), &snap, 24);
    expect_corrupt(check(dir.path()).unwrap_err(), &snap, 24);
}

#[test]
fn leftover_snapshot_temp_file_is_deleted_not_corruption() {
    let dir = tempfile::tempdir().unwrap();
    write_with_snapshot(dir.path());
    let tmp = dir
        .path()
        .join("snap")
        .join(format!("snap-{:020}.snap.tmp", 45));
    fs::write(&tmp, b"half a snap").unwrap();
    let report = check(dir.path()).unwrap();
    // The preallocated spare segment is a temp file too.
    let spare = dir.path().join("wal").join("spare.tmp");
    assert_eq!(report.temp_files, vec![tmp.clone(), spare]);
    let (_, rec) = open(dir.path(), small_opts()).unwrap();
    assert_eq!(rec.snapshot.unwrap().0, 40);
    assert!(!tmp.exists());
}

/// Flips every bit of a small log (header, records and the zeros after them)
/// and checks it; opens it for one bit of every byte (each open preallocates
/// and fsyncs a spare, so all bits would take ~25 s). Neither may panic, every
/// record open returns must be byte-for-byte what was written, and a damaged
/// record is either reported as a torn tail or makes open fail with `Corrupt`.
#[test]
fn every_single_bit_flip_is_detected_or_harmless() {
    let base = tempfile::tempdir().unwrap();
    let opts = || WalOptions {
        segment_bytes: 512,
        max_record_bytes: 256,
        ..WalOptions::default()
    };
    let (wal, _) = open(base.path(), opts()).unwrap();
    let written: Vec<Vec<u8>> = (1..=4u64).map(|i| format!("rec{i}").into_bytes()).collect();
    for p in &written {
        wal.append(p.clone()).unwrap();
    }
    wal.wait_durable(4).unwrap();
    wal.close().unwrap();
    let seg = segments(base.path())[0].clone();
    let name = seg.file_name().unwrap().to_owned();
    let pristine = fs::read(&seg).unwrap();
    let used = record_offset_of(&written, 5) as usize + 48; // and some zeros after

    let (mut corrupt, mut torn, mut intact) = (0, 0, 0);
    for bit in 0..used * 8 {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("wal")).unwrap();
        let mut bytes = pristine.clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        fs::write(dir.path().join("wal").join(&name), &bytes).unwrap();
        let checked = check(dir.path());
        if bit % 8 != (bit / 8) % 8 {
            match checked {
                Err(StorageError::Corrupt { .. }) => corrupt += 1,
                Err(e) => panic!("bit {bit}: unexpected error {e}"),
                Ok(r) if r.torn_tail.is_some() => torn += 1,
                Ok(_) => intact += 1,
            }
            continue;
        }
        match open(dir.path(), opts()) {
            Err(StorageError::Corrupt { .. }) => {
                corrupt += 1;
                assert!(checked.is_err(), "bit {bit}: check passed, open failed");
            }
            Err(e) => panic!("bit {bit}: unexpected error {e}"),
            Ok((wal, rec)) => {
                let report = checked.expect("check agrees with open");
                assert_eq!(report.torn_tail, rec.truncated_tail, "bit {bit}");
                for (lsn, bytes) in &rec.records {
                    assert_eq!(
                        bytes,
                        &written[*lsn as usize - 1],
                        "bit {bit}: lsn {lsn} differs"
                    );
                }
                if rec.records.len() < written.len() {
                    assert!(
                        rec.truncated_tail.is_some(),
                        "bit {bit}: record lost silently"
                    );
                    torn += 1;
                } else if rec.truncated_tail.is_some() {
                    torn += 1;
                } else {
                    intact += 1;
                }
                wal.close().unwrap();
            }
        }
    }
    // Flips in the header and the first three records are corruption, in the
    // last record or the zeros after it a torn tail; none go unnoticed.
    assert!(
        corrupt > 0 && torn > 0,
        "corrupt {corrupt} torn {torn} intact {intact}"
    );
    assert_eq!(intact, 0, "a flipped bit went unnoticed");
}

fn record_offset_of(written: &[Vec<u8>], lsn: usize) -> u64 {
    24 + written[..lsn - 1]
        .iter()
        .map(|p| 16 + p.len() as u64)
        .sum::<u64>()
}
