//! openraft's state machine: [`ControlState`] plus the last applied log id
//! and membership.
//!
//! Persistence: the state machine lives in memory. Its snapshots, built by
//! openraft's snapshot policy or installed from the leader, are written to
//! `<dir>/sm-snapshot` (temp file, fsync, rename, directory fsync) before
//! openraft learns of them, and openraft purges the log only up to a snapshot
//! it learned of. At open the state machine loads that file, and openraft
//! re-applies the log after it up to the saved committed id (the log store
//! implements `save_committed`). So nothing committed is lost, and the file
//! never needs to be written per applied entry.

use crate::raft_types::{LogId, SnapshotMeta, StoredMembership, TypeConfig};
use crate::state::{ControlReply, ControlState};
use futures_util::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::Snapshot;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Largest state-machine snapshot, in bytes, built, installed or sent in one
/// message. The state is small (members, epochs, closed sets of past
/// epochs); the limit keeps one message below the transport's frame limit
/// and refuses a runaway state loudly instead of stalling replication.
pub const CONTROL_SNAPSHOT_MAX_BYTES: usize = 4 << 20;

/// The snapshot file's name inside the control directory.
pub const SM_SNAPSHOT_FILE: &str = "sm-snapshot";

/// A snapshot with its metadata.
type Snap = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;

/// A snapshot's content: postcard of the state machine's image.
pub type SnapshotData = Vec<u8>;

/// What a snapshot holds besides openraft's metadata.
#[derive(Clone, Serialize, Deserialize)]
struct SmImage {
    state: ControlState,
}

/// A persisted snapshot: metadata and data, as stored in `sm-snapshot`.
#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: SnapshotData,
}

/// The control plane's openraft state machine.
pub struct ControlStateMachine {
    dir: PathBuf,
    applied: Option<LogId>,
    membership: StoredMembership,
    state: Arc<ControlState>,
    publish: watch::Sender<Arc<ControlState>>,
    /// The newest snapshot built or installed, shared with builders.
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl ControlStateMachine {
    /// Opens the state machine in `dir`, loading `sm-snapshot` if present,
    /// and publishes its state on `publish`.
    pub fn open(dir: &Path, publish: watch::Sender<Arc<ControlState>>) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join(SM_SNAPSHOT_FILE);
        let stored: Option<StoredSnapshot> = match fs::read(&path) {
            Ok(bytes) => Some(
                postcard::from_bytes(&bytes)
                    .map_err(|e| io_err(format!("{}: corrupt snapshot: {e}", path.display())))?,
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut sm = ControlStateMachine {
            dir: dir.to_path_buf(),
            applied: None,
            membership: StoredMembership::default(),
            state: Arc::new(ControlState::default()),
            publish,
            current: Arc::new(Mutex::new(None)),
        };
        if let Some(s) = stored {
            sm.load(&s)?;
            *sm.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
        }
        sm.publish.send_replace(Arc::clone(&sm.state));
        Ok(sm)
    }

    fn load(&mut self, s: &StoredSnapshot) -> io::Result<()> {
        let image: SmImage = postcard::from_bytes(&s.data).map_err(io_err)?;
        self.applied = s.meta.last_log_id;
        self.membership = s.meta.last_membership.clone();
        self.state = Arc::new(image.state);
        Ok(())
    }
}

/// Writes `s` to `<dir>/sm-snapshot`: temp file, fsync, rename, dir fsync.
fn persist(dir: &Path, s: &StoredSnapshot) -> io::Result<()> {
    let bytes = postcard::to_allocvec(s).map_err(io_err)?;
    let tmp = dir.join(format!("{SM_SNAPSHOT_FILE}.tmp"));
    let path = dir.join(SM_SNAPSHOT_FILE);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()
}

/// Builds a snapshot of the state machine as it was when the builder was
/// made.
pub struct ControlSnapshotBuilder {
    dir: PathBuf,
    meta: SnapshotMeta,
    image: SmImage,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for ControlSnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snap, io::Error> {
        let data = postcard::to_allocvec(&self.image).map_err(io_err)?;
        if data.len() > CONTROL_SNAPSHOT_MAX_BYTES {
            return Err(io_err(format!(
                "control state snapshot is {} bytes, above CONTROL_SNAPSHOT_MAX_BYTES {}",
                data.len(),
                CONTROL_SNAPSHOT_MAX_BYTES
            )));
        }
        let stored = StoredSnapshot {
            meta: self.meta.clone(),
            data,
        };
        let dir = self.dir.clone();
        let to_write = stored.clone();
        tokio::task::spawn_blocking(move || persist(&dir, &to_write))
            .await
            .map_err(io_err)??;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(stored.clone());
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: stored.data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for ControlStateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = ControlSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut changed = false;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let reply = match entry.payload {
                EntryPayload::Blank => ControlReply::Ok,
                EntryPayload::Normal(cmd) => {
                    changed = true;
                    let reply = Arc::make_mut(&mut self.state).apply(cmd);
                    if let ControlReply::Rejected(why) = &reply {
                        tracing::debug!("control: entry {} rejected: {why}", entry.log_id);
                    }
                    reply
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    ControlReply::Ok
                }
            };
            self.applied = Some(entry.log_id);
            if let Some(r) = responder {
                r.send(reply);
            }
        }
        if changed {
            self.publish.send_replace(Arc::clone(&self.state));
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        ControlSnapshotBuilder {
            dir: self.dir.clone(),
            meta: SnapshotMeta {
                last_log_id: self.applied,
                last_membership: self.membership.clone(),
            },
            image: SmImage {
                state: (*self.state).clone(),
            },
            current: Arc::clone(&self.current),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        if snapshot.len() > CONTROL_SNAPSHOT_MAX_BYTES {
            return Err(io_err(format!(
                "refusing a {}-byte control snapshot (CONTROL_SNAPSHOT_MAX_BYTES {})",
                snapshot.len(),
                CONTROL_SNAPSHOT_MAX_BYTES
            )));
        }
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot,
        };
        // Decode before persisting: a bad snapshot must not replace a good one.
        self.load(&stored)?;
        let dir = self.dir.clone();
        let to_write = stored.clone();
        tokio::task::spawn_blocking(move || persist(&dir, &to_write))
            .await
            .map_err(io_err)??;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(stored);
        self.publish.send_replace(Arc::clone(&self.state));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snap>, io::Error> {
        let cur = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(cur.map(|s| Snapshot {
            meta: s.meta,
            snapshot: s.data,
        }))
    }
}
