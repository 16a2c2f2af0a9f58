//! The task endpoints of the hub's HTTP API (§7.2, §7.3, §11.9): submit, list, get, cancel,
//! retry and classify. Each calls the same queue functions as the [`super::EmbeddedHub`]
//! methods ([`super::task_api`]).

use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::api_gate::{auth, limit, params, unprocessable};
use super::http::{Request, Response};
use super::rate::Tier;
use super::risk::{self, Diff};
use super::tasks::{Task, TaskSpec};
use super::validate::{self, HType};
use super::{scheduler, task_api, Shared};

/// Routes `/api/tasks/...` (`rest` is the path after `/api/tasks`). Every one needs a token.
pub fn handle(shared: &Arc<Shared>, req: &Request, rest: &[&str]) -> Result<Response, Response> {
    let agent = auth(shared, req)?;
    match (req.method.as_str(), rest) {
        ("POST", []) => submit(shared, req, &agent),
        ("GET", []) => Ok(list(shared, req)),
        ("GET", ["dead-letter"]) => Ok(dead_letter(shared)),
        ("GET", ["stats"]) => Ok(stats(shared)),
        ("GET", [id]) => get(shared, id),
        ("POST", [id, "cancel"]) => match task_api::cancel(shared, id) {
            Some(previous) => Ok(Response::json(
                200,
                json!({"status": "cancelled", "task_id": id, "previous_status": previous}),
            )),
            None => Err(not_found(id)),
        },
        ("POST", [id, "retry"]) => retry(shared, id),
        ("POST", [id, "classify"]) => classify(shared, req, id),
        _ => Err(Response::json(404, json!({"error": "not_found"}))),
    }
}

fn not_found(id: &str) -> Response {
    Response::json(404, json!({"error": "task_not_found", "task_id": id}))
}

/// Checks the fields the real schema does not (`depends_on`, `goal_id`, `assign_to`): our
/// choice, the same entry shapes.
fn unlisted_errors(params: &Map<String, Value>) -> Vec<Value> {
    validate::check(
        params,
        &[],
        &[
            ("assign_to", HType::Str),
            ("depends_on", HType::ListStr),
            ("goal_id", HType::Str),
        ],
    )
}

/// `POST /api/tasks` (heavy tier per agent): 201 `{status:"queued", task_id, priority,
/// created_at, warnings?}` or 422.
fn submit(shared: &Arc<Shared>, req: &Request, agent: &str) -> Result<Response, Response> {
    limit(shared, agent, Tier::Heavy)?;
    let p = params(req)?;
    let mut errors = validate::check(&p, validate::POST_TASK_REQUIRED, validate::POST_TASK_OPTIONAL);
    errors.extend(unlisted_errors(&p));
    if errors.is_empty() {
        errors = validate::enrichment(&p);
    }
    if !errors.is_empty() {
        return Err(unprocessable(errors));
    }
    let text = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_string);
    let int = |k: &str| p.get(k).and_then(Value::as_i64);
    let list = |k: &str| p.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
    let strings = |k: &str| -> Vec<String> {
        list(k)
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    let steps = list("verification_steps");
    let spec = TaskSpec {
        description: text("description").unwrap_or_default(),
        metadata: p
            .get("metadata")
            .filter(|m| m.is_object())
            .cloned()
            .unwrap_or(json!({})),
        needed_capabilities: strings("needed_capabilities"),
        max_retries: int("max_retries").map_or(3, |n| u32::try_from(n.max(0)).unwrap_or(u32::MAX)),
        complexity_tier: text("complexity_tier"),
        file_hints: list("file_hints"),
        verification_steps: steps.clone(),
        max_verification_retries: int("max_verification_retries"),
        priority: text("priority").unwrap_or_else(|| "normal".into()),
        complete_by: int("complete_by"),
        repo: text("repo"),
        branch: text("branch"),
        success_criteria: list("success_criteria"),
        skip_verification: p
            .get("skip_verification")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        verification_timeout_ms: int("verification_timeout_ms"),
        depends_on: strings("depends_on"),
        goal_id: text("goal_id"),
        assign_to: text("assign_to"),
        submitted_by: agent.to_string(),
    };
    let id = task_api::submit(shared, spec).map_err(|body| Response::json(422, body))?;
    let st = shared.lock();
    let task = st.tasks.map.get(&id).ok_or_else(|| not_found(&id))?;
    let mut body = json!({"status": "queued", "task_id": id, "priority": task.extra.priority,
        "created_at": task.extra.created_at});
    if let Some(warning) = validate::step_warning(steps.len()) {
        body["warnings"] = json!([warning]);
    }
    Ok(Response::json(201, body))
}

/// `GET /api/tasks?status=&priority=&assigned_to=&goal_id=`: the tasks not dead-lettered (the
/// real hub keeps those in another table), by priority then age. A status or priority that
/// names none is ignored, as on the real hub.
fn list(shared: &Shared, req: &Request) -> Response {
    let q = |k: &str| req.query.get(k).map(String::as_str);
    let status = q("status").filter(|s| ["queued", "assigned", "completed", "dead_letter"].contains(s));
    let priority = q("priority").and_then(|p| {
        ["urgent", "high", "normal", "low"]
            .contains(&p)
            .then(|| super::spec::priority_number(p))
    });
    let st = shared.lock();
    let mut tasks: Vec<&Task> = st
        .tasks
        .map
        .values()
        .filter(|t| t.rec.status != "dead_letter")
        .filter(|t| status.is_none_or(|s| t.rec.status == s))
        .filter(|t| priority.is_none_or(|p| t.extra.priority == p))
        .filter(|t| q("assigned_to").is_none_or(|a| t.rec.assigned_to.as_deref() == Some(a)))
        .filter(|t| q("goal_id").is_none_or(|g| t.extra.goal_id.as_deref() == Some(g)))
        .collect();
    tasks.sort_by_key(|t| (t.extra.priority, t.extra.created_at, t.seq));
    let tasks: Vec<Value> = tasks.into_iter().map(Task::to_json).collect();
    Response::json(200, json!({"count": tasks.len(), "tasks": tasks}))
}

/// `GET /api/tasks/dead-letter`: `{tasks, count}`.
fn dead_letter(shared: &Shared) -> Response {
    let st = shared.lock();
    let mut tasks: Vec<&Task> = st
        .tasks
        .map
        .values()
        .filter(|t| t.rec.status == "dead_letter")
        .collect();
    tasks.sort_by_key(|t| (t.extra.priority, t.extra.created_at, t.seq));
    let tasks: Vec<Value> = tasks.into_iter().map(Task::to_json).collect();
    Response::json(200, json!({"count": tasks.len(), "tasks": tasks}))
}

/// `GET /api/tasks/stats`: `{by_status, by_priority, dead_letter, queued_index_size}` (the
/// first two count the tasks not dead-lettered; keys are the status names and priority numbers).
fn stats(shared: &Shared) -> Response {
    let st = shared.lock();
    let mut by_status = Map::new();
    let mut by_priority = Map::new();
    let mut dead = 0;
    for t in st.tasks.map.values() {
        if t.rec.status == "dead_letter" {
            dead += 1;
            continue;
        }
        for (map, key) in [
            (&mut by_status, t.rec.status.clone()),
            (&mut by_priority, t.extra.priority.to_string()),
        ] {
            let n = map.get(&key).and_then(Value::as_u64).unwrap_or(0);
            map.insert(key, json!(n + 1));
        }
    }
    let queued = st.tasks.map.values().filter(|t| t.rec.status == "queued").count();
    Response::json(
        200,
        json!({"by_status": by_status, "by_priority": by_priority, "dead_letter": dead,
            "queued_index_size": queued}),
    )
}

fn get(shared: &Shared, id: &str) -> Result<Response, Response> {
    let st = shared.lock();
    let task = st.tasks.map.get(id).ok_or_else(|| not_found(id))?;
    Ok(Response::json(200, task.to_json()))
}

/// `POST /api/tasks/:id/retry`: a dead-letter task back in the queue; 404 for any other.
fn retry(shared: &Arc<Shared>, id: &str) -> Result<Response, Response> {
    let mut st = shared.lock();
    let priority = st
        .tasks
        .retry_dead_letter(id, Instant::now())
        .map(|t| t.extra.priority)
        .ok_or_else(|| not_found(id))?;
    scheduler::schedule(shared, &mut st);
    Ok(Response::json(
        200,
        json!({"status": "requeued", "task_id": id, "priority": priority}),
    ))
}

/// `POST /api/tasks/:id/classify` (any token, no rate limit): the risk classification of the
/// diff the body describes, against the task's complexity and stored verification report.
fn classify(shared: &Shared, req: &Request, id: &str) -> Result<Response, Response> {
    let p = params(req)?;
    // The real hub crashes (500) on wrong types here; a 422 is our choice.
    let errors = validate::check(
        &p,
        &[],
        &[
            ("files_added", HType::ListStr),
            ("files_changed", HType::ListStr),
            ("lines_added", HType::Int),
            ("lines_deleted", HType::Int),
            ("tests_exist", HType::Bool),
        ],
    );
    if !errors.is_empty() {
        return Err(unprocessable(errors));
    }
    let strings = |k: &str| -> Vec<String> {
        p.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default()
    };
    let diff = Diff {
        lines_added: p.get("lines_added").and_then(Value::as_i64).unwrap_or(0),
        lines_deleted: p.get("lines_deleted").and_then(Value::as_i64).unwrap_or(0),
        files_changed: strings("files_changed"),
        files_added: strings("files_added"),
        tests_exist: p.get("tests_exist").and_then(Value::as_bool).unwrap_or(false),
    };
    let st = shared.lock();
    let task = st.tasks.map.get(id).ok_or_else(|| not_found(id))?;
    let tier = task.rec.complexity.get("effective_tier").and_then(Value::as_str);
    let body = risk::classify(
        tier,
        task.rec.verification_report.as_ref(),
        &diff,
        st.auto_merge_tier1,
    );
    Ok(Response::json(200, body))
}
