//! The task lifecycle as a sans-IO state machine: hub frames, agent files and wake results in;
//! frames, persists, wakes and file moves out.
//!
//! [`Relay`] never touches the disk, a process or the clock. Every input comes with `now`; it says
//! when it next wants [`Relay::handle_timeout`] through [`Relay::poll_timeout`], and the caller
//! carries out its [`RelayAction`]s in order. After each [`RelayAction::Persist`] the caller feeds
//! back [`RelayInput::Persisted`]: a new task is accepted (`task_accepted`) only once it is on disk.

use super::task::{AgentGroup, TaskRecord};
use crate::event_log::Event;
use crate::protocol::{cut_chars, Outbound, TaskFrame};
use held::{AgentWatch, Held, Phase, Standing};
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use storage::StorageHold;
pub use storage::{STORAGE_PROBE_FIRST, STORAGE_PROBE_MAX};

/// The relay's tunables (from the config).
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Whether a wake_command is configured; without one every task is refused.
    pub wake_configured: bool,
    /// Whether the sidecar may carry out routed tasks itself (`direct_execution` is not `off`):
    /// then a routed task is not failed for want of a wake_command (the runner decides).
    pub direct_execution: bool,
    /// Whether a cancel_command is configured.
    pub cancel_configured: bool,
    /// Tasks held waiting behind the current one before each further one is logged as a warning
    /// (`max_pending_exceeded`). An assignment is never refused: a `task_failed` before
    /// `task_accepted` stalls the agent at the hub for 60 s and still costs the task a retry.
    pub max_pending: usize,
    /// Waits before the 2nd, 3rd, ... wake attempt.
    pub wake_retry_delays: Vec<Duration>,
    /// How long after a successful wake the `.started` file may take.
    pub confirmation_timeout: Duration,
    /// Period of the `task_progress` keepalive.
    pub progress_keepalive: Duration,
    /// How long a task the hub took back is kept for re-assignment.
    pub readopt_window: Duration,
    /// How long a woken task may run before its agent is stopped and the task failed.
    pub task_timeout: Duration,
    /// How long after the agent's processes all ended a missing result fails the task.
    pub agent_exit_grace: Duration,
    /// Whether an agent's success result is verified and delivered before it becomes the
    /// outcome (protocol §11.8-§11.9): the task is `verifying` and the relay asks for
    /// [`RelayAction::Finish`], answered with [`RelayInput::Finished`]. Off: the result is the
    /// outcome at once.
    pub finish_results: bool,
}

/// How a wake attempt ended (reported by the I/O shell).
#[derive(Debug, Clone, PartialEq)]
pub enum WakeEnd {
    /// The command exited 0.
    Success,
    /// Non-zero exit, or it could not start.
    Failed(String),
    /// It ran past wake_timeout_ms and its process group was killed.
    Timeout,
}

/// What the agent's result file held.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultFile {
    /// A complete JSON object.
    Object(Map<String, Value>),
    /// Complete, but not an object, or not JSON, or too large: says what.
    Invalid(String),
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayInput {
    /// The hub acknowledged our identity (again).
    LinkUp,
    /// The identified connection is gone.
    LinkDown,
    /// A task frame from the hub.
    Frame(TaskFrame),
    /// The hub refused the outcome in flight (`task_complete_failed: <reason>`, ...).
    OutcomeRefused {
        /// What followed the colon.
        reason: String,
    },
    /// The hub's rate limiter dropped our last frame.
    RateLimited {
        /// When to try again.
        retry_after: Duration,
    },
    /// The result of the last [`RelayAction::Persist`].
    Persisted(Result<(), String>),
    /// The result of the last [`RelayAction::ProbeStorage`].
    StorageProbed(Result<(), String>),
    /// A wake attempt ended.
    WakeFinished {
        /// The task.
        task_id: String,
        /// Which attempt.
        attempt: u32,
        /// How it ended.
        end: WakeEnd,
    },
    /// `{task_id}.started` exists.
    Started {
        /// The task.
        task_id: String,
    },
    /// `{task_id}.json` is complete (for any task id, held or not).
    Result {
        /// The task.
        task_id: String,
        /// What it held.
        file: ResultFile,
    },
    /// A wake command started in this process group (kept with the task until it ends).
    AgentGroup {
        /// The task.
        task_id: String,
        /// The group, with what identifies it.
        group: AgentGroup,
    },
    /// Every process of the task's agent has ended (the I/O shell watches its groups).
    AgentGone {
        /// The task.
        task_id: String,
        /// Whether a process outlived the wake command's shell (an agent it backgrounded).
        outlived_wake: bool,
    },
    /// `{task_id}.progress` changed.
    Progress {
        /// The task.
        task_id: String,
        /// The reported progress.
        progress: i64,
        /// An optional message.
        message: Option<String>,
    },
    /// Something the shell noticed (a file the watcher skipped, a watch fallback): only logged.
    Log(Event),
    /// A runner began carrying out the task itself (an executor, not the agent): the task is
    /// `working` from here, and is run again from the start if the sidecar dies meanwhile.
    Executing {
        /// The task.
        task_id: String,
        /// The wake attempt this answers.
        attempt: u32,
        /// The executor (`ollama`, `claude`, `sidecar`).
        executor: String,
    },
    /// Something an execution streamed, as an `execution_event` object (§11.6), already batched
    /// by the runner: sent as one `task_progress`.
    ExecutionEvent {
        /// The task.
        task_id: String,
        /// The `execution_event` object.
        event: Value,
    },
    /// Whoever runs the task prepared it before its run (protocol §11.9: a workspace for its
    /// `repo`, its delivery branch): `Ok(folder)` is recorded as the task's workspace (None:
    /// nothing to record); `Err(reason)` fails the task with the reason.
    Prepared {
        /// The task.
        task_id: String,
        /// The folder the task works in, or why it could not be prepared.
        outcome: Result<Option<PathBuf>, String>,
    },
    /// A success result was verified and delivered ([`RelayAction::Finish`]): `result` is what
    /// the hub gets, `verification_report`/`verification_history` in it lifted to the top level.
    Finished {
        /// The task.
        task_id: String,
        /// The agent's result with the verification and what delivery did added.
        result: Map<String, Value>,
    },
    /// An execution ended: `Ok(result object)` goes to the hub as `task_complete` (with a top-level
    /// `tokens_used`), `Err(reason)` as `task_failed` (cut to 2000 characters).
    Executed {
        /// The task.
        task_id: String,
        /// The result object, or why it failed.
        outcome: Result<Value, String>,
    },
}

/// Something the I/O shell must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayAction {
    /// Send a frame (the relay only asks while the link is up).
    Send(Outbound),
    /// Write the held tasks to queue.json, then feed back [`RelayInput::Persisted`].
    Persist(Vec<TaskRecord>),
    /// Run the wake command for this task (attempt 1, 2, ...).
    Wake {
        /// The task as `${TASK_JSON}` shows it.
        task: TaskRecord,
        /// Which attempt.
        attempt: u32,
    },
    /// Verify and deliver this success result of a woken agent (with
    /// [`RelaySettings::finish_results`]), then feed back [`RelayInput::Finished`]. A
    /// [`RelayAction::Kill`] for the task stops it.
    Finish {
        /// The task.
        task: TaskRecord,
        /// The result file's object.
        result: Map<String, Value>,
    },
    /// Stop the task's wake process group if it still runs.
    Kill {
        /// The task.
        task_id: String,
    },
    /// Run the cancel_command for this task.
    RunCancelCommand {
        /// The task.
        task: TaskRecord,
    },
    /// Watch this task's files (and report what is already there).
    Track {
        /// The task.
        task_id: String,
    },
    /// Stop watching this task's files: the relay no longer holds the task.
    Untrack {
        /// The task.
        task_id: String,
        /// The folder to settle (`Pipeline::settle`): the task's workspace when it ended without
        /// a complete outcome (failed, cancelled, handed back). A complete task's delivery took
        /// care of its folder, and what is there now may be someone's own work.
        settle: Option<PathBuf>,
    },
    /// Delete `{task_id}.started`, `.json`, `.progress` (and the task file).
    ClearFiles {
        /// The task.
        task_id: String,
    },
    /// Move `{task_id}.json` to `results_dir/discarded/`, and clear the rest.
    DiscardResult {
        /// The task.
        task_id: String,
    },
    /// Record an event.
    Log(Event),
    /// A new task could not be persisted: drop the connection (the hub takes the task back at
    /// once, without counting a retry) and do not connect again until [`RelayAction::ReleaseLink`].
    HoldLink {
        /// Why, for the log.
        reason: String,
    },
    /// queue.json can be written again: connect.
    ReleaseLink,
    /// Write these held tasks to queue.json as a test of the storage, then feed back
    /// [`RelayInput::StorageProbed`].
    ProbeStorage(Vec<TaskRecord>),
}

/// The task lifecycle state machine. See the module docs.
#[derive(Debug)]
pub struct Relay {
    settings: RelaySettings,
    held: Vec<Held>,
    link_up: bool,
    /// The task whose outcome was sent and awaits `task_ack` (or an error frame).
    in_flight: Option<String>,
    resend_at: Option<Instant>,
    /// After a `rate_limited`: when to report again the tasks still waiting for an answer (the
    /// hub dropped a `task_recovering` or `state_report`, and will never answer it).
    reask_at: Option<Instant>,
    next_keepalive: Option<Instant>,
    /// Assignments of other tasks that arrived while we wait for answers about held ones.
    deferred: VecDeque<Map<String, Value>>,
    /// Set while the link is held down for a storage failure.
    storage_hold: Option<StorageHold>,
    /// The next wait between storage probes (doubles; reset once a new task is persisted).
    probe_delay: Duration,
    actions: VecDeque<RelayAction>,
    now_ms: i64,
}

impl Relay {
    /// A relay holding `recovered` (from queue.json at start; reported once the link is up).
    pub fn new(settings: RelaySettings, recovered: Vec<TaskRecord>) -> Relay {
        let mut relay = Relay {
            settings,
            held: Vec::new(),
            link_up: false,
            in_flight: None,
            resend_at: None,
            reask_at: None,
            next_keepalive: None,
            deferred: VecDeque::new(),
            storage_hold: None,
            probe_delay: STORAGE_PROBE_FIRST,
            actions: VecDeque::new(),
            now_ms: 0,
        };
        for record in recovered {
            relay.log(Event::TaskRecovered {
                task_id: record.task_id.clone(),
                status: record.status.clone(),
                generation: record.generation,
            });
            relay.actions.push_back(RelayAction::Track {
                task_id: record.task_id.clone(),
            });
            relay.held.push(Held::recovered(record));
        }
        relay
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<RelayAction> {
        self.actions.pop_front()
    }

    /// Task ids held, in order (for status displays and tests).
    pub fn held_ids(&self) -> Vec<String> {
        self.held.iter().map(|h| h.record.task_id.clone()).collect()
    }

    /// Each held task's id, status (as queue.json says it, except `executing (ollama)`, ... for
    /// a task the sidecar carries out itself) and generation, for `status`.
    pub fn snapshot(&self) -> Vec<(String, &'static str, i64)> {
        self.held
            .iter()
            .map(|h| {
                let status = match (h.phase, h.record.executed_by.as_deref()) {
                    (Phase::Working, Some("ollama")) => "executing (ollama)",
                    (Phase::Working, Some("claude")) => "executing (claude)",
                    (Phase::Working, Some("sidecar")) => "executing (sidecar)",
                    _ => h.status(),
                };
                (h.record.task_id.clone(), status, h.record.generation)
            })
            .collect()
    }

    /// Outcomes not yet acknowledged by the hub.
    pub fn outbox_depth(&self) -> usize {
        self.held.iter().filter(|h| h.record.outcome.is_some()).count()
    }

    /// Feed one input. `now_ms` is the wall clock (epoch ms), used only for a missing `assigned_at`.
    pub fn handle(&mut self, input: RelayInput, now: Instant, now_ms: i64) {
        self.now_ms = now_ms;
        match input {
            RelayInput::LinkUp => self.link_up(now),
            RelayInput::LinkDown => self.link_down(),
            RelayInput::Frame(frame) => self.on_frame(frame, now),
            RelayInput::OutcomeRefused { reason } => self.outcome_refused(reason, now),
            RelayInput::RateLimited { retry_after } => {
                if self.in_flight.take().is_some() {
                    self.resend_at = Some(now + retry_after);
                }
                // The frame the hub dropped may have been a question about a held task: until
                // it is answered, that task sends nothing and new assignments are deferred.
                if self.link_up && self.held.iter().any(|h| h.standing == Standing::Asked) {
                    self.reask_at = Some(now + retry_after);
                }
            }
            RelayInput::Persisted(result) => self.persisted(result, now),
            RelayInput::StorageProbed(result) => self.storage_probed(result, now),
            RelayInput::WakeFinished {
                task_id,
                attempt,
                end,
            } => self.wake_finished(&task_id, attempt, end, now),
            RelayInput::Started { task_id } => self.started(&task_id, now),
            RelayInput::AgentGroup { task_id, group } => {
                if let Some(i) = self.find(&task_id) {
                    let groups = &mut self.held[i].record.agent_groups;
                    if !groups.contains(&group) {
                        // A PID reused by a later wake replaces the group that had it.
                        groups.retain(|g| g.pgid != group.pgid);
                        groups.push(group);
                        self.persist();
                    }
                }
            }
            RelayInput::AgentGone {
                task_id,
                outlived_wake,
            } => self.agent_gone(&task_id, outlived_wake, now),
            RelayInput::Result { task_id, file } => self.result(&task_id, file, now),
            RelayInput::Log(event) => self.log(event),
            RelayInput::Executing {
                task_id,
                attempt,
                executor,
            } => self.executing(&task_id, attempt, executor),
            RelayInput::ExecutionEvent { task_id, event } => self.execution_event(task_id, event),
            RelayInput::Executed { task_id, outcome } => self.executed(&task_id, outcome),
            RelayInput::Prepared { task_id, outcome } => self.prepared(&task_id, outcome),
            RelayInput::Finished { task_id, result } => self.finished(&task_id, result),
            RelayInput::Progress {
                task_id,
                progress,
                message,
            } => {
                if let Some(i) = self.find(&task_id) {
                    let h = &self.held[i];
                    if self.link_up && h.standing == Standing::Confirmed && h.phase != Phase::Done {
                        let execution_event = message
                            .map(|text| json!({"event_type": "progress", "text": cut_chars(&text, 10_000)}));
                        self.send(Outbound::TaskProgress {
                            task_id,
                            progress: Some(progress),
                            execution_event,
                        });
                    }
                }
            }
        }
        self.pump(now);
    }

    fn remove(&mut self, i: usize, cleanup: RelayAction) {
        let h = self.held.remove(i);
        let settle = match h.record.outcome {
            Some(crate::relay::task::Outcome::Complete { .. }) => None,
            _ => h.record.workspace,
        };
        self.actions.push_back(RelayAction::Untrack {
            task_id: h.record.task_id,
            settle,
        });
        self.actions.push_back(cleanup);
        self.persist();
    }

    fn find(&self, task_id: &str) -> Option<usize> {
        self.held.iter().position(|h| h.record.task_id == task_id)
    }

    fn send(&mut self, frame: Outbound) {
        if self.link_up {
            self.actions.push_back(RelayAction::Send(frame));
        }
    }

    fn send_if_up(&mut self, i: usize, frame: Outbound) {
        if self.held[i].standing == Standing::Confirmed {
            self.send(frame);
        }
    }

    fn log(&mut self, event: Event) {
        self.actions.push_back(RelayAction::Log(event));
    }
}

mod agent;
mod exec;
mod finish;
mod held;
mod hub;
mod outbox;
mod storage;
mod timers;

#[cfg(test)]
mod tests;
