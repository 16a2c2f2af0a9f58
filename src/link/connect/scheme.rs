//! The wrong-scheme detector: [`FirstBytes`] keeps the server's first bytes, and after a failed
//! handshake [`wrong_scheme`] reads them to tell a `ws://` URL pointed at a TLS hub (or a
//! `wss://` URL at a plain one) from other failures.

use super::errors::ConnectError;
use super::Target;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

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
    pub(super) fn new(inner: S) -> (FirstBytes<S>, Arc<std::sync::Mutex<Vec<u8>>>) {
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
pub(super) fn wrong_scheme(
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
