//! The executor runner: carries out a routed task itself (protocol §11) with one of the direct
//! executors ([`Executors`]), within its timeout, and tells the relay what happens.
//!
//! A start is answered at once with `Executing` (the task is `working`, and is run again from the
//! start after a restart). The executor's [`ExecEvent`]s go to the relay as `ExecutionEvent`s,
//! at most one per [`PROGRESS_INTERVAL`] (the task's very first token at once, §11.6), slower after a
//! burst ([`PROGRESS_BURST`], the hub's rate limit), coalesced
//! and bounded; the end is `Executed`: the result object ([`direct::result_object`]) on success,
//! the executor's reason (or the timeout with the elapsed time) on failure. A stop, a cancel or
//! the timeout drops the execution's future, which stops its work (the executors' contract).

use super::direct::{self, ExecError, ExecEvent, ExecEvents, ExecOutput, Job};
use super::process::{group_identity, AgentGroup};
use crate::event_log::Event;
use crate::relay::machine::RelayInput;
use serde_json::Value;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

/// An execution in progress: what an executor's `run` returns, boxed.
pub type ExecFuture = Pin<Box<dyn Future<Output = Result<ExecOutput, ExecError>>>>;

/// One executor: starts the execution of a job, streaming its events to the sender.
pub type ExecFn = Box<dyn Fn(Job, ExecEvents) -> ExecFuture>;

/// A whole run (executions, their verification, delivery): the result object, or why it failed.
pub type RunFuture = Pin<Box<dyn Future<Output = Result<Value, String>>>>;

/// Where a run's log lines go: to the relay as `Log`, before the run's end.
pub type ExecLogs = mpsc::UnboundedSender<Event>;

/// The direct executors, built in one place ([`super::Runners::new`] for the daemon, tests with
/// their own): `ollama`, `claude` and `shell` run a [`Job`] (the runner has already checked that
/// its target may run here, e.g. `allow_hub_commands` for the shell).
pub struct Executors {
    /// `target_type: "ollama"`: Ollama's `/api/chat`.
    pub ollama: ExecFn,
    /// `target_type: "claude"`: the Claude Code CLI.
    pub claude: ExecFn,
    /// `target_type: "sidecar"`: `metadata.shell_command` through the platform shell.
    pub shell: ExecFn,
}

mod batch;

use batch::Batch;
pub use batch::{PROGRESS_BURST, PROGRESS_INTERVAL, PROGRESS_REFILL};

tokio::task_local! {
    /// Where the process groups an execution starts are announced: set around each execution's
    /// future by [`ExecutorRunner::start`], read by [`announce_group`].
    static GROUPS: mpsc::UnboundedSender<AgentGroup>;
}

/// Called by an executor right after it started a process group (`pgid`): the relay records the
/// group in queue.json (`agent_groups`), so that a sidecar restarted after a crash stops what the
/// cut-short execution left running before it runs the task again. Outside an execution
/// (a test calling an executor directly) it does nothing.
pub fn announce_group(pgid: u32) {
    let _ = GROUPS.try_with(|tx| tx.send(group_identity(pgid)));
}

/// One execution being carried out.
struct Running {
    task_id: String,
    /// The process groups the execution started ([`announce_group`]), for the relay.
    groups: mpsc::UnboundedReceiver<AgentGroup>,
    /// What the run logged (verification runs, retries, delivery), for the relay.
    logs: mpsc::UnboundedReceiver<Event>,
    /// The execution within its timeout: the result object, or the reason it failed.
    fut: Pin<Box<dyn Future<Output = Result<Value, String>>>>,
    events: mpsc::UnboundedReceiver<ExecEvent>,
    batch: Batch,
    flush: Pin<Box<Sleep>>,
    /// The execution ended; this goes to the relay once the last events went out.
    done: Option<Result<Value, String>>,
}

/// Carries out executions for the relay (see the module docs).
#[derive(Default)]
pub struct ExecutorRunner {
    running: Vec<Running>,
}

impl ExecutorRunner {
    /// A runner with nothing running.
    pub fn new() -> ExecutorRunner {
        ExecutorRunner::default()
    }

    /// Start `job` with `executor`, bounded by `job.timeout`: one execution, its result object
    /// the end. A task already running is stopped first (a new attempt starts from the beginning).
    pub fn start(&mut self, executor: &ExecFn, job: Job) {
        let (task_id, timeout) = (job.task_id.clone(), job.timeout);
        self.start_with(task_id, timeout, |events, _logs| {
            let run = executor(job, events);
            Box::pin(async move {
                let started = Instant::now();
                match run.await {
                    Ok(out) => Ok(direct::result_object(out, started.elapsed().as_millis() as u64)),
                    Err(e) => Err(e.0),
                }
            })
        });
    }

    /// Start the run `make` builds for task `task_id` (given where its events and log lines
    /// go), bounded by `timeout` as a whole: at the deadline the run's future is dropped. A task
    /// already running is stopped first.
    pub fn start_with(
        &mut self,
        task_id: String,
        timeout: Duration,
        make: impl FnOnce(ExecEvents, ExecLogs) -> RunFuture,
    ) {
        self.stop(&task_id);
        let (tx, rx) = mpsc::unbounded_channel();
        let (logs_tx, logs) = mpsc::unbounded_channel();
        let (groups_tx, groups) = mpsc::unbounded_channel();
        let run = GROUPS.scope(groups_tx, make(tx, logs_tx));
        let fut = async move {
            let started = Instant::now();
            match tokio::time::timeout(timeout, run).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!(
                    "execution_timeout: the execution ran {} (the limit, {} ms, is execution_timeout_ms \
                     or the tier's default); it was stopped",
                    crate::event_log::human_duration(started.elapsed()),
                    timeout.as_millis()
                )),
            }
        };
        self.running.push(Running {
            task_id,
            groups,
            logs,
            fut: Box::pin(fut),
            events: rx,
            batch: Batch::default(),
            flush: Box::pin(tokio::time::sleep(Duration::ZERO)),
            done: None,
        });
    }

    /// Drop task `task_id`'s execution (which stops its work), and anything it had to say.
    pub fn stop(&mut self, task_id: &str) {
        self.running.retain(|r| r.task_id != task_id);
    }

    /// Whether task `task_id` is being executed.
    pub fn is_running(&self, task_id: &str) -> bool {
        self.running.iter().any(|r| r.task_id == task_id)
    }

    /// The next thing an execution has to say. Cancel-safe: all state lives in the runner.
    pub fn next_input(&mut self) -> impl Future<Output = RelayInput> + '_ {
        poll_fn(move |cx| self.poll_next(cx))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<RelayInput> {
        let now = Instant::now();
        for i in 0..self.running.len() {
            let r = &mut self.running[i];
            if let Poll::Ready(Some(group)) = r.groups.poll_recv(cx) {
                return Poll::Ready(RelayInput::AgentGroup {
                    task_id: r.task_id.clone(),
                    group,
                });
            }
            // Only the run's own future logs, while it is polled here: no waker needed (and
            // none of the task's cooperative budget spent).
            if let Ok(event) = r.logs.try_recv() {
                return Poll::Ready(RelayInput::Log(event));
            }
            while let Poll::Ready(Some(event)) = r.events.poll_recv(cx) {
                r.batch.push(event);
            }
            if r.done.is_none() {
                if let Poll::Ready(outcome) = r.fut.as_mut().poll(cx) {
                    while let Ok(event) = r.events.try_recv() {
                        r.batch.push(event);
                    }
                    // What is left goes out as one last event, at the usual pace.
                    if let Some(rest) = r.batch.take_rest_later() {
                        r.batch.pending.push_back(rest);
                    }
                    r.done = Some(outcome);
                }
                if let Ok(event) = r.logs.try_recv() {
                    return Poll::Ready(RelayInput::Log(event));
                }
            }
            if r.done.is_some() && r.batch.pending.is_empty() {
                // What the run logged goes before its end.
                if let Ok(event) = r.logs.try_recv() {
                    return Poll::Ready(RelayInput::Log(event));
                }
                let r = self.running.remove(i);
                return Poll::Ready(RelayInput::Executed {
                    task_id: r.task_id,
                    outcome: r.done.expect("checked"),
                });
            }
            if let Some(event) = r.batch.take_due(now) {
                return Poll::Ready(RelayInput::ExecutionEvent {
                    task_id: r.task_id.clone(),
                    event,
                });
            }
            if let (Some(at), false) = (r.batch.next_at, r.batch.pending.is_empty()) {
                if r.flush.deadline() != at {
                    r.flush.as_mut().reset(at);
                }
                if r.flush.as_mut().poll(cx).is_ready() {
                    // Due now: poll again at once to send it.
                    cx.waker().wake_by_ref();
                }
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests;
