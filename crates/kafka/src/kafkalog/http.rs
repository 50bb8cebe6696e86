//! The agent's HTTP API: the replica's shapes (`synod_client::wire`) for
//! proposing and reading, an agent-specific status.
//!
//! - `POST /v1/decisions`: [`ProposeRequest`] → [`ProposeResponse`]
//!   (`instance` is `term.seq@leader`). A follower **redirects**: 307 with
//!   `Location: http://<leader api>/v1/decisions`, header `synod-leader:
//!   <id>` and an [`ErrorBody`] `not_leader` (retryable), as the replica
//!   API does for membership calls; with no leader known, 503 `not_leader`
//!   (retryable, no Location). A deposed leader answers the same way for a
//!   proposal whose record the log skipped.
//! - `GET /v1/keys/{key}`: local read, [`ReadResponse`] with
//!   `consistency: "local"`; `staleness.behind_peers` is the number of log
//!   records between the fold's position and the log's end at the last
//!   look.
//! - `GET /v1/status`: [`AgentStatus`].
//! - `GET /livez`: 200 while the process serves HTTP.
//! - `GET /readyz`: 200 once the reader has caught up with the log and keeps
//!   polling; 503 with the reason otherwise.
//!
//! Errors: 400 `invalid_argument` naming the field; 429 `overloaded` with
//! `Retry-After` (bounded queues: `PROPOSAL_QUEUE_MAX`, `PENDING_MAX`);
//! 503 `unavailable`; 504 `timeout` (retry with the same client and request).

use super::agent::{AgentError, AgentHandle, AgentStatus};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use synod_client::wire::{ErrorBody, ProposeRequest, ProposeResponse, ReadResponse, Staleness};

/// Largest request body: one decision's JSON. The encoded decision is at
/// most `MAX_ENCODED_DECISION_BYTES` (512 KiB); JSON spells bytes as
/// number arrays, so allow four times that.
pub const MAX_REQUEST_BYTES: usize = 4 * synod_decision::MAX_ENCODED_DECISION_BYTES;

/// Suggested wait before retrying an overloaded request.
pub const OVERLOAD_RETRY_AFTER_MS: u64 = 100;

impl AgentError {
    /// HTTP status, stable code, retryable.
    pub fn classify(&self) -> (StatusCode, &'static str, bool) {
        match self {
            AgentError::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument", false),
            AgentError::Overloaded(_) => (StatusCode::TOO_MANY_REQUESTS, "overloaded", true),
            AgentError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", true),
            AgentError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout", true),
            AgentError::NotLeader { leader: Some(_) } => {
                (StatusCode::TEMPORARY_REDIRECT, "not_leader", true)
            }
            AgentError::NotLeader { leader: None } => {
                (StatusCode::SERVICE_UNAVAILABLE, "not_leader", true)
            }
        }
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let (status, code, retryable) = self.classify();
        let overloaded = matches!(self, AgentError::Overloaded(_));
        let body = ErrorBody {
            code: code.into(),
            message: self.to_string(),
            retryable,
            retry_after_ms: overloaded.then_some(OVERLOAD_RETRY_AFTER_MS),
        };
        let mut resp = (status, Json(body)).into_response();
        if let AgentError::NotLeader {
            leader: Some((id, api)),
        } = &self
        {
            if let Ok(l) = HeaderValue::from_str(&format!("http://{api}/v1/decisions")) {
                resp.headers_mut().insert(header::LOCATION, l);
            }
            if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
                resp.headers_mut().insert("synod-leader", v);
            }
        }
        if overloaded {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// The agent's router.
pub fn router(agent: AgentHandle) -> Router {
    Router::new()
        .route("/v1/decisions", post(propose))
        .route("/v1/keys/{key}", get(read))
        .route("/v1/status", get(status))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(agent)
}

/// Serves the agent's API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    agent: AgentHandle,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(agent))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn propose(
    State(agent): State<AgentHandle>,
    body: Result<Json<ProposeRequest>, JsonRejection>,
) -> Result<Json<ProposeResponse>, AgentError> {
    let Json(req) = body.map_err(|e| AgentError::InvalidArgument(e.body_text()))?;
    let p = agent.propose(req).await?;
    Ok(Json(ProposeResponse {
        instance: p.instance(),
        client: p.client,
        request: p.request,
        outcome: p.outcome,
    }))
}

#[derive(Deserialize)]
struct ReadParams {
    #[serde(default)]
    consistency: Option<String>,
}

async fn read(
    State(agent): State<AgentHandle>,
    Path(key): Path<String>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Json<ReadResponse>, AgentError> {
    let Query(p) = params.map_err(|e| AgentError::InvalidArgument(e.body_text()))?;
    match p.consistency.as_deref() {
        None | Some("local") => {}
        Some(other) => {
            return Err(AgentError::InvalidArgument(format!(
                "consistency: {other:?}: Kafka-log mode serves \"local\" reads only"
            )))
        }
    }
    if key.is_empty() {
        return Err(AgentError::InvalidArgument("key: must not be empty".into()));
    }
    if key.starts_with(synod_decision::RESERVED_KEY_PREFIX) {
        return Err(AgentError::InvalidArgument(
            "key: keys starting with NUL are reserved".into(),
        ));
    }
    if key.len() > synod_decision::MAX_KEY_BYTES {
        return Err(AgentError::InvalidArgument(format!(
            "key: at most {} bytes",
            synod_decision::MAX_KEY_BYTES
        )));
    }
    let status = agent.status();
    let (version, value) = agent.with_state(|st| {
        (
            st.machine().version(&key),
            st.machine().value(&key).cloned(),
        )
    });
    Ok(Json(ReadResponse {
        key,
        version,
        value,
        consistency: "local".into(),
        staleness: Some(Staleness {
            executed_instances: status.counters.decisions_applied,
            pending_execution: 0,
            behind_peers: status.log_end_offset.saturating_sub(status.next_offset),
            oldest_unexecuted_ms: 0,
        }),
    }))
}

async fn status(State(agent): State<AgentHandle>) -> Json<AgentStatus> {
    Json(agent.status())
}

async fn readyz(State(agent): State<AgentHandle>) -> Response {
    match agent.ready() {
        Ok(()) => "ready\n".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(r: &Response, name: &str) -> Option<String> {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn errors_map_to_the_replica_apis_statuses_codes_and_headers() {
        let redirect = AgentError::NotLeader {
            leader: Some((2, "10.0.0.2:7100".into())),
        }
        .into_response();
        assert_eq!(redirect.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            header(&redirect, "location").as_deref(),
            Some("http://10.0.0.2:7100/v1/decisions")
        );
        assert_eq!(header(&redirect, "synod-leader").as_deref(), Some("2"));
        let no_leader = AgentError::NotLeader { leader: None }.into_response();
        assert_eq!(no_leader.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header(&no_leader, "location"), None);
        let overloaded = AgentError::Overloaded("queue".into()).into_response();
        assert_eq!(overloaded.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&overloaded, "retry-after").as_deref(), Some("1"));
        let table = [
            (
                AgentError::InvalidArgument("x".into()),
                400,
                "invalid_argument",
                false,
            ),
            (AgentError::Overloaded("x".into()), 429, "overloaded", true),
            (
                AgentError::Unavailable("x".into()),
                503,
                "unavailable",
                true,
            ),
            (AgentError::Timeout(5), 504, "timeout", true),
            (
                AgentError::NotLeader { leader: None },
                503,
                "not_leader",
                true,
            ),
        ];
        for (e, status, code, retryable) in table {
            let (s, c, r) = e.classify();
            assert_eq!((s.as_u16(), c, r), (status, code, retryable), "{e:?}");
        }
    }
}
