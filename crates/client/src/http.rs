//! A minimal HTTP/1.1 exchange over one connection: write one request
//! (`Connection: close`, or kept alive for the next request), read one
//! response (`Content-Length`, `chunked`, or until EOF), all within named
//! limits.
//!
//! Deliberately small: no redirects, no compression, no TLS, no request
//! pipelining (one request at a time per connection). It speaks to Synod
//! replicas, whose answers are small JSON or text bodies.

use std::fmt;
use std::io::{self, BufRead, Read, Write};

/// Largest response body accepted, in bytes.
///
/// The largest answers the API sends are `/v1/log` pages; a page of
/// executed instances with their keys stays well below this, and a single
/// value is at most 64 KiB (`synod_decision::MAX_VALUE_BYTES`). 16 MiB
/// matches the replicas' default `transport.max_frame_bytes`: anything
/// bigger is a server bug or not a Synod server, and must not make the
/// client allocate without bound.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Largest status line plus headers accepted, in bytes.
///
/// axum sends a handful of short headers (a few hundred bytes); 16 KiB is
/// the common server-side default for request heads and leaves room for
/// proxies in between.
pub const MAX_HEAD_BYTES: usize = 16 << 10;

/// Longest chunk-size line of a chunked body (hex size plus extensions).
/// A size below [`MAX_RESPONSE_BYTES`] needs at most 7 hex digits; the rest
/// is room for chunk extensions, which we ignore.
const MAX_CHUNK_LINE_BYTES: usize = 1024;

/// A response that is not valid HTTP/1.1 or breaks a limit.
#[derive(Debug)]
pub enum ParseError {
    /// The socket failed (including read timeouts) while reading, or the
    /// connection closed before the response was complete
    /// (`UnexpectedEof`): a network failure, not a bad response, so a
    /// caller may retry it.
    Io(io::Error),
    /// The response is malformed; the text says where.
    Malformed(String),
    /// The body is larger than [`MAX_RESPONSE_BYTES`] or the head larger
    /// than [`MAX_HEAD_BYTES`].
    TooLarge(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Io(e) => write!(f, "reading the response: {e}"),
            ParseError::Malformed(s) => write!(f, "malformed HTTP response: {s}"),
            ParseError::TooLarge(s) => write!(f, "response too large: {s}"),
        }
    }
}

impl std::error::Error for ParseError {}

impl From<io::Error> for ParseError {
    fn from(e: io::Error) -> Self {
        ParseError::Io(e)
    }
}

/// One parsed response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Header names lower-cased, values trimmed, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// True if the connection may carry another request after this
    /// response: the body was delimited (`Content-Length` or `chunked`, not
    /// read to EOF) and the server did not say `Connection: close`.
    pub fn reusable(&self) -> bool {
        let delimited = self.header("content-length").is_some()
            || self
                .header("transfer-encoding")
                .is_some_and(|te| te.to_ascii_lowercase().ends_with("chunked"))
            || self.status == 204
            || self.status == 304;
        let close = self.headers.iter().any(|(n, v)| {
            n == "connection" && v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
        });
        delimited && !close
    }
}

/// Writes one request with `Connection: close`. `path` must already be
/// percent-encoded.
pub fn write_request(
    w: &mut impl Write,
    method: &str,
    host: &str,
    path: &str,
    json_body: Option<&[u8]>,
) -> io::Result<()> {
    write_request_with(w, method, host, path, json_body, false)
}

/// Writes one request; with `keep_alive` the connection stays open for the
/// next request (HTTP/1.1's default), otherwise it asks for
/// `Connection: close`. `path` must already be percent-encoded.
pub fn write_request_with(
    w: &mut impl Write,
    method: &str,
    host: &str,
    path: &str,
    json_body: Option<&[u8]>,
    keep_alive: bool,
) -> io::Result<()> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: synod-client/{}\r\n\
         Accept: application/json, text/plain\r\nConnection: {connection}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(body) = json_body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    // One buffer, one write: the request is small and this avoids a
    // Nagle-delayed second segment.
    let mut buf = head.into_bytes();
    if let Some(body) = json_body {
        buf.extend_from_slice(body);
    }
    w.write_all(&buf)?;
    w.flush()
}

/// The connection ended before the response did.
fn closed(what: &str) -> ParseError {
    ParseError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("connection closed {what}"),
    ))
}

/// Reads one response. Interim `1xx` responses are skipped.
pub fn read_response(r: &mut impl BufRead) -> Result<Response, ParseError> {
    read_response_max(r, MAX_RESPONSE_BYTES)
}

/// [`read_response`] with a body limit of `max_body` bytes instead of
/// [`MAX_RESPONSE_BYTES`], for the few answers that are legitimately larger
/// than an API call's (a replica's snapshot for a joining member).
pub fn read_response_max(r: &mut impl BufRead, max_body: usize) -> Result<Response, ParseError> {
    loop {
        let mut head_left = MAX_HEAD_BYTES;
        let status_line = read_line(r, &mut head_left, "status line")?
            .ok_or_else(|| closed("before a response"))?;
        let status = parse_status_line(&status_line)?;
        let mut headers = Vec::new();
        loop {
            let line = read_line(r, &mut head_left, "header")?
                .ok_or_else(|| closed("inside the headers"))?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').ok_or_else(|| {
                ParseError::Malformed(format!("header without a colon: {line:?}"))
            })?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        if (100..200).contains(&status) {
            continue;
        }
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
        };
        resp.body = read_body(r, &resp, max_body)?;
        return Ok(resp);
    }
}

fn parse_status_line(line: &str) -> Result<u16, ParseError> {
    let bad = || ParseError::Malformed(format!("bad status line: {line:?}"));
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().ok_or_else(bad)?;
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(bad());
    }
    let code = parts.next().ok_or_else(bad)?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let status: u16 = code.parse().map_err(|_| bad())?;
    if !(100..600).contains(&status) {
        return Err(bad());
    }
    Ok(status)
}

fn read_body(r: &mut impl BufRead, resp: &Response, max: usize) -> Result<Vec<u8>, ParseError> {
    // RFC 9112 §6.3: no body for 204 and 304.
    if resp.status == 204 || resp.status == 304 {
        return Ok(Vec::new());
    }
    if let Some(te) = resp.header("transfer-encoding") {
        if te.to_ascii_lowercase().ends_with("chunked") {
            return read_chunked(r, max);
        }
        return Err(ParseError::Malformed(format!(
            "unsupported transfer-encoding {te:?}"
        )));
    }
    if let Some(cl) = resp.header("content-length") {
        let len: u64 = cl
            .parse()
            .map_err(|_| ParseError::Malformed(format!("bad content-length {cl:?}")))?;
        if len > max as u64 {
            return Err(ParseError::TooLarge(format!(
                "content-length {len} > the body limit {max} (MAX_RESPONSE_BYTES for API answers)"
            )));
        }
        let mut body = vec![0; len as usize];
        r.read_exact(&mut body).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                closed(&format!("inside a body of content-length {len}"))
            }
            _ => ParseError::Io(e),
        })?;
        return Ok(body);
    }
    // Neither: the body runs to EOF (we sent `Connection: close`).
    let mut body = Vec::new();
    r.take(max as u64 + 1).read_to_end(&mut body)?;
    if body.len() > max {
        return Err(ParseError::TooLarge(format!(
            "body exceeds the body limit {max} (MAX_RESPONSE_BYTES for API answers)"
        )));
    }
    Ok(body)
}

fn read_chunked(r: &mut impl BufRead, max: usize) -> Result<Vec<u8>, ParseError> {
    let mut body = Vec::new();
    loop {
        let mut line_left = MAX_CHUNK_LINE_BYTES;
        let line = read_line(r, &mut line_left, "chunk size")?
            .ok_or_else(|| closed("inside a chunked body"))?;
        let hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16)
            .map_err(|_| ParseError::Malformed(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            // Trailers, then the final empty line. A server that closes
            // right after the last chunk is tolerated.
            let mut trailer_left = MAX_HEAD_BYTES;
            while let Some(t) = read_line(r, &mut trailer_left, "trailer")? {
                if t.is_empty() {
                    break;
                }
            }
            return Ok(body);
        }
        if size > max - body.len() {
            return Err(ParseError::TooLarge(format!(
                "chunked body exceeds the body limit {max} (MAX_RESPONSE_BYTES for API answers)"
            )));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => closed("inside a chunk"),
                _ => ParseError::Io(e),
            })?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)
            .map_err(|_| ParseError::Malformed("chunk not followed by CRLF".into()))?;
        if &crlf != b"\r\n" {
            return Err(ParseError::Malformed("chunk not followed by CRLF".into()));
        }
    }
}

/// Reads one line (without its `\r\n` or `\n`), charging its length to
/// `left`. `Ok(None)` at EOF before any byte.
fn read_line(
    r: &mut impl BufRead,
    left: &mut usize,
    what: &str,
) -> Result<Option<String>, ParseError> {
    let mut buf = Vec::new();
    let n = r.take(*left as u64).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        if n == *left {
            return Err(ParseError::TooLarge(format!(
                "{what} exceeds its limit ({} bytes for the head)",
                MAX_HEAD_BYTES
            )));
        }
        return Err(closed(&format!("inside the {what}")));
    }
    *left -= n;
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| ParseError::Malformed(format!("{what} is not UTF-8")))
}

/// Percent-encodes one path segment: everything but RFC 3986 unreserved
/// characters, so a key such as `inventory/sku-42` stays one segment.
pub fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Response, ParseError> {
        read_response(&mut io::BufReader::new(bytes))
    }

    #[test]
    fn content_length_body() {
        let r = parse(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 2\r\n\r\n{}trailing").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"{}");
        assert_eq!(r.header("content-type"), Some("application/json"));
    }

    #[test]
    fn chunked_body_with_extension_and_trailer() {
        let r = parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\nA\r\n0123456789\r\n0\r\nx-t: 1\r\n\r\n").unwrap();
        assert_eq!(r.body, b"abc0123456789");
    }

    #[test]
    fn body_to_eof_and_interim_response_skipped() {
        let r = parse(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 503 Service Unavailable\r\n\r\nnot ready",
        )
        .unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.body, b"not ready");
    }

    #[test]
    fn bad_status_lines() {
        for bad in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ParseError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    fn is_eof(r: Result<Response, ParseError>) -> bool {
        matches!(r, Err(ParseError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof)
    }

    /// A connection that ends early is a network failure (retryable), not
    /// a malformed response: a replica killed while it held the request.
    #[test]
    fn early_close_is_an_io_error() {
        for cut in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\nContent-",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n",
        ] {
            assert!(is_eof(parse(cut)), "{cut:?}");
        }
    }

    #[test]
    fn truncated_bodies_are_errors() {
        assert!(is_eof(parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
        )));
        assert!(is_eof(parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"
        )));
        assert!(is_eof(parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        )));
    }

    #[test]
    fn oversized_bodies_and_heads_are_refused() {
        let big = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_RESPONSE_BYTES + 1
        );
        assert!(matches!(
            parse(big.as_bytes()),
            Err(ParseError::TooLarge(_))
        ));
        let chunk = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            MAX_RESPONSE_BYTES + 1
        );
        assert!(matches!(
            parse(chunk.as_bytes()),
            Err(ParseError::TooLarge(_))
        ));
        let head = format!(
            "HTTP/1.1 200 OK\r\nx: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert!(matches!(
            parse(head.as_bytes()),
            Err(ParseError::TooLarge(_))
        ));
    }

    #[test]
    fn keep_alive_requests_and_reusable_responses() {
        let mut out = Vec::new();
        write_request_with(&mut out, "POST", "h:1", "/v1/decisions", Some(b"{}"), true).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Connection: keep-alive\r\n"), "{text}");
        assert!(text.ends_with("Content-Length: 2\r\n\r\n{}"), "{text}");
        let mut out = Vec::new();
        write_request(&mut out, "GET", "h:1", "/livez", None).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("Connection: close\r\n"));

        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .reusable());
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
                .unwrap()
                .reusable()
        );
        assert!(
            !parse(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: Close\r\n\r\n")
                .unwrap()
                .reusable()
        );
        // A body read to EOF ends the connection.
        assert!(!parse(b"HTTP/1.1 200 OK\r\n\r\nbody").unwrap().reusable());
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode_path_segment("sku-42"), "sku-42");
        assert_eq!(
            encode_path_segment("inventory/sku 42"),
            "inventory%2Fsku%2042"
        );
        assert_eq!(encode_path_segment("é"), "%C3%A9");
    }
}
