//! `https://` for the HTTP client: the rustls settings of `wss://` (`crate::link::connect`'s
//! `tls_config`: the system's roots plus `ca_file`), loaded once per client off the runtime's
//! thread, and the handshake through tokio-rustls with failures worded as for the WebSocket.

use super::HttpError;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The TLS settings, built on first use and then shared (or the reason they cannot be built).
#[derive(Default)]
pub(super) struct TlsCell(OnceCell<Result<Arc<ClientConfig>, String>>);

impl TlsCell {
    /// The settings: the system's roots (read on tokio's blocking pool) plus `ca_file`.
    pub(super) async fn get(&self, ca_file: Option<PathBuf>) -> Result<Arc<ClientConfig>, HttpError> {
        self.0
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || crate::link::connect::tls_config(ca_file.as_deref()))
                    .await
                    .unwrap_or_else(|e| Err(format!("cannot load the trusted certificates: {e}")))
            })
            .await
            .clone()
            .map_err(HttpError::Tls)
    }
}

/// The TLS handshake with `host` (a name or an IP literal) over `tcp`.
pub(super) async fn handshake(
    config: Arc<ClientConfig>,
    host: &str,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, HttpError> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| HttpError::Tls(format!("`{host}` is not a valid TLS server name")))?;
    TlsConnector::from(config).connect(name, tcp).await.map_err(|e| {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(inner) => HttpError::Tls(crate::link::connect::describe_rustls(inner)),
            None => HttpError::Tls(format!(
                "the TLS handshake failed: {e} (is it an https server? an http:// URL may be meant)"
            )),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::{BaseUrl, Client};
    use crate::link::connect::ProxyConfig;
    use hyper::Method;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A CA, and a server certificate for 127.0.0.1 and localhost signed by it.
    struct Pki {
        ca_pem: String,
        server: Arc<rustls::ServerConfig>,
    }

    fn pki() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        Pki {
            ca_pem: ca.pem(),
            server: Arc::new(server),
        }
    }

    /// An https server on loopback answering every request with `200 {"ok":true}` and the
    /// request's head (what the client sent) kept for the test.
    async fn serve(server: Arc<rustls::ServerConfig>) -> (u16, tokio::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tx.send(String::from_utf8_lossy(&head).into_owned()).await;
                    let body = "{\"ok\":true}";
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (port, rx)
    }

    #[tokio::test]
    async fn https_with_the_ca_file_reaches_the_server_and_sends_the_bearer() {
        let pki = pki();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &pki.ca_pem).unwrap();
        let (port, mut heads) = serve(pki.server.clone()).await;
        let client = Client::new(Some(ca_file), ProxyConfig::default());
        let base = BaseUrl::parse(&format!("https://127.0.0.1:{port}")).unwrap();
        let mut response = client
            .send(
                &base,
                Method::GET,
                "/health",
                Some("tok-abc"),
                None,
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.text(1024).await.unwrap(), "{\"ok\":true}");
        let head = heads.recv().await.unwrap();
        assert!(head.starts_with("GET /health HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("authorization: Bearer tok-abc\r\n"), "{head}");
        // by name too (the certificate names localhost)
        let base = BaseUrl::parse(&format!("https://localhost:{port}")).unwrap();
        let response = client
            .send(&base, Method::GET, "/", None, None, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(response.status, 200);
    }

    #[tokio::test]
    async fn https_without_the_ca_says_to_set_ca_file() {
        let pki = pki();
        let (port, _heads) = serve(pki.server.clone()).await;
        let client = Client::new(None, ProxyConfig::default());
        let base = BaseUrl::parse(&format!("https://127.0.0.1:{port}")).unwrap();
        let e = client
            .send(&base, Method::GET, "/", None, None, Duration::from_secs(5))
            .await
            .err()
            .expect("an untrusted certificate must fail");
        let text = e.to_string();
        assert!(
            text.starts_with("TLS failed:") && text.contains("set ca_file"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn https_to_a_plain_http_server_fails_as_tls() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let pki = pki();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &pki.ca_pem).unwrap();
        let client = Client::new(Some(ca_file), ProxyConfig::default());
        let base = BaseUrl::parse(&format!("https://127.0.0.1:{port}")).unwrap();
        let e = client
            .send(&base, Method::GET, "/", None, None, Duration::from_secs(5))
            .await
            .err()
            .expect("a plain server must fail the handshake");
        assert!(e.to_string().starts_with("TLS failed:"), "{e}");
    }

    /// A `CONNECT` proxy on loopback: answers `status` to each CONNECT (a tunnel to the target on
    /// 200), the CONNECT lines kept for the test.
    async fn connect_proxy(status: &'static str) -> (String, tokio::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if client.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let line = head.lines().next().unwrap_or("").to_owned();
                    let _ = tx.send(line.clone()).await;
                    let answer = format!("HTTP/1.1 {status}\r\n\r\n");
                    let _ = client.write_all(answer.as_bytes()).await;
                    if !status.starts_with("200") {
                        return;
                    }
                    let target = line.split(' ').nth(1).unwrap_or("").to_owned();
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        (url, rx)
    }

    #[tokio::test]
    async fn https_goes_through_the_https_proxy_with_a_connect_tunnel() {
        let pki = pki();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &pki.ca_pem).unwrap();
        let (port, _heads) = serve(pki.server.clone()).await;
        let (proxy_url, mut lines) = connect_proxy("200 Connection established").await;
        let proxy = ProxyConfig::from_vars(|k| (k == "HTTPS_PROXY").then(|| proxy_url.clone()));
        let client = Client::new(Some(ca_file), proxy);
        let base = BaseUrl::parse(&format!("https://127.0.0.1:{port}")).unwrap();
        assert_eq!(client.proxy_for(&base).map(|p| p.1), Some("HTTPS_PROXY"));
        let mut response = client
            .send(&base, Method::GET, "/health", None, None, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(response.text(1024).await.unwrap(), "{\"ok\":true}");
        assert_eq!(
            lines.recv().await.unwrap(),
            format!("CONNECT 127.0.0.1:{port} HTTP/1.1")
        );
    }

    #[tokio::test]
    async fn a_proxy_that_refuses_is_named_with_its_variable() {
        let (proxy_url, _lines) = connect_proxy("407 Proxy Authentication Required").await;
        let proxy = ProxyConfig::from_vars(|k| (k == "HTTP_PROXY").then(|| proxy_url.clone()));
        let client = Client::new(None, proxy);
        let base = BaseUrl::parse("http://127.0.0.1:9").unwrap();
        let e = client
            .send(&base, Method::GET, "/", None, None, Duration::from_secs(5))
            .await
            .err()
            .expect("a refused tunnel must fail");
        let text = e.to_string();
        assert!(text.contains("the proxy refused CONNECT: 407"), "{text}");
        assert!(text.contains(&format!("set by HTTP_PROXY={proxy_url}")), "{text}");
    }
}
