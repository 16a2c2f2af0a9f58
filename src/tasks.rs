//! `agentcom-sidecar tasks`: the hub's view of recent tasks as a table, or one task's fields
//! (`GET /api/tasks`, `GET /api/tasks/:id`). Hub text is shown with control characters escaped,
//! so a description cannot drive the terminal.

use clap::Args;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

/// `tasks`' command line.
#[derive(Debug, Clone, Args)]
pub struct TasksArgs {
    /// One task's id: show its fields instead of the table.
    pub id: Option<String>,
    /// Only tasks with this status: queued, assigned, completed (the hub ignores other values).
    #[arg(long, value_name = "S")]
    pub status: Option<String>,
    /// Only tasks assigned to this agent.
    #[arg(long, value_name = "AGENT_ID")]
    pub assigned_to: Option<String>,
    /// At most this many rows, newest first.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit: usize,
    /// Print the hub's JSON instead.
    #[arg(long)]
    pub json: bool,
    /// The config file (its hub_api_url, token and ca_file) [default: $AGENTCOM_SIDECAR_CONFIG,
    /// else ./config.json].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// Hub text made safe for a terminal: control characters (escape sequences, carriage returns,
/// newlines) shown escaped.
pub fn clean(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let shown: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            shown
        })
        .collect()
}

/// At most `n` characters of clean `s`, with `…` when cut.
fn cut(s: &str, n: usize) -> String {
    let s = clean(s);
    match s.char_indices().nth(n.saturating_sub(1)) {
        Some((i, _)) if s.chars().count() > n => format!("{}…", &s[..i]),
        _ => s,
    }
}

/// `urgent`, `high`, `normal`, `low` for the hub's 0-3.
fn priority(v: &Value) -> String {
    match v.as_i64() {
        Some(0) => "urgent".into(),
        Some(1) => "high".into(),
        Some(2) => "normal".into(),
        Some(3) => "low".into(),
        _ => v.as_str().map_or_else(|| v.to_string(), str::to_owned),
    }
}

/// Epoch milliseconds as ISO 8601 UTC (seconds).
fn when(v: &Value) -> String {
    match v.as_u64() {
        Some(ms) => {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            let mut s = crate::event_log::iso8601(t);
            s.replace_range(19..s.len() - 1, "");
            s
        }
        None => "-".to_owned(),
    }
}

/// The table of tasks, newest first, at most `limit` rows.
pub fn render_table(tasks: &[Value], limit: usize) -> String {
    let mut tasks: Vec<&Value> = tasks.iter().collect();
    tasks.sort_by_key(|t| std::cmp::Reverse(t["created_at"].as_i64().unwrap_or(0)));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<11} {:<20} {:<7} {:<20} DESCRIPTION",
        "ID", "STATUS", "ASSIGNED_TO", "PRIO", "CREATED"
    );
    for t in tasks.iter().take(limit) {
        let _ = writeln!(
            out,
            "{:<24} {:<11} {:<20} {:<7} {:<20} {}",
            cut(t["id"].as_str().or(t["task_id"].as_str()).unwrap_or("?"), 24),
            cut(t["status"].as_str().unwrap_or("?"), 11),
            cut(t["assigned_to"].as_str().unwrap_or("-"), 20),
            priority(&t["priority"]),
            when(&t["created_at"]),
            cut(t["description"].as_str().unwrap_or(""), 60),
        );
    }
    if tasks.len() > limit {
        let _ = writeln!(out, "({} more; --limit N shows more)", tasks.len() - limit);
    } else if tasks.is_empty() {
        let _ = writeln!(out, "(no tasks)");
    }
    out
}

/// One task's fields: status, assignee, the result's summary, verification and pull request.
pub fn render_task(t: &Value) -> String {
    let mut out = String::new();
    let mut line = |key: &str, value: String| {
        let _ = writeln!(out, "{key:<14} {value}");
    };
    let s = |v: &Value| v.as_str().map_or_else(|| "-".to_owned(), clean);
    line("id", s(&t["id"]));
    line("status", s(&t["status"]));
    line("description", cut(t["description"].as_str().unwrap_or(""), 400));
    line("assigned_to", s(&t["assigned_to"]));
    line("priority", priority(&t["priority"]));
    if let Some(tier) = t["complexity"]["effective_tier"]
        .as_str()
        .or(t["complexity_tier"].as_str())
    {
        line("tier", clean(tier));
    }
    if let Some(target) = t["routing_decision"]["target_type"].as_str() {
        line("routed_to", clean(target));
    }
    line(
        "retries",
        format!(
            "{} of {}",
            t["retry_count"].as_i64().unwrap_or(0),
            t["max_retries"]
        ),
    );
    line("created", when(&t["created_at"]));
    line("updated", when(&t["updated_at"]));
    if let Some(e) = t["last_error"].as_str() {
        line("last_error", cut(e, 400));
    }
    let result = &t["result"];
    if !result.is_null() {
        let status = result["status"].as_str().unwrap_or("-");
        let output = result["output"]
            .as_str()
            .or(result["summary"].as_str())
            .or(result["message"].as_str())
            .unwrap_or("");
        line(
            "result",
            format!("{} {}", clean(status), cut(output, 300))
                .trim_end()
                .to_owned(),
        );
    }
    let verification = t["verification_report"]["status"]
        .as_str()
        .or(result["verification_status"].as_str());
    if let Some(v) = verification {
        let summary = &t["verification_report"]["summary"];
        let counts = if summary.is_object() {
            format!(
                " ({} of {} checks passed)",
                summary["passed"].as_i64().unwrap_or(0),
                summary["total"].as_i64().unwrap_or(0)
            )
        } else {
            String::new()
        };
        line("verification", format!("{}{counts}", clean(v)));
    }
    if let Some(url) = result["pr_url"].as_str().or(t["pr_url"].as_str()) {
        line("pr_url", clean(url));
    }
    if let Some(branch) = result["branch"].as_str().or(t["branch"].as_str()) {
        line("branch", clean(branch));
    }
    out
}

/// `tasks`: returns the exit code.
pub async fn run(args: TasksArgs) -> u8 {
    let api = match crate::hub_api::HubApi::for_config_file(args.config.as_deref()) {
        Ok(api) => api,
        Err(e) => {
            crate::errln!("error: {e}");
            return crate::exit_code::CONFIG;
        }
    };
    let shown = match &args.id {
        Some(id) => api.task(id).await.map(|task| {
            if args.json {
                format!("{task:#}\n")
            } else {
                render_task(&task)
            }
        }),
        None => {
            let mut query = Vec::new();
            if let Some(status) = &args.status {
                query.push(("status", status.as_str()));
            }
            if let Some(agent) = &args.assigned_to {
                query.push(("assigned_to", agent.as_str()));
            }
            api.tasks(&query).await.map(|tasks| {
                if args.json {
                    format!("{:#}\n", Value::Array(tasks))
                } else {
                    render_table(&tasks, args.limit)
                }
            })
        }
    };
    match shown {
        Ok(text) => {
            crate::out!("{text}");
            0
        }
        Err(e) => {
            crate::errln!("error: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hub_text_cannot_drive_the_terminal() {
        assert_eq!(clean("a\u{1b}[2Jb\nc"), "a\\u{1b}[2Jb\\nc");
        let table = render_table(
            &[
                json!({"id": "t1", "status": "queued", "priority": 2, "created_at": 1_700_000_000_000u64,
                     "description": "evil \u{1b}]0;title\u{7} text"}),
            ],
            20,
        );
        assert!(!table.contains('\u{1b}'), "{table}");
        assert!(table.contains("t1"), "{table}");
        assert!(table.contains("normal  2023-11-14T22:13:20Z"), "{table}");
    }

    #[test]
    fn one_task_shows_its_outcome_verification_and_pr() {
        let task = json!({
            "id": "task-9", "status": "completed", "assigned_to": "gcu-x", "priority": 0,
            "description": "fix it", "retry_count": 0, "max_retries": 3,
            "result": {"status": "success", "output": "done", "pr_url": "https://git.example/pr/1"},
            "verification_report": {"status": "pass", "summary": {"total": 2, "passed": 2}}
        });
        let text = render_task(&task);
        for want in [
            "status         completed",
            "assigned_to    gcu-x",
            "priority       urgent",
            "result         success done",
            "verification   pass (2 of 2 checks passed)",
            "pr_url         https://git.example/pr/1",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
    }
}
