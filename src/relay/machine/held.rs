//! What the relay keeps per held task: its [`Phase`] in the lifecycle, its [`Standing`] with the
//! hub, the agent's watch ([`AgentWatch`]), and the phase a task loaded from queue.json resumes
//! from ([`Held::recovered`]).

use crate::relay::task::TaskRecord;
use serde_json::{Map, Value};
use std::time::Instant;

/// Where a held task is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Phase {
    /// Accepted, not woken yet (or waiting behind the current task).
    Queued,
    /// Wake attempt running.
    Waking { attempt: u32 },
    /// Waiting to retry the wake.
    RetryAt { attempt: u32, at: Instant },
    /// Woken; waiting for `.started` until `deadline` (none yet for a task recovered from
    /// queue.json: its timer starts when the hub confirms it).
    AwaitStart { deadline: Option<Instant> },
    /// The agent confirmed it started.
    Working,
    /// The agent's success result is being verified and delivered (`running`: the
    /// [`RelayAction::Finish`] went out; it waits for the hub to confirm the task first).
    Finishing { running: bool },
    /// An outcome exists; it waits for the hub's ack.
    Done,
}

/// What the hub holds of a task, as far as the relay knows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Standing {
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

/// A task the relay holds: its record, and where it stands.
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub(super) record: TaskRecord,
    pub(super) phase: Phase,
    pub(super) standing: Standing,
    /// Loaded from queue.json at start: reported with `task_recovering`, not `state_report`.
    pub(super) recovered: bool,
    /// `.started` was seen.
    pub(super) started: bool,
    /// The task timeout and the agent's end.
    pub(super) watch: AgentWatch,
    /// A runner carries the task out itself (no agent, no agent files).
    pub(super) executing: bool,
    /// The success result being finished (kept from the result file until `Finished`).
    pub(super) finishing: Option<Map<String, Value>>,
}

/// What `task_timeout` and `agent_exit_grace` need to know of a held task.
#[derive(Debug, Clone, Default)]
pub(super) struct AgentWatch {
    /// `.started` was seen while the wake command still ran (the agent ran inside it).
    pub(super) started_while_waking: bool,
    /// When the agent was woken (for the elapsed time of a timeout) and when it times out.
    pub(super) woken_at: Option<Instant>,
    pub(super) timeout_at: Option<Instant>,
    /// Every process of the agent, which ran in our process group, has ended.
    pub(super) gone: bool,
    /// When a task whose agent is gone without a result fails.
    pub(super) exit_at: Option<Instant>,
}

impl Held {
    /// Whether the task's timers (task timeout, agent exit) run: woken, not done, not detached.
    pub(super) fn timed(&self) -> bool {
        !self.is_detached()
            && matches!(
                self.phase,
                Phase::Waking { .. }
                    | Phase::RetryAt { .. }
                    | Phase::AwaitStart { .. }
                    | Phase::Working
                    | Phase::Finishing { .. }
            )
    }

    pub(super) fn status(&self) -> &'static str {
        match self.phase {
            Phase::Queued => "accepted",
            Phase::Waking { .. } | Phase::RetryAt { .. } => "waking",
            Phase::AwaitStart { .. } => "waking_confirmation",
            Phase::Working => "working",
            Phase::Finishing { .. } => "verifying",
            Phase::Done => "done",
        }
    }

    pub(super) fn is_detached(&self) -> bool {
        matches!(self.standing, Standing::Detached { .. })
    }

    /// A task loaded from queue.json at start (reported with `task_recovering` once the link is
    /// up), in the phase it resumes from.
    pub(super) fn recovered(record: TaskRecord) -> Held {
        let phase = match (&record.outcome, record.status.as_str()) {
            (Some(_), _) => Phase::Done,
            // An execution is not resumable (an LLM call, a command): run it again from the
            // start once the hub confirms the task. This covers the Node sidecar's queue.json
            // too: a routed task it was executing itself has no agent to wait for.
            (None, "working" | "waking_confirmation" | "waking") if record.was_executing() => Phase::Queued,
            // A result being verified: its file is reported again once watched, which
            // starts the verification again.
            (None, "working" | "verifying") => Phase::Working,
            // The confirmation timer is not persisted: it starts again when the hub confirms.
            (None, "waking_confirmation") => Phase::AwaitStart { deadline: None },
            // Never woken, or the sidecar died mid-wake: wake (again) once confirmed.
            _ => Phase::Queued,
        };
        Held {
            started: phase == Phase::Working,
            record,
            phase,
            standing: Standing::Unknown,
            recovered: true,
            watch: AgentWatch::default(),
            executing: false,
            finishing: None,
        }
    }
}
