//! The task side of the [`EmbeddedHub`] handle: the HTTP endpoints `POST /api/tasks`,
//! `POST /api/tasks/:id/cancel`, `GET /api/tasks/:id`, `POST /api/admin/push-task`,
//! `POST /api/admin/agents/:id/restart` and `GET /api/agents/:id/state`, plus test knobs.

use tokio::time::Instant;

use super::tasks::{self, AgentState, TaskRecord, TaskSpec};
use super::{epoch_ms, scheduler, EmbeddedHub, NotConnected};

impl EmbeddedHub {
    /// Queues a task (like `POST /api/tasks`) and runs the scheduler; returns the task_id.
    pub fn submit_task(&self, spec: TaskSpec) -> String {
        let mut st = self.shared.lock();
        let id = st.tasks.submit(spec, Instant::now());
        scheduler::schedule(&self.shared, &mut st);
        id
    }

    /// Admin push-task (`POST /api/admin/push-task`): a `task_assign` with generation 0 sent
    /// straight to the agent, not stored in the queue. Moves an idle FSM to assigned (with
    /// its acceptance timer). Returns the new task_id.
    pub async fn push_task(&self, agent_id: &str, description: &str) -> Result<String, NotConnected> {
        let mut st = self.shared.lock();
        let task_id = tasks::new_task_id();
        if !scheduler::push_to(&st, agent_id, &scheduler::push_frame(&task_id, description)) {
            return Err(NotConnected);
        }
        if let Some(fsm) = st.tasks.fsms.get_mut(agent_id).filter(|f| f.state == "idle") {
            fsm.state = "assigned";
            fsm.current = Some(task_id.clone());
            drop(st);
            scheduler::arm_acceptance(&self.shared, agent_id, &task_id, 0);
        }
        Ok(task_id)
    }

    /// `POST /api/tasks/:id/cancel`: deletes the task; if it was assigned, pushes
    /// `task_cancelled` to the agent and moves its FSM to idle. False if the task is unknown.
    pub async fn cancel_task(&self, task_id: &str) -> bool {
        let mut st = self.shared.lock();
        let Some(task) = st.tasks.map.remove(task_id) else {
            return false;
        };
        if task.rec.status != "assigned" {
            return true;
        }
        if let Some(agent_id) = task.rec.assigned_to {
            let frame = serde_json::json!({"type": "task_cancelled", "task_id": task_id,
                "timestamp": epoch_ms()});
            scheduler::push_to(&st, &agent_id, &frame);
            if let Some(fsm) = st.tasks.fsms.get_mut(&agent_id) {
                if fsm.current.as_deref() == Some(task_id) {
                    fsm.idle();
                }
            }
        }
        scheduler::schedule(&self.shared, &mut st);
        true
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
