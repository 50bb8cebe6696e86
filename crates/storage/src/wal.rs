//! The [`Wal`] handle, its writer thread, snapshots and compaction.
//!
//! Threads and ownership:
//!
//! * Appenders (any thread) assign LSNs and push onto one bounded queue under
//!   the `queue` mutex; LSN assignment and queue order are the same order, so
//!   the writer sees LSNs consecutively.
//! * The writer thread alone writes segments. It takes everything queued (up
//!   to the group-commit limits), encodes it into one buffer, issues one
//!   `pwrite` and one `fdatasync`, then publishes `durable_lsn`, wakes
//!   waiters and calls `on_durable`. While it syncs, new appends queue up and
//!   form the next batch: no timer, no spinning.
//! * A helper thread preallocates the next segment (`spare.tmp`) while the
//!   current one fills, so a rollover costs a header write, a rename and two
//!   fsyncs, not a 64 MiB zero fill.
//! * `write_snapshot` runs on the caller's thread, serialised by its own
//!   mutex; it shares only the live-segment list with the writer.

use crate::failpoint::{self, hit};
use crate::format::{self, REC_HEADER_LEN, SEG_HEADER_LEN, SPARE_NAME};
use crate::{recovery, Lsn, Recovered, StorageError, WalOptions};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

/// Zero-fill chunk for preallocation.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The directory a WAL file is in (`wal/` or `snap/`), for failpoint
/// scoping.
fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(path)
}

fn fsync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StorageError::io(dir, "fsync directory"))?;
    failpoint::note_dir_synced(dir);
    Ok(())
}

/// Cumulative counters since [`Wal::open`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// fdatasyncs of segment data issued by the writer.
    pub fsyncs_total: u64,
    /// Records made durable.
    pub records_total: u64,
    /// Bytes written to segments (headers included).
    pub bytes_total: u64,
    /// Time spent inside those fdatasyncs.
    pub fsync_time_ns_total: u64,
    /// The slowest one.
    pub fsync_time_ns_max: u64,
    /// Segments rolled over to (including the first of an empty directory).
    pub segments_created_total: u64,
}

impl WalStats {
    /// Average records covered by one fdatasync (group-commit factor).
    pub fn records_per_fsync(&self) -> f64 {
        self.records_total as f64 / self.fsyncs_total.max(1) as f64
    }
}

#[derive(Default)]
struct Counters {
    fsyncs: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    fsync_ns: AtomicU64,
    fsync_ns_max: AtomicU64,
    segments: AtomicU64,
}

struct Queue {
    records: VecDeque<(Lsn, Vec<u8>)>,
    /// The LSN the next append gets.
    next_lsn: Lsn,
    /// Set by close: the writer drains the queue and exits.
    closing: bool,
    /// Set when the writer stopped on an error.
    failed: Option<String>,
    /// The writer is (about to be) waiting on `work`.
    writer_idle: bool,
}

struct Shared {
    opts: WalOptions,
    wal_dir: PathBuf,
    queue: Mutex<Queue>,
    /// Signals the writer that records were queued or close was asked.
    work: Condvar,
    /// Signals `wait_durable` callers; notified with `queue` held.
    durable: Condvar,
    last_lsn: AtomicU64,
    durable_lsn: AtomicU64,
    /// First LSNs of the segment files, oldest first; the last is the one the
    /// writer appends to. Compaction removes from the front, rollover pushes.
    segments: Mutex<Vec<Lsn>>,
    counters: Counters,
}

/// The write-ahead log. `Send + Sync`: share it through an `Arc`.
pub struct Wal {
    shared: Arc<Shared>,
    dir: PathBuf,
    writer: Mutex<Option<JoinHandle<Result<(), StorageError>>>>,
    /// Serialises snapshots; holds the newest snapshot's LSN.
    snap: Mutex<Option<Lsn>>,
}

struct Segment {
    file: File,
    path: PathBuf,
    /// Next write position; everything before it is written.
    offset: u64,
    /// File length: records must end at or before it.
    capacity: u64,
}

type Spare = JoinHandle<Result<File, StorageError>>;

struct Writer {
    shared: Arc<Shared>,
    seg: Segment,
    spare: Option<Spare>,
    buf: Vec<u8>,
    on_durable: Box<dyn Fn(Lsn) + Send + Sync>,
}

/// Creates `wal/spare.tmp`, zero-filled to `bytes` and fsynced with its
/// directory.
fn create_spare(wal_dir: &Path, bytes: u64) -> Result<File, StorageError> {
    let path = wal_dir.join(SPARE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(StorageError::io(&path, "create"))?;
    failpoint::note_created(&path);
    hit("wal.segment_create", parent_of(&path));
    let zeros = vec![0u8; ZERO_CHUNK_BYTES];
    let mut at = 0u64;
    while at < bytes {
        let n = (bytes - at).min(ZERO_CHUNK_BYTES as u64) as usize;
        file.write_all_at(&zeros[..n], at)
            .map_err(StorageError::io(&path, "preallocate"))?;
        at += n as u64;
    }
    hit("wal.before_segment_fsync", parent_of(&path));
    file.sync_all().map_err(StorageError::io(&path, "fsync"))?;
    failpoint::note_data_synced(&path);
    hit("wal.after_segment_fsync", parent_of(&path));
    fsync_dir(wal_dir)?;
    Ok(file)
}

fn spawn_spare(wal_dir: &Path, bytes: u64) -> Spare {
    let wal_dir = wal_dir.to_path_buf();
    std::thread::Builder::new()
        .name("synod-wal-prealloc".into())
        .spawn(move || create_spare(&wal_dir, bytes))
        .expect("spawn preallocation thread")
}

/// Turns the spare (joining its thread, or creating it here if there is none)
/// into segment `wal-{first_lsn}.seg`, durable and empty, and starts
/// preallocating the next spare.
fn roll(
    shared: &Shared,
    spare: Option<Spare>,
    first_lsn: Lsn,
) -> Result<(Segment, Spare), StorageError> {
    let wal_dir = &shared.wal_dir;
    let spare_path = wal_dir.join(SPARE_NAME);
    let file = match spare {
        Some(h) => h.join().map_err(|_| StorageError::WriterFailed {
            reason: "preallocation thread panicked".into(),
        })??,
        None => create_spare(wal_dir, shared.opts.segment_bytes)?,
    };
    let capacity = file
        .metadata()
        .map_err(StorageError::io(&spare_path, "stat"))?
        .len();
    failpoint::note_write(&spare_path, 0, SEG_HEADER_LEN as u64);
    file.write_all_at(&format::encode_seg_header(first_lsn), 0)
        .map_err(StorageError::io(&spare_path, "write segment header"))?;
    hit("wal.roll_after_header", wal_dir);
    file.sync_data()
        .map_err(StorageError::io(&spare_path, "fdatasync"))?;
    failpoint::note_data_synced(&spare_path);
    hit("wal.roll_after_header_fsync", wal_dir);
    let path = wal_dir.join(format::seg_name(first_lsn));
    fs::rename(&spare_path, &path).map_err(StorageError::io(&path, "rename"))?;
    failpoint::note_renamed(&spare_path, &path);
    hit("wal.roll_after_rename", wal_dir);
    fsync_dir(wal_dir)?;
    hit("wal.roll_after_dir_fsync", wal_dir);
    lock(&shared.segments).push(first_lsn);
    shared.counters.segments.fetch_add(1, Ordering::Relaxed);
    let seg = Segment {
        file,
        path,
        offset: SEG_HEADER_LEN as u64,
        capacity,
    };
    Ok((seg, spawn_spare(wal_dir, shared.opts.segment_bytes)))
}

impl Writer {
    fn roll(&mut self, first_lsn: Lsn) -> Result<(), StorageError> {
        let (seg, spare) = roll(&self.shared, self.spare.take(), first_lsn)?;
        self.seg = seg;
        self.spare = Some(spare);
        Ok(())
    }

    fn run(mut self) -> Result<(), StorageError> {
        let result = self.run_batches();
        if let Err(e) = &result {
            let mut q = lock(&self.shared.queue);
            q.failed = Some(e.to_string());
            self.shared.durable.notify_all();
        }
        if let Some(h) = self.spare.take() {
            let _ = h.join();
        }
        result
    }

    fn run_batches(&mut self) -> Result<(), StorageError> {
        let opts = self.shared.opts.clone();
        let mut batch: Vec<(Lsn, Vec<u8>)> = Vec::new();
        loop {
            {
                let mut q = lock(&self.shared.queue);
                while q.records.is_empty() {
                    if q.closing {
                        return Ok(());
                    }
                    q.writer_idle = true;
                    q = self.shared.work.wait(q).unwrap_or_else(|e| e.into_inner());
                    q.writer_idle = false;
                }
                let mut bytes = 0usize;
                while let Some((_, p)) = q.records.front() {
                    if !batch.is_empty()
                        && (batch.len() >= opts.group_commit_max_records
                            || bytes + p.len() > opts.group_commit_max_bytes)
                    {
                        break;
                    }
                    bytes += p.len();
                    batch.push(q.records.pop_front().expect("front exists"));
                }
            }
            self.write_batch(&mut batch)?;
        }
    }

    fn write_batch(&mut self, batch: &mut Vec<(Lsn, Vec<u8>)>) -> Result<(), StorageError> {
        let mut pending: Option<(Lsn, u64)> = None; // (last lsn in buf, records in buf)
        for (lsn, payload) in batch.drain(..) {
            let need = (REC_HEADER_LEN + payload.len()) as u64;
            if self.seg.offset + self.buf.len() as u64 + need > self.seg.capacity {
                if let Some((last, n)) = pending.take() {
                    self.write_and_sync(last, n)?;
                }
                self.roll(lsn)?;
            }
            format::encode_record(&mut self.buf, lsn, &payload);
            pending = Some((lsn, pending.map_or(0, |p| p.1) + 1));
        }
        if let Some((last, n)) = pending {
            self.write_and_sync(last, n)?;
        }
        Ok(())
    }

    /// Writes `buf` at the segment's offset, fdatasyncs, publishes `upto`.
    fn write_and_sync(&mut self, upto: Lsn, records: u64) -> Result<(), StorageError> {
        let seg = &mut self.seg;
        let end = seg.offset + self.buf.len() as u64;
        assert!(
            end <= seg.capacity,
            "batch overruns segment {}",
            seg.path.display()
        );
        hit("wal.before_write", parent_of(&seg.path));
        failpoint::note_write(&seg.path, seg.offset, end);
        seg.file
            .write_all_at(&self.buf, seg.offset)
            .map_err(StorageError::io(&seg.path, "write"))?;
        seg.offset = end;
        let bytes = self.buf.len() as u64;
        self.buf.clear();
        hit("wal.after_write", parent_of(&seg.path));
        if !self.shared.opts.emulated_sync_delay.is_zero() {
            std::thread::sleep(self.shared.opts.emulated_sync_delay);
        }
        let t0 = Instant::now();
        seg.file
            .sync_data()
            .map_err(StorageError::io(&seg.path, "fdatasync"))?;
        let ns = t0.elapsed().as_nanos() as u64;
        failpoint::note_data_synced(&seg.path);
        hit("wal.after_fsync", parent_of(&seg.path));

        let c = &self.shared.counters;
        c.fsyncs.fetch_add(1, Ordering::Relaxed);
        c.records.fetch_add(records, Ordering::Relaxed);
        c.bytes.fetch_add(bytes, Ordering::Relaxed);
        c.fsync_ns.fetch_add(ns, Ordering::Relaxed);
        c.fsync_ns_max.fetch_max(ns, Ordering::Relaxed);
        let prev = self.shared.durable_lsn.swap(upto, Ordering::SeqCst);
        assert!(prev < upto, "durable lsn must increase: {prev} -> {upto}");
        {
            let _q = lock(&self.shared.queue);
            self.shared.durable.notify_all();
        }
        (self.on_durable)(upto);
        Ok(())
    }
}

fn remove_file(path: &Path) -> Result<(), StorageError> {
    match fs::remove_file(path) {
        Ok(()) => {
            failpoint::note_removed(path);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(path, "remove")(e)),
    }
}

impl Wal {
    /// Opens (creating if needed) the data directory `dir`, recovers (see the
    /// crate docs), and starts the writer thread. `on_durable` is called from
    /// the writer thread after every fdatasync with the highest durable LSN;
    /// it must be quick (it delays the next batch).
    pub fn open(
        dir: &Path,
        opts: WalOptions,
        on_durable: Box<dyn Fn(Lsn) + Send + Sync>,
    ) -> Result<(Wal, Recovered), StorageError> {
        opts.validate()?;
        failpoint::arm_from_env(dir)?;
        let wal_dir = dir.join("wal");
        let snap_dir = dir.join("snap");
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(StorageError::io(dir, "create directory"))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsync_dir(parent)?;
            }
        }
        for d in [&wal_dir, &snap_dir] {
            if !d.is_dir() {
                fs::create_dir_all(d).map_err(StorageError::io(d, "create directory"))?;
                fsync_dir(dir)?;
            }
        }

        let scan = recovery::scan(dir, true, false)?;
        for t in &scan.temp_files {
            remove_file(t)?;
        }
        if !scan.temp_files.is_empty() {
            fsync_dir(&wal_dir)?;
            fsync_dir(&snap_dir)?;
        }
        let snap_lsn = scan.snapshot.as_ref().map(|s| s.0);
        let next_lsn = scan.next_lsn;

        let shared = Arc::new(Shared {
            opts: opts.clone(),
            wal_dir: wal_dir.clone(),
            queue: Mutex::new(Queue {
                records: VecDeque::new(),
                next_lsn,
                closing: false,
                failed: None,
                writer_idle: false,
            }),
            work: Condvar::new(),
            durable: Condvar::new(),
            last_lsn: AtomicU64::new(next_lsn - 1),
            durable_lsn: AtomicU64::new(next_lsn - 1),
            segments: Mutex::new(scan.segments.iter().map(|s| s.first_lsn).collect()),
            counters: Counters::default(),
        });

        let (seg, spare) = match scan.segments.last() {
            Some(last) => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&last.path)
                    .map_err(StorageError::io(&last.path, "open"))?;
                let offset = last.end_offset.expect("the last segment is always read");
                if let Some(t) = &scan.torn {
                    assert_eq!(
                        t.path, last.path,
                        "only the last segment can have a torn tail"
                    );
                    assert_eq!(t.offset, offset, "the log ends where the tail was torn");
                    let zeros = vec![0u8; t.bytes_dropped as usize];
                    file.write_all_at(&zeros, t.offset)
                        .map_err(StorageError::io(&t.path, "zero torn tail"))?;
                    file.sync_data()
                        .map_err(StorageError::io(&t.path, "fdatasync"))?;
                }
                let seg = Segment {
                    file,
                    path: last.path.clone(),
                    offset,
                    capacity: last.len,
                };
                (seg, spawn_spare(&wal_dir, opts.segment_bytes))
            }
            None => roll(&shared, None, next_lsn)?,
        };
        let writer = Writer {
            shared: Arc::clone(&shared),
            seg,
            spare: Some(spare),
            buf: Vec::new(),
            on_durable,
        };
        let handle = std::thread::Builder::new()
            .name("synod-wal-writer".into())
            .spawn(move || writer.run())
            .map_err(StorageError::io(&wal_dir, "spawn writer thread"))?;

        let wal = Wal {
            shared,
            dir: dir.to_path_buf(),
            writer: Mutex::new(Some(handle)),
            snap: Mutex::new(snap_lsn),
        };
        let recovered = Recovered {
            snapshot: scan.snapshot,
            records: scan.records,
            truncated_tail: scan.torn,
        };
        Ok((wal, recovered))
    }

    /// Enqueues one record; returns its LSN at once (does not wait for the
    /// fsync: see [`Wal::wait_durable`]).
    pub fn append(&self, payload: Vec<u8>) -> Result<Lsn, StorageError> {
        Ok(self.append_batch(vec![payload])?.expect("one record"))
    }

    /// Enqueues `payloads` in order with consecutive LSNs, all or none;
    /// returns the last LSN (`None` if empty). The batch is atomic in LSN
    /// assignment, not in durability: a crash can keep a prefix of it.
    pub fn append_batch(&self, payloads: Vec<Vec<u8>>) -> Result<Option<Lsn>, StorageError> {
        let opts = &self.shared.opts;
        if let Some(p) = payloads
            .iter()
            .find(|p| p.len() > opts.max_record_bytes as usize)
        {
            return Err(StorageError::RecordTooLarge {
                len: p.len(),
                max: opts.max_record_bytes,
            });
        }
        if payloads.is_empty() {
            return Ok(None);
        }
        let mut q = lock(&self.shared.queue);
        if let Some(reason) = &q.failed {
            return Err(StorageError::WriterFailed {
                reason: reason.clone(),
            });
        }
        if q.closing {
            return Err(StorageError::Closed);
        }
        if q.records.len() + payloads.len() > opts.queue_max_records {
            return Err(StorageError::Overloaded {
                queued: q.records.len(),
                max: opts.queue_max_records,
            });
        }
        for p in payloads {
            let lsn = q.next_lsn;
            q.next_lsn += 1;
            q.records.push_back((lsn, p));
        }
        let last = q.next_lsn - 1;
        self.shared.last_lsn.store(last, Ordering::SeqCst);
        if q.writer_idle {
            self.shared.work.notify_one();
        }
        Ok(Some(last))
    }

    /// The highest LSN assigned so far.
    pub fn last_lsn(&self) -> Lsn {
        self.shared.last_lsn.load(Ordering::SeqCst)
    }

    /// The highest LSN known to be fdatasynced.
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.durable_lsn.load(Ordering::SeqCst)
    }

    /// Blocks until every record up to `lsn` is durable. Errors if `lsn` was
    /// never assigned or the writer stopped.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<(), StorageError> {
        if self.durable_lsn() >= lsn {
            return Ok(());
        }
        let last = self.last_lsn();
        if lsn > last {
            return Err(StorageError::LsnOutOfRange { lsn, last });
        }
        let mut q = lock(&self.shared.queue);
        loop {
            if self.durable_lsn() >= lsn {
                return Ok(());
            }
            if let Some(reason) = &q.failed {
                return Err(StorageError::WriterFailed {
                    reason: reason.clone(),
                });
            }
            q = self
                .shared
                .durable
                .wait(q)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Writes a snapshot covering every record with `lsn <=` `lsn`, then
    /// compacts. A second call with the newest snapshot's LSN is a no-op (the
    /// state at one LSN is one state). Waits until the WAL is durable up to `lsn` first (so the
    /// snapshot never covers records a crash could lose and the log never has
    /// a gap). Steps: temp file, write, fsync, rename, directory fsync; then
    /// delete snapshots older than the newest two and every segment whose
    /// records all have `lsn <=` `lsn` (never the segment being written).
    /// Safe to call while appends continue; concurrent calls are serialised.
    pub fn write_snapshot(&self, lsn: Lsn, bytes: &[u8]) -> Result<(), StorageError> {
        let mut newest = lock(&self.snap);
        let last = self.last_lsn();
        if lsn > last {
            return Err(StorageError::LsnOutOfRange { lsn, last });
        }
        match *newest {
            Some(n) if lsn < n => return Err(StorageError::StaleSnapshot { lsn, newest: n }),
            // The state after applying every record up to `lsn` is the same
            // state: nothing to do (and a durable file is never replaced).
            Some(n) if lsn == n => return Ok(()),
            _ => {}
        }
        self.wait_durable(lsn)?;

        let snap_dir = self.dir.join("snap");
        let path = snap_dir.join(format::snap_name(lsn));
        let tmp = snap_dir.join(format!("{}.tmp", format::snap_name(lsn)));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(StorageError::io(&tmp, "create"))?;
        failpoint::note_created(&tmp);
        hit("snap.after_tmp_create", &snap_dir);
        let header = format::encode_snap_header(lsn, bytes);
        let total = (header.len() + bytes.len()) as u64;
        failpoint::note_write(&tmp, 0, total);
        file.write_all_at(&header, 0)
            .and_then(|()| file.write_all_at(bytes, header.len() as u64))
            .map_err(StorageError::io(&tmp, "write"))?;
        hit("snap.after_tmp_write", &snap_dir);
        file.sync_all().map_err(StorageError::io(&tmp, "fsync"))?;
        failpoint::note_data_synced(&tmp);
        hit("snap.after_tmp_fsync", &snap_dir);
        fs::rename(&tmp, &path).map_err(StorageError::io(&path, "rename"))?;
        failpoint::note_renamed(&tmp, &path);
        hit("snap.after_rename", &snap_dir);
        fsync_dir(&snap_dir)?;
        hit("snap.after_dir_fsync", &snap_dir);
        *newest = Some(lsn);

        self.compact(lsn, &snap_dir)
    }

    /// Deletes snapshots older than the newest two and segments superseded by
    /// the snapshot at `lsn`.
    fn compact(&self, lsn: Lsn, snap_dir: &Path) -> Result<(), StorageError> {
        let mut snaps: Vec<Lsn> = fs::read_dir(snap_dir)
            .map_err(StorageError::io(snap_dir, "read_dir"))?
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()
                    .and_then(format::parse_snap_name)
            })
            .collect();
        snaps.sort_unstable_by(|a, b| b.cmp(a));
        for old in snaps.iter().skip(2) {
            remove_file(&snap_dir.join(format::snap_name(*old)))?;
        }
        {
            let wal_dir = &self.shared.wal_dir;
            let mut segs = lock(&self.shared.segments);
            // Segment 0 holds lsns [segs[0], segs[1]); all superseded iff segs[1] <= lsn + 1.
            while segs.len() >= 2 && segs[1] <= lsn + 1 {
                remove_file(&wal_dir.join(format::seg_name(segs[0])))?;
                segs.remove(0);
            }
        }
        hit("compact.after_delete", snap_dir);
        fsync_dir(snap_dir)?;
        fsync_dir(&self.shared.wal_dir)?;
        hit("compact.after_dir_fsync", snap_dir);
        Ok(())
    }

    /// Cumulative counters.
    pub fn stats(&self) -> WalStats {
        let c = &self.shared.counters;
        WalStats {
            fsyncs_total: c.fsyncs.load(Ordering::Relaxed),
            records_total: c.records.load(Ordering::Relaxed),
            bytes_total: c.bytes.load(Ordering::Relaxed),
            fsync_time_ns_total: c.fsync_ns.load(Ordering::Relaxed),
            fsync_time_ns_max: c.fsync_ns_max.load(Ordering::Relaxed),
            segments_created_total: c.segments.load(Ordering::Relaxed),
        }
    }

    /// Writes and fsyncs everything queued, then stops the writer thread.
    pub fn close(self) -> Result<(), StorageError> {
        self.shutdown()
    }

    fn shutdown(&self) -> Result<(), StorageError> {
        let Some(handle) = lock(&self.writer).take() else {
            return Ok(());
        };
        {
            let mut q = lock(&self.shared.queue);
            q.closing = true;
            self.shared.work.notify_one();
        }
        handle.join().map_err(|_| StorageError::WriterFailed {
            reason: "writer thread panicked".into(),
        })?
    }
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("last_lsn", &self.last_lsn())
            .field("durable_lsn", &self.durable_lsn())
            .finish_non_exhaustive()
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
