//! The hub connection's I/O: open a WebSocket, read a frame, write a frame, close.
//!
//! It decides nothing: [`super::policy::LinkPolicy`] says when to connect, send and close, and
//! the daemon's loop (`crate::daemon`) carries that out with a [`Socket`] and feeds what the
//! socket produced back to the policy as [`Input`]s. A [`Connector`] makes the WebSocket, so tests
//! can hand in in-memory streams and run on tokio's paused clock; the network one is
//! [`super::connect::NetConnector`].

use super::policy::Input;
use crate::protocol::{self, FrameError, Outbound, MAX_FRAME_BYTES};
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// How long a polite close may wait for the hub's answer before the socket is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_millis(1000);

/// A future that yields a connected WebSocket or a reason for the log.
pub type ConnectFuture<S> =
    Pin<Box<dyn Future<Output = Result<WebSocketStream<S>, String>> + Send + 'static>>;

/// Opens WebSocket connections to the hub.
pub trait Connector {
    /// The byte stream under the WebSocket.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Start connecting to `url`.
    fn connect(&self, url: &str) -> ConnectFuture<Self::Stream>;
}

/// The WebSocket settings for the hub link: frames over [`MAX_FRAME_BYTES`] are refused.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

/// What one read from a [`Connection`] produced.
#[derive(Debug)]
pub enum Incoming {
    /// A text frame: the hub spoke (the text is not parsed yet).
    Text(Utf8Bytes),
    /// A binary frame of this many bytes (the hub never sends one).
    Binary(usize),
    /// WebSocket control traffic (ping, pong): nothing for the policy. tungstenite queues the
    /// pong itself; the next read flushes it.
    Control,
    /// The hub sent a close frame; our reply is flushed by [`Connection::finish_close`].
    Close {
        /// The close code, if the frame had one.
        code: Option<u16>,
        /// The close reason, or a note that there was no code.
        reason: String,
    },
    /// Reading failed: the connection is gone.
    Failed(String),
    /// The stream ended without a close frame.
    Ended,
}

/// One open WebSocket to the hub: read a frame, write a frame, close.
pub struct Connection<S> {
    ws: WebSocketStream<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wrap a WebSocket a [`Connector`] opened.
    pub fn new(ws: WebSocketStream<S>) -> Connection<S> {
        Connection { ws }
    }

    /// Wait for the next message. Cancel-safe: nothing is lost when another branch of a
    /// `select!` wins.
    pub async fn read(&mut self) -> Incoming {
        match self.ws.next().await {
            Some(Ok(Message::Text(text))) => Incoming::Text(text),
            Some(Ok(Message::Binary(bytes))) => Incoming::Binary(bytes.len()),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Incoming::Control,
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = match frame {
                    Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
                    None => (None, "closed without a code".to_owned()),
                };
                Incoming::Close { code, reason }
            }
            Some(Err(e)) => Incoming::Failed(e.to_string()),
            None => Incoming::Ended,
        }
    }

    /// Write one frame, waiting at most `limit`; the error says why the connection is over.
    pub async fn write(&mut self, frame: &Outbound, limit: Duration) -> Result<(), String> {
        match timeout(limit, self.ws.send(Message::text(frame.to_json()))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("send failed: {e}")),
            Err(_) => Err("send timed out: the hub is not reading".to_owned()),
        }
    }

    /// After the hub's close frame: send our close reply (never longer than [`CLOSE_GRACE`]).
    pub async fn finish_close(mut self) {
        let _ = timeout(CLOSE_GRACE, self.ws.flush()).await;
    }

    /// Send a close frame and wait briefly for the hub's answer; never longer than [`CLOSE_GRACE`].
    pub async fn close(mut self, code: u16, reason: String) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let _ = timeout(CLOSE_GRACE, async {
            if self.ws.close(Some(frame)).await.is_ok() {
                while let Some(Ok(_)) = self.ws.next().await {}
            }
        })
        .await;
    }
}

/// What a [`Socket`] produced; [`Socket::input`] turns it into the policy's [`Input`].
pub struct SocketEvent(Event);

enum Event {
    /// The attempt ended; on success the connection is already open.
    Connect(Result<(), String>),
    Read(Incoming),
}

impl SocketEvent {
    /// True for a text frame from the hub (contact, whatever it says).
    pub fn is_hub_text(&self) -> bool {
        matches!(self.0, Event::Read(Incoming::Text(_)))
    }
}

/// The link's one WebSocket: at most one open [`Connection`] or one connection attempt.
pub struct Socket<C: Connector> {
    connector: C,
    url: String,
    open: Option<Connection<C::Stream>>,
    connecting: Option<ConnectFuture<C::Stream>>,
}

impl<C: Connector> Socket<C> {
    /// No connection yet; [`Socket::connect`] opens one to `url` with `connector`.
    pub fn new(connector: C, url: &str) -> Socket<C> {
        Socket {
            connector,
            url: url.to_owned(),
            open: None,
            connecting: None,
        }
    }

    /// Drop any connection and start a new attempt.
    pub fn connect(&mut self) {
        self.open = None;
        self.connecting = Some(self.connector.connect(&self.url));
    }

    /// Drop the connection (or the attempt in flight) at once, without a close handshake.
    pub fn abort(&mut self) {
        self.open = None;
        self.connecting = None;
    }

    /// Close the open connection politely (see [`Connection::close`]); forget any attempt.
    pub async fn close(&mut self, code: u16, reason: String) {
        if let Some(conn) = self.open.take() {
            conn.close(code, reason).await;
        }
        self.connecting = None;
    }

    /// Send one frame if a connection is open. A failed or stuck send (past `limit`) ends the
    /// connection, and the returned [`Input::Closed`] says so to the policy.
    pub async fn send(&mut self, frame: &Outbound, limit: Duration) -> Option<Input> {
        let conn = self.open.as_mut()?;
        let reason = conn.write(frame, limit).await.err()?;
        self.open = None;
        Some(Input::Closed { code: None, reason })
    }

    /// Wait for the attempt in flight to finish or the open connection to produce something;
    /// never resolves while there is neither. Cancel-safe.
    pub async fn next(&mut self) -> SocketEvent {
        if let Some(connecting) = self.connecting.as_mut() {
            let result = connecting.await;
            self.connecting = None;
            let opened = result.map(|ws| self.open = Some(Connection::new(ws)));
            return SocketEvent(Event::Connect(opened));
        }
        match self.open.as_mut() {
            Some(conn) => SocketEvent(Event::Read(conn.read().await)),
            None => std::future::pending().await,
        }
    }

    /// What `event` means to the policy, if anything; drops the connection when it ended
    /// (after flushing our reply to the hub's close frame).
    pub async fn input(&mut self, event: SocketEvent) -> Option<Input> {
        match event.0 {
            Event::Connect(Ok(())) => Some(Input::Connected),
            Event::Connect(Err(error)) => Some(Input::ConnectFailed { error }),
            Event::Read(Incoming::Text(text)) => Some(match protocol::parse_inbound(text.as_str()) {
                Ok(frame) => Input::Frame(frame),
                Err(error) => Input::BadFrame(error),
            }),
            Event::Read(Incoming::Binary(len)) => Some(Input::BadFrame(FrameError::NotJson(format!(
                "binary frame of {len} bytes"
            )))),
            Event::Read(Incoming::Control) => None,
            Event::Read(Incoming::Close { code, reason }) => {
                if let Some(conn) = self.open.take() {
                    conn.finish_close().await;
                }
                Some(Input::Closed { code, reason })
            }
            Event::Read(Incoming::Failed(reason)) => {
                self.open = None;
                Some(Input::Closed { code: None, reason })
            }
            Event::Read(Incoming::Ended) => {
                self.open = None;
                Some(Input::Closed {
                    code: None,
                    reason: "connection ended".to_owned(),
                })
            }
        }
    }
}
