//! [`Session`]: exactly-once proposals without bookkeeping.
//!
//! A session numbers its requests and retries each one, with the same
//! `(client, request)` pair, until a replica answers it: after a timeout, a
//! broken connection, an unreachable replica or a retryable error. The
//! state machine applies a given pair at most once and answers a retry with
//! the recorded outcome, so a retry can never apply a decision twice.

use crate::client::{Client, ClientError};
use crate::wire::{ProposeRequest, ProposeResponse};
use std::time::{Duration, Instant};
use synod_decision::{Guard, Op};

/// How long [`Session::propose`] keeps retrying one request by default.
pub const PATIENCE_DEFAULT: Duration = Duration::from_secs(60);

/// First wait between retries; doubles up to [`RETRY_BACKOFF_MAX`] (a 429's
/// `retry_after_ms` overrides it).
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(20);

/// Longest wait between retries.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A client session: one request outstanding at a time, numbered 1, 2, …
pub struct Session<'a> {
    client: &'a Client,
    id: u64,
    next: u64,
    patience: Duration,
}

impl<'a> Session<'a> {
    pub(crate) fn new(client: &'a Client, id: u64) -> Self {
        Session {
            client,
            id,
            next: 1,
            patience: PATIENCE_DEFAULT,
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
    /// applied (the error says so), and the next call uses a new number.
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
        let deadline = Instant::now() + self.patience;
        let mut backoff = RETRY_BACKOFF_MIN;
        loop {
            let err = match self.client.propose(&req) {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            let (retry, hint) = retry_hint(&err);
            if !retry || Instant::now() + backoff > deadline {
                return Err(err);
            }
            std::thread::sleep(hint.unwrap_or(backoff));
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
    }
}

/// Whether a session may retry after `e`, and the server's wait hint.
fn retry_hint(e: &ClientError) -> (bool, Option<Duration>) {
    match e {
        ClientError::Connect { .. } | ClientError::Io { .. } | ClientError::Timeout { .. } => {
            (true, None)
        }
        ClientError::AllEndpointsFailed { last } => (true, retry_hint(last).1),
        ClientError::Http { body, .. } => (
            body.retryable,
            body.retry_after_ms.map(Duration::from_millis),
        ),
        ClientError::InvalidEndpoint(_) | ClientError::Decode(_) => (false, None),
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
