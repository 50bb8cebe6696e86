//! The gRPC client API: service `synod.v1.Synod`
//! (`crates/runtime/proto/synod/v1/synod.proto`), served with tonic on a
//! member's `grpc_addr` beside the HTTP/JSON API.
//!
//! Each RPC translates its messages and calls the same [`Api`] method as the
//! HTTP route it mirrors: `Propose` → [`Api::propose`] (`POST
//! /v1/decisions`), `Read` → [`Api::read`] (`GET /v1/keys/{key}`),
//! `Subscribe` → [`Api::subscribe`] (`GET /v1/stream`), `Status` →
//! [`Api::status`] (`GET /v1/status`). Validation, limits, waiting,
//! exactly-once sessions and metrics are therefore those of the HTTP API;
//! this file only converts messages and errors.
//!
//! Errors: an [`ApiError`] becomes a [`Status`] with the gRPC code of
//! [`ApiError::classify`], its message, and the metadata
//! [`SYNOD_CODE`] (the stable code), [`SYNOD_RETRYABLE`] (`true`/`false`)
//! and, for overload, [`RETRY_AFTER_MS`].
//!
//! Limits: a request message above `limits.max_request_bytes` (the HTTP
//! body limit) is refused by tonic before decoding (`OUT_OF_RANGE`).
//! A call's gRPC deadline (`grpc-timeout`) shortens a proposal's or a
//! linearizable read's wait; the replica answers `DEADLINE_EXCEEDED`
//! [`DEADLINE_MARGIN`] before the deadline, so the answer is ours and not
//! tonic's (which would cancel the call).

use crate::api::{Api, ApiError, Consistency};
use futures_util::{Stream, StreamExt};
use std::pin::Pin;
use std::time::Duration;
use synod_client::wire::{self, StatusResponse, StreamEvent};
use synod_decision::{Failure, Guard, Kind, Op, OpResult, Outcome, Reason, Value};
use synod_types::{Access, CmdId};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};

/// The code generated from `synod.proto` by `build.rs`: messages, the
/// server ([`proto::synod_server`]) and the client
/// ([`proto::synod_client::SynodClient`]).
#[allow(missing_docs, clippy::all)] // generated code
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/synod.v1.rs"));
}

/// The tonic this crate is built with, for clients of [`proto`] (tests, SDKs)
/// so they need not pin a matching version themselves.
pub use tonic;

/// Metadata key of the stable error code (`invalid_argument`, `overloaded`,
/// …; the HTTP error body's `code`).
pub const SYNOD_CODE: &str = "synod-code";

/// Metadata key saying whether the same request may be retried: `true` or
/// `false`.
pub const SYNOD_RETRYABLE: &str = "synod-retryable";

/// Metadata key of the suggested wait before retrying an overloaded
/// request, in milliseconds.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// How long before a call's gRPC deadline the replica gives up waiting and
/// answers `DEADLINE_EXCEEDED` itself. tonic's server cancels a call at the
/// deadline (status `CANCELLED`); answering a little earlier gives the
/// client the retry advice of our `timeout` error instead.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

/// HTTP/2 keep-alive pings on idle connections, so a subscriber that
/// vanished without closing its connection is noticed and its stream
/// dropped (the SSE stream's keep-alive comments do the same over HTTP).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let class = e.classify();
        let mut md = MetadataMap::new();
        md.insert(SYNOD_CODE, MetadataValue::from_static(class.code));
        md.insert(
            SYNOD_RETRYABLE,
            MetadataValue::from_static(if class.retryable { "true" } else { "false" }),
        );
        if let Some(ms) = e.retry_after_ms() {
            md.insert(RETRY_AFTER_MS, MetadataValue::from(ms));
        }
        Status::with_metadata(class.grpc, e.message(), md)
    }
}

/// The `synod.v1.Synod` service of one replica.
#[derive(Clone)]
pub struct Service {
    api: Api,
}

/// The service, ready to serve: request messages are limited to
/// `max_request_bytes` (`limits.max_request_bytes`, the HTTP body limit).
pub fn server(api: Api, max_request_bytes: usize) -> proto::synod_server::SynodServer<Service> {
    proto::synod_server::SynodServer::new(Service { api })
        .max_decoding_message_size(max_request_bytes)
}

/// Serves the service on `listener` until `shutdown` resolves, then stops
/// accepting and waits for open calls to finish (streams end when the
/// replica loop has stopped).
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Api,
    max_request_bytes: usize,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    // Small unary calls: no Nagle delay.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .serve_with_incoming_shutdown(server(api, max_request_bytes), incoming, shutdown)
        .await
}

/// The call's `grpc-timeout` (gRPC over HTTP/2: 1 to 8 digits and a unit,
/// `H`, `M`, `S`, `m`, `u` or `n`); `None` if absent or malformed (tonic
/// itself ignores a malformed one too).
fn grpc_timeout(md: &MetadataMap) -> Option<Duration> {
    let v = md.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The wait in ms a call may spend: `asked`, shortened to end
/// [`DEADLINE_MARGIN`] before the call's deadline, if it has one. The
/// [`Api`] still caps and defaults it with the replica's limit.
fn wait_ms(asked: Option<u64>, md: &MetadataMap) -> Option<u64> {
    let deadline = grpc_timeout(md).map(|d| {
        let ms = d.saturating_sub(DEADLINE_MARGIN).as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX).max(1)
    });
    match (asked, deadline) {
        (Some(a), Some(d)) => Some(a.min(d)),
        (a, d) => a.or(d),
    }
}

#[tonic::async_trait]
impl proto::synod_server::Synod for Service {
    async fn propose(
        &self,
        request: Request<proto::ProposeRequest>,
    ) -> Result<Response<proto::ProposeResponse>, Status> {
        let timeout_ms = wait_ms(request.get_ref().timeout_ms, request.metadata());
        let mut req = wire::ProposeRequest::try_from(request.into_inner())
            .map_err(|m| self.api.invalid_proposal(m))?;
        req.timeout_ms = timeout_ms;
        let p = self.api.propose(req).await?;
        Ok(Response::new(proto::ProposeResponse {
            instance: Some(p.instance.into()),
            client: p.client,
            request: p.request,
            outcome: Some(p.outcome.into()),
        }))
    }

    async fn read(
        &self,
        request: Request<proto::ReadRequest>,
    ) -> Result<Response<proto::ReadResponse>, Status> {
        let timeout_ms = wait_ms(None, request.metadata());
        let req = request.into_inner();
        let (consistency, served) = match proto::Consistency::try_from(req.consistency) {
            Ok(proto::Consistency::Unspecified | proto::Consistency::Local) => {
                (Consistency::Local, proto::Consistency::Local)
            }
            Ok(proto::Consistency::Linearizable) => {
                (Consistency::Linearizable, proto::Consistency::Linearizable)
            }
            Err(_) => {
                return Err(ApiError::InvalidArgument(format!(
                    "consistency: {} is not a Consistency value",
                    req.consistency
                ))
                .into())
            }
        };
        let r = self.api.read(req.key, consistency, timeout_ms).await?;
        Ok(Response::new(proto::ReadResponse {
            key: r.key,
            version: r.version,
            value: r.value.map(Into::into),
            consistency: served.into(),
            staleness: r.staleness.map(|s| proto::Staleness {
                executed_instances: s.executed_instances,
                pending_execution: s.pending_execution,
                behind_peers: s.behind_peers,
                oldest_unexecuted_ms: s.oldest_unexecuted_ms,
            }),
        }))
    }

    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<proto::StreamEvent, Status>> + Send>>;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let events = self.api.subscribe(&request.get_ref().from).await?;
        // An `Err` item ends the call with that status (UNAVAILABLE: the
        // replica restarted or stopped; resume with the last token).
        let events = events.map(|r| r.map(proto::StreamEvent::from).map_err(Status::from));
        Ok(Response::new(Box::pin(events)))
    }

    async fn status(
        &self,
        _request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        Ok(Response::new(self.api.status().await?.into()))
    }
}

// ---- Requests: proto -> the decision state machine's types -------------------

/// Prefixes a conversion error with the field it happened in.
fn at(field: impl std::fmt::Display) -> impl Fn(String) -> String {
    move |m| format!("{field}.{m}")
}

impl TryFrom<proto::ProposeRequest> for wire::ProposeRequest {
    /// The message names the offending field, e.g. `ops[2].kind: not set`.
    type Error = String;

    fn try_from(r: proto::ProposeRequest) -> Result<Self, String> {
        let ops = r
            .ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| Op::try_from(op).map_err(at(format_args!("ops[{i}]"))))
            .collect::<Result<_, _>>()?;
        let guards = r
            .guards
            .into_iter()
            .enumerate()
            .map(|(i, g)| Guard::try_from(g).map_err(at(format_args!("guards[{i}]"))))
            .collect::<Result<_, _>>()?;
        Ok(wire::ProposeRequest {
            client: r.client,
            request: r.request,
            ops,
            guards,
            issued_at_ms: r.issued_at_ms,
            timeout_ms: r.timeout_ms,
        })
    }
}

impl TryFrom<proto::Op> for Op {
    /// Names the field relative to the op: `kind: not set`.
    type Error = String;

    fn try_from(op: proto::Op) -> Result<Op, String> {
        use proto::op::Kind;
        Ok(match op.kind.ok_or("kind: not set")? {
            Kind::Put(p) => Op::put(p.key, p.value),
            Kind::Get(g) => Op::get(g.key),
            Kind::Delete(d) => Op::delete(d.key),
            Kind::Cas(c) => Op::cas(c.key, c.expected_version, c.value),
            Kind::Reserve(r) => Op::reserve(r.key, r.qty),
            Kind::Release(r) => Op::release(r.key, r.qty),
            Kind::SetStock(s) => Op::set_stock(s.key, s.qty),
            Kind::Claim(c) => Op::claim(c.key, c.agent, c.ttl_ms),
            Kind::ReleaseClaim(r) => Op::release_claim(r.key, r.agent),
        })
    }
}

impl From<Op> for proto::Op {
    fn from(op: Op) -> proto::Op {
        use proto::op::{self, Kind};
        let s = |k: synod_types::Key| k.to_string();
        let kind = match op {
            Op::Put { key, value } => Kind::Put(op::Put { key: s(key), value }),
            Op::Get { key } => Kind::Get(op::Get { key: s(key) }),
            Op::Delete { key } => Kind::Delete(op::Delete { key: s(key) }),
            Op::Cas {
                key,
                expected_version,
                value,
            } => Kind::Cas(op::Cas {
                key: s(key),
                expected_version,
                value,
            }),
            Op::Reserve { key, qty } => Kind::Reserve(op::Reserve { key: s(key), qty }),
            Op::Release { key, qty } => Kind::Release(op::Release { key: s(key), qty }),
            Op::SetStock { key, qty } => Kind::SetStock(op::SetStock { key: s(key), qty }),
            Op::Claim { key, agent, ttl_ms } => Kind::Claim(op::Claim {
                key: s(key),
                agent,
                ttl_ms,
            }),
            Op::ReleaseClaim { key, agent } => {
                Kind::ReleaseClaim(op::ReleaseClaim { key: s(key), agent })
            }
        };
        proto::Op { kind: Some(kind) }
    }
}

impl TryFrom<proto::Guard> for Guard {
    /// Names the field relative to the guard: `kind: not set`.
    type Error = String;

    fn try_from(g: proto::Guard) -> Result<Guard, String> {
        use proto::guard::Kind;
        Ok(match g.kind.ok_or("kind: not set")? {
            Kind::Version(v) => Guard::version(v.key, v.version),
            Kind::Exists(e) => Guard::exists(e.key),
            Kind::StockAtLeast(s) => Guard::stock_at_least(s.key, s.qty),
            Kind::ClaimedBy(c) => Guard::claimed_by(c.key, c.agent),
        })
    }
}

impl From<Guard> for proto::Guard {
    fn from(g: Guard) -> proto::Guard {
        use proto::guard::{self, Kind};
        let s = |k: synod_types::Key| k.to_string();
        let kind = match g {
            Guard::Version { key, version } => Kind::Version(guard::Version {
                key: s(key),
                version,
            }),
            Guard::Exists { key } => Kind::Exists(guard::Exists { key: s(key) }),
            Guard::StockAtLeast { key, qty } => {
                Kind::StockAtLeast(guard::StockAtLeast { key: s(key), qty })
            }
            Guard::ClaimedBy { key, agent } => {
                Kind::ClaimedBy(guard::ClaimedBy { key: s(key), agent })
            }
        };
        proto::Guard { kind: Some(kind) }
    }
}

// ---- Answers: the replica's types -> proto ------------------------------------

impl From<CmdId> for proto::InstanceId {
    fn from(id: CmdId) -> proto::InstanceId {
        proto::InstanceId {
            epoch: id.epoch,
            seq: id.seq,
            origin: u32::from(id.origin),
        }
    }
}

impl From<Value> for proto::Value {
    fn from(v: Value) -> proto::Value {
        use proto::value::Kind;
        let kind = match v {
            Value::Bytes(b) => Kind::Bytes(b),
            Value::Stock(n) => Kind::Stock(n),
            Value::Claim(c) => Kind::Claim(proto::ClaimState {
                holder: c.holder,
                claimed_at_ms: c.claimed_at_ms,
                expires_at_ms: c.expires_at_ms,
            }),
        };
        proto::Value { kind: Some(kind) }
    }
}

impl From<Outcome> for proto::Outcome {
    fn from(o: Outcome) -> proto::Outcome {
        use proto::outcome::{Applied, Kind, Rejected};
        let kind = match o {
            Outcome::Applied { results } => Kind::Applied(Applied {
                results: results.into_iter().map(Into::into).collect(),
            }),
            Outcome::Rejected { reason } => Kind::Rejected(Rejected {
                reason: Some(reason.into()),
            }),
        };
        proto::Outcome { kind: Some(kind) }
    }
}

impl From<OpResult> for proto::OpResult {
    fn from(r: OpResult) -> proto::OpResult {
        use proto::op_result::{self as res, Kind};
        let kind = match r {
            OpResult::Put { version } => Kind::Put(res::Put { version }),
            OpResult::Get { version, value } => Kind::Get(res::Get {
                version,
                value: value.map(Into::into),
            }),
            OpResult::Delete { existed } => Kind::Delete(res::Delete { existed }),
            OpResult::Cas { version } => Kind::Cas(res::Cas { version }),
            OpResult::Reserve { version, remaining } => {
                Kind::Reserve(res::Reserve { version, remaining })
            }
            OpResult::Release { version, remaining } => {
                Kind::Release(res::Release { version, remaining })
            }
            OpResult::SetStock { version, stock } => {
                Kind::SetStock(res::SetStock { version, stock })
            }
            OpResult::Claim {
                version,
                holder,
                expires_at_ms,
            } => Kind::Claim(res::Claim {
                version,
                holder,
                expires_at_ms,
            }),
            OpResult::ReleaseClaim => Kind::ReleaseClaim(res::ReleaseClaim {}),
        };
        proto::OpResult { kind: Some(kind) }
    }
}

fn access(a: Access) -> proto::Access {
    match a {
        Access::Read => proto::Access::Read,
        Access::Write => proto::Access::Write,
    }
}

fn value_kind(k: Kind) -> proto::ValueKind {
    match k {
        Kind::Bytes => proto::ValueKind::Bytes,
        Kind::Stock => proto::ValueKind::Stock,
        Kind::Claim => proto::ValueKind::Claim,
    }
}

impl From<Reason> for proto::Reason {
    fn from(r: Reason) -> proto::Reason {
        use proto::reason::{self, Kind};
        let message = r.to_string();
        let failed = |index: usize, key: synod_types::Key, failure: Failure| reason::Failed {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            key: key.to_string(),
            failure: Some(failure.into()),
        };
        let kind = match r {
            Reason::Invalid(e) => Kind::Invalid(reason::Invalid {
                detail: e.to_string(),
            }),
            Reason::Undecodable(e) => Kind::Undecodable(reason::Undecodable {
                detail: e.to_string(),
            }),
            Reason::MissingSessionKey => Kind::MissingSessionKey(reason::Empty {}),
            Reason::SessionRequired => Kind::SessionRequired(reason::Empty {}),
            Reason::UndeclaredKey { key, access: a } => {
                Kind::UndeclaredKey(reason::UndeclaredKey {
                    key: key.to_string(),
                    access: access(a).into(),
                })
            }
            Reason::StaleRequest { last_applied } => {
                Kind::StaleRequest(reason::StaleRequest { last_applied })
            }
            Reason::GuardFailed {
                guard,
                key,
                failure,
            } => Kind::GuardFailed(failed(guard, key, failure)),
            Reason::OpFailed { op, key, failure } => Kind::OpFailed(failed(op, key, failure)),
        };
        proto::Reason {
            message,
            kind: Some(kind),
        }
    }
}

impl From<Failure> for proto::Failure {
    fn from(f: Failure) -> proto::Failure {
        use proto::failure::{self, Kind};
        let kind = match f {
            Failure::VersionMismatch { expected, actual } => {
                Kind::VersionMismatch(failure::VersionMismatch { expected, actual })
            }
            Failure::Absent => Kind::Absent(failure::Empty {}),
            Failure::WrongType { expected, actual } => Kind::WrongType(failure::WrongType {
                expected: value_kind(expected).into(),
                actual: value_kind(actual).into(),
            }),
            Failure::InsufficientStock {
                requested,
                available,
            } => Kind::InsufficientStock(failure::InsufficientStock {
                requested,
                available,
            }),
            Failure::StockOverflow { stock, added } => {
                Kind::StockOverflow(failure::StockOverflow { stock, added })
            }
            Failure::ClaimHeld {
                holder,
                expires_at_ms,
            } => Kind::ClaimHeld(failure::ClaimHeld {
                holder,
                expires_at_ms,
            }),
            Failure::NotHolder { holder } => Kind::NotHolder(failure::NotHolder { holder }),
            Failure::VersionExhausted => Kind::VersionExhausted(failure::Empty {}),
        };
        proto::Failure { kind: Some(kind) }
    }
}

impl From<StreamEvent> for proto::StreamEvent {
    fn from(e: StreamEvent) -> proto::StreamEvent {
        proto::StreamEvent {
            instance: Some(e.instance.into()),
            commands: e
                .commands
                .into_iter()
                .map(|c| proto::LogCommand {
                    client: c.client,
                    request: c.request,
                    keys: c.keys,
                    applied: c.applied,
                })
                .collect(),
            token: e.token,
        }
    }
}

impl From<StatusResponse> for proto::StatusResponse {
    fn from(s: StatusResponse) -> proto::StatusResponse {
        proto::StatusResponse {
            node: u32::from(s.node),
            members: s.members.into_iter().map(u32::from).collect(),
            epoch: s.epoch,
            boot_id: s.boot_id,
            applied: s.applied,
            state_digest: s.state_digest,
            pending_execution: s.pending_execution,
            in_flight: s.in_flight,
            waiting_proposals: s.waiting_proposals,
            wal_last_lsn: s.wal_last_lsn,
            wal_durable_lsn: s.wal_durable_lsn,
            wal_fsyncs: s.wal_fsyncs,
            wal_records: s.wal_records,
            wal_fsync_micros: s.wal_fsync_micros,
            fast_commits: s.fast_commits,
            slow_commits: s.slow_commits,
            recoveries: s.recoveries,
            fast_path_ratio: s.fast_path_ratio,
            executed_instances: s.executed_instances,
            peers: s
                .peers
                .into_iter()
                .map(|p| proto::PeerStatus {
                    node: u32::from(p.node),
                    connected: p.connected,
                    last_heard_ms: p.last_heard_ms,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_decision::ClaimState;
    use tonic::Code;

    fn every_op() -> Vec<Op> {
        vec![
            Op::put("a", b"x".to_vec()),
            Op::get("b"),
            Op::delete("c"),
            Op::cas("d", 3, b"y".to_vec()),
            Op::reserve("e", 2),
            Op::release("f", 4),
            Op::set_stock("g", 10),
            Op::claim("h", "agent-1", 500),
            Op::release_claim("i", "agent-2"),
        ]
    }

    fn every_guard() -> Vec<Guard> {
        vec![
            Guard::version("a", 1),
            Guard::exists("b"),
            Guard::stock_at_least("c", 5),
            Guard::claimed_by("d", "agent-3"),
        ]
    }

    #[test]
    fn every_op_and_guard_survives_the_round_trip() {
        for op in every_op() {
            assert_eq!(Op::try_from(proto::Op::from(op.clone())), Ok(op));
        }
        for g in every_guard() {
            assert_eq!(Guard::try_from(proto::Guard::from(g.clone())), Ok(g));
        }
        let req = proto::ProposeRequest {
            client: Some(7),
            request: Some(9),
            ops: every_op().into_iter().map(Into::into).collect(),
            guards: every_guard().into_iter().map(Into::into).collect(),
            issued_at_ms: Some(11),
            timeout_ms: None,
        };
        let w = wire::ProposeRequest::try_from(req).unwrap();
        assert_eq!(
            (w.client, w.request, w.issued_at_ms),
            (Some(7), Some(9), Some(11))
        );
        assert_eq!((w.ops, w.guards), (every_op(), every_guard()));
    }

    #[test]
    fn a_missing_op_or_guard_kind_names_its_field() {
        let mut req = proto::ProposeRequest {
            ops: vec![Op::get("a").into(), proto::Op { kind: None }],
            ..Default::default()
        };
        assert_eq!(
            wire::ProposeRequest::try_from(req.clone()).unwrap_err(),
            "ops[1].kind: not set"
        );
        req.ops.pop();
        req.guards = vec![proto::Guard { kind: None }];
        assert_eq!(
            wire::ProposeRequest::try_from(req).unwrap_err(),
            "guards[0].kind: not set"
        );
    }

    #[test]
    fn results_and_reasons_keep_their_fields() {
        use proto::op_result::Kind as R;
        let applied: proto::Outcome = Outcome::Applied {
            results: vec![
                OpResult::Reserve {
                    version: 4,
                    remaining: 6,
                },
                OpResult::Get {
                    version: 2,
                    value: Some(Value::Claim(ClaimState {
                        holder: "a".into(),
                        claimed_at_ms: 1,
                        expires_at_ms: 9,
                    })),
                },
                OpResult::ReleaseClaim,
            ],
        }
        .into();
        let Some(proto::outcome::Kind::Applied(a)) = applied.kind else {
            panic!("{applied:?}")
        };
        let kinds: Vec<_> = a.results.into_iter().map(|r| r.kind.unwrap()).collect();
        assert_eq!(
            kinds[0],
            R::Reserve(proto::op_result::Reserve {
                version: 4,
                remaining: 6
            })
        );
        let R::Get(g) = &kinds[1] else { panic!() };
        assert_eq!(
            g.value.as_ref().unwrap().kind,
            Some(proto::value::Kind::Claim(proto::ClaimState {
                holder: "a".into(),
                claimed_at_ms: 1,
                expires_at_ms: 9
            }))
        );
        assert_eq!(kinds[2], R::ReleaseClaim(proto::op_result::ReleaseClaim {}));

        let reason = Reason::OpFailed {
            op: 1,
            key: "sku".into(),
            failure: Failure::InsufficientStock {
                requested: 5,
                available: 2,
            },
        };
        let text = reason.to_string();
        let p: proto::Reason = reason.into();
        assert_eq!(p.message, text);
        assert_eq!(
            p.kind,
            Some(proto::reason::Kind::OpFailed(proto::reason::Failed {
                index: 1,
                key: "sku".into(),
                failure: Some(proto::Failure {
                    kind: Some(proto::failure::Kind::InsufficientStock(
                        proto::failure::InsufficientStock {
                            requested: 5,
                            available: 2
                        }
                    ))
                }),
            }))
        );
        let p: proto::Failure = Failure::WrongType {
            expected: Kind::Stock,
            actual: Kind::Bytes,
        }
        .into();
        assert_eq!(
            p.kind,
            Some(proto::failure::Kind::WrongType(proto::failure::WrongType {
                expected: proto::ValueKind::Stock.into(),
                actual: proto::ValueKind::Bytes.into(),
            }))
        );
    }

    /// The gRPC column of the error table, and the metadata every error
    /// carries.
    #[test]
    fn errors_map_to_codes_with_stable_code_and_retryability() {
        let cases = [
            (
                ApiError::InvalidArgument("ops: x".into()),
                Code::InvalidArgument,
                "invalid_argument",
                "false",
            ),
            (
                ApiError::Overloaded("full".into()),
                Code::ResourceExhausted,
                "overloaded",
                "true",
            ),
            (
                ApiError::Unavailable("stopping".into()),
                Code::Unavailable,
                "unavailable",
                "true",
            ),
            (
                ApiError::Timeout(5),
                Code::DeadlineExceeded,
                "timeout",
                "true",
            ),
            (ApiError::Aborted, Code::Aborted, "aborted", "true"),
            (
                ApiError::Gone("old".into()),
                Code::FailedPrecondition,
                "gone",
                "false",
            ),
        ];
        for (e, code, stable, retryable) in cases {
            let overloaded = matches!(e, ApiError::Overloaded(_));
            let message = e.message();
            let s = Status::from(e);
            assert_eq!(s.code(), code, "{stable}");
            assert_eq!(s.message(), message);
            let md = s.metadata();
            assert_eq!(md.get(SYNOD_CODE).unwrap(), stable);
            assert_eq!(md.get(SYNOD_RETRYABLE).unwrap(), retryable);
            assert_eq!(
                md.get(RETRY_AFTER_MS)
                    .map(|v| v.to_str().unwrap().to_string()),
                overloaded.then(|| crate::api::OVERLOAD_RETRY_AFTER_MS.to_string()),
                "{stable}"
            );
        }
    }

    #[test]
    fn the_deadline_shortens_the_wait_by_the_margin() {
        let md = |v: &str| {
            let mut m = MetadataMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            m
        };
        assert_eq!(grpc_timeout(&md("250m")), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout(&md("3S")), Some(Duration::from_secs(3)));
        assert_eq!(grpc_timeout(&md("2H")), Some(Duration::from_secs(7200)));
        assert_eq!(
            grpc_timeout(&md("100000u")),
            Some(Duration::from_millis(100))
        );
        for bad in ["", "m", "12", "123456789m", "1x", "-1m"] {
            assert_eq!(grpc_timeout(&md(bad)), None, "{bad:?}");
        }
        assert_eq!(wait_ms(None, &MetadataMap::new()), None);
        assert_eq!(wait_ms(Some(500), &MetadataMap::new()), Some(500));
        assert_eq!(wait_ms(None, &md("1S")), Some(980));
        assert_eq!(wait_ms(Some(300), &md("1S")), Some(300));
        assert_eq!(wait_ms(Some(3000), &md("1S")), Some(980));
        // A deadline inside the margin still waits a moment.
        assert_eq!(wait_ms(None, &md("5m")), Some(1));
    }
}
