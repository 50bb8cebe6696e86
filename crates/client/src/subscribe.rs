//! A resumable subscription to the committed stream (`GET /v1/stream`).
//!
//! [`Subscription`] reads Server-Sent Events from one replica and remembers
//! the resume token of the last event. When the connection breaks, the
//! replica stops, or it answers 410 (it lacks the history the token needs),
//! the subscription reconnects to the next endpoint with that token: the
//! server side guarantees no gap and no duplicate across the move
//! (`crates/runtime/src/stream.rs`).

use crate::client::ClientError;
use crate::http;
use crate::wire::StreamEvent;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// How long one read waits before the subscription checks its deadline.
pub const POLL: Duration = Duration::from_millis(100);

/// Largest event (or buffered partial event) accepted from a server.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// Consecutive failed connection attempts (all endpoints, round robin)
/// before [`Subscription::next`] gives up with an error.
pub const MAX_RECONNECTS: usize = 12;

struct Conn {
    r: BufReader<TcpStream>,
    chunked: bool,
    left_in_chunk: usize,
    /// Bytes of the body not yet parsed into events. Kept as bytes: a read
    /// may end inside a multi-byte UTF-8 character.
    text: Vec<u8>,
}

/// A subscription that survives replica failures. See the module docs.
pub struct Subscription {
    endpoints: Vec<String>,
    next_endpoint: usize,
    token: String,
    conn: Option<Conn>,
    connect_timeout: Duration,
}

enum Fill {
    Data,
    Idle,
}

impl Subscription {
    pub(crate) fn new(endpoints: Vec<String>, from: &str, connect_timeout: Duration) -> Self {
        Subscription {
            endpoints,
            next_endpoint: 0,
            token: from.to_string(),
            conn: None,
            connect_timeout,
        }
    }

    /// The token after the last event returned: pass it to a later
    /// subscription to continue where this one stopped.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The next event, or `Ok(None)` if none arrived within `wait`.
    pub fn next(&mut self, wait: Duration) -> Result<Option<StreamEvent>, ClientError> {
        let deadline = Instant::now() + wait;
        let mut failures = 0;
        loop {
            if self.conn.is_none() {
                let ep = self.endpoints[self.next_endpoint % self.endpoints.len()].clone();
                self.next_endpoint += 1;
                match self.open(&ep) {
                    Ok(c) => self.conn = Some(c),
                    Err(e) => {
                        failures += 1;
                        if failures >= MAX_RECONNECTS.max(self.endpoints.len()) {
                            return Err(ClientError::AllEndpointsFailed { last: Box::new(e) });
                        }
                        std::thread::sleep(POLL);
                        continue;
                    }
                }
            }
            if let Some(ev) = self.take_event()? {
                self.token = ev.token.clone();
                return Ok(Some(ev));
            }
            match self.fill() {
                Ok(Fill::Data) => {}
                Ok(Fill::Idle) => {
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                }
                Err(e) => {
                    // The replica went away: resume elsewhere with the token.
                    // A replica that accepts and hangs up at once (it is
                    // stopping) counts as a failed attempt, so this neither
                    // spins nor outlives `wait` for long.
                    self.conn = None;
                    failures += 1;
                    if failures >= MAX_RECONNECTS.max(self.endpoints.len()) {
                        return Err(ClientError::AllEndpointsFailed {
                            last: Box::new(ClientError::Io {
                                endpoint: self.endpoints[(self.next_endpoint
                                    + self.endpoints.len()
                                    - 1)
                                    % self.endpoints.len()]
                                .clone(),
                                source: e,
                            }),
                        });
                    }
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                    std::thread::sleep(POLL.min(deadline - Instant::now()));
                }
            }
        }
    }

    fn open(&self, endpoint: &str) -> Result<Conn, ClientError> {
        let conn_err = |source| ClientError::Connect {
            endpoint: endpoint.to_string(),
            source,
        };
        let addr = endpoint
            .to_socket_addrs()
            .map_err(conn_err)?
            .next()
            .ok_or_else(|| conn_err(io::Error::new(io::ErrorKind::NotFound, "no address")))?;
        let s = TcpStream::connect_timeout(&addr, self.connect_timeout).map_err(conn_err)?;
        let io_err = |source| ClientError::Io {
            endpoint: endpoint.to_string(),
            source,
        };
        s.set_read_timeout(Some(POLL)).map_err(io_err)?;
        let path = format!("/v1/stream?from={}", http::encode_path_segment(&self.token));
        let mut w = &s;
        write!(
            w,
            "GET {path} HTTP/1.1\r\nHost: {endpoint}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .map_err(io_err)?;
        let mut r = BufReader::new(s);
        let deadline = Instant::now() + self.connect_timeout.max(Duration::from_secs(2));
        let mut line = String::new();
        let read_line = |r: &mut BufReader<TcpStream>, line: &mut String| loop {
            match r.read_line(line) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed")),
                Ok(_) => return Ok(()),
                Err(e) if is_timeout(&e) && Instant::now() < deadline => continue,
                Err(e) => return Err(e),
            }
        };
        read_line(&mut r, &mut line).map_err(io_err)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ClientError::Decode(format!("bad status line {line:?}")))?;
        let mut chunked = false;
        loop {
            line.clear();
            read_line(&mut r, &mut line).map_err(io_err)?;
            if line == "\r\n" || line == "\n" {
                break;
            }
            let l = line.to_ascii_lowercase();
            if l.starts_with("transfer-encoding:") && l.contains("chunked") {
                chunked = true;
            }
        }
        if status != 200 {
            return Err(ClientError::Decode(format!(
                "{endpoint} answered {status} to the stream request"
            )));
        }
        Ok(Conn {
            r,
            chunked,
            left_in_chunk: 0,
            text: Vec::new(),
        })
    }

    /// Reads more of the body into the buffer.
    fn fill(&mut self) -> io::Result<Fill> {
        let c = self.conn.as_mut().expect("connected");
        if c.text.len() > MAX_EVENT_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "event too large",
            ));
        }
        let mut buf = [0u8; 8192];
        let eof = || io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended");
        let mut want = buf.len();
        if c.chunked {
            if c.left_in_chunk == 0 {
                let mut line = String::new();
                match c.r.read_line(&mut line) {
                    Ok(0) => return Err(eof()),
                    Ok(_) => {}
                    Err(e) if is_timeout(&e) => return Ok(Fill::Idle),
                    Err(e) => return Err(e),
                }
                let t = line.trim();
                if t.is_empty() {
                    return Ok(Fill::Data); // the CRLF closing a chunk
                }
                c.left_in_chunk = usize::from_str_radix(t, 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
                if c.left_in_chunk == 0 {
                    return Err(eof());
                }
            }
            want = want.min(c.left_in_chunk);
        }
        match c.r.read(&mut buf[..want]) {
            Ok(0) => Err(eof()),
            Ok(n) => {
                if c.chunked {
                    c.left_in_chunk -= n;
                }
                c.text.extend_from_slice(&buf[..n]);
                Ok(Fill::Data)
            }
            Err(e) if is_timeout(&e) => Ok(Fill::Idle),
            Err(e) => Err(e),
        }
    }

    /// Takes one complete `decision` event out of the buffer, if any.
    fn take_event(&mut self) -> Result<Option<StreamEvent>, ClientError> {
        let Some(c) = self.conn.as_mut() else {
            return Ok(None);
        };
        while let Some(end) = c.text.windows(2).position(|w| w == b"\n\n") {
            // A whole event: it ends at an ASCII boundary, so it holds
            // whole characters.
            let block = String::from_utf8_lossy(&c.text[..end]).into_owned();
            c.text.drain(..end + 2);
            let mut event = "";
            let mut data = String::new();
            for l in block.lines() {
                if let Some(v) = l.strip_prefix("event:") {
                    event = v.trim();
                } else if let Some(v) = l.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if event == "decision" {
                return serde_json::from_str(&data)
                    .map(Some)
                    .map_err(|e| ClientError::Decode(format!("stream event: {e}")));
            }
        }
        Ok(None)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::LogCommand;
    use std::net::TcpListener;
    use synod_types::CmdId;

    fn event(seq: u64, key: &str) -> StreamEvent {
        StreamEvent {
            instance: CmdId {
                epoch: 0,
                seq,
                origin: Default::default(),
            },
            commands: vec![LogCommand {
                client: 1,
                request: seq,
                keys: vec![key.to_string()],
                applied: true,
                duplicate: false,
                decision: None,
                outcome: None,
            }],
            token: format!("t{seq}"),
        }
    }

    /// An event whose bytes arrive in two reads split inside a multi-byte
    /// character is decoded intact.
    #[test]
    fn a_character_split_across_reads_survives() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let ev = event(1, "clé/été");
        let text = format!(
            "event: decision\ndata: {}\n\n",
            serde_json::to_string(&ev).unwrap()
        );
        let cut = text.find('é').unwrap() + 1; // inside the 2-byte 'é'
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req).unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")
                .unwrap();
            s.write_all(&text.as_bytes()[..cut]).unwrap();
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(150));
            s.write_all(&text.as_bytes()[cut..]).unwrap();
            std::thread::sleep(Duration::from_millis(300));
        });
        let mut sub = Subscription::new(vec![addr], "", Duration::from_secs(1));
        let got = sub.next(Duration::from_secs(5)).unwrap().expect("an event");
        assert_eq!(got, ev);
        assert_eq!(sub.token(), "t1");
        server.join().unwrap();
    }

    /// Replicas that accept the stream and hang up at once: `next` neither
    /// spins nor overstays its wait by much; it ends in an error after
    /// MAX_RECONNECTS failures at the latest.
    #[test]
    fn replicas_that_hang_up_at_once_do_not_make_next_spin() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let a2 = accepted.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                a2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut req = [0u8; 1024];
                let _ = s.read(&mut req);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n");
            }
        });
        let mut sub = Subscription::new(vec![addr], "", Duration::from_secs(1));
        let t0 = Instant::now();
        let r = sub.next(Duration::from_millis(350));
        assert!(matches!(r, Ok(None)), "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        let n = accepted.load(std::sync::atomic::Ordering::SeqCst);
        assert!(n <= 6, "{n} connections in 350 ms: spinning");
        let r = sub.next(Duration::from_secs(30));
        assert!(
            matches!(r, Err(ClientError::AllEndpointsFailed { .. })),
            "{r:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }
}
