//! A fake Ollama on loopback, for tests and the demo: `/api/tags`, `/api/ps` and a streamed
//! `/api/chat` whose behaviour is scripted ([`Chat`]), recording every request it gets.
//!
//! Its HTTP is written by hand and kept simple (one request per connection, answered with
//! `Connection: close`; streams in chunked encoding as Ollama sends them), and shares nothing with
//! the executor's client, so a mistake in one is not mirrored in the other.

use serde_json::json;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How the fake answers one `POST /api/chat`.
#[derive(Debug, Clone)]
pub enum Chat {
    /// Streams each token as a line, `delay` apart, then the `done` line with the counts.
    Answer {
        /// The pieces of text, one per line.
        tokens: Vec<String>,
        /// The wait before each line.
        delay: Duration,
        /// `prompt_eval_count` on the `done` line.
        prompt_eval_count: u64,
        /// `eval_count` on the `done` line.
        eval_count: u64,
    },
    /// Streams `count` numbered tokens (`"tok-00000001 "`, 13 bytes each), then `done` with
    /// `prompt_eval_count` 7 and `eval_count` `count`.
    Numbered {
        /// How many tokens.
        count: usize,
    },
    /// Streams the tokens, then an `{"error": ...}` line, and ends.
    ErrorLine {
        /// The text before the error.
        tokens: Vec<String>,
        /// The error's text.
        error: String,
    },
    /// Streams the tokens and ends the stream without a `done` line.
    Cut {
        /// The text before the end.
        tokens: Vec<String>,
    },
    /// Streams this text as the body, as it is (for lines that are not JSON, or too long).
    Raw {
        /// The body's text.
        body: String,
    },
    /// Answers with this status and body.
    Status {
        /// The HTTP status code.
        code: u16,
        /// The body.
        body: String,
    },
    /// Reads the request and never answers; notices when the client goes away.
    Hang,
}

impl Chat {
    /// A quick answer made of these tokens (counts 7 in, one per token out).
    pub fn answer(tokens: &[&str]) -> Chat {
        Chat::Answer {
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            delay: Duration::ZERO,
            prompt_eval_count: 7,
            eval_count: tokens.len() as u64,
        }
    }
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The method (`GET`, `POST`).
    pub method: String,
    /// The path (`/api/chat`).
    pub path: String,
    /// The body, byte for byte.
    pub body: Vec<u8>,
}

#[derive(Default)]
struct State {
    models: Vec<String>,
    vram: Vec<u64>,
    script: VecDeque<Chat>,
    default_chat: Option<Chat>,
    received: Vec<Received>,
    hangs_closed: usize,
    first_token_at: Option<std::time::Instant>,
}

/// The running fake; it stops when dropped.
pub struct FakeOllama {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    closed: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for FakeOllama {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback URL nothing listens on (a port bound then released): connections are refused.
pub async fn refused_url() -> io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(format!("http://{addr}"))
}

impl FakeOllama {
    /// Starts a fake on a free loopback port, with model `fake-model:latest`, 1 GiB of VRAM in
    /// use, and a default answer of "Hello from the fake model." in 5 tokens.
    pub async fn start() -> io::Result<FakeOllama> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            models: vec!["fake-model:latest".to_owned()],
            vram: vec![1 << 30],
            default_chat: Some(Chat::answer(&["Hello", " from", " the", " fake", " model."])),
            ..State::default()
        }));
        let closed = Arc::new(Notify::new());
        let (s, c) = (state.clone(), closed.clone());
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (s, c) = (s.clone(), c.clone());
                tokio::spawn(async move {
                    let _ = serve(socket, s, c).await;
                });
            }
        });
        Ok(FakeOllama {
            addr,
            state,
            closed,
            task,
        })
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`, as the hub's `selected_endpoint` names it.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The models `/api/tags` lists.
    pub fn set_models(&self, models: &[&str]) {
        self.with(|s| s.models = models.iter().map(|m| m.to_string()).collect());
    }

    /// The `size_vram` of each model `/api/ps` lists.
    pub fn set_vram(&self, sizes: &[u64]) {
        self.with(|s| s.vram = sizes.to_vec());
    }

    /// Queues the answer to the next `/api/chat` not yet scripted.
    pub fn push_chat(&self, chat: Chat) {
        self.with(|s| s.script.push_back(chat));
    }

    /// The answer once the queue is empty.
    pub fn set_default_chat(&self, chat: Chat) {
        self.with(|s| s.default_chat = Some(chat));
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.with(|s| s.received.clone())
    }

    /// How many hung `/api/chat` requests the client has closed.
    pub fn hangs_closed(&self) -> usize {
        self.with(|s| s.hangs_closed)
    }

    /// When the latest streamed `/api/chat` answer (`Answer` or `Numbered`) began writing its
    /// first token line (on the monotonic clock the hub's `HubEvent::at` uses), if one has.
    pub fn first_token_at(&self) -> Option<std::time::Instant> {
        self.with(|s| s.first_token_at)
    }

    /// Waits until `n` hung requests have been closed by the client.
    pub async fn wait_hangs_closed(&self, n: usize) {
        loop {
            let notified = self.closed.notified();
            if self.hangs_closed() >= n {
                return;
            }
            notified.await;
        }
    }
}

/// Reads one request: method, path, body (by `Content-Length`).
async fn read_request(socket: &mut TcpStream) -> io::Result<Option<Received>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Ok(None);
        }
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let path = first.next().unwrap_or("").to_owned();
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(Some(Received { method, path, body }))
}

async fn respond(socket: &mut TcpStream, code: u16, body: &str) -> io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Status",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(body.as_bytes()).await?;
    socket.shutdown().await
}

async fn chunk(socket: &mut TcpStream, line: &serde_json::Value) -> io::Result<()> {
    let data = format!("{line}\n");
    let framed = format!("{:x}\r\n{data}\r\n", data.len());
    socket.write_all(framed.as_bytes()).await
}

fn token_line(model: &str, text: &str) -> serde_json::Value {
    json!({"model": model, "created_at": "2026-01-01T00:00:00Z",
           "message": {"role": "assistant", "content": text}, "done": false})
}

async fn stream_chat(
    socket: &mut TcpStream,
    chat: Chat,
    model: &str,
    state: &Mutex<State>,
) -> io::Result<()> {
    let first_token =
        || state.lock().unwrap_or_else(|e| e.into_inner()).first_token_at = Some(std::time::Instant::now());
    socket
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .await?;
    let done = |pin: u64, pout: u64| {
        json!({"model": model, "created_at": "2026-01-01T00:00:00Z",
               "message": {"role": "assistant", "content": ""}, "done": true,
               "done_reason": "stop", "total_duration": 1000, "prompt_eval_count": pin,
               "eval_count": pout})
    };
    match chat {
        Chat::Answer {
            tokens,
            delay,
            prompt_eval_count,
            eval_count,
        } => {
            for (i, t) in tokens.iter().enumerate() {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if i == 0 {
                    first_token();
                }
                chunk(socket, &token_line(model, t)).await?;
            }
            chunk(socket, &done(prompt_eval_count, eval_count)).await?;
        }
        Chat::Numbered { count } => {
            let model_json = json!(model).to_string();
            // Several lines per write, so the 100 000-token stream is quick.
            let mut batch = String::new();
            if count > 0 {
                first_token();
            }
            for i in 0..count {
                // The same line token_line makes, written directly: the stream is long.
                batch.push_str(&format!(
                    "{{\"model\":{},\"created_at\":\"2026-01-01T00:00:00Z\",\"message\":{{\"role\":\"assistant\",\"content\":\"tok-{i:08} \"}},\"done\":false}}\n",
                    model_json
                ));
                if batch.len() > 16 * 1024 || i + 1 == count {
                    let framed = format!("{:x}\r\n{batch}\r\n", batch.len());
                    socket.write_all(framed.as_bytes()).await?;
                    batch.clear();
                }
            }
            chunk(socket, &done(7, count as u64)).await?;
        }
        Chat::ErrorLine { tokens, error } => {
            for t in &tokens {
                chunk(socket, &token_line(model, t)).await?;
            }
            chunk(socket, &json!({ "error": error })).await?;
        }
        Chat::Cut { tokens } => {
            for t in &tokens {
                chunk(socket, &token_line(model, t)).await?;
            }
        }
        Chat::Raw { body } => {
            for piece in body.as_bytes().chunks(16 * 1024) {
                socket
                    .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await?;
                socket.write_all(piece).await?;
                socket.write_all(b"\r\n").await?;
            }
        }
        Chat::Status { .. } | Chat::Hang => unreachable!("answered before the stream"),
    }
    socket.write_all(b"0\r\n\r\n").await?;
    socket.shutdown().await
}

async fn serve(mut socket: TcpStream, state: Arc<Mutex<State>>, closed: Arc<Notify>) -> io::Result<()> {
    let Some(request) = read_request(&mut socket).await? else {
        return Ok(());
    };
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    lock().received.push(request.clone());
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/api/tags") => {
            let models: Vec<_> = lock()
                .models
                .iter()
                .map(|m| json!({"name": m, "model": m, "size": 1000}))
                .collect();
            respond(&mut socket, 200, &json!({ "models": models }).to_string()).await
        }
        ("GET", "/api/ps") => {
            let models: Vec<_> = {
                let s = lock();
                s.vram
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let name = s.models.get(i).cloned().unwrap_or_default();
                        json!({"name": name, "size": v, "size_vram": v})
                    })
                    .collect()
            };
            respond(&mut socket, 200, &json!({ "models": models }).to_string()).await
        }
        ("POST", "/api/chat") => {
            let chat = {
                let mut s = lock();
                s.script.pop_front().or_else(|| s.default_chat.clone())
            };
            let model = serde_json::from_slice::<serde_json::Value>(&request.body)
                .ok()
                .and_then(|v| v.get("model").and_then(|m| m.as_str()).map(str::to_owned))
                .unwrap_or_default();
            match chat {
                None => respond(&mut socket, 500, r#"{"error":"no answer scripted"}"#).await,
                Some(Chat::Status { code, body }) => respond(&mut socket, code, &body).await,
                Some(Chat::Hang) => {
                    let mut sink = [0u8; 1024];
                    while socket.read(&mut sink).await.unwrap_or(0) > 0 {}
                    lock().hangs_closed += 1;
                    closed.notify_waiters();
                    Ok(())
                }
                Some(chat) => stream_chat(&mut socket, chat, &model, &state).await,
            }
        }
        _ => respond(&mut socket, 404, r#"{"error":"not found"}"#).await,
    }
}
