//! The gRPC client API (`synod.v1.Synod`) on real replica processes, through
//! the generated tonic client: proposals and reads (local and
//! linearizable), exactly-once retries shared with the HTTP API, the error
//! table's codes and metadata, the message size limit, deadlines, the
//! committed stream with resume tokens across replicas, and status.
//!
//! Ports 29300–29399: HTTP `base+id`, transport `base+10+id`, gRPC
//! `base+20+id`.

mod cluster;

use cluster::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use synod_client::wire::ProposeRequest as HttpPropose;
use synod_decision::{Op, Outcome};
use synod_runtime::grpc::proto::{self, synod_client::SynodClient};
use synod_runtime::grpc::tonic::transport::{Channel, Endpoint};
use synod_runtime::grpc::tonic::{Code, Request, Status};
use synod_runtime::grpc::{RETRY_AFTER_MS, SYNOD_CODE, SYNOD_RETRYABLE};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(c: &Cluster, id: u16) -> SynodClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{}", grpc_addr(c.base_port, id)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    SynodClient::new(channel)
}

fn propose(client: Option<u64>, request: Option<u64>, ops: Vec<Op>) -> proto::ProposeRequest {
    proto::ProposeRequest {
        client,
        request,
        ops: ops.into_iter().map(Into::into).collect(),
        guards: Vec::new(),
        issued_at_ms: None,
        timeout_ms: Some(10_000),
    }
}

fn read(key: &str, consistency: proto::Consistency) -> proto::ReadRequest {
    proto::ReadRequest {
        key: key.into(),
        consistency: consistency.into(),
    }
}

fn results(r: &proto::ProposeResponse) -> Vec<proto::op_result::Kind> {
    match r.outcome.as_ref().and_then(|o| o.kind.clone()) {
        Some(proto::outcome::Kind::Applied(a)) => {
            a.results.into_iter().map(|r| r.kind.unwrap()).collect()
        }
        other => panic!("not applied: {other:?}"),
    }
}

fn stock(v: &proto::ReadResponse) -> Option<u64> {
    match v.value.as_ref()?.kind.as_ref()? {
        proto::value::Kind::Stock(n) => Some(*n),
        other => panic!("not a stock: {other:?}"),
    }
}

fn md<'a>(s: &'a Status, key: &str) -> &'a str {
    s.metadata()
        .get(key)
        .unwrap_or_else(|| panic!("{s:?} has no {key}"))
        .to_str()
        .unwrap()
}

/// Asserts `s` is `code` with the table's metadata and a message starting
/// with `field` (the offending field's name).
fn assert_invalid(s: &Status, field: &str) {
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(
        s.message().starts_with(field),
        "{s:?} does not name {field}"
    );
    assert_eq!(md(s, SYNOD_CODE), "invalid_argument");
    assert_eq!(md(s, SYNOD_RETRYABLE), "false");
}

#[test]
fn propose_read_retry_errors_limits_and_status() {
    let mut c = Cluster::with_grpc("grpc-api", 3, 29300, "");
    c.start_all();
    c.wait_ready(Duration::from_secs(20));
    let rt = runtime();
    rt.block_on(async {
        let mut g0 = connect(&c, 0).await;
        let mut g1 = connect(&c, 1).await;
        let mut g2 = connect(&c, 2).await;

        // Propose; the results are the state machine's, op by op.
        let r = g0
            .propose(propose(Some(77), Some(1), vec![Op::set_stock("sku", 10)]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((r.client, r.request), (77, 1));
        assert_eq!(
            results(&r),
            vec![proto::op_result::Kind::SetStock(
                proto::op_result::SetStock {
                    version: 1,
                    stock: 10
                }
            )]
        );
        let reserve = propose(Some(77), Some(2), vec![Op::reserve("sku", 3)]);
        let first = g1.propose(reserve.clone()).await.unwrap().into_inner();
        assert_eq!(
            results(&first),
            vec![proto::op_result::Kind::Reserve(proto::op_result::Reserve {
                version: 2,
                remaining: 7
            })]
        );

        // Exactly once: the same (client, request) again, on another
        // replica, returns the recorded result and reserves nothing more.
        // (The retry travels in an instance of its own; the session table
        // answers it.)
        let again = g2.propose(reserve).await.unwrap().into_inner();
        assert_eq!(
            (again.client, again.request, &again.outcome),
            (first.client, first.request, &first.outcome),
            "a retry must return the recorded result"
        );
        let lin = g2
            .read(read("sku", proto::Consistency::Linearizable))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stock(&lin), Some(7), "{lin:?}");
        assert_eq!(lin.version, 2);
        assert_eq!(lin.consistency, proto::Consistency::Linearizable as i32);
        assert!(lin.staleness.is_none(), "a linearizable read is not stale");

        // A local read catches up, and says it is local.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let local = g1
                .read(read("sku", proto::Consistency::Unspecified))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(local.consistency, proto::Consistency::Local as i32);
            let st = local.staleness.expect("a local read states its staleness");
            if stock(&local) == Some(7) {
                // Caught up: it has executed at least the two writes.
                assert!(st.executed_instances >= 2, "{st:?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica 1 never saw 7: {local:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Rejected with a typed reason; the HTTP API returns the same
        // recorded outcome for the same session and request.
        let r = g0
            .propose(propose(Some(77), Some(3), vec![Op::reserve("sku", 100)]))
            .await
            .unwrap()
            .into_inner();
        let Some(proto::outcome::Kind::Rejected(rej)) = r.outcome.unwrap().kind else {
            panic!("oversold")
        };
        let reason = rej.reason.unwrap();
        assert_eq!(
            reason.kind,
            Some(proto::reason::Kind::OpFailed(proto::reason::Failed {
                index: 0,
                key: "sku".into(),
                failure: Some(proto::Failure {
                    kind: Some(proto::failure::Kind::InsufficientStock(
                        proto::failure::InsufficientStock {
                            requested: 100,
                            available: 7
                        }
                    ))
                })
            }))
        );
        let http = tokio::task::block_in_place(|| {
            c.client(1).propose(&HttpPropose {
                client: Some(77),
                request: Some(3),
                ops: vec![Op::reserve("sku", 100)],
                guards: vec![],
                issued_at_ms: None,
                timeout_ms: None,
            })
        })
        .unwrap();
        let Outcome::Rejected {
            reason: http_reason,
        } = http.outcome
        else {
            panic!("{http:?}")
        };
        assert_eq!(http_reason.to_string(), reason.message);
        assert_eq!((http.client, http.request), (r.client, r.request));

        // Bad input: INVALID_ARGUMENT naming the field.
        let e = g0
            .propose(propose(Some(5), None, vec![Op::get("a")]))
            .await
            .unwrap_err();
        assert_invalid(&e, "request");
        let mut no_kind = propose(None, None, vec![Op::get("a")]);
        no_kind.ops.push(proto::Op { kind: None });
        assert_invalid(&g0.propose(no_kind).await.unwrap_err(), "ops[1].kind");
        let e = g0
            .propose(propose(None, None, vec![Op::reserve("sku", 0)]))
            .await
            .unwrap_err();
        assert_invalid(&e, "op 0");
        assert_invalid(
            &g0.read(read("", proto::Consistency::Local))
                .await
                .unwrap_err(),
            "key",
        );
        let mut bad = read("sku", proto::Consistency::Local);
        bad.consistency = 9;
        assert_invalid(&g0.read(bad).await.unwrap_err(), "consistency");

        // A message above limits.max_request_bytes (1 MiB) is refused before
        // it is decoded; nothing is written.
        let big = propose(None, None, vec![Op::put("big", vec![7u8; (1 << 20) + 1])]);
        let e = g0.propose(big).await.unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
        assert!(e.message().contains("1048576"), "{e:?}");
        let v = g0
            .read(read("big", proto::Consistency::Linearizable))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((v.version, v.value), (0, None));

        // Status: this replica, its members and peers, what it executed.
        let st = g0
            .status(proto::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(st.node, 0);
        assert_eq!(st.members, vec![0, 1, 2]);
        assert_eq!(
            st.peers.iter().map(|p| p.node).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(st.executed_instances >= 4, "{st:?}");
        assert!(st.fast_commits + st.slow_commits >= 1, "{st:?}");
    });

    // Without a quorum nothing commits: the wait ends at the request's
    // timeout_ms, or just before the call's gRPC deadline, with
    // DEADLINE_EXCEEDED (ours: synod-code timeout, retryable).
    c.kill(1);
    c.kill(2);
    rt.block_on(async {
        let mut g0 = connect(&c, 0).await;
        let mut short = propose(Some(78), Some(1), vec![Op::set_stock("t", 1)]);
        short.timeout_ms = Some(300);
        let started = Instant::now();
        let e = g0.propose(short).await.unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
        assert_eq!(md(&e, SYNOD_CODE), "timeout");
        assert_eq!(md(&e, SYNOD_RETRYABLE), "true");
        assert!(started.elapsed() < Duration::from_secs(5));

        let mut call = Request::new(propose(Some(78), Some(2), vec![Op::set_stock("t", 2)]));
        call.get_mut().timeout_ms = None;
        call.set_timeout(Duration::from_millis(400));
        let e = g0.propose(call).await.unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
        assert_eq!(md(&e, SYNOD_CODE), "timeout", "{e:?}");
        assert!(e.metadata().get(RETRY_AFTER_MS).is_none());
    });
}

/// Drains `stream` until `want` events have arrived (or panics after
/// `patience`).
async fn take(
    stream: &mut synod_runtime::grpc::tonic::Streaming<proto::StreamEvent>,
    events: &mut Vec<proto::StreamEvent>,
    want: usize,
    patience: Duration,
) {
    while events.len() < want {
        let next = tokio::time::timeout(patience, stream.message())
            .await
            .unwrap_or_else(|_| panic!("stream stalled at {} of {want}", events.len()));
        events.push(next.unwrap().expect("stream ended"));
    }
}

#[test]
fn subscribe_in_order_resume_on_another_replica_gone_and_stop() {
    let mut c = Cluster::with_grpc(
        "grpc-stream",
        3,
        29330,
        "[storage]\nsnapshot_every_records = 40\n",
    );
    c.start_all();
    c.wait_ready(Duration::from_secs(20));
    const N: u64 = 120;
    let rt = runtime();
    rt.block_on(async {
        let mut g0 = connect(&c, 0).await;
        let mut g1 = connect(&c, 1).await;
        // Decisions of one session on one key: their order is fixed.
        for r in 1..=N {
            let p = propose(Some(42), Some(r), vec![Op::put("log", r.to_string())]);
            let to = if r % 2 == 0 { &mut g0 } else { &mut g1 };
            to.propose(p).await.unwrap();
        }
    });
    c.wait_converged(Duration::from_secs(30));
    // Instances, not decisions: one instance may carry several.
    let total = c.log(1).len();
    let (events, token) = rt.block_on(async {
        let mut g0 = connect(&c, 0).await;
        let mut g1 = connect(&c, 1).await;
        // From the start on replica 0, part of the stream...
        let mut s0 = g0
            .subscribe(proto::SubscribeRequest {
                from: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let mut events = Vec::new();
        take(&mut s0, &mut events, total / 2, Duration::from_secs(10)).await;
        drop(s0);
        // ... then the rest on replica 1 from the last token.
        let token = events.last().unwrap().token.clone();
        let mut s1 = g1
            .subscribe(proto::SubscribeRequest { from: token })
            .await
            .unwrap()
            .into_inner();
        take(&mut s1, &mut events, total, Duration::from_secs(10)).await;
        // Nothing else arrives: the resumed stream did not repeat anything.
        let extra = tokio::time::timeout(Duration::from_millis(500), s1.message()).await;
        assert!(extra.is_err(), "an extra event: {extra:?}");
        let token = events.last().unwrap().token.clone();

        // A malformed token names the field.
        let e = g1
            .subscribe(proto::SubscribeRequest {
                from: "not a token".into(),
            })
            .await
            .unwrap_err();
        assert_invalid(&e, "from");
        (events, token)
    });

    // Every executed instance exactly once, in the replicas' order: the
    // session's requests 1..=N, in order, with no gap.
    let ids: Vec<_> = events.iter().map(|e| e.instance.unwrap()).collect();
    let unique: BTreeSet<_> = ids.iter().map(|i| (i.epoch, i.seq, i.origin)).collect();
    assert_eq!(unique.len(), ids.len(), "an instance was streamed twice");
    let executed: BTreeSet<_> = c
        .log(1)
        .iter()
        .map(|e| {
            (
                e.instance.epoch,
                e.instance.seq,
                u32::from(e.instance.origin),
            )
        })
        .collect();
    assert_eq!(unique, executed, "the stream missed or invented instances");
    let requests: Vec<u64> = events
        .iter()
        .flat_map(|e| &e.commands)
        .filter(|c| c.client == 42 && c.applied)
        .map(|c| c.request)
        .collect();
    assert_eq!(requests, (1..=N).collect::<Vec<_>>());
    assert!(events
        .iter()
        .flat_map(|e| &e.commands)
        .all(|c| c.keys.contains(&"log".to_string())));

    // Replica 2 restarts from a snapshot: a fresh subscriber is refused
    // (gone), one with the token is served, and a graceful stop ends the
    // stream with UNAVAILABLE instead of cutting it.
    c.kill(2);
    c.start(2);
    c.wait_ready(Duration::from_secs(20));
    let mut s2 = rt.block_on(async {
        let mut g2 = connect(&c, 2).await;
        let e = g2
            .subscribe(proto::SubscribeRequest {
                from: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert_eq!(md(&e, SYNOD_CODE), "gone");
        assert_eq!(md(&e, SYNOD_RETRYABLE), "false");
        g2.subscribe(proto::SubscribeRequest { from: token })
            .await
            .unwrap()
            .into_inner()
    });
    let status = c.stop(2).expect("replica 2 was running");
    assert!(status.success(), "replica 2 did not stop cleanly: {status}");
    rt.block_on(async {
        let end = tokio::time::timeout(Duration::from_secs(5), s2.message())
            .await
            .expect("the stream did not end");
        let e = end.expect_err("the stream ended without a status");
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        assert_eq!(md(&e, SYNOD_RETRYABLE), "true");
    });
}

/// Overload over gRPC, end to end: a replica that admits two waiting
/// proposals (`limits.max_waiting_proposals`) refuses the rest of a burst
/// with RESOURCE_EXHAUSTED, `synod-code: overloaded`, retryable, and a
/// `retry-after-ms` hint; a refused proposal changes nothing (only the
/// accepted ones are in the replicas' logs).
#[test]
fn overload_is_resource_exhausted_with_a_retry_hint_and_changes_nothing() {
    let mut c = Cluster::with_grpc(
        "grpc-overload",
        3,
        29370,
        "[limits]\nmax_waiting_proposals = 2\n",
    );
    c.start_all();
    c.wait_ready(Duration::from_secs(20));
    const BURST: u64 = 64;
    let rt = runtime();
    let outcomes: Vec<Result<proto::ProposeResponse, Status>> = rt.block_on(async {
        let g0 = connect(&c, 0).await;
        let calls: Vec<_> = (0..BURST)
            .map(|i| {
                let mut g = g0.clone();
                tokio::spawn(async move {
                    let p = propose(
                        Some(1_000 + i),
                        Some(1),
                        vec![Op::put(format!("burst/{i}"), "x")],
                    );
                    g.propose(p).await.map(|r| r.into_inner())
                })
            })
            .collect();
        let mut out = Vec::new();
        for call in calls {
            out.push(call.await.unwrap());
        }
        out
    });
    let mut accepted = BTreeSet::new();
    let mut refused = 0;
    for (i, o) in outcomes.iter().enumerate() {
        match o {
            Ok(r) => {
                assert!(!results(r).is_empty(), "call {i}: {r:?}");
                accepted.insert(1_000 + i as u64);
            }
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "call {i}: {e:?}");
                assert_eq!(md(e, SYNOD_CODE), "overloaded");
                assert_eq!(md(e, SYNOD_RETRYABLE), "true");
                assert!(md(e, RETRY_AFTER_MS).parse::<u64>().unwrap() > 0);
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "a burst of {BURST} never hit a limit of 2");
    assert!(!accepted.is_empty(), "nothing was accepted");
    c.wait_converged(Duration::from_secs(30));
    for id in 0..3 {
        let applied: BTreeSet<u64> = c
            .log(id)
            .iter()
            .flat_map(|e| e.commands.iter())
            .filter(|cmd| cmd.applied && (1_000..1_000 + BURST).contains(&cmd.client))
            .map(|cmd| cmd.client)
            .collect();
        assert_eq!(
            applied, accepted,
            "replica {id} applied a refused proposal or lost one"
        );
    }
}
