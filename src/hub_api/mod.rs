//! The hub's REST API (protocol §7): registration, revocation, tasks and classification, over
//! the one HTTP client (`crate::http`: https with the system's roots plus `ca_file`, the proxy
//! from the environment).
//!
//! Every call is bounded (10 s for the whole exchange, [`HubApi::with_timeout`]), sends the
//! agent's token as `Authorization: Bearer` (never anywhere else, never in an error), and turns
//! a non-2xx answer into a [`HubApiError`] that quotes the hub and says what to do.

mod error;

pub use error::HubApiError;

use crate::config::{Config, Secret};
use crate::http::{BaseUrl, Client, Response};
use crate::link::connect::ProxyConfig;
use hyper::Method;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one call may take, connect to last byte, unless [`HubApi::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read (a page of tasks with their results).
const MAX_BODY: usize = 8 << 20;

/// A client of one hub's REST API, with the agent's token.
#[derive(Debug, Clone)]
pub struct HubApi {
    base: BaseUrl,
    /// The base as given (trimmed of its trailing `/`), for messages.
    shown: String,
    token: Option<Secret>,
    ca_file: Option<PathBuf>,
    client: Client,
    timeout: Duration,
}

/// What `POST /api/onboard/register` answered (201).
#[derive(Debug, Clone)]
pub struct Registration {
    /// The agent id registered.
    pub agent_id: String,
    /// The new token (64 hex characters on the real hub).
    pub token: Secret,
    /// The WebSocket URL as the hub sees itself (`ws://<Host header>:<port>/ws`).
    pub hub_ws_url: String,
    /// The HTTP API as the hub sees itself.
    pub hub_api_url: String,
    /// The hub's default repository, when one is configured.
    pub default_repo: Option<String>,
}

/// What `POST /api/tasks` answered (201).
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    /// The new task's id.
    pub task_id: String,
    /// `queued`.
    pub status: String,
    /// The priority as the hub stored it (0 urgent ... 3 low).
    pub priority: Option<i64>,
    /// Epoch milliseconds.
    pub created_at: Option<i64>,
    /// The hub's warnings about the submission (e.g. more than 10 verification steps).
    pub warnings: Vec<Value>,
}

impl HubApi {
    /// `base`: the hub's HTTP API (config `hub_api_url`, e.g. http://127.0.0.1:4000); token: the
    /// agent's (Bearer); ca_file: extra roots for https. The proxy comes from the environment
    /// (`HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`, `NO_PROXY`), as for the WebSocket.
    pub fn new(base: &str, token: Option<Secret>, ca_file: Option<&Path>) -> Result<HubApi, HubApiError> {
        let shown = base.trim().trim_end_matches('/').to_owned();
        let parsed = BaseUrl::parse(&shown).map_err(|e| HubApiError {
            request: format!("hub_api_url {shown}"),
            status: None,
            body: None,
            detail: e,
            hint: "give the hub's HTTP API as http://HOST:PORT or https://HOST[:PORT]".to_owned(),
        })?;
        Ok(HubApi {
            base: parsed,
            shown,
            token,
            ca_file: ca_file.map(Path::to_path_buf),
            client: Client::new(ca_file.map(Path::to_path_buf), ProxyConfig::from_env()),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The client for the config file at `path` (else the default path: `--config`,
    /// `$AGENTCOM_SIDECAR_CONFIG`, `./config.json`), or why not (the config's error, or a bad
    /// `hub_api_url`), for the commands that only talk to the hub (`submit`, `tasks`).
    pub fn for_config_file(path: Option<&Path>) -> Result<HubApi, String> {
        let path = path.map_or_else(crate::config::default_config_path, Path::to_path_buf);
        let config = Config::load(&path).map_err(|e| e.to_string())?;
        HubApi::from_config(&config).map_err(|e| e.to_string())
    }

    /// The client for a config: its `hub_api_url`, token and `ca_file`.
    pub fn from_config(config: &Config) -> Result<HubApi, HubApiError> {
        let token = Some(config.token.clone()).filter(|t| !t.expose().is_empty());
        HubApi::new(&config.hub_api_url, token, config.ca_file.as_deref())
    }

    /// The same client with these proxy settings instead of the environment's.
    pub fn with_proxy(mut self, proxy: ProxyConfig) -> HubApi {
        self.client = Client::new(self.ca_file.clone(), proxy);
        self
    }

    /// The same client with another bound on each call.
    pub fn with_timeout(mut self, timeout: Duration) -> HubApi {
        self.timeout = timeout;
        self
    }

    /// The same client with another token.
    pub fn with_token(mut self, token: Option<Secret>) -> HubApi {
        self.token = token;
        self
    }

    /// The base URL, as given.
    pub fn base(&self) -> &str {
        &self.shown
    }

    /// The proxy calls go through (`host:port`, the variable that set it), if any.
    pub fn proxy(&self) -> Option<(String, &'static str)> {
        self.client.proxy_for(&self.base)
    }

    /// `POST /api/tasks/:id/classify` (10 s): the hub's risk classification of a diff's figures.
    pub async fn classify(&self, task_id: &str, body: &Value) -> Result<Value, HubApiError> {
        let path = format!("/api/tasks/{}/classify", segment(task_id));
        self.call(Method::POST, &path, Some(body), true, &[200, 201])
            .await
    }

    /// `POST /api/onboard/register` (no token): a new token for `agent_id`.
    pub async fn register(&self, agent_id: &str) -> Result<Registration, HubApiError> {
        let path = "/api/onboard/register";
        let answer = self
            .call(
                Method::POST,
                path,
                Some(&json!({"agent_id": agent_id})),
                false,
                &[200, 201],
            )
            .await?;
        let field = |key: &str| answer[key].as_str().map(str::to_owned);
        let missing = |key: &str| {
            HubApiError::bad_answer(
                self.request_name(&Method::POST, path),
                201,
                format!("its answer has no `{key}` string"),
            )
        };
        let token = field("token").ok_or_else(|| missing("token"))?;
        Ok(Registration {
            agent_id: field("agent_id").unwrap_or_else(|| agent_id.to_owned()),
            token: Secret::new(token),
            hub_ws_url: field("hub_ws_url").ok_or_else(|| missing("hub_ws_url"))?,
            hub_api_url: field("hub_api_url").unwrap_or_else(|| self.shown.clone()),
            default_repo: field("default_repo").filter(|s| !s.is_empty()),
        })
    }

    /// `DELETE /admin/tokens/:agent_id`: revokes every token of the agent.
    pub async fn revoke(&self, agent_id: &str) -> Result<(), HubApiError> {
        let path = format!("/admin/tokens/{}", segment(agent_id));
        self.call(Method::DELETE, &path, None, true, &[200, 204]).await?;
        Ok(())
    }

    /// `POST /api/tasks`: queues `task` (`description` and the optional fields of §7.2).
    pub async fn submit(&self, task: &Value) -> Result<Submitted, HubApiError> {
        let path = "/api/tasks";
        let answer = self
            .call(Method::POST, path, Some(task), true, &[200, 201])
            .await?;
        let task_id = answer["task_id"].as_str().ok_or_else(|| {
            HubApiError::bad_answer(
                self.request_name(&Method::POST, path),
                201,
                "its answer has no `task_id` string".to_owned(),
            )
        })?;
        Ok(Submitted {
            task_id: task_id.to_owned(),
            status: answer["status"].as_str().unwrap_or("queued").to_owned(),
            priority: answer["priority"].as_i64(),
            created_at: answer["created_at"].as_i64(),
            warnings: answer["warnings"].as_array().cloned().unwrap_or_default(),
        })
    }

    /// `GET /api/tasks/:id`: one task, dead-lettered ones included.
    pub async fn task(&self, id: &str) -> Result<Value, HubApiError> {
        let path = format!("/api/tasks/{}", segment(id));
        self.call(Method::GET, &path, None, true, &[200]).await
    }

    /// `GET /api/tasks?k=v...` (`status`, `priority`, `assigned_to`, `goal_id`): the hub's tasks.
    pub async fn tasks(&self, query: &[(&str, &str)]) -> Result<Vec<Value>, HubApiError> {
        let mut path = "/api/tasks".to_owned();
        for (i, (k, v)) in query.iter().enumerate() {
            path.push(if i == 0 { '?' } else { '&' });
            path.push_str(&segment(k));
            path.push('=');
            path.push_str(&segment(v));
        }
        let answer = self.call(Method::GET, &path, None, true, &[200]).await?;
        match answer {
            Value::Object(mut map) => match map.remove("tasks") {
                Some(Value::Array(tasks)) => Ok(tasks),
                _ => Err(HubApiError::bad_answer(
                    self.request_name(&Method::GET, &path),
                    200,
                    "its answer has no `tasks` list".to_owned(),
                )),
            },
            // (a bare list, as Node's tools expected: taken as it is)
            Value::Array(tasks) => Ok(tasks),
            _ => Err(HubApiError::bad_answer(
                self.request_name(&Method::GET, &path),
                200,
                "its answer is not a JSON object".to_owned(),
            )),
        }
    }

    /// `GET /health` (no token): `{"status":"ok","service":"agent_com","agents_connected":N}`.
    pub async fn health(&self) -> Result<Value, HubApiError> {
        self.call(Method::GET, "/health", None, false, &[200]).await
    }

    /// `GET /api/config/default-repo`: the hub's default repository, `None` when it has none (or
    /// does not serve the endpoint: an older hub answers 404).
    pub async fn default_repo(&self) -> Result<Option<String>, HubApiError> {
        match self
            .call(Method::GET, "/api/config/default-repo", None, true, &[200])
            .await
        {
            Ok(answer) => Ok(answer["default_repo"]
                .as_str()
                .or(answer["url"].as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn request_name(&self, method: &Method, path: &str) -> String {
        format!("{method} {}{path}", self.shown)
    }

    /// One call: the answer's JSON when its status is one of `ok`, else the error.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        auth: bool,
        ok: &[u16],
    ) -> Result<Value, HubApiError> {
        let name = self.request_name(&method, path);
        let bearer = if auth {
            self.token.as_ref().map(Secret::expose)
        } else {
            None
        };
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let work = async {
            let mut response: Response = self
                .client
                .send(&self.base, method, path, bearer, bytes, self.timeout)
                .await
                .map_err(|e| HubApiError::unreachable(name.clone(), e.to_string(), &self.shown))?;
            let text = response.text(MAX_BODY).await.map_err(|e| {
                HubApiError::unreachable(name.clone(), format!("the answer was cut: {e}"), &self.shown)
            })?;
            Ok::<_, HubApiError>((response.status, text))
        };
        let (status, text) = match tokio::time::timeout(self.timeout, work).await {
            Err(_) => {
                return Err(HubApiError::unreachable(
                    name,
                    format!("no answer within {} s", self.timeout.as_secs()),
                    &self.shown,
                ))
            }
            Ok(result) => result?,
        };
        let text = self.redact(text);
        if !ok.contains(&status) {
            return Err(HubApiError::status(name, status, &text));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| HubApiError::bad_answer(name, status, format!("its answer is not JSON ({e})")))
    }

    /// The text with our own token replaced (a hub could echo it back).
    fn redact(&self, text: String) -> String {
        match &self.token {
            Some(token) if !token.expose().is_empty() && text.contains(token.expose()) => {
                text.replace(token.expose(), "<redacted>")
            }
            _ => text,
        }
    }
}

/// A path segment or query word, percent-encoded but for the unreserved characters (RFC 3986).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
