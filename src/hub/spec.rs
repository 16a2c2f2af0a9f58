//! What `POST /api/tasks` takes, as the Rust API ([`super::EmbeddedHub::submit_task`]) and
//! the HTTP handler ([`super::api_tasks`]) both hand it to the queue.

use serde_json::{json, Value};

/// What `POST /api/tasks` takes (every field of §7.2).
#[derive(Clone, Debug)]
pub struct TaskSpec {
    /// The task's description, forwarded in `task_assign`.
    pub description: String,
    /// Free-form metadata object, forwarded in `task_assign`.
    pub metadata: Value,
    /// Capabilities an agent must all have declared in its identify to be given the task.
    pub needed_capabilities: Vec<String>,
    /// Failures allowed before dead-lettering (`retry_count + 1 >= max_retries`).
    pub max_retries: u32,
    /// `complexity_tier`: `trivial`, `standard`, `complex` or `unknown` (anything else is a 422
    /// from [`super::EmbeddedHub::try_submit_task`]); None lets the hub infer the tier.
    pub complexity_tier: Option<String>,
    /// `file_hints` objects (`{path, reason?}`), forwarded and counted by the classification.
    pub file_hints: Vec<Value>,
    /// `verification_steps` objects (`{type, target, description?}`), forwarded and counted.
    pub verification_steps: Vec<Value>,
    /// `max_verification_retries`; stored as `min(value, 5)`, and 5 when None (the real hub's quirk).
    pub max_verification_retries: Option<i64>,
    /// `urgent`, `high`, `normal` (the default) or `low`, stored as 0-3; any other name is normal.
    /// The queue hands out lower numbers first, FIFO within one priority.
    pub priority: String,
    /// `complete_by` (epoch ms): an assigned task still held after it is reclaimed ("overdue")
    /// by the sweep.
    pub complete_by: Option<i64>,
    /// `repo` (a URL), forwarded in `task_assign`.
    pub repo: Option<String>,
    /// `branch`, forwarded in `task_assign`.
    pub branch: Option<String>,
    /// `success_criteria` strings, forwarded in `task_assign`.
    pub success_criteria: Vec<Value>,
    /// `skip_verification`, forwarded in `task_assign` (false when absent).
    pub skip_verification: bool,
    /// `verification_timeout_ms`, forwarded in `task_assign` (null when absent).
    pub verification_timeout_ms: Option<i64>,
    /// `depends_on` task ids: the task is not handed out until each of them is completed (or gone).
    pub depends_on: Vec<String>,
    /// `goal_id`, stored (and a `GET /api/tasks` filter).
    pub goal_id: Option<String>,
    /// `assign_to`: only this agent may be given the task.
    pub assign_to: Option<String>,
    /// The submitting agent (`submitted_by` on the record): the Bearer token's agent over
    /// HTTP, `admin` for the Rust API (the operator).
    pub submitted_by: String,
}

impl Default for TaskSpec {
    fn default() -> Self {
        TaskSpec {
            description: String::new(),
            metadata: json!({}),
            needed_capabilities: Vec::new(),
            max_retries: 3,
            complexity_tier: None,
            file_hints: Vec::new(),
            verification_steps: Vec::new(),
            max_verification_retries: None,
            priority: "normal".into(),
            complete_by: None,
            repo: None,
            branch: None,
            success_criteria: Vec::new(),
            skip_verification: false,
            verification_timeout_ms: None,
            depends_on: Vec::new(),
            goal_id: None,
            assign_to: None,
            submitted_by: "admin".into(),
        }
    }
}

/// The stored priority number of a priority name (unknown names are normal, 2).
pub fn priority_number(name: &str) -> u8 {
    match name {
        "urgent" => 0,
        "high" => 1,
        "low" => 3,
        _ => 2,
    }
}
