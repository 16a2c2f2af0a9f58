//! The plan for each target [`Runners::route`] may choose: whether it can run here (an Ollama
//! endpoint that answers, a `claude_command` found, a shell command allowed), and why not.

use super::direct::{Routing, Target};
use super::{Plan, Runners, DEFAULT_OLLAMA_MODEL, DEFAULT_OLLAMA_URL};
use crate::config::DirectExecution;
use crate::relay::task::TaskRecord;
use std::path::Path;

impl Runners {
    /// The plan for routing `r` to `t`, or what is missing: `Err(Some(url))` when a probe of
    /// `url` decides it, `Err(None)` when it cannot run here.
    pub(super) fn execute(
        &self,
        mode: DirectExecution,
        task: &TaskRecord,
        r: &Routing,
        t: Target,
    ) -> Result<Plan, Option<String>> {
        let c = &self.choice;
        let on = mode == DirectExecution::On;
        match t {
            Target::Ollama => {
                let selected = r.selected_endpoint.as_deref().and_then(endpoint_url);
                let hub_model = r.selected_model.clone().filter(|m| !m.is_empty());
                let mut candidates = Vec::new();
                if let Some(url) = selected {
                    candidates.push((
                        url,
                        hub_model.clone().or(c.ollama_model.clone()),
                        "the hub selected it",
                    ));
                }
                if let Some(url) = &c.ollama_url {
                    candidates.push((
                        url.clone(),
                        c.ollama_model.clone().or(hub_model.clone()),
                        "ollama_url",
                    ));
                }
                if on {
                    let (url, model, why) = candidates.into_iter().next().unwrap_or((
                        DEFAULT_OLLAMA_URL.to_owned(),
                        c.ollama_model.clone().or(hub_model),
                        "direct_execution is on; nothing names an endpoint, Ollama's default",
                    ));
                    return Ok(ollama_plan(url, model, why));
                }
                for (url, model, why) in candidates {
                    match self.probes.probed(&url) {
                        Some(Ok(())) => {
                            return Ok(ollama_plan(url, model, &format!("{why}, and it answers")))
                        }
                        Some(Err(_)) => continue,
                        None => return Err(Some(url)),
                    }
                }
                Err(None)
            }
            Target::Claude => {
                if !command_found(&c.claude_command) {
                    return Err(None);
                }
                let model = c.claude_model.clone().or_else(|| {
                    r.selected_model
                        .clone()
                        .filter(|m| !m.is_empty() && m != "claude")
                });
                Ok(Plan {
                    target: t,
                    endpoint: None,
                    model,
                    why: format!("claude_command `{}`", c.claude_command),
                })
            }
            Target::Shell => {
                if c.allow_hub_commands && shell_command(task).is_some() {
                    Ok(Plan {
                        target: t,
                        endpoint: None,
                        model: None,
                        why: "metadata.shell_command, allow_hub_commands is true".to_owned(),
                    })
                } else {
                    Err(None)
                }
            }
        }
    }

    /// Why routing `r` to `t` cannot run here, and the config key that would serve it (none
    /// when no setting would: a shell task without a command).
    pub(super) fn why_not(
        &self,
        task: &TaskRecord,
        r: &Routing,
        t: Target,
    ) -> (String, Option<&'static str>) {
        let c = &self.choice;
        match t {
            Target::Ollama => {
                let mut tried: Vec<String> = Vec::new();
                let urls = r
                    .selected_endpoint
                    .as_deref()
                    .and_then(endpoint_url)
                    .into_iter()
                    .chain(c.ollama_url.clone());
                for url in urls {
                    match self.probes.probed(&url) {
                        Some(Err(e)) => tried.push(format!("{url}: {e}")),
                        _ => tried.push(url),
                    }
                }
                if tried.is_empty() {
                    (
                        "no ollama endpoint: the hub selected none and ollama_url is not set".to_owned(),
                        Some("ollama_url"),
                    )
                } else {
                    (
                        format!("no ollama endpoint answered ({})", tried.join("; ")),
                        Some("ollama_url"),
                    )
                }
            }
            Target::Claude => (
                format!(
                    "claude_command `{}` was not found (on PATH or as a path)",
                    c.claude_command
                ),
                Some("claude_command"),
            ),
            Target::Shell if shell_command(task).is_none() => {
                ("the task has no metadata.shell_command to run".to_owned(), None)
            }
            Target::Shell => (
                "metadata.shell_command runs only with allow_hub_commands (off)".to_owned(),
                Some("allow_hub_commands"),
            ),
        }
    }
}

/// `http://host:port` for a hub `selected_endpoint` (`"host:port"`, §11.3: a non-numeric last
/// part makes the whole string the host, port 11434); `None` for `claude_api` and blanks.
pub fn endpoint_url(selected: &str) -> Option<String> {
    let s = selected.trim();
    if s.is_empty() || s == "claude_api" {
        return None;
    }
    if s.starts_with("http://") || s.starts_with("https://") {
        return Some(s.trim_end_matches('/').to_owned());
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Some(format!("http://{s}")),
        _ => Some(format!("http://{s}:11434")),
    }
}

fn ollama_plan(url: String, model: Option<String>, why: &str) -> Plan {
    Plan {
        target: Target::Ollama,
        endpoint: Some(url),
        model: Some(model.unwrap_or_else(|| DEFAULT_OLLAMA_MODEL.to_owned())),
        why: why.to_owned(),
    }
}

/// The `no_*` reason prefix when `direct_execution: "on"` cannot run a target.
pub(super) fn no_executor(t: Target) -> &'static str {
    match t {
        Target::Ollama => "no_ollama_endpoint",
        Target::Claude => "claude_command_not_found",
        Target::Shell => "shell_command_not_allowed",
    }
}

/// The task's `metadata.shell_command`, when a non-blank string.
fn shell_command(task: &TaskRecord) -> Option<&str> {
    task.metadata
        .get("shell_command")
        .and_then(serde_json::Value::as_str)
        .filter(|c| !c.trim().is_empty())
}

/// Whether `command` names a program: an existing path (when it has a separator), or a file in
/// a folder of PATH (on Windows also with `.exe`, `.cmd`, `.bat`).
fn command_found(command: &str) -> bool {
    let path = Path::new(command);
    if path.components().count() > 1 || path.is_absolute() {
        return path.is_file();
    }
    let Some(dirs) = std::env::var_os("PATH") else {
        return false;
    };
    let exts: &[&str] = if cfg!(windows) {
        &["", ".exe", ".cmd", ".bat"]
    } else {
        &[""]
    };
    std::env::split_paths(&dirs).any(|d| exts.iter().any(|e| d.join(format!("{command}{e}")).is_file()))
}
