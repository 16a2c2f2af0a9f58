//! The real binary against the embedded hub over loopback: identify, signals, restarts, a
//! black-holed link, WebSocket pings, hostile frames, and the token kept out of every output.

mod support;

use agentcom_sidecar::hub::{EmbeddedHub, HubEvent, HubOptions};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::net::TcpListener;

const SECS: fn(u64) -> Duration = Duration::from_secs;

struct Setup {
    hub: EmbeddedHub,
    token: String,
    _dir: TempDir,
    sidecar: Sidecar,
    events: tokio::sync::broadcast::Receiver<HubEvent>,
}

/// A hub, a config for `agent`, and the binary running against `url` (the hub's unless given).
async fn setup(agent: &str, url: Option<String>, extra: Value) -> Setup {
    let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
    let s = HubSetup::with_hub(hub, url.as_deref(), agent, extra);
    let sidecar = s.spawn();
    Setup {
        hub: s.hub,
        token: s.token,
        _dir: s.dir,
        sidecar,
        events: s.events,
    }
}

fn frame(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn identify_carries_exactly_the_node_sidecar_fields() {
    let mut s = setup(
        "cli-identify",
        None,
        json!({"name": "Cli Identify", "capabilities": ["code", "review"]}),
    )
    .await;
    let HubEvent::Received { text, .. } = wait_hub(
        &mut s.events,
        SECS(10),
        "identify",
        |e| matches!(e, HubEvent::Received { text, .. } if text.contains("identify")),
    )
    .await
    else {
        unreachable!()
    };
    assert_eq!(
        frame(&text),
        json!({"type":"identify","agent_id":"cli-identify","token":s.token,"name":"Cli Identify",
               "status":"idle","capabilities":["code","review"],"client_type":"sidecar","protocol_version":1})
    );
    wait_hub(&mut s.events, SECS(10), "identified", identified("cli-identify")).await;
    // Every frame the sidecar sends carries protocol_version 1; pings come once identified.
    wait_hub(&mut s.events, SECS(10), "a ping", |e| {
        matches!(e, HubEvent::Received { text, .. } if frame(text) == json!({"type":"ping","protocol_version":1}))
    })
    .await;
}

#[tokio::test]
async fn sigterm_sigint_and_sighup_close_with_1000_and_exit_0() {
    // SIGHUP: the terminal closed or the ssh session dropped; a stop like the others.
    for (signal, name) in [("TERM", "SIGTERM"), ("INT", "SIGINT"), ("HUP", "SIGHUP")] {
        let agent = format!("cli-{}", name.to_lowercase());
        let mut s = setup(&agent, None, json!({})).await;
        wait_hub(&mut s.events, SECS(10), "identified", identified(&agent)).await;
        s.sidecar.signal(signal);
        let status = s.sidecar.wait_exit(SECS(2)).await.expect("exited within 2 s");
        assert_eq!(status.code(), Some(0), "{signal}: {}", s.sidecar.stderr());
        wait_hub(&mut s.events, SECS(2), "close 1000", closed_by_sidecar).await;
        let log = s.sidecar.log_events();
        let shutdown = log
            .iter()
            .find(|e| e["event"] == "shutdown")
            .expect("shutdown event");
        assert_eq!(shutdown["signal"], name);
        assert_eq!(shutdown["agent_id"], agent.as_str());
        // The console's text lines say their time is UTC: `14:53:26.866Z shutdown ...`.
        let stdout = s.sidecar.stdout();
        let shown = stdout
            .lines()
            .find(|l| l.contains("shutdown"))
            .expect("a shutdown line");
        let time = shown.split(' ').next().unwrap();
        assert!(
            time.len() == 13 && time.ends_with('Z') && time.as_bytes()[2] == b':',
            "{shown:?}"
        );
    }
}

/// A WebSocket server that identifies anyone, then never reads again (so never answers a close).
async fn deaf_hub() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = vec![];
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            use futures_util::{SinkExt, StreamExt};
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let _identify = ws.next().await;
            let reply = r#"{"agent_id":"cli-deaf","type":"identified"}"#;
            ws.send(tokio_tungstenite::tungstenite::Message::text(reply))
                .await
                .unwrap();
            held.push(ws);
        }
    });
    (url, task)
}

#[tokio::test]
async fn exits_within_2s_when_the_hub_never_answers_the_close() {
    let (url, _deaf) = deaf_hub().await;
    let mut s = setup(
        "cli-deaf",
        Some(url),
        json!({"heartbeat_interval_ms": 59_000, "heartbeat_timeout_ms": 30_000}),
    )
    .await;
    s.sidecar
        .wait_log_event("identified", SECS(10))
        .await
        .expect("identified");
    s.sidecar.signal("TERM");
    let status = s.sidecar.wait_exit(SECS(2)).await.expect("exited within 2 s");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn survives_a_hub_restart() {
    let mut s = setup("cli-restart", None, json!({})).await;
    wait_hub(&mut s.events, SECS(10), "identified", identified("cli-restart")).await;
    s.hub.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.hub.restart().await.unwrap();
    wait_hub(
        &mut s.events,
        SECS(10),
        "identified again",
        identified("cli-restart"),
    )
    .await;
    let log = s.sidecar.wait_log_count("identified", 2, SECS(5)).await;
    let names: Vec<&str> = log.iter().filter_map(|e| e["event"].as_str()).collect();
    assert!(names.contains(&"ws_close"), "{names:?}");
    assert!(names.contains(&"ws_connect_error"), "{names:?}");
    assert!(names.contains(&"reconnect_scheduled"), "{names:?}");
    assert_eq!(
        names.iter().filter(|n| **n == "identified").count(),
        2,
        "{names:?}"
    );
    assert!(s.sidecar.child.try_wait().unwrap().is_none(), "still running");
}

#[tokio::test]
async fn a_silent_link_is_dropped_within_interval_plus_timeout() {
    let hole = Arc::new(AtomicBool::new(false));
    let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
    let url = proxy(hub.addr(), hole.clone()).await;
    let HubSetup {
        hub: _hub,
        mut events,
        dir,
        ..
    } = HubSetup::with_hub(hub, Some(&url), "cli-silent", json!({}));
    let sidecar = Sidecar::spawn(dir.path(), &dir.join("config.json"));
    wait_hub(&mut events, SECS(10), "identified", identified("cli-silent")).await;
    sidecar
        .wait_log_event("identified", SECS(5))
        .await
        .expect("the sidecar saw identified");
    hole.store(true, Ordering::SeqCst);
    // interval 1 s + timeout 0.8 s + the first reconnect delay (<= 0.1 s), with slack.
    let timeout = sidecar
        .wait_log_event("heartbeat_timeout", SECS(5))
        .await
        .expect("heartbeat_timeout logged");
    assert_eq!(timeout["waiting_for"], "pong");
    wait_hub(
        &mut events,
        SECS(5),
        "identified on a new connection",
        identified("cli-silent"),
    )
    .await;
}

#[tokio::test]
async fn answers_websocket_pings_while_otherwise_idle() {
    let mut s = setup(
        "cli-wsping",
        None,
        json!({"heartbeat_interval_ms": 59_000, "heartbeat_timeout_ms": 30_000}),
    )
    .await;
    wait_hub(&mut s.events, SECS(10), "identified", identified("cli-wsping")).await;
    s.hub
        .ws_ping("cli-wsping", b"are-you-there".to_vec())
        .await
        .unwrap();
    let pong = wait_hub(&mut s.events, SECS(5), "a WebSocket pong", |e| {
        matches!(e, HubEvent::WsPong { .. })
    })
    .await;
    let HubEvent::WsPong { payload, .. } = pong else {
        unreachable!()
    };
    assert_eq!(payload, b"are-you-there");
}

#[tokio::test]
async fn hostile_frames_are_logged_and_the_link_carries_on() {
    let mut s = setup("cli-hostile", None, json!({})).await;
    wait_hub(&mut s.events, SECS(10), "identified", identified("cli-hostile")).await;
    for hostile in [
        json!([1, 2, 3]),
        json!({"type": 42}),
        json!({"no_type": true}),
        json!({"type": "identified"}),
        json!({"type": "from_the_future", "x": "y"}),
        json!({"type": "error", "error": "validation_failed", "message_type": "ping", "errors": []}),
        json!({"type": "rate_limited", "retry_after_ms": "soon"}),
        json!("a bare string"),
        json!({"type": "pong", "timestamp": "not a number"}),
    ] {
        s.hub.push("cli-hostile", hostile).await.unwrap();
    }
    s.sidecar
        .wait_log_event("unhandled_message", SECS(5))
        .await
        .expect("unknown type logged");
    let malformed = s
        .sidecar
        .log_events()
        .iter()
        .filter(|e| e["event"] == "malformed_frame")
        .count();
    assert!(malformed >= 4, "{malformed} malformed_frame events");
    // Still alive, still heartbeating on the same connection.
    let before = s.hub.history().len();
    wait_hub(
        &mut s.events,
        SECS(5),
        "a ping after the hostile frames",
        |e| matches!(e, HubEvent::Received { text, .. } if text.contains("\"ping\"")),
    )
    .await;
    assert!(s.hub.history().len() > before);
    assert!(s.sidecar.child.try_wait().unwrap().is_none());
}

#[tokio::test]
async fn the_token_never_reaches_any_output() {
    // A wrong token (auth failure path), then shutdown: scan stdout, stderr and the log.
    let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
    hub.add_token("cli-secret");
    let secret = "s3cr3t-d0-n0t-pr1nt-".repeat(3);
    let dir = TempDir::new("cli-secret");
    write_private(
        &dir.join("config.json"),
        &config_json("cli-secret", &secret, &hub.url(), json!({})),
    );
    let mut sidecar = Sidecar::spawn(dir.path(), &dir.join("config.json"));
    let failed = sidecar
        .wait_log_event("auth_failed", SECS(10))
        .await
        .expect("auth_failed");
    assert_eq!(failed["error"], "invalid_token");
    sidecar.signal("TERM");
    assert_eq!(sidecar.wait_exit(SECS(2)).await.and_then(|s| s.code()), Some(0));
    let log = std::fs::read_to_string(dir.join("sidecar.log")).unwrap();
    for (name, text) in [
        ("stdout", sidecar.stdout()),
        ("stderr", sidecar.stderr()),
        ("log", log),
    ] {
        assert!(!text.is_empty() || name == "stderr", "{name} is empty");
        assert!(!text.contains("s3cr3t"), "the token leaked into {name}:\n{text}");
    }
}

#[tokio::test]
async fn auth_failure_is_reported_and_retried_at_the_capped_delay() {
    let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
    hub.add_token("cli-auth");
    let mut events = hub.events();
    let dir = TempDir::new("cli-auth");
    let config = config_json(
        "cli-auth",
        "not-the-token-of-cli-auth",
        &hub.url(),
        json!({"reconnect_max_ms": 2000}),
    );
    write_private(&dir.join("config.json"), &config);
    let sidecar = Sidecar::spawn(dir.path(), &dir.join("config.json"));
    let first = wait_hub(&mut events, SECS(10), "a connection", |e| {
        matches!(e, HubEvent::Connected { .. })
    })
    .await;
    wait_hub(&mut events, SECS(5), "the sidecar's close", closed_by_sidecar).await;
    let second = wait_hub(&mut events, SECS(5), "a second connection", |e| {
        matches!(e, HubEvent::Connected { .. })
    })
    .await;
    let (HubEvent::Connected { at: a, .. }, HubEvent::Connected { at: b, .. }) = (first, second) else {
        unreachable!()
    };
    assert!(
        b - a >= Duration::from_millis(1000),
        "retried after {:?}, expected >= 1 s (capped 2 s, jitter 0.5)",
        b - a
    );
    let event = sidecar.wait_log_event("auth_failed", SECS(1)).await.unwrap();
    assert!(event["hint"].as_str().unwrap().contains("token"));
}

#[tokio::test]
async fn log_format_json_and_a_resource_report_the_hub_accepts() {
    let agent = "cli-json-log";
    let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
    let token = hub.add_token(agent);
    let mut events = hub.events();
    let dir = TempDir::new(agent);
    write_private(
        &dir.join("config.json"),
        &config_json(agent, &token, &hub.url(), json!({})),
    );
    let child = binary()
        .args(["run", "--log-format", "json", "--config"])
        .arg(dir.join("config.json"))
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(dir.join("stdout.txt")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr.txt")).unwrap())
        .spawn()
        .unwrap();
    let mut sidecar = Sidecar {
        child,
        dir: dir.path().to_owned(),
    };
    wait_hub(&mut events, SECS(10), "identified", identified(agent)).await;
    // The real binary reports resources 5 s after identified; the hub validates the frame.
    let HubEvent::Received { text, .. } = wait_hub(
        &mut events,
        SECS(10),
        "a resource_report",
        |e| matches!(e, HubEvent::Received { text, .. } if frame(text)["type"] == "resource_report"),
    )
    .await
    else {
        unreachable!()
    };
    let report = frame(&text);
    assert_eq!(report["agent_id"], agent);
    assert!(report["vram_used_bytes"].is_null());
    let errors: Vec<String> = hub
        .history()
        .into_iter()
        .filter_map(|e| match e {
            HubEvent::Sent { text, .. } if frame(&text)["type"] == "error" => Some(text),
            _ => None,
        })
        .collect();
    assert!(errors.is_empty(), "{errors:?}");

    sidecar.signal("TERM");
    sidecar.wait_exit(SECS(2)).await.expect("exited within 2 s");
    // stdout carries exactly the log file's JSON lines.
    let stdout = sidecar.stdout();
    let file = std::fs::read_to_string(dir.join("sidecar.log")).unwrap();
    assert!(stdout.lines().count() >= 5, "{stdout}");
    assert_eq!(stdout, file);
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line).expect("stdout line is JSON");
        assert_eq!(v["agent_id"], agent);
    }
}

#[tokio::test]
async fn ws_connecting_names_the_proxy_and_an_unreachable_proxy_is_blamed() {
    let agent = "cli-proxy-log";
    let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
    let token = hub.add_token(agent);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = TempDir::new(agent);
    write_private(
        &dir.join("config.json"),
        &config_json(agent, &token, &hub.url(), json!({})),
    );
    let proxy_url = format!("http://erin:pr0xy-pw@{closed}");
    // Lowercase wins over uppercase: these override whatever this process's environment holds.
    let mut sidecar = Sidecar::spawn_with_env(
        dir.path(),
        &dir.join("config.json"),
        &[
            ("http_proxy", proxy_url.as_str()),
            ("no_proxy", "example.invalid"),
        ],
    );
    let error = sidecar
        .wait_log_event("ws_connect_error", SECS(10))
        .await
        .expect("ws_connect_error");
    sidecar.signal("TERM");
    assert_eq!(sidecar.wait_exit(SECS(2)).await.and_then(|s| s.code()), Some(0));
    let log = sidecar.log_events();
    let connecting = log.iter().find(|e| e["event"] == "ws_connecting").unwrap();
    assert_eq!(connecting["proxy"], closed.to_string(), "{connecting}");
    assert_eq!(connecting["url"], hub.url());
    let error = error["error"].as_str().unwrap();
    assert!(
        error.contains(&format!(
            "cannot reach the proxy {closed} set by http_proxy=http://***@{closed}: connection refused"
        )),
        "{error}"
    );
    assert!(!error.contains("hub_url"), "{error}");
    let stdout = sidecar.stdout();
    assert!(
        stdout.contains(&format!("through the proxy {closed}")),
        "{stdout}"
    );
    let file = std::fs::read_to_string(dir.join("sidecar.log")).unwrap();
    for text in [&stdout, &file, &sidecar.stderr()] {
        assert!(!text.contains("pr0xy-pw"), "the proxy password leaked:\n{text}");
    }
}

#[test]
fn demo_wakes_the_sample_agent_and_routes_a_task_to_a_local_model() {
    let started = std::time::Instant::now();
    let out = binary().arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // The first task really goes through the sample agent...
    assert!(
        stdout.contains("waking the agent: fallback: no ollama endpoint"),
        "{stdout}"
    );
    assert!(stdout.contains("agent_started"), "{stdout}");
    assert!(
        stdout.contains("Hello! (done: Say hello to the team)"),
        "{stdout}"
    );
    // ...the second runs on the fake Ollama the hub routed it to, and the hub records its model.
    assert!(
        stdout.contains("executing it here with ollama (fake-model:latest at http://127.0.0.1:"),
        "{stdout}"
    );
    let routed = stdout
        .lines()
        .find(|l| l.contains("a task routed to a local model:"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        routed.contains("fake-model:latest") && routed.contains("(7 tokens in, 5 out)"),
        "{routed}"
    );
    assert!(stdout.contains("done: every step seen"), "{stdout}");
}
