//! A client of the embedded hub for the hub's own tests (tests/hub_*.rs): identified sockets,
//! frames as JSON, and HTTP/1.1 exchanges, over in-memory streams so that tokio's paused clock
//! holds (or over real TCP, [`http_tcp`]).

use agentcom_sidecar::hub::EmbeddedHub;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A socket to the hub over an in-memory stream.
pub type Ws = WebSocketStream<DuplexStream>;

/// Opens a socket and identifies as `agent` with `caps` (a token made for it).
pub async fn agent(hub: &EmbeddedHub, agent: &str, caps: &[&str]) -> Ws {
    let (client, server) = tokio::io::duplex(1 << 20);
    hub.serve_stream(server);
    let (mut ws, _) = tokio_tungstenite::client_async("ws://127.0.0.1/ws", client)
        .await
        .expect("handshake");
    let token = hub.add_token(agent);
    send(
        &mut ws,
        json!({"type": "identify", "agent_id": agent, "token": token, "capabilities": caps}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"agent_id": agent, "type": "identified"})
    );
    ws
}

/// Sends `v` as a text frame.
pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// The next text frame as JSON (within 5 s of virtual time; pings and pongs skipped).
pub async fn recv(ws: &mut Ws) -> Value {
    loop {
        match timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).expect("json"),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Asserts no frame reaches `who` within 100 ms of virtual time.
pub async fn silent(ws: &mut Ws, who: &str) {
    if let Ok(frame) = timeout(Duration::from_millis(100), ws.next()).await {
        panic!("{who} got an unexpected {frame:?}");
    }
}

/// One HTTP/1.1 exchange with the hub over an in-memory stream: `METHOD path` with a Bearer
/// token and an optional JSON body; the status and the JSON body.
pub async fn http(
    hub: &EmbeddedHub,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (client, server) = tokio::io::duplex(1 << 20);
    hub.serve_stream(server);
    exchange(client, "127.0.0.1", method, path, token, body).await
}

/// [`http`] over real TCP to the hub's address (a real clock).
pub async fn http_tcp(
    hub: &EmbeddedHub,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let tcp = tokio::net::TcpStream::connect(hub.addr()).await.expect("connect");
    exchange(tcp, &hub.addr().to_string(), method, path, token, body).await
}

async fn exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    host: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut answer = String::new();
    timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
        .await
        .expect("the hub answers and closes")
        .expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a complete answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, serde_json::from_str(body).expect("JSON body"))
}
