//! The Raft log on Synod's own WAL (`synod-storage`).
//!
//! Every change is one WAL record ([`LogRecord`], postcard): the vote, each
//! appended entry, a truncation, a purge, the committed log id. The log is
//! also kept in memory (`BTreeMap` index → entry) and rebuilt at open by
//! replaying the WAL's snapshot ([`LogImage`]) and the records after it.
//! Every [`CONTROL_WAL_COMPACT_RECORDS`] records the whole in-memory log is
//! written as a WAL snapshot, which lets the WAL delete old segments.
//!
//! Durability: `append`'s callback runs only once the WAL reports the
//! entries' LSN durable (`on_durable`, from the WAL's writer thread);
//! `save_vote` returns only once the vote is durable. Truncation, purge and
//! the committed id are not waited for: the WAL is one ordered log, so any
//! later acknowledged record makes them durable too, and losing them in a
//! crash is as if openraft had not asked (it allows that for all three).

use crate::raft_types::{Entry, LogId, TypeConfig, Vote};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use synod_storage::{Lsn, Wal, WalOptions};

/// Records between two WAL snapshots of the log. Bounds the replay at open
/// and the WAL's size: the control log sees a few records per membership
/// change or heartbeat-free commit, so 1024 is minutes to days of history.
pub const CONTROL_WAL_COMPACT_RECORDS: u64 = 1024;

/// WAL segment size for the control log. The log is small (openraft purges
/// it behind state-machine snapshots, and the WAL's own snapshots let it
/// delete old segments); 4 MiB keeps the zero-filled preallocation of a
/// segment and its spare cheap (every open writes both) while holding a
/// record of [`CONTROL_WAL_RECORD_MAX_BYTES`].
pub const CONTROL_WAL_SEGMENT_BYTES: u64 = 4 << 20;

/// Largest WAL record: one entry. `Control::write` refuses commands above
/// `CONTROL_COMMAND_MAX_BYTES` (1 MiB), so 2 MiB leaves room for the
/// entry's envelope. The log image of a WAL snapshot is a snapshot file,
/// not a record, and has no such limit.
pub const CONTROL_WAL_RECORD_MAX_BYTES: u32 = 2 << 20;

/// One WAL record of the control log.
#[derive(Serialize, Deserialize)]
enum LogRecord {
    Vote(Vote),
    Entry(Entry),
    TruncateAfter(Option<LogId>),
    Purge(LogId),
    Committed(Option<LogId>),
}

/// The WAL snapshot: everything the records up to its LSN built.
#[derive(Default, Serialize, Deserialize)]
struct LogImage {
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    entries: Vec<Entry>,
}

#[derive(Default)]
struct LogData {
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    log: BTreeMap<u64, Entry>,
    records_since_compaction: u64,
}

impl LogData {
    fn from_image(img: LogImage) -> Self {
        LogData {
            vote: img.vote,
            committed: img.committed,
            last_purged: img.last_purged,
            log: img
                .entries
                .into_iter()
                .map(|e| (e.log_id.index, e))
                .collect(),
            records_since_compaction: 0,
        }
    }

    fn image(&self) -> LogImage {
        LogImage {
            vote: self.vote,
            committed: self.committed,
            last_purged: self.last_purged,
            entries: self.log.values().cloned().collect(),
        }
    }

    fn apply(&mut self, rec: LogRecord) {
        match rec {
            LogRecord::Vote(v) => self.vote = Some(v),
            LogRecord::Entry(e) => {
                self.log.insert(e.log_id.index, e);
            }
            LogRecord::TruncateAfter(after) => {
                let from = after.map_or(0, |l| l.index + 1);
                self.log.split_off(&from);
            }
            LogRecord::Purge(upto) => {
                self.log = self.log.split_off(&(upto.index + 1));
                self.last_purged = Some(upto);
            }
            LogRecord::Committed(c) => self.committed = c,
        }
    }
}

/// Callbacks waiting for the WAL to make an LSN durable.
#[derive(Default)]
struct Durability {
    durable: Lsn,
    waiting: BTreeMap<Lsn, Vec<IOFlushed<TypeConfig>>>,
}

struct Shared {
    wal: Wal,
    data: Mutex<LogData>,
    durability: Arc<Mutex<Durability>>,
}

/// openraft's log storage (and log reader) on a [`Wal`] in one directory.
/// Cheap to clone; clones share the log.
#[derive(Clone)]
pub struct WalLogStore {
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn encode<T: Serialize>(v: &T) -> io::Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(io_err)
}

impl WalLogStore {
    /// Opens (creating if needed) the log in `dir` and replays it.
    pub fn open(dir: &Path) -> io::Result<WalLogStore> {
        let durability = Arc::new(Mutex::new(Durability::default()));
        let on_durable = {
            let durability = Arc::clone(&durability);
            Box::new(move |lsn: Lsn| {
                let ready = {
                    let mut d = lock(&durability);
                    d.durable = d.durable.max(lsn);
                    let later = d.waiting.split_off(&(lsn + 1));
                    std::mem::replace(&mut d.waiting, later)
                };
                for cb in ready.into_values().flatten() {
                    cb.io_completed(Ok(()));
                }
            })
        };
        let opts = WalOptions {
            segment_bytes: CONTROL_WAL_SEGMENT_BYTES,
            max_record_bytes: CONTROL_WAL_RECORD_MAX_BYTES,
            ..WalOptions::default()
        };
        let (wal, recovered) = Wal::open(dir, opts, on_durable).map_err(io_err)?;
        if let Some(t) = &recovered.truncated_tail {
            tracing::warn!("control log: {t}");
        }
        let mut data = match recovered.snapshot {
            Some((_, bytes)) => LogData::from_image(
                postcard::from_bytes(&bytes)
                    .map_err(|e| io_err(format!("control log snapshot: {e}")))?,
            ),
            None => LogData::default(),
        };
        for (lsn, bytes) in recovered.records {
            let rec: LogRecord = postcard::from_bytes(&bytes)
                .map_err(|e| io_err(format!("control log record at lsn {lsn}: {e}")))?;
            data.apply(rec);
            data.records_since_compaction += 1;
        }
        lock(&durability).durable = wal.durable_lsn();
        Ok(WalLogStore {
            shared: Arc::new(Shared {
                wal,
                data: Mutex::new(data),
                durability,
            }),
        })
    }

    /// A handle that lets the owner wait until every clone is gone and the
    /// WAL closed (a restart must not open the directory twice).
    pub(crate) fn liveness(&self) -> Weak<dyn std::any::Any + Send + Sync> {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        weak
    }

    /// Appends `recs` to the WAL and applies them in memory under one lock,
    /// so the in-memory log always equals the WAL up to its last LSN.
    fn write(&self, recs: Vec<LogRecord>) -> io::Result<Lsn> {
        let payloads = recs.iter().map(encode).collect::<io::Result<Vec<_>>>()?;
        let n = payloads.len() as u64;
        let mut data = lock(&self.shared.data);
        let lsn = self
            .shared
            .wal
            .append_batch(payloads)
            .map_err(io_err)?
            .ok_or_else(|| io_err("empty control log write"))?;
        for r in recs {
            data.apply(r);
        }
        data.records_since_compaction += n;
        if data.records_since_compaction >= CONTROL_WAL_COMPACT_RECORDS {
            data.records_since_compaction = 0;
            let image = encode(&data.image())?;
            drop(data);
            let shared = Arc::clone(&self.shared);
            // write_snapshot waits for the fsync of `lsn`: off the async
            // threads. A snapshot older than a concurrent newer one is refused
            // by the WAL, which is fine: the newer one covers it.
            tokio::task::spawn_blocking(move || {
                if let Err(e) = shared.wal.write_snapshot(lsn, &image) {
                    tracing::warn!("control log compaction at lsn {lsn}: {e}");
                }
            });
        }
        Ok(lsn)
    }

    async fn wait_durable(&self, lsn: Lsn) -> io::Result<()> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || shared.wal.wait_durable(lsn))
            .await
            .map_err(io_err)?
            .map_err(io_err)
    }
}

impl RaftLogReader<TypeConfig> for WalLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let data = lock(&self.shared.data);
        Ok(data.log.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(lock(&self.shared.data).vote)
    }
}

impl RaftLogStorage<TypeConfig> for WalLogStore {
    type LogReader = WalLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let data = lock(&self.shared.data);
        let last = data
            .log
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or_else(|| data.last_purged);
        Ok(LogState {
            last_purged_log_id: data.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let lsn = self.write(vec![LogRecord::Vote(*vote)])?;
        self.wait_durable(lsn).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.write(vec![LogRecord::Committed(committed)])?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(lock(&self.shared.data).committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let recs: Vec<LogRecord> = entries.into_iter().map(LogRecord::Entry).collect();
        if recs.is_empty() {
            callback.io_completed(Ok(()));
            return Ok(());
        }
        let lsn = self.write(recs)?;
        let mut d = lock(&self.shared.durability);
        if d.durable >= lsn {
            drop(d);
            callback.io_completed(Ok(()));
        } else {
            d.waiting.entry(lsn).or_default().push(callback);
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.write(vec![LogRecord::TruncateAfter(last_log_id)])?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.write(vec![LogRecord::Purge(log_id)])?;
        Ok(())
    }
}
