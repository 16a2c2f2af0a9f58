//! `agentcom-sidecar submit`: put a task on the hub (`POST /api/tasks`) with the config's token,
//! print its id, and with `--wait` follow it (`GET /api/tasks/:id`) to its end.

use crate::hub_api::HubApi;
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

/// The exit codes of `submit --wait` beyond 0 (completed) and the shared ones.
pub mod code {
    /// The task ended as failed (a hub that keeps `failed`, or a result whose status is `failed`).
    pub const FAILED: u8 = 3;
    /// The hub dead-lettered the task (its retries are used up, or its TTL ran out).
    pub const DEAD_LETTER: u8 = 4;
    /// `--timeout-secs` passed first; the task goes on on the hub.
    pub const TIMED_OUT: u8 = 5;
    /// The task is gone from the hub (cancelled: the hub deletes cancelled tasks).
    pub const GONE: u8 = 6;
}

/// `submit --help`'s end: the exit codes and examples.
pub const AFTER_HELP: &str = "Exit codes:\n  0   submitted (with --wait: the task completed)\n  3   --wait: the task failed\n  \
4   --wait: the hub dead-lettered the task (retries used up, or nobody took it within its TTL)\n  \
5   --wait: --timeout-secs passed first (the task goes on; `agentcom-sidecar tasks ID` shows it)\n  \
6   --wait: the task is gone from the hub (cancelled)\n  65  the hub refused the task (the message names the field)\n  \
69  the hub could not be reached, or failed\n  77  the hub refused the token\n  78  the config is missing or invalid\n\n\
Examples:\n  agentcom-sidecar submit \"Add a README section on install\"\n  \
agentcom-sidecar submit --tier standard --capability code --wait \"Summarize CHANGELOG.md\"\n  \
agentcom-sidecar submit --repo https://git.example/app.git --verify test_passes:auto \\\n      \
--verify file_exists:docs/api.md --wait --timeout-secs 1800 \"Document the API\"";

/// A task's complexity tier (`complexity_tier`): it decides the hub's routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Tier {
    /// A shell command on the sidecar (`metadata.shell_command`).
    Trivial,
    /// A local model (Ollama).
    Standard,
    /// Claude.
    Complex,
}

/// The hub's priorities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Priority {
    /// 0.
    Urgent,
    /// 1.
    High,
    /// 2 (the default).
    Normal,
    /// 3.
    Low,
}

/// `submit`'s command line.
#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    /// What to do: the task's description (one argument; quote it).
    #[arg(allow_hyphen_values = true)]
    pub description: String,
    /// The complexity tier, which decides the hub's routing [default: the hub infers it].
    #[arg(long, value_enum)]
    pub tier: Option<Tier>,
    /// A capability the agent must have (repeat for several): `needed_capabilities`.
    #[arg(long = "capability", value_name = "C")]
    pub capabilities: Vec<String>,
    /// The repository the task works on (cloned into a workspace by the sidecar that takes it).
    #[arg(long, value_name = "URL")]
    pub repo: Option<String>,
    /// The branch to start from.
    #[arg(long, value_name = "B")]
    pub branch: Option<String>,
    /// A verification step, TYPE:TARGET (repeat for several): file_exists:README.md,
    /// test_passes:auto, git_clean:., command_succeeds:"make lint".
    #[arg(long = "verify", value_name = "TYPE:TARGET")]
    pub verify: Vec<String>,
    /// The priority.
    #[arg(long, value_enum, default_value = "normal")]
    pub priority: Priority,
    /// Only this agent may take it (`assign_to`).
    #[arg(long, value_name = "AGENT_ID")]
    pub assign_to: Option<String>,
    /// Follow the task to its end and print the outcome; the exit code says how it ended.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up waiting after this many seconds (the task goes on).
    #[arg(long, value_name = "N", default_value_t = 600)]
    pub timeout_secs: u64,
    /// The config file (its hub_api_url, token and ca_file) [default: $AGENTCOM_SIDECAR_CONFIG,
    /// else ./config.json].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// The `POST /api/tasks` body for `args` (checked: the verification steps).
pub fn task_body(args: &SubmitArgs) -> Result<Value, String> {
    let mut task = json!({
        "description": args.description,
        "priority": format!("{:?}", args.priority).to_ascii_lowercase(),
    });
    if let Some(tier) = args.tier {
        task["complexity_tier"] = format!("{tier:?}").to_ascii_lowercase().into();
    }
    if !args.capabilities.is_empty() {
        task["needed_capabilities"] = args.capabilities.clone().into();
    }
    if let Some(repo) = &args.repo {
        task["repo"] = repo.clone().into();
    }
    if let Some(branch) = &args.branch {
        task["branch"] = branch.clone().into();
    }
    if let Some(agent) = &args.assign_to {
        task["assign_to"] = agent.clone().into();
    }
    let mut steps = Vec::new();
    for step in &args.verify {
        match step.split_once(':') {
            Some((kind, target)) if !kind.trim().is_empty() && !target.trim().is_empty() => {
                steps.push(json!({"type": kind.trim(), "target": target}));
            }
            _ => {
                return Err(format!(
                    "--verify {step:?} is not TYPE:TARGET (e.g. file_exists:README.md, test_passes:auto, git_clean:.)"
                ))
            }
        }
    }
    if !steps.is_empty() {
        task["verification_steps"] = steps.into();
    }
    Ok(task)
}

/// How a followed task ended.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// `completed`: the task record.
    Completed(Value),
    /// `failed` (or completed with a failed result): the record.
    Failed(Value),
    /// `dead_letter`: the record.
    DeadLetter(Value),
    /// Still open at the deadline: the last status seen.
    TimedOut(String),
    /// 404 `task_not_found`.
    Gone,
}

impl End {
    /// The exit code for this end.
    pub fn exit_code(&self) -> u8 {
        match self {
            End::Completed(_) => 0,
            End::Failed(_) => code::FAILED,
            End::DeadLetter(_) => code::DEAD_LETTER,
            End::TimedOut(_) => code::TIMED_OUT,
            End::Gone => code::GONE,
        }
    }
}

/// Polls `GET /api/tasks/:id` (every `every`, the first four times every 250 ms at most) until the task ends or `within` passes; each change
/// of status or assignee is told to `say`. A hub that stops answering is retried until the
/// deadline (said once); a refused token ends the wait with the error.
pub async fn follow(
    api: &HubApi,
    id: &str,
    within: Duration,
    every: Duration,
    say: &dyn Fn(String),
) -> Result<End, crate::hub_api::HubApiError> {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    let mut said_unreachable = false;
    let mut polls = 0u32;
    loop {
        match api.task(id).await {
            Ok(task) => {
                let status = task["status"].as_str().unwrap_or("?").to_owned();
                let seen = format!("{status} {}", task["assigned_to"]);
                if seen != last {
                    say(describe_status(&task));
                    last = seen;
                }
                let failed_result = task["result"]["status"].as_str() == Some("failed");
                match status.as_str() {
                    "completed" if failed_result => return Ok(End::Failed(task)),
                    "completed" => return Ok(End::Completed(task)),
                    "failed" => return Ok(End::Failed(task)),
                    "dead_letter" => return Ok(End::DeadLetter(task)),
                    _ => {}
                }
            }
            Err(e) if e.status == Some(404) => return Ok(End::Gone),
            Err(e) if e.status.is_none() || e.status >= Some(500) || e.status == Some(429) => {
                if !said_unreachable {
                    say(format!("{e}\n  (still trying until the deadline)"));
                    said_unreachable = true;
                }
            }
            Err(e) => return Err(e),
        }
        // The first polls come quicker: a task often ends within a second or two.
        polls += 1;
        let every = if polls <= 4 {
            every.min(Duration::from_millis(250))
        } else {
            every
        };
        if Instant::now() + every > deadline {
            return Ok(End::TimedOut(last.split(' ').next().unwrap_or("").to_owned()));
        }
        tokio::time::sleep(every).await;
    }
}

/// One line for a task's state: `assigned to gcu-x (generation 1)`, `completed`, `dead_letter:
/// <last_error>`.
pub fn describe_status(task: &Value) -> String {
    let status = task["status"].as_str().unwrap_or("?");
    let clean = crate::tasks::clean;
    match status {
        "assigned" => format!(
            "assigned to {} (generation {})",
            clean(task["assigned_to"].as_str().unwrap_or("?")),
            task["generation"]
        ),
        "dead_letter" | "failed" => match task["last_error"].as_str() {
            Some(e) => format!("{status}: {}", clean(e)),
            None => status.to_owned(),
        },
        other => clean(other),
    }
}

/// `submit`: returns the exit code.
pub async fn run(args: SubmitArgs) -> u8 {
    let api = match HubApi::for_config_file(args.config.as_deref()) {
        Ok(api) => api,
        Err(e) => {
            crate::errln!("error: {e}");
            return crate::exit_code::CONFIG;
        }
    };
    let body = match task_body(&args) {
        Ok(b) => b,
        Err(e) => {
            crate::errln!("error: {e}");
            return 2;
        }
    };
    let submitted = match api.submit(&body).await {
        Ok(s) => s,
        Err(e) => {
            crate::errln!("error: {e}");
            return e.exit_code();
        }
    };
    crate::outln!("{}", submitted.task_id);
    for warning in &submitted.warnings {
        crate::errln!(
            "warning from the hub: {}",
            crate::tasks::clean(&warning.to_string())
        );
    }
    if !args.wait {
        return 0;
    }
    let start = Instant::now();
    let say = |line: String| crate::errln!("{:>7.1}s  {line}", start.elapsed().as_secs_f64());
    let end = follow(
        &api,
        &submitted.task_id,
        Duration::from_secs(args.timeout_secs),
        Duration::from_secs(1),
        &say,
    )
    .await;
    match end {
        Err(e) => {
            crate::errln!("error: {e}");
            e.exit_code()
        }
        Ok(end) => {
            match &end {
                End::Completed(task) | End::Failed(task) | End::DeadLetter(task) => {
                    crate::out!("{}", crate::tasks::render_task(task));
                }
                End::TimedOut(status) => crate::errln!(
                    "error: still {status} after {} s; the task goes on on the hub\n  help: `agentcom-sidecar tasks {}` shows it later; --timeout-secs waits longer",
                    args.timeout_secs,
                    submitted.task_id
                ),
                End::Gone => crate::errln!(
                    "error: the hub no longer has task {} (a cancelled task is deleted)",
                    submitted.task_id
                ),
            }
            end.exit_code()
        }
    }
}
