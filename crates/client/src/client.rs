//! A small blocking client for a Synod cluster's HTTP/JSON API, with
//! failover between replicas.
//!
//! Each call of [`Client`] opens one TCP connection (`Connection: close`),
//! so there is no pool to manage and a call's timeouts are the socket's.
//! ([`crate::Session`] and [`crate::Pipeline`] keep one connection per
//! thread alive instead: they send many requests in a row.) Calls try the
//! endpoints in order, starting from the last one that answered; they move
//! to the next endpoint only when the current one cannot be reached, is
//! overloaded (429) or answers with a *retryable* 5xx
//! ([`ClientError::is_failover`]), never on another 4xx (the request itself
//! is wrong; another replica would say the same).

use crate::http::{self, ParseError, Response};
use crate::wire::{
    AddMemberRequest, ErrorBody, LogResponse, MemberChangeResponse, MembersResponse,
    ProposeRequest, ProposeResponse, ReadResponse, StatusResponse,
};
use serde::de::DeserializeOwned;
use std::fmt;
use std::io::{self, BufRead, BufReader};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Leader redirects one membership call follows: one is normal (a follower
/// names the leader); more means leadership is moving, and the caller
/// should retry later rather than chase it.
pub const MEMBER_REDIRECTS_MAX: usize = 3;

/// Default bound on establishing a TCP connection to one endpoint.
///
/// Replicas are on a LAN or loopback, where a connect takes well under a
/// millisecond; a replica that has not accepted within 1 s is down or
/// overloaded, and failing over is better than waiting.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(1);

/// Default bound on each read and write once connected.
///
/// A proposal's answer comes after the decision executes, which the server
/// bounds by `limits.propose_timeout_ms` (default 10 s); 15 s leaves room for
/// the server to answer its own `timeout` error before the client gives up.
pub const READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(15);

/// Why a call failed.
#[derive(Debug)]
pub enum ClientError {
    /// An endpoint string is not `host:port`, or the list is empty.
    InvalidEndpoint(String),
    /// Could not connect to `endpoint` (refused, unreachable, name lookup
    /// failed, or connect timeout). The request was not sent.
    Connect {
        /// `host:port` as given.
        endpoint: String,
        /// The socket error.
        source: io::Error,
    },
    /// The connection failed after the request may have been sent.
    Io {
        /// `host:port` as given.
        endpoint: String,
        /// The socket error.
        source: io::Error,
    },
    /// The server answered with a non-2xx status. Bodies that are not an
    /// [`ErrorBody`] (plain-text errors of the HTTP framework, e.g. a 404
    /// or a JSON rejection) are wrapped in one with code `http_<status>`.
    Http {
        /// HTTP status.
        status: u16,
        /// The server's error.
        body: ErrorBody,
    },
    /// The response is not valid HTTP or not the expected JSON.
    Decode(String),
    /// No answer within the read timeout. A proposal may still be decided.
    Timeout {
        /// `host:port` as given.
        endpoint: String,
    },
    /// Every endpoint failed with an error that allows failover; this is
    /// the last one.
    AllEndpointsFailed {
        /// The last endpoint's error.
        last: Box<ClientError>,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::InvalidEndpoint(s) => write!(f, "invalid endpoint: {s}"),
            ClientError::Connect { endpoint, source } => {
                write!(f, "cannot connect to {endpoint}: {source}")
            }
            ClientError::Io { endpoint, source } => {
                write!(f, "connection to {endpoint} failed: {source}")
            }
            ClientError::Http { status, body } => write!(
                f,
                "HTTP {status} {}: {}{}",
                body.code,
                body.message,
                if body.retryable { " (retryable)" } else { "" }
            ),
            ClientError::Decode(s) => write!(f, "bad response: {s}"),
            ClientError::Timeout { endpoint } => write!(f, "no answer from {endpoint} in time"),
            ClientError::AllEndpointsFailed { last } => {
                write!(f, "every endpoint failed; last: {last}")
            }
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Connect { source, .. } | ClientError::Io { source, .. } => Some(source),
            ClientError::AllEndpointsFailed { last } => Some(last.as_ref()),
            _ => None,
        }
    }
}

impl ClientError {
    /// True if the call may move on to the next endpoint: the endpoint was
    /// unreachable, refused the request as overloaded (429), or answered a
    /// 5xx the server marked retryable.
    pub fn is_failover(&self) -> bool {
        match self {
            ClientError::Connect { .. } => true,
            ClientError::Http { status, body } => {
                (*status >= 500 || *status == 429) && body.retryable
            }
            _ => false,
        }
    }

    /// True if the same request may be sent again (with the same
    /// `client`/`request`, which makes that safe): the connection failed,
    /// timed out, or the server marked its error retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Io { .. } | ClientError::Timeout { .. } => {
                true
            }
            ClientError::AllEndpointsFailed { last } => last.is_retryable(),
            ClientError::Http { body, .. } => body.retryable,
            ClientError::InvalidEndpoint(_) | ClientError::Decode(_) => false,
        }
    }

    /// True if the server refused the request because it is overloaded
    /// (429 `overloaded`): nothing was proposed; retry after
    /// [`ClientError::retry_after`].
    pub fn is_overloaded(&self) -> bool {
        match self {
            ClientError::Http { status, body } => *status == 429 || body.code == "overloaded",
            ClientError::AllEndpointsFailed { last } => last.is_overloaded(),
            _ => false,
        }
    }

    /// The server's hint of how long to wait before retrying
    /// (`retry_after_ms` of the body, else the `Retry-After` header).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Http { body, .. } => body.retry_after_ms.map(Duration::from_millis),
            ClientError::AllEndpointsFailed { last } => last.retry_after(),
            _ => None,
        }
    }

    /// False only if this error proves that a proposal never reached the
    /// protocol, so it cannot be applied by this attempt: the connection
    /// was refused, or the server rejected the request up front (any 4xx,
    /// including 429 `overloaded`). Every other error is ambiguous: the
    /// request may have been sent, proposed, and may still be applied (a
    /// broken connection, a timeout, a 5xx such as `timeout`, `aborted`, or
    /// `unavailable`, which a stopping replica also answers to proposals it
    /// already took, or an undecodable answer).
    pub fn maybe_proposed(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::InvalidEndpoint(_) => false,
            ClientError::Http { status, .. } => !(400..500).contains(status),
            ClientError::AllEndpointsFailed { last } => last.maybe_proposed(),
            ClientError::Io { .. } | ClientError::Timeout { .. } | ClientError::Decode(_) => true,
        }
    }
}

/// A connection one thread keeps open between its requests (HTTP/1.1
/// keep-alive), to the endpoint it last used.
#[derive(Debug, Default)]
pub(crate) struct KeepAlive {
    conn: Option<(usize, BufReader<TcpStream>)>,
    /// Connections opened so far (for tests and statistics).
    pub(crate) opened: u64,
    /// A request was written on a kept connection that then broke before
    /// any answer, and was re-sent on a new one. Usually the server had
    /// closed the idle connection and never saw it, but a replica killed
    /// while holding it looks the same: whoever reads this must treat the
    /// request as possibly proposed even if the re-send was refused.
    pub(crate) lost: bool,
}

/// A blocking client for one cluster. Cheap to share between threads
/// (`&self` methods; the preferred endpoint is an atomic). A clone has the
/// same endpoints and timeouts and starts from the same preferred endpoint.
#[derive(Debug)]
pub struct Client {
    /// `host:port` strings, in the caller's order.
    endpoints: Vec<String>,
    /// Index of the endpoint that last answered; calls start there.
    preferred: AtomicUsize,
    connect_timeout: Duration,
    read_timeout: Duration,
}

impl Clone for Client {
    fn clone(&self) -> Client {
        Client {
            endpoints: self.endpoints.clone(),
            preferred: AtomicUsize::new(self.preferred.load(Ordering::Relaxed)),
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
        }
    }
}

impl Client {
    /// A client for `endpoints` (`"host:port"` strings or `SocketAddr`s),
    /// with the default timeouts.
    pub fn new<E: ToString>(endpoints: impl IntoIterator<Item = E>) -> Result<Client, ClientError> {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| e.to_string().trim().to_string())
            .collect();
        if endpoints.is_empty() {
            return Err(ClientError::InvalidEndpoint("no endpoints given".into()));
        }
        for e in &endpoints {
            let port = e.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>()));
            if !matches!(port, Some((h, Ok(_))) if !h.is_empty()) {
                return Err(ClientError::InvalidEndpoint(format!(
                    "{e:?} is not host:port"
                )));
            }
        }
        Ok(Client {
            endpoints,
            preferred: AtomicUsize::new(0),
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            read_timeout: READ_TIMEOUT_DEFAULT,
        })
    }

    /// Sets the bound on establishing a connection to one endpoint.
    pub fn with_connect_timeout(mut self, t: Duration) -> Client {
        self.connect_timeout = t;
        self
    }

    /// Sets the bound on each read and write once connected.
    pub fn with_read_timeout(mut self, t: Duration) -> Client {
        self.read_timeout = t;
        self
    }

    /// The endpoints, in the order given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// `POST /v1/decisions`: proposes one decision and waits for its result.
    /// One attempt per endpoint at most; [`crate::Session`] and
    /// [`crate::Pipeline`] retry until answered.
    ///
    /// Failover re-sends the same request to the next replica. With a
    /// session (`client` and `request` set) that is exactly-once, so every
    /// retryable error fails over, a broken connection and a read timeout
    /// included; without one, only errors that prove nothing was proposed
    /// do (connection refused, 429 `overloaded`; see
    /// [`ClientError::maybe_proposed`]), since after a `timeout` or an
    /// `unavailable` from a stopping replica the decision may still be
    /// applied, and a second replica would apply it again.
    pub fn propose(&self, req: &ProposeRequest) -> Result<ProposeResponse, ClientError> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Decode(e.to_string()))?;
        let has_session = req.client.is_some() && req.request.is_some();
        self.call(
            |e| {
                if has_session {
                    e.is_failover()
                        || matches!(e, ClientError::Io { .. } | ClientError::Timeout { .. })
                } else {
                    e.is_failover() && !e.maybe_proposed()
                }
            },
            |ep| self.json(ep, "POST", "/v1/decisions", Some(&body)),
        )
    }

    /// Number of endpoints.
    pub(crate) fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// The endpoint calls start from.
    pub(crate) fn preferred(&self) -> usize {
        self.preferred.load(Ordering::Relaxed) % self.endpoints.len()
    }

    /// Remembers `idx` as the endpoint that last answered.
    pub(crate) fn set_preferred(&self, idx: usize) {
        self.preferred.store(idx, Ordering::Relaxed);
    }

    /// `POST /v1/decisions` of an encoded request to endpoint `idx` only,
    /// over `ka`'s kept-alive connection. No failover: the caller decides.
    pub(crate) fn propose_once(
        &self,
        ka: &mut KeepAlive,
        idx: usize,
        body: &[u8],
    ) -> Result<ProposeResponse, ClientError> {
        let endpoint = &self.endpoints[idx];
        let resp = self.exchange_kept(ka, idx, "POST", "/v1/decisions", Some(body))?;
        if !(200..300).contains(&resp.status) {
            return Err(http_error(&resp));
        }
        serde_json::from_slice(&resp.body)
            .map_err(|e| ClientError::Decode(format!("POST /v1/decisions from {endpoint}: {e}")))
    }

    /// `GET /v1/status` of whichever endpoint answers first.
    pub fn status(&self) -> Result<StatusResponse, ClientError> {
        self.call(ClientError::is_failover, |ep| {
            self.json(ep, "GET", "/v1/status", None)
        })
    }

    /// `GET /v1/members`: the control plane's view from whichever replica
    /// answers.
    pub fn members(&self) -> Result<MembersResponse, ClientError> {
        self.call(ClientError::is_failover, |ep| {
            self.json(ep, "GET", "/v1/members", None)
        })
    }

    /// `POST /v1/members`: adds a replica (running with `join = true`).
    /// Follows the leader hint of a replica that does not lead the control
    /// plane (`307` + `Location`).
    pub fn add_member(&self, req: &AddMemberRequest) -> Result<MemberChangeResponse, ClientError> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.member_change("POST", "/v1/members", Some(&body))
    }

    /// `DELETE /v1/members/{id}`: removes a replica; it must stay up until
    /// its last epoch is complete (`members()` shows it). Follows leader
    /// hints like [`Client::add_member`].
    pub fn remove_member(
        &self,
        id: synod_types::NodeId,
    ) -> Result<MemberChangeResponse, ClientError> {
        self.member_change("DELETE", &format!("/v1/members/{id}"), None)
    }

    fn member_change(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<MemberChangeResponse, ClientError> {
        self.call(ClientError::is_failover, |ep| {
            let mut endpoint = ep.to_string();
            for _ in 0..=MEMBER_REDIRECTS_MAX {
                let resp = self.exchange(&endpoint, method, path, body)?;
                if resp.status == 307 {
                    if let Some(next) = resp
                        .header("location")
                        .and_then(|l| l.strip_prefix("http://"))
                        .and_then(|l| l.split('/').next())
                    {
                        endpoint = next.to_string();
                        continue;
                    }
                }
                if !(200..300).contains(&resp.status) {
                    return Err(http_error(&resp));
                }
                return serde_json::from_slice(&resp.body).map_err(|e| {
                    ClientError::Decode(format!("{method} {path} from {endpoint}: {e}"))
                });
            }
            Err(ClientError::Decode(format!(
                "{method} {path}: more than {MEMBER_REDIRECTS_MAX} leader redirects"
            )))
        })
    }

    /// `GET /v1/log?from=..&limit=..`.
    pub fn log(&self, from: u64, limit: u64) -> Result<LogResponse, ClientError> {
        let path = format!("/v1/log?from={from}&limit={limit}");
        self.call(ClientError::is_failover, |ep| {
            self.json(ep, "GET", &path, None)
        })
    }

    /// `GET /v1/keys/{key}`: a local read on whichever replica answers.
    pub fn read(&self, key: &str) -> Result<ReadResponse, ClientError> {
        let path = format!("/v1/keys/{}", http::encode_path_segment(key));
        self.call(ClientError::is_failover, |ep| {
            self.json(ep, "GET", &path, None)
        })
    }

    /// `GET /v1/keys/{key}?consistency=linearizable`: a read ordered through
    /// the protocol after every conflicting write committed before it (it
    /// sees every write acknowledged before the call). A read changes
    /// nothing, so it is retried on other endpoints like any failover error.
    pub fn read_linearizable(&self, key: &str) -> Result<ReadResponse, ClientError> {
        let path = format!(
            "/v1/keys/{}?consistency=linearizable",
            http::encode_path_segment(key)
        );
        self.call(ClientError::is_failover, |ep| {
            self.json(ep, "GET", &path, None)
        })
    }

    /// Subscribes to the committed stream from `from` (a resume token; empty
    /// for the beginning), starting at the preferred endpoint and moving to
    /// the others when one fails. See [`crate::subscribe`].
    pub fn subscribe(&self, from: &str) -> crate::subscribe::Subscription {
        let n = self.endpoints.len();
        let start = self.preferred.load(Ordering::Relaxed) % n;
        let mut eps = self.endpoints.clone();
        eps.rotate_left(start);
        crate::subscribe::Subscription::new(eps, from, self.connect_timeout)
    }

    /// `GET /livez`: true if some endpoint answers 200.
    pub fn livez(&self) -> bool {
        self.probe("/livez")
    }

    /// `GET /readyz`: true if some endpoint answers 200.
    pub fn readyz(&self) -> bool {
        self.probe("/readyz")
    }

    fn probe(&self, path: &str) -> bool {
        let n = self.endpoints.len();
        let start = self.preferred.load(Ordering::Relaxed) % n;
        (0..n).any(|i| {
            let idx = (start + i) % n;
            let ok = matches!(
                self.exchange(&self.endpoints[idx], "GET", path, None),
                Ok(r) if r.status == 200
            );
            if ok {
                self.preferred.store(idx, Ordering::Relaxed);
            }
            ok
        })
    }

    /// Runs `f` on each endpoint from the preferred one until it succeeds
    /// or fails with an error `failover` refuses.
    fn call<T>(
        &self,
        failover: impl Fn(&ClientError) -> bool,
        f: impl Fn(&str) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let n = self.endpoints.len();
        let start = self.preferred.load(Ordering::Relaxed) % n;
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            match f(&self.endpoints[idx]) {
                Ok(v) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) if failover(&e) => last = Some(e),
                Err(e) => {
                    if matches!(e, ClientError::Http { .. }) {
                        // It answered: it is reachable.
                        self.preferred.store(idx, Ordering::Relaxed);
                    }
                    return Err(e);
                }
            }
        }
        Err(ClientError::AllEndpointsFailed {
            last: Box::new(last.expect("at least one endpoint (checked in new)")),
        })
    }

    /// One exchange whose 2xx body is JSON `T`; non-2xx becomes `Http`.
    fn json<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<T, ClientError> {
        let resp = self.exchange(endpoint, method, path, body)?;
        if !(200..300).contains(&resp.status) {
            return Err(http_error(&resp));
        }
        serde_json::from_slice(&resp.body)
            .map_err(|e| ClientError::Decode(format!("{method} {path} from {endpoint}: {e}")))
    }

    /// Writes one request on `ka`'s connection to endpoint `idx` (opening
    /// one if there is none, or it goes elsewhere) and reads one response,
    /// keeping the connection for the next call if the response allows.
    ///
    /// A kept connection the server has closed meanwhile (an idle timeout,
    /// a restart) fails before any byte of the response arrives; the request
    /// is then sent once more on a new connection. Only callers whose
    /// request is safe to send twice (a proposal with a session, a read)
    /// may use this.
    pub(crate) fn exchange_kept(
        &self,
        ka: &mut KeepAlive,
        idx: usize,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        let endpoint = &self.endpoints[idx];
        if let Some((i, mut r)) = ka.conn.take() {
            if i == idx {
                match self.send_on(&mut r, endpoint, method, path, body) {
                    Ok(resp) => {
                        if resp.reusable() {
                            ka.conn = Some((idx, r));
                        }
                        return Ok(resp);
                    }
                    // Closed while idle (or the replica died holding it):
                    // send it again on a new connection.
                    Err(Sent::Stale(_)) => ka.lost = true,
                    Err(Sent::Failed(e)) => return Err(e),
                }
            }
        }
        let mut r = BufReader::new(self.connect(endpoint)?);
        ka.opened += 1;
        match self.send_on(&mut r, endpoint, method, path, body) {
            Ok(resp) => {
                if resp.reusable() {
                    ka.conn = Some((idx, r));
                }
                Ok(resp)
            }
            Err(Sent::Stale(e) | Sent::Failed(e)) => Err(e),
        }
    }

    /// One request and response on an open connection (kept alive).
    fn send_on(
        &self,
        r: &mut BufReader<TcpStream>,
        endpoint: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, Sent> {
        let io_err = |source: io::Error| io_error(endpoint, source);
        // Until the first byte of the answer, a failure may just be a
        // connection the server closed while it sat idle.
        let stale = |source: io::Error| match io_err(source) {
            e @ ClientError::Timeout { .. } => Sent::Failed(e),
            e => Sent::Stale(e),
        };
        {
            let s = r.get_ref();
            s.set_read_timeout(Some(self.read_timeout))
                .and_then(|_| s.set_write_timeout(Some(self.read_timeout)))
                .and_then(|_| s.set_nodelay(true))
                .map_err(stale)?;
            let mut w = s;
            http::write_request_with(&mut w, method, endpoint, path, body, true).map_err(stale)?;
        }
        match r.fill_buf() {
            Ok([]) => {
                return Err(stale(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a response",
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(stale(e)),
        }
        http::read_response(r).map_err(|e| {
            Sent::Failed(match e {
                ParseError::Io(source) => io_err(source),
                other => ClientError::Decode(format!("{method} {path} from {endpoint}: {other}")),
            })
        })
    }

    /// Connects, writes one request and reads one response.
    fn exchange(
        &self,
        endpoint: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        let stream = self.connect(endpoint)?;
        let io_err = |source: io::Error| io_error(endpoint, source);
        stream
            .set_read_timeout(Some(self.read_timeout))
            .and_then(|_| stream.set_write_timeout(Some(self.read_timeout)))
            .and_then(|_| stream.set_nodelay(true))
            .map_err(io_err)?;
        let mut w = &stream;
        http::write_request(&mut w, method, endpoint, path, body).map_err(io_err)?;
        http::read_response(&mut BufReader::new(&stream)).map_err(|e| match e {
            ParseError::Io(source) => io_err(source),
            other => ClientError::Decode(format!("{method} {path} from {endpoint}: {other}")),
        })
    }

    fn connect(&self, endpoint: &str) -> Result<TcpStream, ClientError> {
        let err = |source| ClientError::Connect {
            endpoint: endpoint.to_string(),
            source,
        };
        let addrs = endpoint.to_socket_addrs().map_err(err)?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "name resolved to no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.connect_timeout) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(err(last))
    }
}

/// How a request on a kept-alive connection failed.
enum Sent {
    /// Before any byte of a response arrived (not a timeout): the server
    /// may have closed the connection while it was idle.
    Stale(ClientError),
    /// Anything else.
    Failed(ClientError),
}

/// The error of a non-2xx response. A `Retry-After` header (in seconds)
/// fills in `retry_after_ms` when the body does not give it, and a 429
/// without a JSON body is still an `overloaded`, retryable error.
/// An I/O failure talking to `endpoint`: a socket timeout is `Timeout`.
fn io_error(endpoint: &str, source: io::Error) -> ClientError {
    match source.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout {
            endpoint: endpoint.to_string(),
        },
        _ => ClientError::Io {
            endpoint: endpoint.to_string(),
            source,
        },
    }
}

fn http_error(resp: &Response) -> ClientError {
    let mut body = serde_json::from_slice::<ErrorBody>(&resp.body).unwrap_or_else(|_| ErrorBody {
        code: if resp.status == 429 {
            "overloaded".to_string()
        } else {
            format!("http_{}", resp.status)
        },
        message: String::from_utf8_lossy(&resp.body).trim().to_string(),
        retryable: resp.status == 429,
        retry_after_ms: None,
    });
    if body.retry_after_ms.is_none() {
        body.retry_after_ms = resp
            .header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| secs.saturating_mul(1000));
    }
    ClientError::Http {
        status: resp.status,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;

    /// A fake server: answers each of `answers` to one connection, in
    /// order, and sends the request lines it saw on the channel.
    fn fake(answers: Vec<Vec<u8>>) -> (String, mpsc::Receiver<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for answer in answers {
                let (mut s, _) = l.accept().unwrap();
                let req = read_request(&mut s);
                tx.send(req).unwrap();
                let _ = s.write_all(&answer);
            }
        });
        (addr, rx)
    }

    /// Reads a request head and its content-length body.
    fn read_request(s: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).unwrap();
            buf.push(byte[0]);
        }
        let head = String::from_utf8(buf).unwrap();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map(|v| v.parse::<usize>().unwrap())
            .unwrap_or(0);
        let mut body = vec![0; len];
        s.read_exact(&mut body).unwrap();
        head + &String::from_utf8(body).unwrap()
    }

    /// An address nothing listens on.
    fn dead() -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    fn status_json() -> String {
        r#"{"node":1,"members":[0,1,2],"epoch":0,"boot_id":7,"applied":3,"state_digest":9,
        "pending_execution":0,"in_flight":0,"waiting_proposals":0,"wal_last_lsn":4,
        "wal_durable_lsn":4,"fast_commits":2,"slow_commits":1,"recoveries":0}"#
            .to_string()
    }

    fn ok(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn chunked(body: &str) -> Vec<u8> {
        let (a, b) = body.split_at(body.len() / 2);
        format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        )
        .into_bytes()
    }

    fn error(status: u16, code: &str, retryable: bool) -> Vec<u8> {
        let body = format!(r#"{{"code":"{code}","message":"m","retryable":{retryable}}}"#);
        format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn status_over_content_length_and_chunked() {
        let (a, rx) = fake(vec![ok(&status_json()), chunked(&status_json())]);
        let c = Client::new([a.as_str()]).unwrap();
        assert_eq!(c.status().unwrap().node, 1);
        assert_eq!(c.status().unwrap().applied, 3);
        let req = rx.recv().unwrap();
        assert!(req.starts_with("GET /v1/status HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("Connection: close\r\n"));
    }

    #[test]
    fn propose_sends_json_and_fails_over_past_a_dead_endpoint() {
        let resp =
            r#"{"instance":"0.1@0","client":5,"request":1,"outcome":{"Applied":{"results":[]}}}"#;
        let (a, rx) = fake(vec![ok(resp), ok(resp)]);
        let c = Client::new([dead(), a.clone()]).unwrap();
        let req = ProposeRequest {
            client: Some(5),
            request: Some(1),
            ops: vec![synod_decision::Op::put("k", b"v".to_vec())],
            guards: vec![],
            issued_at_ms: None,
            timeout_ms: None,
        };
        assert_eq!(c.propose(&req).unwrap().instance, "0.1@0");
        let seen = rx.recv().unwrap();
        assert!(seen.starts_with("POST /v1/decisions HTTP/1.1\r\n"));
        assert!(seen.ends_with(r#""ops":[{"Put":{"key":"k","value":[118]}}],"guards":[],"issued_at_ms":null,"timeout_ms":null}"#), "{seen}");
        // The second call starts at the endpoint that worked.
        assert_eq!(c.preferred.load(Ordering::Relaxed), 1);
        c.propose(&req).unwrap();
    }

    #[test]
    fn retryable_5xx_fails_over_but_4xx_does_not() {
        let (a, _ra) = fake(vec![
            error(503, "overloaded", true),
            error(400, "invalid_argument", false),
        ]);
        let (b, _rb) = fake(vec![ok(&status_json())]);
        let c = Client::new([a.clone(), b]).unwrap();
        assert_eq!(c.status().unwrap().node, 1);
        let c = Client::new([a, dead()]).unwrap();
        match c.status() {
            Err(ClientError::Http { status: 400, body }) => {
                assert_eq!(body.code, "invalid_argument")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sessionless_proposal_does_not_fail_over_on_timeout() {
        let (a, _ra) = fake(vec![error(503, "timeout", true)]);
        let c = Client::new([a, dead()]).unwrap();
        let req = ProposeRequest {
            client: None,
            request: None,
            ops: vec![synod_decision::Op::get("k")],
            guards: vec![],
            issued_at_ms: None,
            timeout_ms: None,
        };
        assert!(matches!(
            c.propose(&req),
            Err(ClientError::Http { status: 503, .. })
        ));
    }

    /// "unavailable" is also what a stopping replica answers to proposals
    /// it already took, so a sessionless proposal (which a second replica
    /// would apply again) must not fail over on it; a 429 is refused before
    /// proposing, so it may.
    #[test]
    fn sessionless_proposal_fails_over_only_when_nothing_was_proposed() {
        let req = ProposeRequest {
            client: None,
            request: None,
            ops: vec![synod_decision::Op::put("k", b"v".to_vec())],
            guards: vec![],
            issued_at_ms: None,
            timeout_ms: None,
        };
        let resp =
            r#"{"instance":"0.1@0","client":9,"request":1,"outcome":{"Applied":{"results":[]}}}"#;
        let (a, _ra) = fake(vec![error(503, "unavailable", true)]);
        let (b, rb) = fake(vec![ok(resp)]);
        let c = Client::new([a, b.clone()]).unwrap();
        assert!(matches!(
            c.propose(&req),
            Err(ClientError::Http { status: 503, .. })
        ));
        assert!(rb.try_recv().is_err(), "the second replica got it too");
        let (a, _ra) = fake(vec![error(429, "overloaded", true)]);
        let c = Client::new([a, b]).unwrap();
        assert_eq!(c.propose(&req).unwrap().client, 9);
    }

    /// With a session, a replica that never answers, or drops the
    /// connection after taking the request, is left for the next one, with
    /// the same (client, request).
    #[test]
    fn session_proposal_fails_over_on_timeout_and_broken_connection() {
        let resp =
            r#"{"instance":"0.1@0","client":5,"request":1,"outcome":{"Applied":{"results":[]}}}"#;
        let req = ProposeRequest {
            client: Some(5),
            request: Some(1),
            ops: vec![synod_decision::Op::get("k")],
            guards: vec![],
            issued_at_ms: None,
            timeout_ms: None,
        };
        // Accepts (the kernel does) and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        // Reads the request and closes.
        let (closer, rc) = fake(vec![Vec::new()]);
        for first in [silent.local_addr().unwrap().to_string(), closer] {
            let (b, rb) = fake(vec![ok(resp)]);
            let c = Client::new([first, b])
                .unwrap()
                .with_read_timeout(Duration::from_millis(200));
            assert_eq!(c.propose(&req).unwrap().request, 1);
            assert!(rb.recv().unwrap().contains(r#""client":5,"request":1"#));
        }
        assert!(rc.recv().unwrap().contains(r#""client":5,"request":1"#));
        // Through a session (its own retry loop) too.
        let (b, rb) = fake(vec![ok(resp)]);
        let c = Client::new([silent.local_addr().unwrap().to_string(), b])
            .unwrap()
            .with_read_timeout(Duration::from_millis(200));
        let mut s = c.session(5);
        assert_eq!(
            s.propose(vec![synod_decision::Op::get("k")], vec![])
                .unwrap()
                .request,
            1
        );
        assert!(rb.recv().unwrap().contains(r#""client":5,"request":1"#));
    }

    #[test]
    fn overload_hints_from_the_body_or_the_retry_after_header() {
        let resp = |head: &str, body: &str| Response {
            status: 429,
            headers: head
                .split(';')
                .filter(|h| !h.is_empty())
                .map(|h| {
                    let (n, v) = h.split_once(':').unwrap();
                    (n.to_string(), v.to_string())
                })
                .collect(),
            body: body.as_bytes().to_vec(),
        };
        let e = http_error(&resp(
            "retry-after:1",
            r#"{"code":"overloaded","message":"m","retryable":true,"retry_after_ms":100}"#,
        ));
        assert!(e.is_overloaded() && e.is_retryable() && !e.maybe_proposed());
        assert_eq!(e.retry_after(), Some(Duration::from_millis(100)));
        // A proxy's bare 429: still overloaded and retryable, hint from the header.
        let e = http_error(&resp("retry-after:2", "Too Many Requests"));
        assert!(e.is_overloaded() && e.is_retryable() && e.is_failover());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        let e = http_error(&resp("", ""));
        assert_eq!(e.retry_after(), None);
        let all = ClientError::AllEndpointsFailed { last: Box::new(e) };
        assert!(all.is_overloaded() && all.is_retryable());
    }

    #[test]
    fn all_endpoints_down() {
        let c = Client::new([dead(), dead()]).unwrap();
        match c.status() {
            Err(ClientError::AllEndpointsFailed { last }) => {
                assert!(matches!(*last, ClientError::Connect { .. }))
            }
            other => panic!("{other:?}"),
        }
        assert!(!c.livez());
    }

    #[test]
    fn plain_text_errors_and_probes() {
        let (a, rx) = fake(vec![
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec(),
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\n\r\nnot ready".to_vec(),
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        ]);
        let c = Client::new([a]).unwrap();
        match c.read("inventory/sku 42") {
            Err(ClientError::Http { status: 404, body }) => assert_eq!(body.code, "http_404"),
            other => panic!("{other:?}"),
        }
        assert!(rx
            .recv()
            .unwrap()
            .starts_with("GET /v1/keys/inventory%2Fsku%2042 HTTP/1.1"));
        assert!(!c.readyz());
        assert!(c.livez());
    }

    #[test]
    fn oversized_body_to_eof_is_an_error() {
        let mut answer = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        answer.resize(answer.len() + http::MAX_RESPONSE_BYTES + 10, b'x');
        let (a, _rx) = fake(vec![answer]);
        let c = Client::new([a]).unwrap();
        match c.status() {
            Err(ClientError::Decode(s)) => assert!(s.contains("MAX_RESPONSE_BYTES"), "{s}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_and_silence() {
        let (a, _rx) = fake(vec![b"hello there\r\n\r\n".to_vec()]);
        let c = Client::new([a]).unwrap();
        assert!(matches!(c.status(), Err(ClientError::Decode(_))));
        // A server that accepts and never answers: a timeout, no failover.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap().to_string();
        let c = Client::new([a, dead()])
            .unwrap()
            .with_read_timeout(Duration::from_millis(100));
        assert!(matches!(c.status(), Err(ClientError::Timeout { .. })));
        drop(l);
    }

    #[test]
    fn endpoints_are_checked() {
        assert!(Client::new(Vec::<String>::new()).is_err());
        assert!(Client::new(["localhost"]).is_err());
        assert!(Client::new([":7000"]).is_err());
        assert!(Client::new(["localhost:7000", "[::1]:7001"]).is_ok());
        let addr: std::net::SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert!(Client::new([addr]).is_ok());
    }

    /// A session retries one request with the same (client, request) after
    /// a retryable error and a timeout, and numbers the next one after it.
    #[test]
    fn session_retries_with_the_same_request_number() {
        let resp = |status: &str, body: String| {
            format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        };
        let err = |status: &str, code: &str, retryable: bool| {
            resp(
                status,
                format!("{{\"code\":\"{code}\",\"message\":\"x\",\"retryable\":{retryable},\"retry_after_ms\":null}}"),
            )
        };
        let busy = err("503 Service Unavailable", "unavailable", true);
        let bad = err("400 Bad Request", "invalid_argument", false);
        let ok = |req: u64| {
            resp(
                "200 OK",
                format!("{{\"instance\":\"0.1@0\",\"client\":7,\"request\":{req},\"outcome\":{{\"Applied\":{{\"results\":[]}}}}}}"),
            )
        };
        let (addr, seen) = fake(vec![busy.clone(), busy, ok(1), ok(2), bad]);
        let c = Client::new([addr]).unwrap();
        let mut s = c.session(7);
        let r = s
            .propose(vec![synod_decision::Op::get("k")], Vec::new())
            .unwrap();
        assert_eq!(r.request, 1);
        let bodies: Vec<String> = (0..3).map(|_| seen.recv().unwrap()).collect();
        for b in &bodies {
            assert!(
                b.contains("\"client\":7") && b.contains("\"request\":1"),
                "{b}"
            );
        }
        let r = s
            .propose(vec![synod_decision::Op::get("k")], Vec::new())
            .unwrap();
        assert_eq!(r.request, 2);
        assert!(seen.recv().unwrap().contains("\"request\":2"));
        // A non-retryable error is returned at once, and uses the number up.
        assert!(s
            .propose(vec![synod_decision::Op::get("k")], Vec::new())
            .is_err());
        assert_eq!(s.next_request(), 4);
    }
}
