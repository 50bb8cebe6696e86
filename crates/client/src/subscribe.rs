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
    text: String,
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
                Err(_) => {
                    // The replica went away: resume elsewhere with the token.
                    self.conn = None;
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
            text: String::new(),
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
                c.text.push_str(&String::from_utf8_lossy(&buf[..n]));
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
        while let Some(end) = c.text.find("\n\n") {
            let block: String = c.text[..end].to_string();
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
