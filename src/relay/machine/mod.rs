//! The task lifecycle as a sans-IO state machine: hub frames, agent files and wake results in;
//! frames, persists, wakes and file moves out.
//!
//! [`Relay`] never touches the disk, a process or the clock. Every input comes with `now`; it says
//! when it next wants [`Relay::handle_timeout`] through [`Relay::poll_timeout`], and the caller
//! carries out its [`RelayAction`]s in order. After each [`RelayAction::Persist`] the caller feeds
//! back [`RelayInput::Persisted`]: a new task is accepted (`task_accepted`) only once it is on disk.

use super::task::{assign_generation, AgentGroup, AssignError, Outcome, TaskRecord};
use crate::event_log::Event;
use crate::protocol::{cut_chars, Outbound, TaskFrame, MAX_REASON_CHARS};
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The relay's tunables (from the config).
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Whether a wake_command is configured; without one every task is refused.
    pub wake_configured: bool,
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
    /// Stop watching this task's files.
    Untrack {
        /// The task.
        task_id: String,
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

/// The first wait before queue.json is tried again after a failed persist.
pub const STORAGE_PROBE_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two tries of queue.json (the wait doubles up to it).
pub const STORAGE_PROBE_MAX: Duration = Duration::from_secs(60);

/// The link is held down because queue.json could not be written.
#[derive(Debug, Clone, Copy, PartialEq)]
struct StorageHold {
    /// When to try queue.json again (None while a probe is out).
    probe_at: Option<Instant>,
    /// Since when the link is held down.
    since: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Accepted, not woken yet (or waiting behind the current task).
    Queued,
    /// Wake attempt running.
    Waking { attempt: u32 },
    /// Waiting to retry the wake.
    RetryAt { attempt: u32, at: Instant },
    /// Woken; waiting for `.started`.
    AwaitStart { deadline: Instant },
    /// The agent confirmed it started.
    Working,
    /// An outcome exists; it waits for the hub's ack.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Standing {
    /// New: waiting for its first persist before `task_accepted`.
    Persisting,
    /// The hub holds it assigned to us on this connection.
    Confirmed,
    /// The link is down; the hub's view is unknown.
    Unknown,
    /// We reported it on this connection and wait for the answer.
    Asked,
    /// The hub took it back; kept until `until` in case it is assigned to us again.
    Detached { until: Instant },
}

#[derive(Debug, Clone)]
struct Held {
    record: TaskRecord,
    phase: Phase,
    standing: Standing,
    /// Loaded from queue.json at start: reported with `task_recovering`, not `state_report`.
    recovered: bool,
    /// `.started` was seen.
    started: bool,
    /// The task timeout and the agent's end.
    watch: AgentWatch,
}

/// What `task_timeout` and `agent_exit_grace` need to know of a held task.
#[derive(Debug, Clone, Default)]
struct AgentWatch {
    /// `.started` was seen while the wake command still ran (the agent ran inside it).
    started_while_waking: bool,
    /// When the agent was woken (for the elapsed time of a timeout) and when it times out.
    woken_at: Option<Instant>,
    timeout_at: Option<Instant>,
    /// Every process of the agent, which ran in our process group, has ended.
    gone: bool,
    /// When a task whose agent is gone without a result fails.
    exit_at: Option<Instant>,
}

impl Held {
    /// Whether the task's timers (task timeout, agent exit) run: woken, not done, not detached.
    fn timed(&self) -> bool {
        !self.is_detached()
            && matches!(
                self.phase,
                Phase::Waking { .. } | Phase::RetryAt { .. } | Phase::AwaitStart { .. } | Phase::Working
            )
    }

    fn status(&self) -> &'static str {
        match self.phase {
            Phase::Queued => "accepted",
            Phase::Waking { .. } | Phase::RetryAt { .. } => "waking",
            Phase::AwaitStart { .. } => "waking_confirmation",
            Phase::Working => "working",
            Phase::Done => "done",
        }
    }

    fn is_detached(&self) -> bool {
        matches!(self.standing, Standing::Detached { .. })
    }
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
            let phase = match (&record.outcome, record.status.as_str()) {
                (Some(_), _) => Phase::Done,
                (None, "working") => Phase::Working,
                // The confirmation timer is not persisted: it starts again when the hub confirms.
                (None, "waking_confirmation") => Phase::AwaitStart {
                    deadline: far_future(),
                },
                // Never woken, or the sidecar died mid-wake: wake (again) once confirmed.
                _ => Phase::Queued,
            };
            relay.log(Event::TaskRecovered {
                task_id: record.task_id.clone(),
                status: record.status.clone(),
                generation: record.generation,
            });
            relay.actions.push_back(RelayAction::Track {
                task_id: record.task_id.clone(),
            });
            relay.held.push(Held {
                started: phase == Phase::Working,
                record,
                phase,
                standing: Standing::Unknown,
                recovered: true,
                watch: AgentWatch::default(),
            });
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

    /// Each held task's id, status (as queue.json says it) and generation, for `status`.
    pub fn snapshot(&self) -> Vec<(String, &'static str, i64)> {
        self.held
            .iter()
            .map(|h| (h.record.task_id.clone(), h.status(), h.record.generation))
            .collect()
    }

    /// Outcomes not yet acknowledged by the hub.
    pub fn outbox_depth(&self) -> usize {
        self.held.iter().filter(|h| h.record.outcome.is_some()).count()
    }

    /// When [`Relay::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for h in &self.held {
            match h.phase {
                Phase::RetryAt { at, .. } => consider(at),
                Phase::AwaitStart { deadline } => consider(deadline),
                _ => {}
            }
            if let Standing::Detached { until } = h.standing {
                consider(until);
            }
            if h.timed() {
                if let Some(t) = h.watch.timeout_at {
                    consider(t);
                }
                if let (Some(t), Phase::Working) = (h.watch.exit_at, h.phase) {
                    consider(t);
                }
            }
        }
        if let Some(t) = self.resend_at {
            consider(t);
        }
        if let Some(t) = self.reask_at {
            consider(t);
        }
        if let Some(t) = self.next_keepalive {
            consider(t);
        }
        if let Some(t) = self.storage_hold.and_then(|h| h.probe_at) {
            consider(t);
        }
        next.filter(|t| *t != far_future())
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

    /// Act on every deadline that has passed by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.held.len() {
            let h = &self.held[i];
            let id = h.record.task_id.clone();
            if let Standing::Detached { until } = h.standing {
                if now >= until {
                    self.hand_back(i);
                    continue;
                }
            }
            if h.timed() && h.watch.timeout_at.is_some_and(|t| now >= t) {
                let elapsed = now.saturating_duration_since(h.watch.woken_at.unwrap_or(now));
                self.timed_out(i, elapsed);
                i += 1;
                continue;
            }
            if h.timed() && h.phase == Phase::Working && h.watch.exit_at.is_some_and(|t| now >= t) {
                self.actions.push_back(RelayAction::Kill { task_id: id });
                let grace = self.settings.agent_exit_grace.as_millis();
                self.finish(
                    i,
                    Outcome::failed(format!(
                        "the agent exited without writing a result (agent_exit_grace_ms {grace} after its \
                         last process ended)"
                    )),
                );
                i += 1;
                continue;
            }
            match h.phase {
                Phase::RetryAt { attempt, at } if now >= at => self.wake(i, attempt, now),
                Phase::AwaitStart { deadline } if now >= deadline => {
                    self.log(Event::ConfirmationTimeout {
                        task_id: id.clone(),
                        waited_ms: self.settings.confirmation_timeout.as_millis() as u64,
                    });
                    self.send_if_up(
                        i,
                        Outbound::WakeResult {
                            task_id: id.clone(),
                            status: "timeout",
                            attempt: None,
                            error: None,
                            reason: Some("confirmation_timeout".into()),
                        },
                    );
                    self.actions.push_back(RelayAction::Kill { task_id: id });
                    self.finish(i, Outcome::failed("confirmation_timeout"));
                }
                _ => {}
            }
            i += 1;
        }
        if self.resend_at.is_some_and(|t| now >= t) {
            self.resend_at = None;
        }
        if self.reask_at.is_some_and(|t| now >= t) {
            self.reask_at = None;
            if self.link_up {
                for i in 0..self.held.len() {
                    if self.held[i].standing == Standing::Asked {
                        let frame = self.ask_frame(i);
                        self.send(frame);
                    }
                }
            }
        }
        if let Some(hold) = self.storage_hold.as_mut() {
            if hold.probe_at.is_some_and(|t| now >= t) {
                hold.probe_at = None;
                let records = self.records();
                self.actions.push_back(RelayAction::ProbeStorage(records));
            }
        }
        if self.next_keepalive.is_some_and(|t| now >= t) {
            self.next_keepalive = Some(now + self.settings.progress_keepalive);
            let alive: Vec<String> = self
                .held
                .iter()
                .filter(|h| h.standing == Standing::Confirmed && h.phase != Phase::Done)
                .map(|h| h.record.task_id.clone())
                .collect();
            for task_id in alive {
                self.send(Outbound::TaskProgress {
                    task_id,
                    progress: None,
                    execution_event: None,
                });
            }
        }
        self.pump(now);
    }

    // ---- link ----

    fn link_up(&mut self, now: Instant) {
        self.link_up = true;
        self.in_flight = None;
        self.next_keepalive = Some(now + self.settings.progress_keepalive);
        for i in 0..self.held.len() {
            let h = &self.held[i];
            if h.is_detached() || h.standing == Standing::Persisting {
                continue;
            }
            let frame = self.ask_frame(i);
            self.send(frame);
            self.held[i].standing = Standing::Asked;
        }
    }

    /// What to ask the hub about held task `i` after a reconnect (or again after `rate_limited`).
    fn ask_frame(&self, i: usize) -> Outbound {
        let h = &self.held[i];
        let r = &h.record;
        if h.recovered {
            Outbound::TaskRecovering {
                task_id: r.task_id.clone(),
                description: r.description.clone(),
                metadata: r.metadata.clone(),
                last_status: h.status().to_owned(),
            }
        } else {
            Outbound::StateReport {
                task_id: r.task_id.clone(),
                status: h.status().to_owned(),
                generation: r.generation,
                assigned_at: r.assigned_at,
            }
        }
    }

    fn link_down(&mut self) {
        self.link_up = false;
        self.in_flight = None;
        self.resend_at = None;
        self.reask_at = None;
        self.next_keepalive = None;
        // The hub reclaims a task the moment the connection drops; it will assign them again.
        self.deferred.clear();
        for h in &mut self.held {
            if matches!(h.standing, Standing::Confirmed | Standing::Asked) {
                h.standing = Standing::Unknown;
            }
        }
    }

    // ---- frames ----

    fn on_frame(&mut self, frame: TaskFrame, now: Instant) {
        match frame {
            TaskFrame::Assign(frame) => {
                let known = frame
                    .get("task_id")
                    .and_then(Value::as_str)
                    .and_then(|id| self.find(id));
                if known.is_none() && self.held.iter().any(|h| h.standing == Standing::Asked) {
                    // Whether we are busy depends on the answers still to come.
                    self.deferred.push_back(frame);
                } else {
                    self.assign(frame, now);
                }
            }
            TaskFrame::Ack { task_id, status } => {
                if status != "accepted" && self.in_flight.as_deref() == Some(task_id.as_str()) {
                    self.in_flight = None;
                    if let Some(i) = self.find(&task_id) {
                        self.log(Event::OutcomeAcknowledged {
                            task_id: task_id.clone(),
                            status,
                        });
                        self.remove(i, RelayAction::ClearFiles { task_id });
                    }
                }
            }
            TaskFrame::Continue { task_id, generation } => {
                if let Some(i) = self.asked(&task_id) {
                    if let Some(g) = generation {
                        self.held[i].record.generation = g;
                    }
                    self.confirm(i, "task_continue", now);
                }
                self.drain_deferred(now);
            }
            TaskFrame::StateReportAck { task_id, action } => {
                if let Some(i) = self.asked(&task_id) {
                    if action == "continue" {
                        self.confirm(i, "state_report_ack continue", now);
                    } else {
                        self.detach(i, "state_report_ack abort", now);
                    }
                }
                self.drain_deferred(now);
            }
            TaskFrame::Reassign { task_id } => {
                if let Some(i) = self.asked(&task_id) {
                    self.detach(i, "task_reassign", now);
                }
                self.drain_deferred(now);
            }
            TaskFrame::Cancelled { task_id } => {
                if let Some(i) = self.find(&task_id) {
                    if self.in_flight.as_deref() == Some(task_id.as_str()) {
                        self.in_flight = None;
                    }
                    self.log(Event::TaskCancelled {
                        task_id: task_id.clone(),
                    });
                    self.actions.push_back(RelayAction::Kill {
                        task_id: task_id.clone(),
                    });
                    if self.settings.cancel_configured {
                        let task = self.held[i].record.clone();
                        self.actions.push_back(RelayAction::RunCancelCommand { task });
                    }
                    self.remove(i, RelayAction::ClearFiles { task_id });
                }
            }
            TaskFrame::RestartSidecar { reason } => self.log(Event::UnhandledMessage {
                message_type: format!("restart_sidecar ({reason})"),
            }),
        }
    }

    fn assign(&mut self, frame: Map<String, Value>, now: Instant) {
        let generation = assign_generation(&frame);
        let record = match TaskRecord::from_assign(&frame, self.now_ms) {
            Ok(r) => r,
            Err(AssignError::InvalidTaskId(id)) => {
                let error = AssignError::InvalidTaskId(id.clone()).to_string();
                self.log(Event::TaskRefused {
                    task_id: cut_chars(&id, 200),
                    reason: "invalid_task_id".into(),
                    detail: format!("{error}; accepted, then failed"),
                });
                // Never task_failed before task_accepted: the hub's agent state machine ignores
                // it and stalls the agent until its 60 s acceptance timeout.
                self.send(Outbound::TaskAccepted { task_id: id.clone() });
                self.send(Outbound::TaskFailed {
                    task_id: id,
                    reason: "invalid_task_id".into(),
                    generation,
                });
                return;
            }
            Err(e @ AssignError::NoTaskId) => {
                self.log(Event::MalformedFrame { error: e.to_string() });
                return;
            }
        };
        let task_id = record.task_id.clone();
        if let Some(i) = self.find(&task_id) {
            return self.adopt(i, generation, now);
        }
        if self.storage_hold.is_some() {
            // The link is being dropped because queue.json cannot be written: the disconnect
            // hands this assignment back too (answering it would cost the task a retry).
            self.log(Event::TaskRefused {
                task_id,
                reason: "storage_unwritable".into(),
                detail: "queue.json cannot be written; not answered, the hub takes it back on the disconnect"
                    .into(),
            });
            return;
        }
        self.log(Event::TaskReceived {
            task_id: task_id.clone(),
            generation,
        });
        let waiting = self
            .held
            .iter()
            .filter(|h| h.phase != Phase::Done && !h.is_detached())
            .count();
        if waiting > self.settings.max_pending {
            // Held all the same: a refusal before task_accepted stalls the agent at the hub and
            // burns the task's retries, and a disconnect returns only the hub's current task.
            self.log(Event::MaxPendingExceeded {
                task_id: task_id.clone(),
                held: waiting + 1,
                max_pending: self.settings.max_pending,
            });
        }
        // Leftovers of an earlier run with this id are not this assignment's work.
        self.actions.push_back(RelayAction::ClearFiles {
            task_id: task_id.clone(),
        });
        let mut held = Held {
            record,
            phase: Phase::Queued,
            standing: Standing::Persisting,
            recovered: false,
            started: false,
            watch: AgentWatch::default(),
        };
        if !self.settings.wake_configured {
            // Accepted (once persisted), then failed with the reason: never task_failed before
            // task_accepted.
            self.log(Event::TaskRefused {
                task_id: task_id.clone(),
                reason: "no_wake_command_configured".into(),
                detail:
                    "no wake_command in the config: set one so the agent can be woken; accepted, then failed"
                        .into(),
            });
            held.phase = Phase::Done;
            held.record.outcome = Some(Outcome::failed("no_wake_command_configured"));
        }
        self.held.push(held);
        self.persist();
    }

    /// The hub assigned a task we already hold: take its generation, accept again, do not wake again.
    fn adopt(&mut self, i: usize, generation: i64, now: Instant) {
        let h = &mut self.held[i];
        if h.standing == Standing::Persisting {
            return;
        }
        h.record.generation = generation;
        self.confirm(i, "task_assign", now);
    }

    /// The hub holds task `i` assigned to us: persist, accept (again), and carry on with it.
    fn confirm(&mut self, i: usize, why: &str, now: Instant) {
        let h = &mut self.held[i];
        h.standing = Standing::Confirmed;
        h.recovered = false;
        if let Phase::AwaitStart { deadline } = h.phase {
            if deadline == far_future() {
                h.phase = Phase::AwaitStart {
                    deadline: now + self.settings.confirmation_timeout,
                };
            }
        }
        if h.watch.timeout_at.is_none() && h.timed() {
            // Recovered from queue.json: the time it ran before the restart counts (wall clock).
            let before = h
                .record
                .woken_at
                .map(|w| Duration::from_millis(self.now_ms.saturating_sub(w).max(0) as u64))
                .unwrap_or_default()
                .min(self.settings.task_timeout);
            let woken = now.checked_sub(before).unwrap_or(now);
            h.watch.woken_at = Some(woken);
            h.watch.timeout_at = Some(now + (self.settings.task_timeout - before));
            if h.record.woken_at.is_none() {
                h.record.woken_at = Some(self.now_ms);
            }
        }
        let (task_id, generation) = (h.record.task_id.clone(), h.record.generation);
        self.log(Event::TaskConfirmed {
            task_id: task_id.clone(),
            answer: why.to_owned(),
            generation,
        });
        self.persist();
        // The hub's new AgentFSM waits 60 s for task_accepted after a reconnect (C6).
        self.send(Outbound::TaskAccepted {
            task_id: task_id.clone(),
        });
        self.actions.push_back(RelayAction::Track { task_id });
    }

    fn detach(&mut self, i: usize, why: &str, now: Instant) {
        let until = now + self.settings.readopt_window;
        self.held[i].standing = Standing::Detached { until };
        self.log(Event::TaskDetached {
            task_id: self.held[i].record.task_id.clone(),
            answer: why.to_owned(),
            keep_ms: self.settings.readopt_window.as_millis() as u64,
        });
    }

    /// The readopt window passed: stop the agent and let the task go.
    fn hand_back(&mut self, i: usize) {
        let h = &self.held[i];
        let task_id = h.record.task_id.clone();
        let groups = &h.record.agent_groups;
        let woken = h.started
            || h.record.wake_attempts > 0
            || h.phase != Phase::Queued
            || matches!(
                h.record.status.as_str(),
                "waking" | "waking_confirmation" | "working"
            );
        let agent = if !groups.is_empty() {
            let ids: Vec<String> = groups.iter().map(|g| g.pgid.to_string()).collect();
            format!("stopping its agent (process group {})", ids.join(", "))
        } else if woken {
            "nothing could be stopped: its agent was not started by this sidecar (the Node \
             sidecar's child, or one whose process group cannot be recognised after a restart)"
                .to_owned()
        } else {
            "its agent was never woken".to_owned()
        };
        self.log(Event::TaskHandedBack {
            task_id: task_id.clone(),
            agent,
        });
        self.actions.push_back(RelayAction::Kill {
            task_id: task_id.clone(),
        });
        let cleanup = if self.held[i].record.outcome.is_some() {
            RelayAction::DiscardResult { task_id }
        } else {
            RelayAction::ClearFiles { task_id }
        };
        self.remove(i, cleanup);
    }

    fn asked(&self, task_id: &str) -> Option<usize> {
        self.find(task_id)
            .filter(|i| self.held[*i].standing == Standing::Asked)
    }

    fn drain_deferred(&mut self, now: Instant) {
        while !self.held.iter().any(|h| h.standing == Standing::Asked) {
            let Some(frame) = self.deferred.pop_front() else {
                break;
            };
            self.assign(frame, now);
        }
    }

    fn outcome_refused(&mut self, reason: String, now: Instant) {
        let Some(task_id) = self.in_flight.take() else {
            self.log(Event::HubError {
                error: reason,
                detail: None,
            });
            return;
        };
        let Some(i) = self.find(&task_id) else { return };
        let generation = self.held[i].record.generation;
        self.log(Event::OutcomeRefused {
            task_id: task_id.clone(),
            generation,
            reason: reason.clone(),
        });
        if reason == "stale_generation" {
            // The hub moved on to another generation: it may assign the task to us again.
            self.detach(i, "stale_generation", now);
        } else {
            self.remove(i, RelayAction::DiscardResult { task_id });
        }
    }

    // ---- persistence ----

    fn persist(&mut self) {
        let records = self.records();
        self.actions.push_back(RelayAction::Persist(records));
    }

    /// The held tasks as queue.json holds them.
    fn records(&self) -> Vec<TaskRecord> {
        self.held
            .iter()
            .map(|h| {
                let mut r = h.record.clone();
                r.status = h.status().to_owned();
                r
            })
            .collect()
    }

    fn persisted(&mut self, result: Result<(), String>, now: Instant) {
        let fresh: Vec<usize> = (0..self.held.len())
            .filter(|i| self.held[*i].standing == Standing::Persisting)
            .collect();
        match result {
            Ok(()) => {
                if !fresh.is_empty() {
                    self.probe_delay = STORAGE_PROBE_FIRST;
                }
                for i in fresh {
                    let task_id = self.held[i].record.task_id.clone();
                    self.held[i].standing = Standing::Confirmed;
                    self.send(Outbound::TaskAccepted {
                        task_id: task_id.clone(),
                    });
                    self.log(Event::TaskAccepted {
                        task_id: task_id.clone(),
                        generation: self.held[i].record.generation,
                    });
                    self.actions.push_back(RelayAction::Track { task_id });
                }
            }
            Err(error) => {
                self.log(Event::PersistFailed { error: error.clone() });
                if fresh.is_empty() {
                    return;
                }
                // Not accepted, so not ours: neither answered (a task_failed before
                // task_accepted stalls the agent and costs a retry) nor kept. Dropping the link
                // makes the hub take the task back at once without counting a retry.
                let mut ids = Vec::new();
                for i in fresh.into_iter().rev() {
                    ids.push(self.held.remove(i).record.task_id);
                }
                ids.reverse();
                self.hold_link(&error, &ids, now);
            }
        }
    }

    /// queue.json cannot be written: drop the link and stay away until a probe succeeds.
    fn hold_link(&mut self, error: &str, ids: &[String], now: Instant) {
        let delay = self.probe_delay;
        self.probe_delay = (delay * 2).min(STORAGE_PROBE_MAX);
        let since = self.storage_hold.map_or(now, |h| h.since);
        self.storage_hold = Some(StorageHold {
            probe_at: Some(now + delay),
            since,
        });
        self.log(Event::StorageUnwritable {
            error: cut_chars(error, MAX_REASON_CHARS),
            task_ids: ids.to_vec(),
            retry_ms: delay.as_millis() as u64,
        });
        self.actions.push_back(RelayAction::HoldLink {
            reason: cut_chars(&format!("queue.json cannot be written: {error}"), 200),
        });
    }

    fn storage_probed(&mut self, result: Result<(), String>, now: Instant) {
        let Some(hold) = self.storage_hold else { return };
        match result {
            Ok(()) => {
                self.storage_hold = None;
                self.log(Event::StorageWritable {
                    held_down_ms: now.saturating_duration_since(hold.since).as_millis() as u64,
                });
                self.actions.push_back(RelayAction::ReleaseLink);
            }
            Err(error) => {
                let delay = self.probe_delay;
                self.probe_delay = (delay * 2).min(STORAGE_PROBE_MAX);
                self.storage_hold = Some(StorageHold {
                    probe_at: Some(now + delay),
                    ..hold
                });
                self.log(Event::StorageUnwritable {
                    error: cut_chars(&error, MAX_REASON_CHARS),
                    task_ids: Vec::new(),
                    retry_ms: delay.as_millis() as u64,
                });
            }
        }
    }

    // ---- the agent ----

    fn wake(&mut self, i: usize, attempt: u32, now: Instant) {
        let now_ms = self.now_ms;
        let timeout = self.settings.task_timeout;
        let h = &mut self.held[i];
        if h.watch.timeout_at.is_none() {
            h.watch.woken_at = Some(now);
            h.watch.timeout_at = Some(now + timeout);
            h.record.woken_at = Some(now_ms);
        }
        h.watch.gone = false;
        h.watch.exit_at = None;
        h.watch.started_while_waking = false;
        h.phase = Phase::Waking { attempt };
        h.record.wake_attempts = attempt;
        h.record.status = "waking".into();
        let task = h.record.clone();
        self.log(Event::WakeAttempt {
            task_id: task.task_id.clone(),
            attempt,
        });
        self.persist();
        self.actions.push_back(RelayAction::Wake { task, attempt });
    }

    fn wake_finished(&mut self, task_id: &str, attempt: u32, end: WakeEnd, now: Instant) {
        let Some(i) = self.find(task_id) else { return };
        let (status, error) = match &end {
            WakeEnd::Success => ("success", None),
            WakeEnd::Failed(e) => ("failed", Some(cut_chars(e, MAX_REASON_CHARS))),
            WakeEnd::Timeout => (
                "timeout",
                Some("wake_command ran past wake_timeout_ms; its process group was killed".to_owned()),
            ),
        };
        self.log(Event::WakeFinished {
            task_id: task_id.to_owned(),
            attempt,
            status: status.to_owned(),
            error: error.clone(),
        });
        self.send_if_up(
            i,
            Outbound::WakeResult {
                task_id: task_id.to_owned(),
                status,
                attempt: Some(attempt),
                error: error.clone(),
                reason: None,
            },
        );
        let h = &mut self.held[i];
        if h.phase != (Phase::Waking { attempt }) {
            return; // done or cancelled meanwhile
        }
        if end == WakeEnd::Success || h.started {
            h.phase = if h.started {
                Phase::Working
            } else {
                Phase::AwaitStart {
                    deadline: now + self.settings.confirmation_timeout,
                }
            };
            self.persist();
        } else if let Some(delay) = self.settings.wake_retry_delays.get(attempt as usize - 1).copied() {
            h.phase = Phase::RetryAt {
                attempt: attempt + 1,
                at: now + delay,
            };
            self.log(Event::WakeRetryScheduled {
                task_id: task_id.to_owned(),
                attempt: attempt + 1,
                delay_ms: delay.as_millis() as u64,
            });
        } else {
            let reason = format!(
                "wake_failed_after_{attempt}_attempts: {}",
                error.unwrap_or_default()
            );
            self.finish(i, Outcome::failed(reason));
        }
    }

    fn started(&mut self, task_id: &str, now: Instant) {
        let Some(i) = self.find(task_id) else { return };
        let h = &mut self.held[i];
        if h.started || h.phase == Phase::Done {
            return;
        }
        h.started = true;
        if matches!(h.phase, Phase::Waking { .. }) {
            h.watch.started_while_waking = true;
        }
        if matches!(
            h.phase,
            Phase::Queued | Phase::AwaitStart { .. } | Phase::RetryAt { .. }
        ) {
            h.phase = Phase::Working;
        }
        self.log(Event::AgentStarted {
            task_id: task_id.to_owned(),
        });
        self.persist();
        self.start_exit_grace(i, now);
    }

    /// Every process of task `task_id`'s agent ended. It counts only when the agent ran in the
    /// group we watch: a process outlived the wake shell, or `.started` came while the shell
    /// ran. A wake command that only notified an agent running elsewhere (its group empties as
    /// it returns, before `.started`) is covered by `task_timeout_ms` instead.
    fn agent_gone(&mut self, task_id: &str, outlived_wake: bool, now: Instant) {
        let Some(i) = self.find(task_id) else { return };
        let h = &mut self.held[i];
        // Kept while detached too: it applies again if the hub assigns the task back.
        if !matches!(
            h.phase,
            Phase::RetryAt { .. } | Phase::AwaitStart { .. } | Phase::Working
        ) {
            return;
        }
        if outlived_wake || h.watch.started_while_waking {
            h.watch.gone = true;
            self.start_exit_grace(i, now);
        }
    }

    /// Once the agent is gone and has started, its result has `agent_exit_grace` to appear.
    fn start_exit_grace(&mut self, i: usize, now: Instant) {
        let h = &mut self.held[i];
        if h.watch.gone && h.started && h.phase == Phase::Working && h.watch.exit_at.is_none() {
            h.watch.exit_at = Some(now + self.settings.agent_exit_grace);
            let task_id = h.record.task_id.clone();
            self.log(Event::AgentExited {
                task_id,
                grace_ms: self.settings.agent_exit_grace.as_millis() as u64,
            });
        }
    }

    /// Task `i` ran past `task_timeout`: stop its agent, fail it with the time it ran.
    fn timed_out(&mut self, i: usize, elapsed: Duration) {
        let task_id = self.held[i].record.task_id.clone();
        let stopped = if self.held[i].record.agent_groups.is_empty() {
            "its agent was not started by this sidecar and could not be stopped"
        } else {
            "its processes were stopped"
        };
        let elapsed_ms = elapsed.as_millis() as u64;
        self.log(Event::TaskTimeout {
            task_id: task_id.clone(),
            elapsed_ms,
        });
        self.actions.push_back(RelayAction::Kill { task_id });
        let reason = format!(
            "task_timeout: the agent ran {} (task_timeout_ms {}); {stopped}",
            human_duration(elapsed),
            self.settings.task_timeout.as_millis()
        );
        self.finish(i, Outcome::failed(reason));
    }

    fn result(&mut self, task_id: &str, file: ResultFile, _now: Instant) {
        let Some(i) = self
            .find(task_id)
            .filter(|i| self.held[*i].standing != Standing::Persisting)
        else {
            self.log(Event::ResultDiscarded {
                task_id: task_id.to_owned(),
                reason: "no such task is held".into(),
            });
            self.actions.push_back(RelayAction::DiscardResult {
                task_id: task_id.to_owned(),
            });
            return;
        };
        if self.held[i].phase == Phase::Done {
            return;
        }
        let outcome = match file {
            ResultFile::Object(result) => Outcome::from_result(result),
            ResultFile::Invalid(why) => {
                self.log(Event::ResultInvalid {
                    task_id: task_id.to_owned(),
                    error: why,
                });
                Outcome::failed("result_invalid")
            }
        };
        self.finish(i, outcome);
    }

    /// Task `i` has its outcome: persist it before it is sent, and move on to the next task.
    fn finish(&mut self, i: usize, outcome: Outcome) {
        let h = &mut self.held[i];
        h.phase = Phase::Done;
        let kind = match &outcome {
            Outcome::Complete { .. } => "complete".to_owned(),
            Outcome::Failed { reason } => format!("failed: {}", cut_chars(reason, 200)),
        };
        h.record.outcome = Some(outcome);
        self.log(Event::TaskOutcome {
            task_id: self.held[i].record.task_id.clone(),
            outcome: kind,
        });
        self.persist();
    }

    // ---- plumbing ----

    /// Send outcomes (one at a time) and wake the next task.
    fn pump(&mut self, now: Instant) {
        if self.link_up && self.in_flight.is_none() && self.resend_at.is_none_or(|t| now >= t) {
            self.resend_at = None;
            if let Some(h) = self
                .held
                .iter()
                .find(|h| h.standing == Standing::Confirmed && h.record.outcome.is_some())
            {
                let r = &h.record;
                let frame = match r.outcome.clone().expect("filtered") {
                    Outcome::Complete { result, tokens_used } => Outbound::TaskComplete {
                        task_id: r.task_id.clone(),
                        generation: r.generation,
                        result,
                        tokens_used,
                    },
                    Outcome::Failed { reason } => Outbound::TaskFailed {
                        task_id: r.task_id.clone(),
                        reason,
                        generation: r.generation,
                    },
                };
                self.in_flight = Some(r.task_id.clone());
                self.send(frame);
            }
        }
        // Wake the first task that is not done, once the hub confirms it and nothing runs before it.
        let current = self
            .held
            .iter()
            .position(|h| h.phase != Phase::Done && !h.is_detached());
        if let Some(i) = current {
            if self.held[i].phase == Phase::Queued && self.held[i].standing == Standing::Confirmed {
                let attempt = self.held[i].record.wake_attempts + 1;
                self.wake(i, attempt, now);
            }
        }
    }

    fn remove(&mut self, i: usize, cleanup: RelayAction) {
        let h = self.held.remove(i);
        self.actions.push_back(RelayAction::Untrack {
            task_id: h.record.task_id,
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

/// `1 h 2 min 3 s`, `4 min 5 s`, `6 s`, `0.25 s`.
fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h} h {m} min {s} s")
    } else if m > 0 {
        format!("{m} min {s} s")
    } else if secs > 0 {
        format!("{s} s")
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// A deadline that never comes (for a confirmation timer that restarts on confirmation).
fn far_future() -> Instant {
    use std::sync::OnceLock;
    static FAR: OnceLock<Instant> = OnceLock::new();
    *FAR.get_or_init(|| Instant::now() + Duration::from_secs(100 * 365 * 86_400))
}

#[cfg(test)]
mod tests;
