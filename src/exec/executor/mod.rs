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

use super::direct::{self, EventKind, ExecError, ExecEvent, ExecEvents, ExecOutput, Job};
use super::process::{group_identity, AgentGroup};
use crate::event_log::Event;
use crate::protocol::cut_chars;
use crate::relay::machine::RelayInput;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
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

/// The shortest time between two `task_progress` frames of one execution.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Frames one execution may send at the [`PROGRESS_INTERVAL`] pace before it slows down to one
/// per [`PROGRESS_REFILL`]: the hub's "normal" bucket holds 60 frames and refills one a second, and
/// pings and the outcome need their share (protocol §11.6).
pub const PROGRESS_BURST: f64 = 30.0;

/// How long one frame of the burst takes to come back.
pub const PROGRESS_REFILL: Duration = Duration::from_millis(1500);

/// Events waiting to be sent for one execution, at most (older ones are dropped first).
const MAX_PENDING_EVENTS: usize = 32;

/// The longest `text` of one `execution_event` (a coalesced batch keeps its first characters).
const MAX_EVENT_TEXT_CHARS: usize = 10_000;

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

/// The events of one execution not yet sent, and when the next frame may go.
#[derive(Default)]
struct Batch {
    pending: VecDeque<ExecEvent>,
    /// Characters of streamed text so far (`tokens_so_far`, as Node counts it).
    token_chars: u64,
    /// The first token went out (it goes at once).
    first_token_sent: bool,
    /// No frame before this.
    next_at: Option<Instant>,
    /// Events dropped because too many waited.
    dropped: u64,
    /// Frames left in the burst (see [`PROGRESS_BURST`]), as of `budget_at`.
    budget: f64,
    budget_at: Option<Instant>,
}

impl Batch {
    fn push(&mut self, event: ExecEvent) {
        if event.kind == EventKind::Token {
            self.token_chars += event.text.chars().count() as u64;
        }
        if let Some(last) = self.pending.back_mut() {
            if last.kind == event.kind && last.model == event.model {
                if last.text.len() < MAX_EVENT_TEXT_CHARS * 4 {
                    last.text.push_str(&event.text);
                }
                return;
            }
        }
        if self.pending.len() >= MAX_PENDING_EVENTS {
            self.pending.pop_front();
            self.dropped += 1;
        }
        self.pending.push_back(event);
    }

    /// The next event to send now, if one may go.
    fn take_due(&mut self, now: Instant) -> Option<Value> {
        let first = self.pending.front()?;
        let first_token = first.kind == EventKind::Token && !self.first_token_sent;
        if !first_token && self.next_at.is_some_and(|at| now < at) {
            return None;
        }
        self.take(now)
    }

    fn take(&mut self, now: Instant) -> Option<Value> {
        let event = self.pending.pop_front()?;
        if event.kind == EventKind::Token {
            self.first_token_sent = true;
        }
        // The burst budget refills with time; an empty one spaces frames by the refill period.
        let refilled = self
            .budget_at
            .map_or(PROGRESS_BURST, |at| {
                self.budget + (now - at).as_secs_f64() / PROGRESS_REFILL.as_secs_f64()
            })
            .min(PROGRESS_BURST);
        self.budget = refilled - 1.0;
        self.budget_at = Some(now);
        let wait = if self.budget >= 1.0 {
            PROGRESS_INTERVAL
        } else {
            PROGRESS_REFILL.mul_f64(1.0 - self.budget).max(PROGRESS_INTERVAL)
        };
        self.next_at = Some(now + wait);
        let tokens_so_far = match event.kind {
            // The count up to this batch's end; later batches are still pending.
            EventKind::Token => {
                let later: u64 = self
                    .pending
                    .iter()
                    .filter(|e| e.kind == EventKind::Token)
                    .map(|e| e.text.chars().count() as u64)
                    .sum();
                json!(self.token_chars - later)
            }
            _ => Value::Null,
        };
        Some(json!({
            "event_type": event.kind.as_str(),
            "text": cut_chars(&event.text, MAX_EVENT_TEXT_CHARS),
            "tokens_so_far": tokens_so_far,
            "model": event.model,
            "timestamp": epoch_ms(),
        }))
    }

    /// Everything still pending merged into one event (texts of the first one's kind joined;
    /// the other kinds are dropped: the execution is over, the result holds its output).
    fn take_rest_later(&mut self) -> Option<ExecEvent> {
        let mut first = self.pending.pop_front()?;
        for e in self.pending.drain(..) {
            if e.kind == first.kind {
                first.text.push_str(&e.text);
            }
        }
        Some(first)
    }
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
mod tests {
    use super::*;
    use crate::exec::direct::Routing;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// Sets its flag when dropped: shows an execution's future was dropped.
    struct OnDrop(Arc<AtomicBool>);

    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn job(task_id: &str, timeout: Duration) -> Job {
        Job {
            task_id: task_id.into(),
            description: "d".into(),
            context: Default::default(),
            metadata: json!({}),
            routing: Routing::default(),
            endpoint: None,
            model: Some("m".into()),
            workdir: PathBuf::from("."),
            timeout,
        }
    }

    fn token(text: &str) -> ExecEvent {
        ExecEvent {
            kind: EventKind::Token,
            text: text.into(),
            model: Some("m".into()),
        }
    }

    /// An executor that streams `tokens`, one every `every`, then answers `end`.
    fn streaming(tokens: Vec<&'static str>, every: Duration, end: Result<ExecOutput, ExecError>) -> ExecFn {
        Box::new(move |_job, events| {
            let tokens = tokens.clone();
            let end = end.clone();
            Box::pin(async move {
                for t in tokens {
                    let _ = events.send(token(t));
                    tokio::time::sleep(every).await;
                }
                end
            })
        })
    }

    /// What the runner says next, with the (paused) time it said it at.
    async fn next(runner: &mut ExecutorRunner) -> (Duration, RelayInput, Instant) {
        let before = Instant::now();
        let input = tokio::time::timeout(Duration::from_secs(7200), runner.next_input())
            .await
            .expect("the runner said nothing");
        (before.elapsed(), input, Instant::now())
    }

    fn event(input: &RelayInput) -> &Value {
        match input {
            RelayInput::ExecutionEvent { event, .. } => event,
            other => panic!("expected an execution event, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_process_group_an_execution_announces_goes_to_the_relay() {
        let mut runner = ExecutorRunner::new();
        let exec: ExecFn = Box::new(|_job, _events| {
            Box::pin(async move {
                announce_group(4242);
                std::future::pending::<()>().await;
                Ok(ExecOutput::default())
            })
        });
        runner.start(&exec, job("t1", Duration::from_secs(60)));
        match next(&mut runner).await.1 {
            RelayInput::AgentGroup { task_id, group } => {
                assert_eq!(task_id, "t1");
                assert_eq!(group.pgid, 4242);
            }
            other => panic!("expected the group, got {other:?}"),
        }
        // Outside an execution, nothing is announced (and nothing fails).
        announce_group(4243);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_token_goes_at_once_then_at_most_one_frame_per_100_ms() {
        let mut runner = ExecutorRunner::new();
        let out = ExecOutput {
            output: "abcdefghij".into(),
            model_used: "m".into(),
            tokens_in: 5,
            tokens_out: 10,
            ..ExecOutput::default()
        };
        // Ten tokens 30 ms apart (300 ms in all).
        let tokens = vec!["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
        let exec = streaming(tokens, Duration::from_millis(30), Ok(out));
        let start = Instant::now();
        runner.start(&exec, job("t1", Duration::from_secs(60)));
        let (_, first, at) = next(&mut runner).await;
        assert_eq!(at - start, Duration::ZERO, "the first token at once");
        assert_eq!(event(&first)["event_type"], "token");
        assert_eq!(event(&first)["text"], "a");
        assert_eq!(event(&first)["tokens_so_far"], 1);
        assert_eq!(event(&first)["model"], "m");
        let mut frames = vec![(at, first)];
        let end = loop {
            let (_, input, at) = next(&mut runner).await;
            match input {
                RelayInput::Executed { .. } => break input,
                other => frames.push((at, other)),
            }
        };
        for pair in frames.windows(2) {
            assert!(
                pair[1].0 - pair[0].0 >= PROGRESS_INTERVAL,
                "frames {:?} apart",
                pair[1].0 - pair[0].0
            );
        }
        // Every token reached the hub, in order, coalesced.
        let text: String = frames
            .iter()
            .map(|(_, i)| event(i)["text"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(text, "abcdefghij");
        assert!(frames.len() <= 5, "{} frames for 300 ms", frames.len());
        assert_eq!(event(&frames.last().unwrap().1)["tokens_so_far"], 10);
        match end {
            RelayInput::Executed {
                task_id,
                outcome: Ok(result),
            } => {
                assert_eq!(task_id, "t1");
                assert_eq!(result["status"], "success");
                assert_eq!(result["output"], "abcdefghij");
                assert_eq!(result["tokens_in"], 5);
                assert_eq!(result["execution_ms"], 300);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_stream_slows_down_within_the_hubs_rate_limit() {
        let mut runner = ExecutorRunner::new();
        // A token every 10 ms for 120 s.
        let exec: ExecFn = Box::new(|_job, events| {
            Box::pin(async move {
                for _ in 0..12_000 {
                    let _ = events.send(token("x"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok(ExecOutput::default())
            })
        });
        let start = Instant::now();
        runner.start(&exec, job("t1", Duration::from_secs(600)));
        let mut frames = Vec::new();
        let mut chars = 0;
        loop {
            let (_, input, at) = next(&mut runner).await;
            match input {
                RelayInput::Executed { .. } => break,
                RelayInput::ExecutionEvent { event, .. } => {
                    chars += event["text"].as_str().unwrap().len();
                    frames.push(at - start);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(chars, 12_000, "every token reached the hub");
        // The hub's bucket: 60 frames, one more a second. Never more than that in any window
        // starting at 0, with room to spare for pings and the outcome.
        for (i, at) in frames.iter().enumerate() {
            let allowed = 60.0 + at.as_secs_f64();
            assert!(((i + 1) as f64) < allowed * 0.8, "frame {} at {at:?}", i + 1);
        }
        // ... and still a steady stream: the burst at 100 ms, then one about every 1.5 s.
        assert!(frames.len() >= 30 + 60, "{} frames", frames.len());
        assert!(frames[29] <= Duration::from_secs(3), "{:?}", frames[29]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_events_is_bounded() {
        let mut runner = ExecutorRunner::new();
        let exec: ExecFn = Box::new(|_job, events| {
            Box::pin(async move {
                // Alternating kinds cannot be coalesced: only the newest ones wait.
                for i in 0..1000 {
                    let kind = if i % 2 == 0 {
                        EventKind::Stdout
                    } else {
                        EventKind::Stderr
                    };
                    let _ = events.send(ExecEvent {
                        kind,
                        text: format!("{i}"),
                        model: None,
                    });
                }
                std::future::pending::<()>().await;
                unreachable!()
            })
        });
        runner.start(&exec, job("t1", Duration::from_secs(60)));
        let (_, first, _) = next(&mut runner).await;
        assert_eq!(event(&first)["event_type"], "stdout");
        assert!(runner.running[0].batch.pending.len() <= MAX_PENDING_EVENTS);
        assert!(runner.running[0].batch.dropped > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_drops_the_execution_and_fails_with_the_elapsed_time() {
        let mut runner = ExecutorRunner::new();
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = dropped.clone();
        let exec: ExecFn = Box::new(move |_job, _events| {
            let guard = OnDrop(flag.clone());
            Box::pin(async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                unreachable!()
            })
        });
        runner.start(&exec, job("t1", Duration::from_secs(600)));
        let (waited, input, _) = next(&mut runner).await;
        assert_eq!(waited, Duration::from_secs(600));
        assert!(dropped.load(Ordering::SeqCst), "the execution was dropped");
        match input {
            RelayInput::Executed {
                outcome: Err(reason), ..
            } => assert_eq!(
                reason,
                "execution_timeout: the execution ran 10 min 0 s (the limit, 600000 ms, is \
                 execution_timeout_ms or the tier's default); it was stopped"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stop_drops_the_execution_and_nothing_more_is_said() {
        let mut runner = ExecutorRunner::new();
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = dropped.clone();
        let exec: ExecFn = Box::new(move |_job, events| {
            let guard = OnDrop(flag.clone());
            Box::pin(async move {
                let _guard = guard;
                let _ = events.send(token("x"));
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(ExecOutput::default())
            })
        });
        runner.start(&exec, job("t1", Duration::from_secs(600)));
        let _ = next(&mut runner).await;
        assert!(runner.is_running("t1"));
        runner.stop("t1");
        assert!(dropped.load(Ordering::SeqCst), "stopping drops the execution");
        assert!(!runner.is_running("t1"));
        let quiet = tokio::time::timeout(Duration::from_secs(60), runner.next_input()).await;
        assert!(quiet.is_err(), "a stopped execution says nothing: {quiet:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_is_the_failure_reason_and_the_streamed_tail_goes_first() {
        let mut runner = ExecutorRunner::new();
        let long = "é".repeat(3000);
        let exec = streaming(
            vec!["a", "b"],
            Duration::from_millis(1),
            Err(ExecError(long.clone())),
        );
        runner.start(&exec, job("t1", Duration::from_secs(60)));
        let mut inputs = Vec::new();
        loop {
            let (_, input, _) = next(&mut runner).await;
            let end = matches!(input, RelayInput::Executed { .. });
            inputs.push(input);
            if end {
                break;
            }
        }
        let texts: String = inputs[..inputs.len() - 1]
            .iter()
            .map(|i| event(i)["text"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(texts, "ab", "the tail is sent before the end");
        match inputs.last().unwrap() {
            // The relay cuts it to 2000 characters (relay::machine::tests::exec).
            RelayInput::Executed {
                outcome: Err(reason), ..
            } => assert_eq!(reason, &long),
            other => panic!("{other:?}"),
        }
    }
}
