//! The embedded hub's handle API over real TCP and on a paused clock: start/stop/restart,
//! pushes, the ping knobs, the reaper, rate limits on re-identify and hostile input; then its
//! HTTP API on the same port (health, agents, onboarding, tokens, auth, rate limits, limits).

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

/// A fake Ollama on loopback answering `GET /api/tags` with `models`; counts the requests.
/// Dropping the returned task's handle (abort) makes the port refuse.
async fn fake_ollama(
    models: &'static [&'static str],
) -> (
    u16,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            let n = tcp.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            if head.starts_with("GET /api/tags ") {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            let names: Vec<Value> = models.iter().map(|m| json!({"name": m})).collect();
            let body = json!({"models": names}).to_string();
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = tcp.write_all(answer.as_bytes()).await;
        }
    });
    (port, hits, task)
}

async fn identified(
    hub: &EmbeddedHub,
    agent: &str,
    extra: Value,
) -> WebSocketStream<tokio::io::DuplexStream> {
    let token = hub.add_token(agent);
    let mut ws = open(hub).await;
    let mut frame = identify(agent, &token);
    for (k, v) in extra.as_object().expect("object") {
        frame[k] = v.clone();
    }
    send(&mut ws, frame).await;
    assert_eq!(recv_json(&mut ws).await["type"], "identified");
    ws
}

/// Submits a task for `agent`, returns its `routing_decision` and completes it.
async fn routed(hub: &EmbeddedHub, ws: &mut WebSocketStream<tokio::io::DuplexStream>) -> Value {
    let id = hub.submit_task(agentcom_sidecar::hub::TaskSpec {
        description: "Write the release notes".into(),
        ..Default::default()
    });
    let assign = recv_json(ws).await;
    assert_eq!(assign["task_id"], id.as_str());
    send(
        ws,
        json!({"type": "task_complete", "task_id": id, "generation": 1}),
    )
    .await;
    assert_eq!(recv_json(ws).await["status"], "complete");
    assign["routing_decision"].clone()
}

#[tokio::test]
async fn a_registered_endpoint_is_probed_then_routed_to_until_it_fails_twice() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.expect("start");
    let mut ws = identified(&hub, "llm-1", json!({})).await;
    let (port, hits, fake) = fake_ollama(&["qwen3:8b", "llama3.2:latest"]).await;
    let id = format!("127.0.0.1:{port}");

    let bad = hub.register_llm_endpoint(&json!({"host": "", "port": port}));
    assert_eq!(bad.expect_err("422")["errors"][0]["field"], "host");
    let bad = hub.register_llm_endpoint(&json!({"host": "127.0.0.1", "port": 70000}));
    assert_eq!(bad.expect_err("422")["errors"][0]["field"], "port");
    let ep = hub
        .register_llm_endpoint(&json!({"host": "127.0.0.1", "port": port, "name": "gpu"}))
        .expect("201");
    assert_eq!(
        (ep["id"].as_str(), ep["status"].as_str()),
        (Some(id.as_str()), Some("unknown"))
    );
    assert_eq!(hub.llm_registry()["endpoints"][0]["models"], json!([]));

    // Unknown until checked: standard work falls back.
    let d = routed(&hub, &mut ws).await;
    assert_eq!(d["fallback_used"], true);
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no probe before the check"
    );

    hub.probe_llm_now().await;
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    let ep = &hub.llm_registry()["endpoints"][0];
    assert_eq!(ep["status"], "healthy");
    assert_eq!(ep["models"], json!(["qwen3:8b", "llama3.2:latest"]));
    let d = routed(&hub, &mut ws).await;
    assert_eq!(
        d,
        json!({"effective_tier": "standard", "target_type": "ollama", "selected_endpoint": id,
            "selected_model": "qwen3:8b", "fallback_used": false, "fallback_reason": null,
            "classification_reason": "inferred:standard (confidence 0.00, word_count=4, files=0)",
            "estimated_cost_tier": "local"})
    );

    // The endpoint dies: one failure keeps it healthy, the second makes it unhealthy.
    fake.abort();
    let _ = fake.await;
    hub.probe_llm_now().await;
    assert_eq!(hub.llm_registry()["endpoints"][0]["status"], "healthy");
    hub.probe_llm_now().await;
    assert_eq!(hub.llm_registry()["endpoints"][0]["status"], "unhealthy");
    let d = routed(&hub, &mut ws).await;
    assert_eq!(d["fallback_reason"], "no_healthy_ollama_endpoints");

    assert_eq!(
        hub.llm_endpoint(&id).map(|e| e["name"].clone()),
        Some(json!("gpu"))
    );
    assert!(hub.delete_llm_endpoint(&id));
    assert!(!hub.delete_llm_endpoint(&id));
    assert_eq!(hub.llm_endpoint(&id), None);
    assert_eq!(hub.llm_registry(), json!({"endpoints": []}));
    drop(ws);
    hub.stop().await;
}

#[tokio::test]
async fn identify_with_ollama_url_registers_agent_local_and_resets_it() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.expect("start");
    let (port, _hits, _fake) = fake_ollama(&["parity-fake:latest"]).await;
    let url = format!("http://127.0.0.1:{port}");
    let mut ws = identified(&hub, "llm-2", json!({"ollama_url": url})).await;
    let ep = hub.llm_registry()["endpoints"][0].clone();
    assert_eq!(ep["id"], format!("127.0.0.1:{port}"));
    assert_eq!(ep["name"], "llm-2-local");
    assert_eq!(ep["source"], "auto");
    assert_eq!(ep["status"], "unknown");
    hub.probe_llm_now().await;
    assert_eq!(
        routed(&hub, &mut ws).await["selected_model"],
        "parity-fake:latest"
    );
    // A re-identify resets the endpoint: unroutable until the next check.
    let token = hub.add_token("llm-2");
    send(
        &mut ws,
        json!({"type": "identify", "agent_id": "llm-2", "token": token,
        "capabilities": ["code"], "ollama_url": url}),
    )
    .await;
    assert_eq!(recv_json(&mut ws).await["type"], "identified");
    assert_eq!(hub.llm_registry()["endpoints"][0]["status"], "unknown");
    assert_eq!(hub.llm_registry()["endpoints"].as_array().map(Vec::len), Some(1));
    // Too long is a validation failure, not a registration.
    let long = format!("http://{}:1", "h".repeat(520));
    send(
        &mut ws,
        json!({"type": "identify", "agent_id": "llm-2", "token": token, "ollama_url": long}),
    )
    .await;
    assert_eq!(recv_json(&mut ws).await["errors"][0]["error"], "too_long");
    assert_eq!(hub.llm_registry()["endpoints"].as_array().map(Vec::len), Some(1));
    drop(ws);
    hub.stop().await;
}

#[tokio::test]
async fn the_dashboard_socket_gets_execution_events_only() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.expect("start");
    let (client, server) = tokio::io::duplex(1 << 20);
    hub.serve_stream(server);
    let (mut dash, _) = tokio_tungstenite::client_async("ws://127.0.0.1/ws/dashboard", client)
        .await
        .expect("dashboard handshake");
    let mut ws = identified(&hub, "dash-1", json!({})).await;
    let event = json!({"event_type": "tool_call", "text": "", "tokens_so_far": null, "model": null,
        "timestamp": 1_771_100_000_000u64, "tool_name": "read_file", "args_summary": "{}",
        "result_summary": null, "iteration": 1});
    send(
        &mut ws,
        json!({"type": "task_progress", "task_id": "task-0000000000000001",
        "execution_event": event}),
    )
    .await;
    // The agent_joined broadcast went to agents, not here: the first frame is the event.
    assert_eq!(
        recv_json(&mut dash).await,
        json!({"type": "execution_event", "task_id": "task-0000000000000001",
            "event_type": "tool_call", "text": "", "tokens_so_far": null, "model": null,
            "timestamp": 1_771_100_000_000u64})
    );
    // A progress without an event reaches no one and the agent gets no reply.
    send(
        &mut ws,
        json!({"type": "task_progress", "task_id": "task-0000000000000001", "progress": 5}),
    )
    .await;
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(
        recv_json(&mut ws).await["type"],
        "pong",
        "no reply to task_progress"
    );
    assert!(
        timeout(Duration::from_millis(200), dash.next()).await.is_err(),
        "nothing more on the dashboard"
    );
    drop((dash, ws));
    hub.stop().await;
}

#[tokio::test]
async fn the_health_check_probes_on_its_own_every_interval() {
    let hub = EmbeddedHub::start(HubOptions {
        llm_probe_interval: Duration::from_millis(300),
        ..HubOptions::default()
    })
    .await
    .expect("start");
    let (port, hits, fake) = fake_ollama(&["m:1"]).await;
    hub.register_llm_endpoint(&json!({"host": "127.0.0.1", "port": port}))
        .expect("201");
    let deadline = tokio::time::Instant::now() + LIMIT;
    while hub.llm_registry()["endpoints"][0]["status"] != "healthy" {
        assert!(tokio::time::Instant::now() < deadline, "never probed");
        sleep(Duration::from_millis(20)).await;
    }
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    fake.abort();
    let _ = fake.await;
    while hub.llm_registry()["endpoints"][0]["status"] != "unhealthy" {
        assert!(tokio::time::Instant::now() < deadline, "never marked unhealthy");
        sleep(Duration::from_millis(20)).await;
    }
    hub.stop().await;
}

#[test]
fn the_real_hubs_probe_timings_are_the_defaults() {
    let opts = HubOptions::default();
    assert_eq!(opts.llm_probe_interval, Duration::from_secs(30));
    assert_eq!(opts.llm_probe_timeout, Duration::from_secs(5));
}

#[tokio::test]
async fn an_endpoint_that_accepts_but_never_answers_times_out_as_a_failure() {
    let hub = EmbeddedHub::start(HubOptions {
        llm_probe_timeout: Duration::from_millis(200),
        ..HubOptions::default()
    })
    .await
    .expect("start");
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            open.push(tcp);
        }
    });
    hub.register_llm_endpoint(&json!({"host": "127.0.0.1", "port": port}))
        .expect("201");
    let started = tokio::time::Instant::now();
    hub.probe_llm_now().await;
    hub.probe_llm_now().await;
    assert!(started.elapsed() < LIMIT, "each probe gives up after its timeout");
    assert_eq!(hub.llm_registry()["endpoints"][0]["status"], "unhealthy");
    held.abort();
    hub.stop().await;
}

#[tokio::test]
async fn ollama_report_registers_the_agents_endpoint_and_is_acknowledged() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.expect("start");
    let mut ws = identified(&hub, "llm-3", json!({})).await;
    send(
        &mut ws,
        json!({"type": "ollama_report", "host": "10.0.0.5", "port": 11500}),
    )
    .await;
    assert_eq!(
        recv_json(&mut ws).await,
        json!({"type": "ollama_report_ack", "status": "registered"})
    );
    let ep = hub.llm_endpoint("10.0.0.5:11500").expect("registered");
    assert_eq!(
        (ep["name"].as_str(), ep["status"].as_str()),
        (Some("llm-3-local"), Some("unknown"))
    );
    drop(ws);
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The HTTP API on the WebSocket's port, over real TCP with a raw HTTP/1.1 client.
// ---------------------------------------------------------------------------------------------

/// An HTTP answer: status, headers (names lower-cased) and the JSON body (Null when empty).
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: std::collections::HashMap<String, String>,
    body: Value,
}

/// Sends `raw` bytes to the hub's port and reads the answer until the hub closes.
async fn raw_http(hub: &EmbeddedHub, raw: &[u8]) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(hub.addr()).await.expect("connect");
    tcp.write_all(raw).await.expect("write");
    let mut answer = Vec::new();
    timeout(LIMIT, tcp.read_to_end(&mut answer))
        .await
        .expect("the hub answers and closes")
        .expect("read");
    let text = String::from_utf8(answer).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete answer");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).expect("JSON body")
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// `METHOD path` with an optional Bearer token and raw body text.
async fn call(
    hub: &EmbeddedHub,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", hub.addr());
    if let Some(token) = token {
        req.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or_default();
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    raw_http(hub, req.as_bytes()).await
}

/// `call` with a JSON body.
async fn call_json(hub: &EmbeddedHub, method: &str, path: &str, token: Option<&str>, body: Value) -> Answer {
    call(hub, method, path, token, Some(&body.to_string())).await
}

/// `POST /api/onboard/register` (no token) with `body`.
async fn register(hub: &EmbeddedHub, body: Value) -> Answer {
    call_json(hub, "POST", "/api/onboard/register", None, body).await
}

fn unauthorized() -> Value {
    json!({"error": "unauthorized", "hint": "provide Authorization: Bearer <token>"})
}

#[tokio::test]
async fn http_and_websocket_share_one_port() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.expect("start");
    assert_eq!(hub.api_url(), format!("http://{}", hub.addr()));
    let health = call(&hub, "GET", "/health", None, None).await;
    assert_eq!(
        (health.status, health.body),
        (
            200,
            json!({"agents_connected": 0, "service": "agent_com", "status": "ok"})
        )
    );
    assert_eq!(health.headers["connection"], "close");
    assert!(health.headers["content-type"].starts_with("application/json"));
    let token = hub.add_token("port-1");
    let (mut ws, _) = tokio_tungstenite::connect_async(hub.url())
        .await
        .expect("connect");
    send(&mut ws, identify("port-1", &token)).await;
    assert_eq!(recv_json(&mut ws).await["type"], "identified");
    assert_eq!(
        call(&hub, "GET", "/health", None, None).await.body["agents_connected"],
        1
    );
    let agents = call(&hub, "GET", "/api/agents", None, None).await;
    assert_eq!(agents.status, 200);
    let agent = &agents.body["agents"][0];
    assert_eq!(
        (
            &agent["agent_id"],
            &agent["fsm_state"],
            &agent["capabilities"],
            &agent["status"]
        ),
        (
            &json!("port-1"),
            &json!("unknown"),
            &json!(["code"]),
            &json!("connected")
        )
    );
    assert!(agent["connected_at"]
        .as_u64()
        .is_some_and(|ms| ms > 1_000_000_000_000));
    let unknown = call(&hub, "GET", "/api/nothing", None, None).await;
    assert_eq!(
        (unknown.status, &unknown.body["error"]),
        (404, &json!("not_found"))
    );
    // The WebSocket is still served after the HTTP exchanges.
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "pong");
    drop(ws);
    hub.stop().await;
}

#[tokio::test]
async fn onboarding_registers_once_and_the_token_identifies() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.expect("start");
    let repo = call(&hub, "GET", "/api/config/default-repo", None, None).await;
    assert_eq!(
        (repo.status, repo.body),
        (200, json!({"configured": false, "default_repo": null}))
    );
    let reg = register(&hub, json!({"agent_id": "new-1"})).await;
    assert_eq!(reg.status, 201, "{:?}", reg.body);
    let token = reg.body["token"].as_str().expect("token").to_string();
    assert!(
        token.len() == 64
            && token
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    let host = hub.addr().to_string();
    assert_eq!(
        reg.body,
        json!({"agent_id": "new-1", "token": token, "hub_ws_url": format!("ws://{host}/ws"),
            "hub_api_url": format!("http://{host}"), "default_repo": null})
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(reg.body["hub_ws_url"].as_str().unwrap())
        .await
        .expect("connect");
    send(&mut ws, identify("new-1", &token)).await;
    assert_eq!(recv_json(&mut ws).await["type"], "identified");
    let again = register(&hub, json!({"agent_id": "new-1"})).await;
    assert_eq!(
        (again.status, again.body),
        (409, json!({"error": "agent_id already registered"}))
    );
    // A token from POST /admin/tokens counts as registered too.
    hub.add_token("pre-1");
    let pre = register(&hub, json!({"agent_id": "pre-1"})).await;
    assert_eq!(pre.status, 409);
    for (body, entry) in [
        (
            json!({"agent_id": ""}),
            json!({"detail": "agent_id must not be empty", "error": "required", "field": "agent_id"}),
        ),
        (
            json!({}),
            json!({"detail": "field is required", "error": "required", "field": "agent_id"}),
        ),
        (
            json!([1]),
            json!({"detail": "field is required", "error": "required", "field": "agent_id"}),
        ),
        (
            json!({"agent_id": 5}),
            json!({"detail": "expected string, got integer", "error": "wrong_type", "field": "agent_id", "value": 5}),
        ),
    ] {
        let bad = register(&hub, body.clone()).await;
        assert_eq!(
            (bad.status, bad.body),
            (422, json!({"error": "validation_failed", "errors": [entry]})),
            "{body}"
        );
    }
    let long = register(&hub, json!({"agent_id": "a".repeat(129)})).await;
    assert_eq!(
        (long.status, &long.body["errors"][0]["error"]),
        (422, &json!("too_long"))
    );
    let broken = call(
        &hub,
        "POST",
        "/api/onboard/register",
        None,
        Some("{\"agent_id\":"),
    )
    .await;
    assert_eq!(
        (broken.status, &broken.body["error"]),
        (400, &json!("invalid_json"))
    );
    // A Host header without a port gets the hub's port; the default repo is handed out.
    let put = call_json(&hub, "PUT", "/api/config/default-repo", None, json!({"url": "x"})).await;
    assert_eq!((put.status, put.body), (401, unauthorized()));
    let url = "https://example.invalid/org/repo.git";
    let put = call_json(
        &hub,
        "PUT",
        "/api/config/default-repo",
        Some(&token),
        json!({"url": url}),
    )
    .await;
    assert_eq!(
        (put.status, put.body),
        (200, json!({"status": "updated", "default_repo": url}))
    );
    let empty = call_json(
        &hub,
        "PUT",
        "/api/config/default-repo",
        Some(&token),
        json!({"url": ""}),
    )
    .await;
    assert_eq!(empty.status, 422);
    let body = r#"{"agent_id":"new-2"}"#;
    let raw = format!(
        "POST /api/onboard/register HTTP/1.1\r\nHost: hub.example\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let reg = raw_http(&hub, raw.as_bytes()).await;
    let port = hub.addr().port();
    assert_eq!(reg.body["hub_ws_url"], format!("ws://hub.example:{port}/ws"));
    assert_eq!(reg.body["hub_api_url"], format!("http://hub.example:{port}"));
    assert_eq!(reg.body["default_repo"], url);
    let repo = call(&hub, "GET", "/api/config/default-repo", None, None).await;
    assert_eq!(repo.body, json!({"configured": true, "default_repo": url}));
    hub.set_default_repo(None);
    assert_eq!(
        call(&hub, "GET", "/api/config/default-repo", None, None)
            .await
            .body["configured"],
        false
    );
    drop(ws);
    hub.stop().await;
}

#[tokio::test]
async fn the_default_repo_can_be_configured_at_start() {
    let url = "file:///srv/repo.git";
    let hub = EmbeddedHub::start(HubOptions {
        default_repo: Some(url.into()),
        ..HubOptions::default()
    })
    .await
    .expect("start");
    let repo = call(&hub, "GET", "/api/config/default-repo", None, None).await;
    assert_eq!(repo.body, json!({"configured": true, "default_repo": url}));
    hub.stop().await;
}

#[tokio::test]
async fn tokens_are_issued_listed_and_revoked_and_a_revoked_token_stops_identifying() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.expect("start");
    let admin = hub.add_token("admin");
    let none = call_json(&hub, "POST", "/admin/tokens", None, json!({"agent_id": "tok-1"})).await;
    assert_eq!((none.status, none.body), (401, unauthorized()));
    let made = call_json(
        &hub,
        "POST",
        "/admin/tokens",
        Some(&admin),
        json!({"agent_id": "tok-1"}),
    )
    .await;
    assert_eq!(made.status, 201);
    let token = made.body["token"].as_str().expect("token").to_string();
    assert_eq!(made.body, json!({"agent_id": "tok-1", "token": token}));
    let second = hub.add_token("tok-1");
    let bad = call_json(&hub, "POST", "/admin/tokens", Some(&admin), json!({})).await;
    assert_eq!(
        (bad.status, &bad.body["errors"][0]["field"]),
        (422, &json!("agent_id"))
    );
    let list = call(&hub, "GET", "/admin/tokens", Some(&admin), None).await;
    assert_eq!(list.status, 200);
    let tokens = list.body["tokens"].as_array().expect("tokens").clone();
    assert_eq!(tokens.len(), 3);
    let prefix = format!("{}...", &token[..8]);
    assert!(tokens.contains(&json!({"agent_id": "tok-1", "token_prefix": prefix})));
    assert!(
        !list.body.to_string().contains(&token),
        "whole tokens are never listed"
    );
    // A socket identified before the revocation stays connected (the real hub checks tokens at
    // identify only); identifying again on it, or on a new socket, is refused.
    let (mut ws, _) = tokio_tungstenite::connect_async(hub.url())
        .await
        .expect("connect");
    send(&mut ws, identify("tok-1", &token)).await;
    assert_eq!(recv_json(&mut ws).await["type"], "identified");
    // Any valid token may revoke any agent's tokens, its own included.
    let gone = call(&hub, "DELETE", "/admin/tokens/tok-1", Some(&token), None).await;
    assert_eq!(
        (gone.status, gone.body),
        (200, json!({"agent_id": "tok-1", "status": "revoked"}))
    );
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "pong");
    send(&mut ws, identify("tok-1", &second)).await;
    assert_eq!(
        recv_json(&mut ws).await,
        json!({"error": "invalid_token", "type": "error"})
    );
    let (mut fresh, _) = tokio_tungstenite::connect_async(hub.url())
        .await
        .expect("connect");
    send(&mut fresh, identify("tok-1", &token)).await;
    assert_eq!(
        recv_json(&mut fresh).await,
        json!({"error": "invalid_token", "type": "error"})
    );
    // The revoked token no longer authenticates over HTTP either; the id can register again.
    let refused = call(&hub, "GET", "/admin/tokens", Some(&token), None).await;
    assert_eq!((refused.status, refused.body), (401, unauthorized()));
    let list = call(&hub, "GET", "/admin/tokens", Some(&admin), None).await;
    assert_eq!(
        list.body["tokens"],
        json!([{"agent_id": "admin", "token_prefix": format!("{}...", &admin[..8])}])
    );
    let reg = register(&hub, json!({"agent_id": "tok-1"})).await;
    assert_eq!(reg.status, 201);
    // Revoking an agent without tokens is still a 200; percent-encoded ids are decoded.
    hub.add_token("a b");
    let spaced = call(&hub, "DELETE", "/admin/tokens/a%20b", Some(&admin), None).await;
    assert_eq!(spaced.body, json!({"agent_id": "a b", "status": "revoked"}));
    assert_eq!(hub.revoke_tokens("a b"), 0);
    drop((ws, fresh));
    hub.stop().await;
}

#[tokio::test]
async fn every_authenticated_endpoint_refuses_a_missing_or_unknown_token() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.expect("start");
    let endpoints = [
        ("POST", "/api/tasks"),
        ("GET", "/api/tasks"),
        ("GET", "/api/tasks/dead-letter"),
        ("GET", "/api/tasks/task-00000000000000ff"),
        ("POST", "/api/tasks/task-00000000000000ff/cancel"),
        ("POST", "/api/tasks/task-00000000000000ff/retry"),
        ("POST", "/api/tasks/task-00000000000000ff/classify"),
        ("POST", "/admin/tokens"),
        ("GET", "/admin/tokens"),
        ("DELETE", "/admin/tokens/x"),
        ("PUT", "/api/config/default-repo"),
        ("GET", "/api/tasks/stats"),
        ("GET", "/api/agents/states"),
        ("GET", "/api/agents/x/state"),
        ("POST", "/api/admin/push-task"),
        ("POST", "/api/admin/agents/x/restart"),
    ];
    let wrong = "f".repeat(64);
    for (method, path) in endpoints {
        for token in [None, Some(wrong.as_str())] {
            let a = call(&hub, method, path, token, Some("{}")).await;
            assert_eq!(
                (a.status, &a.body),
                (401, &unauthorized()),
                "{method} {path} {token:?}"
            );
        }
        let raw =
            format!("{method} {path} HTTP/1.1\r\nAuthorization: Basic {wrong}\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            raw_http(&hub, raw.as_bytes()).await.status,
            401,
            "{method} {path} Basic"
        );
    }
    hub.stop().await;
}

#[tokio::test]
async fn the_heavy_tier_allows_ten_registrations_per_ip_and_ten_tasks_per_agent_a_minute() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.expect("start");
    for i in 0..10 {
        let reg = register(&hub, json!({"agent_id": format!("rl-{i}")})).await;
        assert_eq!(reg.status, 201, "registration {i}");
    }
    let denied = register(&hub, json!({"agent_id": "rl-x"})).await;
    assert_eq!(
        (denied.status, denied.body),
        (
            429,
            json!({"error": "rate_limited", "retry_after_ms": 6000, "tier": "heavy"})
        )
    );
    assert_eq!(denied.headers["retry-after"], "6");
    // Denied before validation: even a bad body is counted as a 429.
    assert_eq!(register(&hub, json!({})).await.status, 429);
    let (one, two) = (hub.add_token("rl-a"), hub.add_token("rl-b"));
    for i in 0..10 {
        let t = call_json(
            &hub,
            "POST",
            "/api/tasks",
            Some(&one),
            json!({"description": format!("t{i}")}),
        )
        .await;
        assert_eq!(t.status, 201, "task {i}");
    }
    let t = call_json(
        &hub,
        "POST",
        "/api/tasks",
        Some(&one),
        json!({"description": "one too many"}),
    )
    .await;
    assert_eq!((t.status, &t.body["tier"]), (429, &json!("heavy")));
    assert_eq!(t.headers["retry-after"], "6");
    // Keyed by agent: another agent's token has its own bucket; reads are not limited.
    let other = call_json(
        &hub,
        "POST",
        "/api/tasks",
        Some(&two),
        json!({"description": "x"}),
    )
    .await;
    assert_eq!(other.status, 201);
    let list = call(&hub, "GET", "/api/tasks", Some(&one), None).await;
    assert_eq!(list.body["count"], 11);
    hub.set_rate_limits(false);
    let t = call_json(
        &hub,
        "POST",
        "/api/tasks",
        Some(&one),
        json!({"description": "unlimited"}),
    )
    .await;
    assert_eq!(t.status, 201);
    hub.stop().await;
}

#[tokio::test]
async fn oversized_chunked_and_malformed_requests_get_clear_errors() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.expect("start");
    let token = hub.add_token("tx-1");
    let big = format!(
        "POST /api/tasks HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        2 * 1024 * 1024
    );
    let a = raw_http(&hub, big.as_bytes()).await;
    assert_eq!((a.status, &a.body["error"]), (413, &json!("body_too_large")));
    let chunked = "POST /api/tasks HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
    let a = raw_http(&hub, chunked.as_bytes()).await;
    assert_eq!((a.status, &a.body["error"]), (411, &json!("length_required")));
    let a = raw_http(&hub, b"HELLO\r\n\r\n").await;
    assert_eq!((a.status, &a.body["error"]), (400, &json!("bad_request")));
    let huge = format!("GET /health HTTP/1.1\r\nX-Filler: {}\r\n\r\n", "x".repeat(20_000));
    let a = raw_http(&hub, huge.as_bytes()).await;
    assert_eq!((a.status, &a.body["error"]), (431, &json!("header_too_large")));
    // A body of exactly 1 MiB is read (and then judged by the endpoint).
    let body = format!("{{\"description\":\"{}\"}}", "d".repeat(1024 * 1024 - 18));
    assert_eq!(body.len(), 1024 * 1024);
    let a = call(&hub, "POST", "/api/tasks", Some(&token), Some(&body)).await;
    assert_eq!(
        (a.status, &a.body["errors"][0]["error"]),
        (422, &json!("too_long"))
    );
    // Expect: 100-continue gets its interim answer before the body is sent.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(hub.addr()).await.expect("connect");
    let body = r#"{"description":"continued"}"#;
    let head = format!(
        "POST /api/tasks HTTP/1.1\r\nAuthorization: Bearer {token}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.expect("head");
    let mut interim = [0u8; 25];
    timeout(LIMIT, tcp.read_exact(&mut interim))
        .await
        .expect("100")
        .expect("read");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    tcp.write_all(body.as_bytes()).await.expect("body");
    let mut rest = String::new();
    timeout(LIMIT, tcp.read_to_string(&mut rest))
        .await
        .expect("answer")
        .expect("read");
    assert!(rest.starts_with("HTTP/1.1 201 Created\r\n"), "{rest}");
    hub.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_sends_its_body_gets_408_after_ten_seconds() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hub = EmbeddedHub::start(HubOptions::default()).await.expect("start");
    let token = hub.add_token("slow-1");
    let (mut client, server) = tokio::io::duplex(1 << 16);
    hub.serve_stream(server);
    let start = tokio::time::Instant::now();
    let head =
        format!("POST /api/tasks HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 10\r\n\r\n{{");
    client.write_all(head.as_bytes()).await.expect("write");
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{answer}");
    assert_eq!(start.elapsed().as_secs(), 10);
    // A client that never finishes its head is dropped after the handshake grace, unanswered.
    let (mut client, server) = tokio::io::duplex(1 << 16);
    hub.serve_stream(server);
    client
        .write_all(b"GET /health HTTP/1.1\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.expect("read");
    assert_eq!(answer, "");
    // Nothing was counted as a WebSocket connection.
    assert!(!hub
        .history()
        .iter()
        .any(|e| matches!(e, HubEvent::Connected { .. })));
}

/// One request with hyper's client (what the sidecar's HTTP client is built on).
async fn hyper_call(hub: &EmbeddedHub, method: &str, path: &str, token: &str, body: &str) -> (u16, Value) {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let tcp = tokio::net::TcpStream::connect(hub.addr()).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .expect("handshake");
    let driver = tokio::spawn(conn);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", hub.addr().to_string())
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let response = timeout(LIMIT, sender.send_request(request))
        .await
        .expect("in time")
        .expect("response");
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let _ = driver.await;
    (status, serde_json::from_slice(&bytes).expect("JSON"))
}

#[tokio::test]
async fn hypers_client_talks_to_the_api() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.expect("start");
    let (status, reg) = hyper_call(
        &hub,
        "POST",
        "/api/onboard/register",
        "",
        r#"{"agent_id":"hy-1"}"#,
    )
    .await;
    assert_eq!(status, 201);
    let token = reg["token"].as_str().expect("token");
    let (status, created) = hyper_call(
        &hub,
        "POST",
        "/api/tasks",
        token,
        r#"{"description":"via hyper"}"#,
    )
    .await;
    assert_eq!((status, &created["status"]), (201, &json!("queued")));
    let path = format!("/api/tasks/{}", created["task_id"].as_str().unwrap());
    let (status, task) = hyper_call(&hub, "GET", &path, token, "").await;
    assert_eq!(
        (status, &task["description"], &task["submitted_by"]),
        (200, &json!("via hyper"), &json!("hy-1"))
    );
    let (status, gone) = hyper_call(&hub, "DELETE", "/admin/tokens/hy-1", token, "").await;
    assert_eq!(
        (status, gone),
        (200, json!({"agent_id": "hy-1", "status": "revoked"}))
    );
    hub.stop().await;
}
