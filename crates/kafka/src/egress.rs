//! Egress: executed decisions to a topic (kafka.md §2).
//!
//! - **One publisher.** Every replica with `[kafka.egress]` runs this
//!   task, but only the holder of the control plane's egress lease
//!   publishes. The control plane's Raft leader takes the lease
//!   (`AcquireEgress`) whenever someone else holds it or nobody does, so
//!   the publisher follows leadership and a crashed publisher is replaced
//!   after one election. Every acquisition bumps the lease's generation.
//!   A holder starts publishing only after a Raft write confirmed its lease
//!   (`AcquireEgress` again, which keeps the generation), and stops when it
//!   no longer leads: a replica restarted with an old control state that
//!   still names it holder stays silent.
//! - **Fencing.** A publisher re-reads the lease before every batch and
//!   stops as soon as it is no longer the holder of its generation. With
//!   `transactions = true` it publishes in Kafka transactions under
//!   `transactional.id = synod-egress-<cluster_id>`, so the new holder's
//!   `init_transactions` fences the old producer at the broker and aborts
//!   its open transaction. Every record carries its decision id and the
//!   lease generation in headers ([`HEADER_DECISION_ID`],
//!   [`HEADER_GENERATION`]).
//! - **Resuming without loss.** After each acknowledged batch the publisher
//!   writes how far it has published, a resume token of the committed
//!   stream, to the replicated control state (`EgressPublished`, accepted
//!   only from the lease in force). A new holder subscribes to the
//!   committed stream from that token, so nothing executed is skipped.
//!   What was published after the last saved token is published again:
//!   consumers drop those duplicates by decision id (kafka.md §2: Kafka
//!   transactions alone are not trusted).
//! - **Layout.** One record per (decision, user conflict key), keyed by the
//!   key, so per-key order in the topic is the execution order (Kafka keeps
//!   a key in one partition, and conflicting decisions execute in one order
//!   everywhere). Session keys are internal and not published. Duplicates
//!   answered from the session table and sessionless reads are not
//!   decisions and are not published; rejected decisions are, with their
//!   outcome. The value is an [`EgressRecord`] as JSON.

use crate::producer::{self, Pending, Producer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::Producer as _;
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use synod_client::wire::StreamEvent;
use synod_client::Client;
use synod_control::{ControlCommand, ControlRejection, ControlReply};
use synod_decision::{Decision, Outcome};
use synod_runtime::config::EgressConfig;
use synod_runtime::metrics::KafkaMetrics;
use synod_types::NodeId;

/// Header: the decision's id, `<instance>/<index in the instance>`, the
/// same on every replica and across republishing; consumers de-duplicate
/// by it.
pub const HEADER_DECISION_ID: &str = "synod-decision-id";

/// Header: the lease generation (fencing epoch) the record was published
/// under.
pub const HEADER_GENERATION: &str = "synod-egress-generation";

/// How often a replica that does not publish checks the lease.
pub const LEASE_POLL: Duration = Duration::from_millis(200);

/// How long a batch waits for more executed decisions once it has one.
pub const BATCH_LINGER: Duration = Duration::from_millis(20);

/// How long one wait on the committed stream lasts before the lease is
/// checked again.
const STREAM_WAIT: Duration = Duration::from_millis(200);

/// Timeout of `init_transactions` and `commit_transaction`, and of one
/// record's acknowledgement without transactions.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause before a new publishing session after a failed one (broker down,
/// stream gone, fenced).
pub const SESSION_RETRY: Duration = Duration::from_millis(500);

/// The value of one published record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRecord {
    /// `<instance>/<index>` ([`HEADER_DECISION_ID`]).
    pub id: String,
    /// The conflict key this record is published under.
    pub key: String,
    /// Every user conflict key of the decision.
    pub keys: Vec<String>,
    /// Session.
    pub client: u64,
    /// Request number in the session.
    pub request: u64,
    /// True if executing it changed the state.
    pub applied: bool,
    /// The decision, if its body decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// Its outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Lease generation it was published under.
    pub generation: u64,
}

/// The records one executed instance becomes. Pure.
pub fn records_of(ev: &StreamEvent, generation: u64) -> Vec<EgressRecord> {
    let mut out = Vec::new();
    for (i, c) in ev.commands.iter().enumerate() {
        if c.duplicate || c.client == synod_decision::READ_ONLY_CLIENT {
            continue;
        }
        let keys: Vec<String> = c
            .keys
            .iter()
            .filter(|k| !k.starts_with(synod_decision::RESERVED_KEY_PREFIX))
            .cloned()
            .collect();
        let id = format!("{}/{i}", ev.instance);
        for k in &keys {
            out.push(EgressRecord {
                id: id.clone(),
                key: k.clone(),
                keys: keys.clone(),
                client: c.client,
                request: c.request,
                applied: c.applied,
                decision: c.decision.clone(),
                outcome: c.outcome.clone(),
                generation,
            });
        }
    }
    out
}

/// Where the publisher runs and what it may call.
pub struct EgressEnv {
    /// This replica.
    pub me: NodeId,
    /// The cluster id (`transactional.id = synod-egress-<cluster_id>`).
    pub cluster_id: u64,
    /// Client config with brokers and passthrough properties.
    pub base: ClientConfig,
    /// `[kafka.egress]`.
    pub cfg: EgressConfig,
    /// Replica APIs to stream from, the local one first.
    pub endpoints: Vec<String>,
    /// The control plane.
    pub control: synod_control::Control,
    /// To block on control-plane calls.
    pub runtime: tokio::runtime::Handle,
    /// Metric handles.
    pub metrics: KafkaMetrics,
}

/// A running egress task; [`Egress::stop`] ends it.
pub struct Egress {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts the egress task.
pub fn start(env: EgressEnv) -> Result<Egress, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::Builder::new()
        .name("kafka-egress".into())
        .spawn(move || run(&env, &s))
        .map_err(|e| format!("spawning the egress thread: {e}"))?;
    Ok(Egress {
        stop,
        thread: Some(thread),
    })
}

impl Egress {
    /// Stops publishing (an open transaction is aborted) and waits.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Egress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn run(env: &EgressEnv, stop: &AtomicBool) {
    let control = &env.control;
    while !stop.load(Ordering::SeqCst) {
        let state = control.state().borrow().clone();
        match state.egress {
            Some(l) if l.holder == env.me => {
                // Confirm through a Raft write before publishing: only the
                // real leader's write succeeds, and once it is applied the
                // local state is current. A replica restarted with an old
                // state that names it holder (and an old vote that makes it
                // believe it leads) fails here and stays silent.
                let confirmed = env
                    .runtime
                    .block_on(control.write(ControlCommand::AcquireEgress { holder: env.me }));
                let lease = match confirmed {
                    Ok(ControlReply::Egress(c)) if c.holder == env.me => c,
                    other => {
                        tracing::debug!("kafka egress: lease not confirmed: {other:?}");
                        sleep_unless(stop, LEASE_POLL);
                        continue;
                    }
                };
                let token = control.state().borrow().egress_published.clone();
                env.metrics.egress_holder.set(1);
                env.metrics.egress_generation.set(lease.generation as i64);
                tracing::info!(
                    generation = lease.generation,
                    "kafka egress: publishing from the replicated frontier"
                );
                if let Err(e) = session(env, stop, lease.generation, &token) {
                    tracing::warn!(generation = lease.generation, "kafka egress: {e}");
                    sleep_unless(stop, SESSION_RETRY);
                }
            }
            _ => {
                env.metrics.egress_holder.set(0);
                env.metrics.egress_generation.set(0);
                let member = state.current().is_some_and(|r| r.config.contains(env.me));
                if member && control.status().is_leader {
                    let r = env
                        .runtime
                        .block_on(control.write(ControlCommand::AcquireEgress { holder: env.me }));
                    match r {
                        Ok(ControlReply::Egress(l)) => {
                            tracing::info!(
                                generation = l.generation,
                                "kafka egress: lease acquired"
                            );
                            continue;
                        }
                        Ok(other) => tracing::debug!("kafka egress: acquire: {other:?}"),
                        Err(e) => tracing::debug!("kafka egress: acquire: {e}"),
                    }
                }
                sleep_unless(stop, LEASE_POLL);
            }
        }
    }
    env.metrics.egress_holder.set(0);
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
    }
}

/// True while this replica holds lease `generation` and leads the control
/// plane. Requiring leadership too keeps a replica that restarted with an
/// old control state (in which it still held the lease) from publishing
/// until it has caught up: the leader's state is current.
fn still_holder(env: &EgressEnv, generation: u64) -> bool {
    env.control.status().is_leader
        && env
            .control
            .state()
            .borrow()
            .egress
            .is_some_and(|l| l.holder == env.me && l.generation == generation)
}

/// Publishes under lease `generation` from `token` until the lease moves,
/// `stop` is set, or something fails.
fn session(env: &EgressEnv, stop: &AtomicBool, generation: u64, token: &str) -> Result<(), String> {
    let txn_id = format!("synod-egress-{}", env.cluster_id);
    let p = producer::create(
        env.base.clone(),
        env.cfg.transactions.then_some(txn_id.as_str()),
    )?;
    if env.cfg.transactions {
        p.init_transactions(BROKER_TIMEOUT)
            .map_err(|e| format!("init_transactions: {e}"))?;
    }
    let client = Client::new(env.endpoints.clone()).map_err(|e| e.to_string())?;
    let mut sub = client.subscribe(token);
    loop {
        if stop.load(Ordering::SeqCst) || !still_holder(env, generation) {
            return Ok(());
        }
        let mut batch: Vec<StreamEvent> = Vec::new();
        let mut records = 0usize;
        let mut wait = STREAM_WAIT;
        while records < env.cfg.batch_max {
            match sub
                .next(wait)
                .map_err(|e| format!("committed stream: {e}"))?
            {
                Some(ev) => {
                    records += ev.commands.len();
                    batch.push(ev);
                    wait = BATCH_LINGER;
                }
                None => break,
            }
        }
        let Some(last) = batch.last() else {
            continue;
        };
        let frontier = last.token.clone();
        // Fence before writing: a deposed holder publishes nothing more.
        if !still_holder(env, generation) {
            return Ok(());
        }
        let recs: Vec<EgressRecord> = batch
            .iter()
            .flat_map(|ev| records_of(ev, generation))
            .collect();
        publish(env, &p, &recs, generation)?;
        env.metrics.egress_published.inc_by(recs.len() as u64);
        let saved = env
            .runtime
            .block_on(env.control.write(ControlCommand::EgressPublished {
                generation,
                token: frontier,
            }));
        match saved {
            Ok(ControlReply::Rejected(ControlRejection::StaleEgress { .. })) => return Ok(()),
            Ok(ControlReply::Rejected(r)) => return Err(format!("saving the frontier: {r}")),
            Ok(_) => {}
            // Not the Raft leader any more, or no quorum: the next batch's
            // save carries this one's progress too; the new leader takes
            // the lease and resumes from the last saved token.
            Err(e) => tracing::debug!("kafka egress: saving the frontier: {e}"),
        }
    }
}

fn publish(
    env: &EgressEnv,
    p: &Producer,
    recs: &[EgressRecord],
    generation: u64,
) -> Result<(), String> {
    if env.cfg.transactions {
        p.begin_transaction()
            .map_err(|e| format!("begin_transaction: {e}"))?;
    }
    let mut pending: Vec<Pending> = Vec::with_capacity(recs.len());
    let gen_text = generation.to_string();
    for r in recs {
        let value = serde_json::to_vec(r).map_err(|e| e.to_string())?;
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_DECISION_ID,
                value: Some(&r.id),
            })
            .insert(Header {
                key: HEADER_GENERATION,
                value: Some(&gen_text),
            });
        match producer::send(
            p,
            &env.cfg.topic,
            Some(r.key.as_bytes()),
            Some(&value),
            headers,
        ) {
            Ok(x) => pending.push(x),
            Err(e) => {
                if env.cfg.transactions {
                    let _ = p.abort_transaction(BROKER_TIMEOUT);
                }
                return Err(e);
            }
        }
    }
    if env.cfg.transactions {
        if let Err(e) = p.commit_transaction(BROKER_TIMEOUT) {
            let _ = p.abort_transaction(BROKER_TIMEOUT);
            return Err(format!("commit_transaction: {e}"));
        }
    }
    for x in pending {
        x.wait(BROKER_TIMEOUT)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_client::wire::LogCommand;
    use synod_types::CmdId;

    fn cmd(client: u64, keys: &[&str], duplicate: bool) -> LogCommand {
        LogCommand {
            client,
            request: 1,
            keys: keys.iter().map(|k| k.to_string()).collect(),
            applied: !duplicate,
            duplicate,
            decision: None,
            outcome: None,
        }
    }

    #[test]
    fn one_record_per_user_key_and_no_duplicates_reads_or_session_keys() {
        let ev = StreamEvent {
            instance: CmdId {
                epoch: 0,
                seq: 7,
                origin: 2,
            },
            commands: vec![
                cmd(5, &["a", "b", "\0session/5"], false),
                cmd(6, &["a", "\0session/6"], true),
                cmd(synod_decision::READ_ONLY_CLIENT, &["a"], false),
                cmd(8, &["c", "\0session/8"], false),
            ],
            token: "t".into(),
        };
        let recs = records_of(&ev, 3);
        let got: Vec<(String, String)> =
            recs.iter().map(|r| (r.id.clone(), r.key.clone())).collect();
        let id0 = format!("{}/0", ev.instance);
        let id3 = format!("{}/3", ev.instance);
        assert_eq!(
            got,
            vec![
                (id0.clone(), "a".to_string()),
                (id0, "b".to_string()),
                (id3, "c".to_string())
            ]
        );
        assert!(recs.iter().all(|r| r.generation == 3));
        assert_eq!(recs[0].keys, vec!["a".to_string(), "b".to_string()]);
    }
}
