//! The Claude CLI executor (`target_type: "claude"`, protocol §11.4): runs `claude_command`
//! directly with an argument vector, never through a shell (the prompt is one argument, byte for
//! byte), `-p --output-format stream-json --verbose [--model M] -- PROMPT`: `--model M` only when
//! a real model is named (the hub's `selected_model` `"claude"` is a placeholder and is left out),
//! and the prompt last, after `--`, so a description that starts with `-` (a markdown list, or
//! `--dangerously-skip-permissions`) is the prompt, never an option.
//!
//! The process runs in the task's folder, in its own process group, killed with its group when
//! the future is dropped (a [`GroupChild`]). Its stdout is read as JSON lines, incrementally and
//! bounded ([`StreamParser`]): text from `assistant` messages and `content_block_delta` text
//! deltas (bare or inside `stream_event`), then the final `result` event's `result`, `is_error`,
//! `usage` and `total_cost_usd`; the model from the `system` init event or the messages.
//!
//! Retries (§11.4 suggests a few): a run that exits non-zero, is killed by a signal or ends
//! without any answer is tried again, 4 attempts in all, sleeping 2, 4 and 8 s before attempts
//! 2-4 (an API hiccup, a rate limit, a crash). Not retried: a command that is not found or
//! cannot start (config: trying again cannot help), and a `result` with `is_error: true` (the
//! CLI ran and said why it failed; running the same prompt again costs money and tends to fail
//! the same way).

use super::direct::{EventKind, ExecError, ExecEvent, ExecEvents, ExecOutput, Job};
use super::process::child_command;
use super::shell::{tail_chars, Capture, GroupChild, Waited, EVENT_LIMIT};
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// The sleeps before attempts 2, 3 and 4 of a run that failed in a way that may pass.
pub const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

/// The longest stdout line read as an event; longer lines are skipped (and counted).
pub const MAX_LINE: usize = 4 * 1024 * 1024;

/// The most text kept as the output; the rest is cut, with a note.
pub const MAX_OUTPUT: usize = 1024 * 1024;

/// How the Claude CLI is run: from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaudeSettings {
    /// The program (config `claude_command`, default `"claude"`): a name looked up on PATH, or
    /// a path. Windows: it must be an executable, not a `.cmd` (that would need a shell).
    pub command: String,
    /// The model to ask for (config `claude_model`); `None` leaves it to the routing or the CLI.
    pub model: Option<String>,
    /// The sleeps before each retry ([`RETRY_DELAYS`]; tests shorten them). Attempts in all:
    /// one more than its length.
    pub retry_delays: Vec<Duration>,
}

impl ClaudeSettings {
    /// Settings for `command` and `model`, with the default retries.
    pub fn new(command: impl Into<String>, model: Option<String>) -> ClaudeSettings {
        ClaudeSettings {
            command: command.into(),
            model,
            retry_delays: RETRY_DELAYS.to_vec(),
        }
    }
}

impl Default for ClaudeSettings {
    fn default() -> ClaudeSettings {
        ClaudeSettings::new("claude", None)
    }
}

/// The model to pass as `--model`: config `claude_model`, else the job's model, else the
/// routing's `selected_model`; the first that is a real name (not empty, not the hub's
/// placeholder `"claude"`). `None`: no `--model`, the CLI picks.
pub fn requested_model(job: &Job, settings: &ClaudeSettings) -> Option<String> {
    [
        settings.model.as_deref(),
        job.model.as_deref(),
        job.routing.selected_model.as_deref(),
    ]
    .into_iter()
    .flatten()
    .map(str::trim)
    .find(|m| !m.is_empty() && !m.eq_ignore_ascii_case("claude"))
    .map(str::to_owned)
}

/// The argument vector: `-p --output-format stream-json --verbose [--model M] -- PROMPT` (the
/// prompt after `--`: an operand even when it starts with `-`).
pub fn arguments(prompt: &str, model: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "-p".to_owned(),
        "--output-format".to_owned(),
        "stream-json".to_owned(),
        "--verbose".to_owned(),
    ];
    if let Some(m) = model {
        args.push("--model".to_owned());
        args.push(m.to_owned());
    }
    args.push("--".to_owned());
    args.push(prompt.to_owned());
    args
}

/// Run the Claude CLI on the job's prompt ([`Job::prompt`]) in `job.workdir`: streamed text as
/// [`EventKind::Token`] events, stderr as [`EventKind::Stderr`] events; the output is the
/// streamed text (else the `result` text), with tokens, the reported cost and the model that
/// answered. Fails on `is_error`, a non-zero exit (after retries, see the module doc), or a
/// command that cannot be found. Dropping the future kills the CLI's process group.
pub async fn run(job: &Job, events: &ExecEvents, settings: &ClaudeSettings) -> Result<ExecOutput, ExecError> {
    let model = requested_model(job, settings);
    let args = arguments(&job.prompt(), model.as_deref());
    let attempts = settings.retry_delays.len() + 1;
    let mut attempt = 1;
    loop {
        match attempt_once(job, events, settings, &args, model.as_deref()).await {
            Ok(out) => return Ok(out),
            Err(Failure::Final(e)) => return Err(e),
            Err(Failure::Transient(e)) if attempt >= attempts => return Err(e),
            Err(Failure::Transient(e)) => {
                let delay = settings.retry_delays[attempt - 1];
                attempt += 1;
                send(events, EventKind::Error, e.0, None);
                send(
                    events,
                    EventKind::Status,
                    format!(
                        "claude: attempt {attempt} of {attempts} in {} ms",
                        delay.as_millis()
                    ),
                    None,
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Why one attempt failed, and whether another may help.
enum Failure {
    /// Trying again may help (a non-zero exit, no answer).
    Transient(ExecError),
    /// It will not (not found, `is_error`).
    Final(ExecError),
}

fn send(events: &ExecEvents, kind: EventKind, text: String, model: Option<String>) {
    let _ = events.send(ExecEvent { kind, text, model });
}

async fn attempt_once(
    job: &Job,
    events: &ExecEvents,
    settings: &ClaudeSettings,
    args: &[String],
    requested: Option<&str>,
) -> Result<ExecOutput, Failure> {
    if !job.workdir.is_dir() {
        return Err(Failure::Final(ExecError(format!(
            "cannot run claude: the task's folder {} does not exist",
            job.workdir.display()
        ))));
    }
    let mut cmd = child_command(&settings.command);
    cmd.args(args).current_dir(&job.workdir);
    let mut child = GroupChild::spawn(&mut cmd).map_err(|e| {
        Failure::Final(ExecError(if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "claude_command \"{}\" was not found (not on PATH, or no such file): install the \
                 Claude Code CLI, or set \"claude_command\" in config.json to the path of its executable",
                settings.command
            )
        } else {
            format!(
                "cannot start claude_command \"{}\": {e} (check \"claude_command\" in config.json)",
                settings.command
            )
        }))
    })?;

    let mut parser = StreamParser::new();
    let mut err = Capture::new(EventKind::Stderr, events);
    let (stdout, stderr) = child.take_pipes();
    let waited = {
        let parser = &mut parser;
        let readers = async {
            let lines = read_lines(stdout, |line| {
                for (text, model) in parser.line(line) {
                    send(events, EventKind::Token, text, model);
                }
            });
            tokio::join!(lines, err.read_all(stderr));
        };
        child.wait_draining(readers, None).await
    };
    let stderr = err.text();
    let status = match waited {
        Waited::Exited(status) => status,
        Waited::TimedOut => unreachable!("no timeout was given"),
        Waited::Failed(e) => {
            return Err(Failure::Transient(ExecError(format!(
                "cannot wait for claude: {e}"
            ))));
        }
    };
    if let Some(result) = parser.result.as_ref().filter(|r| r.is_error) {
        let text = result
            .text
            .clone()
            .filter(|t| !t.trim().is_empty())
            .or_else(|| result.subtype.clone())
            .unwrap_or_else(|| "no reason given".to_owned());
        return Err(Failure::Final(ExecError(format!(
            "claude reported an error: {text}"
        ))));
    }
    match status.code() {
        Some(0) => {}
        Some(code) => {
            return Err(Failure::Transient(ExecError(format!(
                "claude exited with code {code}: {}",
                tail_chars(stderr.trim(), 500)
            ))));
        }
        None => {
            return Err(Failure::Transient(ExecError(format!(
                "claude was killed by a signal: {}",
                tail_chars(stderr.trim(), 500)
            ))));
        }
    }
    let Some(output) = parser.output() else {
        return Err(Failure::Transient(ExecError(format!(
            "claude exited without an answer (no text and no \"result\" event on stdout): {}",
            tail_chars(stderr.trim(), 500)
        ))));
    };
    let result = parser.result.unwrap_or_default();
    Ok(ExecOutput {
        output,
        model_used: parser
            .model
            .or_else(|| requested.map(str::to_owned))
            .unwrap_or_else(|| "claude".to_owned()),
        tokens_in: result.tokens_in,
        tokens_out: result.tokens_out,
        reported_cost_usd: result.cost_usd,
        extra: Default::default(),
    })
}

/// Reads `from` line by line, each line at most [`MAX_LINE`] bytes (longer ones are skipped),
/// handing each to `on_line`.
async fn read_lines(from: Option<impl AsyncRead + Unpin>, mut on_line: impl FnMut(&[u8])) {
    let Some(from) = from else { return };
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    let mut skipping = false;
    loop {
        let (used, found) = {
            let buf = match reader.fill_buf().await {
                Ok([]) | Err(_) => break,
                Ok(buf) => buf,
            };
            let end = buf.iter().position(|b| *b == b'\n');
            let chunk = &buf[..end.unwrap_or(buf.len())];
            if !skipping && line.len() + chunk.len() > MAX_LINE {
                skipping = true;
                line.clear();
            }
            if !skipping {
                line.extend_from_slice(chunk);
            }
            (chunk.len() + usize::from(end.is_some()), end.is_some())
        };
        reader.consume(used);
        if found {
            if !skipping {
                on_line(&line);
            }
            skipping = false;
            line.clear();
        }
    }
    if !skipping && !line.is_empty() {
        on_line(&line);
    }
}

/// The final `{"type":"result"}` event's fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultEvent {
    /// `result`: the final answer's text.
    pub text: Option<String>,
    /// `is_error`.
    pub is_error: bool,
    /// `subtype` (`success`, `error_max_turns`, ...).
    pub subtype: Option<String>,
    /// `usage.input_tokens`.
    pub tokens_in: u64,
    /// `usage.output_tokens`.
    pub tokens_out: u64,
    /// `total_cost_usd`.
    pub cost_usd: Option<f64>,
}

/// The CLI's `stream-json` output, one line at a time (sans-IO): collects the text (bounded by
/// [`MAX_OUTPUT`]), the model and the result event.
#[derive(Debug, Default)]
pub struct StreamParser {
    /// The streamed text so far.
    pub text: String,
    /// Whether text was cut at [`MAX_OUTPUT`].
    pub cut: bool,
    /// The model that answers (the `system` init event's, else a message's).
    pub model: Option<String>,
    /// The last `result` event.
    pub result: Option<ResultEvent>,
    /// Token text already sent as events (they stop at [`EVENT_LIMIT`]).
    streamed: usize,
    /// Text deltas arrived for the message being written (its `assistant` event repeats them).
    deltas: bool,
    /// The next text starts a new message (separated from the previous one by a blank line).
    new_message: bool,
}

impl StreamParser {
    /// A parser before the first line.
    pub fn new() -> StreamParser {
        StreamParser {
            new_message: true,
            ..StreamParser::default()
        }
    }

    /// Takes one stdout line; returns the token events it gives (text, model). Lines that are
    /// not JSON objects are ignored.
    pub fn line(&mut self, line: &[u8]) -> Vec<(String, Option<String>)> {
        let Ok(Value::Object(event)) = serde_json::from_slice::<Value>(line) else {
            return Vec::new();
        };
        let mut tokens = Vec::new();
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "system" => {
                if let Some(m) = event.get("model").and_then(Value::as_str) {
                    self.model = Some(m.to_owned());
                }
            }
            "assistant" => {
                let message = event.get("message");
                if self.model.is_none() {
                    self.model = message
                        .and_then(|m| m.get("model"))
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                }
                if !self.deltas {
                    let blocks = message.and_then(|m| m.get("content")).and_then(Value::as_array);
                    for block in blocks.into_iter().flatten() {
                        if block.get("type").and_then(Value::as_str) == Some("text") {
                            if let Some(t) = block.get("text").and_then(Value::as_str) {
                                self.push(t, &mut tokens);
                            }
                        }
                    }
                }
                self.deltas = false;
                self.new_message = true;
            }
            "content_block_delta" => self.delta(&Value::Object(event.clone()), &mut tokens),
            "stream_event" => {
                if let Some(inner) = event.get("event") {
                    match inner.get("type").and_then(Value::as_str) {
                        Some("content_block_delta") => self.delta(inner, &mut tokens),
                        Some("message_start") if self.model.is_none() => {
                            self.model = inner
                                .pointer("/message/model")
                                .and_then(Value::as_str)
                                .map(str::to_owned);
                        }
                        _ => {}
                    }
                }
            }
            "result" => {
                let usage = |k: &str| event.get("usage").and_then(|u| u.get(k)).and_then(Value::as_u64);
                self.result = Some(ResultEvent {
                    text: event.get("result").and_then(Value::as_str).map(str::to_owned),
                    is_error: event.get("is_error").and_then(Value::as_bool).unwrap_or(false),
                    subtype: event.get("subtype").and_then(Value::as_str).map(str::to_owned),
                    tokens_in: usage("input_tokens").unwrap_or(0),
                    tokens_out: usage("output_tokens").unwrap_or(0),
                    cost_usd: event.get("total_cost_usd").and_then(Value::as_f64),
                });
            }
            _ => {}
        }
        tokens
    }

    fn delta(&mut self, event: &Value, tokens: &mut Vec<(String, Option<String>)>) {
        let delta = event.get("delta");
        if delta.and_then(|d| d.get("type")).and_then(Value::as_str) == Some("text_delta") {
            if let Some(t) = delta.and_then(|d| d.get("text")).and_then(Value::as_str) {
                self.push(t, tokens);
                self.deltas = true;
            }
        }
    }

    fn push(&mut self, text: &str, tokens: &mut Vec<(String, Option<String>)>) {
        if text.is_empty() {
            return;
        }
        let mut piece = String::new();
        if self.new_message && !self.text.is_empty() && !self.text.ends_with('\n') {
            piece.push_str("\n\n");
        }
        self.new_message = false;
        piece.push_str(text);
        if self.streamed < EVENT_LIMIT {
            self.streamed += piece.len();
            tokens.push((piece.clone(), self.model.clone()));
        }
        let room = MAX_OUTPUT.saturating_sub(self.text.len());
        if piece.len() > room {
            let mut end = room;
            while !piece.is_char_boundary(end) {
                end -= 1;
            }
            piece.truncate(end);
            self.cut = true;
        }
        self.text.push_str(&piece);
    }

    /// The answer: the streamed text (with a note when cut), else the `result` text; `None`
    /// when there is neither.
    pub fn output(&self) -> Option<String> {
        if !self.text.trim().is_empty() {
            let mut text = self.text.clone();
            if self.cut {
                text.push_str(&format!("\n[cut: the answer was longer than {MAX_OUTPUT} bytes]"));
            }
            return Some(text);
        }
        self.result
            .as_ref()
            .and_then(|r| r.text.clone())
            .filter(|t| !t.trim().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::direct::Routing;
    use serde_json::json;

    fn feed(lines: &[Value]) -> (StreamParser, Vec<(String, Option<String>)>) {
        let mut p = StreamParser::new();
        let mut tokens = Vec::new();
        for l in lines {
            tokens.extend(p.line(l.to_string().as_bytes()));
        }
        (p, tokens)
    }

    #[test]
    fn the_real_cli_stream_gives_text_model_tokens_and_cost() {
        let (p, tokens) = feed(&[
            json!({"type": "system", "subtype": "init", "model": "claude-sonnet-4-5-20250929"}),
            json!({"type": "assistant", "message": {"model": "x", "content": [
                {"type": "text", "text": "Looking."}, {"type": "tool_use", "name": "Read"}]}}),
            json!({"type": "user", "message": {"content": [{"type": "tool_result"}]}}),
            json!({"type": "assistant", "message": {"content": [{"type": "text", "text": "Done."}]}}),
            json!({"type": "result", "subtype": "success", "is_error": false, "result": "Done.",
                   "total_cost_usd": 0.0123, "usage": {"input_tokens": 12, "output_tokens": 34}}),
        ]);
        assert_eq!(p.output().as_deref(), Some("Looking.\n\nDone."));
        assert_eq!(p.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[1].1.as_deref(), Some("claude-sonnet-4-5-20250929"));
        let r = p.result.unwrap();
        assert_eq!((r.tokens_in, r.tokens_out, r.cost_usd), (12, 34, Some(0.0123)));
    }

    #[test]
    fn deltas_are_not_doubled_by_the_message_that_repeats_them() {
        let delta = |t: &str| {
            json!({"type": "stream_event", "event": {"type": "content_block_delta",
            "delta": {"type": "text_delta", "text": t}}})
        };
        let (p, tokens) = feed(&[
            json!({"type": "stream_event", "event": {"type": "message_start", "message": {"model": "m1"}}}),
            delta("Hel"),
            delta("lo"),
            json!({"type": "assistant", "message": {"content": [{"type": "text", "text": "Hello"}]}}),
            json!({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Bye"}}),
            json!("not an object"),
        ]);
        assert_eq!(p.text, "Hello\n\nBye");
        assert_eq!(tokens.len(), 3);
        assert_eq!(p.model.as_deref(), Some("m1"));
    }

    #[test]
    fn the_result_text_answers_when_nothing_streamed_and_the_output_is_bounded() {
        let (p, _) = feed(&[json!({"type": "result", "result": "only this"})]);
        assert_eq!(p.output().as_deref(), Some("only this"));
        let (p, _) = feed(&[json!({"type": "result", "result": ""})]);
        assert_eq!(p.output(), None);
        let big = "é".repeat(MAX_OUTPUT);
        let (p, tokens) = feed(&[json!({"type": "assistant", "message": {"content": [
            {"type": "text", "text": big}]}})]);
        assert!(p.cut && p.text.len() <= MAX_OUTPUT);
        assert_eq!(tokens.len(), 1);
        assert!(p.output().unwrap().ends_with("bytes]"));
    }

    #[test]
    fn the_placeholder_model_is_never_passed() {
        let mut job = Job {
            task_id: "t".into(),
            description: "d".into(),
            context: Default::default(),
            metadata: json!({}),
            routing: Routing {
                selected_model: Some("claude".into()),
                ..Routing::default()
            },
            endpoint: None,
            model: Some("Claude".into()),
            workdir: ".".into(),
            timeout: Duration::from_secs(1),
        };
        let mut settings = ClaudeSettings::default();
        assert_eq!(requested_model(&job, &settings), None);
        assert_eq!(
            arguments("p q", None),
            ["-p", "--output-format", "stream-json", "--verbose", "--", "p q"]
        );
        job.routing.selected_model = Some("claude-opus-4.5".into());
        assert_eq!(
            requested_model(&job, &settings).as_deref(),
            Some("claude-opus-4.5")
        );
        settings.model = Some("claude-haiku-4.5".into());
        assert_eq!(
            requested_model(&job, &settings).as_deref(),
            Some("claude-haiku-4.5")
        );
        assert_eq!(arguments("p", Some("m"))[4..], ["--model", "m", "--", "p"]);
        assert_eq!(arguments("-x", None)[4..], ["--", "-x"]);
    }

    #[tokio::test]
    async fn long_lines_are_skipped_and_the_rest_read() {
        let mut data = vec![b'x'; MAX_LINE + 1];
        data.extend_from_slice(b"\nsecond\nlast");
        let mut lines = Vec::new();
        read_lines(Some(&data[..]), |l| {
            lines.push(String::from_utf8_lossy(l).into_owned())
        })
        .await;
        assert_eq!(lines, ["second", "last"]);
    }
}
