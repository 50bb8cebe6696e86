//! The crate's one error type.
//!
//! Operating errors (disk full, permission, overload, a caller asking for an
//! LSN that was never assigned) are variants the caller handles. Damaged data
//! is always [`StorageError::Corrupt`], naming the file and the byte offset, so
//! an operator can look at exactly that place; the WAL never serves from it.

use crate::Lsn;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in `synod-storage`.
#[derive(Debug)]
#[non_exhaustive]
pub enum StorageError {
    /// A system call on `path` failed.
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// What was being done, e.g. `"fdatasync"`, `"rename"`.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Data on disk failed verification. Opening refuses to continue.
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset in `path` where the damage was found.
        offset: u64,
        /// What was wrong, for a human.
        reason: String,
    },
    /// An append larger than [`crate::WalOptions::max_record_bytes`].
    RecordTooLarge {
        /// Payload length asked for.
        len: usize,
        /// The configured maximum.
        max: u32,
    },
    /// The append queue is full; retry later (backpressure, not a failure).
    Overloaded {
        /// Records queued and not yet taken by the writer.
        queued: usize,
        /// [`crate::WalOptions::queue_max_records`].
        max: usize,
    },
    /// The WAL is closing or closed.
    Closed,
    /// The writer thread stopped after an I/O error; nothing more becomes
    /// durable. After a failed fdatasync the page cache state is unknown
    /// ("fsyncgate"), so the WAL never retries: reopen to recover.
    WriterFailed {
        /// The error that stopped the writer.
        reason: String,
    },
    /// An LSN beyond the highest one assigned (waiting for it could never end,
    /// a snapshot cannot cover records that do not exist).
    LsnOutOfRange {
        /// The LSN asked for.
        lsn: Lsn,
        /// The highest LSN assigned so far.
        last: Lsn,
    },
    /// A snapshot older than the newest one already written.
    StaleSnapshot {
        /// The LSN asked for.
        lsn: Lsn,
        /// The newest snapshot's LSN.
        newest: Lsn,
    },
    /// Invalid [`crate::WalOptions`] or failpoint specification.
    Config {
        /// What is wrong.
        reason: String,
    },
}

impl StorageError {
    /// True for errors that may go away by themselves (retry with backoff).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Overloaded { .. })
    }

    pub(crate) fn io(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> StorageError {
        let path = path.to_path_buf();
        move |source| StorageError::Io { path, op, source }
    }

    pub(crate) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> StorageError {
        StorageError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io { path, op, source } => {
                write!(f, "{op} {}: {source}", path.display())
            }
            StorageError::Corrupt {
                path,
                offset,
                reason,
            } => write!(f, "corrupt {} at offset {offset}: {reason}", path.display()),
            StorageError::RecordTooLarge { len, max } => {
                write!(f, "record of {len} bytes exceeds max_record_bytes {max}")
            }
            StorageError::Overloaded { queued, max } => {
                write!(
                    f,
                    "WAL overloaded: {queued} records queued (max {max}); retry"
                )
            }
            StorageError::Closed => write!(f, "WAL is closed"),
            StorageError::WriterFailed { reason } => write!(f, "WAL writer failed: {reason}"),
            StorageError::LsnOutOfRange { lsn, last } => {
                write!(f, "lsn {lsn} was never assigned (last assigned {last})")
            }
            StorageError::StaleSnapshot { lsn, newest } => {
                write!(
                    f,
                    "snapshot at lsn {lsn} is older than the newest ({newest})"
                )
            }
            StorageError::Config { reason } => write!(f, "invalid storage configuration: {reason}"),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
