//! [`Pipeline`]: up to W proposals outstanding at once, each exactly-once.
//!
//! An agent that pipelines decisions submits them without waiting for the
//! previous ones; [`Pipeline::submit`] returns a [`Ticket`] at once while
//! fewer than W (the window) are outstanding, and blocks (on a condition
//! variable, never spinning) while W are.
//!
//! # How
//!
//! The pipeline owns W *slots*. A slot is one worker thread with its own
//! kept-alive HTTP connection and its own client session (a session id of
//! its own, requests numbered 1, 2, …). A submitted decision takes a free
//! slot and the slot's next request number, so its idempotency key
//! `(client, request)` is fixed before anything is sent (the ticket knows
//! it). The worker then sends it and retries it with that same key (after
//! a broken connection, a timeout, a replica's 429 after the hinted delay,
//! a retryable 5xx), moving to the next replica after each failure, until
//! it is answered or out of patience; only then is the slot free again.
//!
//! One session per slot, one request per session at a time, is what keeps
//! this exactly-once: a replica's state machine keeps, per session, only
//! the last request number and its outcome, so two requests of one session
//! in flight together could overtake each other and the lower one would be
//! refused as stale. With one at a time per session, every retry is either
//! the first execution of its key or answered with the recorded outcome.
//!
//! # Guarantees
//!
//! - At most W proposals are outstanding, counted from `submit` taking a
//!   slot to its ticket being answered; hence at most W HTTP requests of
//!   this pipeline are on the wire ([`PipelineStats`] measures both).
//! - Every decision submitted is applied at most once, and a decision whose
//!   ticket returns `Ok` was applied (or rejected by the state machine)
//!   exactly once. A ticket's error says whether the decision may still be
//!   applied ([`PipelineError::maybe_applied`]); the pipeline never sends it
//!   again under another key.
//! - **Order**: decisions outstanding together are independent proposals,
//!   on different sessions, to possibly different replicas. The cluster may
//!   apply them in any order relative to each other, even when they touch
//!   the same key (it applies conflicting decisions in the same order on
//!   every replica, but not necessarily in submission order). A caller that
//!   needs B after A waits for A's ticket before submitting B.
//!
//! Each pipeline starts W new sessions on the cluster (random ids unless
//! [`PipelineOptions::first_session`] is given), and replicas do not evict
//! sessions yet: keep one pipeline per agent rather than one per batch.
//!
//! # Example
//!
//! ```no_run
//! use synod_client::{Client, PipelineError};
//! use synod_decision::Op;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::new(["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"])?;
//! let pipe = client.pipeline(32)?; // at most 32 outstanding (MAX_WINDOW: 256)
//! let mut tickets = Vec::new();
//! for i in 0..1000 {
//!     // Blocks while 32 are outstanding.
//!     tickets.push(pipe.submit(vec![Op::put(format!("truck/{i}"), b"loaded".to_vec())], vec![])?);
//! }
//! for t in tickets {
//!     match t.wait() {
//!         Ok(r) => println!("{} ({}, {}): {:?}", r.instance, r.client, r.request, r.outcome),
//!         // Every replica kept answering 429: shed load, submit it again later.
//!         Err(e @ PipelineError::Overloaded { .. }) if !e.maybe_applied() => eprintln!("{e}"),
//!         Err(e) => return Err(e.into()),
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use crate::client::{Client, ClientError};
use crate::retry::{self, Meter, Proposer};
use crate::session::PATIENCE_DEFAULT;
use crate::wire::{ErrorBody, ProposeRequest, ProposeResponse};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;
use synod_decision::{Guard, Op};

/// Largest window a pipeline accepts.
///
/// Each slot is a thread, a TCP connection to a replica and a session the
/// replicas keep for good; 256 proposals in flight already keep a 3-replica
/// cluster's pipeline full (a decision commits in one or two round trips,
/// and replicas batch them), while a replica admits
/// `limits.max_waiting_proposals` (10 000 by default) from all clients
/// together. An agent that wants more parallelism than this should check
/// that the cluster, not its own window, is the bottleneck first.
pub const MAX_WINDOW: usize = 256;

/// Why a pipeline could not be made, or a decision through it failed.
#[derive(Debug)]
pub enum PipelineError {
    /// The window is 0 or larger than [`MAX_WINDOW`].
    InvalidWindow {
        /// The window asked for.
        requested: usize,
        /// [`MAX_WINDOW`].
        max: usize,
    },
    /// A request or option is unusable; the text names the field.
    InvalidArgument(String),
    /// Every replica kept refusing the decision as overloaded (429) for
    /// more than [`crate::session::OVERLOAD_RETRIES_MAX`] rounds, each
    /// waited out after the server's hinted delay. Retryable: unless
    /// `maybe_applied`, nothing was applied, and submitting it again later
    /// is safe.
    Overloaded {
        /// The decision's session.
        client: u64,
        /// Its request number.
        request: u64,
        /// Requests sent for it.
        attempts: u32,
        /// The last 429's body (its `retry_after_ms` is the server's hint).
        last: ErrorBody,
        /// An earlier attempt was ambiguous (see [`ClientError::maybe_proposed`]).
        maybe_applied: bool,
    },
    /// Any other failure, after retries with the same key: a non-retryable
    /// error (e.g. 400 `invalid_argument`), or retryable ones until the
    /// pipeline's patience ran out.
    Failed {
        /// The decision's session.
        client: u64,
        /// Its request number.
        request: u64,
        /// The last error.
        error: ClientError,
        /// Some attempt may have reached the protocol: the decision may
        /// still be applied (once at most).
        maybe_applied: bool,
    },
}

impl PipelineError {
    /// True for [`PipelineError::Overloaded`] and for failures whose last
    /// error was retryable (the cluster was unreachable for the whole
    /// patience). Submitting the decision again is safe only if
    /// [`PipelineError::maybe_applied`] is false.
    pub fn is_retryable(&self) -> bool {
        match self {
            PipelineError::Overloaded { .. } => true,
            PipelineError::Failed { error, .. } => error.is_retryable(),
            PipelineError::InvalidWindow { .. } | PipelineError::InvalidArgument(_) => false,
        }
    }

    /// True if the decision may have been (or may still be) applied, once
    /// at most: some attempt's fate is unknown (a broken connection, a
    /// timeout, a 5xx after it was proposed).
    pub fn maybe_applied(&self) -> bool {
        match self {
            PipelineError::Overloaded { maybe_applied, .. }
            | PipelineError::Failed { maybe_applied, .. } => *maybe_applied,
            PipelineError::InvalidWindow { .. } | PipelineError::InvalidArgument(_) => false,
        }
    }

    /// The decision's idempotency key, if it got one.
    pub fn key(&self) -> Option<(u64, u64)> {
        match self {
            PipelineError::Overloaded {
                client, request, ..
            }
            | PipelineError::Failed {
                client, request, ..
            } => Some((*client, *request)),
            PipelineError::InvalidWindow { .. } | PipelineError::InvalidArgument(_) => None,
        }
    }
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let maybe = |m: bool| {
            if m {
                " (it may still be applied, once at most)"
            } else {
                ""
            }
        };
        match self {
            PipelineError::InvalidWindow { requested, max } => {
                write!(f, "window {requested} is not in 1..={max} (MAX_WINDOW)")
            }
            PipelineError::InvalidArgument(s) => write!(f, "invalid argument: {s}"),
            PipelineError::Overloaded {
                client,
                request,
                attempts,
                last,
                maybe_applied,
            } => write!(
                f,
                "decision ({client}, {request}) refused as overloaded {attempts} times, \
                 last: {}; retry later{}",
                last.message,
                maybe(*maybe_applied)
            ),
            PipelineError::Failed {
                client,
                request,
                error,
                maybe_applied,
            } => write!(
                f,
                "decision ({client}, {request}) failed: {error}{}",
                maybe(*maybe_applied)
            ),
        }
    }
}

impl std::error::Error for PipelineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PipelineError::Failed { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// How to build a [`Pipeline`].
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    /// Proposals outstanding at most, `1..=MAX_WINDOW`.
    pub window: usize,
    /// Session ids `first..first + window` for the slots, each numbering its
    /// requests from 1; `None`: fresh random ids in `2^62..2^63` (the server
    /// uses `2^63..` for one-off sessions). Ids must never have been used
    /// before: a replica refuses a request number at or below the session's
    /// last one.
    pub first_session: Option<u64>,
    /// How long one decision is retried before its ticket fails.
    pub patience: Duration,
}

impl PipelineOptions {
    /// A window of `window`, random session ids, [`PATIENCE_DEFAULT`].
    pub fn new(window: usize) -> PipelineOptions {
        PipelineOptions {
            window,
            first_session: None,
            patience: PATIENCE_DEFAULT,
        }
    }

    /// Uses session ids `first..first + window`.
    #[must_use]
    pub fn first_session(mut self, first: u64) -> PipelineOptions {
        self.first_session = Some(first);
        self
    }

    /// Retries one decision for at most `d`.
    #[must_use]
    pub fn patience(mut self, d: Duration) -> PipelineOptions {
        self.patience = d;
        self
    }
}

/// Counters of a pipeline, for monitoring and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// The window W.
    pub window: usize,
    /// Decisions submitted.
    pub submitted: u64,
    /// Decisions whose ticket was answered (with a response or an error).
    pub completed: u64,
    /// Decisions submitted and not yet answered.
    pub outstanding: usize,
    /// The most decisions ever outstanding at once (never above W).
    pub peak_outstanding: usize,
    /// The most HTTP requests of this pipeline ever on the wire at once.
    pub peak_on_wire: usize,
    /// HTTP requests sent, first attempts and retries.
    pub attempts: u64,
    /// 429 `overloaded` answers received (each retried after its hint).
    pub overloaded: u64,
    /// Moves to another replica after an error.
    pub failovers: u64,
    /// TCP connections opened (one per slot while a replica keeps them).
    pub connections: u64,
}

/// A proposal's place in the pipeline: wait on it for the outcome.
#[must_use = "a ticket holds the decision's outcome"]
#[derive(Debug)]
pub struct Ticket {
    client: u64,
    request: u64,
    rx: Receiver<Result<ProposeResponse, PipelineError>>,
}

impl Ticket {
    /// The decision's session.
    pub fn client(&self) -> u64 {
        self.client
    }

    /// Its request number within the session.
    pub fn request(&self) -> u64 {
        self.request
    }

    /// Blocks until the decision is answered, or its retries give up
    /// (bounded by the pipeline's patience plus one attempt's timeouts).
    pub fn wait(self) -> Result<ProposeResponse, PipelineError> {
        self.rx
            .recv()
            .expect("a pipeline worker panicked before answering its ticket")
    }
}

/// One idle slot: its worker and session.
#[derive(Debug)]
struct Slot {
    worker: usize,
    session: u64,
    next: u64,
}

#[derive(Debug)]
struct Job {
    session: u64,
    request: u64,
    body: Vec<u8>,
    reply: SyncSender<Result<ProposeResponse, PipelineError>>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Idle slots. `submit` waits on `freed` while this is empty.
    free: Mutex<Vec<Slot>>,
    freed: Condvar,
    outstanding: AtomicUsize,
    peak_outstanding: AtomicUsize,
    submitted: AtomicU64,
    completed: AtomicU64,
    connections: AtomicU64,
    meter: Meter,
}

impl Shared {
    fn free(&self) -> MutexGuard<'_, Vec<Slot>> {
        // A worker never panics while holding the lock; recover anyway.
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Up to W proposals outstanding at once; see the module docs.
///
/// `Sync`: several threads may submit through one pipeline. Dropping it
/// waits for the decisions outstanding to be answered (their tickets still
/// get the answers) and joins the workers.
#[derive(Debug)]
pub struct Pipeline {
    window: usize,
    sessions: Vec<u64>,
    shared: Arc<Shared>,
    jobs: Vec<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pipeline {
    fn start(client: &Client, opts: PipelineOptions) -> Result<Pipeline, PipelineError> {
        let w = opts.window;
        if w == 0 || w > MAX_WINDOW {
            return Err(PipelineError::InvalidWindow {
                requested: w,
                max: MAX_WINDOW,
            });
        }
        let sessions: Vec<u64> = match opts.first_session {
            Some(first) => {
                if first == 0 || first.checked_add(w as u64).is_none_or(|end| end > 1 << 63) {
                    return Err(PipelineError::InvalidArgument(format!(
                        "first_session: {first}..{first}+{w} must lie in 1..2^63 \
                         (0 is for read-only commands, 2^63.. for the server's one-off sessions)"
                    )));
                }
                (first..first + w as u64).collect()
            }
            None => random_sessions(w),
        };
        let shared = Arc::new(Shared::default());
        let n = client.endpoint_count();
        let start = client.preferred();
        let mut jobs = Vec::with_capacity(w);
        let mut workers = Vec::with_capacity(w);
        for (i, &session) in sessions.iter().enumerate() {
            // Capacity 1: a worker gets a job only when its slot is free,
            // so the send never blocks.
            let (tx, rx) = mpsc::sync_channel::<Job>(1);
            let client = client.clone();
            let shared2 = shared.clone();
            let patience = opts.patience;
            // Slots start on different replicas: the load spreads, and a
            // dead replica stalls only the slots that were using it.
            let home = (start + i) % n;
            let spawned = thread::Builder::new()
                .name(format!("synod-pipeline-{i}"))
                .spawn(move || worker(client, shared2, rx, i, home, patience));
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => {
                    // Dropping `jobs` ends the workers already started.
                    return Err(PipelineError::InvalidArgument(format!(
                        "window: cannot start worker {i} of {w}: {e}"
                    )));
                }
            }
            jobs.push(tx);
            shared.free().push(Slot {
                worker: i,
                session,
                next: 1,
            });
        }
        Ok(Pipeline {
            window: w,
            sessions,
            shared,
            jobs,
            workers,
        })
    }

    /// The window W.
    pub fn window(&self) -> usize {
        self.window
    }

    /// The slots' session ids, in slot order.
    pub fn sessions(&self) -> &[u64] {
        &self.sessions
    }

    /// Submits a decision; see [`Pipeline::submit_request`].
    pub fn submit(&self, ops: Vec<Op>, guards: Vec<Guard>) -> Result<Ticket, PipelineError> {
        self.submit_request(ProposeRequest {
            client: None,
            request: None,
            ops,
            guards,
            issued_at_ms: None,
            timeout_ms: None,
        })
    }

    /// Submits a decision (`client` and `request` must be unset: the
    /// pipeline assigns them) and returns its ticket. Blocks while W
    /// decisions are outstanding, until one is answered.
    pub fn submit_request(&self, mut req: ProposeRequest) -> Result<Ticket, PipelineError> {
        if req.client.is_some() || req.request.is_some() {
            return Err(PipelineError::InvalidArgument(
                "client/request: the pipeline assigns the idempotency key; leave them unset".into(),
            ));
        }
        let mut free = self.shared.free();
        let slot = loop {
            if let Some(s) = free.pop() {
                break s;
            }
            free = self
                .shared
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        };
        drop(free);
        let now = self.shared.outstanding.fetch_add(1, Ordering::SeqCst) + 1;
        self.shared
            .peak_outstanding
            .fetch_max(now, Ordering::SeqCst);
        self.shared.submitted.fetch_add(1, Ordering::Relaxed);
        req.client = Some(slot.session);
        req.request = Some(slot.next);
        let (reply, rx) = mpsc::sync_channel(1);
        let ticket = Ticket {
            client: slot.session,
            request: slot.next,
            rx,
        };
        let job = match serde_json::to_vec(&req) {
            Ok(body) => Job {
                session: slot.session,
                request: slot.next,
                body,
                reply,
            },
            Err(e) => {
                // Not sent: the number stays unused.
                self.release(slot);
                return Err(PipelineError::InvalidArgument(format!("request: {e}")));
            }
        };
        self.jobs[slot.worker]
            .send(job)
            .expect("pipeline workers live as long as the pipeline");
        Ok(ticket)
    }

    /// Gives an unused slot back (a submit that failed before sending).
    fn release(&self, slot: Slot) {
        self.shared.outstanding.fetch_sub(1, Ordering::SeqCst);
        self.shared.submitted.fetch_sub(1, Ordering::Relaxed);
        self.shared.free().push(slot);
        self.shared.freed.notify_all();
    }

    /// Blocks until every decision submitted so far is answered.
    pub fn drain(&self) {
        let mut free = self.shared.free();
        while free.len() < self.window {
            free = self
                .shared
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The pipeline's counters.
    pub fn stats(&self) -> PipelineStats {
        let s = &self.shared;
        PipelineStats {
            window: self.window,
            submitted: s.submitted.load(Ordering::SeqCst),
            completed: s.completed.load(Ordering::SeqCst),
            outstanding: s.outstanding.load(Ordering::SeqCst),
            peak_outstanding: s.peak_outstanding.load(Ordering::SeqCst),
            peak_on_wire: s.meter.peak_on_wire.load(Ordering::SeqCst),
            attempts: s.meter.attempts.load(Ordering::Relaxed),
            overloaded: s.meter.overloaded.load(Ordering::Relaxed),
            failovers: s.meter.failovers.load(Ordering::Relaxed),
            connections: s.connections.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // Closing the job channels ends each worker after its current job.
        self.jobs.clear();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// One slot's thread: runs its jobs one at a time, each until answered.
fn worker(
    client: Client,
    shared: Arc<Shared>,
    jobs: Receiver<Job>,
    index: usize,
    home: usize,
    patience: Duration,
) {
    let mut p = Proposer::new(home);
    while let Ok(job) = jobs.recv() {
        let opened = p.conn.opened;
        let result =
            retry::propose(&client, &mut p, &job.body, patience, &shared.meter).map_err(|g| {
                let (client, request) = (job.session, job.request);
                match g.error {
                    ClientError::Http { body, .. } if g.overloaded => PipelineError::Overloaded {
                        client,
                        request,
                        attempts: g.attempts,
                        last: body,
                        maybe_applied: g.maybe_applied,
                    },
                    error => PipelineError::Failed {
                        client,
                        request,
                        error,
                        maybe_applied: g.maybe_applied,
                    },
                }
            });
        shared
            .connections
            .fetch_add(p.conn.opened - opened, Ordering::Relaxed);
        // Answered: not outstanding any more (counted before the caller can
        // see the answer), and only then free, so a submit that takes the
        // slot counts itself after this decrement.
        shared.completed.fetch_add(1, Ordering::SeqCst);
        shared.outstanding.fetch_sub(1, Ordering::SeqCst);
        // The caller may have dropped the ticket; that is fine.
        let _ = job.reply.send(result);
        shared.free().push(Slot {
            worker: index,
            session: job.session,
            next: job.request + 1,
        });
        shared.freed.notify_all();
    }
}

/// `w` distinct random session ids in `2^62..2^63`.
fn random_sessions(w: usize) -> Vec<u64> {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let state = RandomState::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut out: Vec<u64> = Vec::with_capacity(w);
    let mut i = 0u64;
    while out.len() < w {
        let mut h = state.build_hasher();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u64(i);
        i += 1;
        let id = (h.finish() >> 2) | (1 << 62);
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

impl Client {
    /// A pipeline of `window` slots with random session ids; see
    /// [`crate::pipeline`]. `window` must be in `1..=MAX_WINDOW`.
    pub fn pipeline(&self, window: usize) -> Result<Pipeline, PipelineError> {
        Pipeline::start(self, PipelineOptions::new(window))
    }

    /// A pipeline built from `opts`.
    pub fn pipeline_with(&self, opts: PipelineOptions) -> Result<Pipeline, PipelineError> {
        Pipeline::start(self, opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::OVERLOAD_RETRIES_MAX;
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Instant;

    /// What the fake replica does with one request.
    #[derive(Clone, Copy, Debug)]
    enum Act {
        /// Answers 200 after the delay.
        Ok(Duration),
        /// 429 `overloaded` with `retry_after_ms`.
        Overloaded(u64),
        /// 400 `invalid_argument`.
        Invalid,
        /// Reads the request, then closes without answering.
        Close,
        /// Answers 200, then closes the connection (without saying so).
        OkThenClose,
        /// Never answers (until the client gives up).
        Hang,
    }

    /// A fake replica that speaks HTTP/1.1 keep-alive, records every
    /// request's (client, request), and measures on its own how many
    /// requests it holds at once.
    struct Fake {
        addr: String,
        seen: Arc<Mutex<Vec<(u64, u64)>>>,
        peak: Arc<AtomicUsize>,
        conns: Arc<AtomicUsize>,
    }

    type Behave = dyn Fn(u64, u64, usize) -> Act + Send + Sync;

    /// `behave(client, request, attempt)` (attempt counts from 1 per key,
    /// at this replica) decides each answer.
    fn fake(behave: impl Fn(u64, u64, usize) -> Act + Send + Sync + 'static) -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let peak = Arc::new(AtomicUsize::new(0));
        let conns = Arc::new(AtomicUsize::new(0));
        let holding = Arc::new(AtomicUsize::new(0));
        let behave: Arc<Behave> = Arc::new(behave);
        let (seen2, peak2, conns2) = (seen.clone(), peak.clone(), conns.clone());
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { return };
                conns2.fetch_add(1, Ordering::SeqCst);
                let (seen, peak, holding, behave) = (
                    seen2.clone(),
                    peak2.clone(),
                    holding.clone(),
                    behave.clone(),
                );
                thread::spawn(move || serve(s, &seen, &peak, &holding, &*behave));
            }
        });
        Fake {
            addr,
            seen,
            peak,
            conns,
        }
    }

    fn serve(
        s: TcpStream,
        seen: &Mutex<Vec<(u64, u64)>>,
        peak: &AtomicUsize,
        holding: &AtomicUsize,
        behave: &Behave,
    ) {
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        loop {
            let mut len = 0;
            let mut first = true;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return; // the client closed the connection
                }
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                first = false;
            }
            assert!(!first);
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let req: ProposeRequest = serde_json::from_slice(&body).unwrap();
            let key = (req.client.unwrap(), req.request.unwrap());
            let attempt = {
                let mut seen = seen.lock().unwrap();
                seen.push(key);
                seen.iter().filter(|k| **k == key).count()
            };
            let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let act = behave(key.0, key.1, attempt);
            let answer = |status: &str, body: String| {
                format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
            };
            let ok = || {
                answer(
                    "200 OK",
                    format!(
                        r#"{{"instance":"0.1@0","client":{},"request":{},"outcome":{{"Applied":{{"results":[]}}}}}}"#,
                        key.0, key.1
                    ),
                )
            };
            let out = match act {
                Act::Ok(d) => {
                    thread::sleep(d);
                    Some(ok())
                }
                Act::OkThenClose => Some(ok()),
                Act::Overloaded(ms) => Some(answer(
                    "429 Too Many Requests",
                    format!(
                        r#"{{"code":"overloaded","message":"busy","retryable":true,"retry_after_ms":{ms}}}"#
                    ),
                )),
                Act::Invalid => Some(answer(
                    "400 Bad Request",
                    r#"{"code":"invalid_argument","message":"ops: bad","retryable":false}"#.into(),
                )),
                Act::Close => None,
                Act::Hang => {
                    thread::sleep(Duration::from_secs(5));
                    None
                }
            };
            holding.fetch_sub(1, Ordering::SeqCst);
            match out {
                Some(text) => {
                    if w.write_all(text.as_bytes()).is_err() {
                        return;
                    }
                    if matches!(act, Act::OkThenClose) {
                        return;
                    }
                }
                None => return,
            }
        }
    }

    fn dead() -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    fn op() -> Vec<Op> {
        vec![Op::put("k", b"v".to_vec())]
    }

    #[test]
    fn window_and_arguments_are_validated() {
        let c = Client::new([dead()]).unwrap();
        for w in [0, MAX_WINDOW + 1] {
            match c.pipeline(w) {
                Err(PipelineError::InvalidWindow { requested, max }) => {
                    assert_eq!((requested, max), (w, MAX_WINDOW));
                }
                other => panic!("window {w}: {other:?}"),
            }
        }
        for first in [0, u64::MAX - 1, 1 << 63] {
            let r = c.pipeline_with(PipelineOptions::new(2).first_session(first));
            assert!(
                matches!(r, Err(PipelineError::InvalidArgument(ref s)) if s.starts_with("first_session")),
                "{r:?}"
            );
        }
        let p = c
            .pipeline_with(PipelineOptions::new(2).first_session(7))
            .unwrap();
        assert_eq!(p.sessions(), &[7, 8]);
        let mut req = ProposeRequest {
            client: Some(1),
            request: None,
            ops: op(),
            guards: Vec::new(),
            issued_at_ms: None,
            timeout_ms: None,
        };
        assert!(matches!(
            p.submit_request(req.clone()),
            Err(PipelineError::InvalidArgument(_))
        ));
        req.client = None;
        req.request = Some(1);
        assert!(matches!(
            p.submit_request(req),
            Err(PipelineError::InvalidArgument(_))
        ));
        assert_eq!(p.stats().submitted, 0);
        // Random session ids are distinct and stay out of the server's
        // one-off range.
        let p = c.pipeline(64).unwrap();
        let mut ids = p.sessions().to_vec();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 64);
        assert!(ids.iter().all(|id| (1 << 62..1 << 63).contains(id)));
    }

    /// The fake replica itself counts the requests it holds: never more
    /// than W, and W is reached (the window is used, not serialized).
    #[test]
    fn never_more_than_the_window_in_flight() {
        const W: usize = 4;
        let f = fake(|_, _, _| Act::Ok(Duration::from_millis(15)));
        let c = Client::new([f.addr.clone()]).unwrap();
        let p = c.pipeline(W).unwrap();
        let tickets: Vec<Ticket> = (0..40).map(|_| p.submit(op(), vec![]).unwrap()).collect();
        let mut keys = Vec::new();
        for t in tickets {
            let key = (t.client(), t.request());
            let r = t.wait().unwrap();
            assert_eq!((r.client, r.request), key);
            keys.push(key);
        }
        let server_peak = f.peak.load(Ordering::SeqCst);
        assert_eq!(server_peak, W, "requests the replica held at once");
        let st = p.stats();
        assert_eq!(st.peak_outstanding, W);
        assert!(st.peak_on_wire <= W);
        assert_eq!((st.submitted, st.completed, st.outstanding), (40, 40, 0));
        assert_eq!(st.attempts, 40);
        // Keep-alive: one connection per slot.
        assert_eq!(f.conns.load(Ordering::SeqCst), W);
        assert_eq!(st.connections, W as u64);
        // Every decision got its own key, and each slot's session numbers
        // its requests 1, 2, … without gaps.
        let mut per_session: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for (c, r) in &keys {
            per_session.entry(*c).or_default().push(*r);
        }
        assert_eq!(per_session.len(), W);
        for rs in per_session.values_mut() {
            rs.sort_unstable();
            assert_eq!(*rs, (1..=rs.len() as u64).collect::<Vec<_>>());
        }
        let mut seen = f.seen.lock().unwrap().clone();
        seen.sort_unstable();
        keys.sort_unstable();
        assert_eq!(seen, keys, "each decision sent once");
    }

    #[test]
    fn submit_blocks_while_the_window_is_full() {
        let (open_tx, open_rx) = mpsc::channel::<()>();
        let open_rx = Mutex::new(open_rx);
        let f = fake(move |_, _, _| {
            open_rx.lock().unwrap().recv().unwrap();
            Act::Ok(Duration::ZERO)
        });
        let c = Client::new([f.addr.clone()]).unwrap();
        let p = Arc::new(c.pipeline(2).unwrap());
        let a = p.submit(op(), vec![]).unwrap();
        let b = p.submit(op(), vec![]).unwrap();
        let (done_tx, done_rx) = mpsc::channel();
        let p2 = p.clone();
        let third = thread::spawn(move || {
            let t = p2.submit(op(), vec![]).unwrap();
            done_tx.send(()).unwrap();
            t
        });
        assert!(
            done_rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "a third submit returned while two were outstanding"
        );
        assert_eq!(p.stats().outstanding, 2);
        open_tx.send(()).unwrap();
        done_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the third submit took the freed slot");
        open_tx.send(()).unwrap();
        open_tx.send(()).unwrap();
        let c = third.join().unwrap();
        for t in [a, b, c] {
            t.wait().unwrap();
        }
        p.drain();
        assert_eq!(p.stats().peak_outstanding, 2);
    }

    /// 429: retried with the same key after (at least) the hinted delay.
    #[test]
    fn overload_is_retried_after_the_hint_with_the_same_key() {
        let f = fake(|_, _, attempt| {
            if attempt < 3 {
                Act::Overloaded(150)
            } else {
                Act::Ok(Duration::ZERO)
            }
        });
        let c = Client::new([f.addr.clone()]).unwrap();
        let p = c.pipeline(1).unwrap();
        let t0 = Instant::now();
        let t = p.submit(op(), vec![]).unwrap();
        let key = (t.client(), t.request());
        let r = t.wait().unwrap();
        assert_eq!((r.client, r.request), key);
        assert!(
            t0.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(*f.seen.lock().unwrap(), vec![key; 3]);
        let st = p.stats();
        assert_eq!((st.attempts, st.overloaded), (3, 2));
    }

    /// A cluster that never stops answering 429: a typed, retryable error
    /// after OVERLOAD_RETRIES_MAX waits, not a hang; nothing was applied.
    #[test]
    fn endless_overload_ends_in_a_typed_retryable_error() {
        let (a, b) = (
            fake(|_, _, _| Act::Overloaded(10)),
            fake(|_, _, _| Act::Overloaded(10)),
        );
        let c = Client::new([a.addr.clone(), b.addr.clone()]).unwrap();
        let p = c.pipeline(1).unwrap();
        let t0 = Instant::now();
        let e = p.submit(op(), vec![]).unwrap().wait().unwrap_err();
        let rounds = OVERLOAD_RETRIES_MAX + 1;
        match &e {
            PipelineError::Overloaded {
                attempts,
                last,
                maybe_applied,
                ..
            } => {
                assert_eq!(*attempts, 2 * rounds, "two replicas per round");
                assert_eq!(last.code, "overloaded");
                assert!(!maybe_applied);
            }
            other => panic!("{other:?}"),
        }
        assert!(e.is_retryable() && !e.maybe_applied());
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        let n = |f: &Fake| f.seen.lock().unwrap().len() as u32;
        assert_eq!((n(&a), n(&b)), (rounds, rounds));
        // The slot is free again.
        p.drain();
        assert_eq!(p.stats().outstanding, 0);
    }

    /// A replica that drops the connection after reading the request (it
    /// may have proposed it) or never answers: the same key goes to the
    /// next replica.
    #[test]
    fn ambiguous_failures_fail_over_with_the_same_key() {
        for bad in [Act::Close, Act::Hang] {
            let a = fake(move |_, _, _| bad);
            let b = fake(|_, _, _| Act::Ok(Duration::ZERO));
            let c = Client::new([a.addr.clone(), b.addr.clone()])
                .unwrap()
                .with_read_timeout(Duration::from_millis(200));
            let p = c.pipeline(1).unwrap();
            let t = p.submit(op(), vec![]).unwrap();
            let key = (t.client(), t.request());
            t.wait().unwrap();
            assert_eq!(*a.seen.lock().unwrap(), vec![key], "{bad:?}");
            assert_eq!(*b.seen.lock().unwrap(), vec![key], "{bad:?}");
            // The slot stays on the replica that answered.
            let t = p.submit(op(), vec![]).unwrap();
            let key2 = (t.client(), t.request());
            t.wait().unwrap();
            assert_eq!(a.seen.lock().unwrap().len(), 1);
            assert_eq!(b.seen.lock().unwrap()[1], key2);
            assert_eq!(p.stats().failovers, 1);
        }
    }

    #[test]
    fn errors_that_prove_nothing_was_proposed_are_not_ambiguous() {
        // A 400 is returned at once.
        let f = fake(|_, _, _| Act::Invalid);
        let p = Client::new([f.addr.clone()]).unwrap().pipeline(1).unwrap();
        match p.submit(op(), vec![]).unwrap().wait() {
            Err(PipelineError::Failed {
                error: ClientError::Http { status: 400, .. },
                maybe_applied: false,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(f.seen.lock().unwrap().len(), 1);
        // Nothing listening: retried until the patience runs out.
        let c = Client::new([dead(), dead()]).unwrap();
        let p = c
            .pipeline_with(PipelineOptions::new(1).patience(Duration::from_millis(300)))
            .unwrap();
        let t0 = Instant::now();
        let e = p.submit(op(), vec![]).unwrap().wait().unwrap_err();
        assert!(
            matches!(
                e,
                PipelineError::Failed {
                    error: ClientError::Connect { .. },
                    maybe_applied: false,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.is_retryable());
        assert!(t0.elapsed() < Duration::from_secs(3));
    }

    /// The replica closes each connection after answering, without saying
    /// so: the next request finds the connection closed and is sent once
    /// more on a new one; the replica sees each key once.
    #[test]
    fn a_kept_connection_closed_by_the_server_is_reopened() {
        let f = fake(|_, _, _| Act::OkThenClose);
        let c = Client::new([f.addr.clone()]).unwrap();
        let p = c.pipeline(1).unwrap();
        for i in 1..=5 {
            let t = p.submit(op(), vec![]).unwrap();
            assert_eq!(t.wait().unwrap().request, i);
        }
        let seen = f.seen.lock().unwrap().clone();
        assert_eq!(
            seen.iter().map(|k| k.1).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(f.conns.load(Ordering::SeqCst), 5);
        assert_eq!(p.stats().failovers, 0);
    }

    /// The replica reads a request on a kept connection and hangs up (as a
    /// killed one would); the re-send is refused with 429 until the
    /// patience ends. The first attempt may have been proposed, so the
    /// error must not claim that nothing was applied.
    #[test]
    fn a_request_lost_on_a_kept_connection_stays_ambiguous() {
        let f = fake(|_, request, attempt| match (request, attempt) {
            (1, _) => Act::Ok(Duration::ZERO),
            (2, 1) => Act::Close,
            _ => Act::Overloaded(10),
        });
        let c = Client::new([f.addr.clone()]).unwrap();
        let p = c
            .pipeline_with(PipelineOptions::new(1).patience(Duration::from_millis(100)))
            .unwrap();
        p.submit(op(), vec![]).unwrap().wait().unwrap();
        let e = p.submit(op(), vec![]).unwrap().wait().unwrap_err();
        assert!(
            matches!(
                e,
                PipelineError::Overloaded {
                    request: 2,
                    maybe_applied: true,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.maybe_applied());
    }

    #[test]
    fn drain_and_drop_answer_every_ticket() {
        let f = fake(|_, _, _| Act::Ok(Duration::from_millis(10)));
        let c = Client::new([f.addr.clone()]).unwrap();
        let p = c.pipeline(3).unwrap();
        let first: Vec<Ticket> = (0..10).map(|_| p.submit(op(), vec![]).unwrap()).collect();
        p.drain();
        let st = p.stats();
        assert_eq!((st.completed, st.outstanding), (10, 0));
        let late: Vec<Ticket> = (0..3).map(|_| p.submit(op(), vec![]).unwrap()).collect();
        drop(p);
        for t in first.into_iter().chain(late) {
            assert!(t.wait().unwrap().outcome.is_applied());
        }
        assert_eq!(f.seen.lock().unwrap().len(), 13);
    }
}
