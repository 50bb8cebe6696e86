//! Real sockets on 127.0.0.1: delivery, reconnects, restarts, refusals and
//! membership changes (crate docs, "Delivery guarantees", "Connections" and
//! "Membership").

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use synod_transport::codec::{self, Hello, FRAME_HEADER_LEN, HELLO_LEN};
use synod_transport::{
    PeerError, SendError, Transport, TransportConfig, PEERS_MAX, SHUTDOWN_FLUSH_MAX,
};
use synod_types::NodeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::Receiver;

/// Test message: (sender's sequence number, padding).
type Msg = (u64, Vec<u8>);
type Inbox = Receiver<(NodeId, Msg)>;

/// Cluster id of most tests; tests whose peers sit at released ports use
/// their own id, so a port reused by a concurrent test is refused at
/// handshake instead of silently receiving their messages.
const CLUSTER: u64 = 0x5E0D;
/// Bound on every wait, so a broken transport fails the test instead of
/// hanging it.
const WAIT: Duration = Duration::from_secs(20);

fn fast(cfg: &mut TransportConfig) {
    cfg.reconnect_min = Duration::from_millis(5);
    cfg.reconnect_max = Duration::from_millis(50);
}

async fn bind() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// An address nothing listens on (bound, then released).
fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn config(me: NodeId, cluster: u64, addrs: &[SocketAddr]) -> TransportConfig {
    let peers = (0..addrs.len() as NodeId)
        .filter(|&p| p != me)
        .map(|p| (p, addrs[p as usize]))
        .collect::<BTreeMap<_, _>>();
    let mut cfg = TransportConfig::new(me, cluster, addrs[me as usize], peers);
    fast(&mut cfg);
    cfg
}

async fn cluster(n: usize) -> Vec<(Transport<Msg>, Inbox)> {
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..n {
        let (l, a) = bind().await;
        listeners.push(l);
        addrs.push(a);
    }
    let mut out = Vec::new();
    for (me, l) in listeners.into_iter().enumerate() {
        let cfg = config(me as NodeId, CLUSTER, &addrs);
        out.push(Transport::start_with_listener(cfg, l).await.unwrap());
    }
    out
}

async fn recv(inbox: &mut Inbox) -> (NodeId, Msg) {
    tokio::time::timeout(WAIT, inbox.recv())
        .await
        .expect("timed out waiting for a message")
        .expect("inbound channel closed")
}

/// Asserts nothing more arrives for a short while.
async fn assert_quiet(inbox: &mut Inbox) {
    if let Ok(m) = tokio::time::timeout(Duration::from_millis(200), inbox.recv()).await {
        panic!("unexpected extra message {m:?}");
    }
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn transport_is_send_sync_and_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Transport<Msg>>();
    check::<Transport<synod_epaxos::Message>>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_every_message_arrives_exactly_once_in_order() {
    const PER_PEER: u64 = 20_000;
    let mut nodes = cluster(3).await;
    for (me, (t, _)) in nodes.iter().enumerate() {
        for seq in 0..PER_PEER {
            for to in (0..3).filter(|&p| p != me) {
                // Queue capacity (65 536) exceeds what we send: never full.
                t.send(to as NodeId, (seq, vec![me as u8; 100])).unwrap();
            }
        }
    }
    for (me, (t, inbox)) in nodes.iter_mut().enumerate() {
        let mut next = BTreeMap::new();
        for _ in 0..2 * PER_PEER {
            let (from, (seq, pad)) = recv(inbox).await;
            assert_ne!(from as usize, me);
            assert_eq!(pad, vec![from as u8; 100]);
            let n = next.entry(from).or_insert(0u64);
            assert_eq!(seq, *n, "node {me}: out of order or duplicate from {from}");
            *n += 1;
        }
        assert_quiet(inbox).await;
        let s = t.stats();
        for (p, ps) in &s.peers {
            assert_eq!(ps.received_messages, PER_PEER, "node {me} from {p}");
            assert_eq!(ps.sent_messages, PER_PEER, "node {me} to {p}");
            assert!(
                ps.sent_frames < PER_PEER,
                "batching: {} frames",
                ps.sent_frames
            );
            assert_eq!(
                ps.decode_errors + ps.dropped_queue_full + ps.dropped_too_large,
                0
            );
        }
    }
    for (t, _) in nodes {
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_starts_later_receives_the_queued_messages() {
    let addrs = [dead_addr(), dead_addr()];
    let (a, _a_inbox) = Transport::<Msg>::start(config(0, CLUSTER + 1, &addrs))
        .await
        .unwrap();
    for seq in 0..100 {
        a.send(1, (seq, vec![])).unwrap();
    }
    eventually("a dial to the absent peer fails", || {
        a.stats().peers[&1].connect_failures > 0
    })
    .await;
    assert_eq!(a.stats().peers[&1].queued_messages, 100);
    let (b, mut b_inbox) = Transport::<Msg>::start(config(1, CLUSTER + 1, &addrs))
        .await
        .unwrap();
    for seq in 0..100 {
        assert_eq!(recv(&mut b_inbox).await, (0, (seq, vec![])));
    }
    assert_quiet(&mut b_inbox).await;
    assert_eq!(a.stats().peers[&1].queued_messages, 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_receives_later_messages() {
    let mut nodes = cluster(2).await;
    let (b, mut b_inbox) = nodes.pop().unwrap();
    let (a, _a_inbox) = nodes.pop().unwrap();
    let b_addr = b.local_addr();
    for seq in 0..10 {
        a.send(1, (seq, vec![])).unwrap();
    }
    for seq in 0..10 {
        assert_eq!(recv(&mut b_inbox).await, (0, (seq, vec![])));
    }
    b.shutdown().await;
    // The old inbox ends once B's readers are gone.
    assert_eq!(
        tokio::time::timeout(WAIT, b_inbox.recv()).await.unwrap(),
        None
    );
    eventually("A notices B went away", || !a.stats().peers[&1].connected).await;

    let mut cfg = config(1, CLUSTER, &[a.local_addr(), b_addr]);
    cfg.listen = b_addr;
    let (b2, mut b2_inbox) = Transport::<Msg>::start(cfg).await.unwrap();
    eventually("A redials the restarted B", || {
        a.stats().peers[&1].connects >= 2
    })
    .await;
    for seq in 10..20 {
        a.send(1, (seq, vec![])).unwrap();
    }
    for seq in 10..20 {
        assert_eq!(recv(&mut b2_inbox).await, (0, (seq, vec![])));
    }
    assert_quiet(&mut b2_inbox).await;
    a.shutdown().await;
    b2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cluster_id_is_refused_and_counted() {
    let (la, a_addr) = bind().await;
    let (lb, b_addr) = bind().await;
    let addrs = [a_addr, b_addr];
    let (a, _a_inbox) = Transport::<Msg>::start_with_listener(config(0, CLUSTER + 3, &addrs), la)
        .await
        .unwrap();
    let (b, mut b_inbox) =
        Transport::<Msg>::start_with_listener(config(1, CLUSTER + 4, &addrs), lb)
            .await
            .unwrap();
    a.send(1, (0, vec![])).unwrap();
    // B counts a refusal before A sees its connection closed: wait for
    // both sides to have counted two.
    eventually("B refuses A's handshake and A counts the failures", || {
        b.stats().handshakes_refused >= 2 && a.stats().peers[&1].connect_failures >= 2
    })
    .await;
    let sa = a.stats().peers[&1].clone();
    assert!(!sa.connected);
    assert_eq!(sa.connects, 0);
    assert!(sa.connect_failures >= 2, "{sa:?}");
    assert_eq!(sa.queued_messages, 1, "kept queued while refused");
    assert_eq!(b.stats().peers[&0].inbound_connections, 0);

    // A raw client with the wrong cluster gets no answer, just a close.
    let mut raw = TcpStream::connect(b_addr).await.unwrap();
    raw.write_all(&Hello::new(3, 0).encode()).await.unwrap();
    let mut buf = [0u8; HELLO_LEN];
    let n = tokio::time::timeout(WAIT, raw.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "no Hello back for a foreign cluster");
    assert_quiet(&mut b_inbox).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Connects as node `from` and completes the handshake.
async fn raw_peer(to: SocketAddr, from: NodeId) -> TcpStream {
    let mut raw = TcpStream::connect(to).await.unwrap();
    raw.write_all(&Hello::new(CLUSTER, from).encode())
        .await
        .unwrap();
    let mut answer = [0u8; HELLO_LEN];
    raw.read_exact(&mut answer).await.unwrap();
    assert_eq!(Hello::decode(&answer).unwrap(), Hello::new(CLUSTER, 1));
    raw
}

async fn assert_closed(raw: &mut TcpStream) {
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, raw.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "connection should be closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_connection() {
    let mut nodes = cluster(3).await;
    // C stops, so its id is free to impersonate: a live C would redial and
    // supersede the raw connection (a newer connection from a peer closes
    // the older one).
    let (c, _) = nodes.pop().unwrap();
    c.shutdown().await;
    let (b, mut b_inbox) = nodes.pop().unwrap();
    let (a, _) = nodes.pop().unwrap();
    let max = TransportConfig::new(0, 0, b.local_addr(), BTreeMap::new()).max_frame_bytes;

    // Oversized length prefix, impersonating C: closed, counted.
    let mut raw = raw_peer(b.local_addr(), 2).await;
    raw.write_all(&(max + 1).to_le_bytes()).await.unwrap();
    assert_closed(&mut raw).await;
    eventually("oversized frame counted", || {
        b.stats().peers[&2].decode_errors == 1
    })
    .await;

    // A well-sized frame with a garbage body: closed, counted.
    let mut raw = raw_peer(b.local_addr(), 2).await;
    raw.write_all(&5u32.to_le_bytes()).await.unwrap();
    raw.write_all(&[0xFF; 5]).await.unwrap();
    assert_closed(&mut raw).await;
    eventually("malformed frame counted", || {
        b.stats().peers[&2].decode_errors == 2
    })
    .await;

    // A Hello naming an unknown node: refused before any frame.
    let mut raw = TcpStream::connect(b.local_addr()).await.unwrap();
    raw.write_all(&Hello::new(CLUSTER, 9).encode())
        .await
        .unwrap();
    assert_closed(&mut raw).await;

    // B still serves A.
    for seq in 0..50 {
        a.send(1, (seq, vec![1, 2, 3])).unwrap();
    }
    for seq in 0..50 {
        assert_eq!(recv(&mut b_inbox).await, (0, (seq, vec![1, 2, 3])));
    }
    assert_eq!(b.stats().peers[&2].received_messages, 0);
    assert!(b.stats().handshakes_refused >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_new_messages_and_keeps_old_ones() {
    let addrs = [dead_addr(), dead_addr()];
    let mut cfg = config(0, CLUSTER + 2, &addrs);
    cfg.peer_queue_capacity = 4;
    let (a, _) = Transport::<Msg>::start(cfg).await.unwrap();
    for seq in 0..4 {
        a.send(1, (seq, vec![])).unwrap();
    }
    assert_eq!(
        a.send(1, (4, vec![])),
        Err(SendError::QueueFull {
            peer: 1,
            capacity: 4
        })
    );
    assert_eq!(a.send(7, (0, vec![])), Err(SendError::UnknownPeer(7)));
    let s = a.stats().peers[&1].clone();
    assert_eq!((s.dropped_queue_full, s.queued_messages), (1, 4));

    // The peer comes up: the 4 old messages arrive, not the refused one.
    let (b, mut b_inbox) = Transport::<Msg>::start(config(1, CLUSTER + 2, &addrs))
        .await
        .unwrap();
    for seq in 0..4 {
        assert_eq!(recv(&mut b_inbox).await, (0, (seq, vec![])));
    }
    assert_quiet(&mut b_inbox).await;
    let handle = a.clone();
    a.shutdown().await;
    assert_eq!(handle.send(1, (9, vec![])), Err(SendError::Closed));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_a_frame_is_dropped_and_counted() {
    let (la, a_addr) = bind().await;
    let (lb, b_addr) = bind().await;
    let mut cfg = config(0, CLUSTER, &[a_addr, b_addr]);
    cfg.max_frame_bytes = 1024;
    cfg.batch_max_bytes = 1024;
    let (a, _) = Transport::<Msg>::start_with_listener(cfg, la)
        .await
        .unwrap();
    let (b, mut b_inbox) =
        Transport::<Msg>::start_with_listener(config(1, CLUSTER, &[a_addr, b_addr]), lb)
            .await
            .unwrap();
    a.send(1, (0, vec![0; 600])).unwrap();
    a.send(1, (1, vec![0; 2000])).unwrap(); // alone larger than a frame
    a.send(1, (2, vec![0; 600])).unwrap(); // fits, but not with #0 in one frame
    assert_eq!(recv(&mut b_inbox).await, (0, (0, vec![0; 600])));
    assert_eq!(recv(&mut b_inbox).await, (0, (2, vec![0; 600])));
    assert_quiet(&mut b_inbox).await;
    assert_eq!(a.stats().peers[&1].dropped_too_large, 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_frees_the_port_and_ends_the_inbox() {
    let (t, mut inbox) = Transport::<Msg>::start(config(0, CLUSTER, &[dead_addr(), dead_addr()]))
        .await
        .unwrap();
    let addr = t.local_addr();
    assert_ne!(addr.port(), 0);
    t.shutdown().await;
    assert_eq!(
        tokio::time::timeout(WAIT, inbox.recv()).await.unwrap(),
        None
    );
    let again = TcpListener::bind(addr).await;
    assert!(again.is_ok(), "port still held: {again:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn start_refuses_an_invalid_config_and_a_taken_port() {
    let (l, addr) = bind().await;
    let mut cfg = config(0, CLUSTER, &[addr, dead_addr()]);
    let err = Transport::<Msg>::start(cfg.clone()).await.unwrap_err();
    assert!(
        matches!(err, synod_transport::TransportError::Bind { .. }),
        "{err}"
    );
    drop(l);
    cfg.batch_max_bytes = cfg.max_frame_bytes as usize + 1;
    let err = Transport::<Msg>::start(cfg).await.unwrap_err();
    assert!(
        matches!(err, synod_transport::TransportError::InvalidConfig(_)),
        "{err}"
    );
}

/// Starts node `me` alone (no peers) on a fresh port, for tests that add
/// its peers at runtime.
async fn lone(me: NodeId, cluster: u64) -> (Transport<Msg>, Inbox) {
    let (l, addr) = bind().await;
    let mut cfg = TransportConfig::new(me, cluster, addr, BTreeMap::new());
    fast(&mut cfg);
    Transport::start_with_listener(cfg, l).await.unwrap()
}

/// Sends `seqs` from `from` to `to` and checks that `inbox` (node `to`'s)
/// receives exactly them, in order, tagged with `from`'s id.
async fn exchange(
    from: &Transport<Msg>,
    to: NodeId,
    inbox: &mut Inbox,
    seqs: std::ops::Range<u64>,
) {
    for seq in seqs.clone() {
        from.send(to, (seq, vec![from.me() as u8])).unwrap();
    }
    for seq in seqs {
        assert_eq!(recv(inbox).await, (from.me(), (seq, vec![from.me() as u8])));
    }
}

/// Waits until `t`'s counters for `peer` reach `sent` and `received`
/// messages (a message can be delivered before its writer or reader has
/// counted it), then checks they are exactly that.
async fn settled(t: &Transport<Msg>, peer: NodeId, sent: u64, received: u64) {
    let counts = || {
        let s = t.stats().peers[&peer].clone();
        (s.sent_messages, s.received_messages)
    };
    eventually("counters catch up", || {
        let (s, r) = counts();
        s >= sent && r >= received
    })
    .await;
    assert_eq!(counts(), (sent, received), "node {} peer {peer}", t.me());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_added_at_runtime_exchanges_messages_both_ways() {
    let mut nodes = cluster(2).await;
    let (b, _b_inbox) = nodes.pop().unwrap();
    let (a, mut a_inbox) = nodes.pop().unwrap();
    let (c, mut c_inbox) = lone(2, CLUSTER).await;
    assert_eq!(a.send(2, (0, vec![])), Err(SendError::UnknownPeer(2)));
    assert!(!a.stats().peers.contains_key(&2));

    a.add_peer(2, c.local_addr()).unwrap();
    c.add_peer(0, a.local_addr()).unwrap();
    assert_eq!(a.peers()[&2], c.local_addr());
    assert_eq!(c.peers(), BTreeMap::from([(0, a.local_addr())]));
    exchange(&a, 2, &mut c_inbox, 0..10).await;
    exchange(&c, 0, &mut a_inbox, 0..10).await;

    // Adding again at the same address changes nothing: same connection.
    a.add_peer(2, c.local_addr()).unwrap();
    exchange(&a, 2, &mut c_inbox, 10..20).await;
    settled(&a, 2, 20, 10).await;
    settled(&c, 0, 10, 20).await;
    assert_eq!(a.stats().peers[&2].connects, 1, "one connection to C");
    assert_eq!(a.add_peer(0, b.local_addr()), Err(PeerError::IsMe(0)));
    // Only A added C.
    assert_eq!(b.send(2, (0, vec![])), Err(SendError::UnknownPeer(2)));
    assert_quiet(&mut c_inbox).await;
    for t in [a, b, c] {
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_peer_gets_unknown_peer_and_its_hellos_are_refused() {
    let mut nodes = cluster(2).await;
    let (b, mut b_inbox) = nodes.pop().unwrap();
    let (a, mut a_inbox) = nodes.pop().unwrap();
    exchange(&a, 1, &mut b_inbox, 0..5).await;
    exchange(&b, 0, &mut a_inbox, 0..5).await;
    assert_eq!(b.stats().handshakes_refused, 0);

    assert!(b.remove_peer(0));
    assert!(!b.remove_peer(0), "already removed");
    assert_eq!(b.send(0, (5, vec![])), Err(SendError::UnknownPeer(0)));
    assert!(b.peers().is_empty());
    assert!(!b.stats().peers.contains_key(&0));

    // B closed A's connection; A redials and B refuses it. Each side counts
    // on its own schedule, so wait for both.
    eventually(
        "A sees its connection closed and its redials refused",
        || {
            let sa = a.stats().peers[&1].clone();
            sa.disconnects >= 1 && sa.connect_failures >= 2 && b.stats().handshakes_refused >= 2
        },
    )
    .await;
    assert_eq!(
        a.stats().peers[&1].connects,
        1,
        "no Hello accepted after removal"
    );
    a.send(1, (5, vec![])).unwrap();
    assert_quiet(&mut b_inbox).await;
    assert_eq!(
        a.stats().peers[&1].queued_messages,
        1,
        "kept queued while refused"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_peer_is_dialled_at_its_new_address() {
    let mut nodes = cluster(2).await;
    let (b, mut b_inbox) = nodes.pop().unwrap();
    let (a, _a_inbox) = nodes.pop().unwrap();
    exchange(&a, 1, &mut b_inbox, 0..5).await;

    // B "moves": a second node 1 on another port. The old one keeps
    // running, so a message sent to the old address would still arrive.
    let (b2, mut b2_inbox) = lone(1, CLUSTER).await;
    b2.add_peer(0, a.local_addr()).unwrap();
    a.add_peer(1, b2.local_addr()).unwrap();
    assert_eq!(a.peers()[&1], b2.local_addr());
    exchange(&a, 1, &mut b2_inbox, 5..15).await;
    assert_quiet(&mut b_inbox).await;
    // The moved peer keeps its counters.
    settled(&a, 1, 15, 0).await;
    assert!(a.stats().peers[&1].connects >= 2);
    for t in [a, b, b2] {
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_removed_and_added_at_a_new_address_is_reached_there_with_fresh_counters() {
    let mut nodes = cluster(2).await;
    let (b, mut b_inbox) = nodes.pop().unwrap();
    let (a, mut a_inbox) = nodes.pop().unwrap();
    exchange(&a, 1, &mut b_inbox, 0..5).await;
    assert!(a.remove_peer(1));
    b.shutdown().await;

    let (b2, mut b2_inbox) = lone(1, CLUSTER).await;
    b2.add_peer(0, a.local_addr()).unwrap();
    a.add_peer(1, b2.local_addr()).unwrap();
    let s = a.stats().peers[&1].clone();
    assert_eq!((s.connects, s.sent_messages), (0, 0), "restarted: {s:?}");
    exchange(&a, 1, &mut b2_inbox, 5..10).await;
    exchange(&b2, 0, &mut a_inbox, 0..3).await;
    settled(&a, 1, 5, 3).await;
    a.shutdown().await;
    b2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_count_is_bounded() {
    let (a, _) = lone(0, CLUSTER + 5).await;
    let nowhere = dead_addr();
    for p in 1..=PEERS_MAX as NodeId {
        a.add_peer(p, nowhere).unwrap();
    }
    let over = PEERS_MAX as NodeId + 1;
    assert_eq!(
        a.add_peer(over, nowhere),
        Err(PeerError::TooManyPeers {
            peer: over,
            max: PEERS_MAX
        })
    );
    assert!(a.remove_peer(1));
    a.add_peer(over, nowhere).unwrap();
    assert_eq!(a.peers().len(), PEERS_MAX);
    a.shutdown().await;
}

/// Accepts one dial on `l` and answers its Hello as node `me`.
async fn accept_as(l: &TcpListener, me: NodeId) -> TcpStream {
    let (mut raw, _) = tokio::time::timeout(WAIT, l.accept())
        .await
        .unwrap()
        .unwrap();
    let mut hello = [0u8; HELLO_LEN];
    raw.read_exact(&mut hello).await.unwrap();
    raw.write_all(&Hello::new(CLUSTER, me).encode())
        .await
        .unwrap();
    raw
}

/// Reads one frame from a raw connection.
async fn read_frame(raw: &mut TcpStream) -> Vec<Msg> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    raw.read_exact(&mut header).await.unwrap();
    let mut body = vec![0u8; u32::from_le_bytes(header) as usize];
    raw.read_exact(&mut body).await.unwrap();
    codec::decode_frame(&body).unwrap()
}

/// One thread, so a task `shutdown` awaited is also gone from the runtime's
/// task count when `shutdown` returns (a joiner on another worker could see
/// the task's end before the runtime has released it).
#[tokio::test(flavor = "current_thread")]
async fn shutdown_stops_writers_added_at_runtime_promptly() {
    let (la, a_addr) = bind().await;
    let mut cfg = TransportConfig::new(0, CLUSTER, a_addr, BTreeMap::new());
    fast(&mut cfg);
    // A writer stuck in a handshake would hold shutdown up to
    // SHUTDOWN_FLUSH_MAX if it ignored the shutdown signal.
    cfg.connect_timeout = WAIT;
    let (a, _a_inbox) = Transport::<Msg>::start_with_listener(cfg, la)
        .await
        .unwrap();

    // Peer 5 is live (a raw socket), peer 6 accepts TCP but never answers
    // the Hello, peer 7 moved once (its writer replaced another).
    let (l5, addr5) = bind().await;
    let (l6, addr6) = bind().await;
    a.add_peer(5, addr5).unwrap();
    a.add_peer(6, addr6).unwrap();
    a.add_peer(7, dead_addr()).unwrap();
    a.add_peer(7, dead_addr()).unwrap();
    let mut raw5 = accept_as(&l5, 5).await;
    a.send(5, (1, vec![5])).unwrap();
    assert_eq!(read_frame(&mut raw5).await, vec![(1, vec![5])]);
    // A's writer to 6 is now waiting for 6's Hello.
    let (_raw6, _) = tokio::time::timeout(WAIT, l6.accept())
        .await
        .unwrap()
        .unwrap();

    let began = tokio::time::Instant::now();
    a.clone().shutdown().await;
    let took = began.elapsed();
    // Every task ended before `shutdown` returned (the test body is not a
    // task).
    let alive = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert_eq!(alive, 0, "tasks outlived shutdown");
    assert!(took < SHUTDOWN_FLUSH_MAX, "shutdown took {took:?}");
    assert_eq!(a.add_peer(8, dead_addr()), Err(PeerError::Closed));
    assert_eq!(a.send(5, (2, vec![])), Err(SendError::Closed));
    // The writer closed its connection to the live peer.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, raw5.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "writer to peer 5 still connected");
}

/// One thread for the same reason as the test above.
#[tokio::test(flavor = "current_thread")]
async fn shutdown_waits_for_a_runtime_added_writer_to_flush() {
    // More than the two sockets' buffers hold (the receiver's is made
    // small), so the flush needs the peer to read and takes many polls: a
    // shutdown that did not wait for this writer would return first.
    const QUEUED: u64 = 60_000;
    const PAD_BYTES: usize = 120;
    let (a, _a_inbox) = lone(0, CLUSTER).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 << 10).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr5 = socket.local_addr().unwrap();
    let l5 = socket.listen(1).unwrap();
    a.add_peer(5, addr5).unwrap();
    let raw5 = accept_as(&l5, 5).await.into_std().unwrap();
    raw5.set_nonblocking(false).unwrap();
    // A plain thread, not a task: it reads while the runtime is inside
    // `shutdown`, and starts late so the socket buffers fill first.
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        std::thread::sleep(Duration::from_millis(200));
        let mut raw = raw5;
        let mut seqs = Vec::new();
        let mut header = [0u8; FRAME_HEADER_LEN];
        while raw.read_exact(&mut header).is_ok() {
            let mut body = vec![0u8; u32::from_le_bytes(header) as usize];
            raw.read_exact(&mut body).unwrap();
            let msgs: Vec<Msg> = codec::decode_frame(&body).unwrap();
            seqs.extend(msgs.into_iter().map(|(seq, _)| seq));
        }
        seqs
    });
    // Flushing is only for a live connection: let the writer finish its
    // side of the handshake.
    eventually("A's writer to 5 is connected", || {
        a.stats().peers[&5].connected
    })
    .await;
    for seq in 0..QUEUED {
        a.send(5, (seq, vec![0; PAD_BYTES])).unwrap();
    }

    let began = tokio::time::Instant::now();
    a.shutdown().await;
    let took = began.elapsed();
    let alive = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert_eq!(alive, 0, "the writer outlived shutdown");
    assert!(took < SHUTDOWN_FLUSH_MAX, "flush cut short after {took:?}");
    let seqs = reader.join().unwrap();
    assert_eq!(seqs, (0..QUEUED).collect::<Vec<_>>());
}
