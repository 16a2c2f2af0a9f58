//! The hub's task queue (TaskQueue) and the agents' state machines (AgentFSM), free of I/O.
//!
//! Works on raw `serde_json::Value`; the scheduler ([`super::scheduler`]) decides who gets
//! what and pushes the frames.

use std::collections::HashMap;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::complexity::{self, Signals};

pub use super::spec::TaskSpec;

/// A snapshot of a task as `GET /api/tasks/:id` shows it (the modelled fields).
#[derive(Clone, Debug)]
pub struct TaskRecord {
    /// `task-` + 16 hex digits.
    pub task_id: String,
    /// `queued`, `assigned`, `completed` or `dead_letter`.
    pub status: String,
    /// The fencing generation: 0 when queued first, +1 on every assignment and every reclaim or retry.
    pub generation: u64,
    /// The agent it is (or was last) assigned to: kept after completion and dead-letter, cleared
    /// when a failure puts it back in the queue.
    pub assigned_to: Option<String>,
    /// Failures so far.
    pub retry_count: u32,
    /// `result` of the accepted `task_complete`.
    pub result: Option<Value>,
    /// The `complexity` object computed at submit time (`{effective_tier, source,
    /// explicit_tier, inferred:{tier, confidence}}`).
    pub complexity: Value,
    /// The last placement's routing decision as stored (the 8 wire keys plus
    /// `candidate_count`, `decided_at`, `fallback_from_tier`); None before the first placement.
    pub routing_decision: Option<Value>,
    /// `verification_report` of the accepted `task_complete`, verbatim (None when null/absent).
    pub verification_report: Option<Value>,
    /// `verification_history` of the accepted `task_complete`, verbatim (`[]` when null/absent).
    pub verification_history: Vec<Value>,
    /// `max_verification_retries` as stored (capped at 5; 5 when omitted).
    pub max_verification_retries: i64,
    /// `tokens_used` of the accepted `task_complete` (top-level, else `result.tokens_used`).
    pub tokens_used: Option<i64>,
    /// The last failure's `error`, else `reason`, else "unknown".
    pub last_error: Option<String>,
    /// `(event, details)`, oldest first. String details as they are (`queued` "submitted",
    /// `reclaimed` "agent_disconnect", `retry`/`dead_letter` the error); object details as
    /// compact JSON with sorted keys (`assigned` `{"agent_id":"a","generation":1}`,
    /// `completed` `{"tokens_used":5}`).
    pub history: Vec<(String, Option<String>)>,
}

/// A snapshot of an agent's state machine, as `GET /api/agents/:id/state` shows it.
#[derive(Clone, Debug)]
pub struct AgentState {
    /// `idle`, `assigned` or `working`.
    pub fsm_state: String,
    /// The task the FSM holds, if any.
    pub current_task_id: Option<String>,
    /// E.g. `unresponsive` after an acceptance timeout (it stays set).
    pub flags: Vec<String>,
}

/// One task in the queue.
#[derive(Clone, Debug)]
pub struct Task {
    /// The modelled record.
    pub rec: TaskRecord,
    /// From the spec.
    pub description: String,
    /// From the spec.
    pub metadata: Value,
    /// From the spec.
    pub needed: Vec<String>,
    /// From the spec.
    pub max_retries: u32,
    /// From the spec.
    pub file_hints: Vec<Value>,
    /// From the spec.
    pub verification_steps: Vec<Value>,
    /// The classification's counts (for `classification_reason`).
    pub signals: Signals,
    /// Submission order (the FIFO key; kept across reclaims and retries).
    pub seq: u64,
    /// Last touch (the stuck sweep's clock).
    pub updated_at: Instant,
    /// Submission time on tokio's clock (`created_at` for the TTL sweep; never reset, C31).
    pub created: Instant,
    /// Everything else `POST /api/tasks` took and `GET /api/tasks/:id` shows.
    pub extra: Extra,
}

impl Task {
    /// The task as `GET /api/tasks/:id` shows it (30 fields; history newest first).
    pub fn to_json(&self) -> Value {
        let (t, rec, x) = (self, &self.rec, &self.extra);
        json!({
            "id": rec.task_id, "description": t.description, "metadata": t.metadata,
            "priority": x.priority, "status": rec.status, "assigned_to": rec.assigned_to,
            "assigned_at": x.assigned_at, "generation": rec.generation, "retry_count": rec.retry_count,
            "max_retries": t.max_retries, "needed_capabilities": t.needed, "last_error": rec.last_error,
            "complete_by": x.complete_by, "submitted_by": x.submitted_by, "created_at": x.created_at,
            "updated_at": x.updated_at, "result": rec.result, "tokens_used": rec.tokens_used,
            "history": x.history, "repo": x.repo, "branch": x.branch, "file_hints": t.file_hints,
            "success_criteria": x.success_criteria, "verification_steps": t.verification_steps,
            "complexity": rec.complexity, "verification_report": rec.verification_report,
            "verification_history": rec.verification_history,
            "max_verification_retries": rec.max_verification_retries,
            "routing_decision": rec.routing_decision, "depends_on": x.depends_on, "goal_id": x.goal_id,
        })
    }
}

/// A task's fields beyond the modelled record: the rest of the spec and the wall-clock times.
#[derive(Clone, Debug)]
pub struct Extra {
    /// 0 (urgent) to 3 (low).
    pub priority: u8,
    /// Epoch ms of the submission.
    pub created_at: u64,
    /// Epoch ms of the last change.
    pub updated_at: u64,
    /// Epoch ms of the current assignment (None while queued).
    pub assigned_at: Option<u64>,
    /// From the spec.
    pub complete_by: Option<i64>,
    /// From the spec.
    pub repo: Option<String>,
    /// From the spec.
    pub branch: Option<String>,
    /// From the spec.
    pub success_criteria: Vec<Value>,
    /// From the spec.
    pub skip_verification: bool,
    /// From the spec.
    pub verification_timeout_ms: Option<i64>,
    /// From the spec.
    pub depends_on: Vec<String>,
    /// From the spec.
    pub goal_id: Option<String>,
    /// From the spec.
    pub assign_to: Option<String>,
    /// From the spec.
    pub submitted_by: String,
    /// `{event, timestamp, details}` entries, newest first, at most [`HISTORY_CAP`].
    pub history: Vec<Value>,
}

/// How many history entries a record keeps (the newest).
pub const HISTORY_CAP: usize = 50;

/// One agent's state machine.
#[derive(Clone, Debug)]
pub struct Fsm {
    /// `idle`, `assigned` or `working`.
    pub state: &'static str,
    /// The task it holds.
    pub current: Option<String>,
    /// Sticky flags such as `unresponsive`.
    pub flags: Vec<String>,
    /// Capabilities from identify (strings only).
    pub capabilities: Vec<String>,
    /// The generation of the assignment that made `current` (which acceptance timer is live).
    pub generation: u64,
    /// `name` from identify (the agent_id when absent).
    pub name: String,
    /// Epoch ms of the identify that made the FSM.
    pub connected_at: u64,
    /// Epoch ms of the last change of `state`.
    pub last_state_change: u64,
    /// The connection whose identify made it: that socket's close is its `:DOWN`.
    pub conn: u64,
    /// Which FSM this is (each identify makes a new one): a timer armed by an older one is dead.
    pub epoch: u64,
}

impl Fsm {
    /// A fresh idle FSM.
    pub fn new(capabilities: Vec<String>) -> Fsm {
        let now = super::epoch_ms();
        Fsm {
            state: "idle",
            current: None,
            flags: Vec::new(),
            capabilities,
            generation: 0,
            name: String::new(),
            connected_at: now,
            last_state_change: now,
            conn: 0,
            epoch: 0,
        }
    }

    /// Moves to `state`, stamping `last_state_change` when it changes.
    pub fn set_state(&mut self, state: &'static str) {
        if self.state != state {
            self.state = state;
            self.last_state_change = super::epoch_ms();
        }
    }

    /// Back to idle without a task.
    pub fn idle(&mut self) {
        self.set_state("idle");
        self.current = None;
    }

    /// The public snapshot.
    pub fn snapshot(&self) -> AgentState {
        AgentState {
            fsm_state: self.state.to_string(),
            current_task_id: self.current.clone(),
            flags: self.flags.clone(),
        }
    }
}

/// What an accepted `task_complete` stores (§11.7).
#[derive(Clone, Debug, Default)]
pub struct Completion {
    /// `result`, verbatim (None when null or absent).
    pub result: Option<Value>,
    /// Top-level `tokens_used`, else `result.tokens_used`.
    pub tokens_used: Option<i64>,
    /// `verification_report`, verbatim (None when null or absent).
    pub verification_report: Option<Value>,
    /// `verification_history`, verbatim (`[]` when null or absent).
    pub verification_history: Vec<Value>,
}

/// Why `task_complete` / `task_failed` was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such task (never submitted, cancelled, or an admin push).
    NotFound,
    /// The generation does not match.
    StaleGeneration,
    /// The task is not assigned (e.g. already completed).
    InvalidState,
}

impl Refusal {
    /// The reason text after `task_complete_failed: `.
    pub fn text(self) -> &'static str {
        match self {
            Refusal::NotFound => "not_found",
            Refusal::StaleGeneration => "stale_generation",
            Refusal::InvalidState => "invalid_state",
        }
    }
}

/// The task table and the FSMs.
#[derive(Debug, Default)]
pub struct Tasks {
    /// task_id -> task.
    pub map: HashMap<String, Task>,
    /// agent_id -> FSM.
    pub fsms: HashMap<String, Fsm>,
    /// Last submission number.
    pub next_seq: u64,
    /// The scheduler race knob.
    pub double_assign: bool,
    /// Last FSM epoch handed out.
    pub next_epoch: u64,
}

fn detail_text(details: Value) -> Option<String> {
    match details {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(super::wire_text(&other)),
    }
}

pub(super) fn push_history(task: &mut Task, event: &str, details: Value) {
    let now = super::epoch_ms();
    task.extra.updated_at = now;
    task.extra
        .history
        .insert(0, json!({"event": event, "timestamp": now, "details": details}));
    task.extra.history.truncate(HISTORY_CAP);
    task.rec.history.push((event.to_string(), detail_text(details)));
}

/// A fresh `task-` + 16 hex id.
pub fn new_task_id() -> String {
    let hex: String = (0..16).map(|_| fastrand::digit(16)).collect();
    format!("task-{hex}")
}

impl Tasks {
    /// Queues a new task and returns its id.
    pub fn submit(&mut self, spec: TaskSpec, now: Instant) -> String {
        let created = super::epoch_ms();
        let mut id = new_task_id();
        while self.map.contains_key(&id) {
            id = new_task_id();
        }
        self.next_seq += 1;
        let metadata = if spec.metadata.is_object() {
            spec.metadata
        } else {
            json!({})
        };
        let (complexity, signals) = complexity::classify(
            &spec.description,
            spec.file_hints.len(),
            spec.verification_steps.len(),
            spec.complexity_tier.as_deref(),
        );
        let mut task = Task {
            rec: TaskRecord {
                task_id: id.clone(),
                status: "queued".into(),
                generation: 0,
                assigned_to: None,
                retry_count: 0,
                result: None,
                complexity,
                routing_decision: None,
                verification_report: None,
                verification_history: Vec::new(),
                max_verification_retries: spec.max_verification_retries.map_or(5, |n| n.min(5)),
                tokens_used: None,
                last_error: None,
                history: Vec::new(),
            },
            description: spec.description,
            metadata,
            needed: spec.needed_capabilities,
            max_retries: spec.max_retries,
            file_hints: spec.file_hints,
            verification_steps: spec.verification_steps,
            signals,
            seq: self.next_seq,
            updated_at: now,
            created: now,
            extra: Extra {
                priority: super::spec::priority_number(&spec.priority),
                created_at: created,
                updated_at: created,
                assigned_at: None,
                complete_by: spec.complete_by,
                repo: spec.repo,
                branch: spec.branch,
                success_criteria: spec.success_criteria,
                skip_verification: spec.skip_verification,
                verification_timeout_ms: spec.verification_timeout_ms,
                depends_on: spec.depends_on,
                goal_id: spec.goal_id,
                assign_to: spec.assign_to,
                submitted_by: spec.submitted_by,
                history: Vec::new(),
            },
        };
        push_history(&mut task, "queued", json!("submitted"));
        self.map.insert(id.clone(), task);
        id
    }

    /// Assigns a queued task to `agent_id` (generation + 1) and, if its FSM is idle, moves it to
    /// assigned. A busy FSM (the scheduler's double assignment) keeps its own task, as the real
    /// AgentFSM refuses the transition from assigned or working (`fsm_invalid_transition`).
    pub fn assign(&mut self, task_id: &str, agent_id: &str, now: Instant) -> Option<Task> {
        let task = self.map.get_mut(task_id)?;
        task.rec.generation += 1;
        task.rec.status = "assigned".into();
        task.rec.assigned_to = Some(agent_id.to_string());
        task.updated_at = now;
        task.extra.assigned_at = Some(super::epoch_ms());
        let generation = task.rec.generation;
        push_history(
            task,
            "assigned",
            json!({"agent_id": agent_id, "generation": generation}),
        );
        let snapshot = task.clone();
        if let Some(fsm) = self.fsms.get_mut(agent_id).filter(|f| f.state == "idle") {
            fsm.set_state("assigned");
            fsm.current = Some(task_id.to_string());
            fsm.generation = generation;
        }
        Some(snapshot)
    }

    /// Puts an assigned task back in the queue (generation + 1, no holder), recording `why`.
    /// Returns false if it was not assigned.
    pub fn reclaim(&mut self, task_id: &str, why: &str, now: Instant) -> bool {
        let Some(task) = self.map.get_mut(task_id) else {
            return false;
        };
        if task.rec.status != "assigned" {
            return false;
        }
        task.rec.generation += 1;
        task.rec.status = "queued".into();
        task.rec.assigned_to = None;
        task.extra.assigned_at = None;
        task.updated_at = now;
        push_history(task, "reclaimed", json!(why));
        true
    }

    /// Refreshes `updated_at` (holds off the stuck sweep).
    pub fn touch(&mut self, task_id: &str, now: Instant) {
        if let Some(task) = self.map.get_mut(task_id) {
            task.updated_at = now;
            task.extra.updated_at = super::epoch_ms();
        }
    }

    fn fenced(&mut self, task_id: &str, generation: u64) -> Result<&mut Task, Refusal> {
        let task = self.map.get_mut(task_id).ok_or(Refusal::NotFound)?;
        if task.rec.generation != generation {
            return Err(Refusal::StaleGeneration);
        }
        if task.rec.status != "assigned" {
            return Err(Refusal::InvalidState);
        }
        Ok(task)
    }

    /// `task_complete`: generation-fenced; on success the sender's FSM goes idle.
    pub fn complete(
        &mut self,
        agent_id: &str,
        task_id: &str,
        generation: u64,
        done: Completion,
        now: Instant,
    ) -> Result<(), Refusal> {
        let task = self.fenced(task_id, generation)?;
        task.rec.status = "completed".into();
        task.rec.result = done.result;
        task.rec.verification_report = done.verification_report;
        task.rec.verification_history = done.verification_history;
        let tokens_used = done.tokens_used;
        task.rec.tokens_used = tokens_used;
        task.updated_at = now;
        push_history(task, "completed", json!({"tokens_used": tokens_used}));
        if let Some(fsm) = self.fsms.get_mut(agent_id) {
            fsm.idle();
        }
        Ok(())
    }

    /// `task_failed`: generation-fenced; retries (back to queued, generation + 1) or
    /// dead-letters. Returns the ack status, `retried` or `dead_letter`.
    ///
    /// The sender's FSM goes idle only from `working` (whichever task failed): while it is
    /// `assigned` (no `task_accepted` yet) the real hub's AgentFSM ignores the event
    /// (`fsm_unexpected_event`) and the agent stays assigned until its acceptance timeout, but
    /// the queue has counted the retry all the same (transcript task_failed_before_accept).
    pub fn fail(
        &mut self,
        agent_id: &str,
        task_id: &str,
        generation: u64,
        error: &str,
        now: Instant,
    ) -> Result<&'static str, Refusal> {
        let task = self.fenced(task_id, generation)?;
        task.rec.last_error = Some(error.to_string());
        task.updated_at = now;
        let status = if task.rec.retry_count.saturating_add(1) >= task.max_retries {
            task.rec.retry_count = task.rec.retry_count.saturating_add(1);
            task.rec.status = "dead_letter".into();
            push_history(task, "dead_letter", json!(error));
            "dead_letter"
        } else {
            task.rec.retry_count += 1;
            task.rec.generation += 1;
            task.rec.status = "queued".into();
            task.rec.assigned_to = None;
            task.extra.assigned_at = None;
            push_history(task, "retry", json!(error));
            "retried"
        };
        if let Some(fsm) = self.fsms.get_mut(agent_id) {
            if fsm.state == "working" {
                fsm.idle();
            }
        }
        Ok(status)
    }

    /// The generation to continue with, if the task is assigned to any agent (`task_recovering`).
    pub fn recover(&self, task_id: &str) -> Option<u64> {
        self.map
            .get(task_id)
            .filter(|t| t.rec.status == "assigned")
            .map(|t| t.rec.generation)
    }

    /// `state_report`: true (and a touch) if the task is assigned to `agent_id` with `generation`.
    pub fn report(&mut self, agent_id: &str, task_id: &str, generation: i64, now: Instant) -> bool {
        match self.map.get_mut(task_id) {
            Some(t)
                if t.rec.status == "assigned"
                    && t.rec.assigned_to.as_deref() == Some(agent_id)
                    && i64::try_from(t.rec.generation).ok() == Some(generation) =>
            {
                t.updated_at = now;
                true
            }
            _ => false,
        }
    }

    /// Queued task ids the scheduler may hand out, by priority then in FIFO (submission)
    /// order: those whose `depends_on` tasks are all completed (or gone).
    pub fn queued(&self) -> Vec<String> {
        let ready = |t: &&Task| {
            t.extra
                .depends_on
                .iter()
                .all(|d| self.map.get(d).is_none_or(|dep| dep.rec.status == "completed"))
        };
        let mut queued: Vec<&Task> = self
            .map
            .values()
            .filter(|t| t.rec.status == "queued")
            .filter(ready)
            .collect();
        queued.sort_by_key(|t| (t.extra.priority, t.seq));
        queued.into_iter().map(|t| t.rec.task_id.clone()).collect()
    }

    /// `POST /api/tasks/:id/retry`: a dead-letter task back in the queue (generation + 1,
    /// retries and error reset). None (404) when the task is not dead-lettered.
    pub fn retry_dead_letter(&mut self, task_id: &str, now: Instant) -> Option<&Task> {
        let task = self
            .map
            .get_mut(task_id)
            .filter(|t| t.rec.status == "dead_letter")?;
        task.rec.status = "queued".into();
        task.rec.retry_count = 0;
        task.rec.assigned_to = None;
        task.rec.generation += 1;
        task.rec.last_error = None;
        task.extra.assigned_at = None;
        task.updated_at = now;
        push_history(task, "queued", json!("retried from dead-letter"));
        Some(task)
    }
}

#[cfg(test)]
#[path = "tasks_tests.rs"]
mod tests;
