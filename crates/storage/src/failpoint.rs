//! Named crash points at every write/fsync boundary (quality-bars R4).
//!
//! Arm one point per process, either from the environment,
//! `SYNOD_FAILPOINT=name` or `SYNOD_FAILPOINT=name:N` (fire on the Nth hit,
//! default 1; read once, at the first [`crate::Wal::open`]), or with [`arm`].
//!
//! # What firing models
//!
//! Power loss at that instant, in its most pessimistic form: **none of the
//! writes since the last successful fsync reached the disk**. Concretely,
//! before aborting the process:
//!
//! * every byte range written to a file and not yet covered by a successful
//!   `fdatasync` of that file is overwritten with what it held at the last
//!   sync (the WAL only ever writes into zero-filled space, so: zeros);
//! * a file created (or renamed into place) since its directory was last
//!   fsynced is removed, and a rename not yet made durable by a directory
//!   fsync is undone;
//!
//! then it prints `synod: failpoint <name> fired` to stderr and calls
//! [`std::process::abort`].
//!
//! Not modelled here: a *partially* persisted write (a torn sector, or a later
//! write surviving while an earlier one does not). Recovery handles those as a
//! torn tail; the torn-tail and bit-flip tests cover them. Deletions are
//! modelled as persisted (a deleted file cannot be brought back); recovery
//! accepts either outcome because only superseded files are ever deleted.
//!
//! Bookkeeping of unsynced state is always on (one uncontended mutex per write
//! and per fsync), so arming late still reverts everything correctly. The
//! firing thread keeps that mutex until the abort, so another thread's later
//! fsync cannot be acknowledged in between.

use crate::StorageError;
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Every failpoint, in the order a segment, a batch and a snapshot meet them.
pub const FAILPOINTS: &[&str] = &[
    // Preallocating the next segment (`wal/spare.tmp`), in a helper thread.
    "wal.segment_create",       // spare file created, nothing written
    "wal.before_segment_fsync", // zeros written, not fsynced
    "wal.after_segment_fsync",  // zeros fsynced, directory not fsynced
    // Rolling over to the spare: header, rename, directory fsync.
    "wal.roll_after_header",       // segment header written, not fsynced
    "wal.roll_after_header_fsync", // header fsynced, spare not yet renamed
    "wal.roll_after_rename",       // renamed to wal-*.seg, directory not fsynced
    "wal.roll_after_dir_fsync",    // new segment durable, no records in it yet
    // One group commit.
    "wal.before_write", // batch encoded, nothing written
    "wal.after_write",  // batch written to the page cache, not fsynced
    "wal.after_fsync",  // batch fsynced, not yet acknowledged
    // Snapshot: temp file, fsync, rename, directory fsync.
    "snap.after_tmp_create", // empty temp file created
    "snap.after_tmp_write",  // header and body written, not fsynced
    "snap.after_tmp_fsync",  // temp file fsynced, not renamed
    "snap.after_rename",     // renamed, directory not fsynced
    "snap.after_dir_fsync",  // snapshot durable, nothing compacted
    // Compaction after a snapshot.
    "compact.after_delete", // old snapshots and segments unlinked, dirs not fsynced
    "compact.after_dir_fsync", // compaction durable
];

/// The environment variable read by [`crate::Wal::open`].
pub const ENV_VAR: &str = "SYNOD_FAILPOINT";

struct Armed {
    name: &'static str,
    hits_left: u64,
}

static ANY_ARMED: AtomicBool = AtomicBool::new(false);
static ARMED: Mutex<Option<Armed>> = Mutex::new(None);
static FROM_ENV: OnceLock<Result<(), String>> = OnceLock::new();

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Arms failpoint `name` to fire on its `nth` hit (1 = the first). Replaces
/// any previously armed point.
pub fn arm(name: &str, nth: u64) -> Result<(), StorageError> {
    let Some(&name) = FAILPOINTS.iter().find(|&&n| n == name) else {
        return Err(StorageError::Config {
            reason: format!(
                "unknown failpoint {name:?}; known: {}",
                FAILPOINTS.join(", ")
            ),
        });
    };
    if nth == 0 {
        return Err(StorageError::Config {
            reason: "failpoint hit count must be at least 1".into(),
        });
    }
    *lock(&ARMED) = Some(Armed {
        name,
        hits_left: nth,
    });
    ANY_ARMED.store(true, Ordering::SeqCst);
    Ok(())
}

/// Disarms whatever is armed.
pub fn disarm() {
    *lock(&ARMED) = None;
    ANY_ARMED.store(false, Ordering::SeqCst);
}

/// Parses `name` or `name:N`.
fn arm_spec(spec: &str) -> Result<(), StorageError> {
    let (name, nth) = match spec.rsplit_once(':') {
        Some((name, n)) => {
            let nth = n.parse().map_err(|_| StorageError::Config {
                reason: format!("{ENV_VAR}={spec:?}: hit count {n:?} is not a number"),
            })?;
            (name, nth)
        }
        None => (spec, 1),
    };
    arm(name, nth)
}

/// The data directory of the first WAL opened in this process, when the
/// failpoint was armed from [`ENV_VAR`]: only that WAL's hits count. A
/// replica opens its data WAL first and the control plane's
/// (`<data_dir>/control`) after it, so an environment-armed point targets
/// the data WAL and its hit counts do not depend on control-plane traffic.
/// A point armed with [`arm`] counts hits of every WAL.
static SCOPE: OnceLock<PathBuf> = OnceLock::new();

/// Arms from [`ENV_VAR`] the first time it is called in this process;
/// `root` is the data directory of the WAL being opened.
pub(crate) fn arm_from_env(root: &Path) -> Result<(), StorageError> {
    FROM_ENV
        .get_or_init(|| match std::env::var(ENV_VAR) {
            Ok(spec) if !spec.is_empty() => {
                let _ = SCOPE.set(root.to_path_buf());
                arm_spec(&spec).map_err(|e| e.to_string())
            }
            _ => Ok(()),
        })
        .clone()
        .map_err(|reason| StorageError::Config { reason })
}

/// Passes failpoint `name` in `dir` (a WAL's `wal/` or `snap/` directory);
/// fires if it is armed, `dir` is in scope (see [`SCOPE`]) and this is the
/// chosen hit.
pub(crate) fn hit(name: &'static str, dir: &Path) {
    debug_assert!(FAILPOINTS.contains(&name), "unlisted failpoint {name}");
    if !ANY_ARMED.load(Ordering::Relaxed) {
        return;
    }
    if SCOPE
        .get()
        .is_some_and(|root| dir.parent() != Some(root.as_path()))
    {
        return;
    }
    let mut armed = lock(&ARMED);
    let Some(a) = armed.as_mut() else { return };
    if a.name != name {
        return;
    }
    a.hits_left -= 1;
    if a.hits_left == 0 {
        fire(name);
    }
}

/// What a power loss now would undo for one path.
#[derive(Default)]
struct Unsynced {
    /// Byte range written since the last fdatasync: `(synced_len, written_end)`.
    tail: Option<(u64, u64)>,
    /// Created since its directory was last fsynced: would vanish.
    created: bool,
    /// Renamed here from this path since the directory was last fsynced.
    renamed_from: Option<PathBuf>,
}

static UNSYNCED: Mutex<BTreeMap<PathBuf, Unsynced>> = Mutex::new(BTreeMap::new());

/// Call before writing `[from, to)` of `path`, where `from` was synced.
pub(crate) fn note_write(path: &Path, from: u64, to: u64) {
    let mut u = lock(&UNSYNCED);
    let e = u.entry(path.to_path_buf()).or_default();
    e.tail = Some(match e.tail {
        Some((a, b)) => (a.min(from), b.max(to)),
        None => (from, to),
    });
}

/// Call after a successful fdatasync/fsync of `path`.
pub(crate) fn note_data_synced(path: &Path) {
    let mut u = lock(&UNSYNCED);
    if let Some(e) = u.get_mut(path) {
        e.tail = None;
        if !e.created && e.renamed_from.is_none() {
            u.remove(path);
        }
    }
}

/// Call after creating `path`.
pub(crate) fn note_created(path: &Path) {
    lock(&UNSYNCED)
        .entry(path.to_path_buf())
        .or_default()
        .created = true;
}

/// Call after renaming `from` to `to`.
pub(crate) fn note_renamed(from: &Path, to: &Path) {
    let mut u = lock(&UNSYNCED);
    let mut e = u.remove(from).unwrap_or_default();
    if !e.created {
        e.renamed_from = Some(from.to_path_buf());
    }
    u.insert(to.to_path_buf(), e);
}

/// Call after unlinking `path`.
pub(crate) fn note_removed(path: &Path) {
    lock(&UNSYNCED).remove(path);
}

/// Call after fsyncing directory `dir`: entries in it are now durable.
pub(crate) fn note_dir_synced(dir: &Path) {
    lock(&UNSYNCED).retain(|path, e| {
        if path.parent() == Some(dir) {
            e.created = false;
            e.renamed_from = None;
        }
        e.tail.is_some() || e.created || e.renamed_from.is_some()
    });
}

fn fire(name: &str) -> ! {
    // Hold the bookkeeping lock until the abort: no other thread can record a
    // sync (and so acknowledge anything) after the state below is rolled back.
    let unsynced = lock(&UNSYNCED);
    for (path, e) in unsynced.iter() {
        if e.created {
            let _ = fs::remove_file(path);
            continue;
        }
        if let Some((from, to)) = e.tail {
            if let Ok(f) = OpenOptions::new().write(true).open(path) {
                let zeros = vec![0u8; (to - from) as usize];
                let _ = f.write_all_at(&zeros, from);
                let _ = f.sync_data();
            }
        }
        if let Some(from) = &e.renamed_from {
            let _ = fs::rename(path, from);
        }
    }
    eprintln!("synod: failpoint {name} fired");
    std::process::abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_and_zero_counts_are_rejected() {
        assert!(arm("wal.no_such_point", 1).is_err());
        assert!(arm("wal.before_write", 0).is_err());
        assert!(arm_spec("wal.before_write:x").is_err());
        disarm();
    }

    #[test]
    fn names_are_unique() {
        let mut v = FAILPOINTS.to_vec();
        v.sort();
        v.dedup();
        assert_eq!(v.len(), FAILPOINTS.len());
    }
}
