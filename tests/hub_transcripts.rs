//! Replays the real hub's recorded transcripts (`../shared/hub-transcripts`) against the
//! embedded hub on a paused clock, and checks it answers frame for frame.

use std::collections::HashMap;
use std::time::Duration;

use agentcom_sidecar::hub::{EmbeddedHub, HubOptions};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Client = WebSocketStream<DuplexStream>;

/// How long a `recv` may wait (virtual time) before the frame counts as missing.
const RECV_LIMIT: Duration = Duration::from_secs(5);

/// The recorded transcripts, vendored from the project's shared reference (`../shared/hub-transcripts`)
/// so that a clone runs its tests anywhere.
fn load(case: &str) -> Value {
    let path = format!("{}/tests/hub-transcripts/{case}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("transcript is JSON")
}

/// Where the shared reference sits beside the repo, the vendored folder must be a byte-for-byte
/// copy of it: the same files (README.md included), none missing, none extra.
#[test]
fn vendored_transcripts_match_the_shared_reference() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // `../shared` from the main checkout; a worktree further down finds the same folder higher up.
    let Some(shared) = root
        .ancestors()
        .skip(1)
        .map(|dir| dir.join("shared/hub-transcripts"))
        .find(|dir| dir.is_dir())
    else {
        // A clone away from the project's shared reference: the vendored copy is all there is.
        eprintln!(
            "no shared/hub-transcripts beside or above {}: nothing to compare",
            root.display()
        );
        return;
    };
    let vendored = root.join("tests/hub-transcripts");
    let shared_names = file_names(&shared);
    let vendored_names = file_names(&vendored);
    let missing: Vec<&String> = shared_names.difference(&vendored_names).collect();
    let extra: Vec<&String> = vendored_names.difference(&shared_names).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "tests/hub-transcripts/ lacks {missing:?} and has {extra:?} beyond the shared reference: \
         copy the folder again (cp ../shared/hub-transcripts/* tests/hub-transcripts/)"
    );
    for name in &shared_names {
        assert!(
            std::fs::read(vendored.join(name)).unwrap() == std::fs::read(shared.join(name)).unwrap(),
            "tests/hub-transcripts/{name} differs from the shared reference: copy it again"
        );
    }
}

/// The names of the regular files in `dir`, sorted.
fn file_names(dir: &std::path::Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Transcripts that need hub features not built yet, each with the issue (and helper) that will
/// replay it. Remove a line when its replay lands; the tests below keep this list honest.
const NOT_REPLAYED_YET: &[(&str, &str)] = &[];

/// Every vendored transcript is either replayed below or listed as not replayed yet, never both.
#[test]
fn every_transcript_is_replayed_or_listed_as_pending() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hub-transcripts");
    let cases: Vec<String> = file_names(&dir)
        .into_iter()
        .filter_map(|name| name.strip_suffix(".json").map(String::from))
        .collect();
    let pending = |case: &str| NOT_REPLAYED_YET.iter().any(|(name, _)| *name == case);
    let unseen: Vec<&String> = cases
        .iter()
        .filter(|case| !REPLAYED.contains(&case.as_str()) && !pending(case))
        .collect();
    assert!(
        unseen.is_empty(),
        "{unseen:?}: neither replayed nor in NOT_REPLAYED_YET (add a replay, or list it with the issue that will)"
    );
    let both: Vec<&&str> = REPLAYED.iter().filter(|case| pending(case)).collect();
    assert!(
        both.is_empty(),
        "{both:?}: replayed, so remove them from NOT_REPLAYED_YET"
    );
}

/// The pending list names only transcripts that exist, once each, so it can only shrink honestly.
#[test]
fn the_pending_list_names_only_vendored_transcripts() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hub-transcripts");
    let names = file_names(&dir);
    for (i, (case, why)) in NOT_REPLAYED_YET.iter().enumerate() {
        assert!(
            names.contains(&format!("{case}.json")),
            "NOT_REPLAYED_YET names {case} ({why}), but tests/hub-transcripts/{case}.json does not exist"
        );
        assert!(
            why.starts_with("issue "),
            "{case}: say which issue will replay it, not {why:?}"
        );
        assert!(
            !NOT_REPLAYED_YET[..i].iter().any(|(other, _)| other == case),
            "{case} is listed twice"
        );
    }
}

/// Opens a client on an in-memory stream served by `hub`, at `url` (`/ws` or `/ws/dashboard`).
async fn open(hub: &EmbeddedHub, url: &str) -> Client {
    let (client, server) = tokio::io::duplex(1 << 20);
    hub.serve_stream(server);
    let (ws, _) = tokio_tungstenite::client_async(url, client)
        .await
        .expect("handshake");
    ws
}

/// How much virtual time a reply may take: the hub answers at once, or exactly when one of
/// its timers fires inside a preceding `wait_ms`.
const PROMPT: Duration = Duration::from_millis(100);

/// The next data or close frame (control pings and pongs are skipped); it must come promptly.
async fn next_frame(ws: &mut Client, what: &str) -> Message {
    let start = tokio::time::Instant::now();
    let msg = next_frame_any_time(ws, what).await;
    assert!(
        start.elapsed() <= PROMPT,
        "{what}: frame came {:?} late",
        start.elapsed()
    );
    msg
}

async fn next_frame_any_time(ws: &mut Client, what: &str) -> Message {
    loop {
        match timeout(RECV_LIMIT, ws.next()).await {
            Err(_) => panic!("{what}: no frame within {RECV_LIMIT:?}"),
            Ok(None) => panic!("{what}: stream ended"),
            Ok(Some(Err(e))) => panic!("{what}: {e}"),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(Some(Ok(msg))) => return msg,
        }
    }
}

/// Reads until the stream ends, so the close handshake completes on both sides.
async fn finish(ws: &mut Client) {
    let _ = timeout(RECV_LIMIT, async { while let Some(Ok(_)) = ws.next().await {} }).await;
}

/// Whether `actual` matches `expected`, where `"<token>"`, `"<ms>"` and `"<task_id…>"` are
/// placeholders. A task placeholder binds (in `ids`) to the first id it meets; later uses must match.
fn matches(
    expected: &Value,
    actual: &Value,
    tokens: &HashMap<String, String>,
    ids: &mut HashMap<String, String>,
) -> bool {
    match (expected, actual) {
        (Value::String(p), Value::String(a)) if p == "<token>" => tokens.values().any(|t| t == a),
        (Value::String(p), Value::Number(n)) if p == "<ms>" => n
            .as_u64()
            .is_some_and(|ms| (1_000_000_000_000..10_000_000_000_000).contains(&ms)),
        (Value::String(p), Value::String(a)) if p.starts_with("<task_id") => {
            ids.entry(p.clone()).or_insert_with(|| a.clone()) == a
        }
        (Value::Object(e), Value::Object(a)) => {
            e.len() == a.len()
                && e.iter()
                    .all(|(k, v)| a.get(k).is_some_and(|av| matches(v, av, tokens, ids)))
        }
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(ev, av)| matches(ev, av, tokens, ids))
        }
        _ => expected == actual,
    }
}

/// Replaces bound task placeholders (also inside strings such as paths) by the real ids.
fn bind_str(text: &str, ids: &HashMap<String, String>) -> String {
    let mut names: Vec<&String> = ids.keys().collect();
    // Longest first, so "<task_id_2>" is not touched by "<task_id>".
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = text.to_string();
    for name in names {
        out = out.replace(name.as_str(), &ids[name]);
    }
    out
}

/// A frame to send with its placeholders filled in (`"<ms>"` becomes the current epoch ms).
fn bind(v: &Value, ids: &HashMap<String, String>) -> Value {
    match v {
        Value::String(s) if s == "<ms>" => json!(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)),
        Value::String(s) => Value::String(bind_str(s, ids)),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), bind(v, ids))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(|v| bind(v, ids)).collect()),
        other => other.clone(),
    }
}

/// A history detail as `TaskRecord` renders it: strings as they are, objects as sorted JSON.
fn detail(v: &Value, ids: &HashMap<String, String>) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(bind_str(s, ids)),
        other => Some(bind(other, ids).to_string()),
    }
}

/// One HTTP/1.1 request to `hub` on an in-memory stream, as a client on the recording machine
/// sent it (`Host: 127.0.0.1:4000`); the status and the JSON body (Null when empty).
async fn http_request(
    hub: &EmbeddedHub,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    hub.serve_stream(server);
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:4000\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    client.write_all(request.as_bytes()).await.expect("request");
    let mut answer = Vec::new();
    timeout(RECV_LIMIT, client.read_to_end(&mut answer))
        .await
        .expect("the hub answers and closes")
        .expect("read");
    let answer = String::from_utf8(answer).expect("UTF-8");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a complete answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line: {head}"));
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).expect("a JSON body")
    };
    (status, body)
}

struct Replay {
    case: String,
    hub: EmbeddedHub,
    conns: HashMap<String, Client>,
    /// agent_id -> token from `POST /admin/tokens`.
    tokens: HashMap<String, String>,
    last_token: String,
    stopping: Option<JoinHandle<()>>,
    /// Task placeholder -> real task id.
    ids: HashMap<String, String>,
    /// When the first `task_assign` arrived (hub.log notes time their warnings from it).
    first_assign: Option<tokio::time::Instant>,
    /// The token of the agent "admin", used for HTTP calls.
    admin: String,
}

impl Replay {
    async fn new(case: &str) -> Replay {
        let hub = EmbeddedHub::start(HubOptions::default())
            .await
            .expect("hub starts");
        let admin = hub.add_token("admin");
        Replay {
            admin,
            case: case.to_string(),
            hub,
            conns: HashMap::new(),
            tokens: HashMap::new(),
            last_token: String::new(),
            stopping: None,
            ids: HashMap::new(),
            first_assign: None,
        }
    }

    fn conn(&mut self, name: &str) -> &mut Client {
        let case = &self.case;
        self.conns
            .get_mut(name)
            .unwrap_or_else(|| panic!("{case}: conn {name} is not open"))
    }

    async fn run(mut self) {
        let transcript = load(&self.case);
        let steps = transcript["steps"].as_array().expect("steps").clone();
        for (i, step) in steps.iter().enumerate() {
            let conn = step
                .get("conn")
                .and_then(Value::as_str)
                .unwrap_or("_")
                .to_string();
            let at = format!("{} step {i}", self.case);
            if let Some(note) = step.get("note").and_then(Value::as_str) {
                self.note(&conn, note).await;
            } else if let Some(frame) = step.get("send") {
                self.send(&conn, frame).await;
            } else if let Some(expected) = step.get("recv") {
                self.recv(&conn, expected, &at).await;
            } else if let Some(close) = step.get("recv_close") {
                self.recv_close(&conn, close, &at).await;
            } else if let Some(ms) = step.get("wait_ms").and_then(Value::as_u64) {
                self.wait(ms, &at).await;
            } else if let Some(http) = step.get("http") {
                self.http(http, &at).await;
            } else {
                panic!("{at}: unknown step {step}");
            }
        }
        let open: Vec<String> = self.conns.keys().cloned().collect();
        for name in open {
            self.client_close(&name).await;
        }
    }

    /// Lets `ms` of virtual time pass; nothing may arrive on any socket before its last millisecond.
    async fn wait(&mut self, ms: u64, at: &str) {
        tokio::time::sleep(Duration::from_millis(ms.saturating_sub(1))).await;
        for (name, ws) in &mut self.conns {
            if let Ok(frame) = timeout(Duration::ZERO, ws.next()).await {
                panic!("{at}: {frame:?} arrived on {name} during the wait");
            }
        }
        tokio::time::sleep(Duration::from_millis(ms.min(1))).await;
    }

    async fn note(&mut self, conn: &str, note: &str) {
        if note.starts_with("client opens") {
            let url = if note.contains("/ws/dashboard") {
                "ws://127.0.0.1:4000/ws/dashboard"
            } else {
                "ws://127.0.0.1:4000/ws"
            };
            let ws = open(&self.hub, url).await;
            self.conns.insert(conn.to_string(), ws);
        } else if note.starts_with("client closes") {
            self.client_close(conn).await;
        } else if note.contains("WebSocket-level ping") {
            let ws = self.conn(conn);
            ws.send(Message::Ping(b"tx".to_vec().into()))
                .await
                .expect("ws ping");
            match timeout(RECV_LIMIT, ws.next()).await {
                Ok(Some(Ok(Message::Pong(p)))) => assert_eq!(&p[..], b"tx"),
                other => panic!("expected a control pong, got {other:?}"),
            }
        } else if note.starts_with("hub.sh stop") {
            let hub = self.hub.clone();
            self.stopping = Some(tokio::spawn(async move { hub.stop().await }));
        } else if note.starts_with("hub.log, warnings") {
            self.check_hub_log(note);
        } else if note.starts_with("hub restarted") {
            if let Some(stop) = self.stopping.take() {
                stop.await.expect("stop finished");
            }
            self.hub.restart().await.expect("restart");
        }
    }

    /// Closes with 1000; every frame before the hub's close answer would be an unexpected one.
    async fn client_close(&mut self, conn: &str) {
        let case = self.case.clone();
        let Some(mut ws) = self.conns.remove(conn) else {
            return;
        };
        let normal = CloseFrame {
            code: 1000.into(),
            reason: "".into(),
        };
        ws.close(Some(normal)).await.expect("client close");
        let mut answer = None;
        loop {
            match timeout(RECV_LIMIT, ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => panic!("{case}: unexpected frame on {conn}: {t}"),
                Ok(Some(Ok(Message::Close(frame)))) => answer = frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        assert_eq!(
            answer,
            Some(1000),
            "{case}: the hub answers a client close with 1000"
        );
    }

    async fn send(&mut self, conn: &str, frame: &Value) {
        let raw = frame.as_object().filter(|o| o.len() == 1);
        let msg = if let Some(text) = raw.and_then(|o| o.get("text")).and_then(Value::as_str) {
            Message::text(text)
        } else if let Some(hex) = raw.and_then(|o| o.get("binary_hex")).and_then(Value::as_str) {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            Message::Binary(bytes.into())
        } else {
            let mut frame = bind(frame, &self.ids);
            if frame["token"] == "<token>" {
                let agent = frame["agent_id"].as_str().unwrap_or_default();
                let token = self.tokens.get(agent).unwrap_or(&self.last_token).clone();
                frame["token"] = Value::from(token);
            }
            Message::text(frame.to_string())
        };
        self.conn(conn).send(msg).await.expect("send");
    }

    async fn recv(&mut self, conn: &str, expected: &Value, at: &str) {
        let msg = next_frame(self.conn(conn), at).await;
        let Message::Text(text) = msg else {
            panic!("{at}: expected {expected}, got {msg:?}")
        };
        let actual: Value = serde_json::from_str(&text).expect("hub sends JSON");
        if actual["type"] == "task_assign" && self.first_assign.is_none() {
            self.first_assign = Some(tokio::time::Instant::now());
        }
        // serde_json's default map is sorted: equality means compact text with sorted keys.
        assert_eq!(
            text.as_str(),
            actual.to_string(),
            "{at}: keys in alphabetical order"
        );
        assert!(
            matches(expected, &actual, &self.tokens, &mut self.ids),
            "{at}: expected {expected}\n got {actual}"
        );
    }

    async fn recv_close(&mut self, conn: &str, close: &Value, at: &str) {
        let ws = self.conn(conn);
        match next_frame(ws, at).await {
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), close["code"], "{at}");
                assert_eq!(frame.reason.as_str(), close["reason"], "{at}");
            }
            other => panic!("{at}: expected close {close}, got {other:?}"),
        }
        finish(ws).await;
        self.conns.remove(conn);
    }

    /// An `http` step. The endpoints the embedded hub serves over HTTP are called over HTTP
    /// (on an in-memory stream, `Host: 127.0.0.1:4000` as recorded) and their status and body
    /// must match; the rest are checked through the handle's Rust methods.
    async fn http(&mut self, http: &Value, at: &str) {
        let method = http["method"].as_str().unwrap_or_default();
        let path = bind_str(http["path"].as_str().unwrap_or_default(), &self.ids);
        let path = path.as_str();
        let status = http["status"].as_u64().unwrap_or_default();
        let served = matches!(
            (method, path),
            ("POST", "/admin/tokens" | "/api/tasks" | "/api/onboard/register")
                | ("POST", "/api/admin/push-task")
                | ("GET", "/api/agents" | "/health" | "/api/config/default-repo")
                | ("DELETE", _)
        ) || path.starts_with("/api/tasks/")
            || path.starts_with("/api/agents/")
            || path.starts_with("/api/admin/agents/");
        if served {
            self.http_call(method, path, http, at).await;
        }
        match (method, path) {
            ("GET", p) if p.starts_with("/api/tasks/") => {
                // The Rust view of the same record agrees with the HTTP one.
                let id = &p["/api/tasks/".len()..];
                self.check_task(id, status, &http["response"], at);
            }
            ("GET", p) if p.starts_with("/api/agents/") && p.ends_with("/state") => {
                let agent = &p["/api/agents/".len()..p.len() - "/state".len()];
                self.check_fsm(agent, status, &http["response"], at).await;
            }
            ("GET", "/api/admin/llm-registry") => {
                assert_eq!(self.hub.llm_registry(), http["response"], "{at}: LLM registry");
            }
            _ => {} // the rest of the HTTP API is not modelled
        }
    }

    /// Sends the step's request over HTTP and compares the answer. The token is the admin's
    /// (the recorder's whitelisted one, `submitted_by: "admin"`), none where 401 was recorded.
    /// Presence takes a moment to settle after a close: reads of it are retried briefly.
    async fn http_call(&mut self, method: &str, path: &str, http: &Value, at: &str) {
        let want_status = http["status"].as_u64().unwrap_or_default();
        let token = (want_status != 401).then(|| self.admin.clone());
        let body = http.get("body").map(|b| bind(b, &self.ids));
        let want = &http["response"];
        let settles =
            method == "GET" && (path == "/api/agents" || path == "/health" || path.ends_with("/state"));
        for attempt in 0.. {
            let (status, got) = http_request(&self.hub, method, path, token.as_deref(), body.as_ref()).await;
            if let (Some(agent), Some(tok)) = (got["agent_id"].as_str(), got["token"].as_str()) {
                self.tokens.insert(agent.to_string(), tok.to_string());
                self.last_token = tok.to_string();
            }
            let mut ids = self.ids.clone();
            if u64::from(status) == want_status && matches(want, &got, &self.tokens, &mut ids) {
                self.ids = ids;
                return;
            }
            if !settles || attempt == 50 {
                panic!("{at}: {method} {path}: expected {want_status} {want}\n got {status} {got}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A note listing hub.log's warnings ("+0.011 s from the first task_assign: warning
    /// fsm_unexpected_event (...); ..."): the embedded hub logs the same warnings, in that order,
    /// each within [`PROMPT`] of the recorded offset.
    fn check_hub_log(&self, note: &str) {
        let (_, list) = note.split_once(": ").expect("a list of warnings");
        let want: Vec<(f64, &str)> = list
            .split("; ")
            .map(|item| {
                let offset = item
                    .trim_start_matches('+')
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse::<f64>().ok())
                    .unwrap_or_else(|| panic!("{}: no offset in {item:?}", self.case));
                let name = item
                    .split("warning ")
                    .nth(1)
                    .and_then(|w| w.split([' ', '(']).next())
                    .unwrap_or_else(|| panic!("{}: no warning in {item:?}", self.case));
                (offset, name)
            })
            .collect();
        let start = self
            .first_assign
            .expect("hub.log offsets count from the first task_assign");
        let got = self.hub.hub_log();
        let names: Vec<&str> = got.iter().map(|l| l.event.as_str()).collect();
        let want_names: Vec<&str> = want.iter().map(|(_, n)| *n).collect();
        assert_eq!(names, want_names, "{}: hub.log warnings", self.case);
        for ((offset, name), line) in want.iter().zip(&got) {
            let at = line.at.saturating_duration_since(start).as_secs_f64();
            assert!(
                (at - offset).abs() <= PROMPT.as_secs_f64(),
                "{}: {name} logged at +{at:.3} s, recorded at +{offset} s",
                self.case
            );
        }
    }

    /// `GET /api/tasks/:id`: compares the modelled fields with `task()`.
    fn check_task(&self, id: &str, status: u64, want: &Value, at: &str) {
        let got = self.hub.task(id);
        if status == 404 {
            assert!(got.is_none(), "{at}: task {id} should be gone, got {got:?}");
            return;
        }
        let got = got.unwrap_or_else(|| panic!("{at}: task {id} not found"));
        assert_eq!(got.task_id, id, "{at}");
        assert_eq!(got.status, want["status"], "{at}: status");
        assert_eq!(got.generation, want["generation"], "{at}: generation");
        assert_eq!(got.retry_count, want["retry_count"], "{at}: retry_count");
        assert_eq!(
            got.assigned_to.as_deref(),
            want["assigned_to"].as_str(),
            "{at}: assigned_to"
        );
        assert_eq!(
            got.last_error.as_deref(),
            want["last_error"].as_str(),
            "{at}: last_error"
        );
        assert_eq!(got.tokens_used, want["tokens_used"].as_i64(), "{at}: tokens_used");
        assert_eq!(got.result.unwrap_or(Value::Null), want["result"], "{at}: result");
        // The routed records (2026-11-29) also show the classification, the stored routing
        // decision and the verification reports; older recordings predate those fields.
        let mut ids = self.ids.clone();
        for (key, got) in [
            ("complexity", got.complexity.clone()),
            (
                "routing_decision",
                got.routing_decision.clone().unwrap_or(Value::Null),
            ),
            (
                "verification_report",
                got.verification_report.clone().unwrap_or(Value::Null),
            ),
            (
                "verification_history",
                Value::Array(got.verification_history.clone()),
            ),
            ("max_verification_retries", json!(got.max_verification_retries)),
        ] {
            if let Some(want) = want.get(key) {
                assert!(
                    matches(want, &got, &self.tokens, &mut ids),
                    "{at}: {key}: expected {want}\n got {got}"
                );
            }
        }
        // The real hub lists history newest first; TaskRecord oldest first.
        let mut history: Vec<(String, Option<String>)> = want["history"]
            .as_array()
            .expect("history")
            .iter()
            .map(|h| {
                (
                    h["event"].as_str().unwrap_or_default().to_string(),
                    detail(&h["details"], &self.ids),
                )
            })
            .collect();
        history.reverse();
        assert_eq!(got.history, history, "{at}: history");
    }

    /// `GET /api/agents/:id/state`: compares the FSM with `agent_state()`.
    async fn check_fsm(&self, agent: &str, status: u64, want: &Value, at: &str) {
        let same = |hub: &EmbeddedHub| match hub.agent_state(agent) {
            None => status == 404,
            Some(s) => {
                status == 200
                    && s.fsm_state == want["fsm_state"]
                    && s.current_task_id == want["current_task_id"].as_str().map(|p| bind_str(p, &self.ids))
                    && json!(s.flags) == want["flags"]
            }
        };
        self.settle(same).await;
        assert!(
            same(&self.hub),
            "{at}: FSM of {agent}: got {:?}, want {status} {want}",
            self.hub.agent_state(agent)
        );
    }

    /// Gives connection tasks a moment (1 ms steps of virtual time) to finish their cleanup.
    async fn settle(&self, done: impl Fn(&EmbeddedHub) -> bool) {
        for _ in 0..50 {
            if done(&self.hub) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// One paused-clock test per case, and `REPLAYED` naming them all.
macro_rules! replay {
    ($($case:ident),* $(,)?) => {
        /// The transcripts replayed frame for frame below.
        const REPLAYED: &[&str] = &[$(stringify!($case)),*];
        $(
            #[tokio::test(start_paused = true)]
            async fn $case() {
                Replay::new(stringify!($case)).await.run().await;
            }
        )*
    };
}

replay!(
    identify_ok,
    identify_invalid_token,
    identify_token_agent_mismatch,
    before_identify,
    before_identify_violations,
    ping_pong,
    validation_binary_frame,
    validation_generation_string,
    validation_identify_capability_number,
    validation_invalid_json,
    validation_invalid_json_not_counted,
    validation_json_array,
    validation_missing_type,
    validation_nonstring_type,
    validation_reason_too_long,
    validation_task_complete_no_generation,
    validation_unknown_type_agent_restarting,
    validation_unknown_type_task_rejected,
    violation_cooldown,
    idle_timeout,
    duplicate_agent,
    presence_pushes,
    rate_limit,
    hub_shutdown,
    restart_sidecar,
    task_lifecycle_success,
    task_lifecycle_failed,
    stale_generation,
    recovering,
    state_report,
    disconnect_reclaim,
    acceptance_timeout,
    cancel,
    task_failed_before_accept,
    routed_trivial,
    routed_complex,
    routed_standard_fallback,
    task_progress_execution_event,
    task_complete_with_verification,
    classify,
    onboard_register,
);
