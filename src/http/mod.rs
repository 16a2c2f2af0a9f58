//! The one HTTP/1.1 client, on hyper: one connection per request, no pool, no background threads
//! (a name that is not an IP literal is resolved on tokio's blocking pool, started on first use).
//! Users: the Ollama executor (`crate::exec::ollama`) and the hub's REST API (`crate::hub_api`).
//!
//! The connection is driven by a task that is aborted when the [`Response`] (or the request's
//! future) is dropped, so dropping either closes the socket: that is how a timeout or a cancel
//! stops a request for real. `https://` uses the TLS set-up of `wss://` (the system's roots plus
//! an optional `ca_file`, rustls with ring, `crate::link::connect`), through tokio-rustls; a
//! [`Client`] made with a [`ProxyConfig`] tunnels through the same HTTP `CONNECT` proxy as the
//! WebSocket (`HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`, `NO_PROXY`). [`request`] goes direct.

mod tls;

use crate::link::connect::ProxyConfig;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// A base URL taken apart: `http[s]://host:port/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// `https://`: TLS on the connection.
    pub tls: bool,
    /// The host as written (an IPv6 literal without its brackets).
    pub host: String,
    /// The port (80, or 443 for https, when the URL names none).
    pub port: u16,
    /// A path prefix without its trailing `/` (usually empty).
    pub prefix: String,
}

impl BaseUrl {
    /// Parses `http[s]://host[:port][/prefix]`; a URL without a scheme is taken as `http://`.
    pub fn parse(url: &str) -> Result<BaseUrl, String> {
        let url = url.trim();
        let (tls, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if url.contains("://") {
            return Err(format!("{url}: only http:// and https:// URLs are supported"));
        } else {
            (false, url)
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
            None if tls => 443,
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("{url}: the port '{p}' is not a number from 0 to 65535"))?,
        };
        Ok(BaseUrl {
            tls,
            host: host.to_owned(),
            port,
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }

    /// `host:port` (an IPv6 literal in brackets): the `Host` header's value and `CONNECT`'s target.
    pub fn authority(&self) -> String {
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
    /// The TLS handshake failed, or TLS could not be set up (the reason says what to do).
    Tls(String),
    /// The proxy could not be reached or refused the tunnel (the reason names its variable).
    Proxy(String),
    /// Connected, but the exchange failed before the response's status line arrived.
    Exchange(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Connect(e) => write!(f, "could not connect: {e}"),
            HttpError::Tls(e) => write!(f, "TLS failed: {e}"),
            HttpError::Proxy(e) => f.write_str(e),
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

/// Sends one request (`body` as JSON when given) on a new connection, directly (no proxy; https
/// with the system's roots), and returns once the response's head has arrived.
/// `connect_timeout` bounds the connect (TCP and TLS) only.
pub async fn request(
    base: &BaseUrl,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
    connect_timeout: Duration,
) -> Result<Response, HttpError> {
    static DIRECT: OnceLock<Client> = OnceLock::new();
    let client = DIRECT.get_or_init(|| Client::new(None, ProxyConfig::default()));
    client.send(base, method, path, None, body, connect_timeout).await
}

/// An HTTP client with its TLS roots (the system's plus `ca_file`, loaded once, on the first
/// `https://` request) and its proxy settings. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    ca_file: Option<PathBuf>,
    proxy: ProxyConfig,
    tls: tls::TlsCell,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("ca_file", &self.inner.ca_file)
            .field("proxy", &self.inner.proxy)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client trusting the system's roots plus the PEM certificates in `ca_file`, going
    /// through `proxy` where it says so (`ProxyConfig::default()`: always direct).
    pub fn new(ca_file: Option<PathBuf>, proxy: ProxyConfig) -> Client {
        Client {
            inner: Arc::new(ClientInner {
                ca_file,
                proxy,
                tls: tls::TlsCell::default(),
            }),
        }
    }

    /// The proxy a request to `base` goes through (`NO_PROXY` applied): its `host:port` and the
    /// variable that set it, or `None` when it goes direct.
    pub fn proxy_for(&self, base: &BaseUrl) -> Option<(String, &'static str)> {
        let proxy = self
            .inner
            .proxy
            .proxy_for(base.tls, &base.host, base.port)
            .ok()??;
        Some((proxy.address(), proxy.variable()))
    }

    /// Sends one request on a new connection: `bearer` as `Authorization: Bearer`, `body` as
    /// JSON. Returns once the response's head has arrived; `connect_timeout` bounds the connect
    /// (proxy tunnel, TCP and TLS) only.
    pub async fn send(
        &self,
        base: &BaseUrl,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Vec<u8>>,
        connect_timeout: Duration,
    ) -> Result<Response, HttpError> {
        let connect = async {
            let tcp = self.tcp(base).await?;
            if base.tls {
                let config = self.inner.tls.get(self.inner.ca_file.clone()).await?;
                let stream = tls::handshake(config, &base.host, tcp).await?;
                handshake(stream).await
            } else {
                handshake(tcp).await
            }
        };
        let (mut sender, guard) = match tokio::time::timeout(connect_timeout, connect).await {
            Err(_) => {
                return Err(HttpError::Connect(format!(
                    "no answer within {} s",
                    connect_timeout.as_secs()
                )))
            }
            Ok(result) => result?,
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{}", base.prefix, path))
            .header(HOST, base.authority())
            .header(
                USER_AGENT,
                concat!("agentcom-sidecar/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(token) = bearer {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            // (never the header's value: it may hold the token)
            .map_err(|_| HttpError::Exchange("the request could not be built".to_owned()))?;
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

    /// TCP to `base`, or a tunnel to it through the proxy.
    async fn tcp(&self, base: &BaseUrl) -> Result<TcpStream, HttpError> {
        let proxy = self
            .inner
            .proxy
            .proxy_for(base.tls, &base.host, base.port)
            .map_err(HttpError::Proxy)?;
        let Some(proxy) = proxy else {
            let stream = TcpStream::connect((base.host.as_str(), base.port))
                .await
                .map_err(|e| HttpError::Connect(format!("{}: {e}", base.authority())))?;
            let _ = stream.set_nodelay(true);
            return Ok(stream);
        };
        let mut stream = TcpStream::connect((proxy.host.as_str(), proxy.port))
            .await
            .map_err(|e| {
                HttpError::Proxy(format!(
                    "cannot reach the proxy {} set by {}: {e}; is the proxy running, and is {} right?",
                    proxy.address(),
                    proxy.setting(),
                    proxy.variable()
                ))
            })?;
        let _ = stream.set_nodelay(true);
        crate::link::connect::proxy_tunnel(&mut stream, &proxy, &base.authority())
            .await
            .map_err(|e| HttpError::Proxy(format!("{e} (the proxy is set by {})", proxy.setting())))?;
        Ok(stream)
    }
}

/// HTTP/1.1 over `stream`; the connection's task is aborted when the guard drops.
async fn handshake<S>(
    stream: S,
) -> Result<(hyper::client::conn::http1::SendRequest<Full<Bytes>>, ConnGuard), HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| HttpError::Exchange(e.to_string()))?;
    let guard = ConnGuard(tokio::spawn(async move {
        let _ = conn.await;
    }));
    Ok((sender, guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_parse_with_their_defaults() {
        let u = BaseUrl::parse("http://127.0.0.1:11434").unwrap();
        assert!(!u.tls);
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
        let u = BaseUrl::parse("https://hub.example/agentcom").unwrap();
        assert_eq!((u.tls, u.port, u.prefix.as_str()), (true, 443, "/agentcom"));
        assert!(BaseUrl::parse("ftp://x:1")
            .unwrap_err()
            .contains("http:// and https://"));
        assert!(BaseUrl::parse("http://x:port").unwrap_err().contains("'port'"));
        assert!(BaseUrl::parse("http://:80").unwrap_err().contains("no host"));
    }
}
