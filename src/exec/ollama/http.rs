//! A small HTTP/1.1 client on hyper: one connection per request, no pool, no background threads
//! (a name that is not an IP literal is resolved on tokio's blocking pool, started on first use).
//!
//! The connection is driven by a task that is aborted when the [`Response`] (or the request's
//! future) is dropped, so dropping either closes the socket: that is how a timeout or a cancel
//! stops a request for real. Plain `http://` only today (Ollama serves plain HTTP); `https://`
//! is refused with a clear message until the hub's REST API needs it (tokio-rustls is in the tree).

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// A base URL taken apart: `http://host:port/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// The host as written (an IPv6 literal without its brackets).
    pub host: String,
    /// The port (80 when the URL names none).
    pub port: u16,
    /// A path prefix without its trailing `/` (usually empty).
    pub prefix: String,
}

impl BaseUrl {
    /// Parses `http://host[:port][/prefix]`; a URL without a scheme is taken as `http://`.
    pub fn parse(url: &str) -> Result<BaseUrl, String> {
        let url = url.trim();
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if url.starts_with("https://") {
            return Err(format!(
                "{url}: https is not supported here (Ollama serves plain http; use http://host:port)"
            ));
        } else if url.contains("://") {
            return Err(format!("{url}: only http:// URLs are supported"));
        } else {
            url
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6
                .find(']')
                .ok_or_else(|| format!("{url}: an IPv6 host must end with ']'"))?;
            let port = v6[end + 1..].strip_prefix(':');
            (&v6[..end], port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url}: the URL names no host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("{url}: the port '{p}' is not a number from 0 to 65535"))?,
        };
        Ok(BaseUrl {
            host: host.to_owned(),
            port,
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }

    /// The `Host` header's value.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub enum HttpError {
    /// No connection: refused, unreachable, the name did not resolve, or the connect timed out.
    Connect(String),
    /// Connected, but the exchange failed before the response's status line arrived.
    Exchange(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Connect(e) => write!(f, "could not connect: {e}"),
            HttpError::Exchange(e) => write!(f, "the request failed: {e}"),
        }
    }
}

/// Aborts the connection's task when dropped (closing the socket).
struct ConnGuard(JoinHandle<()>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A response whose body is read as it arrives.
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    body: Incoming,
    _conn: ConnGuard,
}

impl Response {
    /// The next piece of the body; `Ok(None)` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// The body, up to `limit` bytes (the rest is not read), as text.
    pub async fn text(&mut self, limit: usize) -> Result<String, String> {
        let mut body = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            let room = limit.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= limit {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

/// Sends one request (`body` as JSON when given) on a new connection, and returns once the
/// response's head has arrived. `connect_timeout` bounds the TCP connect only.
pub async fn request(
    base: &BaseUrl,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
    connect_timeout: Duration,
) -> Result<Response, HttpError> {
    let connect = TcpStream::connect((base.host.as_str(), base.port));
    let stream = match tokio::time::timeout(connect_timeout, connect).await {
        Err(_) => {
            return Err(HttpError::Connect(format!(
                "no answer within {} s",
                connect_timeout.as_secs()
            )))
        }
        Ok(Err(e)) => return Err(HttpError::Connect(e.to_string())),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| HttpError::Exchange(e.to_string()))?;
    let guard = ConnGuard(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("{}{}", base.prefix, path))
        .header(HOST, base.authority())
        .header(
            USER_AGENT,
            concat!("agentcom-sidecar/", env!("CARGO_PKG_VERSION")),
        );
    if body.is_some() {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| HttpError::Exchange(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| HttpError::Exchange(e.to_string()))?;
    Ok(Response {
        status: response.status().as_u16(),
        body: response.into_body(),
        _conn: guard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_parse_with_their_defaults() {
        let u = BaseUrl::parse("http://127.0.0.1:11434").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("127.0.0.1", 11434, "")
        );
        let u = BaseUrl::parse("gpu-box:8080/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("gpu-box", 8080));
        assert_eq!(BaseUrl::parse("http://gpu-box").unwrap().port, 80);
        let u = BaseUrl::parse("http://[::1]:11434/ollama/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("::1", 11434, "/ollama")
        );
        assert_eq!(u.authority(), "[::1]:11434");
        assert!(BaseUrl::parse("https://x:1").unwrap_err().contains("https"));
        assert!(BaseUrl::parse("http://x:port").unwrap_err().contains("'port'"));
        assert!(BaseUrl::parse("http://:80").unwrap_err().contains("no host"));
    }
}
