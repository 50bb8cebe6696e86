//! The replica's minimal HTTP/JSON API (`/v1`), enough to propose decisions
//! and observe a replica. The client-API issue grows it (gRPC, the committed
//! stream, linearizable reads); the wire types live in `synod_client::wire`.
//!
//! Every error is an [`ErrorBody`] with a stable code; [`ApiError`] is the
//! one table that maps them to HTTP statuses and says which are retryable.
//!
//! Health and metrics:
//!
//! - `GET /livez`: 200 while the process serves HTTP. Asks nothing of the
//!   replica loop or the cluster, so a restart is never triggered by a lost
//!   quorum.
//! - `GET /readyz`: 200 `ready` when the replica loop answers within
//!   [`QUERY_TIMEOUT`] and (in this order) it has processed every committed
//!   instance recovered from disk that it could not execute at start (a
//!   restarted replica whose dependencies are still missing is "not ready:
//!   re-executing after a restart"); it heard within
//!   [`PEER_SILENCE_READY`](crate::node::PEER_SILENCE_READY) from a slow
//!   quorum, itself included; its WAL is not behind
//!   ([`MAX_UNSYNCED_RECORDS`](crate::node::MAX_UNSYNCED_RECORDS)); fewer than
//!   `limits.max_waiting_proposals` proposals wait. Otherwise 503 `not ready:
//!   <the first condition that fails>`, or the [`ApiError`] of a loop that
//!   does not answer (429 if its query queue is full, 503 if it is gone).
//! - `GET /metrics`: the node's registry ([`crate::metrics`]) in the
//!   OpenMetrics text format. Encoded by the handler from atomics shared with
//!   the loop: it neither waits for nor delays the loop.

use crate::metrics::{Metrics, Rejection, CONTENT_TYPE};
use crate::node::{Handle, Proposal, ProposeError, Query};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query as UrlQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use synod_client::wire::{ErrorBody, ProposeRequest, ProposeResponse, ReadResponse};
use synod_decision::Decision;
use tokio::sync::oneshot;

/// Most log entries one `GET /v1/log` returns.
pub const MAX_LOG_PAGE: usize = 10_000;

/// Suggested wait before retrying an overloaded request.
pub const OVERLOAD_RETRY_AFTER_MS: u64 = 100;

/// How long a query (status, read, log) may wait for the replica loop.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Shared state of the handlers.
#[derive(Clone)]
pub struct Api {
    handle: Handle,
    default_timeout_ms: u64,
    one_off: Arc<AtomicU64>,
    /// Numbers the linearizable reads of this process (their `request`).
    reads: Arc<AtomicU64>,
    metrics: Metrics,
}

/// Every way a request can fail, and how it is presented.
#[derive(Debug)]
pub enum ApiError {
    /// Malformed or out-of-range input; names the field.
    InvalidArgument(String),
    /// A limit is reached; retry after the hint.
    Overloaded(String),
    /// The replica cannot serve now (stopping, loop gone); retry elsewhere.
    Unavailable(String),
    /// No result within the deadline. The decision may still execute; a
    /// retry with the same session returns its recorded result.
    Timeout(u64),
    /// The decision's instance was replaced by a Nop repeatedly.
    Aborted,
    /// A stream token asks for history this replica no longer has.
    Gone(String),
}

impl ApiError {
    /// The table: (HTTP status, code, retryable).
    pub fn classify(&self) -> (StatusCode, &'static str, bool) {
        match self {
            ApiError::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument", false),
            ApiError::Overloaded(_) => (StatusCode::TOO_MANY_REQUESTS, "overloaded", true),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", true),
            ApiError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout", true),
            ApiError::Aborted => (StatusCode::SERVICE_UNAVAILABLE, "aborted", true),
            ApiError::Gone(_) => (StatusCode::GONE, "gone", false),
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::InvalidArgument(m)
            | ApiError::Overloaded(m)
            | ApiError::Unavailable(m)
            | ApiError::Gone(m) => {
                m.clone()
            }
            ApiError::Timeout(ms) => format!(
                "no result within {ms} ms; the decision may still execute: retry with the same client and request to get its result"
            ),
            ApiError::Aborted => {
                "the decision's instance was replaced by a no-op during recovery; retry with the same client and request".into()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, retryable) = self.classify();
        let retry_after_ms =
            matches!(self, ApiError::Overloaded(_)).then_some(OVERLOAD_RETRY_AFTER_MS);
        let body = ErrorBody {
            code: code.into(),
            message: self.message(),
            retryable,
            retry_after_ms,
        };
        let mut resp = (status, Json(body)).into_response();
        if retry_after_ms.is_some() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// Environment variable that enables `POST /v1/debug/failpoint/{name}`, which
/// arms a storage failpoint (simulated power loss at the next hit) in a
/// running replica. For crash tests only; without it the route is absent.
pub const FAILPOINT_HTTP_ENV: &str = "SYNOD_FAILPOINT_HTTP";

/// The router of one replica.
pub fn router(
    handle: Handle,
    metrics: Metrics,
    default_timeout_ms: u64,
    max_request_bytes: usize,
) -> Router {
    let api = Api {
        handle,
        default_timeout_ms,
        one_off: Arc::new(AtomicU64::new(0)),
        reads: Arc::new(AtomicU64::new(0)),
        metrics,
    };
    let mut r = Router::new();
    if std::env::var(FAILPOINT_HTTP_ENV).is_ok_and(|v| v == "1") {
        tracing::warn!("{FAILPOINT_HTTP_ENV}=1: the failpoint endpoint is enabled (tests only)");
        r = r.route("/v1/debug/failpoint/{name}", post(arm_failpoint));
    }
    r.route("/v1/decisions", post(propose))
        .route("/v1/status", get(status))
        .route("/v1/log", get(log))
        .route("/v1/stream", get(stream))
        .route("/v1/keys/{key}", get(read))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape))
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(api)
}

/// `POST /v1/decisions`. Counts in `synod_proposals_rejected_total` what
/// the loop never sees or never answers: invalid input, a full proposal
/// queue, a loop already gone, and timeouts. The loop counts its own
/// answers (overloaded, aborted, shutting down).
async fn propose(
    State(api): State<Api>,
    body: Result<Json<ProposeRequest>, JsonRejection>,
) -> Result<Json<ProposeResponse>, ApiError> {
    let r = propose_inner(&api, body).await;
    if let Err(e) = &r {
        match e {
            ApiError::InvalidArgument(_) => api.metrics.rejected(Rejection::Invalid),
            ApiError::Timeout(_) => api.metrics.rejected(Rejection::Timeout),
            // The loop counted its own overloaded, aborted and shutting-down
            // answers; these are the ones it never gave.
            ApiError::Overloaded(_)
            | ApiError::Unavailable(_)
            | ApiError::Aborted
            | ApiError::Gone(_) => {}
        }
    }
    r
}

async fn propose_inner(
    api: &Api,
    body: Result<Json<ProposeRequest>, JsonRejection>,
) -> Result<Json<ProposeResponse>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::InvalidArgument(e.body_text()))?;
    let (client, request) = match (req.client, req.request) {
        (Some(c), Some(r)) if r >= 1 => (c, r),
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidArgument(
                "request: must be at least 1".into(),
            ))
        }
        (Some(_), None) => {
            return Err(ApiError::InvalidArgument(
                "request: required when client is set".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(ApiError::InvalidArgument(
                "client: required when request is set".into(),
            ))
        }
        (None, None) => {
            // A one-off session: unique per replica incarnation.
            let n = api.one_off.fetch_add(1, Ordering::Relaxed);
            let c = (api.handle.boot_id.rotate_left(20) ^ (u64::from(api.handle.node) << 48))
                .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                | (1 << 63);
            (c, 1)
        }
    };
    let issued_at_ms = req.issued_at_ms.unwrap_or_else(now_ms);
    let decision = Decision {
        ops: req.ops,
        guards: req.guards,
        issued_at_ms,
    };
    decision
        .validate()
        .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    let timeout_ms = req
        .timeout_ms
        .unwrap_or(api.default_timeout_ms)
        .clamp(1, api.default_timeout_ms);
    let cmd = synod_decision::command(client, request, &decision);
    let (id, outcome) = submit(api, cmd, timeout_ms).await?;
    Ok(Json(ProposeResponse {
        instance: id.to_string(),
        client,
        request,
        outcome,
    }))
}

/// Hands `cmd` to the loop and waits up to `timeout_ms` for its outcome.
async fn submit(
    api: &Api,
    cmd: synod_types::Command,
    timeout_ms: u64,
) -> Result<(synod_types::CmdId, synod_decision::Outcome), ApiError> {
    let (tx, rx) = oneshot::channel();
    api.handle
        .proposals
        .try_send(Proposal {
            cmd,
            reply: tx,
            queued_at: std::time::Instant::now(),
        })
        .map_err(|e| match e {
            tokio::sync::mpsc::error::TrySendError::Full(_) => {
                api.metrics.rejected(Rejection::Overloaded);
                ApiError::Overloaded("the replica's proposal queue is full".into())
            }
            tokio::sync::mpsc::error::TrySendError::Closed(_) => {
                api.metrics.rejected(Rejection::ShuttingDown);
                ApiError::Unavailable("the replica is stopping".into())
            }
        })?;
    match tokio::time::timeout(Duration::from_millis(timeout_ms), rx).await {
        Err(_) => Err(ApiError::Timeout(timeout_ms)),
        Ok(Err(_)) => {
            // The loop dropped the reply without answering (it failed).
            api.metrics.rejected(Rejection::ShuttingDown);
            Err(ApiError::Unavailable("the replica is stopping".into()))
        }
        Ok(Ok(Err(ProposeError::Overloaded { reason }))) => Err(ApiError::Overloaded(reason)),
        Ok(Ok(Err(ProposeError::Aborted))) => Err(ApiError::Aborted),
        Ok(Ok(Err(ProposeError::ShuttingDown))) => {
            Err(ApiError::Unavailable("the replica is stopping".into()))
        }
        Ok(Ok(Ok(done))) => Ok(done),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn ask<T>(api: &Api, make: impl FnOnce(oneshot::Sender<T>) -> Query) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    api.handle
        .queries
        .try_send(make(tx))
        .map_err(|_| ApiError::Overloaded("the replica's query queue is full".into()))?;
    match tokio::time::timeout(QUERY_TIMEOUT, rx).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(ApiError::Unavailable("the replica is stopping".into())),
        Err(_) => Err(ApiError::Unavailable(
            "the replica loop did not answer".into(),
        )),
    }
}

async fn status(State(api): State<Api>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(ask(&api, Query::Status).await?))
}

#[derive(Deserialize)]
struct LogParams {
    #[serde(default)]
    from: u64,
    #[serde(default)]
    limit: Option<usize>,
}

async fn log(
    State(api): State<Api>,
    params: Result<UrlQuery<LogParams>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let UrlQuery(p) = params.map_err(|e| ApiError::InvalidArgument(e.body_text()))?;
    let limit = p.limit.unwrap_or(1000).min(MAX_LOG_PAGE);
    let from = p.from;
    Ok(Json(
        ask(&api, |reply| Query::Log { from, limit, reply }).await?,
    ))
}

#[derive(Deserialize)]
struct ReadParams {
    #[serde(default)]
    consistency: Option<String>,
}

/// `GET /v1/keys/{key}[?consistency=local|linearizable]`.
///
/// `local` (the default) answers from this replica's state, which may lag
/// by the decisions it has not executed yet. `linearizable` proposes a
/// read-only decision (a `Get`, no session: `synod_decision::read_command`)
/// through the protocol: it executes after every conflicting decision
/// committed before it, so it sees every write acknowledged before the read
/// began. It costs a round of the protocol and is subject to the propose
/// timeout and overload limits.
async fn read(
    State(api): State<Api>,
    Path(key): Path<String>,
    params: Result<UrlQuery<ReadParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ReadResponse>, ApiError> {
    let UrlQuery(p) = params.map_err(|e| ApiError::InvalidArgument(e.body_text()))?;
    if key.starts_with(synod_decision::RESERVED_KEY_PREFIX) {
        return Err(ApiError::InvalidArgument(
            "key: keys starting with NUL are reserved".into(),
        ));
    }
    match p.consistency.as_deref() {
        None | Some("local") => Ok(Json(ask(&api, |reply| Query::Read { key, reply }).await?)),
        Some("linearizable") => {
            let d = Decision::new(vec![synod_decision::Op::get(key.as_str())], now_ms());
            d.validate()
                .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
            // Every replica executes every read, and all reads share client
            // 0, so a replica answers its waiter for (0, request) with the
            // first execution of that pair it sees: the request number must
            // be unique cluster-wide, or another replica's older read would
            // answer this one. Node id (16 bits) | incarnation (16 bits) |
            // counter (32 bits).
            let n = api.reads.fetch_add(1, Ordering::Relaxed) & 0xFFFF_FFFF;
            let request =
                (u64::from(api.handle.node) << 48) | ((api.handle.boot_id & 0xFFFF) << 32) | n;
            let cmd = synod_decision::read_command(request, &d);
            let (_, outcome) = submit(&api, cmd, api.default_timeout_ms).await?;
            match outcome {
                synod_decision::Outcome::Applied { results } => match results.as_slice() {
                    [synod_decision::OpResult::Get { version, value }] => Ok(Json(ReadResponse {
                        key,
                        version: *version,
                        value: value.clone(),
                        consistency: "linearizable".into(),
                    })),
                    other => Err(ApiError::Unavailable(format!(
                        "unexpected read result {other:?}"
                    ))),
                },
                synod_decision::Outcome::Rejected { reason } => {
                    Err(ApiError::InvalidArgument(format!("key: {reason}")))
                }
            }
        }
        Some(other) => Err(ApiError::InvalidArgument(format!(
            "consistency: {other:?} is neither \"local\" nor \"linearizable\""
        ))),
    }
}

async fn arm_failpoint(Path(name): Path<String>) -> Result<&'static str, ApiError> {
    synod_storage::failpoint::arm(&name, 1)
        .map(|()| "armed\n")
        .map_err(|e| ApiError::InvalidArgument(format!("name: {e}")))
}

async fn scrape(State(api): State<Api>) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        api.metrics.encode(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct StreamParams {
    #[serde(default)]
    from: String,
}

/// `GET /v1/stream?from=TOKEN`: the committed stream (see `stream.rs`).
async fn stream(
    State(api): State<Api>,
    params: Result<UrlQuery<StreamParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let UrlQuery(p) = params.map_err(|e| ApiError::InvalidArgument(e.body_text()))?;
    match crate::stream::open(api.handle.clone(), &p.from).await {
        Ok(sse) => Ok(sse.into_response()),
        Err(crate::stream::StreamError::BadToken(m)) => {
            Err(ApiError::InvalidArgument(format!("from: {m}")))
        }
        Err(crate::stream::StreamError::Gone(m)) => Err(ApiError::Gone(m)),
        Err(crate::stream::StreamError::Unavailable(m)) => Err(ApiError::Unavailable(m)),
    }
}

async fn readyz(State(api): State<Api>) -> Response {
    match ask(&api, Query::Ready).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(why)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}
