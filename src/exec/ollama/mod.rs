//! The Ollama executor (protocol §11.3): `POST {endpoint}/api/chat` with `stream: true`, the
//! NDJSON answer read as it arrives, each piece of text streamed as a `token` event.
//!
//! Unlike Node's, it fails what is not a finished answer: an `{"error": ...}` line, a line that is
//! not JSON, or a stream that ends before `done` is a failure saying what arrived. A refused
//! connection, a connection that breaks before the response, and HTTP 5xx are tried again (3
//! attempts, 1 s then 2 s apart), each retry shown as an `error` event then a `status` event.
//! The output kept is bounded ([`MAX_OUTPUT`], with a note when cut) and so is a line.
//! Dropping the future closes the connection (see [`http`]).
//!
//! [`probe`] (`GET /api/tags`) and [`vram_used`] (`GET /api/ps`) serve routing and
//! `resource_report`.

/// The one HTTP client, moved to `crate::http`; kept here under its old path for its users.
pub use crate::http;
#[cfg(test)]
mod tests;

use crate::exec::direct::{EventKind, ExecError, ExecEvent, ExecEvents, ExecOutput, Job};
use http::{BaseUrl, Response};
use hyper::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// The model asked for when neither the routing nor the config names one (Node's default).
pub const DEFAULT_MODEL: &str = "llama3.2:latest";
/// Ollama's port, used when an endpoint names none.
pub const DEFAULT_PORT: u16 = 11434;
/// The most output text kept (1 MiB); what follows is counted and noted, not kept.
pub const MAX_OUTPUT: usize = 1 << 20;
/// The longest NDJSON line accepted (Ollama's lines are a few hundred bytes).
pub const MAX_LINE: usize = 256 * 1024;
/// Attempts at `/api/chat` before the execution fails.
pub const ATTEMPTS: usize = 3;
/// The system message's first line when the task has context (§11.3).
const SYSTEM_PREAMBLE: &str = "You are a helpful coding assistant.";

/// How hard the executor tries (the defaults in [`POLICY`]; tests shorten the waits).
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    /// The waits before attempts 2 and 3.
    pub backoff: [Duration; ATTEMPTS - 1],
    /// The bound on one TCP connect.
    pub connect_timeout: Duration,
    /// The most output text kept.
    pub max_output: usize,
}

/// The executor's policy: 1 s then 2 s between attempts, 10 s to connect, 1 MiB of output.
pub(crate) const POLICY: Policy = Policy {
    backoff: [Duration::from_secs(1), Duration::from_secs(2)],
    connect_timeout: Duration::from_secs(10),
    max_output: MAX_OUTPUT,
};

/// The base URL for an endpoint as the hub names it (§11.3): `"host:port"` becomes
/// `http://host:port`; without a numeric port, the whole string is the host and the port is
/// 11434. An `http://` URL is accepted as well (config `ollama_url`), with the same default port.
pub fn endpoint_url(endpoint: &str) -> String {
    let rest = endpoint.trim();
    let rest = rest.strip_prefix("http://").unwrap_or(rest);
    let rest = rest.trim_end_matches('/');
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let has_port = match authority.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    };
    if has_port {
        format!("http://{authority}{path}")
    } else {
        format!("http://{authority}:{DEFAULT_PORT}{path}")
    }
}

/// The `/api/chat` request body (§11.3): the model, an optional system message (the
/// preamble, then the task's context lines, only when it has any), then the user prompt (the
/// description, or "Complete this task." when empty), and `stream: true`.
pub fn request_body(job: &Job, model: &str) -> Value {
    let mut messages = Vec::new();
    let context = job.context_lines();
    if !context.is_empty() {
        let mut system = SYSTEM_PREAMBLE.to_owned();
        for line in context {
            system.push('\n');
            system.push_str(&line);
        }
        messages.push(json!({"role": "system", "content": system}));
    }
    let prompt = if job.description.trim().is_empty() {
        "Complete this task."
    } else {
        job.description.as_str()
    };
    messages.push(json!({"role": "user", "content": prompt}));
    json!({"model": model, "messages": messages, "stream": true})
}

/// Runs `job` on the Ollama at `job.endpoint` (a base URL; see [`endpoint_url`]) with
/// `job.model` (else [`DEFAULT_MODEL`]), streaming its text as `token` events.
pub async fn run(job: &Job, events: &ExecEvents) -> Result<ExecOutput, ExecError> {
    run_with(job, events, &POLICY).await
}

fn emit(events: &ExecEvents, kind: EventKind, text: String, model: Option<&str>) {
    let _ = events.send(ExecEvent {
        kind,
        text,
        model: model.map(str::to_owned),
    });
}

/// The first `n` characters of `text`.
fn first_chars(text: &str, n: usize) -> &str {
    match text.char_indices().nth(n) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// [`run`] with an explicit policy.
pub(crate) async fn run_with(
    job: &Job,
    events: &ExecEvents,
    policy: &Policy,
) -> Result<ExecOutput, ExecError> {
    let endpoint = job.endpoint.as_deref().ok_or_else(|| {
        ExecError(
            "no Ollama endpoint for this task: the routing named none and config ollama_url is not set"
                .to_owned(),
        )
    })?;
    let endpoint = endpoint.trim_end_matches('/');
    let base = BaseUrl::parse(endpoint).map_err(|e| ExecError(format!("Ollama endpoint {e}")))?;
    let model = job.model.as_deref().unwrap_or(DEFAULT_MODEL);
    let body = serde_json::to_vec(&request_body(job, model)).unwrap_or_default();
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            let wait = policy.backoff[attempt - 2];
            emit(
                events,
                EventKind::Error,
                format!(
                    "Ollama at {endpoint}: attempt {} of {ATTEMPTS} failed: {last}; retrying in {} ms",
                    attempt - 1,
                    wait.as_millis()
                ),
                None,
            );
            tokio::time::sleep(wait).await;
            emit(
                events,
                EventKind::Status,
                format!("POST {endpoint}/api/chat (model {model}): attempt {attempt} of {ATTEMPTS}"),
                None,
            );
        }
        let sent = http::request(
            &base,
            Method::POST,
            "/api/chat",
            Some(body.clone()),
            policy.connect_timeout,
        )
        .await;
        match sent {
            Err(e) => last = e.to_string(),
            Ok(mut response) if response.status != 200 => {
                // A body that never ends must not stall the attempts: it is waited for briefly.
                let text = tokio::time::timeout(policy.connect_timeout, response.text(64 * 1024))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                last = format!("HTTP {}: {}", response.status, first_chars(&text, 500));
                if response.status < 500 {
                    return Err(ExecError(format!(
                        "Ollama at {endpoint} answered POST /api/chat (model {model}) with {last}"
                    )));
                }
            }
            Ok(response) => return read_stream(response, endpoint, model, events, policy).await,
        }
    }
    Err(ExecError(format!(
        "Ollama at {endpoint} failed {ATTEMPTS} attempts at POST /api/chat (model {model}); the last: {last}"
    )))
}

/// One NDJSON line of `/api/chat`'s answer, as far as it is read (other fields are ignored).
#[derive(serde::Deserialize)]
struct ChatLine {
    message: Option<ChatMessage>,
    done: Option<bool>,
    error: Option<Value>,
    prompt_eval_count: Option<u64>,
    eval_count: Option<u64>,
}

/// A line's `message`.
#[derive(serde::Deserialize)]
struct ChatMessage {
    content: Option<String>,
}

/// The answer as it is read: the text kept, what was cut, what arrived.
struct Answer<'a> {
    endpoint: &'a str,
    model: &'a str,
    max_output: usize,
    output: String,
    /// Bytes of text not kept (past `max_output`).
    cut: usize,
    /// Non-empty lines read.
    lines: usize,
}

impl Answer<'_> {
    fn note_cut(&mut self) {
        if self.cut > 0 {
            self.output.push_str(&format!(
                "\n[output cut at {} bytes: {} more bytes not kept]",
                self.max_output, self.cut
            ));
        }
    }

    /// What arrived so far, for an error.
    fn so_far(&self) -> String {
        format!(
            "{} lines and {} bytes of text had arrived",
            self.lines,
            self.output.len() + self.cut
        )
    }

    /// One NDJSON line: `Some((prompt_eval_count, eval_count))` when it is the `done` line.
    fn line(&mut self, line: &[u8], events: &ExecEvents) -> Result<Option<(u64, u64)>, ExecError> {
        let line = String::from_utf8_lossy(line);
        let line = line.trim();
        if line.is_empty() {
            return Ok(None);
        }
        self.lines += 1;
        let parsed: ChatLine = serde_json::from_str(line).map_err(|e| {
            let what = if e.is_syntax() || e.is_eof() {
                "a line that is not JSON"
            } else {
                "a line that is not a chat answer"
            };
            ExecError(format!(
                "Ollama at {} sent {what} ({e}; {}): {}",
                self.endpoint,
                self.so_far(),
                first_chars(line, 200)
            ))
        })?;
        if let Some(error) = parsed.error {
            let error = error
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| error.to_string());
            return Err(ExecError(format!(
                "Ollama at {} reported an error (model {}; {}): {}",
                self.endpoint,
                self.model,
                self.so_far(),
                first_chars(&error, 500)
            )));
        }
        let content = parsed.message.and_then(|m| m.content).unwrap_or_default();
        if !content.is_empty() {
            let room = self.max_output.saturating_sub(self.output.len());
            if content.len() <= room {
                self.output.push_str(&content);
            } else {
                let mut keep = room;
                while !content.is_char_boundary(keep) {
                    keep -= 1;
                }
                self.output.push_str(&content[..keep]);
                self.cut += content.len() - keep;
            }
            emit(events, EventKind::Token, content, Some(self.model));
        }
        if parsed.done == Some(true) {
            return Ok(Some((
                parsed.prompt_eval_count.unwrap_or(0),
                parsed.eval_count.unwrap_or(0),
            )));
        }
        Ok(None)
    }
}

/// Reads the NDJSON answer to its `done` line.
async fn read_stream(
    mut response: Response,
    endpoint: &str,
    model: &str,
    events: &ExecEvents,
    policy: &Policy,
) -> Result<ExecOutput, ExecError> {
    let mut answer = Answer {
        endpoint,
        model,
        max_output: policy.max_output,
        output: String::new(),
        cut: 0,
        lines: 0,
    };
    let mut line: Vec<u8> = Vec::new();
    let done = loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => match answer.line(&line, events)? {
                Some(done) => break done,
                None => {
                    return Err(ExecError(format!(
                        "Ollama at {endpoint} ended its answer before \"done\" (model {model}; {})",
                        answer.so_far()
                    )))
                }
            },
            Err(e) => {
                return Err(ExecError(format!(
                    "the answer from Ollama at {endpoint} broke off (model {model}; {}): {e}",
                    answer.so_far()
                )))
            }
        };
        let mut rest = &chunk[..];
        let mut finished = None;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            if line.len() + i > MAX_LINE {
                return Err(too_long(endpoint, &answer));
            }
            line.extend_from_slice(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(done) = answer.line(&line, events)? {
                finished = Some(done);
                break;
            }
            line.clear();
        }
        if let Some(done) = finished {
            break done;
        }
        if line.len() + rest.len() > MAX_LINE {
            return Err(too_long(endpoint, &answer));
        }
        line.extend_from_slice(rest);
    };
    answer.note_cut();
    Ok(ExecOutput {
        output: answer.output,
        model_used: model.to_owned(),
        tokens_in: done.0,
        tokens_out: done.1,
        ..ExecOutput::default()
    })
}

fn too_long(endpoint: &str, answer: &Answer<'_>) -> ExecError {
    ExecError(format!(
        "Ollama at {endpoint} sent a line longer than {MAX_LINE} bytes ({})",
        answer.so_far()
    ))
}

/// A GET with a deadline on the whole exchange: the body as text (at most 1 MiB).
async fn get(base_url: &str, path: &str, deadline: Duration) -> Result<String, String> {
    let base = BaseUrl::parse(base_url)?;
    let work = async {
        let mut response = http::request(&base, Method::GET, path, None, deadline)
            .await
            .map_err(|e| e.to_string())?;
        let text = response.text(1 << 20).await?;
        if response.status != 200 {
            return Err(format!("HTTP {}: {}", response.status, first_chars(&text, 200)));
        }
        Ok(text)
    };
    match tokio::time::timeout(deadline, work).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} s", deadline.as_secs())),
    }
}

/// Asks the Ollama at `endpoint` (a base URL) for its models (`GET /api/tags`, 3 s): their
/// names, or what went wrong (naming the endpoint).
pub async fn probe(endpoint: &str) -> Result<Vec<String>, String> {
    let endpoint = endpoint.trim_end_matches('/');
    let text = get(endpoint, "/api/tags", Duration::from_secs(3))
        .await
        .map_err(|e| format!("{endpoint}/api/tags: {e}"))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{endpoint}/api/tags: the answer is not JSON ({e})"))?;
    let models = value
        .get("models")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{endpoint}/api/tags: the answer has no \"models\" list"))?;
    Ok(models
        .iter()
        .filter_map(|m| m.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect())
}

/// The VRAM the loaded models use, from the Ollama at `ollama_url` (`GET /api/ps`, 5 s): the sum
/// of `models[].size_vram`; `None` on any failure (§11.3, `resource_report`).
pub async fn vram_used(ollama_url: &str) -> Option<u64> {
    let text = get(ollama_url, "/api/ps", Duration::from_secs(5)).await.ok()?;
    let value: Value = serde_json::from_str(&text).ok()?;
    let models = value.get("models")?.as_array()?;
    Some(
        models
            .iter()
            .filter_map(|m| m.get("size_vram").and_then(Value::as_u64))
            .sum(),
    )
}
