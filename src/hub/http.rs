//! The HTTP/1.1 side of the hub's one port: requests without `Upgrade: websocket` are read
//! here, answered by [`super::api`], and the connection is closed.
//!
//! Hand-written rather than hyper's server: the port must also hand WebSocket upgrades (already
//! peeked) to tungstenite on any stream (`serve_stream` takes in-memory duplex streams in tests,
//! on a paused clock), and the API's requests are small JSON bodies. So: one request per
//! connection (`connection: close`), `Content-Length` bodies of at most [`MAX_BODY`] (413 beyond,
//! 411 for chunked bodies), the head within the handshake grace, the body within
//! [`BODY_TIMEOUT`] (408 after).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The largest request head (request line and headers) read.
pub const MAX_HEAD: usize = 16 * 1024;
/// The largest request body accepted (413 beyond).
pub const MAX_BODY: usize = 1024 * 1024;
/// How long the body may take to arrive once the head is in (408 after).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// A request head as read from the wire, plus the bytes read beyond it.
#[derive(Debug)]
pub struct Head {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, percent-decoding not applied (split on `/` first).
    pub path: String,
    /// The raw query string (after `?`), empty when none.
    pub query: String,
    /// Header names lower-cased; a repeated header keeps its last value.
    pub headers: HashMap<String, String>,
    /// Every byte read so far (head and whatever followed it).
    pub raw: Vec<u8>,
    /// Where the head ends in `raw` (after the blank line).
    pub end: usize,
}

impl Head {
    /// A header's value, if present (`name` lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// True for a WebSocket upgrade request (then tungstenite takes the stream).
    pub fn is_upgrade(&self) -> bool {
        self.header("upgrade")
            .is_some_and(|v| v.to_ascii_lowercase().contains("websocket"))
    }
}

/// Why a head could not be read.
#[derive(Debug)]
pub enum HeadError {
    /// The stream ended or failed before a complete head.
    Io,
    /// No blank line within [`MAX_HEAD`] bytes (431).
    TooLarge,
    /// Not an HTTP/1.x request line or header (400).
    Malformed,
}

/// Reads a request head (up to the blank line) from `stream`.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Head, HeadError> {
    let mut raw = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(pos) = find(&raw, b"\r\n\r\n") {
            break pos + 4;
        }
        if raw.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        let n = stream.read(&mut chunk).await.map_err(|_| HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Io);
        }
        raw.extend_from_slice(&chunk[..n]);
    };
    if end > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let text = std::str::from_utf8(&raw[..end - 4]).map_err(|_| HeadError::Malformed)?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed);
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Err(HeadError::Malformed);
    }
    let mut headers = HashMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(HeadError::Malformed)?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Head {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        raw,
        end,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A request the API answers: the head's parts, the body (empty when none) and the peer.
#[derive(Debug)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path's segments, percent-decoded (`/api/tasks/x` -> `["api", "tasks", "x"]`).
    pub segments: Vec<String>,
    /// The query parameters, percent-decoded (`+` is a space); the last of a repeated name wins.
    pub query: HashMap<String, String>,
    /// Header names lower-cased.
    pub headers: HashMap<String, String>,
    /// The raw body.
    pub body: Vec<u8>,
    /// The client's IP address, None for in-memory streams.
    pub peer: Option<IpAddr>,
}

impl Request {
    /// A header's value, if present (`name` lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The body as JSON parameters, as Plug.Parsers gives them: `{}` for an empty body, a
    /// non-object value under `_json`; Err for a body that is not JSON.
    pub fn params(&self) -> Result<serde_json::Map<String, Value>, ()> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Map::new());
        }
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(other) => Ok([("_json".to_string(), other)].into_iter().collect()),
            Err(_) => Err(()),
        }
    }
}

/// Decodes `%XX` escapes (and `+` as a space when `plus` is set); invalid escapes stay as they are.
pub fn percent_decode(s: &str, plus: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A response to write: status, JSON body and extra headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The JSON body (keys written in alphabetical order, like the real hub's).
    pub body: Value,
    /// Extra headers, e.g. `retry-after`.
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    /// A JSON response without extra headers.
    pub fn json(status: u16, body: Value) -> Response {
        Response {
            status,
            body,
            headers: Vec::new(),
        }
    }

    /// `{"error": code}` plus a hint, for failures of the transport itself (400, 408, 411, 413, 431).
    pub fn transport(status: u16, code: &str, hint: &str) -> Response {
        Response::json(status, json!({"error": code, "hint": hint}))
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        _ => "Unknown",
    }
}

/// Writes `resp` (with `connection: close`) and shuts the write side down.
pub async fn write_response<S: AsyncWrite + Unpin>(stream: &mut S, resp: &Response) -> io::Result<()> {
    let body = super::wire_text(&resp.body);
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n",
        resp.status,
        reason(resp.status),
        body.len()
    );
    for (name, value) in &resp.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.flush().await?;
    stream.shutdown().await
}

/// Reads the body the head announces (`Content-Length`), answering `100 Continue` when asked.
/// Err is the response to send instead (411, 413, 400, 408).
pub async fn read_body<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    head: &Head,
) -> Result<Vec<u8>, Response> {
    if head.header("transfer-encoding").is_some() {
        return Err(Response::transport(
            411,
            "length_required",
            "send the body with a Content-Length header (chunked bodies are not accepted)",
        ));
    }
    let len = match head.header("content-length") {
        None => 0,
        Some(v) => v.parse::<usize>().map_err(|_| {
            Response::transport(
                400,
                "bad_request",
                "Content-Length must be a non-negative integer",
            )
        })?,
    };
    if len > MAX_BODY {
        return Err(Response::transport(
            413,
            "body_too_large",
            &format!("the body may be at most {MAX_BODY} bytes"),
        ));
    }
    let mut body = head.raw[head.end..].to_vec();
    if body.len() < len
        && head
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
    }
    let fill = async {
        let mut chunk = [0u8; 8192];
        while body.len() < len {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Ok::<(), io::Error>(())
    };
    match tokio::time::timeout(BODY_TIMEOUT, fill).await {
        Ok(Ok(())) => {
            body.truncate(len);
            Ok(body)
        }
        Ok(Err(_)) => Err(Response::transport(
            400,
            "bad_request",
            "the body ended before Content-Length bytes",
        )),
        Err(_) => Err(Response::transport(
            408,
            "request_timeout",
            &format!("the body did not arrive within {} s", BODY_TIMEOUT.as_secs()),
        )),
    }
}

/// Builds the [`Request`] from a head and its body.
pub fn request(head: Head, body: Vec<u8>, peer: Option<IpAddr>) -> Request {
    let segments = head
        .path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let query = head
        .query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect();
    Request {
        method: head.method,
        segments,
        query,
        headers: head.headers,
        body,
        peer,
    }
}

/// A stream that first yields bytes already read from it (the peeked head), then reads on.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// Replays `prefix` before reading from `inner`.
    pub fn new(prefix: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2Fc", false), "a b/c");
        assert_eq!(percent_decode("a+b", true), "a b");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
    }

    #[tokio::test]
    async fn head_parsing_and_prefix_replay() {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        client
            .write_all(b"POST /api/tasks/a%2Fb?status=queued&x=1+2 HTTP/1.1\r\nHost: h:1\r\nContent-Length: 2\r\n\r\n{}")
            .await
            .unwrap();
        let head = read_head(&mut server).await.expect("head");
        assert!(!head.is_upgrade());
        assert_eq!(head.header("host"), Some("h:1"));
        let body = read_body(&mut server, &head).await.expect("body");
        let req = request(head, body, None);
        assert_eq!(req.segments, vec!["api", "tasks", "a/b"]);
        assert_eq!(req.query["x"], "1 2");
        assert_eq!(req.body, b"{}");
        let mut replay = Prefixed::new(b"abc".to_vec(), &b"def"[..]);
        let mut all = String::new();
        replay.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "abcdef");
    }

    #[tokio::test]
    async fn malformed_and_oversized_heads() {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        client.write_all(b"hello\r\n\r\n").await.unwrap();
        assert!(matches!(read_head(&mut server).await, Err(HeadError::Malformed)));
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        client.write_all(&vec![b'a'; MAX_HEAD + 10]).await.unwrap();
        assert!(matches!(read_head(&mut server).await, Err(HeadError::TooLarge)));
    }
}
