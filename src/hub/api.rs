//! The hub's HTTP REST API (§7): routing, and the endpoints for health, agents, onboarding,
//! the default repo and tokens. The task endpoints are in [`super::api_tasks`]; Bearer auth
//! and the HTTP rate limits in [`super::api_gate`]. Every handler works on the same state,
//! through the same functions, as the [`super::EmbeddedHub`] methods.

use std::sync::Arc;

use serde_json::{json, Value};

use super::api_gate::{auth, ip_key, limit, params, unprocessable};
use super::http::{Request, Response};
use super::rate::Tier;
use super::validate::{self, HType};
use super::{api_tasks, Shared};

/// Answers one request.
pub fn handle(shared: &Arc<Shared>, req: &Request) -> Response {
    let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let outcome = match (req.method.as_str(), seg.as_slice()) {
        ("GET", ["health"]) => Ok(health(shared)),
        ("GET", ["api", "agents"]) => agents(shared, req),
        ("POST", ["api", "onboard", "register"]) => register(shared, req),
        ("GET", ["api", "config", "default-repo"]) => Ok(default_repo(shared)),
        ("PUT", ["api", "config", "default-repo"]) => put_default_repo(shared, req),
        ("POST", ["admin", "tokens"]) => create_token(shared, req),
        ("GET", ["admin", "tokens"]) => list_tokens(shared, req),
        ("DELETE", ["admin", "tokens", agent_id]) => revoke(shared, req, agent_id),
        ("GET", ["api", "agents", "states"]) => agent_states(shared, req, None),
        ("GET", ["api", "agents", agent_id, "state"]) => agent_states(shared, req, Some(agent_id)),
        ("POST", ["api", "admin", "push-task"]) => push_task(shared, req),
        ("POST", ["api", "admin", "agents", agent_id, "restart"]) => restart(shared, req, agent_id),
        (_, ["api", "tasks", ..]) => api_tasks::handle(shared, req, &seg[2..]),
        _ => Err(Response::json(
            404,
            json!({"error": "not_found", "hint": format!("no endpoint {} /{}", req.method, seg.join("/"))}),
        )),
    };
    outcome.unwrap_or_else(|resp| resp)
}

fn health(shared: &Shared) -> Response {
    let n = shared.lock().presence.len();
    Response::json(
        200,
        json!({"status": "ok", "service": "agent_com", "agents_connected": n}),
    )
}

/// `GET /api/agents`: presence (no auth; light tier per IP), `fsm_state` always "unknown" as
/// on the real hub.
fn agents(shared: &Shared, req: &Request) -> Result<Response, Response> {
    limit(shared, &ip_key(req), Tier::Light)?;
    let st = shared.lock();
    let agents: Vec<Value> = st
        .presence
        .iter()
        .map(|(id, p)| {
            let mut a = p.to_json(id);
            a["fsm_state"] = json!("unknown");
            a
        })
        .collect();
    Ok(Response::json(200, json!({"agents": agents})))
}

/// Whether a Host header value names a port (`h:1`, `[::1]:1`; not `h` or `[::1]`).
fn has_port(host: &str) -> bool {
    match host.rsplit_once(':') {
        Some((name, port)) => {
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']'))
        }
        None => false,
    }
}

/// `POST /api/onboard/register {"agent_id"}`: no auth, heavy tier per IP.
fn register(shared: &Shared, req: &Request) -> Result<Response, Response> {
    limit(shared, &ip_key(req), Tier::Heavy)?;
    let params = params(req)?;
    let errors = validate::check(&params, &[("agent_id", HType::Str)], &[]);
    if !errors.is_empty() {
        return Err(unprocessable(errors));
    }
    let agent_id = params["agent_id"].as_str().unwrap_or_default().to_string();
    if agent_id.is_empty() {
        let e = validate::entry("agent_id", "required", "agent_id must not be empty", None);
        return Err(unprocessable(vec![e]));
    }
    let mut st = shared.lock();
    if st.tokens.values().any(|owner| *owner == agent_id) {
        return Ok(Response::json(
            409,
            json!({"error": "agent_id already registered"}),
        ));
    }
    let token = super::new_token();
    st.tokens.insert(token.clone(), agent_id.clone());
    let mut host = req
        .header("host")
        .filter(|h| !h.is_empty())
        .map_or_else(|| shared.addr.to_string(), str::to_string);
    if !has_port(&host) {
        host = format!("{host}:{}", shared.addr.port());
    }
    Ok(Response::json(
        201,
        json!({"agent_id": agent_id, "token": token, "hub_ws_url": format!("ws://{host}/ws"),
            "hub_api_url": format!("http://{host}"), "default_repo": st.default_repo}),
    ))
}

fn default_repo(shared: &Shared) -> Response {
    let repo = shared.lock().default_repo.clone();
    Response::json(200, json!({"configured": repo.is_some(), "default_repo": repo}))
}

/// `PUT /api/config/default-repo {"url"}` (Bearer). The answer's shape is our choice.
fn put_default_repo(shared: &Shared, req: &Request) -> Result<Response, Response> {
    auth(shared, req)?;
    let params = params(req)?;
    let errors = validate::check(&params, &[("url", HType::Str)], &[]);
    if !errors.is_empty() {
        return Err(unprocessable(errors));
    }
    let url = params["url"].as_str().unwrap_or_default().to_string();
    if url.is_empty() {
        return Err(unprocessable(vec![validate::entry(
            "url",
            "required",
            "url must not be empty",
            None,
        )]));
    }
    shared.lock().default_repo = Some(url.clone());
    Ok(Response::json(
        200,
        json!({"status": "updated", "default_repo": url}),
    ))
}

/// `POST /admin/tokens {"agent_id"}` (Bearer, not rate limited).
fn create_token(shared: &Shared, req: &Request) -> Result<Response, Response> {
    auth(shared, req)?;
    let params = params(req)?;
    let errors = validate::check(&params, &[("agent_id", HType::Str)], &[]);
    if !errors.is_empty() {
        return Err(unprocessable(errors));
    }
    let agent_id = params["agent_id"].as_str().unwrap_or_default().to_string();
    let token = super::new_token();
    shared.lock().tokens.insert(token.clone(), agent_id.clone());
    Ok(Response::json(201, json!({"agent_id": agent_id, "token": token})))
}

/// `GET /admin/tokens` (Bearer): every token as its agent and first 8 characters.
fn list_tokens(shared: &Shared, req: &Request) -> Result<Response, Response> {
    auth(shared, req)?;
    let st = shared.lock();
    let mut tokens: Vec<(&String, String)> = st
        .tokens
        .iter()
        .map(|(token, agent)| (agent, format!("{}...", token.chars().take(8).collect::<String>())))
        .collect();
    tokens.sort();
    let tokens: Vec<Value> = tokens
        .into_iter()
        .map(|(agent, prefix)| json!({"agent_id": agent, "token_prefix": prefix}))
        .collect();
    Ok(Response::json(200, json!({"tokens": tokens})))
}

/// `DELETE /admin/tokens/:agent_id` (Bearer, any agent's token): revokes all of the agent's
/// tokens, 200 even when it had none. Like the real hub, a socket already identified stays
/// connected; the token is refused at the next identify (`invalid_token`).
fn revoke(shared: &Shared, req: &Request, agent_id: &str) -> Result<Response, Response> {
    auth(shared, req)?;
    shared.lock().revoke(agent_id);
    Ok(Response::json(
        200,
        json!({"status": "revoked", "agent_id": agent_id}),
    ))
}

/// `GET /api/agents/states` (every FSM) and `GET /api/agents/:id/state` (one, with
/// `last_state_change`; 404 `agent_not_found`), Bearer.
fn agent_states(shared: &Shared, req: &Request, one: Option<&str>) -> Result<Response, Response> {
    auth(shared, req)?;
    let st = shared.lock();
    let render = |id: &str, f: &super::tasks::Fsm| {
        let caps: Vec<Value> = f.capabilities.iter().map(|c| json!({"name": c})).collect();
        json!({"agent_id": id, "fsm_state": f.state, "current_task_id": f.current,
            "capabilities": caps, "flags": f.flags, "connected_at": f.connected_at, "name": f.name})
    };
    let Some(agent_id) = one else {
        let mut ids: Vec<&String> = st.tasks.fsms.keys().collect();
        ids.sort();
        let agents: Vec<Value> = ids.into_iter().map(|id| render(id, &st.tasks.fsms[id])).collect();
        return Ok(Response::json(200, json!({"agents": agents})));
    };
    let fsm = st
        .tasks
        .fsms
        .get(agent_id)
        .ok_or_else(|| Response::json(404, json!({"error": "agent_not_found"})))?;
    let mut body = render(agent_id, fsm);
    body["last_state_change"] = json!(fsm.last_state_change);
    Ok(Response::json(200, body))
}

/// `POST /api/admin/push-task {"agent_id","description","metadata"?}` (Bearer, heavy tier).
fn push_task(shared: &Arc<Shared>, req: &Request) -> Result<Response, Response> {
    let agent = auth(shared, req)?;
    limit(shared, &agent, Tier::Heavy)?;
    let p = params(req)?;
    let errors = validate::check(
        &p,
        &[("agent_id", HType::Str), ("description", HType::Str)],
        &[("metadata", HType::Obj)],
    );
    if !errors.is_empty() {
        return Err(unprocessable(errors));
    }
    let target = p["agent_id"].as_str().unwrap_or_default();
    let description = p["description"].as_str().unwrap_or_default();
    let metadata = p
        .get("metadata")
        .filter(|m| m.is_object())
        .cloned()
        .unwrap_or(json!({}));
    match super::task_api::push_task(shared, target, description, &metadata) {
        Ok(task_id) => Ok(Response::json(
            200,
            json!({"status": "pushed", "task_id": task_id, "agent_id": target}),
        )),
        Err(_) => Err(not_connected(target)),
    }
}

fn not_connected(agent_id: &str) -> Response {
    Response::json(404, json!({"error": "agent_not_connected", "agent_id": agent_id}))
}

/// `POST /api/admin/agents/:id/restart {"reason"?}` (Bearer): pushes `restart_sidecar`.
fn restart(shared: &Shared, req: &Request, agent_id: &str) -> Result<Response, Response> {
    auth(shared, req)?;
    let p = params(req)?;
    let reason = p
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("admin_commanded");
    let frame = json!({"type": "restart_sidecar", "reason": reason});
    if !super::scheduler::push_to(&shared.lock(), agent_id, &frame) {
        return Err(not_connected(agent_id));
    }
    Ok(Response::json(
        200,
        json!({"status": "restart_commanded", "agent_id": agent_id, "reason": reason}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports() {
        assert!(has_port("127.0.0.1:4000"));
        assert!(has_port("[::1]:4000"));
        assert!(!has_port("hub.local"));
        assert!(!has_port("[::1]"));
        assert!(!has_port("h:"));
    }
}
