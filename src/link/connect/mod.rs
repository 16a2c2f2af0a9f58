//! Opening the hub's WebSocket over the network: name resolution (injectable), TCP, an HTTP
//! `CONNECT` proxy when the environment asks for one, TLS for `wss://` (the system's roots plus an
//! optional `ca_file`), and errors that say what happened and what to check.
//!
//! [`NetConnector`] is the [`Connector`] the daemon uses; [`NetConnector::connect_classified`]
//! gives the same connection with a typed [`ConnectError`] (for a `check` command).

use super::socket::{websocket_config, ConnectFuture, Connector};
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// The proxy settings: raw values as found in the environment, parsed when used.
///
/// `Debug` hides any credentials in the proxy URLs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The proxy for `wss://` (`HTTPS_PROXY`, else `ALL_PROXY`): `http://[user:pass@]host:port`.
    pub https: Option<String>,
    /// The proxy for `ws://` (`HTTP_PROXY`, else `ALL_PROXY`).
    pub http: Option<String>,
    /// Hosts reached directly (`NO_PROXY`): a comma list of `*`, `host`, `.domain`, `domain`,
    /// IP addresses or CIDR ranges, each optionally with `:port`.
    pub no_proxy: Option<String>,
    /// The variable `https` was read from (`https_proxy`, `HTTPS_PROXY`, `all_proxy`,
    /// `ALL_PROXY`), named in messages; `None` is shown as `HTTPS_PROXY`.
    pub https_var: Option<&'static str>,
    /// The variable `http` was read from; `None` is shown as `HTTP_PROXY`.
    pub http_var: Option<&'static str>,
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |v: &Option<String>| v.as_deref().map(redact_credentials);
        f.debug_struct("ProxyConfig")
            .field("https", &redact(&self.https))
            .field("http", &redact(&self.http))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// `url` with any `user:pass@` replaced by `***@`, to show a proxy URL to a person.
pub fn redact_credentials(url: &str) -> String {
    match url.rfind('@') {
        Some(at) => {
            let start = url.find("://").map_or(0, |i| i + 3);
            format!("{}***@{}", &url[..start], &url[at + 1..])
        }
        None => url.to_owned(),
    }
}

impl ProxyConfig {
    /// The proxy settings in the process environment (see [`ProxyConfig::from_vars`]).
    pub fn from_env() -> ProxyConfig {
        ProxyConfig::from_vars(|name| std::env::var(name).ok())
    }

    /// The proxy settings from variables looked up with `get` (a pure function of it).
    ///
    /// For each setting the lowercase name wins over the uppercase one (as in curl); an empty
    /// value counts as unset. `ALL_PROXY`/`all_proxy` is the fallback for both schemes.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> ProxyConfig {
        let first = |names: [&'static str; 2]| {
            names.into_iter().find_map(|name| {
                let value = get(name)?.trim().to_owned();
                (!value.is_empty()).then_some((name, value))
            })
        };
        let all = first(["all_proxy", "ALL_PROXY"]);
        let https = first(["https_proxy", "HTTPS_PROXY"]).or_else(|| all.clone());
        let http = first(["http_proxy", "HTTP_PROXY"]).or(all);
        ProxyConfig {
            https_var: https.as_ref().map(|(name, _)| *name),
            http_var: http.as_ref().map(|(name, _)| *name),
            https: https.map(|(_, value)| value),
            http: http.map(|(_, value)| value),
            no_proxy: first(["no_proxy", "NO_PROXY"]).map(|(_, value)| value),
        }
    }

    /// The variable the proxy for `wss://` (`tls`) or `ws://` comes from, for messages.
    pub fn variable(&self, tls: bool) -> &'static str {
        if tls {
            self.https_var.unwrap_or("HTTPS_PROXY")
        } else {
            self.http_var.unwrap_or("HTTP_PROXY")
        }
    }

    /// [`ProxyConfig::from_vars`] over a map (for tests and tools).
    pub fn from_map(vars: &HashMap<String, String>) -> ProxyConfig {
        ProxyConfig::from_vars(|name| vars.get(name).cloned())
    }

    /// Whether every proxy URL set is one this sidecar can use.
    pub fn check(&self) -> Result<(), String> {
        for (name, value) in [
            (self.variable(true), &self.https),
            (self.variable(false), &self.http),
        ] {
            if let Some(value) = value {
                ProxyEndpoint::parse(value).map_err(|e| format!("{name}: {e}"))?;
            }
        }
        Ok(())
    }

    /// The proxy to use for `host:port` (`tls` for `wss://`), or `None` to connect directly.
    pub fn proxy_for(&self, tls: bool, host: &str, port: u16) -> Result<Option<ProxyEndpoint>, String> {
        let name = self.variable(tls);
        let value = if tls { &self.https } else { &self.http };
        let Some(value) = value else { return Ok(None) };
        if let Some(list) = &self.no_proxy {
            if no_proxy_matches(list, host, port) {
                return Ok(None);
            }
        }
        let mut proxy = ProxyEndpoint::parse(value).map_err(|e| format!("{name}: {e}"))?;
        proxy.setting = format!("{name}={}", redact_credentials(value));
        proxy.variable = name;
        Ok(Some(proxy))
    }
}

/// An HTTP proxy that tunnels with `CONNECT`. `Debug` hides the credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyEndpoint {
    /// The proxy's host (an IPv6 address without brackets).
    pub host: String,
    /// The proxy's port (80 when the URL names none).
    pub port: u16,
    /// `user:password` for `Proxy-Authorization: Basic`, percent-decoded.
    credentials: Option<(String, String)>,
    /// Where it was set, for messages, without credentials: `HTTPS_PROXY=http://***@host:3128`.
    setting: String,
    /// The variable that set it (`HTTPS_PROXY`, `all_proxy`, ...).
    variable: &'static str,
}

impl fmt::Debug for ProxyEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyEndpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("credentials", &self.credentials.as_ref().map(|_| "***"))
            .finish()
    }
}

impl ProxyEndpoint {
    /// Parse `http://[user:pass@]host[:port][/]` (a URL without a scheme is taken as `http://`).
    /// Error messages never repeat the credentials.
    pub fn parse(url: &str) -> Result<ProxyEndpoint, String> {
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "the proxy scheme `{scheme}://` is not supported: only http:// proxies (HTTP CONNECT) are"
                ))
            }
            None => url,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(format!(
                "the proxy URL `{}` has a path: expected http://[user:pass@]host:port",
                redact_credentials(url)
            ));
        }
        let (credentials, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((percent_decode(user)?, percent_decode(pass)?)), hostport)
            }
            None => (None, rest),
        };
        let bad = || {
            format!(
                "cannot read the proxy URL `{}`: expected http://[user:pass@]host:port",
                redact_credentials(url)
            )
        };
        let (host, port) = split_host_port(hostport).ok_or_else(bad)?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok(ProxyEndpoint {
            host: host.to_owned(),
            port: port.unwrap_or(80),
            credentials,
            setting: redact_credentials(url),
            variable: "the proxy URL",
        })
    }

    /// Whether the proxy URL carried credentials.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// `host:port` (an IPv6 host in brackets): what to show a person, never the credentials.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The variable that set it (`HTTPS_PROXY`, `all_proxy`, ...).
    pub fn variable(&self) -> &'static str {
        self.variable
    }

    /// The variable and URL it came from, credentials hidden: `HTTPS_PROXY=http://***@host:3128`.
    pub fn setting(&self) -> &str {
        &self.setting
    }
}

/// Split `host`, `host:port`, `[v6]` or `[v6]:port`; a bare IPv6 address has no port.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?.parse().ok()?))),
        };
    }
    if s.parse::<IpAddr>().is_ok() {
        return Some((s, None));
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((s, None)),
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("the proxy credentials hold a bad %-escape")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the proxy credentials are not UTF-8".to_owned())
}

/// Whether `host:port` is in the `NO_PROXY` list `list`.
pub fn no_proxy_matches(list: &str, host: &str, port: u16) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let host_ip = host.parse::<IpAddr>().ok();
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            // A CIDR range (its '/' makes it unambiguous).
            if let Some((net, bits)) = entry.split_once('/') {
                return match (host_ip, net.parse::<IpAddr>(), bits.parse::<u8>()) {
                    (Some(ip), Ok(net), Ok(bits)) => in_cidr(ip, net, bits),
                    _ => false,
                };
            }
            let Some((name, entry_port)) = split_host_port(entry) else {
                return false;
            };
            if entry_port.is_some_and(|p| p != port) {
                return false;
            }
            if let Ok(ip) = name.parse::<IpAddr>() {
                return host_ip == Some(ip);
            }
            let name = name
                .trim_start_matches('*')
                .trim_start_matches('.')
                .trim_end_matches('.')
                .to_ascii_lowercase();
            !name.is_empty()
                && (host == name
                    || (host.len() > name.len()
                        && host.ends_with(&name)
                        && host.as_bytes()[host.len() - name.len() - 1] == b'.'))
        })
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
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
            add_ca_file(&mut roots, path)?;
        }
        self.proxy.check()
    }
}

/// Add the certificates in the PEM file at `path` to `roots`; the error names the file.
fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<(), String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read ca_file {shown}: {e}"))?;
    let mut count = 0;
    for (index, cert) in CertificateDer::pem_slice_iter(&bytes).enumerate() {
        let cert =
            cert.map_err(|e| format!("ca_file {shown}: certificate {} is not valid PEM: {e}", index + 1))?;
        roots.add(cert).map_err(|e| {
            format!(
                "ca_file {shown}: certificate {} is not a usable CA certificate: {e}",
                index + 1
            )
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(format!(
            "ca_file {shown} holds no PEM certificate (expected one or more \
-----BEGIN CERTIFICATE----- blocks)"
        ));
    }
    Ok(())
}

/// The TLS settings: the system's roots plus `ca_file`, the ring provider.
fn tls_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        add_ca_file(&mut roots, path)?;
    }
    if roots.is_empty() {
        return Err(
            "no trusted CA certificates: the system has none that could be loaded; set ca_file".to_owned(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Why a connection to the hub failed, classified for a person to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// The hub's host name could not be resolved.
    NameNotResolved {
        /// The name.
        host: String,
        /// What the resolver said.
        detail: String,
    },
    /// Nothing listens at the address (TCP RST).
    Refused {
        /// The address tried last.
        addr: SocketAddr,
    },
    /// The TCP connection timed out.
    TimedOut,
    /// The TLS handshake failed, or TLS could not be set up.
    Tls {
        /// Why, in words.
        reason: String,
    },
    /// The proxy could not be used or refused the tunnel.
    Proxy {
        /// Why, in words.
        reason: String,
    },
    /// The server answered the WebSocket upgrade with an HTTP status.
    HttpStatus {
        /// The HTTP status code.
        status: u16,
    },
    /// Any other I/O or protocol failure.
    Io(String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::NameNotResolved { host, detail } => write!(
                f,
                "cannot resolve the host name `{host}` ({detail}): check the host in hub_url and this machine's DNS"
            ),
            ConnectError::Refused { addr } => write!(
                f,
                "connection refused by {addr}: is the hub running, and is the port in hub_url right?"
            ),
            ConnectError::TimedOut => write!(
                f,
                "the connection timed out: check that the hub is reachable from here (firewall, VPN, proxy settings)"
            ),
            ConnectError::Tls { reason } => write!(f, "TLS failed: {reason}"),
            // Each reason names the variable the proxy came from.
            ConnectError::Proxy { reason } => f.write_str(reason),
            ConnectError::HttpStatus { status } => write!(
                f,
                "the server answered HTTP {status} instead of upgrading to a WebSocket: is hub_url's path right (usually /ws)?"
            ),
            ConnectError::Io(detail) => f.write_str(detail),
        }
    }
}

impl std::error::Error for ConnectError {}

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

/// How many of the server's first bytes [`FirstBytes`] keeps (an HTTP error page's start).
const FIRST_BYTES: usize = 1024;

/// A stream that keeps the first bytes the server sent, so that a failed handshake can tell what
/// answered: TLS records to a plain HTTP upgrade (`ws://` to a TLS hub), or plain text to a TLS
/// ClientHello (`wss://` to a plain hub). Past those bytes it only passes data through.
#[derive(Debug)]
pub struct FirstBytes<S> {
    inner: S,
    seen: Arc<std::sync::Mutex<Vec<u8>>>,
    recording: bool,
}

impl<S> FirstBytes<S> {
    fn new(inner: S) -> (FirstBytes<S>, Arc<std::sync::Mutex<Vec<u8>>>) {
        let seen = Arc::new(std::sync::Mutex::new(Vec::with_capacity(FIRST_BYTES)));
        let stream = FirstBytes {
            inner,
            seen: seen.clone(),
            recording: true,
        };
        (stream, seen)
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for FirstBytes<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.recording {
            let fresh = &buf.filled()[before..];
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let room = FIRST_BYTES - seen.len();
            seen.extend_from_slice(&fresh[..fresh.len().min(room)]);
            let full = seen.len() >= FIRST_BYTES;
            drop(seen);
            self.recording = !full;
        }
        poll
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for FirstBytes<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Whether `first` (a server's first bytes) starts like a TLS record: a handshake (22) or an
/// alert (21) of TLS 1.x.
fn looks_like_tls(first: &[u8]) -> bool {
    matches!(first, [21 | 22, 3, 0..=4, ..])
}

/// A scheme mistake read from the server's first bytes after a failed handshake, if that is
/// what happened.
fn wrong_scheme(
    target: &Target,
    first: &[u8],
    error: &tokio_tungstenite::tungstenite::Error,
) -> Option<ConnectError> {
    use tokio_tungstenite::tungstenite::Error;
    let at = target.authority();
    let eof = matches!(error, Error::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof);
    if target.tls && first.is_empty() && eof {
        return Some(ConnectError::Tls {
            reason: format!(
                "the server at {at} closed the connection without answering the TLS handshake: \
                 hub_url's scheme looks wrong if this hub does not use TLS (then hub_url should start \
                 with ws:// instead of wss://); otherwise something on the way cut the connection"
            ),
        });
    }
    // nginx and others answer a plain request on a TLS port with a 400 page saying so.
    let https_port_page = first.starts_with(b"HTTP/")
        && String::from_utf8_lossy(first)
            .to_ascii_lowercase()
            .contains("plain http request was sent to https port");
    if !target.tls && (looks_like_tls(first) || https_port_page) {
        return Some(ConnectError::Io(format!(
            "the server at {at} answered the WebSocket upgrade {}: hub_url's scheme looks wrong: \
             this hub uses TLS, so hub_url should start with wss:// instead of ws://",
            if https_port_page {
                "with \"The plain HTTP request was sent to HTTPS port\""
            } else {
                "with TLS"
            }
        )));
    }
    if target.tls && !first.is_empty() && !looks_like_tls(first) {
        let text: String = String::from_utf8_lossy(first)
            .chars()
            .take_while(|c| *c != '\r' && *c != '\n')
            .filter(|c| !c.is_control())
            .collect();
        let shown = if first.starts_with(b"HTTP/") {
            format!("plain HTTP (`{text}...`)")
        } else {
            "something that is not TLS".to_owned()
        };
        return Some(ConnectError::Tls {
            reason: format!(
                "the server at {at} answered the TLS handshake with {shown}: hub_url's scheme looks \
                 wrong: this hub does not use TLS, so hub_url should start with ws:// instead of wss://"
            ),
        });
    }
    None
}

/// The longest proxy answer head read before giving up.
const MAX_PROXY_HEAD: usize = 16 * 1024;

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
                tokio::task::spawn_blocking(move || tls_config(ca_file.as_deref()))
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
                proxy_connect(&mut stream, proxy, &target)
                    .await
                    .map_err(|e| match e {
                        ConnectError::Proxy { reason } => ConnectError::Proxy {
                            reason: format!("{reason} (the proxy is set by {})", proxy.setting),
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
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
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

/// Why the proxy itself could not be reached, naming it and the variable that set it (not the
/// hub: the hub was never tried).
fn unreachable_proxy(proxy: &ProxyEndpoint, e: &ConnectError) -> String {
    let what = match e {
        ConnectError::NameNotResolved { host, detail } => {
            format!("its host name `{host}` does not resolve ({detail})")
        }
        ConnectError::Refused { .. } => "connection refused".to_owned(),
        ConnectError::TimedOut => "the connection timed out".to_owned(),
        other => other.to_string(),
    };
    format!(
        "cannot reach the proxy {} set by {}: {what}; is the proxy running, and is {} right?",
        proxy.address(),
        proxy.setting,
        proxy.variable
    )
}

/// Ask the proxy for a tunnel to `target`; on success the stream is the tunnel.
async fn proxy_connect(
    stream: &mut TcpStream,
    proxy: &ProxyEndpoint,
    target: &Target,
) -> Result<(), ConnectError> {
    let fail = |reason: String| ConnectError::Proxy { reason };
    let at = format!("{}:{}", proxy.host, proxy.port);
    let authority = target.authority();
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some((user, pass)) = &proxy.credentials {
        request.push_str("Proxy-Authorization: Basic ");
        request.push_str(&base64(format!("{user}:{pass}").as_bytes()));
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| fail(format!("cannot send CONNECT to the proxy {at}: {e}")))?;

    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    let end = loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| fail(format!("cannot read the proxy {at}'s answer to CONNECT: {e}")))?;
        if n == 0 {
            return Err(fail(format!(
                "the proxy {at} closed the connection without answering CONNECT"
            )));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(pos) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if head.len() > MAX_PROXY_HEAD {
            return Err(fail(format!(
                "the proxy {at}'s answer to CONNECT has no end within {MAX_PROXY_HEAD} bytes"
            )));
        }
    };
    let status = parse_status_line(&head[..end]).ok_or_else(|| {
        fail(format!(
            "the proxy {at} answered CONNECT with something that is not HTTP"
        ))
    })?;
    if !(200..300).contains(&status.0) {
        let hint = match status.0 {
            407 if proxy.has_credentials() => ": check the user and password in the proxy URL",
            407 => ": put the credentials in the proxy URL (http://user:pass@host:port)",
            _ => "",
        };
        return Err(fail(format!(
            "the proxy refused CONNECT: {} {}{hint}",
            status.0, status.1
        )));
    }
    if head.len() > end {
        // Nothing may come before we speak (TLS and the HTTP upgrade are client-first).
        return Err(fail(format!(
            "the proxy {at} sent {} unexpected bytes after its CONNECT answer",
            head.len() - end
        )));
    }
    Ok(())
}

/// `(code, reason)` from an HTTP answer head.
fn parse_status_line(head: &[u8]) -> Option<(u16, String)> {
    let text = std::str::from_utf8(head).ok()?;
    let line = text.split("\r\n").next()?;
    let mut parts = line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    let code = code.parse().ok()?;
    let reason = parts.next().unwrap_or("").trim().to_owned();
    Some((code, reason))
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn classify_ws_error(e: &tokio_tungstenite::tungstenite::Error) -> ConnectError {
    use tokio_tungstenite::tungstenite::error::TlsError;
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Http(response) => ConnectError::HttpStatus {
            status: response.status().as_u16(),
        },
        Error::Tls(TlsError::Rustls(inner)) => ConnectError::Tls {
            reason: describe_rustls(inner),
        },
        Error::Tls(TlsError::InvalidDnsName) => ConnectError::Tls {
            reason: "the host in hub_url is not a valid TLS server name".to_owned(),
        },
        Error::Io(io) => {
            if let Some(inner) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return ConnectError::Tls {
                    reason: describe_rustls(inner),
                };
            }
            match io.kind() {
                io::ErrorKind::ConnectionRefused => ConnectError::Io(format!(
                    "connection refused: is the hub running, and is the port in hub_url right? ({io})"
                )),
                io::ErrorKind::TimedOut => ConnectError::TimedOut,
                _ => ConnectError::Io(format!("the WebSocket handshake failed: {io}")),
            }
        }
        other => ConnectError::Io(format!("the WebSocket handshake failed: {other}")),
    }
}

/// A rustls failure in words, with what to do about it.
fn describe_rustls(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => "the hub's certificate is not signed by a trusted CA: \
set ca_file to the PEM file of the CA that signed it"
                .to_owned(),
            CertificateError::NotValidForName => {
                "the hub's certificate is not valid for the host in hub_url: use the name on the certificate"
                    .to_owned()
            }
            CertificateError::NotValidForNameContext { expected, presented } => format!(
                "the hub's certificate is not valid for {} (it names {}): use one of those names in hub_url",
                expected.to_str(),
                presented
                    .iter()
                    .map(|name| plain_name(name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the hub's certificate has expired (or this machine's clock is wrong): renew it on the hub"
                    .to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the hub's certificate is not valid yet: check this machine's clock".to_owned()
            }
            other => format!("the hub's certificate was rejected: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) => {
            format!("the hub ended the TLS handshake with the alert {alert:?}")
        }
        other => other.to_string(),
    }
}

/// A certificate name as rustls reports it (`DnsName("localhost")`, `IpAddress(127.0.0.1)`), as a
/// person writes it: `localhost`, `127.0.0.1`. Anything else is kept as it is.
fn plain_name(presented: &str) -> String {
    let inner = |prefix: &str| {
        presented
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(')'))
            .map(|inner| inner.trim_matches('"').to_owned())
    };
    inner("DnsName(")
        .or_else(|| inner("IpAddress("))
        .unwrap_or_else(|| presented.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_names_are_shown_plainly() {
        assert_eq!(plain_name("DnsName(\"localhost\")"), "localhost");
        assert_eq!(plain_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(plain_name("IpAddress(::1)"), "::1");
        assert_eq!(plain_name("hub.example"), "hub.example");
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"),
            Some((407, "Proxy Authentication Required".to_owned()))
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.0 200\r\n\r\n"),
            Some((200, String::new()))
        );
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n\r\n"), None);
    }
}
