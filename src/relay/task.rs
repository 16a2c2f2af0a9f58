//! A held task as it is persisted in queue.json: the Node sidecar's shape, plus an outcome.

use crate::protocol::{cut_chars, MAX_REASON_CHARS};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::path::PathBuf;

/// The longest task_id accepted (it becomes a file name).
pub const MAX_TASK_ID_CHARS: usize = 128;

/// Why a `task_assign` cannot be taken.
#[derive(Debug, Clone, PartialEq)]
pub enum AssignError {
    /// task_id is empty, too long, or has characters outside `A-Za-z0-9._-` (or is `.`/`..`).
    InvalidTaskId(String),
    /// task_id is not a string at all: nothing valid can be sent back.
    NoTaskId,
}

impl fmt::Display for AssignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AssignError::InvalidTaskId(id) => write!(
                f,
                "task_id {:?} is not 1-{MAX_TASK_ID_CHARS} characters of A-Za-z0-9._-",
                cut_chars(id, 80)
            ),
            AssignError::NoTaskId => write!(f, "task_assign without a string task_id"),
        }
    }
}

/// Check a task_id before it touches a path.
pub fn check_task_id(id: &str) -> Result<(), AssignError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_TASK_ID_CHARS
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(AssignError::InvalidTaskId(id.to_owned()))
    }
}

/// What came of a task: kept until the hub acknowledges it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The agent's result said `"status":"success"`.
    Complete {
        /// The result object, as the agent wrote it (the verification lifted out of it).
        result: Map<String, Value>,
        /// `tokens_used` from the result when an integer, else `tokens_in + tokens_out`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tokens_used: Option<i64>,
        /// The result's `verification_report`, when an object: sent at the top level.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        verification_report: Option<Value>,
        /// The result's `verification_history`, when a list of objects: sent at the top level.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        verification_history: Option<Vec<Value>>,
    },
    /// Anything else: the reason goes to the hub (at most 2000 characters).
    Failed {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// The outcome a result object stands for: `"status":"success"` completes (see
    /// [`Outcome::complete`]), anything else fails with the result's `reason` or `error`.
    pub fn from_result(result: Map<String, Value>) -> Outcome {
        if result.get("status").and_then(Value::as_str) == Some("success") {
            return Outcome::complete(result);
        }
        let reason = ["reason", "error"]
            .iter()
            .find_map(|k| match result.get(*k) {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Null) | None => None,
                Some(other) => Some(other.to_string()),
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Outcome::failed(reason)
    }

    /// A completion with `result`, shaped for the hub's schema (protocol §11.7): a
    /// `verification_report` that is an object and a `verification_history` that is a list of
    /// objects are lifted out of the result to the top level (any other type stays in the result
    /// untouched, where the hub's schema does not look); `tokens_used` is the result's integer
    /// `tokens_used`, else `tokens_in + tokens_out` when both are integers.
    pub fn complete(mut result: Map<String, Value>) -> Outcome {
        let verification_report = match result.get("verification_report") {
            Some(Value::Object(_)) => result.remove("verification_report"),
            _ => None,
        };
        let verification_history = match result.get("verification_history") {
            Some(Value::Array(runs)) if runs.iter().all(Value::is_object) => {
                match result.remove("verification_history") {
                    Some(Value::Array(runs)) => Some(runs),
                    _ => None,
                }
            }
            _ => None,
        };
        let int = |k: &str| result.get(k).and_then(Value::as_i64);
        let tokens_used = int("tokens_used").or_else(|| match (int("tokens_in"), int("tokens_out")) {
            (Some(i), Some(o)) => Some(i.saturating_add(o)),
            _ => None,
        });
        Outcome::Complete {
            result,
            tokens_used,
            verification_report,
            verification_history,
        }
    }

    /// A failure with `reason` cut to the hub's limit.
    pub fn failed(reason: impl AsRef<str>) -> Outcome {
        Outcome::Failed {
            reason: cut_chars(reason.as_ref(), MAX_REASON_CHARS),
        }
    }
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// A process group a wake command ran in, kept with its task until the task ends, so that a
/// cancel, a timeout or a hand-back can stop an agent the wake command backgrounded.
///
/// Persisted in queue.json (`agent_groups`, a field the Node sidecar ignores: it reads a task
/// object's fields by name and never rejects others, protocol §5.1 and §5.11) where the platform
/// can tell the group's leader apart from a later process that reused its PID (Linux: the
/// leader's start time and the boot id), so that a restarted sidecar can still stop it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentGroup {
    /// The process group id (the wake shell's PID).
    pub pgid: u32,
    /// The leader's start time (Linux: field 22 of `/proc/PID/stat`, clock ticks since boot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
    /// The boot the start time belongs to (Linux: `/proc/sys/kernel/random/boot_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

/// A task as queue.json holds it. Field names and statuses are the Node sidecar's, so a queue.json
/// left by the Node sidecar loads after an upgrade; the enrichment fields ride along verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The hub's id for the task (checked with [`check_task_id`]).
    pub task_id: String,
    /// What to do.
    #[serde(default)]
    pub description: String,
    /// Free-form metadata from the hub.
    #[serde(default = "empty_object")]
    pub metadata: Value,
    /// accepted, waking, waking_confirmation, working (Node's), verifying (a success result being
    /// verified and delivered), or done (an outcome awaits its ack).
    #[serde(default)]
    pub status: String,
    /// Hub wall clock at assignment (epoch ms).
    #[serde(default)]
    pub assigned_at: i64,
    /// The generation the hub last gave this task.
    #[serde(default)]
    pub generation: i64,
    /// Wake attempts made so far.
    #[serde(default)]
    pub wake_attempts: u32,
    /// The outcome, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The process groups this task's wake commands ran in (see [`AgentGroup`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_groups: Vec<AgentGroup>,
    /// When the agent was first woken for this task (epoch ms), for `task_timeout_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub woken_at: Option<i64>,
    /// The executor running this task (`ollama`, `claude`, `sidecar`) when the sidecar carries it
    /// out itself: such a task is run again from the start after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executed_by: Option<String>,
    /// The folder the task works in, once its preparation made or chose one (a workspace cloned
    /// for `repo`, or `repo_dir`): `${WORKSPACE}` for the agent, the executors' working folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<PathBuf>,
    /// repo, branch, file_hints, success_criteria, ... and anything else the hub sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl TaskRecord {
    /// Build the record for a `task_assign` frame, as the Node sidecar does (its defaults for the
    /// enrichment fields). `now_ms` stands in for a missing `assigned_at`.
    pub fn from_assign(frame: &Map<String, Value>, now_ms: i64) -> Result<TaskRecord, AssignError> {
        let task_id = match frame.get("task_id") {
            Some(Value::String(id)) => id.clone(),
            _ => return Err(AssignError::NoTaskId),
        };
        check_task_id(&task_id)?;
        let mut extra = Map::new();
        for (key, default) in [
            ("repo", Value::Null),
            ("branch", Value::Null),
            ("file_hints", Value::Array(vec![])),
            ("success_criteria", Value::Array(vec![])),
            ("verification_steps", Value::Array(vec![])),
            ("complexity", Value::Null),
            ("skip_verification", Value::Bool(false)),
            ("verification_timeout_ms", Value::Null),
            ("routing_decision", Value::Null),
            ("max_verification_retries", Value::from(0)),
        ] {
            extra.insert(key.to_owned(), frame.get(key).cloned().unwrap_or(default));
        }
        for (key, value) in frame {
            let known = matches!(
                key.as_str(),
                "type"
                    | "protocol_version"
                    | "task_id"
                    | "description"
                    | "metadata"
                    | "status"
                    | "assigned_at"
                    | "generation"
                    | "wake_attempts"
                    | "outcome"
                    | "agent_groups"
                    | "woken_at"
                    | "executed_by"
                    | "workspace"
            );
            if !known && !extra.contains_key(key) {
                extra.insert(key.clone(), value.clone());
            }
        }
        Ok(TaskRecord {
            task_id,
            description: frame
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            metadata: frame
                .get("metadata")
                .filter(|m| m.is_object())
                .cloned()
                .unwrap_or_else(empty_object),
            status: "accepted".to_owned(),
            assigned_at: frame.get("assigned_at").and_then(Value::as_i64).unwrap_or(now_ms),
            generation: frame.get("generation").and_then(Value::as_i64).unwrap_or(0),
            wake_attempts: 0,
            outcome: None,
            agent_groups: Vec::new(),
            woken_at: None,
            executed_by: None,
            workspace: None,
            extra,
        })
    }

    /// `routing_decision.target_type` when it names a target the sidecar can carry out itself
    /// (`ollama`, `claude`, `sidecar`); `None` for `wake`, a missing routing or an unknown target.
    pub fn routed_target(&self) -> Option<&str> {
        let target = self.extra.get("routing_decision")?.get("target_type")?.as_str()?;
        matches!(target, "ollama" | "claude" | "sidecar").then_some(target)
    }

    /// Whether a task recovered from queue.json mid-run was being executed by a sidecar (ours:
    /// `executed_by`; the Node sidecar's: a routed task that no wake of ours ever ran), so that
    /// it must be run again from the start rather than waited for.
    pub fn was_executing(&self) -> bool {
        self.executed_by.is_some()
            || (self.routed_target().is_some() && self.agent_groups.is_empty() && self.woken_at.is_none())
    }

    /// The record as `${TASK_JSON}` and the task file show it (without the outcome and the
    /// sidecar's own bookkeeping: process groups, wake time).
    pub fn to_task_json(&self) -> String {
        let mut shown = self.clone();
        shown.outcome = None;
        shown.agent_groups.clear();
        shown.woken_at = None;
        shown.executed_by = None;
        serde_json::to_string(&shown).expect("a task record always serializes")
    }
}

/// The generation of a `task_assign` frame (Node: 0 when missing).
pub fn assign_generation(frame: &Map<String, Value>) -> i64 {
    frame.get("generation").and_then(Value::as_i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn task_ids_that_could_escape_a_folder_are_refused() {
        for ok in ["task-3f9c0a1b2c3d4e5f", "a", "A.b_c-9", &"x".repeat(128)] {
            assert_eq!(check_task_id(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "a/b",
            "a\\b",
            "a b",
            "é",
            "a\0",
            &"x".repeat(129),
        ] {
            assert!(check_task_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn record_from_an_admin_push_has_the_node_defaults() {
        let frame =
            json!({"type":"task_assign","task_id":"t1","description":"d","generation":0,"assigned_at":5});
        let r = TaskRecord::from_assign(frame.as_object().unwrap(), 99).unwrap();
        let v: Value = serde_json::from_str(&r.to_task_json()).unwrap();
        assert_eq!(
            v,
            json!({"task_id":"t1","description":"d","metadata":{},"status":"accepted","assigned_at":5,
                   "generation":0,"wake_attempts":0,"repo":null,"branch":null,"file_hints":[],
                   "success_criteria":[],"verification_steps":[],"complexity":null,"skip_verification":false,
                   "verification_timeout_ms":null,"routing_decision":null,"max_verification_retries":0})
        );
    }

    #[test]
    fn node_queue_records_round_trip() {
        let node = json!({"task_id":"t1","description":"d","metadata":{"k":1},"status":"working","assigned_at":5,
            "generation":3,"wake_attempts":1,"repo":"r","branch":null,"file_hints":[],"success_criteria":[],
            "verification_steps":[],"complexity":null,"skip_verification":false,"verification_timeout_ms":null,
            "routing_decision":null,"max_verification_retries":0,"git_warning":"x"});
        let r: TaskRecord = serde_json::from_value(node.clone()).unwrap();
        assert_eq!(r.generation, 3);
        assert_eq!(r.status, "working");
        assert_eq!(serde_json::to_value(&r).unwrap(), node);
    }

    #[test]
    fn process_groups_are_persisted_beside_the_node_fields_and_hidden_from_the_agent() {
        let node = json!({"task_id":"t1","description":"d","metadata":{},"status":"working","assigned_at":5,
            "generation":3,"wake_attempts":1});
        let mut r: TaskRecord = serde_json::from_value(node).unwrap();
        assert!(r.agent_groups.is_empty() && r.woken_at.is_none());
        r.agent_groups.push(AgentGroup {
            pgid: 4242,
            start_ticks: Some(99),
            boot_id: Some("b".into()),
        });
        r.woken_at = Some(7);
        let saved = serde_json::to_value(&r).unwrap();
        assert_eq!(
            saved["agent_groups"],
            json!([{"pgid":4242,"start_ticks":99,"boot_id":"b"}])
        );
        assert_eq!(saved["woken_at"], 7);
        let back: TaskRecord = serde_json::from_value(saved).unwrap();
        assert_eq!(back, r);
        let shown: Value = serde_json::from_str(&r.to_task_json()).unwrap();
        assert!(
            shown.get("agent_groups").is_none() && shown.get("woken_at").is_none(),
            "{shown}"
        );
    }

    #[test]
    fn a_report_and_a_history_are_lifted_to_the_top_level_when_the_hub_would_accept_them() {
        let obj = |v: Value| v.as_object().unwrap().clone();
        let report = json!({"run_number":2,"status":"pass","checks":[]});
        let history = json!([{"run_number":1,"status":"fail"}, report.clone()]);
        let lifted = Outcome::from_result(obj(json!({"status":"success","output":"o",
            "verification_report":report.clone(),"verification_history":history.clone(),
            "tokens_in":22,"tokens_out":10})));
        assert_eq!(
            lifted,
            Outcome::Complete {
                result: obj(json!({"status":"success","output":"o","tokens_in":22,"tokens_out":10})),
                tokens_used: Some(32),
                verification_report: Some(report.clone()),
                verification_history: history.as_array().cloned(),
            }
        );
        // Wrong types stay in the result, untouched, and nothing goes to the top level.
        for (r, h) in [
            (json!("pass"), json!({"run": 1})),
            (json!(null), json!([report.clone(), "x"])),
            (json!([report.clone()]), json!("none")),
            (json!(5), json!(null)),
        ] {
            let result = obj(json!({"status":"success","verification_report":r,"verification_history":h}));
            assert_eq!(
                Outcome::from_result(result.clone()),
                Outcome::Complete {
                    result,
                    tokens_used: None,
                    verification_report: None,
                    verification_history: None,
                }
            );
        }
        // An empty history is a list of objects too (the hub stores it as sent).
        let Outcome::Complete {
            verification_history,
            result,
            ..
        } = Outcome::from_result(obj(json!({"status":"success","verification_history":[]})))
        else {
            panic!()
        };
        assert_eq!(
            (verification_history, result),
            (Some(vec![]), obj(json!({"status":"success"})))
        );
        // A failure is not lifted: task_failed carries only the reason.
        assert_eq!(
            Outcome::from_result(obj(
                json!({"status":"failed","reason":"r","verification_report":report})
            )),
            Outcome::failed("r")
        );
    }

    #[test]
    fn tokens_used_is_the_results_integer_else_the_sum_of_tokens_in_and_out() {
        let tokens = |v: Value| match Outcome::complete(v.as_object().unwrap().clone()) {
            Outcome::Complete { tokens_used, .. } => tokens_used,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            tokens(json!({"tokens_used":5,"tokens_in":1,"tokens_out":2})),
            Some(5)
        );
        assert_eq!(tokens(json!({"tokens_in":1,"tokens_out":2})), Some(3));
        assert_eq!(
            tokens(json!({"tokens_used":"5","tokens_in":1,"tokens_out":2})),
            Some(3)
        );
        assert_eq!(tokens(json!({"tokens_in":1})), None);
        assert_eq!(tokens(json!({"tokens_in":1,"tokens_out":2.5})), None);
        assert_eq!(tokens(json!({})), None);
    }

    #[test]
    fn outcomes_written_before_the_verification_fields_existed_still_load() {
        let old = json!({"kind":"complete","result":{"status":"success"},"tokens_used":3});
        let outcome: Outcome = serde_json::from_value(old.clone()).unwrap();
        assert!(matches!(
            &outcome,
            Outcome::Complete {
                verification_report: None,
                verification_history: None,
                tokens_used: Some(3),
                ..
            }
        ));
        assert_eq!(
            serde_json::to_value(&outcome).unwrap(),
            old,
            "saved as before when none"
        );
        let mut r: TaskRecord = serde_json::from_value(json!({"task_id":"t1","status":"verifying"})).unwrap();
        assert_eq!(r.workspace, None);
        r.workspace = Some(PathBuf::from("/w/repo"));
        let saved = serde_json::to_value(&r).unwrap();
        assert_eq!(saved["workspace"], "/w/repo");
        assert_eq!(serde_json::from_value::<TaskRecord>(saved).unwrap(), r);
    }

    #[test]
    fn outcomes_follow_the_result_contract() {
        let obj = |v: Value| v.as_object().unwrap().clone();
        assert!(matches!(
            Outcome::from_result(obj(json!({"status":"success","tokens_used":5}))),
            Outcome::Complete {
                tokens_used: Some(5),
                ..
            }
        ));
        assert_eq!(
            Outcome::from_result(obj(json!({"status":"success","tokens_used":5.5}))),
            Outcome::Complete {
                result: obj(json!({"status":"success","tokens_used":5.5})),
                tokens_used: None,
                verification_report: None,
                verification_history: None,
            }
        );
        assert_eq!(
            Outcome::from_result(obj(json!({"status":"failed","reason":"tests failed"}))),
            Outcome::failed("tests failed")
        );
        assert_eq!(
            Outcome::from_result(obj(json!({"error":"boom"}))),
            Outcome::failed("boom")
        );
        assert_eq!(
            Outcome::from_result(obj(json!({"reason":{"code":7}}))),
            Outcome::failed(r#"{"code":7}"#)
        );
        assert_eq!(
            Outcome::from_result(obj(json!({"status":"SUCCESS"}))),
            Outcome::failed("unknown")
        );
        let Outcome::Failed { reason } = Outcome::from_result(obj(json!({"reason": "x".repeat(5000)})))
        else {
            panic!()
        };
        assert_eq!(reason.len(), 2000);
    }
}
