//! Opening the hub's WebSocket over the network: name resolution (injectable), TCP, an HTTP
//! `CONNECT` proxy when the environment asks for one, TLS for `wss://` (the system's roots plus an
//! optional `ca_file`), and errors that say what happened and what to check.
//!
//! Here: the public API ([`NetConnector`], [`NetOptions`], [`Resolve`]), resolving and TCP. The
//! proxy is in `proxy`, TLS set-up in `tls`, [`ConnectError`] and its classification in `errors`,
//! and the wrong `ws://`/`wss://` detector in `scheme`.
//!
//! [`NetConnector`] is the [`Connector`] the daemon uses; [`NetConnector::connect_classified`]
//! gives the same connection with a typed [`ConnectError`] (for a `check` command).

mod errors;
mod proxy;
mod scheme;
mod tls;

pub use errors::ConnectError;
pub use proxy::{no_proxy_matches, redact_credentials, ProxyConfig, ProxyEndpoint};
pub use scheme::FirstBytes;
/// Shared with the HTTP client (`crate::http`): one TLS set-up, one proxy tunnel, one wording.
pub(crate) use {errors::describe_rustls, proxy::proxy_connect as proxy_tunnel, tls::tls_config};

use super::socket::{websocket_config, ConnectFuture, Connector};
use errors::classify_ws_error;
use proxy::{proxy_connect, unreachable_proxy};
use rustls::{ClientConfig, RootCertStore};
use scheme::wrong_scheme;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A boxed, sendable future (what [`Resolve::resolve`] returns).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Turns a host name into socket addresses. IP literals never reach it.
pub trait Resolve: Send + Sync {
    /// The addresses of `host` at `port`, in the order they should be tried.
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>>;
}

/// The operating system's resolver (`tokio::net::lookup_host`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), port)).await?.collect()) })
    }
}

/// How the sidecar reaches the network.
#[derive(Clone)]
pub struct NetOptions {
    /// A PEM file of extra CA certificates trusted for `wss://`, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// The HTTP proxy settings.
    pub proxy: ProxyConfig,
    /// The name resolver.
    pub resolver: Arc<dyn Resolve>,
}

impl fmt::Debug for NetOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetOptions")
            .field("ca_file", &self.ca_file)
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions::from_env(None)
    }
}

impl NetOptions {
    /// The system resolver, the proxy from the environment, and `ca_file`.
    pub fn from_env(ca_file: Option<PathBuf>) -> NetOptions {
        NetOptions {
            ca_file,
            proxy: ProxyConfig::from_env(),
            resolver: Arc::new(SystemResolver),
        }
    }

    /// The proxy a connection to `url` goes through (`NO_PROXY` applied), or `None` when it goes
    /// directly (or `url` or the proxy setting is unusable: connecting says why).
    pub fn proxy_for_url(&self, url: &str) -> Option<ProxyEndpoint> {
        let target = Target::parse(url).ok()?;
        self.proxy
            .proxy_for(target.tls, &target.host, target.port)
            .ok()
            .flatten()
    }

    /// Check what can be checked before connecting: the CA file is readable, holds PEM
    /// certificates and each is a usable trust anchor; the proxy URLs are usable.
    pub fn check(&self) -> Result<(), String> {
        if let Some(path) = &self.ca_file {
            let mut roots = RootCertStore::empty();
            tls::add_ca_file(&mut roots, path)?;
        }
        self.proxy.check()
    }
}

/// Connects over TCP (through a proxy when configured), with TLS for `wss://`.
#[derive(Clone, Default)]
pub struct NetConnector {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    options: NetOptions,
    /// Built on the first `wss://` connect (off the runtime's thread: it reads the system's
    /// certificate store), then shared.
    tls: OnceCell<Result<Arc<ClientConfig>, String>>,
}

impl fmt::Debug for NetConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetConnector")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// The stream under a [`NetConnector`]'s WebSocket.
pub type NetStream = MaybeTlsStream<FirstBytes<TcpStream>>;

impl NetConnector {
    /// A connector that never goes through a proxy: for the embedded hub on loopback (`demo`, `try`).
    pub fn direct() -> NetConnector {
        NetConnector::new(NetOptions {
            proxy: ProxyConfig::default(),
            ..NetOptions::from_env(None)
        })
    }

    /// A connector with these options.
    pub fn new(options: NetOptions) -> NetConnector {
        NetConnector {
            inner: Arc::new(Inner {
                options,
                tls: OnceCell::new(),
            }),
        }
    }

    /// The options in use.
    pub fn options(&self) -> &NetOptions {
        &self.inner.options
    }

    async fn tls(&self) -> Result<Arc<ClientConfig>, ConnectError> {
        let ca_file = self.inner.options.ca_file.clone();
        self.inner
            .tls
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || tls::tls_config(ca_file.as_deref()))
                    .await
                    .unwrap_or_else(|e| Err(format!("cannot load the trusted certificates: {e}")))
            })
            .await
            .clone()
            .map_err(|reason| ConnectError::Tls { reason })
    }

    /// Connect to `url` (`ws://` or `wss://`), with a [`ConnectError`] on failure.
    pub async fn connect_classified(&self, url: &str) -> Result<WebSocketStream<NetStream>, ConnectError> {
        let target = Target::parse(url)?;
        let tls = if target.tls { Some(self.tls().await?) } else { None };
        let options = &self.inner.options;
        let proxy = options
            .proxy
            .proxy_for(target.tls, &target.host, target.port)
            .map_err(|reason| ConnectError::Proxy { reason })?;
        let stream = match &proxy {
            None => {
                let addrs = resolve(options.resolver.as_ref(), &target.host, target.port).await?;
                tcp_connect(&addrs).await?
            }
            Some(proxy) => {
                let as_proxy = |e: ConnectError| ConnectError::Proxy {
                    reason: unreachable_proxy(proxy, &e),
                };
                let addrs = resolve(options.resolver.as_ref(), &proxy.host, proxy.port)
                    .await
                    .map_err(as_proxy)?;
                let mut stream = tcp_connect(&addrs).await.map_err(as_proxy)?;
                proxy_connect(&mut stream, proxy, &target.authority())
                    .await
                    .map_err(|e| match e {
                        ConnectError::Proxy { reason } => ConnectError::Proxy {
                            reason: format!("{reason} (the proxy is set by {})", proxy.setting()),
                        },
                        other => other,
                    })?;
                stream
            }
        };
        let connector = match tls {
            Some(config) => tokio_tungstenite::Connector::Rustls(config),
            None => tokio_tungstenite::Connector::Plain,
        };
        let (stream, first) = FirstBytes::new(stream);
        let (ws, _response) = tokio_tungstenite::client_async_tls_with_config(
            url,
            stream,
            Some(websocket_config()),
            Some(connector),
        )
        .await
        .map_err(|e| {
            let first = first.lock().unwrap_or_else(|e| e.into_inner());
            wrong_scheme(&target, &first, &e).unwrap_or_else(|| classify_ws_error(&e))
        })?;
        Ok(ws)
    }
}

impl Connector for NetConnector {
    type Stream = NetStream;

    fn connect(&self, url: &str) -> ConnectFuture<Self::Stream> {
        let this = self.clone();
        let url = url.to_owned();
        Box::pin(async move { this.connect_classified(&url).await.map_err(|e| e.to_string()) })
    }
}

/// Where the WebSocket goes.
struct Target {
    tls: bool,
    /// Without IPv6 brackets.
    host: String,
    port: u16,
}

impl Target {
    fn parse(url: &str) -> Result<Target, ConnectError> {
        let bad = |why: &str| ConnectError::Io(format!("hub_url `{url}` {why}"));
        let uri: Uri = url.parse().map_err(|_| bad("is not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            _ => return Err(bad("must start with ws:// or wss://")),
        };
        let host = uri.host().ok_or_else(|| bad("has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Target { tls, host, port })
    }

    /// `host:port` for `CONNECT` and `Host:` (IPv6 in brackets).
    fn authority(&self) -> String {
        proxy::host_port(&self.host, self.port)
    }
}

async fn resolve(resolver: &dyn Resolve, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let not_resolved = |detail: String| ConnectError::NameNotResolved {
        host: host.to_owned(),
        detail,
    };
    let addrs = resolver
        .resolve(host, port)
        .await
        .map_err(|e| not_resolved(e.to_string()))?;
    if addrs.is_empty() {
        return Err(not_resolved("no addresses".to_owned()));
    }
    Ok(addrs)
}

/// Try each address in turn; the error is the last one's.
async fn tcp_connect(addrs: &[SocketAddr]) -> Result<TcpStream, ConnectError> {
    let mut last = ConnectError::Io("no address to connect to".to_owned());
    for &addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => {
                last = match e.kind() {
                    io::ErrorKind::ConnectionRefused => ConnectError::Refused { addr },
                    io::ErrorKind::TimedOut => ConnectError::TimedOut,
                    _ => ConnectError::Io(format!("cannot connect to {addr}: {e}")),
                }
            }
        }
    }
    Err(last)
}
