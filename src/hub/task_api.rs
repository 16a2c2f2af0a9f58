//! The task side of the [`EmbeddedHub`] handle, as Rust methods: `POST /api/tasks`,
//! `/api/admin/llm-registry` (register, list, delete),
//! `POST /api/tasks/:id/cancel`, `GET /api/tasks/:id`, `POST /api/admin/push-task`,
//! `POST /api/admin/agents/:id/restart` and `GET /api/agents/:id/state`, plus test knobs.
//! [`submit`] and [`cancel`] are shared with the HTTP handlers ([`super::api_tasks`]).

use std::sync::Arc;

use serde_json::json;
use tokio::time::Instant;

use super::tasks::{self, AgentState, TaskRecord, TaskSpec};
use super::{epoch_ms, llm_health, scheduler, validate, EmbeddedHub, NotConnected, Shared};

/// Queues a task and runs the scheduler: the task_id, or the 422 body (a `complexity_tier`
/// that names no tier, a `depends_on` id the hub does not know).
pub(crate) fn submit(shared: &Arc<Shared>, spec: TaskSpec) -> Result<String, serde_json::Value> {
    let mut errors: Vec<serde_json::Value> = spec
        .complexity_tier
        .as_deref()
        .and_then(validate::tier_error)
        .into_iter()
        .collect();
    let mut st = shared.lock();
    for (i, dep) in spec.depends_on.iter().enumerate() {
        if !st.tasks.map.contains_key(dep) {
            // Our choice of entry: the reference only says unknown ids are an error.
            errors.push(validate::entry(
                &format!("depends_on[{i}]"),
                "invalid_value",
                "unknown task id",
                Some(&json!(dep)),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(validate::failed(errors));
    }
    let id = st.tasks.submit(spec, Instant::now());
    scheduler::schedule(shared, &mut st);
    Ok(id)
}

/// `POST /api/admin/push-task`: a generation-0 `task_assign` straight to the agent's socket.
pub(crate) fn push_task(
    shared: &Arc<Shared>,
    agent_id: &str,
    description: &str,
    metadata: &serde_json::Value,
) -> Result<String, NotConnected> {
    let mut st = shared.lock();
    let task_id = tasks::new_task_id();
    let mut frame = scheduler::push_frame(&task_id, description);
    frame["metadata"] = metadata.clone();
    if !scheduler::push_to(&st, agent_id, &frame) {
        return Err(NotConnected);
    }
    if let Some(fsm) = st.tasks.fsms.get_mut(agent_id).filter(|f| f.state == "idle") {
        fsm.set_state("assigned");
        fsm.current = Some(task_id.clone());
        fsm.generation = 0;
        let epoch = fsm.epoch;
        drop(st);
        scheduler::arm_acceptance(shared, agent_id, &task_id, 0, epoch);
    }
    Ok(task_id)
}

/// Deletes a task (any status); if it was assigned, pushes `task_cancelled` to the agent and
/// moves its FSM to idle. The previous status, None if the task is unknown.
pub(crate) fn cancel(shared: &Arc<Shared>, task_id: &str) -> Option<String> {
    let mut st = shared.lock();
    let task = st.tasks.map.remove(task_id)?;
    if task.rec.status != "assigned" {
        return Some(task.rec.status);
    }
    if let Some(agent_id) = &task.rec.assigned_to {
        let frame = json!({"type": "task_cancelled", "task_id": task_id, "timestamp": epoch_ms()});
        scheduler::push_to(&st, agent_id, &frame);
        if let Some(fsm) = st.tasks.fsms.get_mut(agent_id) {
            if fsm.current.as_deref() == Some(task_id) {
                fsm.idle();
            }
        }
    }
    scheduler::schedule(shared, &mut st);
    Some(task.rec.status)
}

impl EmbeddedHub {
    /// Queues a task (like `POST /api/tasks`) and runs the scheduler; returns the task_id.
    ///
    /// # Panics
    /// When the spec is one `POST /api/tasks` answers with 422 (a `complexity_tier` that is not
    /// a tier): use [`EmbeddedHub::try_submit_task`] to see that answer.
    pub fn submit_task(&self, spec: TaskSpec) -> String {
        match self.try_submit_task(spec) {
            Ok(id) => id,
            Err(body) => panic!("POST /api/tasks would answer 422: {body}"),
        }
    }

    /// `POST /api/tasks`: the new task_id (201), or the 422 body
    /// `{"error":"validation_failed","errors":[…]}` for a `complexity_tier` other than
    /// `trivial|standard|complex|unknown` (the hub's entry) or an unknown `depends_on` id.
    pub fn try_submit_task(&self, spec: TaskSpec) -> Result<String, serde_json::Value> {
        submit(&self.shared, spec)
    }

    /// `POST /api/admin/llm-registry` with `{"host", "port"?, "name"?}` (port 11434 and name
    /// `host:port` by default): registers (or resets) an Ollama endpoint, `unknown` and
    /// unroutable until its first `/api/tags` check. Ok is the 201 body (the endpoint), Err the
    /// 422 body. The body and answer shapes are our choice (the reference gives none).
    pub fn register_llm_endpoint(
        &self,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, serde_json::Value> {
        let invalid = |field: &str, detail: &str| {
            json!({"error": "validation_failed", "errors": [{"field": field, "error": "invalid_value",
                "detail": detail}]})
        };
        let host = body
            .get("host")
            .and_then(serde_json::Value::as_str)
            .filter(|h| !h.is_empty() && h.len() <= 255)
            .ok_or_else(|| invalid("host", "a non-empty string of at most 255 characters"))?;
        let port = match body.get("port") {
            None | Some(serde_json::Value::Null) => 11434,
            Some(p) => p
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| invalid("port", "an integer from 1 to 65535"))?,
        };
        let default_name = format!("{host}:{port}");
        let name = body
            .get("name")
            .and_then(serde_json::Value::as_str)
            .unwrap_or(&default_name);
        let ep = self.shared.lock().llm.upsert(host, port, name, "manual");
        Ok(ep.to_json())
    }

    /// `GET /api/admin/llm-registry`: `{"endpoints":[…]}` in registration order, each
    /// `{id, name, host, port, status, models, source, registered_at, last_checked_at}`.
    pub fn llm_registry(&self) -> serde_json::Value {
        let st = self.shared.lock();
        let endpoints: Vec<serde_json::Value> = st.llm.endpoints.iter().map(|e| e.to_json()).collect();
        json!({"endpoints": endpoints})
    }

    /// `GET /api/admin/llm-registry/:id`: one endpoint (the list's shape), None (404) if unknown.
    pub fn llm_endpoint(&self, id: &str) -> Option<serde_json::Value> {
        let st = self.shared.lock();
        st.llm.endpoints.iter().find(|e| e.id == id).map(|e| e.to_json())
    }

    /// `DELETE /api/admin/llm-registry/:id`: false (404) when no endpoint has that id.
    pub fn delete_llm_endpoint(&self, id: &str) -> bool {
        self.shared.lock().llm.remove(id)
    }

    /// Test knob: runs the health check (`GET /api/tags` on every endpoint) now and waits for
    /// it, instead of waiting for the next 30 s round.
    pub async fn probe_llm_now(&self) {
        llm_health::probe_all(&self.shared).await;
    }

    /// Admin push-task (`POST /api/admin/push-task`): a `task_assign` with generation 0 sent
    /// straight to the agent, not stored in the queue. Moves an idle FSM to assigned (with
    /// its acceptance timer). Returns the new task_id.
    pub async fn push_task(&self, agent_id: &str, description: &str) -> Result<String, NotConnected> {
        push_task(&self.shared, agent_id, description, &json!({}))
    }

    /// `POST /api/tasks/:id/cancel`: deletes the task; if it was assigned, pushes
    /// `task_cancelled` to the agent and moves its FSM to idle. False if the task is unknown.
    pub async fn cancel_task(&self, task_id: &str) -> bool {
        cancel(&self.shared, task_id).is_some()
    }

    /// `POST /api/tasks/:id/retry`: puts a dead-letter task back in the queue (generation + 1,
    /// retry count and error reset) and runs the scheduler. False (404) for any other task.
    pub fn retry_task(&self, task_id: &str) -> bool {
        let mut st = self.shared.lock();
        if st.tasks.retry_dead_letter(task_id, Instant::now()).is_none() {
            return false;
        }
        scheduler::schedule(&self.shared, &mut st);
        true
    }

    /// `GET /api/tasks/:id` exactly as the HTTP API answers it (every field of §7.3, history
    /// newest first); None (404) if unknown or cancelled.
    pub fn task_json(&self, task_id: &str) -> Option<serde_json::Value> {
        let st = self.shared.lock();
        st.tasks.map.get(task_id).map(tasks::Task::to_json)
    }

    /// `POST /api/admin/agents/:id/restart`: pushes `{"type":"restart_sidecar","reason"}`.
    pub async fn restart_sidecar(&self, agent_id: &str, reason: &str) -> Result<(), NotConnected> {
        self.push(
            agent_id,
            serde_json::json!({"type": "restart_sidecar", "reason": reason}),
        )
        .await
    }

    /// A snapshot of a task (`GET /api/tasks/:id`); None if unknown or cancelled.
    pub fn task(&self, task_id: &str) -> Option<TaskRecord> {
        self.shared.lock().tasks.map.get(task_id).map(|t| t.rec.clone())
    }

    /// Test knob reproducing the real scheduler's race: `true` lets it also assign a queued
    /// task to a capable agent that already holds one (when no idle agent is left).
    pub fn set_double_assign(&self, on: bool) {
        let mut st = self.shared.lock();
        st.tasks.double_assign = on;
        scheduler::schedule(&self.shared, &mut st);
    }

    /// An agent's state machine (`GET /api/agents/:id/state`); None when it has none.
    pub fn agent_state(&self, agent_id: &str) -> Option<AgentState> {
        self.shared
            .lock()
            .tasks
            .fsms
            .get(agent_id)
            .map(tasks::Fsm::snapshot)
    }
}
