//! Fold snapshots on disk (kafka.md §3 rule 6), in the agent's data
//! directory.
//!
//! One file per snapshot, `kafkalog-<next offset, 20 digits>-<term>.snap`,
//! holding [`LogState::snapshot`] bytes (framed and checksummed). Written
//! atomically: a temporary file, fsync, rename, fsync of the directory; a
//! crash leaves either the old set of files or the new one, plus at most a
//! stray `.tmp` that is ignored and removed at the next write. At start
//! the newest snapshot that restores is used; a corrupted one is reported
//! and the next older one tried.

use super::fold::{LogState, Rules};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Snapshots kept on disk: the newest plus one older, so a newest one
/// corrupted on disk still leaves a good one to replay from.
pub const SNAPSHOTS_KEPT: usize = 2;

const PREFIX: &str = "kafkalog-";
const SUFFIX: &str = ".snap";

/// A snapshot file found in the data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Its path.
    pub path: PathBuf,
    /// The next offset to fold after it.
    pub offset: u64,
    /// The term current at that offset.
    pub term: u64,
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (offset, term) = rest.split_once('-')?;
    Some((offset.parse().ok()?, term.parse().ok()?))
}

/// Snapshot files in `dir`, newest (highest offset) first.
pub fn list(dir: &Path) -> std::io::Result<Vec<SnapshotFile>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some((offset, term)) = name.to_str().and_then(parse_name) {
            out.push(SnapshotFile {
                path: entry.path(),
                offset,
                term,
            });
        }
    }
    out.sort_by(|a, b| b.offset.cmp(&a.offset).then(b.term.cmp(&a.term)));
    Ok(out)
}

/// Writes `bytes` ([`LogState::snapshot`] of a state at next offset
/// `offset` and term `term`; taken under the state's lock, written outside
/// it) atomically, and removes all but the newest [`SNAPSHOTS_KEPT`].
/// Returns the new file's path.
pub fn write(dir: &Path, offset: u64, term: u64, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let name = format!("{PREFIX}{offset:020}-{term}{SUFFIX}");
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    fs::File::open(dir)?.sync_all()?;
    // Read back what was written (TIGER_STYLE: assert on write and on read).
    let back = fs::read(&path)?;
    assert_eq!(back, bytes, "snapshot {path:?} reads back differently");
    for old in list(dir)?.into_iter().skip(SNAPSHOTS_KEPT) {
        let _ = fs::remove_file(old.path);
    }
    for entry in fs::read_dir(dir)?.flatten() {
        let n = entry.file_name();
        if n.to_str()
            .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(".tmp"))
            && entry.path() != tmp
        {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(path)
}

/// The newest snapshot in `dir` that restores, with the file it came from;
/// `None` if there is none (start from the beginning of the log). Refused
/// files are logged and skipped.
pub fn load_newest(dir: &Path, rules: Rules) -> std::io::Result<Option<(LogState, SnapshotFile)>> {
    for file in list(dir)? {
        let bytes = fs::read(&file.path)?;
        match LogState::restore(&bytes, rules) {
            Ok(state) if state.next_offset() == file.offset && state.term() == file.term => {
                return Ok(Some((state, file)));
            }
            Ok(state) => tracing::warn!(
                path = %file.path.display(),
                offset = state.next_offset(),
                term = state.term(),
                "snapshot's contents do not match its name; trying an older one"
            ),
            Err(e) => tracing::warn!(
                path = %file.path.display(),
                error = %e,
                "snapshot refused; trying an older one"
            ),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafkalog::record::{Claim, LogRecord};

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "synod-kafkalog-store-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn newest_good_snapshot_wins_and_old_ones_are_pruned() {
        let dir = tmpdir("prune");
        let mut s = LogState::new(Rules::Spec);
        for t in 1..=4u64 {
            let c = LogRecord::Claim(Claim {
                term: t,
                node: 1,
                boot: 1,
                api_addr: "a:1".into(),
            });
            s.fold(t * 10, &c.encode());
            write(&dir, s.next_offset(), s.term(), &s.snapshot()).unwrap();
        }
        let files = list(&dir).unwrap();
        assert_eq!(files.len(), SNAPSHOTS_KEPT);
        assert_eq!(files[0].offset, 41);
        let (loaded, file) = load_newest(&dir, Rules::Spec).unwrap().unwrap();
        assert_eq!(loaded, s);
        assert_eq!(file.term, 4);
        // Corrupt the newest: the older one is used.
        let mut bytes = fs::read(&files[0].path).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 1;
        fs::write(&files[0].path, bytes).unwrap();
        let (older, file) = load_newest(&dir, Rules::Spec).unwrap().unwrap();
        assert_eq!((older.next_offset(), file.offset), (31, 31));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_directory_has_no_snapshot() {
        let dir = tmpdir("empty");
        fs::write(dir.join("kafkalog-x.snap.tmp"), b"junk").unwrap();
        assert!(load_newest(&dir, Rules::Spec).unwrap().is_none());
        fs::remove_dir_all(&dir).unwrap();
    }
}
