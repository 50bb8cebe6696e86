//! The replica's client API: the operations ([`Api`]) and their HTTP/JSON
//! routes (`/v1`); the wire types live in `synod_client::wire`. The gRPC
//! service ([`crate::grpc`]) calls the same [`Api`] methods (propose, read,
//! status, subscribe), so both APIs validate, limit, wait and fail the same
//! way; each only translates its own encoding.
//!
//! Every error is an [`ApiError`]; [`ApiError::classify`] is the one table
//! that maps it to an HTTP status, a gRPC code and a stable code string
//! (the HTTP [`ErrorBody`]'s `code`, gRPC's `synod-code` metadata), and
//! says which are retryable.
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
use crate::stream::StreamError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query as UrlQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use synod_client::wire::{
    ErrorBody, ProposeRequest, ProposeResponse, ReadResponse, StatusResponse, StreamEvent,
};
use synod_decision::{Decision, Outcome};
use synod_types::{CmdId, NodeId};
use tokio::sync::oneshot;
use tonic::Code;

/// Most log entries one `GET /v1/log` returns.
pub const MAX_LOG_PAGE: usize = 10_000;

/// Suggested wait before retrying an overloaded request.
pub const OVERLOAD_RETRY_AFTER_MS: u64 = 100;

/// How long a query (status, read, log) may wait for the replica loop.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The client API's operations, shared by the HTTP handlers and the gRPC
/// service (cheap to clone: one per server).
#[derive(Clone)]
pub struct Api {
    handle: Handle,
    pub(crate) control: synod_control::Control,
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
    /// A membership call reached a replica that does not lead the control
    /// plane: the leader's id and the same call's URL on it, if known.
    NotLeader {
        /// the leader and its HTTP API address
        leader: Option<(NodeId, String)>,
        /// the same request's URL on the leader
        location: Option<String>,
    },
    /// The control plane refused a membership change; `retryable` if only
    /// because another change is still in progress.
    Conflict {
        /// why
        message: String,
        /// true: retry once the change in progress is complete
        retryable: bool,
    },
}

/// One row of the error table ([`ApiError::classify`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Class {
    /// HTTP status.
    pub http: StatusCode,
    /// gRPC status code.
    pub grpc: Code,
    /// Stable machine-readable code: the HTTP body's `code`, gRPC's
    /// `synod-code` metadata.
    pub code: &'static str,
    /// True if the same request may be retried (same `client`/`request`).
    pub retryable: bool,
}

impl ApiError {
    /// The table: HTTP status, gRPC code, stable code, retryable.
    ///
    /// `Gone` is gRPC `FAILED_PRECONDITION`, not `OUT_OF_RANGE`: tonic
    /// already answers `OUT_OF_RANGE` for a message above the size limit,
    /// and a token this replica cannot resume needs another action (resume
    /// on a replica that has the history, or start over); this replica's
    /// retained history is the precondition the request fails.
    pub fn classify(&self) -> Class {
        let (http, grpc, code, retryable) = match self {
            ApiError::InvalidArgument(_) => (
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                "invalid_argument",
                false,
            ),
            ApiError::Overloaded(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                Code::ResourceExhausted,
                "overloaded",
                true,
            ),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Unavailable,
                "unavailable",
                true,
            ),
            ApiError::Timeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                Code::DeadlineExceeded,
                "timeout",
                true,
            ),
            ApiError::Aborted => (
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Aborted,
                "aborted",
                true,
            ),
            ApiError::Gone(_) => (StatusCode::GONE, Code::FailedPrecondition, "gone", false),
            ApiError::NotLeader { .. } => (
                StatusCode::TEMPORARY_REDIRECT,
                Code::Unavailable,
                "not_leader",
                true,
            ),
            ApiError::Conflict {
                retryable: true, ..
            } => (
                StatusCode::CONFLICT,
                Code::Aborted,
                "change_in_progress",
                true,
            ),
            ApiError::Conflict { .. } => (
                StatusCode::CONFLICT,
                Code::FailedPrecondition,
                "rejected",
                false,
            ),
        };
        Class {
            http,
            grpc,
            code,
            retryable,
        }
    }

    /// Suggested wait before a retry: [`OVERLOAD_RETRY_AFTER_MS`] for
    /// `Overloaded`, none otherwise.
    pub fn retry_after_ms(&self) -> Option<u64> {
        matches!(self, ApiError::Overloaded(_)).then_some(OVERLOAD_RETRY_AFTER_MS)
    }

    /// The human-readable detail, naming the offending field or limit.
    pub fn message(&self) -> String {
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
            ApiError::NotLeader { leader: Some((id, api)), .. } => format!(
                "this replica does not lead the control plane; node {id} does (its API: {api})"
            ),
            ApiError::NotLeader { leader: None, .. } => {
                "this replica does not lead the control plane and knows no leader (an election is under way); retry".into()
            }
            ApiError::Conflict { message, .. } => message.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let class = self.classify();
        let retry_after_ms = self.retry_after_ms();
        let body = ErrorBody {
            code: class.code.into(),
            message: self.message(),
            retryable: class.retryable,
            retry_after_ms,
        };
        let mut resp = (class.http, Json(body)).into_response();
        if let ApiError::NotLeader {
            leader, location, ..
        } = &self
        {
            if let Some(l) = location
                .as_deref()
                .and_then(|l| HeaderValue::from_str(l).ok())
            {
                resp.headers_mut().insert(header::LOCATION, l);
            }
            if let Some(v) = leader
                .as_ref()
                .and_then(|(id, _)| HeaderValue::from_str(&id.to_string()).ok())
            {
                resp.headers_mut().insert("synod-leader", v);
            }
        }
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

/// The consistency of a read ([`Api::read`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// This replica's state, which may lag by the decisions it has not
    /// executed yet.
    Local,
    /// Through the protocol: sees every write acknowledged before it.
    Linearizable,
}

/// An executed proposal ([`Api::propose`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposed {
    /// The instance that carried the decision.
    pub instance: CmdId,
    /// The session it ran under.
    pub client: u64,
    /// Its request number.
    pub request: u64,
    /// Applied with per-op results, or rejected with a reason.
    pub outcome: Outcome,
}

impl Api {
    /// The operations of replica `handle`; `default_timeout_ms` is the
    /// default and largest wait for a proposal
    /// (`limits.propose_timeout_ms`).
    pub fn new(
        handle: Handle,
        control: synod_control::Control,
        metrics: Metrics,
        default_timeout_ms: u64,
    ) -> Api {
        Api {
            handle,
            control,
            default_timeout_ms,
            one_off: Arc::new(AtomicU64::new(0)),
            reads: Arc::new(AtomicU64::new(0)),
            metrics,
        }
    }

    /// This replica's id.
    pub(crate) fn control_me(&self) -> NodeId {
        self.handle.node
    }

    /// Proposes one decision and waits for its outcome on this replica:
    /// checks the session fields and the decision's limits, submits it and
    /// waits up to `timeout_ms` (default and cap: the replica's limit).
    ///
    /// Counts in `synod_proposals_rejected_total` what the loop never sees
    /// or never answers: invalid input, a full proposal queue, a loop
    /// already gone, and timeouts. The loop counts its own answers
    /// (overloaded, aborted, shutting down).
    pub async fn propose(&self, req: ProposeRequest) -> Result<Proposed, ApiError> {
        let r = self.propose_inner(req).await;
        if let Err(e) = &r {
            self.count_unanswered(e);
        }
        r
    }

    /// A proposal refused by the transport before [`Api::propose`] could
    /// see it (a body or message that does not decode into a
    /// [`ProposeRequest`]): counted as invalid, like the ones `propose`
    /// refuses. `message` names the field.
    pub fn invalid_proposal(&self, message: String) -> ApiError {
        let e = ApiError::InvalidArgument(message);
        self.count_unanswered(&e);
        e
    }

    fn count_unanswered(&self, e: &ApiError) {
        match e {
            ApiError::InvalidArgument(_) => self.metrics.rejected(Rejection::Invalid),
            ApiError::Timeout(_) => self.metrics.rejected(Rejection::Timeout),
            // The loop counted its own overloaded, aborted and shutting-down
            // answers; these are the ones it never gave.
            ApiError::Overloaded(_)
            | ApiError::Unavailable(_)
            | ApiError::Aborted
            | ApiError::Gone(_)
            | ApiError::NotLeader { .. }
            | ApiError::Conflict { .. } => {}
        }
    }

    async fn propose_inner(&self, req: ProposeRequest) -> Result<Proposed, ApiError> {
        let (client, request) = req
            .session(|| {
                let n = self.one_off.fetch_add(1, Ordering::Relaxed);
                synod_client::wire::one_off_client(self.handle.boot_id, self.handle.node, n)
            })
            .map_err(ApiError::InvalidArgument)?;
        let issued_at_ms = req.issued_at_ms.unwrap_or_else(now_ms);
        let decision = Decision {
            ops: req.ops,
            guards: req.guards,
            issued_at_ms,
        };
        decision
            .validate()
            .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
        let timeout_ms = self.timeout_ms(req.timeout_ms);
        let cmd = synod_decision::command(client, request, &decision);
        let (instance, outcome) = self.submit(cmd, timeout_ms).await?;
        Ok(Proposed {
            instance,
            client,
            request,
            outcome,
        })
    }

    /// A request's wait: `asked` (ms), at least 1, at most the replica's
    /// limit, which is also the default.
    fn timeout_ms(&self, asked: Option<u64>) -> u64 {
        asked
            .unwrap_or(self.default_timeout_ms)
            .clamp(1, self.default_timeout_ms)
    }

    /// Hands `cmd` to the loop and waits up to `timeout_ms` for its outcome.
    async fn submit(
        &self,
        cmd: synod_types::Command,
        timeout_ms: u64,
    ) -> Result<(CmdId, Outcome), ApiError> {
        let (tx, rx) = oneshot::channel();
        self.handle
            .proposals
            .try_send(Proposal {
                cmd,
                reply: tx,
                queued_at: std::time::Instant::now(),
            })
            .map_err(|e| match e {
                tokio::sync::mpsc::error::TrySendError::Full(_) => {
                    self.metrics.rejected(Rejection::Overloaded);
                    ApiError::Overloaded("the replica's proposal queue is full".into())
                }
                tokio::sync::mpsc::error::TrySendError::Closed(_) => {
                    self.metrics.rejected(Rejection::ShuttingDown);
                    ApiError::Unavailable("the replica is stopping".into())
                }
            })?;
        match tokio::time::timeout(Duration::from_millis(timeout_ms), rx).await {
            Err(_) => Err(ApiError::Timeout(timeout_ms)),
            Ok(Err(_)) => {
                // The loop dropped the reply without answering (it failed).
                self.metrics.rejected(Rejection::ShuttingDown);
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

    /// Asks the loop a query; waits up to [`QUERY_TIMEOUT`].
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Query) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.handle
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

    /// This replica's status.
    pub async fn status(&self) -> Result<StatusResponse, ApiError> {
        self.ask(Query::Status).await
    }

    /// Reads `key`.
    ///
    /// [`Consistency::Local`] answers from this replica's state, which may
    /// lag by the decisions it has not executed yet.
    /// [`Consistency::Linearizable`] proposes a read-only decision (a
    /// `Get`, no session: `synod_decision::read_command`) through the
    /// protocol: it executes after every conflicting decision committed
    /// before it, so it sees every write acknowledged before the read
    /// began. It costs a round of the protocol and is subject to the
    /// propose timeout (`timeout_ms`, capped and defaulted as for
    /// proposals) and overload limits.
    pub async fn read(
        &self,
        key: String,
        consistency: Consistency,
        timeout_ms: Option<u64>,
    ) -> Result<ReadResponse, ApiError> {
        if key.is_empty() {
            return Err(ApiError::InvalidArgument("key: must not be empty".into()));
        }
        if key.starts_with(synod_decision::RESERVED_KEY_PREFIX) {
            return Err(ApiError::InvalidArgument(
                "key: keys starting with NUL are reserved".into(),
            ));
        }
        match consistency {
            Consistency::Local => self.ask(|reply| Query::Read { key, reply }).await,
            Consistency::Linearizable => {
                let d = Decision::new(vec![synod_decision::Op::get(key.as_str())], now_ms());
                d.validate()
                    .map_err(|e| ApiError::InvalidArgument(format!("key: {e}")))?;
                // Every replica executes every read, and all reads share
                // client 0, so a replica answers its waiter for (0, request)
                // with the first execution of that pair it sees: the request
                // number must be unique cluster-wide, or another replica's
                // older read would answer this one. Node id (16 bits) |
                // incarnation (16 bits) | counter (32 bits).
                let n = self.reads.fetch_add(1, Ordering::Relaxed) & 0xFFFF_FFFF;
                let request = (u64::from(self.handle.node) << 48)
                    | ((self.handle.boot_id & 0xFFFF) << 32)
                    | n;
                let cmd = synod_decision::read_command(request, &d);
                let (_, outcome) = self.submit(cmd, self.timeout_ms(timeout_ms)).await?;
                match outcome {
                    Outcome::Applied { results } => match results.as_slice() {
                        [synod_decision::OpResult::Get { version, value }] => Ok(ReadResponse {
                            key,
                            version: *version,
                            value: value.clone(),
                            consistency: "linearizable".into(),
                            staleness: None,
                        }),
                        other => Err(ApiError::Unavailable(format!(
                            "unexpected read result {other:?}"
                        ))),
                    },
                    Outcome::Rejected { reason } => {
                        Err(ApiError::InvalidArgument(format!("key: {reason}")))
                    }
                }
            }
        }
    }

    /// The committed stream from the resume token `from` (empty: from the
    /// start of the retained history); see [`crate::stream`]. Refuses a
    /// malformed token (`InvalidArgument` naming `from`) and one that lacks
    /// history this replica no longer has (`Gone`). The stream ends with
    /// one `Unavailable` item when the replica restarts or stops: resume
    /// with the last token.
    pub async fn subscribe(
        &self,
        from: &str,
    ) -> Result<impl Stream<Item = Result<StreamEvent, ApiError>> + Send + 'static, ApiError> {
        let events = crate::stream::open(self.handle.clone(), &self.metrics, from)
            .await
            .map_err(|e| match e {
                StreamError::BadToken(m) => ApiError::InvalidArgument(format!("from: {m}")),
                StreamError::Gone(m) => ApiError::Gone(m),
                StreamError::Unavailable(m) => ApiError::Unavailable(m),
            })?;
        Ok(events.map(|r| r.map_err(ApiError::Unavailable)))
    }
}

/// The HTTP router of one replica; `max_request_bytes` bounds every
/// request body (`limits.max_request_bytes`, also the gRPC message limit).
pub fn router(api: Api, max_request_bytes: usize) -> Router {
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
        .route("/v1/internal/snapshot", get(join_snapshot))
        .route(
            "/v1/members",
            get(crate::members_api::list).post(crate::members_api::add),
        )
        .route(
            "/v1/settings",
            get(crate::members_api::settings).put(crate::members_api::put_settings),
        )
        .route(
            "/v1/members/{id}",
            axum::routing::delete(crate::members_api::remove),
        )
        .route("/metrics", get(scrape))
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(api)
}

/// `POST /v1/decisions` ([`Api::propose`]).
async fn propose(
    State(api): State<Api>,
    body: Result<Json<ProposeRequest>, JsonRejection>,
) -> Result<Json<ProposeResponse>, ApiError> {
    let Json(req) = body.map_err(|e| api.invalid_proposal(e.body_text()))?;
    let p = api.propose(req).await?;
    Ok(Json(ProposeResponse {
        instance: p.instance.to_string(),
        client: p.client,
        request: p.request,
        outcome: p.outcome,
    }))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `GET /v1/status` ([`Api::status`]).
async fn status(State(api): State<Api>) -> Result<Json<StatusResponse>, ApiError> {
    Ok(Json(api.status().await?))
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
        api.ask(|reply| Query::Log { from, limit, reply }).await?,
    ))
}

#[derive(Deserialize)]
struct ReadParams {
    #[serde(default)]
    consistency: Option<String>,
}

/// `GET /v1/keys/{key}[?consistency=local|linearizable]` ([`Api::read`]).
async fn read(
    State(api): State<Api>,
    Path(key): Path<String>,
    params: Result<UrlQuery<ReadParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ReadResponse>, ApiError> {
    let UrlQuery(p) = params.map_err(|e| ApiError::InvalidArgument(e.body_text()))?;
    let consistency = match p.consistency.as_deref() {
        None | Some("local") => Consistency::Local,
        Some("linearizable") => Consistency::Linearizable,
        Some(other) => {
            return Err(ApiError::InvalidArgument(format!(
                "consistency: {other:?} is neither \"local\" nor \"linearizable\""
            )))
        }
    };
    Ok(Json(api.read(key, consistency, None).await?))
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

/// `GET /v1/stream?from=TOKEN`: the committed stream ([`Api::subscribe`])
/// as Server-Sent Events (`event: decision`, JSON [`StreamEvent`] data).
/// The body ends when the replica restarts or stops.
async fn stream(
    State(api): State<Api>,
    params: Result<UrlQuery<StreamParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let UrlQuery(p) = params.map_err(|e| ApiError::InvalidArgument(e.body_text()))?;
    let events = api.subscribe(&p.from).await?;
    Ok(crate::stream::sse(events).into_response())
}

#[derive(Deserialize)]
struct SnapshotParams {
    epoch: u64,
}

/// `GET /v1/internal/snapshot?epoch=E`: the state a member added in epoch E
/// starts from (`crate::membership`). 503 until this replica has executed
/// all of epoch E−1; the joiner retries or asks another member.
async fn join_snapshot(State(api): State<Api>, UrlQuery(p): UrlQuery<SnapshotParams>) -> Response {
    match api
        .ask(|reply| Query::JoinSnapshot {
            join_epoch: p.epoch,
            reply,
        })
        .await
    {
        Ok(Ok(bytes)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            bytes,
        )
            .into_response(),
        Ok(Err(why)) => ApiError::Unavailable(why).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn readyz(State(api): State<Api>) -> Response {
    match api.ask(Query::Ready).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(why)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}
