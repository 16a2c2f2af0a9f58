//! The verification report (protocol §11.8): each check's verdict, the run's status, the JSON the
//! hub stores and the one line for logs and pull requests.

use serde_json::{json, Value};
use std::time::SystemTime;

/// The verdict of a check or of a whole run (`auto_pass` only for a run without steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The check held.
    Pass,
    /// The check ran and did not hold.
    Fail,
    /// The check could not be carried out (unknown type, a program that does not start).
    Error,
    /// Not run: `skip_verification`, a hub command without `allow_hub_commands`, no test runner.
    Skip,
    /// The task names no verification steps.
    AutoPass,
    /// The run's `verification_timeout_ms` ran out (the check was killed, or never started).
    Timeout,
}

impl Status {
    /// The wire name: `pass`, `fail`, `error`, `skip`, `auto_pass` or `timeout`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Error => "error",
            Status::Skip => "skip",
            Status::AutoPass => "auto_pass",
            Status::Timeout => "timeout",
        }
    }

    /// The status a wire name stands for (`None` for an unknown one).
    pub fn parse(name: &str) -> Option<Status> {
        [
            Status::Pass,
            Status::Fail,
            Status::Error,
            Status::Skip,
            Status::AutoPass,
            Status::Timeout,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }

    /// A run's status from its checks: `error` if any errored, else `timeout` if any timed out,
    /// else `fail` if any failed, else `pass` if any passed, else `skip`.
    pub fn of_checks(checks: &[Check]) -> Status {
        let any = |s: Status| checks.iter().any(|c| c.status == s);
        [Status::Error, Status::Timeout, Status::Fail, Status::Pass]
            .into_iter()
            .find(|s| any(*s))
            .unwrap_or(Status::Skip)
    }
}

/// One check's outcome, as the report lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The step's `type` (as the hub sent it, also when unknown).
    pub kind: String,
    /// The step's `target`.
    pub target: String,
    /// The step's `description`, if any.
    pub description: Option<String>,
    /// The verdict.
    pub status: Status,
    /// What the check printed (bounded), or why it did not run.
    pub output: String,
    /// How long the check took.
    pub duration_ms: u64,
}

/// The report of one verification run (protocol §11.8).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The task verified.
    pub task_id: String,
    /// Which run this is (1, 2, ... for retries).
    pub run_number: u32,
    /// The run's verdict ([`Status::of_checks`], or `skip`/`auto_pass` without checks).
    pub status: Status,
    /// When the run started.
    pub started_at: SystemTime,
    /// How long the whole run took.
    pub duration_ms: u64,
    /// The budget of the whole run (`verification_timeout_ms`).
    pub timeout_ms: u64,
    /// The checks in the order of the task's steps.
    pub checks: Vec<Check>,
}

impl Report {
    /// A report read back from its JSON ([`Report::to_value`]), e.g. to write the retry prompt
    /// from a report that crossed the runner's seam; `None` when it is not a report. The start
    /// time is not read back (it is the time of reading).
    pub fn from_value(value: &Value) -> Option<Report> {
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let number = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        let checks = value
            .get("checks")?
            .as_array()?
            .iter()
            .map(|c| {
                Some(Check {
                    kind: text(c, "type")?,
                    target: text(c, "target").unwrap_or_default(),
                    description: text(c, "description"),
                    status: Status::parse(c.get("status")?.as_str()?)?,
                    output: text(c, "output").unwrap_or_default(),
                    duration_ms: number(c, "duration_ms"),
                })
            })
            .collect::<Option<Vec<Check>>>()?;
        Some(Report {
            task_id: text(value, "task_id").unwrap_or_default(),
            run_number: number(value, "run_number") as u32,
            status: Status::parse(value.get("status")?.as_str()?)?,
            started_at: SystemTime::now(),
            duration_ms: number(value, "duration_ms"),
            timeout_ms: number(value, "timeout_ms"),
            checks,
        })
    }

    /// The run's verdict.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Whether the hub's classify counts this run as passed: `pass`, `skip` or `auto_pass`.
    pub fn passed(&self) -> bool {
        matches!(self.status, Status::Pass | Status::Skip | Status::AutoPass)
    }

    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// The JSON the hub stores: `{task_id, run_number, status, started_at, duration_ms,
    /// timeout_ms, checks:[{type, target, description, status, output, duration_ms}],
    /// summary:{total, passed, failed, errors, timed_out, skipped}}`.
    pub fn to_value(&self) -> Value {
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|c| {
                json!({
                    "type": c.kind,
                    "target": c.target,
                    "description": c.description,
                    "status": c.status.as_str(),
                    "output": c.output,
                    "duration_ms": c.duration_ms,
                })
            })
            .collect();
        json!({
            "task_id": self.task_id,
            "run_number": self.run_number,
            "status": self.status.as_str(),
            // Epoch milliseconds, as Node's reports (the hub's transcripts) and our own `auto_pass`.
            "started_at": self
                .started_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            "duration_ms": self.duration_ms,
            "timeout_ms": self.timeout_ms,
            "checks": checks,
            "summary": {
                "total": self.checks.len(),
                "passed": self.count(Status::Pass),
                "failed": self.count(Status::Fail),
                "errors": self.count(Status::Error),
                "timed_out": self.count(Status::Timeout),
                "skipped": self.count(Status::Skip),
            },
        })
    }

    /// One line for logs and the pull request body, e.g. `verification passed: 3 checks, 3
    /// passed` or `verification failed: 3 checks, 2 passed, 1 failed (test_passes `auto`)`.
    pub fn summary_line(&self) -> String {
        match self.status {
            Status::Skip if self.checks.is_empty() => {
                return "verification skipped: the task set skip_verification".to_owned()
            }
            Status::AutoPass => {
                return "verification passed: the task names no verification_steps (auto_pass)".to_owned()
            }
            _ => {}
        }
        let verdict = match self.status {
            Status::Pass => "passed",
            Status::Fail => "failed",
            Status::Error => "errored",
            Status::Timeout => "timed out",
            _ => "skipped",
        };
        let total = self.checks.len();
        let mut line = format!(
            "verification {verdict}: {total} check{}, {} passed",
            if total == 1 { "" } else { "s" },
            self.count(Status::Pass)
        );
        for (status, word) in [
            (Status::Fail, "failed"),
            (Status::Error, "errored"),
            (Status::Timeout, "timed out"),
            (Status::Skip, "skipped"),
        ] {
            let named: Vec<String> = self
                .checks
                .iter()
                .filter(|c| c.status == status)
                .map(|c| format!("{} `{}`", c.kind, short(&c.target)))
                .collect();
            if !named.is_empty() {
                line.push_str(&format!(", {} {word} ({})", named.len(), named.join(", ")));
            }
        }
        line
    }
}

/// A target fit for one line of Markdown: no line breaks or backticks, at most 60 characters.
fn short(target: &str) -> String {
    let clean: String = target
        .chars()
        .map(|c| match c {
            '`' => '\'',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    if clean.chars().count() <= 60 {
        return clean;
    }
    let cut: String = clean.chars().take(57).collect();
    format!("{cut}...")
}
