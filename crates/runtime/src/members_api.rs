//! The membership API: `GET /v1/members`, `POST /v1/members`,
//! `DELETE /v1/members/{id}` (what `synod member list|add|remove` calls).
//!
//! Every replica answers `GET` from its copy of the control state. A change
//! is a write to the control plane, which only its leader takes: a follower
//! answers `307 Temporary Redirect` with `Location` set to the same call on
//! the leader, a `synod-leader` header and a JSON error `not_leader` naming
//! it (or, with no leader known, a retryable `not_leader` without one).
//!
//! A change creates a new epoch at once; the old epoch is then sealed and
//! closed and its in-flight instances finished (epaxos.md §8) while both
//! keep serving. Only one change is in flight: another is refused with the
//! retryable `change_in_progress` until the previous epoch is complete.

use crate::api::{Api, ApiError};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::Json;
use std::net::SocketAddr;
use synod_client::wire::{
    AddMemberRequest, EpochEntry, MemberChangeResponse, MemberEntry, MembersResponse,
};
use synod_control::{
    ControlCommand, ControlError, ControlRejection, ControlReply, ControlState, MemberInfo,
};
use synod_types::NodeId;

/// `GET /v1/members`
pub async fn list(State(api): State<Api>) -> Json<MembersResponse> {
    Json(members(&api))
}

/// The control plane's view from this replica.
pub fn members(api: &Api) -> MembersResponse {
    let st = api.control.state().borrow().clone();
    let status = api.control.status();
    let current: Vec<NodeId> = st
        .current()
        .map(|r| r.config.members().to_vec())
        .unwrap_or_default();
    let leader_api = status
        .leader
        .and_then(|l| st.nodes.get(&l))
        .map(|i| i.api_addr.to_string());
    MembersResponse {
        node: api.control_me(),
        cluster_id: st.cluster_id,
        epoch: st.current_epoch().unwrap_or(0),
        change_in_progress: st.change_in_progress(),
        leader: status.leader,
        leader_api,
        raft_term: status.term,
        raft_commit_index: status.commit_index,
        members: st
            .nodes
            .iter()
            .map(|(id, i)| MemberEntry {
                id: *id,
                peer_addr: i.peer_addr.to_string(),
                api_addr: i.api_addr.to_string(),
                grpc_addr: i.grpc_addr.map(|a| a.to_string()),
                raft_role: if status.voters.contains(id) {
                    "voter"
                } else if status.learners.contains(id) {
                    "learner"
                } else {
                    "none"
                }
                .into(),
                current: current.contains(id),
            })
            .collect(),
        epochs: st
            .epochs
            .iter()
            .map(|(e, r)| EpochEntry {
                epoch: *e,
                members: r.config.members().to_vec(),
                f: r.config.f(),
                e: r.config.e(),
                sealed_by: r.reports.keys().copied().collect(),
                closed: r.closed.is_some(),
                closed_ids: r.closed.as_ref().map_or(0, |k| k.len()),
                done: r.done.iter().copied().collect(),
                complete: st.complete(*e),
            })
            .collect(),
        egress_holder: st.egress.map(|l| l.holder),
        egress_generation: st.egress_generation,
    }
}

fn addr(field: &str, v: &str) -> Result<SocketAddr, ApiError> {
    v.parse().map_err(|e| {
        ApiError::InvalidArgument(format!("{field}: {v:?} is not an ip:port address: {e}"))
    })
}

/// `POST /v1/members`
pub async fn add(
    State(api): State<Api>,
    body: Result<Json<AddMemberRequest>, JsonRejection>,
) -> Result<Json<MemberChangeResponse>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::InvalidArgument(e.body_text()))?;
    let info = MemberInfo {
        peer_addr: addr("peer_addr", &req.peer_addr)?,
        api_addr: addr("api_addr", &req.api_addr)?,
        grpc_addr: req
            .grpc_addr
            .as_deref()
            .map(|g| addr("grpc_addr", g))
            .transpose()?,
    };
    change(
        &api,
        ControlCommand::AddMember { id: req.id, info },
        "/v1/members".into(),
    )
    .await
}

/// `DELETE /v1/members/{id}`
pub async fn remove(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<MemberChangeResponse>, ApiError> {
    let id: NodeId = id
        .parse()
        .map_err(|_| ApiError::InvalidArgument(format!("id: {id:?} is not a replica id")))?;
    change(
        &api,
        ControlCommand::RemoveMember { id },
        format!("/v1/members/{id}"),
    )
    .await
}

async fn change(
    api: &Api,
    cmd: ControlCommand,
    path: String,
) -> Result<Json<MemberChangeResponse>, ApiError> {
    match api.control.write(cmd).await {
        Ok(ControlReply::Epoch(epoch)) => Ok(Json(MemberChangeResponse { epoch })),
        Ok(ControlReply::Rejected(r)) => Err(rejected(r)),
        Ok(other) => Err(ApiError::Unavailable(format!(
            "the control plane answered {other:?} to a membership change"
        ))),
        Err(e) => Err(control_error(api, e, path)),
    }
}

/// A control-plane error as the API presents it: a leader redirect, or
/// unavailable.
fn control_error(api: &Api, e: ControlError, path: String) -> ApiError {
    match e {
        ControlError::NotLeader { leader } => {
            let st: std::sync::Arc<ControlState> = api.control.state().borrow().clone();
            let leader = leader.map(|(id, info)| {
                let api_addr = st.nodes.get(&id).map_or(info.api_addr, |i| i.api_addr);
                (id, api_addr.to_string())
            });
            let location = leader.as_ref().map(|(_, a)| format!("http://{a}{path}"));
            ApiError::NotLeader { leader, location }
        }
        e if e.retryable() => ApiError::Unavailable(format!("control plane: {e}")),
        e => ApiError::Unavailable(format!("control plane (not retryable): {e}")),
    }
}

fn rejected(r: ControlRejection) -> ApiError {
    let retryable = matches!(r, ControlRejection::ChangeInProgress { .. });
    ApiError::Conflict {
        message: r.to_string(),
        retryable,
    }
}

/// `GET /v1/settings`: the protocol settings the control plane replicates
/// (`null`: the replica's own config applies).
pub async fn settings(State(api): State<Api>) -> Json<synod_control::Settings> {
    Json(api.control.state().borrow().settings.clone())
}

/// `PUT /v1/settings`: replaces the replicated protocol settings (a leader
/// write, redirected like membership changes). Replicas apply them from
/// their next start.
pub async fn put_settings(
    State(api): State<Api>,
    body: Result<Json<synod_control::Settings>, JsonRejection>,
) -> Result<Json<synod_control::Settings>, ApiError> {
    let Json(s) = body.map_err(|e| ApiError::InvalidArgument(e.body_text()))?;
    if s.batch_size_max.is_some_and(|b| b == 0 || b > 4096) {
        return Err(ApiError::InvalidArgument(
            "batch_size_max: must be 1..=4096".into(),
        ));
    }
    if s.fast_timeout_ticks == Some(0) || s.commit_timeout_ticks == Some(0) {
        return Err(ApiError::InvalidArgument(
            "fast_timeout_ticks, commit_timeout_ticks: at least one tick".into(),
        ));
    }
    match api
        .control
        .write(ControlCommand::SetSettings(s.clone()))
        .await
    {
        Ok(ControlReply::Rejected(r)) => Err(rejected(r)),
        Ok(_) => Ok(Json(s)),
        Err(e) => Err(control_error(&api, e, "/v1/settings".into())),
    }
}
