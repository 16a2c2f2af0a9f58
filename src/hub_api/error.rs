//! [`HubApiError`]: what the hub answered (status, its `error`, `hint` and validation errors) or
//! why it could not be asked, and what to do. Never the token.

use serde_json::Value;
use std::fmt;

/// Why a call to the hub's REST API failed, for a person: the request, what the hub answered (or
/// why it could not be reached), and what to do next. Never holds the token.
#[derive(Debug, Clone)]
pub struct HubApiError {
    /// `METHOD URL`, e.g. `POST http://127.0.0.1:4000/api/tasks`.
    pub request: String,
    /// The HTTP status the hub answered, when it answered.
    pub status: Option<u16>,
    /// The hub's JSON answer, when it was JSON (the `error`, `hint`, `errors` keys).
    pub body: Option<Value>,
    /// What went wrong, in words (the hub's message, or the connection failure).
    pub detail: String,
    /// What to do about it.
    pub hint: String,
}

impl HubApiError {
    /// The hub could not be asked: no connection, TLS, proxy, no answer in time.
    pub(super) fn unreachable(request: String, detail: String, base: &str) -> HubApiError {
        HubApiError {
            request,
            status: None,
            body: None,
            detail,
            hint: format!(
                "is the hub running, and is {base} its HTTP API (config hub_api_url, derived from hub_url)?"
            ),
        }
    }

    /// The hub answered something that is not what the protocol says it answers.
    pub(super) fn bad_answer(request: String, status: u16, detail: String) -> HubApiError {
        HubApiError {
            request,
            status: Some(status),
            body: None,
            detail,
            hint: "is this an AgentCom hub? (check hub_api_url; protocol §7 lists what it answers)"
                .to_owned(),
        }
    }

    /// A non-2xx answer: the hub's own words from `body` (JSON or text), and a next step.
    pub(super) fn status(request: String, status: u16, text: &str) -> HubApiError {
        let body: Option<Value> = serde_json::from_str(text).ok().filter(Value::is_object);
        let detail = match &body {
            Some(v) => hub_words(v),
            None if text.trim().is_empty() => "(no body)".to_owned(),
            None => first_chars(text.trim(), 300),
        };
        let error = body.as_ref().and_then(|b| b["error"].as_str()).unwrap_or("");
        let hint = match status {
            401 | 403 => "the hub does not accept this token: check token_file (or AGENTCOM_TOKEN); \
if the agent was revoked, run `agentcom-sidecar join HUB_URL` again"
                .to_owned(),
            409 => "that agent_id is already registered: choose another --agent-id, or, if it is yours and \
its token file is here, `join --rejoin`"
                .to_owned(),
            404 if error == "task_not_found" => {
                "the hub has no task with that id (a cancelled task is deleted): check the id with `agentcom-sidecar tasks`"
                    .to_owned()
            }
            404 => "the hub has no such endpoint or record: is hub_api_url the hub's HTTP API (http://HOST:4000)?"
                .to_owned(),
            400 | 422 => "fix the fields named above and try again".to_owned(),
            429 => {
                let wait = body
                    .as_ref()
                    .and_then(|b| b["retry_after_ms"].as_u64())
                    .map_or_else(|| "a minute".to_owned(), |ms| format!("{} s", ms.div_ceil(1000)));
                format!("the hub limits this (10 a minute per agent or address): try again in {wait}")
            }
            500..=599 => "the hub failed: try again, and look at the hub's log if it persists".to_owned(),
            _ => "see the hub's answer above".to_owned(),
        };
        HubApiError {
            request,
            status: Some(status),
            body,
            detail,
            hint,
        }
    }

    /// The exit code a command ends with on this error: 69 (unavailable) when the hub could not
    /// be reached, was busy or failed; 77 when it refused the token; 76 when its answer made no
    /// sense; 65 when it refused what was sent.
    pub fn exit_code(&self) -> u8 {
        match self.status {
            None | Some(429) | Some(500..=599) => crate::exit_code::UNAVAILABLE,
            Some(401) | Some(403) => crate::exit_code::NOPERM,
            Some(200..=299) => crate::exit_code::PROTOCOL,
            Some(_) => crate::exit_code::DATAERR,
        }
    }

    /// The hub's `error` key, when it answered JSON with one (`agent_id already registered`).
    pub fn hub_error(&self) -> Option<&str> {
        self.body.as_ref().and_then(|b| b["error"].as_str())
    }
}

impl fmt::Display for HubApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) if (200..300).contains(&status) => write!(
                f,
                "{}: the hub answered {status} but {}\n  help: {}",
                self.request, self.detail, self.hint
            ),
            Some(status) => write!(
                f,
                "{}: the hub answered {status}: {}\n  help: {}",
                self.request, self.detail, self.hint
            ),
            None => write!(f, "{}: {}\n  help: {}", self.request, self.detail, self.hint),
        }
    }
}

impl std::error::Error for HubApiError {}

/// The hub's message from its JSON answer: `error`, then `hint`, `detail`, the validation
/// `errors` (`field: detail`) and `retry_after_ms`.
fn hub_words(body: &Value) -> String {
    let mut words = match &body["error"] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    for key in ["hint", "detail", "message"] {
        if let Some(s) = body[key].as_str() {
            words.push_str(&format!(" ({s})"));
        }
    }
    if let Some(errors) = body["errors"].as_array() {
        let list: Vec<String> = errors
            .iter()
            .map(
                |e| match (e["field"].as_str(), e["detail"].as_str().or(e["error"].as_str())) {
                    (Some(field), Some(detail)) => format!("{field}: {detail}"),
                    _ => e.to_string(),
                },
            )
            .collect();
        if !list.is_empty() {
            words.push_str(&format!(": {}", list.join("; ")));
        }
    }
    if let Some(ms) = body["retry_after_ms"].as_u64() {
        words.push_str(&format!(" (retry after {ms} ms)"));
    }
    if words.is_empty() {
        first_chars(&body.to_string(), 300)
    } else {
        words
    }
}

/// At most `n` characters of `s`, with `...` when cut.
pub(crate) fn first_chars(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors_and_the_hint_are_named() {
        let body = r#"{"error":"validation_failed","errors":[{"detail":"agent_id must not be empty","error":"required","field":"agent_id"}]}"#;
        let e = HubApiError::status("POST http://h/api/onboard/register".into(), 422, body);
        let text = e.to_string();
        assert!(
            text.contains("answered 422: validation_failed: agent_id: agent_id must not be empty"),
            "{text}"
        );
        assert!(text.contains("help: fix the fields"), "{text}");
        assert_eq!(e.exit_code(), crate::exit_code::DATAERR);
        let e = HubApiError::status(
            "GET x".into(),
            401,
            r#"{"error":"unauthorized","hint":"provide Authorization: Bearer <token>"}"#,
        );
        assert!(
            e.to_string()
                .contains("401: unauthorized (provide Authorization: Bearer <token>)"),
            "{e}"
        );
        assert_eq!(e.exit_code(), crate::exit_code::NOPERM);
        let e = HubApiError::status(
            "POST x".into(),
            429,
            r#"{"error":"rate_limited","retry_after_ms":4200}"#,
        );
        assert!(e.to_string().contains("try again in 5 s"), "{e}");
        assert_eq!(e.exit_code(), crate::exit_code::UNAVAILABLE);
        let e = HubApiError::status("GET x".into(), 502, "<html>bad gateway</html>");
        assert!(e.to_string().contains("502: <html>bad gateway</html>"), "{e}");
    }
}
