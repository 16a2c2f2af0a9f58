//! `join` and `leave` (protocol §11.10, without Node's defects): register with a hub, write the
//! token and the config, check, install the service and prove it with one task; and undo it.
//!
//! Here: what both share: the progress file (the steps done, so `join` run again finishes the
//! job), the step printer (each step with its time, and on failure the next step to take),
//! the hub URL the user typed and what follows from it, and the generated agent names.

pub mod join;
pub mod leave;
mod names;
mod test_task;
mod write;

pub use join::JoinArgs;
pub use leave::LeaveArgs;
pub use names::{generate_name, with_suffix};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tokio::time::Instant;

/// The progress file's name, in the state folder (beside queue.json; mode 0600).
pub const PROGRESS_FILE: &str = "join-progress.json";
/// The token file's name `join` writes beside the config (mode 0600).
pub const TOKEN_FILE: &str = "token";

/// What `join` has done for one config: the steps and when, and what they produced. Never the token.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    /// The hub's HTTP API this join is with.
    #[serde(default)]
    pub hub_api_url: String,
    /// The agent id registered (or reused).
    #[serde(default)]
    pub agent_id: Option<String>,
    /// The WebSocket URL written into the config.
    #[serde(default)]
    pub hub_url: Option<String>,
    /// Step name -> when it was done (ISO 8601).
    #[serde(default)]
    pub done: BTreeMap<String, String>,
    /// The onboarding test task, once submitted.
    #[serde(default)]
    pub test_task_id: Option<String>,
    /// Whether `join --service` installed the service.
    #[serde(default)]
    pub service: bool,
    /// The scope it was installed with (`user` or `system`), for `leave`.
    #[serde(default)]
    pub service_scope: Option<String>,
}

impl Progress {
    /// The progress recorded in `dir`, or an empty one (a file that cannot be read as progress
    /// is an error naming it).
    pub fn load(dir: &Path) -> Result<Progress, String> {
        let path = dir.join(PROGRESS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                format!(
                    "{} is not a join progress file ({e}): remove it to start the join over",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Progress::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Writes it to `dir` (mode 0600), atomically.
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        let path = dir.join(PROGRESS_FILE);
        let tmp = dir.join(format!("{PROGRESS_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).expect("json") + "\n";
        crate::init::write_private(&tmp, text.as_bytes())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Whether `step` is done.
    pub fn is_done(&self, step: &str) -> bool {
        self.done.contains_key(step)
    }

    /// Records `step` as done now.
    pub fn mark(&mut self, step: &str) {
        self.done
            .insert(step.to_owned(), crate::event_log::iso8601(SystemTime::now()));
    }
}

/// Prints each step with the time since the command started.
pub struct Steps {
    start: Instant,
}

impl Default for Steps {
    fn default() -> Self {
        Steps::new()
    }
}

impl Steps {
    /// Starts the clock.
    pub fn new() -> Steps {
        Steps {
            start: Instant::now(),
        }
    }

    fn at(&self) -> String {
        format!("{:>6.1}s", self.start.elapsed().as_secs_f64())
    }

    /// `step` went well (or was done earlier): what it did.
    pub fn ok(&self, step: &str, what: &str) {
        crate::outln!("{}  {step:<9} {what}", self.at());
    }

    /// `step` failed: why, and the next step to take.
    pub fn fail(&self, step: &str, why: &str, next: &str) {
        crate::errln!("{}  {step:<9} FAILED: {why}\n           next: {next}", self.at());
    }

    /// A line under the current step.
    pub fn note(&self, step: &str, what: &str) {
        crate::outln!("{}  {step:<9} {what}", self.at());
    }
}

/// The hub as the user typed it: its HTTP API, and its WebSocket URL unless the hub says
/// another path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedHub {
    /// `http[s]://authority[/prefix]`: the HTTP API.
    pub api: String,
    /// `ws[s]://authority`: the WebSocket URL without its path.
    pub ws_origin: String,
    /// The WebSocket path typed (a `ws://` URL's path), if any.
    pub ws_path: Option<String>,
    /// A path prefix typed in an `http[s]://` URL (a hub behind a reverse proxy), or empty.
    pub prefix: String,
}

impl TypedHub {
    /// `http://host:4000`, `https://hub.example`, `ws://host:4000/ws`, `wss://...`, or
    /// `host:4000` (taken as http).
    pub fn parse(url: &str) -> Result<TypedHub, String> {
        let url = url.trim();
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r),
            None => ("http".to_owned(), url),
        };
        let tls = match scheme.as_str() {
            "http" | "ws" => false,
            "https" | "wss" => true,
            _ => {
                return Err(format!(
                    "{url}: the hub's URL must start with http://, https://, ws:// or wss://"
                ))
            }
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], rest[i..].split(['?', '#']).next().unwrap_or("")),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.starts_with(':') {
            return Err(format!("{url}: the URL names no host"));
        }
        let path = path.trim_end_matches('/');
        let (http, ws) = if tls { ("https", "wss") } else { ("http", "ws") };
        let websocket = scheme.starts_with("ws");
        Ok(TypedHub {
            api: format!("{http}://{authority}{}", if websocket { "" } else { path }),
            ws_origin: format!("{ws}://{authority}"),
            ws_path: (websocket && !path.is_empty()).then(|| path.to_owned()),
            prefix: if websocket { String::new() } else { path.to_owned() },
        })
    }

    /// The `hub_url` to write: the address typed, with the WebSocket path the hub named in
    /// `hub_ws_url` (`/ws` when it named none), behind the typed prefix.
    pub fn hub_url(&self, hub_ws_url: Option<&str>) -> String {
        if let Some(path) = &self.ws_path {
            return format!("{}{path}", self.ws_origin);
        }
        let path = hub_ws_url
            .and_then(|u| u.split_once("://"))
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
            .filter(|p| p.len() > 1)
            .unwrap_or_else(|| "/ws".to_owned());
        format!("{}{}{path}", self.ws_origin, self.prefix)
    }
}

/// The host and port in a URL (`ws://h:4000/ws` -> `h:4000`), for comparing what the hub calls
/// itself with what was typed.
pub fn authority_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

/// The config's path made absolute, and its folder.
pub fn config_location(config: Option<PathBuf>) -> (PathBuf, PathBuf) {
    let path = config.unwrap_or_else(crate::config::default_config_path);
    let path = std::path::absolute(&path).unwrap_or(path);
    let dir = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    (path, dir)
}

/// Prints a hub failure for `step` and gives its exit code.
fn hub_failed(steps: &Steps, step: &str, e: &crate::hub_api::HubApiError, next: &str) -> u8 {
    let text = e.to_string();
    let (why, help) = text.split_once("\n  help: ").unwrap_or((&text, next));
    steps.fail(step, why, help);
    e.exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_typed_address_wins_with_the_hubs_path() {
        let hub = TypedHub::parse("http://hub.local:4000/").unwrap();
        assert_eq!(hub.api, "http://hub.local:4000");
        // the hub calls itself by another name (its Host header, a container address)
        assert_eq!(
            hub.hub_url(Some("ws://10.0.0.7:4000/ws")),
            "ws://hub.local:4000/ws"
        );
        assert_eq!(hub.hub_url(None), "ws://hub.local:4000/ws");
        let hub = TypedHub::parse("https://hub.example/agentcom").unwrap();
        assert_eq!(hub.api, "https://hub.example/agentcom");
        assert_eq!(
            hub.hub_url(Some("ws://hub.example/ws")),
            "wss://hub.example/agentcom/ws"
        );
        let hub = TypedHub::parse("wss://hub.example:8443/socket").unwrap();
        assert_eq!(hub.api, "https://hub.example:8443");
        assert_eq!(hub.hub_url(Some("ws://x/ws")), "wss://hub.example:8443/socket");
        let hub = TypedHub::parse("127.0.0.1:4000").unwrap();
        assert_eq!(hub.api, "http://127.0.0.1:4000");
        assert!(TypedHub::parse("ftp://x").is_err());
        assert!(TypedHub::parse("http://:4000").is_err());
        assert_eq!(authority_of("ws://10.0.0.7:4000/ws"), "10.0.0.7:4000");
    }

    #[test]
    fn progress_round_trips_privately() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Progress::load(dir.path()).unwrap(), Progress::default());
        let mut p = Progress {
            agent_id: Some("gcu-x".into()),
            ..Progress::default()
        };
        p.mark("register");
        p.save(dir.path()).unwrap();
        let back = Progress::load(dir.path()).unwrap();
        assert!(back.is_done("register") && !back.is_done("config"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(PROGRESS_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
