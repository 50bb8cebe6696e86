//! The committed stream: `GET /v1/stream?from=TOKEN` (Server-Sent Events,
//! [`sse`]) and gRPC `Subscribe` ([`crate::grpc`]), both from [`open`]
//! through [`crate::api::Api::subscribe`].
//!
//! Every replica executes conflicting instances in the same order, so the
//! set of instances a subscriber has seen is, key by key, a prefix of every
//! replica's order. The resume token is that set
//! ([`synod_client::frontier::Frontier`]); a replica resumes a subscriber by
//! streaming its own execution log minus the token. No gaps and no
//! duplicates, also when the subscriber moves to another replica, provided
//! the replica still has the history the token lacks: its log starts after
//! its snapshot, so a token that misses an instance applied before that is
//! refused (410 Gone, gRPC `FAILED_PRECONDITION`) instead of silently
//! skipping it.
//!
//! The stream pages through the loop's log (`Query::Log`) and polls every
//! [`STREAM_POLL`] when it has caught up; a restart of the replica ends the
//! stream (its log starts over) and the subscriber resumes with its token.

use crate::metrics::{Metrics, SubscriberLag};
use crate::node::{Handle, Query};
use axum::response::sse::{Event, KeepAlive, Sse};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use synod_client::frontier::Frontier;
use synod_client::wire::{LogEntry, LogResponse, StreamEvent};
use tokio::sync::oneshot;

/// How often a caught-up subscriber asks the loop for new entries.
pub const STREAM_POLL: Duration = Duration::from_millis(20);

/// Log entries fetched from the loop per request.
pub const STREAM_PAGE: usize = 1000;

/// Why a stream cannot start.
#[derive(Debug)]
pub enum StreamError {
    /// The token does not parse.
    BadToken(String),
    /// The token lacks instances this replica no longer has in its log.
    Gone(String),
    /// The loop is gone or busy.
    Unavailable(String),
}

async fn page(handle: &Handle, from: u64) -> Result<LogResponse, StreamError> {
    let (tx, rx) = oneshot::channel();
    handle
        .queries
        .send(Query::Log {
            from,
            limit: STREAM_PAGE,
            reply: tx,
        })
        .await
        .map_err(|_| StreamError::Unavailable("the replica is stopping".into()))?;
    rx.await
        .map_err(|_| StreamError::Unavailable("the replica is stopping".into()))
}

struct State {
    handle: Handle,
    token: Frontier,
    boot_id: u64,
    next: u64,
    buffer: VecDeque<LogEntry>,
    /// The log's head at the last page.
    head: u64,
    /// `synod_subscriber_lag{subscriber}`; removed when the stream ends.
    lag: SubscriberLag,
}

impl State {
    /// Entries executed here that this subscriber has not been sent yet
    /// (as of the last page).
    fn update_lag(&self) {
        let delivered = self.next - self.buffer.len() as u64;
        self.lag.set(self.head.saturating_sub(delivered));
    }
}

/// Opens the stream for `from` (a token, empty for "from the beginning").
///
/// Yields every instance this replica executes that the token lacks, in
/// execution order, each with the token after it. When the replica
/// restarts (its log starts over) or its loop is gone, the stream yields
/// one `Err` saying why, then ends: the subscriber resumes with its last
/// token.
pub async fn open(
    handle: Handle,
    metrics: &Metrics,
    from: &str,
) -> Result<
    impl futures_util::Stream<Item = Result<StreamEvent, String>> + Send + 'static,
    StreamError,
> {
    let token = Frontier::decode(from).map_err(|e| StreamError::BadToken(e.to_string()))?;
    let first = page(&handle, 0).await?;
    let base = Frontier::decode(&first.base)
        .map_err(|e| StreamError::Unavailable(format!("replica's base token: {e}")))?;
    if !token.contains_all(&base) {
        return Err(StreamError::Gone(format!(
            "the token lacks {} instance(s) this replica applied before its retained history; resume from a replica that has them, or start over",
            base.len().saturating_sub(token.len()).max(1)
        )));
    }
    let state = State {
        handle,
        token,
        boot_id: first.boot_id,
        next: first.next,
        buffer: first.entries.into(),
        head: first.head,
        lag: metrics.subscriber(),
    };
    state.update_lag();
    // `None` once the ending `Err` has been yielded.
    Ok(futures_util::stream::unfold(Some(state), |st| async move {
        let mut st = st?;
        loop {
            while let Some(e) = st.buffer.pop_front() {
                if !st.token.insert(e.instance) {
                    continue;
                }
                let ev = StreamEvent {
                    instance: e.instance,
                    commands: e.commands,
                    token: st.token.encode(),
                };
                st.update_lag();
                return Some((Ok(ev), Some(st)));
            }
            let p = match page(&st.handle, st.next).await {
                Ok(p) => p,
                Err(e) => {
                    let why = match e {
                        StreamError::BadToken(m)
                        | StreamError::Gone(m)
                        | StreamError::Unavailable(m) => m,
                    };
                    return Some((Err(format!("{why}; resume with the last token")), None));
                }
            };
            if p.boot_id != st.boot_id {
                // The replica restarted; its log starts over.
                return Some((
                    Err("the replica restarted; resume with the last token".into()),
                    None,
                ));
            }
            st.head = p.head;
            if p.entries.is_empty() {
                st.update_lag();
                tokio::time::sleep(STREAM_POLL).await;
                continue;
            }
            st.next = p.next;
            st.buffer = p.entries.into();
            st.update_lag();
        }
    }))
}

/// The stream as Server-Sent Events (`event: decision`, the JSON
/// [`StreamEvent`] as data). The body ends at the stream's first error.
pub fn sse<E: Send + 'static>(
    events: impl futures_util::Stream<Item = Result<StreamEvent, E>> + Send + 'static,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static> {
    use futures_util::StreamExt;
    let events = events
        .take_while(|r| std::future::ready(r.is_ok()))
        .filter_map(|r| std::future::ready(r.ok()))
        .map(|ev| {
            Ok(Event::default()
                .event("decision")
                .json_data(&ev)
                .unwrap_or_else(|_| Event::default().event("error")))
        });
    Sse::new(events).keep_alive(KeepAlive::default())
}
