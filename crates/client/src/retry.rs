//! The retry loop shared by [`crate::Session`] and [`crate::Pipeline`]: one
//! proposal with a session (`client`, `request`), sent again with the same
//! pair until a replica answers it, moving to the next endpoint after every
//! retryable error and waiting once per round of all endpoints.
//!
//! Safety rests on the state machine: a `(client, request)` pair is applied
//! at most once, and a retry is answered with the recorded outcome. The
//! callers keep at most one request of a session outstanding at a time, so
//! the per-client watermark never sees a lower number after a higher one
//! and never turns a retry into a `StaleRequest`.

use crate::client::{Client, ClientError, KeepAlive};
use crate::session::{OVERLOAD_RETRIES_MAX, RETRY_AFTER_MAX, RETRY_BACKOFF_MAX, RETRY_BACKOFF_MIN};
use crate::wire::ProposeResponse;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One thread's proposing state: where it sends next, and its connection.
#[derive(Debug)]
pub(crate) struct Proposer {
    /// Endpoint index tried first: the last one that answered.
    pub(crate) home: usize,
    pub(crate) conn: KeepAlive,
}

impl Proposer {
    pub(crate) fn new(home: usize) -> Proposer {
        Proposer {
            home,
            conn: KeepAlive::default(),
        }
    }
}

/// Counters a retry loop updates (shared by a pipeline's workers).
#[derive(Debug, Default)]
pub(crate) struct Meter {
    /// HTTP requests written and not yet answered (or failed).
    pub(crate) on_wire: AtomicUsize,
    /// The most `on_wire` has been.
    pub(crate) peak_on_wire: AtomicUsize,
    /// HTTP requests sent (first attempts and retries).
    pub(crate) attempts: AtomicU64,
    /// 429 `overloaded` answers received.
    pub(crate) overloaded: AtomicU64,
    /// Moves to another endpoint after an error.
    pub(crate) failovers: AtomicU64,
}

/// Why the loop stopped without an answer.
#[derive(Debug)]
pub(crate) struct GaveUp {
    /// The last error.
    pub(crate) error: ClientError,
    /// Stopped because every endpoint kept answering 429 for more than
    /// [`OVERLOAD_RETRIES_MAX`] rounds (or until the patience ran out).
    pub(crate) overloaded: bool,
    /// Requests sent.
    pub(crate) attempts: u32,
    /// Some attempt may have reached the protocol
    /// ([`ClientError::maybe_proposed`]): the decision may still be applied
    /// (once at most).
    pub(crate) maybe_applied: bool,
}

/// Sends `body` (an encoded `ProposeRequest` with `client` and `request`
/// set) until answered, for at most `patience` plus one attempt's timeouts.
///
/// After a retryable error the next attempt goes to the next endpoint at
/// once; when every endpoint has failed in a row the loop waits: the
/// server's `retry_after` hint if it gave one (capped by
/// [`RETRY_AFTER_MAX`]), but at least the current exponential backoff
/// ([`RETRY_BACKOFF_MIN`] doubling to [`RETRY_BACKOFF_MAX`]). A round in
/// which every endpoint answered 429 counts towards
/// [`OVERLOAD_RETRIES_MAX`]. A non-retryable error stops at once.
pub(crate) fn propose(
    client: &Client,
    p: &mut Proposer,
    body: &[u8],
    patience: Duration,
    meter: &Meter,
) -> Result<ProposeResponse, GaveUp> {
    let n = client.endpoint_count();
    let deadline = Instant::now() + patience;
    let mut backoff = RETRY_BACKOFF_MIN;
    let mut attempts = 0u32;
    let mut maybe_applied = false;
    let mut overload_rounds = 0u32;
    let mut round = Round::default();
    loop {
        let idx = p.home % n;
        attempts += 1;
        meter.attempts.fetch_add(1, Ordering::Relaxed);
        let now = meter.on_wire.fetch_add(1, Ordering::SeqCst) + 1;
        meter.peak_on_wire.fetch_max(now, Ordering::SeqCst);
        p.conn.lost = false;
        let r = client.propose_once(&mut p.conn, idx, body);
        meter.on_wire.fetch_sub(1, Ordering::SeqCst);
        let error = match r {
            Ok(resp) => {
                client.set_preferred(idx);
                return Ok(resp);
            }
            Err(e) => e,
        };
        maybe_applied |= error.maybe_proposed() || std::mem::take(&mut p.conn.lost);
        let overloaded = error.is_overloaded();
        if overloaded {
            meter.overloaded.fetch_add(1, Ordering::Relaxed);
        }
        let give_up = |error, overloaded| GaveUp {
            error,
            overloaded,
            attempts,
            maybe_applied,
        };
        if !error.is_retryable() {
            return Err(give_up(error, false));
        }
        round.errors += 1;
        round.all_overloaded &= overloaded;
        round.hint = round.hint.max(error.retry_after());
        if n > 1 {
            p.home = (idx + 1) % n;
            meter.failovers.fetch_add(1, Ordering::Relaxed);
        }
        if round.errors < n {
            continue;
        }
        // Every endpoint failed in a row: wait before the next round.
        if round.all_overloaded {
            overload_rounds += 1;
            if overload_rounds > OVERLOAD_RETRIES_MAX {
                return Err(give_up(error, true));
            }
        }
        let wait = round
            .hint
            .map_or(backoff, |h| h.min(RETRY_AFTER_MAX).max(backoff));
        if Instant::now() + wait > deadline {
            let overloaded = round.all_overloaded;
            return Err(give_up(error, overloaded));
        }
        std::thread::sleep(wait);
        backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        round = Round::default();
    }
}

/// The errors since the last wait.
struct Round {
    errors: usize,
    all_overloaded: bool,
    hint: Option<Duration>,
}

impl Default for Round {
    fn default() -> Round {
        Round {
            errors: 0,
            all_overloaded: true,
            hint: None,
        }
    }
}
