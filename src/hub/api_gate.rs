//! What every endpoint of the hub's HTTP API (§7) passes through, shared by [`super::api`] and
//! [`super::api_tasks`]: Bearer auth, the HTTP rate limits, the JSON body, and the answers
//! they refuse with (401, 429, 400, 422).

use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::http::{Request, Response};
use super::rate::{Tier, Verdict};
use super::validate;
use super::Shared;

/// The 401 every endpoint that needs a token answers without a valid one.
pub fn unauthorized() -> Response {
    Response::json(
        401,
        json!({"error": "unauthorized", "hint": "provide Authorization: Bearer <token>"}),
    )
}

/// The agent whose token the request carries (`Authorization: Bearer <token>`), else the 401.
pub fn auth(shared: &Shared, req: &Request) -> Result<String, Response> {
    let header = req.header("authorization").unwrap_or_default();
    let token = match header.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => return Err(unauthorized()),
    };
    let st = shared.lock();
    st.token_agent(token).map(str::to_string).ok_or_else(unauthorized)
}

/// The rate-limit key of an unauthenticated request: `ip:ADDR` (`ip:local` for in-memory streams).
pub fn ip_key(req: &Request) -> String {
    req.peer
        .map_or_else(|| "ip:local".to_string(), |ip| format!("ip:{ip}"))
}

/// Takes a token of `tier` from `key`'s HTTP bucket; Err is the 429 (with `retry-after`).
pub fn limit(shared: &Shared, key: &str, tier: Tier) -> Result<(), Response> {
    match shared.lock().rate_http(key, tier, Instant::now()) {
        Verdict::Allow | Verdict::Warn { .. } => Ok(()),
        Verdict::Deny { retry_after_ms } => {
            let body =
                json!({"error": "rate_limited", "retry_after_ms": retry_after_ms, "tier": tier.name()});
            let mut resp = Response::json(429, body);
            resp.headers
                .push(("retry-after", retry_after_ms.div_ceil(1000).to_string()));
            Err(resp)
        }
    }
}

/// The body's JSON parameters, else the 400.
pub fn params(req: &Request) -> Result<Map<String, Value>, Response> {
    req.params()
        .map_err(|()| Response::transport(400, "invalid_json", "the body must be JSON (an object)"))
}

/// A 422 with these error entries.
pub fn unprocessable(errors: Vec<Value>) -> Response {
    Response::json(422, validate::failed(errors))
}
