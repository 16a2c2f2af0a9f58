//! The event catalogue: every [`Event`] the sidecar records, its name in the log, and the
//! sentence a person reads on the console ([`Event::describe`]).

use serde::Serialize;
use serde_json::Value;

/// Something worth recording. Serialized with its name under `event`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The daemon started.
    Startup {
        version: String,
        pid: u32,
        config: String,
        hub_url: String,
    },
    /// A config key was accepted but is not used, or is unknown.
    ConfigWarning { message: String },
    /// Opening the WebSocket.
    WsConnecting { url: String, attempt: u32 },
    /// The WebSocket handshake completed.
    WsOpen { url: String },
    /// Connecting failed (refused, DNS, TLS, HTTP upgrade refused...).
    WsConnectError { error: String },
    /// `identify` went out.
    IdentifySent { reason: &'static str },
    /// The hub accepted our identity.
    Identified { hub_agent_id: String },
    /// The hub refused our token: the person must fix the config.
    AuthFailed { error: String, hint: String },
    /// An error frame from the hub.
    HubError { error: String, detail: Option<Value> },
    /// The hub's rate limiter dropped a frame.
    RateLimited { retry_after_ms: u64, tier: String },
    /// The next connection attempt is scheduled.
    ReconnectScheduled {
        delay_ms: u64,
        attempt: u32,
        reason: String,
    },
    /// A deadline passed without an answer: the link is treated as dead.
    HeartbeatTimeout {
        waiting_for: &'static str,
        waited_ms: u64,
    },
    /// The WebSocket closed.
    WsClose { code: Option<u16>, reason: String },
    /// A frame the sidecar could not parse.
    MalformedFrame { error: String },
    /// A well-formed frame the sidecar has no use for.
    UnhandledMessage { message_type: String },
    /// stdout cannot be written (a closed pipe, a full disk): console output is off from here on;
    /// every event still goes to the log file.
    ConsoleOff { error: String },
    /// The log file held the Node sidecar's log (`time`, `severity`, `message`): it was moved aside
    /// so that one file holds one format.
    NodeLogMovedAside { moved_to: String },
    /// The sidecar is stopping.
    Shutdown { signal: String },
    /// queue.json could not be used and was moved aside: its tasks are not lost, but not resumed.
    QueueCorrupt { moved_to: String, error: String },
    /// queue.json could not be written.
    PersistFailed { error: String },
    /// A task held before the restart, to be reported to the hub.
    TaskRecovered {
        task_id: String,
        status: String,
        generation: i64,
    },
    /// A `task_assign` arrived for a new task.
    TaskReceived { task_id: String, generation: i64 },
    /// The task is persisted and `task_accepted` went out.
    TaskAccepted { task_id: String, generation: i64 },
    /// A task was refused with `task_failed` (busy, invalid id, no wake command, disk).
    TaskRefused {
        task_id: String,
        reason: String,
        detail: String,
    },
    /// The hub confirmed a task we hold (task_assign again, task_continue, state_report_ack continue).
    TaskConfirmed {
        task_id: String,
        answer: String,
        generation: i64,
    },
    /// The hub took a task back; it is kept for a while in case it comes back.
    TaskDetached {
        task_id: String,
        answer: String,
        keep_ms: u64,
    },
    /// A detached task was not assigned again in time: the task was dropped; `agent` says what
    /// was done about its agent (stopped, or nothing could be: it was not this sidecar's).
    TaskHandedBack { task_id: String, agent: String },
    /// A woken task ran past `task_timeout_ms`: its agent is stopped and the task failed.
    TaskTimeout { task_id: String, elapsed_ms: u64 },
    /// Every process of the task's agent ended without a result; the task fails after `grace_ms`.
    AgentExited { task_id: String, grace_ms: u64 },
    /// The hub cancelled a task.
    TaskCancelled { task_id: String },
    /// A task's run starts (attempt 1, 2, ...): `execution_chosen` then says how (wake or execute).
    WakeAttempt { task_id: String, attempt: u32 },
    /// A wake attempt ended.
    WakeFinished {
        task_id: String,
        attempt: u32,
        status: String,
        error: Option<String>,
    },
    /// The next wake attempt is scheduled.
    WakeRetryScheduled {
        task_id: String,
        attempt: u32,
        delay_ms: u64,
    },
    /// `{task_id}.started` appeared.
    AgentStarted { task_id: String },
    /// No `.started` within confirmation_timeout_ms.
    ConfirmationTimeout { task_id: String, waited_ms: u64 },
    /// The result file was not a usable JSON object.
    ResultInvalid { task_id: String, error: String },
    /// A result for a task not held was moved to `discarded/`.
    ResultDiscarded { task_id: String, reason: String },
    /// The task has an outcome (it is persisted, then sent).
    TaskOutcome { task_id: String, outcome: String },
    /// The hub acknowledged an outcome.
    OutcomeAcknowledged { task_id: String, status: String },
    /// The hub refused an outcome (stale_generation, invalid_state, not_found).
    OutcomeRefused {
        task_id: String,
        generation: i64,
        reason: String,
    },
    /// More tasks than `max_pending` wait behind the current one; this one is held all the same.
    MaxPendingExceeded {
        task_id: String,
        held: usize,
        max_pending: usize,
    },
    /// queue.json cannot be written: the link is dropped (the hub takes back `task_ids`) and
    /// kept down; queue.json is tried again in `retry_ms`.
    StorageUnwritable {
        error: String,
        task_ids: Vec<String>,
        retry_ms: u64,
    },
    /// queue.json can be written again after the link was held down: connecting.
    StorageWritable { held_down_ms: u64 },
    /// The link is dropped on purpose and kept down (see `storage_unwritable`).
    LinkHeld { reason: String },
    /// A file under a task's name in results_dir is not a regular file (a FIFO, a device...):
    /// it is skipped, never opened.
    FileNotRegular {
        task_id: String,
        file: String,
        kind: String,
    },
    /// results_dir cannot be watched (inotify limits): it is checked every second instead.
    ResultsPolling {
        results_dir: String,
        error: String,
        help: Option<String>,
    },
    /// How a task runs (protocol §11): `target` is `wake`, `ollama`, `claude`, `sidecar` or
    /// `fail`; `why` says what decided it (e.g. `fallback: no ollama endpoint answered`).
    ExecutionChosen {
        task_id: String,
        target: String,
        endpoint: Option<String>,
        model: Option<String>,
        why: String,
    },
    /// An execution failed: the reason goes to the hub as `task_failed`.
    ExecutionFailed { task_id: String, error: String },
    /// A task could not be prepared for its run (its workspace, its delivery branch): it fails
    /// with the reason.
    PrepareFailed { task_id: String, error: String },
    /// A task's preparation went on despite a problem (e.g. a stale workspace used after a
    /// failed refresh).
    PrepareWarning { task_id: String, warning: String },
    /// The task's verification checks started (protocol §11.8; `run_number` 1, 2, ...).
    VerificationStarted { task_id: String, run_number: u32 },
    /// A verification run ended: `status` is the report's (pass, fail, error, skip, auto_pass,
    /// timeout), `summary` says how many checks passed.
    VerificationFinished {
        task_id: String,
        run_number: u32,
        status: String,
        summary: String,
    },
    /// A direct execution failed its checks and runs again with a corrective prompt.
    VerificationRetry { task_id: String, retry: u32, max: u32 },
    /// What delivery did (protocol §11.9): a pull request on `branch`, or why nothing was
    /// pushed (`reason`).
    Delivery {
        task_id: String,
        /// `pr_opened`, `pushed` (no pull request), `nothing`, `withheld` or `failed`.
        status: Option<String>,
        pr_url: Option<String>,
        branch: Option<String>,
        reason: Option<String>,
    },
}

impl Event {
    /// The event's name as written under `event`.
    pub fn name(&self) -> String {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m.get("event").and_then(Value::as_str).unwrap_or("?").to_owned(),
            _ => "?".to_owned(),
        }
    }

    /// A short sentence for a person reading the console.
    pub fn describe(&self) -> String {
        match self {
            Event::Startup {
                version,
                config,
                hub_url,
                ..
            } => {
                format!("agentcom-sidecar {version} starting (config {config}, hub {hub_url})")
            }
            Event::ConfigWarning { message } => format!("warning: {message}"),
            Event::WsConnecting { url, attempt } => format!("connecting to {url} (attempt {attempt})"),
            Event::WsOpen { .. } => "connected; identifying".to_owned(),
            Event::WsConnectError { error } => format!("could not connect: {error}"),
            Event::IdentifySent { reason } => format!("identify sent ({reason})"),
            Event::Identified { hub_agent_id } => format!("identified as {hub_agent_id}"),
            Event::AuthFailed { error, hint } => format!("hub refused the token ({error}): {hint}"),
            Event::HubError { error, .. } => format!("hub error: {error}"),
            Event::RateLimited { retry_after_ms, tier } => {
                format!("rate limited by the hub ({tier} tier), retry in {retry_after_ms} ms")
            }
            Event::ReconnectScheduled {
                delay_ms,
                attempt,
                reason,
            } => {
                format!(
                    "reconnecting in {:.1} s (attempt {attempt}, {reason})",
                    *delay_ms as f64 / 1000.0
                )
            }
            Event::HeartbeatTimeout {
                waiting_for,
                waited_ms,
            } => {
                format!("no {waiting_for} from the hub within {waited_ms} ms: dropping the link")
            }
            Event::WsClose { code, reason } => match code {
                Some(c) if reason.is_empty() => format!("connection closed (code {c})"),
                Some(c) => format!("connection closed (code {c}: {reason})"),
                None => format!("connection lost ({reason})"),
            },
            Event::MalformedFrame { error } => format!("ignored a malformed frame from the hub: {error}"),
            Event::UnhandledMessage { message_type } => format!("ignored a \"{message_type}\" frame"),
            Event::Shutdown { signal } => format!("shutting down ({signal})"),
            Event::ConsoleOff { error } => format!(
                "stdout cannot be written ({error}): console output is off; events still go to the log file"
            ),
            Event::NodeLogMovedAside { moved_to } => format!(
                "the log file held the Node sidecar's log: moved aside to {moved_to}; this file now holds this sidecar's log"
            ),
            Event::QueueCorrupt { moved_to, error } => {
                format!("queue.json was unusable ({error}); moved aside to {moved_to}: inspect it")
            }
            Event::PersistFailed { error } => format!("cannot write queue.json: {error}"),
            Event::TaskRecovered {
                task_id,
                status,
                generation,
            } => {
                format!("found task {task_id} ({status}, generation {generation}) from before the restart")
            }
            Event::TaskReceived { task_id, generation } => {
                format!("task {task_id} assigned (generation {generation})")
            }
            Event::TaskAccepted { task_id, .. } => format!("task {task_id} saved and accepted"),
            Event::TaskRefused {
                task_id,
                reason,
                detail,
            } => format!("refused task {task_id}: {reason} ({detail})"),
            Event::TaskConfirmed {
                task_id,
                answer,
                generation,
            } => {
                format!("the hub confirmed task {task_id} is ours ({answer}, generation {generation})")
            }
            Event::TaskDetached {
                task_id,
                answer,
                keep_ms,
            } => format!(
                "the hub took task {task_id} back ({answer}); keeping it {} s in case it is assigned again",
                keep_ms / 1000
            ),
            Event::TaskHandedBack { task_id, agent } => {
                format!("task {task_id} was not assigned again: task dropped; {agent}")
            }
            Event::TaskTimeout { task_id, elapsed_ms } => format!(
                "task {task_id} ran {} s, past task_timeout_ms: stopping its agent, failing the task",
                elapsed_ms / 1000
            ),
            Event::AgentExited { task_id, grace_ms } => format!(
                "every process of the agent for {task_id} ended without a result: the task fails in {} s unless one is written",
                grace_ms / 1000
            ),
            Event::TaskCancelled { task_id } => format!("task {task_id} cancelled by the hub"),
            Event::WakeAttempt { task_id, attempt } => {
                format!("starting {task_id} (attempt {attempt})")
            }
            Event::WakeFinished {
                task_id,
                attempt,
                status,
                error,
            } => match error {
                Some(e) => format!("wake attempt {attempt} for {task_id}: {status}: {e}"),
                None => format!("wake attempt {attempt} for {task_id}: {status}"),
            },
            Event::WakeRetryScheduled {
                task_id,
                attempt,
                delay_ms,
            } => {
                format!(
                    "retrying the wake for {task_id} in {} s (attempt {attempt})",
                    delay_ms / 1000
                )
            }
            Event::AgentStarted { task_id } => format!("the agent started {task_id}"),
            Event::ConfirmationTimeout { task_id, waited_ms } => {
                format!("no {task_id}.started within {waited_ms} ms: does the agent write it to results_dir?")
            }
            Event::ResultInvalid { task_id, error } => {
                format!("the result for {task_id} is unusable: {error}")
            }
            Event::ResultDiscarded { task_id, reason } => {
                format!("a result for {task_id} was moved to discarded/ ({reason})")
            }
            Event::TaskOutcome { task_id, outcome } => format!("task {task_id} {outcome}"),
            Event::OutcomeAcknowledged { task_id, status } => {
                format!("the hub recorded task {task_id} ({status})")
            }
            Event::OutcomeRefused {
                task_id,
                generation,
                reason,
            } => {
                format!("the hub refused the outcome of {task_id} at generation {generation}: {reason}")
            }
            Event::MaxPendingExceeded {
                task_id,
                held,
                max_pending,
            } => format!(
                "holding task {task_id} beyond max_pending {max_pending} ({held} tasks held): the hub assigned more at once; raise max_pending if this recurs"
            ),
            Event::StorageUnwritable {
                error,
                task_ids,
                retry_ms,
            } => {
                let given_back = if task_ids.is_empty() {
                    String::new()
                } else {
                    format!(" the hub takes back {} without counting a retry;", task_ids.join(", "))
                };
                format!(
                    "cannot write queue.json ({error}): staying disconnected so no task is accepted that cannot be kept;{given_back} trying again in {:.1} s (free disk space or fix the folder's permissions)",
                    *retry_ms as f64 / 1000.0
                )
            }
            Event::StorageWritable { held_down_ms } => format!(
                "queue.json can be written again after {:.1} s: reconnecting",
                *held_down_ms as f64 / 1000.0
            ),
            Event::LinkHeld { reason } => format!("disconnecting and staying away: {reason}"),
            Event::FileNotRegular { file, kind, .. } => {
                format!("skipped {file}: it is {kind}, not a regular file (the agent must write a regular file there)")
            }
            Event::ResultsPolling {
                results_dir,
                error,
                help,
            } => match help {
                Some(help) => format!(
                    "cannot watch results_dir {results_dir} ({error}): checking it every second instead; {help}"
                ),
                None => format!("cannot watch results_dir {results_dir} ({error}): checking it every second instead"),
            },
            Event::ExecutionChosen {
                task_id,
                target,
                endpoint,
                model,
                why,
            } => {
                let at = match (endpoint, model) {
                    (Some(e), Some(m)) => format!(" ({m} at {e})"),
                    (Some(e), None) => format!(" (at {e})"),
                    (None, Some(m)) => format!(" ({m})"),
                    (None, None) => String::new(),
                };
                match target.as_str() {
                    "wake" => format!("task {task_id}: waking the agent: {why}"),
                    "fail" => format!("task {task_id} can be neither executed here nor woken: {why}"),
                    _ => format!("task {task_id}: executing it here with {target}{at}: {why}"),
                }
            }
            Event::ExecutionFailed { task_id, error } => {
                format!("execution of task {task_id} failed: {error}")
            }
            Event::PrepareFailed { task_id, error } => {
                format!("task {task_id} could not be prepared, it fails: {error}")
            }
            Event::PrepareWarning { task_id, warning } => format!("warning: task {task_id}: {warning}"),
            Event::VerificationStarted { task_id, run_number } => {
                format!("task {task_id}: verification run {run_number} started")
            }
            Event::VerificationFinished {
                task_id,
                run_number,
                status,
                summary,
            } => format!("task {task_id}: verification run {run_number}: {status} ({summary})"),
            Event::VerificationRetry { task_id, retry, max } => format!(
                "task {task_id} failed its checks: running it again with a corrective prompt (retry {retry} of {max})"
            ),
            Event::Delivery {
                task_id,
                status,
                pr_url,
                branch,
                reason,
            } => {
                let b = branch.as_deref().unwrap_or("its branch");
                let why = reason.as_deref().unwrap_or("no reason given");
                match (status.as_deref(), pr_url, branch, reason) {
                    // A delivery that stopped (the pipeline's `delivery.status`).
                    (Some("pushed"), ..) => {
                        format!("task {task_id}: branch {b} pushed, but no pull request: {why}")
                    }
                    (Some("nothing"), ..) => format!("task {task_id}: nothing to deliver: {why}"),
                    (Some("withheld"), ..) => format!("task {task_id}: delivery withheld: {why}"),
                    (Some(s), url, ..) if s != "pr_opened" || url.is_none() => {
                        format!("task {task_id}: delivery failed: {why}")
                    }
                    // Delivered, or said only with a reason (no status).
                    // Delivered (a reason here is a side note: labels that could not be added).
                    (_, Some(url), branch, reason) => format!(
                        "task {task_id} delivered: pull request {url}{}{}",
                        branch.as_deref().map(|b| format!(" (branch {b})")).unwrap_or_default(),
                        reason.as_deref().map(|r| format!("; {r}")).unwrap_or_default()
                    ),
                    (_, None, _, Some(why)) => format!("task {task_id} not delivered: {why}"),
                    (_, None, Some(b), None) => format!("task {task_id}: work left on branch {b}"),
                    (_, None, None, None) => format!("task {task_id}: nothing delivered"),
                }
            }
        }
    }
}
