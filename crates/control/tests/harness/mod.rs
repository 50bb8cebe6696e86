//! An in-process cluster of `Control`s: temp directories, and an in-memory
//! router that can drop, delay and cut links, plus the leader-uniqueness
//! checker.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synod_control::{
    Control, ControlCommand, ControlConfig, ControlError, ControlMessage, ControlReply,
    ControlState, MemberInfo,
};
use synod_types::{NodeId, SplitMix64};
use tempfile::TempDir;
use tokio::task::JoinHandle;

/// The cluster id every test uses.
pub const CLUSTER_ID: u64 = 42;

/// How long a test waits for a condition before failing: several election
/// rounds (elections take 0.5–1 s each) on a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn info(id: NodeId) -> MemberInfo {
    MemberInfo {
        peer_addr: SocketAddr::from(([127, 0, 0, 1], 20_000 + id)),
        api_addr: SocketAddr::from(([127, 0, 0, 1], 21_000 + id)),
        grpc_addr: None,
    }
}

pub fn members(ids: &[NodeId]) -> BTreeMap<NodeId, MemberInfo> {
    ids.iter().map(|i| (*i, info(*i))).collect()
}

#[derive(Default)]
struct RouterState {
    nodes: HashMap<NodeId, Control>,
    /// Directed links that are down.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Probability of dropping a message, in 1/1000.
    drop_per_mille: u64,
    /// Uniform extra delay per message, in ms.
    delay_ms_max: u64,
    rng: Option<SplitMix64>,
    delivered: u64,
}

/// Routes `ControlMessage`s between the nodes of one cluster.
#[derive(Clone, Default)]
pub struct Router {
    state: Arc<Mutex<RouterState>>,
}

impl Router {
    fn lock(&self) -> std::sync::MutexGuard<'_, RouterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn send_fn(&self, from: NodeId) -> synod_control::SendFn {
        let router = self.clone();
        Arc::new(move |to, msg| router.route(from, to, msg))
    }

    fn route(&self, from: NodeId, to: NodeId, msg: ControlMessage) {
        // Every message crosses the wire format the runtime's transport
        // uses (postcard), so the tests check it too.
        let bytes = postcard::to_allocvec(&msg).expect("encode ControlMessage");
        let msg: ControlMessage = postcard::from_bytes(&bytes).expect("decode ControlMessage");
        let delay = {
            let mut st = self.lock();
            if st.cut.contains(&(from, to)) {
                return;
            }
            let (drop_pm, delay_max) = (st.drop_per_mille, st.delay_ms_max);
            let rng = st.rng.get_or_insert_with(|| SplitMix64::new(1));
            if drop_pm > 0 && rng.below(1000) < drop_pm {
                return;
            }
            let delay = if delay_max > 0 {
                rng.below(delay_max + 1)
            } else {
                0
            };
            st.delivered += 1;
            delay
        };
        let router = self.clone();
        tokio::spawn(async move {
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            // Looked up at arrival: a node restarted meanwhile gets it.
            let target = {
                let st = router.lock();
                if st.cut.contains(&(from, to)) {
                    return;
                }
                st.nodes.get(&to).cloned()
            };
            if let Some(node) = target {
                node.deliver(from, msg);
            }
        });
    }

    pub fn set_faults(&self, seed: u64, drop_per_mille: u64, delay_ms_max: u64) {
        let mut st = self.lock();
        st.rng = Some(SplitMix64::new(seed));
        st.drop_per_mille = drop_per_mille;
        st.delay_ms_max = delay_ms_max;
    }

    /// Cuts both directions between `a` and every node of `others`.
    pub fn isolate(&self, a: NodeId, others: &[NodeId]) {
        let mut st = self.lock();
        for o in others {
            st.cut.insert((a, *o));
            st.cut.insert((*o, a));
        }
    }

    /// Splits the nodes into two sides that cannot talk.
    pub fn partition(&self, left: &[NodeId], right: &[NodeId]) {
        let mut st = self.lock();
        for l in left {
            for r in right {
                st.cut.insert((*l, *r));
                st.cut.insert((*r, *l));
            }
        }
    }

    pub fn heal(&self) {
        self.lock().cut.clear();
    }
}

/// One observation: `observer` saw `leader` lead `term`.
pub type Observation = (NodeId, u64, NodeId);

/// Returns a term with two different leaders, if the observations have one
/// (Raft's Election Safety).
pub fn two_leaders_in_one_term(obs: &[Observation]) -> Option<(u64, NodeId, NodeId)> {
    let mut by_term: BTreeMap<u64, NodeId> = BTreeMap::new();
    for (_, term, leader) in obs {
        match by_term.get(term) {
            Some(l) if l != leader => return Some((*term, *l, *leader)),
            Some(_) => {}
            None => {
                by_term.insert(*term, *leader);
            }
        }
    }
    None
}

pub struct Cluster {
    pub router: Router,
    dirs: BTreeMap<NodeId, TempDir>,
    pub observations: Arc<Mutex<Vec<Observation>>>,
    watchers: Mutex<Vec<JoinHandle<()>>>,
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster {
            router: Router::default(),
            dirs: BTreeMap::new(),
            observations: Arc::new(Mutex::new(Vec::new())),
            watchers: Mutex::new(Vec::new()),
        }
    }

    pub fn dir(&mut self, id: NodeId) -> std::path::PathBuf {
        self.dirs
            .entry(id)
            .or_insert_with(|| tempfile::tempdir().unwrap())
            .path()
            .join("control")
    }

    /// Starts node `id` on its directory (kept across restarts) and a
    /// watcher recording its (term, leader) observations.
    pub async fn start(&mut self, id: NodeId) -> Control {
        let cfg = ControlConfig {
            me: id,
            cluster_id: CLUSTER_ID,
            dir: self.dir(id),
            me_info: info(id),
        };
        let c = Control::start(cfg, self.router.send_fn(id))
            .await
            .expect("start");
        self.router.lock().nodes.insert(id, c.clone());
        let obs = Arc::clone(&self.observations);
        let watched = c.clone();
        let task = tokio::spawn(async move {
            let mut last = None;
            loop {
                let s = watched.status();
                if let Some(l) = s.leader {
                    if last != Some((s.term, l)) {
                        last = Some((s.term, l));
                        obs.lock().unwrap().push((id, s.term, l));
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        self.watchers.lock().unwrap().push(task);
        c
    }

    /// Starts `ids` and bootstraps them as the initial members.
    pub async fn start_initialised(&mut self, ids: &[NodeId]) {
        for id in ids {
            self.start(*id).await;
        }
        for id in ids {
            self.node(*id)
                .initialize(members(ids))
                .await
                .expect("initialize");
        }
    }

    pub fn node(&self, id: NodeId) -> Control {
        self.router
            .lock()
            .nodes
            .get(&id)
            .cloned()
            .expect("live node")
    }

    pub fn live(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.router.lock().nodes.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Crash-stops node `id` (its directory stays).
    pub async fn stop(&self, id: NodeId) {
        let c = self.router.lock().nodes.remove(&id);
        if let Some(c) = c {
            c.shutdown().await;
        }
    }

    /// The leader, if exactly one live node thinks it leads and every live
    /// node in `among` agrees.
    pub fn leader_among(&self, among: &[NodeId]) -> Option<NodeId> {
        let leaders: Vec<NodeId> = among
            .iter()
            .filter(|id| self.node(**id).status().is_leader)
            .copied()
            .collect();
        let [l] = leaders[..] else { return None };
        among
            .iter()
            .all(|id| self.node(*id).status().leader == Some(l))
            .then_some(l)
    }

    pub async fn wait_leader(&self, among: &[NodeId]) -> NodeId {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(l) = self.leader_among(among) {
                return l;
            }
            if tokio::time::Instant::now() > deadline {
                let all: Vec<_> = self
                    .live()
                    .into_iter()
                    .map(|id| (id, self.node(id).status()))
                    .collect();
                panic!("no agreed leader among {among:?}: {all:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `cond` holds for node `id`'s applied state.
    pub async fn wait_state(
        &self,
        id: NodeId,
        what: &str,
        cond: impl Fn(&ControlState) -> bool,
    ) -> Arc<ControlState> {
        let mut rx = self.node(id).state();
        let wait = async {
            loop {
                let s = rx.borrow_and_update().clone();
                if cond(&s) {
                    return s;
                }
                let _ = rx.changed().await;
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("node {id}: timed out waiting for {what}"))
    }

    /// Submits `cmd` on node `from` until node `check` applied it (`cond`),
    /// resubmitting every 300 ms as the runtime does: a submit is dropped
    /// when the submitter knows no leader or the leader just changed.
    pub async fn submit_until(
        &self,
        from: NodeId,
        cmd: ControlCommand,
        check: NodeId,
        cond: impl Fn(&ControlState) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut rx = self.node(check).state();
        loop {
            self.node(from).submit(cmd.clone());
            let wait = async {
                loop {
                    if cond(&rx.borrow_and_update()) {
                        return;
                    }
                    let _ = rx.changed().await;
                }
            };
            if tokio::time::timeout(Duration::from_millis(300), wait)
                .await
                .is_ok()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{cmd} submitted on node {from} never applied on node {check}"
            );
        }
    }

    /// Waits until a status condition holds on node `id`.
    pub async fn wait_status(
        &self,
        id: NodeId,
        what: &str,
        cond: impl Fn(&synod_control::ControlStatus) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let s = self.node(id).status();
            if cond(&s) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {id}: timed out waiting for {what}; status {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes `cmd` on whichever node leads, retrying retryable errors.
    pub async fn write(&self, cmd: ControlCommand) -> ControlReply {
        self.write_among(&self.live(), cmd).await
    }

    /// Writes `cmd` on whichever node of `among` leads, retrying retryable
    /// errors.
    pub async fn write_among(&self, among: &[NodeId], cmd: ControlCommand) -> ControlReply {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let target = among
                .iter()
                .copied()
                .find(|id| self.node(*id).status().is_leader);
            if let Some(t) = target {
                match self.node(t).write(cmd.clone()).await {
                    Ok(r) => return r,
                    Err(e) if e.retryable() => {}
                    Err(e @ (ControlError::Storage(_) | ControlError::Fatal(_))) => {
                        panic!("write {cmd}: {e}")
                    }
                    Err(e) => panic!("write {cmd}: {e}"),
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "write {cmd}: no leader took it"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn observations(&self) -> Vec<Observation> {
        self.observations.lock().unwrap().clone()
    }

    pub async fn shutdown(self) {
        for t in self.watchers.lock().unwrap().drain(..) {
            t.abort();
        }
        for id in self.live() {
            self.stop(id).await;
        }
    }
}
