//! `link::connect` against real loopback servers: a TLS WebSocket endpoint with a CA made in the
//! test, an HTTP CONNECT proxy, and injected resolvers. Never a DNS lookup, never a non-loopback
//! address; proxy settings are passed as values, never through the process environment.

mod support;

use agentcom_sidecar::link::connect::{
    no_proxy_matches, BoxFuture, ConnectError, NetConnector, NetOptions, ProxyConfig, Resolve,
};
use agentcom_sidecar::link::socket::Connector;
use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(10);

/// A test CA and a server certificate it signed for `localhost` and 127.0.0.1.
struct Pki {
    ca_pem: String,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "agentcom-sidecar test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server_cert: server_cert.der().clone(),
        server_key: server_key.serialize_der(),
    }
}

/// A WebSocket endpoint on 127.0.0.1 (TLS when `pki` is given) that echoes text frames.
async fn ws_server(pki: Option<&Pki>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = pki.map(|pki| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![pki.server_cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone())),
            )
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    Some(acceptor) => {
                        // A failed handshake (the client distrusts us) just ends this connection.
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            echo(tls).await;
                        }
                    }
                    None => echo(tcp).await,
                }
            });
        }
    });
    addr
}

async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: S) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        if message.is_text() && ws.send(message).await.is_err() {
            return;
        }
    }
}

/// Send a text frame and expect it back: the connection really works end to end.
async fn round_trip<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
) {
    ws.send(Message::text("hello")).await.unwrap();
    let answer = timeout(LIMIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(answer, Message::text("hello"));
}

/// What the test proxy does with a CONNECT.
#[derive(Clone, Copy)]
enum ProxyMode {
    Tunnel,
    Refuse407,
    /// Answers 200 and then bytes of its own before the client has spoken.
    Chatty,
    /// Answers with something that is not HTTP.
    NotHttp,
}

/// A tiny HTTP CONNECT proxy on 127.0.0.1; records each request head it receives.
struct Proxy {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    async fn start(mode: ProxyMode) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                tokio::spawn(async move { proxy_one(client, mode, seen).await });
            }
        });
        Proxy { addr, heads }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The one request head the proxy saw, after asserting it is a `CONNECT` to `addr`.
    fn one_connect_to(&self, addr: SocketAddr) -> String {
        let heads = self.heads();
        assert_eq!(heads.len(), 1);
        assert!(
            heads[0].starts_with(&format!("CONNECT {addr} HTTP/1.1\r\n")),
            "{}",
            heads[0]
        );
        heads[0].clone()
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

async fn proxy_one(mut client: TcpStream, mode: ProxyMode, seen: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    seen.lock().unwrap().push(head.clone());
    match mode {
        ProxyMode::Refuse407 => {
            let _ = client
                .write_all(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n\
Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n",
                )
                .await;
        }
        ProxyMode::Chatty => {
            let _ = client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\nSURPRISE")
                .await;
            let _ = client.read(&mut byte).await;
        }
        ProxyMode::NotHttp => {
            let _ = client.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
        }
        ProxyMode::Tunnel => {
            let target = head
                .strip_prefix("CONNECT ")
                .and_then(|rest| rest.split(' ').next())
                .unwrap()
                .to_owned();
            let target: SocketAddr = target.parse().unwrap();
            assert!(
                target.ip().is_loopback(),
                "the test proxy only tunnels to loopback"
            );
            let mut upstream = TcpStream::connect(target).await.unwrap();
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .unwrap();
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
    }
}

/// A resolver that must not be asked (counts calls), or that maps names to fixed addresses.
struct FakeResolver {
    names: HashMap<String, SocketAddr>,
    calls: Arc<AtomicUsize>,
}

impl FakeResolver {
    fn failing() -> (Arc<FakeResolver>, Arc<AtomicUsize>) {
        FakeResolver::with(&[])
    }

    fn with(names: &[(&str, SocketAddr)]) -> (Arc<FakeResolver>, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let resolver = FakeResolver {
            names: names.iter().map(|(n, a)| ((*n).to_owned(), *a)).collect(),
            calls: calls.clone(),
        };
        (Arc::new(resolver), calls)
    }
}

impl Resolve for FakeResolver {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = match self.names.get(host) {
            Some(addr) => Ok(vec![SocketAddr::new(addr.ip(), port)]),
            None => Err(io::Error::other(format!("injected failure for {host}"))),
        };
        Box::pin(async move { answer })
    }
}

fn options(ca_file: Option<PathBuf>, proxy: ProxyConfig) -> (NetOptions, Arc<AtomicUsize>) {
    let (resolver, calls) = FakeResolver::failing();
    let options = NetOptions {
        ca_file,
        proxy,
        resolver,
    };
    (options, calls)
}

fn write_ca(dir: &TempDir, pki: &Pki) -> PathBuf {
    let path = dir.join("ca.pem");
    std::fs::write(&path, &pki.ca_pem).unwrap();
    path
}

async fn connect(
    options: NetOptions,
    url: &str,
) -> Result<tokio_tungstenite::WebSocketStream<agentcom_sidecar::link::connect::NetStream>, ConnectError> {
    timeout(LIMIT, NetConnector::new(options).connect_classified(url))
        .await
        .expect("the connect finished in time")
}

#[tokio::test]
async fn wss_with_the_ca_file_connects() {
    let pki = pki();
    let dir = TempDir::new("net-ca");
    let ca = write_ca(&dir, &pki);
    let addr = ws_server(Some(&pki)).await;
    let (options, calls) = options(Some(ca), ProxyConfig::default());
    options.check().unwrap();
    let mut ws = connect(options, &format!("wss://{addr}/ws")).await.unwrap();
    round_trip(&mut ws).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "an IP literal skips the resolver"
    );
}

#[tokio::test]
async fn wss_without_the_ca_file_is_an_unknown_issuer() {
    let pki = pki();
    let addr = ws_server(Some(&pki)).await;
    let (options, _) = options(None, ProxyConfig::default());
    let error = connect(options, &format!("wss://{addr}/ws")).await.unwrap_err();
    match &error {
        ConnectError::Tls { reason } => {
            assert!(reason.contains("not signed by a trusted CA"), "{reason}");
            assert!(reason.contains("ca_file"), "{reason}");
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    // The trait's String is the same teaching text.
    let (options, _) = self::options(None, ProxyConfig::default());
    let text = NetConnector::new(options)
        .connect(&format!("wss://{addr}/ws"))
        .await
        .err()
        .unwrap();
    assert_eq!(text, error.to_string());
}

#[tokio::test]
async fn wss_by_name_uses_the_resolver_and_checks_the_name() {
    let pki = pki();
    let dir = TempDir::new("net-name");
    let ca = write_ca(&dir, &pki);
    let addr = ws_server(Some(&pki)).await;
    let (resolver, calls) = FakeResolver::with(&[("localhost", addr), ("hub.test", addr)]);
    let options = NetOptions {
        ca_file: Some(ca),
        proxy: ProxyConfig::default(),
        resolver,
    };
    let mut ws = connect(options.clone(), &format!("wss://localhost:{}/ws", addr.port()))
        .await
        .unwrap();
    round_trip(&mut ws).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The certificate names localhost and 127.0.0.1, not hub.test.
    let error = connect(options, &format!("wss://hub.test:{}/ws", addr.port()))
        .await
        .unwrap_err();
    match &error {
        ConnectError::Tls { reason } => {
            assert!(reason.contains("not valid for hub.test"), "{reason}");
            // The names as a person writes them, not rustls' Debug form.
            assert!(reason.contains("(it names localhost, 127.0.0.1)"), "{reason}");
            assert!(
                !reason.contains("DnsName") && !reason.contains("IpAddress"),
                "{reason}"
            );
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_failing_resolver_gives_name_not_resolved() {
    let (options, calls) = options(None, ProxyConfig::default());
    let error = connect(options, "ws://hub.invalid:4000/ws").await.unwrap_err();
    assert_eq!(
        error,
        ConnectError::NameNotResolved {
            host: "hub.invalid".to_owned(),
            detail: "injected failure for hub.invalid".to_owned(),
        }
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(error.to_string().contains("check the host in hub_url"), "{error}");
}

#[tokio::test]
async fn ws_goes_through_the_proxy() {
    let addr = ws_server(None).await;
    let proxy = Proxy::start(ProxyMode::Tunnel).await;
    let config = ProxyConfig {
        http: Some(proxy.url()),
        ..ProxyConfig::default()
    };
    let (options, _) = options(None, config);
    let mut ws = connect(options, &format!("ws://{addr}/ws")).await.unwrap();
    round_trip(&mut ws).await;
    let head = proxy.one_connect_to(addr);
    assert!(!head.contains("Proxy-Authorization"), "{head}");
}

#[tokio::test]
async fn wss_goes_through_the_proxy_with_credentials() {
    let pki = pki();
    let dir = TempDir::new("net-proxy-tls");
    let ca = write_ca(&dir, &pki);
    let addr = ws_server(Some(&pki)).await;
    let proxy = Proxy::start(ProxyMode::Tunnel).await;
    let config = ProxyConfig {
        https: Some(format!("http://alice:s%40cret@{}", proxy.addr)),
        ..ProxyConfig::default()
    };
    let (options, _) = options(Some(ca), config);
    let mut ws = connect(options, &format!("wss://{addr}/ws")).await.unwrap();
    round_trip(&mut ws).await;
    let head = proxy.one_connect_to(addr);
    // base64("alice:s@cret")
    assert!(
        head.contains("\r\nProxy-Authorization: Basic YWxpY2U6c0BjcmV0\r\n"),
        "{head}"
    );
}

#[tokio::test]
async fn no_proxy_bypasses_the_proxy() {
    let addr = ws_server(None).await;
    let proxy = Proxy::start(ProxyMode::Tunnel).await;
    let config = ProxyConfig {
        http: Some(proxy.url()),
        no_proxy: Some(format!("example.com, 127.0.0.1:{}", addr.port())),
        ..ProxyConfig::default()
    };
    let (options, _) = options(None, config);
    let mut ws = connect(options, &format!("ws://{addr}/ws")).await.unwrap();
    round_trip(&mut ws).await;
    assert!(
        proxy.heads().is_empty(),
        "the proxy was used: {:?}",
        proxy.heads()
    );
}

#[tokio::test]
async fn a_proxy_answering_407_is_a_proxy_error() {
    let proxy = Proxy::start(ProxyMode::Refuse407).await;
    let config = ProxyConfig {
        http: Some(format!("http://bob:hunter2@{}", proxy.addr)),
        ..ProxyConfig::default()
    };
    let (options, _) = options(None, config);
    // Nothing listens at the target: the proxy answers before any tunnel exists.
    let error = connect(options, "ws://127.0.0.1:9/ws").await.unwrap_err();
    match &error {
        ConnectError::Proxy { reason } => assert!(
            reason.contains("the proxy refused CONNECT: 407 Proxy Authentication Required")
                && reason.contains(&format!(
                    "(the proxy is set by HTTP_PROXY=http://***@{})",
                    proxy.addr
                )),
            "{reason}"
        ),
        other => panic!("expected a proxy error, got {other:?}"),
    }
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert_eq!(proxy.heads().len(), 1);
    assert!(proxy.heads()[0].starts_with("CONNECT 127.0.0.1:9 HTTP/1.1\r\n"));
}

#[tokio::test]
async fn a_proxy_that_talks_out_of_turn_or_not_http_is_a_proxy_error() {
    for (mode, want) in [
        (ProxyMode::Chatty, "unexpected bytes after its CONNECT answer"),
        (ProxyMode::NotHttp, "something that is not HTTP"),
    ] {
        let proxy = Proxy::start(mode).await;
        let config = ProxyConfig {
            http: Some(proxy.url()),
            ..ProxyConfig::default()
        };
        let (options, _) = options(None, config);
        match connect(options, "ws://127.0.0.1:9/ws").await.unwrap_err() {
            ConnectError::Proxy { reason } => assert!(reason.contains(want), "{reason}"),
            other => panic!("expected a proxy error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_closed_port_is_refused_and_a_404_is_an_http_status() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let (options, _) = options(None, ProxyConfig::default());
    let error = connect(options, &format!("ws://{closed}/ws")).await.unwrap_err();
    assert_eq!(error, ConnectError::Refused { addr: closed });

    let addr = answering(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()).await;
    let (options, _) = self::options(None, ProxyConfig::default());
    let error = connect(options, &format!("ws://{addr}/nope")).await.unwrap_err();
    assert_eq!(error, ConnectError::HttpStatus { status: 404 });
    assert!(error.to_string().contains("usually /ws"), "{error}");
}

/// A loopback server that answers every connection's first read with `response`.
async fn answering(response: Vec<u8>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp.write_all(&response).await;
        }
    });
    addr
}

#[test]
fn a_bad_ca_file_is_an_error_naming_the_file() {
    let dir = TempDir::new("net-bad-ca");
    let check = |path: PathBuf| {
        let (options, _) = options(Some(path), ProxyConfig::default());
        options.check().unwrap_err()
    };
    let missing = dir.join("missing.pem");
    let error = check(missing.clone());
    assert!(
        error.starts_with(&format!("cannot read ca_file {}", missing.display())),
        "{error}"
    );

    // A ca_file `name` holding `text`: its path and the error.
    let written = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let error = check(path.clone());
        (path, error)
    };

    let (empty, error) = written("empty.pem", "not a certificate\n");
    assert!(error.contains(&empty.display().to_string()), "{error}");
    assert!(error.contains("holds no PEM certificate"), "{error}");

    let (broken, error) = written(
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    assert!(error.contains(&broken.display().to_string()), "{error}");
    assert!(error.contains("certificate 1"), "{error}");

    let (_, error) = written(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
    );
    assert!(error.contains("is not a usable CA certificate"), "{error}");
}

#[test]
fn a_bad_proxy_url_is_an_error_without_the_password() {
    for (url, want) in [
        ("socks5://127.0.0.1:1080", "not supported"),
        ("https://127.0.0.1:3128", "not supported"),
        (
            "http://user:secret@127.0.0.1:notaport",
            "cannot read the proxy URL",
        ),
    ] {
        let config = ProxyConfig {
            https: Some(url.to_owned()),
            ..ProxyConfig::default()
        };
        let error = config.check().unwrap_err();
        assert!(error.starts_with("HTTPS_PROXY: "), "{error}");
        assert!(error.contains(want), "{url}: {error}");
        assert!(!error.contains("secret"), "{error}");
        assert!(!format!("{config:?}").contains("secret"));
    }
}

#[test]
fn proxy_settings_from_the_environment() {
    let vars = |pairs: &[(&str, &str)]| {
        ProxyConfig::from_map(
            &pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    };
    assert_eq!(vars(&[]), ProxyConfig::default());
    let config = vars(&[
        ("HTTPS_PROXY", "http://s:1"),
        ("HTTP_PROXY", "http://p:2"),
        ("NO_PROXY", "localhost"),
    ]);
    assert_eq!(config.https.as_deref(), Some("http://s:1"));
    assert_eq!(config.http.as_deref(), Some("http://p:2"));
    assert_eq!(config.no_proxy.as_deref(), Some("localhost"));
    // Lowercase wins; ALL_PROXY fills what is unset; empty counts as unset.
    let config = vars(&[
        ("https_proxy", "http://lower:1"),
        ("HTTPS_PROXY", "http://upper:1"),
        ("http_proxy", ""),
        ("ALL_PROXY", "http://all:3"),
        ("no_proxy", ".corp"),
    ]);
    assert_eq!(config.https.as_deref(), Some("http://lower:1"));
    assert_eq!(config.http.as_deref(), Some("http://all:3"));
    assert_eq!(config.no_proxy.as_deref(), Some(".corp"));
    // Only the scheme's own proxy applies.
    let config = vars(&[("HTTPS_PROXY", "http://127.0.0.1:3128")]);
    assert!(config.proxy_for(false, "hub", 80).unwrap().is_none());
    let proxy = config.proxy_for(true, "hub", 443).unwrap().unwrap();
    assert_eq!((proxy.host.as_str(), proxy.port), ("127.0.0.1", 3128));
    assert!(!proxy.has_credentials());
}

#[test]
fn no_proxy_matching() {
    let cases: &[(&str, &str, u16, bool)] = &[
        ("*", "anything.example", 443, true),
        ("hub.corp", "hub.corp", 443, true),
        ("HUB.corp", "hub.CORP", 443, true),
        ("hub.corp", "other.corp", 443, false),
        ("corp", "hub.corp", 443, true),
        (".corp", "hub.corp", 443, true),
        (".corp", "corp", 443, true),
        ("*.corp", "a.b.corp", 443, true),
        ("corp", "notcorp", 443, false),
        ("corp", "hub.corp.evil", 443, false),
        ("hub.corp:4000", "hub.corp", 4000, true),
        ("hub.corp:4000", "hub.corp", 443, false),
        ("127.0.0.1", "127.0.0.1", 80, true),
        ("127.0.0.1", "127.0.0.2", 80, false),
        ("127.0.0.0/8", "127.9.9.9", 80, true),
        ("10.0.0.0/8", "127.0.0.1", 80, false),
        ("::1", "::1", 80, true),
        ("[::1]:80", "[::1]", 80, true),
        ("[::1]:80", "::1", 81, false),
        ("a.example, ,b.example", "b.example", 80, true),
        ("", "hub", 80, false),
    ];
    for &(list, host, port, want) in cases {
        assert_eq!(
            no_proxy_matches(list, host, port),
            want,
            "{list:?} vs {host}:{port}"
        );
    }
}

#[test]
fn the_binary_refuses_an_unusable_proxy_before_connecting() {
    let dir = TempDir::new("net-bin-proxy");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let hub_url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let config = dir.join("config.json");
    support::write_private(
        &config,
        &support::config_json(
            "agent-1",
            "agent-1-token-0123456789",
            &hub_url,
            serde_json::json!({}),
        ),
    );
    // The child's environment only (scrubbed of the caller's proxies): this process's stays untouched.
    let out = support::binary()
        .env("http_proxy", "socks5://user:topsecret@127.0.0.1:1080")
        .arg("run")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "stderr:\n{stderr}");
    // It names the variable that was set (the lowercase one here), not a generic name.
    assert!(
        stderr.starts_with("error: the proxy setting in the environment cannot be used: http_proxy: "),
        "{stderr}"
    );
    assert!(stderr.contains("only http:// proxies"), "{stderr}");
    assert!(!stderr.contains("topsecret"), "{stderr}");
    assert!(listener.accept().is_err(), "the sidecar connected anyway");
}

#[tokio::test]
async fn a_wrong_scheme_is_named_as_such() {
    let pki = pki();
    let dir = TempDir::new("net-scheme");
    let ca = write_ca(&dir, &pki);
    // ws:// to a TLS hub: the server answers the HTTP upgrade with a TLS record.
    let tls = ws_server(Some(&pki)).await;
    let (opts, _) = options(Some(ca.clone()), ProxyConfig::default());
    let error = connect(opts, &format!("ws://{tls}/ws")).await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("scheme looks wrong"), "{text}");
    assert!(
        text.contains("should start with wss:// instead of ws://"),
        "{text}"
    );
    // ... or, from nginx in front of the hub, a 400 page that says so.
    let page = "<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\r\n</html>\r\n";
    let nginx_addr = answering(
        format!(
            "HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
            page.len()
        )
        .into_bytes(),
    )
    .await;
    let (opts, _) = options(None, ProxyConfig::default());
    let text = connect(opts, &format!("ws://{nginx_addr}/ws"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("The plain HTTP request was sent to HTTPS port"),
        "{text}"
    );
    assert!(
        text.contains("should start with wss:// instead of ws://"),
        "{text}"
    );
    // wss:// to a plain hub that answers the ClientHello with an HTTP 400 (as web servers do).
    let plain =
        answering(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec())
            .await;
    // ... and the embedded hub, which closes without a word.
    let hub = agentcom_sidecar::hub::EmbeddedHub::start(Default::default())
        .await
        .unwrap();
    for (url, said) in [
        (
            format!("wss://{plain}/ws"),
            "answered the TLS handshake with plain HTTP (`HTTP/1.1 400 Bad",
        ),
        (
            hub.url().replace("ws://", "wss://"),
            "closed the connection without answering the TLS handshake",
        ),
    ] {
        let (opts, _) = options(Some(ca.clone()), ProxyConfig::default());
        match connect(opts, &url).await.unwrap_err() {
            ConnectError::Tls { reason } => {
                assert!(reason.contains(said), "{reason}");
                assert!(reason.contains("scheme looks wrong"), "{reason}");
                assert!(
                    reason.contains("should start with ws:// instead of wss://"),
                    "{reason}"
                );
            }
            other => panic!("{url}: expected a TLS error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_unreachable_proxy_is_named_with_its_variable() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let config = ProxyConfig::from_map(&HashMap::from([(
        "HTTPS_PROXY".to_owned(),
        format!("http://carol:pa55word@{closed}"),
    )]));
    let (options, _) = options(None, config);
    let error = connect(options, "wss://hub.example:443/ws").await.unwrap_err();
    let text = error.to_string();
    match &error {
        ConnectError::Proxy { reason } => assert!(
            reason.contains(&format!(
                "cannot reach the proxy {closed} set by HTTPS_PROXY=http://***@{closed}: connection refused"
            )) && reason.contains("is HTTPS_PROXY right?"),
            "{reason}"
        ),
        other => panic!("expected a proxy error, got {other:?}"),
    }
    // The hub was never tried: the message must not send the reader there.
    assert!(
        !text.contains("hub_url") && !text.contains("hub running"),
        "{text}"
    );
    assert!(!text.contains("pa55word"), "{text}");
}
