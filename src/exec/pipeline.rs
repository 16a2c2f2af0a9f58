//! The work before and after a task runs (protocol §11.8-§11.9), behind one seam: [`Pipeline`].
//!
//! The runners call it at three points. Before a run, [`Pipeline::prepare`] makes the task's
//! workspace and delivery branch (`super::Runners` waits for it, like a probe). After a woken
//! agent's success result, the [`Finisher`] verifies the work once and delivers it, then answers
//! the relay's `Finish` with `Finished`. After a direct execution, [`execute_verified`] verifies,
//! runs an LLM target again with a corrective prompt while checks fail and retries remain, and
//! delivers. The checks and the git work themselves are the pipeline's (`crate::deliver`);
//! [`NoPipeline`] does none of it.

use super::direct::{self, EventKind, ExecEvent, ExecEvents, ExecOutput, Job};
use super::executor::ExecFuture;
use crate::event_log::Event;
use crate::protocol::{cut_chars, MAX_REASON_CHARS};
use crate::relay::machine::RelayInput;
use crate::relay::task::TaskRecord;
use serde_json::{json, Map, Value};
use std::future::{poll_fn, Future};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A future that owns its inputs (not `Send`: everything runs on the daemon's one thread).
pub type BoxFut<T> = Pin<Box<dyn Future<Output = T>>>;

/// The most corrective retries of a direct execution, whatever the hub asks (it sends 5).
pub const MAX_VERIFICATION_RETRIES: u32 = 5;

/// The verification timeout a report states when the task names none (§11.8).
pub const DEFAULT_VERIFICATION_TIMEOUT_MS: u64 = 120_000;

/// The work before and after a task runs (protocol §11.8-§11.9), behind one seam.
pub trait Pipeline {
    /// Before the task runs: its workspace (clone or refresh, for `task.repo`) and its delivery
    /// branch (for `repo_dir` or a workspace); None when there is nothing to prepare.
    fn prepare(&self, task: &TaskRecord) -> Option<BoxFut<Result<Prepared, String>>>;
    /// One verification run (run_number 1, 2, ...) in `workdir`.
    fn verify(&self, task: &TaskRecord, workdir: &Path, run_number: u32) -> BoxFut<Verified>;
    /// The corrective prompt for retry `attempt` of `max` after `report` failed.
    fn retry_prompt(
        &self,
        task: &TaskRecord,
        attempt: u32,
        max: u32,
        report: &Value,
        previous_output: &str,
    ) -> String;
    /// After verification: commit, push, pull request and classification when the task is
    /// delivered from a repository; returns the result with what was done added (`pr_url`,
    /// `branch`, `risk_classification`, or `delivery` saying why nothing was pushed). Never
    /// fails: each step's failure becomes a reason in the result.
    fn deliver(
        &self,
        task: &TaskRecord,
        workdir: &Path,
        result: Map<String, Value>,
        verified: &Verified,
    ) -> BoxFut<Map<String, Value>>;
    /// After a task ended without a complete outcome (failed, cancelled, handed back; the relay
    /// forgot it): leave `workdir` fit for the next task. The real pipeline keeps what the task
    /// left there as a local commit on its branch; the event, if any, is logged. The next task's
    /// preparation waits for it. A complete task is never settled: its delivery took care of
    /// the folder, and what is there afterwards may be someone's own work. None: nothing to do.
    fn settle(&self, _task_id: &str, _workdir: &Path) -> Option<BoxFut<Option<Event>>> {
        None
    }
}

/// What preparing a task made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prepared {
    /// The folder the task works in (its workspace, or `repo_dir`), when the preparation chose one.
    pub workdir: Option<PathBuf>,
    /// A problem the task goes on despite (e.g. a stale workspace after a failed refresh): logged.
    pub warning: Option<String>,
}

/// One verification run's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The report (§11.8: `task_id`, `run_number`, `status`, `checks`, `summary`, ...).
    pub report: Value,
    /// Whether the work counts as verified (report `pass`, `skip` or `auto_pass`).
    pub passed: bool,
    /// The report's status: `pass`, `fail`, `error`, `skip`, `auto_pass` or `timeout`.
    pub status: String,
}

/// No preparation, `auto_pass`/`skip` reports, no delivery: what a test or a build without
/// delivery uses.
///
/// A task with `skip_verification` or with checks gets `skip` (its checks are not run here,
/// and that is said, never passed silently); one without checks gets `auto_pass`.
pub struct NoPipeline;

impl Pipeline for NoPipeline {
    fn prepare(&self, _task: &TaskRecord) -> Option<BoxFut<Result<Prepared, String>>> {
        None
    }

    fn verify(&self, task: &TaskRecord, _workdir: &Path, run_number: u32) -> BoxFut<Verified> {
        let steps = task
            .extra
            .get("verification_steps")
            .and_then(Value::as_array)
            .is_some_and(|s| !s.is_empty());
        let skip = task.extra.get("skip_verification") == Some(&Value::Bool(true));
        let (status, reason) = match (skip, steps) {
            (true, _) => ("skip", "skip_verification is set"),
            (false, true) => ("skip", "this sidecar runs no verification checks"),
            (false, false) => ("auto_pass", "the task has no verification_steps"),
        };
        let mut report = report_without_checks(task, run_number, status);
        report["reason"] = Value::from(reason);
        let verified = Verified {
            report,
            passed: true,
            status: status.to_owned(),
        };
        Box::pin(async move { verified })
    }

    fn retry_prompt(
        &self,
        task: &TaskRecord,
        attempt: u32,
        max: u32,
        _report: &Value,
        previous_output: &str,
    ) -> String {
        format!(
            "VERIFICATION RETRY {attempt}/{max}: Your previous work failed verification checks.\n\n\
             ORIGINAL TASK:\n{}\n\nYOUR PREVIOUS OUTPUT:\n{}\n\nFix only what failed.",
            task.description,
            cut_chars(previous_output, 1000)
        )
    }

    fn deliver(
        &self,
        _task: &TaskRecord,
        _workdir: &Path,
        result: Map<String, Value>,
        _verified: &Verified,
    ) -> BoxFut<Map<String, Value>> {
        Box::pin(async move { result })
    }
}

/// A report in the §11.8 shape with no checks (for `skip` and `auto_pass`): no time taken, zero
/// counts, `timeout_ms` the task's `verification_timeout_ms` (else 120 000).
pub fn report_without_checks(task: &TaskRecord, run_number: u32, status: &str) -> Value {
    let timeout_ms = task
        .extra
        .get("verification_timeout_ms")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_VERIFICATION_TIMEOUT_MS);
    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    json!({
        "task_id": task.task_id,
        "run_number": run_number,
        "status": status,
        "started_at": started_at,
        "duration_ms": 0,
        "timeout_ms": timeout_ms,
        "checks": [],
        "summary": {"total": 0, "passed": 0, "failed": 0, "errors": 0, "timed_out": 0},
    })
}

/// `result.verification_status` after one verification of a woken agent's work: `verified`
/// (report `pass` or `auto_pass`), `skipped`, `failed`, `error` or `timeout`.
pub fn verification_status(verified: &Verified) -> &'static str {
    match verified.status.as_str() {
        "pass" | "auto_pass" => "verified",
        "skip" => "skipped",
        "error" => "error",
        "timeout" => "timeout",
        _ if verified.passed => "verified",
        _ => "failed",
    }
}

/// How many checks of `report` passed, for a person: `2 of 3 checks passed, 1 failed`.
pub fn summary_text(report: &Value) -> String {
    let count = |k: &str| report["summary"][k].as_u64().unwrap_or(0);
    let total = count("total");
    if total == 0 {
        return match report["reason"].as_str() {
            Some(reason) => format!("no checks run: {reason}"),
            None => "no checks run".to_owned(),
        };
    }
    let mut text = format!("{} of {total} checks passed", count("passed"));
    for (key, word) in [
        ("failed", "failed"),
        ("errors", "errors"),
        ("timed_out", "timed out"),
    ] {
        if count(key) > 0 {
            text.push_str(&format!(", {} {word}", count(key)));
        }
    }
    text
}

/// The checks of `report` that did not pass (nor were skipped).
fn failed_checks(report: &Value) -> usize {
    report["checks"].as_array().map_or(0, |c| {
        c.iter()
            .filter(|c| !matches!(c["status"].as_str(), Some("pass" | "skip")))
            .count()
    })
}

fn verification_finished(task_id: &str, run_number: u32, verified: &Verified) -> Event {
    Event::VerificationFinished {
        task_id: task_id.to_owned(),
        run_number,
        status: verified.status.clone(),
        summary: summary_text(&verified.report),
    }
}

/// What delivery put in `result`, as a log line (none when it did nothing to say).
fn delivery_event(task_id: &str, result: &Map<String, Value>) -> Option<Event> {
    let text = |k: &str| result.get(k).and_then(Value::as_str).map(str::to_owned);
    // `delivery` is a reason, or an object `{status, branch, reason | error, pr_url,
    // label_error}`.
    let delivery = result.get("delivery");
    let field = |k: &str| {
        delivery
            .and_then(|d| d.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let status = field("status");
    let reason = text("delivery")
        .or_else(|| field("reason"))
        .or_else(|| field("error"))
        .or_else(|| field("label_error").map(|e| format!("labels: {e}")));
    let pr_url = text("pr_url").or_else(|| field("pr_url"));
    let branch = text("branch").or_else(|| field("branch"));
    (pr_url.is_some() || branch.is_some() || reason.is_some() || status.is_some()).then(|| Event::Delivery {
        task_id: task_id.to_owned(),
        status,
        pr_url,
        branch,
        reason,
    })
}

/// Verify a woken agent's success `result` once (in `workdir`; numbered after the agent's own
/// runs, if it reported any) and deliver it: the result gets
/// `verification_status`, and the report (and the history: the agent's own runs, if it wrote
/// any, then this one) to be lifted to the top level, then what delivery did.
pub async fn finish(
    pipeline: Rc<dyn Pipeline>,
    task: TaskRecord,
    workdir: PathBuf,
    mut result: Map<String, Value>,
    logs: mpsc::UnboundedSender<Event>,
) -> Map<String, Value> {
    let task_id = task.task_id.clone();
    // What the agent reported of its own runs stays in the history, before ours.
    let mut history: Vec<Value> = match (
        result.remove("verification_history"),
        result.remove("verification_report"),
    ) {
        (Some(Value::Array(runs)), _) if runs.iter().all(Value::is_object) => runs,
        (_, Some(report @ Value::Object(_))) => vec![report],
        _ => Vec::new(),
    };
    // Ours is numbered after the agent's runs (the hub keys its store by task and run_number).
    let run_number = history
        .iter()
        .filter_map(|r| r["run_number"].as_u64())
        .max()
        .unwrap_or(0)
        .max(history.len() as u64)
        .min(u64::from(u32::MAX - 1)) as u32
        + 1;
    let _ = logs.send(Event::VerificationStarted {
        task_id: task_id.clone(),
        run_number,
    });
    let verified = pipeline.verify(&task, &workdir, run_number).await;
    let _ = logs.send(verification_finished(&task_id, run_number, &verified));
    history.push(verified.report.clone());
    result.insert(
        "verification_status".into(),
        Value::from(verification_status(&verified)),
    );
    result.insert("verification_report".into(), verified.report.clone());
    result.insert("verification_history".into(), Value::Array(history));
    let result = pipeline.deliver(&task, &workdir, result, &verified).await;
    if let Some(event) = delivery_event(&task_id, &result) {
        let _ = logs.send(event);
    }
    result
}

/// One result being finished.
struct Finishing {
    task_id: String,
    fut: BoxFut<Map<String, Value>>,
    logs: mpsc::UnboundedReceiver<Event>,
    /// The result, once the future ended (it goes out after the last log line).
    done: Option<Map<String, Value>>,
}

/// Verifies and delivers woken agents' success results (the relay's `Finish`), one future per
/// task; a stop drops it (and with it its checks and git commands).
pub struct Finisher {
    pipeline: Rc<dyn Pipeline>,
    running: Vec<Finishing>,
}

impl Finisher {
    /// A finisher with nothing to finish.
    pub fn new(pipeline: Rc<dyn Pipeline>) -> Finisher {
        Finisher {
            pipeline,
            running: Vec::new(),
        }
    }

    /// Verify and deliver task `task`'s `result` in `workdir` (a finishing of the same task
    /// is dropped first).
    pub fn start(&mut self, task: TaskRecord, result: Map<String, Value>, workdir: PathBuf) {
        self.stop(&task.task_id);
        let (tx, logs) = mpsc::unbounded_channel();
        let task_id = task.task_id.clone();
        let fut = Box::pin(finish(self.pipeline.clone(), task, workdir, result, tx));
        self.running.push(Finishing {
            task_id,
            fut,
            logs,
            done: None,
        });
    }

    /// Drop task `task_id`'s finishing, and anything it had to say.
    pub fn stop(&mut self, task_id: &str) {
        self.running.retain(|f| f.task_id != task_id);
    }

    /// Whether task `task_id`'s result is being finished.
    pub fn is_running(&self, task_id: &str) -> bool {
        self.running.iter().any(|f| f.task_id == task_id)
    }

    /// What a finishing has to say: its log lines, then `Finished`. Cancel-safe.
    pub fn next_input(&mut self) -> impl Future<Output = RelayInput> + '_ {
        poll_fn(move |cx| self.poll_next(cx))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<RelayInput> {
        for i in 0..self.running.len() {
            let f = &mut self.running[i];
            // Only the finishing's own future logs, while it is polled here: no waker needed.
            if let Ok(event) = f.logs.try_recv() {
                return Poll::Ready(RelayInput::Log(event));
            }
            if f.done.is_none() {
                if let Poll::Ready(result) = f.fut.as_mut().poll(cx) {
                    f.done = Some(result);
                }
                if let Ok(event) = f.logs.try_recv() {
                    return Poll::Ready(RelayInput::Log(event));
                }
            }
            if f.done.is_some() {
                let f = self.running.remove(i);
                return Poll::Ready(RelayInput::Finished {
                    task_id: f.task_id,
                    result: f.done.expect("checked"),
                });
            }
        }
        Poll::Pending
    }
}

/// A direct execution's work after it ran, and its retries (§11.8): what [`execute_verified`]
/// needs besides the execution itself.
pub struct Verification {
    /// The pipeline.
    pub pipeline: Rc<dyn Pipeline>,
    /// The task (its steps, its retries, its description for the corrective prompt).
    pub task: TaskRecord,
    /// Corrective retries allowed (0 for the shell tier; at most [`MAX_VERIFICATION_RETRIES`]).
    pub retries: u32,
    /// Where the log lines go.
    pub logs: mpsc::UnboundedSender<Event>,
}

/// The corrective retries a task asks for on an LLM target: `max_verification_retries`, at most
/// [`MAX_VERIFICATION_RETRIES`] (0 when absent or not a count).
pub fn retries_for(task: &TaskRecord) -> u32 {
    retries_in(&task.extra)
}

/// [`retries_for`] from a task's fields (`max_verification_retries`), for whoever holds only them.
pub fn retries_in(fields: &Map<String, Value>) -> u32 {
    fields
        .get("max_verification_retries")
        .and_then(Value::as_u64)
        .map_or(0, |n| n.min(u64::from(MAX_VERIFICATION_RETRIES)) as u32)
}

/// Run `job` with `run`, verify it (run 1), and while the checks fail and retries remain run it
/// again with the pipeline's corrective prompt as the description (runs 2, 3, ...); then deliver.
///
/// The result is the last execution's result object (§11.7) with `tokens_in`, `tokens_out` and
/// `estimated_cost_usd` summed over every execution, `verification_status` (`verified`,
/// `partial_pass` when the last run still fails, `execution_failed` when a retry's execution
/// failed), `verification_attempts`, and `verification_report` (the last) and
/// `verification_history` (all) to be lifted to the top level. A first execution that fails is
/// the failure (`Err`), with nothing verified.
pub async fn execute_verified(
    run: impl Fn(Job, ExecEvents) -> ExecFuture,
    mut job: Job,
    events: ExecEvents,
    v: Verification,
) -> Result<Value, String> {
    let task_id = job.task_id.clone();
    let workdir = job.workdir.clone();
    let (mut tokens_in, mut tokens_out, mut cost) = (0u64, 0u64, 0f64);
    let mut history: Vec<Value> = Vec::new();
    let mut last: Option<(Map<String, Value>, Verified)> = None;
    let mut run_number = 1;
    let (mut result, verified, status) = loop {
        let started = Instant::now();
        let out: ExecOutput = match run(job.clone(), events.clone()).await {
            Ok(out) => out,
            Err(e) => match last.take() {
                None => return Err(e.0),
                Some((mut result, verified)) => {
                    result.insert(
                        "execution_error".into(),
                        Value::from(cut_chars(&e.0, MAX_REASON_CHARS)),
                    );
                    break (result, verified, "execution_failed");
                }
            },
        };
        tokens_in += out.tokens_in;
        tokens_out += out.tokens_out;
        let Value::Object(result) = direct::result_object(out, started.elapsed().as_millis() as u64) else {
            unreachable!("a result object is an object")
        };
        cost += result["estimated_cost_usd"].as_f64().unwrap_or(0.0);
        let _ = v.logs.send(Event::VerificationStarted {
            task_id: task_id.clone(),
            run_number,
        });
        let verified = v.pipeline.verify(&v.task, &workdir, run_number).await;
        let _ = v
            .logs
            .send(verification_finished(&task_id, run_number, &verified));
        history.push(verified.report.clone());
        if verified.passed {
            break (result, verified, "verified");
        }
        if run_number > v.retries {
            break (result, verified, "partial_pass");
        }
        let failing = failed_checks(&verified.report);
        let _ = v.logs.send(Event::VerificationRetry {
            task_id: task_id.clone(),
            retry: run_number,
            max: v.retries,
        });
        let _ = events.send(ExecEvent {
            kind: EventKind::Status,
            text: format!(
                "Verification retry {run_number}/{}: fixing {failing} failed checks...",
                v.retries
            ),
            model: None,
        });
        let output = result["output"].as_str().unwrap_or("").to_owned();
        job.description = v
            .pipeline
            .retry_prompt(&v.task, run_number, v.retries, &verified.report, &output);
        last = Some((result, verified));
        run_number += 1;
    };
    result.insert("tokens_in".into(), Value::from(tokens_in));
    result.insert("tokens_out".into(), Value::from(tokens_out));
    result.insert("estimated_cost_usd".into(), json!(cost));
    result.insert("verification_status".into(), Value::from(status));
    result.insert("verification_attempts".into(), Value::from(history.len()));
    result.insert("verification_report".into(), verified.report.clone());
    result.insert("verification_history".into(), Value::Array(history));
    let result = v.pipeline.deliver(&v.task, &workdir, result, &verified).await;
    if let Some(event) = delivery_event(&task_id, &result) {
        let _ = v.logs.send(event);
    }
    Ok(Value::Object(result))
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
