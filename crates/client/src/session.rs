//! [`Session`]: exactly-once proposals without bookkeeping.
//!
//! A session numbers its requests and retries each one, with the same
//! `(client, request)` pair, until a replica answers it: after a timeout, a
//! broken connection, an unreachable replica or a retryable error. The
//! state machine applies a given pair at most once and answers a retry with
//! the recorded outcome, so a retry can never apply a decision twice.

use crate::client::{Client, ClientError};
use crate::retry::{self, Meter, Proposer};
use crate::wire::{ProposeRequest, ProposeResponse};
use std::time::Duration;
use synod_decision::{Guard, Op};

/// How long [`Session::propose`] keeps retrying one request by default.
pub const PATIENCE_DEFAULT: Duration = Duration::from_secs(60);

/// First wait between retries; doubles up to [`RETRY_BACKOFF_MAX`] (a 429's
/// `retry_after_ms` overrides it when longer).
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(20);

/// Longest wait between retries.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How many times one request waits out an overload (every endpoint
/// answered 429 `overloaded` in a row) before the session or pipeline gives
/// up with the overload error. Each wait is the server's `retry_after`
/// hint, at least the current backoff: with the replicas' 100 ms hint that
/// is about 4 s of waiting in all, enough for a burst to drain, short enough
/// that an agent facing a saturated cluster hears about it and can shed
/// load instead of queueing forever.
pub const OVERLOAD_RETRIES_MAX: u32 = 8;

/// Longest `retry_after` hint honoured as given; a longer one (a proxy's
/// `Retry-After: 3600`) is cut to this, so a retry loop never sleeps
/// beyond its patience on one answer.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(5);

/// A client session: one request outstanding at a time, numbered 1, 2, …
///
/// It keeps one connection alive to the replica that last answered.
pub struct Session<'a> {
    client: &'a Client,
    id: u64,
    next: u64,
    patience: Duration,
    proposer: Proposer,
    meter: Meter,
}

impl<'a> Session<'a> {
    pub(crate) fn new(client: &'a Client, id: u64) -> Self {
        Session {
            client,
            id,
            next: 1,
            patience: PATIENCE_DEFAULT,
            proposer: Proposer::new(client.preferred()),
            meter: Meter::default(),
        }
    }

    /// Keeps retrying one request for at most `d`.
    #[must_use]
    pub fn with_patience(mut self, d: Duration) -> Self {
        self.patience = d;
        self
    }

    /// Continues a session whose requests up to `last` were already used.
    #[must_use]
    pub fn resume_after(mut self, last: u64) -> Self {
        self.next = last + 1;
        self
    }

    /// The session id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The number the next request will use.
    pub fn next_request(&self) -> u64 {
        self.next
    }

    /// Proposes one decision and waits for its outcome, retrying with the
    /// same request number until answered or out of patience. Either way the
    /// number is used up: after an error the decision may still have been
    /// applied unless [`ClientError::maybe_proposed`] says otherwise, and
    /// the next call uses a new number.
    ///
    /// Retries move to the next replica after every retryable error (a
    /// refused or broken connection, a read timeout, 429 `overloaded`, a
    /// retryable 5xx) and wait between rounds of all replicas (see
    /// [`RETRY_BACKOFF_MIN`], [`RETRY_AFTER_MAX`]). When every replica keeps
    /// answering 429 for more than [`OVERLOAD_RETRIES_MAX`] rounds, the last
    /// 429 is returned ([`ClientError::is_overloaded`]; nothing was
    /// applied unless an earlier attempt was ambiguous).
    pub fn propose(
        &mut self,
        ops: Vec<Op>,
        guards: Vec<Guard>,
    ) -> Result<ProposeResponse, ClientError> {
        let req = ProposeRequest {
            client: Some(self.id),
            request: Some(self.next),
            ops,
            guards,
            issued_at_ms: None,
            timeout_ms: None,
        };
        self.next += 1;
        let body = serde_json::to_vec(&req).map_err(|e| ClientError::Decode(e.to_string()))?;
        retry::propose(
            self.client,
            &mut self.proposer,
            &body,
            self.patience,
            &self.meter,
        )
        .map_err(|g| g.error)
    }
}

impl Client {
    /// A session with id `id` (≥ 1; ids must be unique per agent and never
    /// reused with different decisions).
    pub fn session(&self, id: u64) -> Session<'_> {
        assert!(id >= 1, "session id 0 is reserved for read-only commands");
        Session::new(self, id)
    }
}
