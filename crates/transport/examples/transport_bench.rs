//! Throughput of one direction of the transport on loopback: node 0 sends N
//! messages of ~100 encoded bytes to node 1 as fast as its queue accepts
//! them (a full queue is retried after a yield, so nothing is dropped), and
//! node 1 counts them.
//!
//! ```text
//! cargo run --release -p synod-transport --example transport_bench -- [N] [payload_bytes]
//! ```
//!
//! Reports messages/s, frames/s and the mean batch; both nodes share one
//! 2-worker tokio runtime in this process.

use std::collections::BTreeMap;
use std::time::Instant;
use synod_transport::{SendError, Transport, TransportConfig};
use tokio::net::TcpListener;

type Msg = (u64, Vec<u8>);

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(2_000_000, |a| a.parse().expect("N"));
    let payload: usize = args
        .next()
        .map_or(90, |a| a.parse().expect("payload_bytes"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(n, payload));
}

async fn run(n: u64, payload: usize) {
    let la = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let lb = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (a_addr, b_addr) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    let cfg_a = TransportConfig::new(0, 1, a_addr, BTreeMap::from([(1, b_addr)]));
    let cfg_b = TransportConfig::new(1, 1, b_addr, BTreeMap::from([(0, a_addr)]));
    let (a, _a_in) = Transport::<Msg>::start_with_listener(cfg_a, la)
        .await
        .expect("start a");
    let (b, mut b_in) = Transport::<Msg>::start_with_listener(cfg_b, lb)
        .await
        .expect("start b");
    let encoded = postcard::to_allocvec(&(u64::MAX / 3, vec![7u8; payload]))
        .unwrap()
        .len();

    let receiver = tokio::spawn(async move {
        let mut got = 0u64;
        while got < n {
            let (_, (seq, _)) = b_in.recv().await.expect("inbox open");
            assert_eq!(seq, got, "in order");
            got += 1;
        }
        Instant::now()
    });
    let start = Instant::now();
    let mut full_retries = 0u64;
    for seq in 0..n {
        let mut msg = (seq, vec![7u8; payload]);
        loop {
            match a.send(1, msg) {
                Ok(()) => break,
                Err(SendError::QueueFull { .. }) => {
                    full_retries += 1;
                    // `send` dropped it; rebuild and let the writer drain.
                    msg = (seq, vec![7u8; payload]);
                    tokio::task::yield_now().await;
                }
                Err(e) => panic!("send: {e}"),
            }
        }
    }
    let end = receiver.await.expect("receiver");
    let secs = (end - start).as_secs_f64();
    let s = a.stats().peers[&1].clone();
    println!(
        "{n} messages of {encoded} B encoded in {secs:.3} s: {:.0} msgs/s, {:.0} frames/s, {:.1} msgs/frame, {:.1} MB/s on the wire ({full_retries} sends retried on QueueFull)",
        n as f64 / secs,
        s.sent_frames as f64 / secs,
        s.sent_messages as f64 / s.sent_frames.max(1) as f64,
        s.sent_bytes as f64 / secs / 1e6,
    );
    a.shutdown().await;
    b.shutdown().await;
}
