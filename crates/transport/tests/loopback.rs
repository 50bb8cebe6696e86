//! Real sockets on 127.0.0.1: delivery, reconnects, restarts and refusals
//! (crate docs, "Delivery guarantees" and "Connections").

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use synod_transport::codec::{Hello, HELLO_LEN};
use synod_transport::{SendError, Transport, TransportConfig};
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
