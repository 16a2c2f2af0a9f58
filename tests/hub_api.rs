//! The embedded hub's handle API over real TCP and on a paused clock: start/stop/restart,
//! pushes, the ping knobs, the reaper, rate limits on re-identify and hostile input.

use std::time::Duration;

use agentcom_sidecar::hub::{EmbeddedHub, HubEvent, HubOptions};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const LIMIT: Duration = Duration::from_secs(5);

async fn open(hub: &EmbeddedHub) -> WebSocketStream<tokio::io::DuplexStream> {
    let (client, server) = tokio::io::duplex(1 << 20);
    hub.serve_stream(server);
    tokio_tungstenite::client_async("ws://127.0.0.1/ws", client)
        .await
        .expect("handshake")
        .0
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// The next frame that is not a control ping/pong, or None if nothing came within `LIMIT`.
async fn next<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Option<Message> {
    loop {
        match timeout(LIMIT, ws.next()).await {
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(Some(Ok(m))) => return Some(m),
            _ => return None,
        }
    }
}

async fn recv_json<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Value {
    match next(ws).await {
        Some(Message::Text(t)) => serde_json::from_str(&t).expect("json"),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

fn identify(agent: &str, token: &str) -> Value {
    json!({"type": "identify", "agent_id": agent, "token": token, "capabilities": ["code"]})
}

fn close_code(msg: Option<Message>) -> Option<(u16, String)> {
    match msg {
        Some(Message::Close(Some(f))) => Some((u16::from(f.code), f.reason.to_string())),
        _ => None,
    }
}

#[tokio::test]
async fn tcp_start_stop_restart() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.expect("start");
    assert!(hub.url().starts_with("ws://127.0.0.1:") && hub.url().ends_with("/ws"));
    let token = hub.add_token("tcp-1");
    assert_eq!(token.len(), 64);
    let (mut ws, _) = tokio_tungstenite::connect_async(hub.url())
        .await
        .expect("connect");
    send(&mut ws, identify("tcp-1", &token)).await;
    assert_eq!(
        recv_json(&mut ws).await,
        json!({"agent_id": "tcp-1", "type": "identified"})
    );
    assert_eq!(hub.connected_agents(), vec!["tcp-1".to_string()]);

    let stopping = tokio::spawn({
        let hub = hub.clone();
        async move { hub.stop().await }
    });
    assert_eq!(close_code(next(&mut ws).await), Some((1000, String::new())));
    while let Some(Ok(_)) = ws.next().await {}
    stopping.await.expect("stop");
    assert!(
        tokio::net::TcpStream::connect(hub.addr()).await.is_err(),
        "port must refuse"
    );
    assert!(hub.connected_agents().is_empty());

    hub.restart().await.expect("restart");
    let (mut ws, _) = tokio_tungstenite::connect_async(hub.url())
        .await
        .expect("reconnect");
    send(&mut ws, identify("tcp-1", &token)).await;
    assert_eq!(
        recv_json(&mut ws).await,
        json!({"agent_id": "tcp-1", "type": "identified"})
    );
    drop(ws);
    hub.stop().await;
}

#[tokio::test]
async fn other_paths_are_refused() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.expect("start");
    let url = format!("ws://{}/other", hub.addr());
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    hub.stop().await;
}

#[tokio::test(start_paused = true)]
async fn push_ws_ping_and_events() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.expect("start");
    assert!(hub.push("nobody", json!({"type": "x"})).await.is_err());
    let token = hub.add_token("ev-1");
    let mut live = hub.events();
    let mut ws = open(&hub).await;
    send(&mut ws, identify("ev-1", &token)).await;
    recv_json(&mut ws).await;
    hub.push("ev-1", json!({"type": "restart_sidecar", "reason": "upgrade"}))
        .await
        .expect("push");
    assert_eq!(
        recv_json(&mut ws).await,
        json!({"reason": "upgrade", "type": "restart_sidecar"})
    );

    hub.ws_ping("ev-1", b"hi".to_vec()).await.expect("ws ping");
    match timeout(LIMIT, ws.next()).await {
        Ok(Some(Ok(Message::Ping(p)))) => assert_eq!(&p[..], b"hi"),
        other => panic!("expected a ping, got {other:?}"),
    }
    // Reading again flushes the client's automatic pong.
    let _ = timeout(Duration::from_millis(10), ws.next()).await;
    sleep(Duration::from_millis(10)).await;
    let bye = CloseFrame {
        code: 1000.into(),
        reason: "bye".into(),
    };
    ws.close(Some(bye)).await.expect("close");
    while let Some(Ok(_)) = ws.next().await {}
    sleep(Duration::from_millis(10)).await;

    let history = hub.history();
    let kinds: Vec<&str> = history
        .iter()
        .map(|e| match e {
            HubEvent::Connected { .. } => "connected",
            HubEvent::Received { .. } => "received",
            HubEvent::Sent { .. } => "sent",
            HubEvent::Identified { .. } => "identified",
            HubEvent::WsPong { .. } => "ws_pong",
            HubEvent::Closed { .. } => "closed",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "connected",
            "received",
            "identified",
            "sent",
            "sent",
            "ws_pong",
            "closed"
        ]
    );
    assert!(matches!(&history[5], HubEvent::WsPong { payload, .. } if payload == b"hi"));
    assert!(
        matches!(&history[6], HubEvent::Closed { code: Some(1000), by_hub: false, reason, .. } if reason == "bye")
    );
    assert!(hub.connected_agents().is_empty());
    let mut live_count = 0;
    while let Ok(event) = live.try_recv() {
        assert_eq!(format!("{event:?}"), format!("{:?}", history[live_count]));
        live_count += 1;
    }
    assert_eq!(live_count, history.len(), "events() sees what history() records");
}

#[tokio::test(start_paused = true)]
async fn swallowed_pings_get_no_pong() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.expect("start");
    let token = hub.add_token("quiet-1");
    let mut ws = open(&hub).await;
    send(&mut ws, identify("quiet-1", &token)).await;
    recv_json(&mut ws).await;
    hub.set_answer_pings(false);
    send(&mut ws, json!({"type": "ping"})).await;
    assert!(
        timeout(Duration::from_secs(10), ws.next()).await.is_err(),
        "no pong expected"
    );
    hub.set_answer_pings(true);
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "pong");
}

#[tokio::test(start_paused = true)]
async fn reaper_drops_agents_without_json_pings() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.expect("start");
    let (silent, pinging) = (hub.add_token("silent-1"), hub.add_token("pinging-1"));
    let mut a = open(&hub).await;
    send(&mut a, identify("silent-1", &silent)).await;
    recv_json(&mut a).await;
    let mut b = open(&hub).await;
    send(&mut b, identify("pinging-1", &pinging)).await;
    recv_json(&mut b).await;
    recv_json(&mut a).await; // agent_joined for B
                             // A keeps the socket busy with WebSocket pings only (no idle timeout), B sends JSON pings.
    for _ in 0..4 {
        sleep(Duration::from_secs(20)).await;
        a.send(Message::Ping(b"k".to_vec().into()))
            .await
            .expect("ws ping");
        send(&mut b, json!({"type": "ping"})).await;
        assert_eq!(recv_json(&mut b).await["type"], "pong");
    }
    // At 80 s A is still there (sweeps at 30 s and 60 s found it fresh enough); the 90 s sweep drops it.
    assert_eq!(hub.connected_agents(), ["pinging-1", "silent-1"]);
    sleep(Duration::from_secs(11)).await;
    loop {
        match a.next().await {
            Some(Ok(Message::Pong(_))) => {}
            Some(Ok(Message::Close(f))) => panic!("the reaper sends no close frame, got {f:?}"),
            Some(Ok(m)) => panic!("unexpected {m:?}"),
            Some(Err(_)) | None => break,
        }
    }
    assert_eq!(
        recv_json(&mut b).await,
        json!({"agent_id": "silent-1", "type": "agent_left"})
    );
    assert_eq!(hub.connected_agents(), ["pinging-1"]);
    let dropped = hub.history().into_iter().any(|e| {
        matches!(
            e,
            HubEvent::Closed {
                code: None,
                by_hub: true,
                ..
            }
        )
    });
    assert!(dropped);
}

#[tokio::test(start_paused = true)]
async fn reidentify_is_heavy_tier() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.expect("start");
    let token = hub.add_token("heavy-1");
    let mut ws = open(&hub).await;
    send(&mut ws, identify("heavy-1", &token)).await;
    recv_json(&mut ws).await; // the first identify skips the limiter
    for _ in 0..8 {
        send(&mut ws, identify("heavy-1", &token)).await;
        assert_eq!(recv_json(&mut ws).await["type"], "identified");
    }
    for remaining in [1, 0] {
        send(&mut ws, identify("heavy-1", &token)).await;
        let warning =
            json!({"capacity": 10, "remaining": remaining, "tier": "heavy", "type": "rate_limit_warning"});
        assert_eq!(recv_json(&mut ws).await, warning);
        assert_eq!(recv_json(&mut ws).await["type"], "identified");
    }
    send(&mut ws, identify("heavy-1", &token)).await;
    let denied = json!({"retry_after_ms": 6000, "tier": "heavy", "type": "rate_limited"});
    assert_eq!(recv_json(&mut ws).await, denied);
}

#[tokio::test(start_paused = true)]
async fn violations_outside_the_window_do_not_count() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.expect("start");
    let mut ws = open(&hub).await;
    for _ in 0..9 {
        send(&mut ws, json!({"type": "bogus"})).await;
        assert_eq!(recv_json(&mut ws).await["error"], "validation_failed");
    }
    sleep(Duration::from_secs(40)).await;
    send(&mut ws, json!({"type": "ping"})).await; // keeps the idle timer away; not a violation
    assert_eq!(recv_json(&mut ws).await["error"], "not_identified");
    sleep(Duration::from_secs(21)).await;
    send(&mut ws, json!({"type": "bogus"})).await;
    assert_eq!(recv_json(&mut ws).await["error"], "validation_failed");
}

#[tokio::test(start_paused = true)]
async fn hostile_frames_never_crash_the_hub() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.expect("start");
    let token = hub.add_token("ok-1");
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let texts = [
        "".to_string(),
        "{".to_string(),
        "\u{0}".to_string(),
        deep.clone(),
        format!("{{\"type\":{deep}}}"),
        r#"{"type":"identify","agent_id":7,"token":null,"capabilities":"x"}"#.to_string(),
        r#"{"type":"identify","agent_id":"ok-1","token":"nope","capabilities":[[],{},null]}"#.to_string(),
        r#"{"type":"task_progress","task_id":"t","progress":1e400}"#.to_string(),
        r#"{"type":"task_failed","task_id":"t","generation":18446744073709551616}"#.to_string(),
        r#"{"type":"status"}"#.to_string(),
        format!(r#"{{"type":"{}"}}"#, "x".repeat(100_000)),
    ];
    let mut ws = open(&hub).await;
    let mut replies = Vec::new();
    for text in &texts {
        ws.send(Message::text(text.clone())).await.expect("send");
        match next(&mut ws).await {
            Some(Message::Text(t)) => {
                replies.push(serde_json::from_str::<Value>(&t).expect("json")["error"].clone())
            }
            other => panic!("{text:.40}: {other:?}"),
        }
    }
    let invalid_json = replies.iter().filter(|e| *e == "invalid_json").count();
    let failed = replies.iter().filter(|e| *e == "validation_failed").count();
    assert_eq!((invalid_json, failed), (6, 5), "{replies:?}");
    // Five more validation failures make ten: the socket ends with 1008, never with a crash.
    for _ in 0..4 {
        send(&mut ws, json!({"type": "bogus"})).await;
        assert_eq!(recv_json(&mut ws).await["error"], "validation_failed");
    }
    send(&mut ws, json!({"type": "bogus"})).await;
    let closed = Some((1008, "too many validation errors".to_string()));
    assert_eq!(close_code(next(&mut ws).await), closed);
    for raw in ["null", "1", "\"s\"", "[]"] {
        let mut ws = open(&hub).await;
        ws.send(Message::text(raw)).await.expect("send");
        assert_eq!(
            close_code(next(&mut ws).await),
            Some((1011, String::new())),
            "{raw}"
        );
    }
    let mut ws = open(&hub).await;
    send(&mut ws, identify("ok-1", &token)).await;
    assert_eq!(recv_json(&mut ws).await["type"], "identified");
}
