//! The contract every direct executor (Ollama, the Claude CLI, the shell tier) honours, and the
//! plain values that cross it. Protocol reference §11.2-§11.7.
//!
//! An executor is one async function, `run(&Job, &ExecEvents) -> Result<ExecOutput, ExecError>`.
//! It streams what happens as [`ExecEvent`]s (the relay batches them into `task_progress` frames
//! with an `execution_event`), and it ends with the output or with a reason that reaches the hub
//! as `task_failed` (cut to 2 000 characters), never as a `task_complete` saying "failed".
//! Dropping the future stops the execution for real: the HTTP request is dropped, the process
//! group is killed (executors that start processes hold a guard that kills on drop). That is how
//! a timeout and a cancel stop an execution: the runner drops it.
//!
//! Hub text (the description, the metadata) reaches a program only as one argument or as a
//! request body, never through a shell; the shell tier runs `metadata.shell_command` only when
//! the operator set `allow_hub_commands`, and the runner checks that before it calls the shell.

use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// Where a task's routing sends it (`routing_decision.target_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `ollama`: a local model over Ollama's HTTP API.
    Ollama,
    /// `claude`: the Claude Code CLI.
    Claude,
    /// `sidecar`: the trivial tier, `metadata.shell_command` through the platform shell.
    Shell,
}

impl Target {
    /// The `target_type` string the hub sends for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Ollama => "ollama",
            Target::Claude => "claude",
            Target::Shell => "sidecar",
        }
    }

    /// The target for a `target_type` string; `None` for `wake`, absent or unknown ones.
    pub fn parse(target_type: &str) -> Option<Target> {
        match target_type {
            "ollama" => Some(Target::Ollama),
            "claude" => Some(Target::Claude),
            "sidecar" => Some(Target::Shell),
            _ => None,
        }
    }
}

/// The hub's `routing_decision` as far as execution needs it (§11.1: 8 keys on the wire).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routing {
    /// `target_type` as sent (`sidecar`, `ollama`, `claude`, `wake`, ...).
    pub target_type: Option<String>,
    /// `effective_tier`: `trivial`, `standard` or `complex`.
    pub effective_tier: Option<String>,
    /// `selected_endpoint`: `"host:port"` of a registered Ollama, or `"claude_api"`.
    pub selected_endpoint: Option<String>,
    /// `selected_model`: the endpoint's first model, or the placeholder `"claude"`.
    pub selected_model: Option<String>,
    /// `fallback_used`: no healthy endpoint served the tier.
    pub fallback_used: bool,
}

impl Routing {
    /// Reads `routing_decision` from a task's fields (`None` when absent or not an object).
    pub fn from_task(extra: &Map<String, Value>) -> Option<Routing> {
        let rd = extra.get("routing_decision")?.as_object()?;
        let text = |k: &str| rd.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(Routing {
            target_type: text("target_type"),
            effective_tier: text("effective_tier"),
            selected_endpoint: text("selected_endpoint"),
            selected_model: text("selected_model"),
            fallback_used: rd.get("fallback_used").and_then(Value::as_bool).unwrap_or(false),
        })
    }

    /// The execution target, when the routing names one this sidecar can carry out.
    pub fn target(&self) -> Option<Target> {
        self.target_type.as_deref().and_then(Target::parse)
    }
}

/// One execution to carry out: what the executor needs, already chosen and resolved.
#[derive(Debug, Clone)]
pub struct Job {
    /// The hub's task id (for logs and progress only).
    pub task_id: String,
    /// The task's description (hub text: data only).
    pub description: String,
    /// `repo`, `branch`, `file_hints`, `success_criteria`, ... as the hub sent them.
    pub context: Map<String, Value>,
    /// The task's `metadata` (for the shell tier: `shell_command`, `timeout_ms`).
    pub metadata: Value,
    /// The routing the hub chose.
    pub routing: Routing,
    /// For Ollama: the base URL (`http://host:port`), resolved by the runner; otherwise unused.
    pub endpoint: Option<String>,
    /// The model to ask for (Ollama: required; Claude: `--model` only when set).
    pub model: Option<String>,
    /// The folder the execution works in (the task's workspace, else the sidecar's folder).
    pub workdir: PathBuf,
    /// How long the whole execution may take; the runner drops the future at this deadline, an
    /// executor may also use it for its own per-attempt bounds.
    pub timeout: Duration,
}

impl Job {
    /// The prompt for a model: the description (or "Complete this task." when empty), then a
    /// `Context:` block with `Repository:`, `Branch:`, `Relevant files:` and `Success criteria:`
    /// lines when the task has any (§11.4; file hints are shown by their `path` or as JSON, not
    /// as Node's `[object Object]`).
    pub fn prompt(&self) -> String {
        let mut prompt = if self.description.trim().is_empty() {
            "Complete this task.".to_owned()
        } else {
            self.description.clone()
        };
        let context = self.context_lines();
        if !context.is_empty() {
            prompt.push_str("\n\nContext:\n");
            prompt.push_str(&context.join("\n"));
        }
        prompt
    }

    /// The context lines alone (Ollama sends them as a system message, §11.3).
    pub fn context_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let text = |k: &str| {
            self.context
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        if let Some(repo) = text("repo") {
            lines.push(format!("Repository: {repo}"));
        }
        if let Some(branch) = text("branch") {
            lines.push(format!("Branch: {branch}"));
        }
        let list = |k: &str| {
            self.context
                .get(k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let hints: Vec<String> = list("file_hints")
            .iter()
            .map(|h| match h {
                Value::String(s) => s.clone(),
                Value::Object(o) => o
                    .get("path")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| h.to_string()),
                other => other.to_string(),
            })
            .collect();
        if !hints.is_empty() {
            lines.push(format!("Relevant files: {}", hints.join(", ")));
        }
        let criteria = list("success_criteria");
        if !criteria.is_empty() {
            lines.push("Success criteria:".to_owned());
            for c in criteria {
                match c {
                    Value::String(s) => lines.push(format!("- {s}")),
                    other => lines.push(format!("- {other}")),
                }
            }
        }
        lines
    }
}

/// The kind of an [`ExecEvent`] (`execution_event.event_type`, §11.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Streamed model text.
    Token,
    /// A status line (an attempt starting, a retry).
    Status,
    /// An error the execution survives (a retry follows).
    Error,
    /// A chunk of the shell command's stdout.
    Stdout,
    /// A chunk of a process's stderr.
    Stderr,
}

impl EventKind {
    /// The `event_type` string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Token => "token",
            EventKind::Status => "status",
            EventKind::Error => "error",
            EventKind::Stdout => "stdout",
            EventKind::Stderr => "stderr",
        }
    }
}

/// Something that happened during an execution, for the hub's dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecEvent {
    /// What kind of event.
    pub kind: EventKind,
    /// Its text (a token's text, a status line, a chunk of output).
    pub text: String,
    /// The model, when the event comes from one.
    pub model: Option<String>,
}

/// Where an executor sends its events (unbounded: the runner batches and bounds what it sends).
pub type ExecEvents = mpsc::UnboundedSender<ExecEvent>;

/// What a successful execution produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecOutput {
    /// The text the model wrote, or the command's stdout (bounded by the executor).
    pub output: String,
    /// The model that answered (`"none"` for the shell tier).
    pub model_used: String,
    /// Prompt tokens.
    pub tokens_in: u64,
    /// Completion tokens.
    pub tokens_out: u64,
    /// The cost the executor was told (the Claude CLI's `total_cost_usd`), if any.
    pub reported_cost_usd: Option<f64>,
    /// Further result fields the executor wants the hub to see (e.g. the shell's `exit_code`).
    pub extra: Map<String, Value>,
}

/// Why an execution failed: the text that goes to the hub in `task_failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecError(pub String);

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Prices per million tokens (input, output) for the Claude models §11.2 names.
fn claude_price(model: &str) -> Option<(f64, f64)> {
    let m = model.to_ascii_lowercase();
    if m.starts_with("claude-sonnet-4.5") {
        Some((3.0, 15.0))
    } else if m.starts_with("claude-opus-4.5") || m.starts_with("claude-opus-4.6") {
        Some((5.0, 25.0))
    } else if m.starts_with("claude-haiku-4.5") {
        Some((1.0, 5.0))
    } else {
        None
    }
}

/// The result object for `task_complete` (§11.7): `status`, `output`, `model_used`, `tokens_in`,
/// `tokens_out`, `execution_ms`, `estimated_cost_usd` and `equivalent_claude_cost_usd` (§11.2's
/// table: a priced Claude model costs its price; any other model is free, with its Sonnet
/// equivalent; a cost the CLI reported wins), plus the executor's extra fields.
pub fn result_object(out: ExecOutput, execution_ms: u64) -> Value {
    let tokens = (out.tokens_in + out.tokens_out) as f64;
    let sonnet = (out.tokens_in as f64 * 3.0 + out.tokens_out as f64 * 15.0) / 1e6;
    let (estimated, equivalent) = match (out.reported_cost_usd, claude_price(&out.model_used)) {
        (Some(cost), _) => (cost, Value::Null),
        (None, Some((pin, pout))) => (
            (out.tokens_in as f64 * pin + out.tokens_out as f64 * pout) / 1e6,
            Value::Null,
        ),
        (None, None) if tokens > 0.0 => (0.0, json!(sonnet)),
        (None, None) => (0.0, Value::Null),
    };
    // The output is moved, not copied (`json!` would copy it): it can be a megabyte, and this
    // runs at the memory peak of a long execution.
    let mut map = Map::new();
    map.insert("status".into(), Value::from("success"));
    map.insert("output".into(), Value::String(out.output));
    map.insert("model_used".into(), Value::String(out.model_used));
    map.insert("tokens_in".into(), Value::from(out.tokens_in));
    map.insert("tokens_out".into(), Value::from(out.tokens_out));
    map.insert("execution_ms".into(), Value::from(execution_ms));
    map.insert("estimated_cost_usd".into(), json!(estimated));
    map.insert("equivalent_claude_cost_usd".into(), equivalent);
    for (k, v) in out.extra {
        map.entry(k).or_insert(v);
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(description: &str, context: Value) -> Job {
        Job {
            task_id: "t1".into(),
            description: description.into(),
            context: context.as_object().cloned().unwrap_or_default(),
            metadata: json!({}),
            routing: Routing::default(),
            endpoint: None,
            model: None,
            workdir: PathBuf::from("."),
            timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_prompt_is_the_description_then_the_context() {
        assert_eq!(job("", json!({})).prompt(), "Complete this task.");
        assert_eq!(
            job("Do it; $(rm -rf /)", json!({})).prompt(),
            "Do it; $(rm -rf /)"
        );
        let j = job(
            "Fix it",
            json!({"repo": "r", "branch": null, "file_hints": [{"path": "a.rs"}, "b.rs"],
                   "success_criteria": ["tests pass"]}),
        );
        assert_eq!(
            j.prompt(),
            "Fix it\n\nContext:\nRepository: r\nRelevant files: a.rs, b.rs\nSuccess criteria:\n- tests pass"
        );
    }

    #[test]
    fn routing_reads_the_decision_and_its_target() {
        let extra = json!({"routing_decision": {"target_type": "ollama", "effective_tier": "standard",
            "selected_endpoint": "127.0.0.1:11434", "selected_model": "m", "fallback_used": false}});
        let r = Routing::from_task(extra.as_object().unwrap()).unwrap();
        assert_eq!(r.target(), Some(Target::Ollama));
        assert_eq!(r.selected_endpoint.as_deref(), Some("127.0.0.1:11434"));
        let wake = json!({"routing_decision": {"target_type": "wake"}});
        assert_eq!(
            Routing::from_task(wake.as_object().unwrap()).unwrap().target(),
            None
        );
        assert_eq!(Routing::from_task(&Map::new()), None);
        for t in [Target::Ollama, Target::Claude, Target::Shell] {
            assert_eq!(Target::parse(t.as_str()), Some(t));
        }
    }

    #[test]
    fn costs_follow_the_reference_table() {
        // §11.2, verified: 1200 in / 300 out on a model not in the table -> 0 and 0.0081.
        let out = ExecOutput {
            model_used: "claude".into(),
            tokens_in: 1200,
            tokens_out: 300,
            ..ExecOutput::default()
        };
        let r = result_object(out, 5);
        assert_eq!(r["estimated_cost_usd"], json!(0.0));
        assert!((r["equivalent_claude_cost_usd"].as_f64().unwrap() - 0.0081).abs() < 1e-12);
        let priced = ExecOutput {
            model_used: "claude-haiku-4.5".into(),
            tokens_in: 1_000_000,
            tokens_out: 1_000_000,
            ..ExecOutput::default()
        };
        let r = result_object(priced.clone(), 5);
        assert_eq!(r["estimated_cost_usd"], json!(6.0));
        assert_eq!(r["equivalent_claude_cost_usd"], Value::Null);
        let reported = ExecOutput {
            reported_cost_usd: Some(0.25),
            ..priced
        };
        assert_eq!(result_object(reported, 5)["estimated_cost_usd"], json!(0.25));
        assert_eq!(
            result_object(ExecOutput::default(), 5)["equivalent_claude_cost_usd"],
            Value::Null
        );
    }
}
