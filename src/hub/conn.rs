//! One connection on the hub's port. Its request head is read first: a WebSocket upgrade gets
//! the handshake on `/ws` (or the push-only `/ws/dashboard`), then a loop over incoming frames,
//! orders from the rest of the hub and the idle timer; any other request is one HTTP API
//! exchange ([`super::http`], [`super::api`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response as WsResponse};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::http::{self, HeadError, Prefixed, Response};
use super::session::{Action, Session};
use super::state::ConnCmd;
use super::{later, wire_text, HubEvent, Shared};

/// How long a handshake, or the client's answer to our close frame, may take.
const GRACE: Duration = Duration::from_secs(5);

/// How a connection ended.
enum End {
    /// The hub sent a close frame.
    HubClosed(u16, String),
    /// The client sent a close frame.
    ClientClosed(Option<u16>, String),
    /// The stream ended or failed without a close frame.
    Vanished,
    /// The hub dropped the stream without a close frame.
    Dropped,
}

// The signature is tungstenite's `Callback`; its error type is large by design.
#[allow(clippy::result_large_err)]
fn only_ws_path(req: &Request, resp: WsResponse, dashboard: &mut bool) -> Result<WsResponse, ErrorResponse> {
    match req.uri().path() {
        "/ws" => return Ok(resp),
        "/ws/dashboard" => {
            *dashboard = true;
            return Ok(resp);
        }
        _ => {}
    }
    let mut not_found = ErrorResponse::new(Some("not found".into()));
    *not_found.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
    Err(not_found)
}

/// How long one HTTP exchange may take in all (head, body, handler and answer).
const HTTP_LIMIT: Duration = Duration::from_secs(30);

/// Serves connection `conn` on `stream` until it ends, then unregisters it.
pub async fn run<S>(
    shared: Arc<Shared>,
    conn: u64,
    mut stream: S,
    mut rx: UnboundedReceiver<ConnCmd>,
    peer: Option<IpAddr>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let end = match timeout(GRACE, http::read_head(&mut stream)).await {
        Ok(Ok(head)) if head.is_upgrade() => {
            let stream = Prefixed::new(head.raw, stream);
            websocket(&shared, conn, stream, rx).await
        }
        Ok(Ok(head)) => {
            let exchange = async {
                let resp = match http::read_body(&mut stream, &head).await {
                    Ok(body) => super::api::handle(&shared, &http::request(head, body, peer)),
                    Err(resp) => resp,
                };
                let _ = http::write_response(&mut stream, &resp).await;
            };
            // The hub stopping (a close order) cuts the exchange short.
            let stopped = async { while let Some(ConnCmd::Push(_) | ConnCmd::Ping(_)) = rx.recv().await {} };
            tokio::select! {
                _ = timeout(HTTP_LIMIT, exchange) => {}
                _ = stopped => {}
            }
            None
        }
        Ok(Err(HeadError::TooLarge)) => {
            let hint = format!("the request head may be at most {} bytes", http::MAX_HEAD);
            let resp = Response::transport(431, "header_too_large", &hint);
            let _ = timeout(GRACE, http::write_response(&mut stream, &resp)).await;
            None
        }
        Ok(Err(HeadError::Malformed)) => {
            let resp = Response::transport(400, "bad_request", "expected an HTTP/1.1 request");
            let _ = timeout(GRACE, http::write_response(&mut stream, &resp)).await;
            None
        }
        _ => None,
    };
    {
        let mut st = shared.lock();
        let agent = st.conns.get(&conn).and_then(|e| e.agent_id.clone());
        st.remove_conn(conn);
        if let Some(agent_id) = agent {
            super::scheduler::agent_gone(&shared, &mut st, &agent_id, conn);
        }
    }
    if let Some(end) = end {
        let (code, reason, by_hub) = match end {
            End::HubClosed(code, reason) => (Some(code), reason, true),
            End::ClientClosed(code, reason) => (code, reason, false),
            End::Vanished => (None, String::new(), false),
            End::Dropped => (None, String::new(), true),
        };
        shared.emit(HubEvent::Closed {
            conn,
            at: Instant::now(),
            code,
            reason,
            by_hub,
        });
    }
    shared.conn_gone.notify_waiters();
}

/// The WebSocket handshake (the head is replayed to tungstenite) and the session; None when
/// the handshake failed.
async fn websocket<S>(
    shared: &Arc<Shared>,
    conn: u64,
    stream: S,
    rx: UnboundedReceiver<ConnCmd>,
) -> Option<End>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut dashboard = false;
    // The signature is tungstenite's `Callback`; its error type is large by design.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: WsResponse| only_ws_path(req, resp, &mut dashboard);
    let handshake = timeout(GRACE, tokio_tungstenite::accept_hdr_async(stream, callback)).await;
    match handshake {
        Ok(Ok(ws)) => {
            if dashboard {
                if let Some(entry) = shared.lock().conns.get_mut(&conn) {
                    entry.dashboard = true;
                }
            }
            shared.emit(HubEvent::Connected {
                conn,
                at: Instant::now(),
            });
            Some(serve(shared, conn, ws, rx, dashboard).await)
        }
        _ => None,
    }
}

async fn serve<S>(
    shared: &Arc<Shared>,
    conn: u64,
    mut ws: WebSocketStream<S>,
    mut rx: UnboundedReceiver<ConnCmd>,
    dashboard: bool,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut session = Session::new(shared.clone(), conn);
    let mut last_recv = Instant::now();
    loop {
        let idle_deadline = later(last_recv, shared.opts.idle_timeout);
        tokio::select! {
            incoming = ws.next() => {
                last_recv = Instant::now();
                let msg = match incoming {
                    Some(Ok(msg)) => msg,
                    _ => return End::Vanished,
                };
                match msg {
                    // The dashboard feed only pushes; what its clients send is not modelled.
                    Message::Text(_) if dashboard => {}
                    Message::Text(text) => {
                        shared.emit(HubEvent::Received { conn, at: last_recv, text: text.to_string() });
                        for action in session.on_text(text.as_str()) {
                            match action {
                                Action::Send(frame) => {
                                    if send_text(shared, conn, &mut ws, wire_text(&frame)).await.is_err() {
                                        return End::Vanished;
                                    }
                                }
                                Action::Close(code, reason) => return close(&mut ws, code, reason).await,
                            }
                        }
                    }
                    // The real hub has no clause for binary frames: its process crashes.
                    Message::Binary(_) => return close(&mut ws, 1011, String::new()).await,
                    Message::Ping(_) => {
                        if ws.flush().await.is_err() {
                            return End::Vanished;
                        }
                    }
                    Message::Pong(payload) => {
                        shared.emit(HubEvent::WsPong { conn, at: last_recv, payload: payload.to_vec() });
                    }
                    Message::Close(frame) => {
                        let (code, reason) = match frame {
                            Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
                            None => (None, String::new()),
                        };
                        drain(&mut ws).await;
                        return End::ClientClosed(code, reason);
                    }
                    Message::Frame(_) => {}
                }
            }
            cmd = rx.recv() => match cmd {
                Some(ConnCmd::Push(text)) => {
                    if send_text(shared, conn, &mut ws, text).await.is_err() {
                        return End::Vanished;
                    }
                }
                Some(ConnCmd::Close(code, reason)) => return close(&mut ws, code, reason).await,
                Some(ConnCmd::Drop) | None => return End::Dropped,
                Some(ConnCmd::Ping(payload)) => {
                    if ws.send(Message::Ping(payload.into())).await.is_err() {
                        return End::Vanished;
                    }
                }
            },
            _ = sleep_until(idle_deadline) => return close(&mut ws, 1002, String::new()).await,
        }
    }
}

async fn send_text<S>(
    shared: &Shared,
    conn: u64,
    ws: &mut WebSocketStream<S>,
    text: String,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    shared.emit(HubEvent::Sent {
        conn,
        at: Instant::now(),
        text: text.clone(),
    });
    ws.send(Message::text(text)).await
}

/// Sends a close frame, then waits (briefly) for the client's answer.
async fn close<S>(ws: &mut WebSocketStream<S>, code: u16, reason: String) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: code.into(),
        reason: reason.clone().into(),
    };
    if ws.close(Some(frame)).await.is_ok() {
        drain(ws).await;
    }
    End::HubClosed(code, reason)
}

/// Reads until the stream ends so that close handshakes complete.
async fn drain<S>(ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = timeout(GRACE, async { while let Some(Ok(_)) = ws.next().await {} }).await;
}
