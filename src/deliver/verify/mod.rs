//! Runs a task's `verification_steps` and builds the report the hub stores (protocol §11.8).
//!
//! Unlike Node, every check runs asynchronously in its own process group under what is left of
//! the run's `verification_timeout_ms` (a check that outlives it is killed with its group and
//! reported `timeout`), relative targets resolve against the task's workspace, `test_passes`
//! `auto` without a test runner is `skip` (never a silent pass), and hub text
//! (`command_succeeds`, an explicit `test_passes` command) runs only with `allow_hub_commands`.
//!
//! - `checks`: the check types and the process they run;
//! - `report`: [`Status`], [`Check`], [`Report`] and the JSON the hub stores;
//! - `prompt`: [`retry_prompt`], the corrective prompt of a retry.

mod checks;
mod prompt;
mod report;
#[cfg(test)]
mod tests;

pub use checks::{NOT_ALLOWED, OUTPUT_LIMIT};
pub use prompt::retry_prompt;
pub use report::{Check, Report, Status};

use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// The run's budget when the task does not set `verification_timeout_ms` (the one default,
/// shared with the reports the runners write without checks).
pub const DEFAULT_TIMEOUT: Duration =
    Duration::from_millis(crate::exec::pipeline::DEFAULT_VERIFICATION_TIMEOUT_MS);
/// The longest budget a task may set (one day); larger values are cut to it.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);
/// The most retries a task may ask for (`max_verification_retries`), as the hub caps it.
pub const MAX_RETRIES: u32 = crate::exec::pipeline::MAX_VERIFICATION_RETRIES;

/// One entry of `task_assign.verification_steps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The check type: `file_exists`, `test_passes`, `git_clean` or `command_succeeds`.
    pub kind: String,
    /// What the check looks at: a path, a directory, a command, or `auto`.
    pub target: String,
    /// The submitter's words about the step, if any.
    pub description: Option<String>,
}

/// What one verification run needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The task verified.
    pub task_id: String,
    /// The checks, in order.
    pub steps: Vec<Step>,
    /// `skip_verification`: no check runs, the report is `skip`.
    pub skip: bool,
    /// The budget of the whole run (`verification_timeout_ms`).
    pub timeout: Duration,
    /// Where relative targets resolve and commands run (the task's workspace or `repo_dir`,
    /// else the sidecar's folder).
    pub workdir: PathBuf,
    /// Whether hub commands (`command_succeeds`, explicit `test_passes`) may run.
    pub allow_hub_commands: bool,
    /// `max_verification_retries` (at most [`MAX_RETRIES`]).
    pub max_retries: u32,
}

impl Spec {
    /// From the task_assign's fields: `verification_steps`, `skip_verification`,
    /// `verification_timeout_ms` (default 120 000, at most a day) and `max_verification_retries`
    /// (default 0, capped at 5). Steps whose `type` or `target` is not a non-empty string are
    /// ignored.
    pub fn from_task(
        task_id: &str,
        fields: &Map<String, Value>,
        workdir: PathBuf,
        allow_hub_commands: bool,
    ) -> Spec {
        let text = |v: &Value, key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .map(str::to_owned)
        };
        let steps = fields
            .get("verification_steps")
            .and_then(Value::as_array)
            .map(|steps| {
                steps
                    .iter()
                    .filter_map(|s| {
                        Some(Step {
                            kind: text(s, "type")?,
                            target: text(s, "target")?,
                            description: text(s, "description"),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let timeout = fields
            .get("verification_timeout_ms")
            .and_then(Value::as_u64)
            .filter(|ms| *ms > 0)
            .map_or(DEFAULT_TIMEOUT, |ms| Duration::from_millis(ms).min(MAX_TIMEOUT));
        let max_retries = crate::exec::pipeline::retries_in(fields);
        Spec {
            task_id: task_id.to_owned(),
            steps,
            skip: fields.get("skip_verification") == Some(&Value::Bool(true)),
            timeout,
            workdir,
            allow_hub_commands,
            max_retries,
        }
    }
}

/// Runs every check of `spec` in order (no fail-fast) and builds the report of run
/// `run_number` (1, 2, ...). Checks still waiting when `spec.timeout` is used up are reported
/// `timeout` without running.
pub async fn run(spec: &Spec, run_number: u32) -> Report {
    let started_at = SystemTime::now();
    let start = Instant::now();
    let mut checks = Vec::with_capacity(spec.steps.len());
    if !spec.skip {
        for step in &spec.steps {
            let begun = Instant::now();
            let left = spec.timeout.saturating_sub(start.elapsed());
            let (status, output) = if left.is_zero() {
                let note = format!(
                    "not run: verification_timeout_ms ({} ms) used up",
                    spec.timeout.as_millis()
                );
                (Status::Timeout, note)
            } else {
                checks::run_check(step, &spec.workdir, spec.allow_hub_commands, left).await
            };
            checks.push(Check {
                kind: step.kind.clone(),
                target: step.target.clone(),
                description: step.description.clone(),
                status,
                output,
                duration_ms: millis(begun.elapsed()),
            });
        }
    }
    let status = if spec.skip {
        Status::Skip
    } else if spec.steps.is_empty() {
        Status::AutoPass
    } else {
        Status::of_checks(&checks)
    };
    Report {
        task_id: spec.task_id.clone(),
        run_number,
        status,
        started_at,
        duration_ms: millis(start.elapsed()),
        timeout_ms: millis(spec.timeout),
        checks,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
