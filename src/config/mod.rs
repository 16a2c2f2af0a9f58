//! Reading and validating `config.json`, the file the Node.js sidecar used.
//!
//! The file is read as it is, so an existing Node `config.json` keeps working: the keys the Node
//! sidecar had but this one does not use are accepted with a warning, and relative paths resolve
//! against the folder holding the file, as in Node. Errors name the file, the field, what was wrong
//! and what to do. The hub token is kept in a [`Secret`] and never appears in an error, a warning
//! or `Debug` output.
//!
//! The parts: `schema` (keys, JSON types, defaults, unknown keys), `load` (the file, its
//! permissions, relative paths, the files it names), `token` (where the token comes from),
//! `hub_url` (URL checks), `check` (checks shared by fields), `error` (the messages), `build`
//! (each field's value checks, in a fixed order). This module parses the text, has it type-checked
//! (the first wrong type in the file is the error, with its path), then has `build` check the
//! values in a fixed order and build the [`Config`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

mod build;
mod check;
mod error;
mod hub_url;
mod load;
mod schema;
#[cfg(test)]
mod tests;
mod token;

pub use error::{ConfigError, ConfigErrorKind};
pub use load::MAX_CONFIG_BYTES;
pub use schema::{DEFAULT_LOG_KEEP, DEFAULT_LOG_MAX_BYTES, DEFAULT_MAX_PENDING, MAX_DURATION_MS};
pub use token::{Secret, TokenSource, MAX_TOKEN_CHARS, MAX_TOKEN_FILE_BYTES, MIN_TOKEN_CHARS};

use error::json_error;
use load::absolute;
use schema::Pairs;

/// The environment variable that names the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "AGENTCOM_SIDECAR_CONFIG";

/// The environment variable holding the hub token; when set and non-empty it wins over
/// `token_file` and `token`.
pub const TOKEN_ENV: &str = "AGENTCOM_TOKEN";

/// Smallest `log_max_bytes` accepted: 64 KiB.
pub const MIN_LOG_MAX_BYTES: u64 = 65_536;
/// Largest `log_keep` accepted.
pub const MAX_LOG_KEEP: u32 = 100;

/// Longest `agent_id` the hub accepts (hub schema, protocol §2.4).
pub const MAX_AGENT_ID_CHARS: usize = 128;
/// Longest `name` the hub accepts (hub schema, protocol §2.4).
pub const MAX_NAME_CHARS: usize = 256;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file, absolute.
    pub path: PathBuf,
    /// The agent's id at the hub: non-empty, at most 128 characters.
    pub agent_id: String,
    /// The hub token bound to `agent_id`: non-empty, at most 256 characters. It comes from
    /// `$AGENTCOM_TOKEN`, else the file `token_file`, else the key `token` (see [`TokenSource`]).
    pub token: Secret,
    /// Where [`Config::token`] came from.
    pub token_source: TokenSource,
    /// The file holding the token (`token_file`), absolute; `None` when unset. Set even when
    /// `$AGENTCOM_TOKEN` overrides it.
    pub token_file: Option<PathBuf>,
    /// Extra PEM CA certificates trusted for `wss://` (`ca_file`), absolute; `None` when unset.
    pub ca_file: Option<PathBuf>,
    /// The log file is rotated when it would grow past this many bytes (`log_max_bytes`,
    /// default 10485760, at least 65536).
    pub log_max_bytes: u64,
    /// How many rotated log files are kept (`log_keep`, 1 to 100, default 5).
    pub log_keep: u32,
    /// Whether a `resource_report` is sent every 30 s (`report_resources`, default true).
    pub report_resources: bool,
    /// The hub's WebSocket URL: `ws://` or `wss://` with a host.
    pub hub_url: String,
    /// The display name sent in `identify`; defaults to `agent_id`. At most 256 characters.
    pub name: String,
    /// Capabilities sent in `identify`; default empty.
    pub capabilities: Vec<String>,
    /// The shell command that wakes the agent; `None` when absent, null or blank.
    pub wake_command: Option<String>,
    /// How long to wait for `{results_dir}/{task_id}.started` (`confirmation_timeout_ms`, default 30000).
    pub confirmation_timeout: Duration,
    /// Where the agent writes `.started` and result files (default `./results`), absolute.
    pub results_dir: PathBuf,
    /// The log file (default `./sidecar.log`), absolute.
    pub log_file: PathBuf,
    /// Time between JSON pings (`heartbeat_interval_ms`, default 30000, below 60000).
    pub heartbeat_interval: Duration,
    /// How long to wait for a pong (`heartbeat_timeout_ms`, default 10000, below the interval).
    pub heartbeat_timeout: Duration,
    /// First reconnect delay (`reconnect_initial_ms`, default 1000).
    pub reconnect_initial: Duration,
    /// Reconnect delay cap (`reconnect_max_ms`, default 60000, at least `reconnect_initial_ms`).
    pub reconnect_max: Duration,
    /// Random spread applied to each reconnect delay, as a fraction (default 0.5, within 0..=1).
    pub reconnect_jitter: f64,
    /// Where held tasks are persisted (`queue_file`, default `./queue.json`), absolute.
    pub queue_file: PathBuf,
    /// Run when the hub cancels a task (`cancel_command`, same template variables); `None` when unset.
    pub cancel_command: Option<String>,
    /// How long one wake attempt may run before its process group is killed (`wake_timeout_ms`, 60000).
    pub wake_timeout: Duration,
    /// How long a woken task may run before its agent is stopped and the task failed
    /// (`task_timeout_ms`, 7200000: 2 h).
    pub task_timeout: Duration,
    /// How long after the agent's processes all ended a missing result fails the task
    /// (`agent_exit_grace_ms`, 60000).
    pub agent_exit_grace: Duration,
    /// Waits before the 2nd, 3rd, ... wake attempt (`wake_retry_delays_ms`, [5000, 15000, 30000]).
    pub wake_retry_delays: Vec<Duration>,
    /// Tasks waiting behind the current one before each further one is logged as a warning
    /// (`max_pending`, default [`DEFAULT_MAX_PENDING`]); an assigned task is never refused.
    pub max_pending: usize,
    /// Period of the `task_progress` keepalive while a task is held (`progress_keepalive_ms`, 300000).
    pub progress_keepalive: Duration,
    /// How long a task the hub took back is kept for re-assignment (`readopt_window_ms`, 120000).
    pub readopt_window: Duration,
    /// Whether the sidecar carries out what the hub routed (`direct_execution`, default auto).
    pub direct_execution: DirectExecution,
    /// Whether `metadata.shell_command` from the hub may run (`allow_hub_commands`, default false).
    pub allow_hub_commands: bool,
    /// The operator's Ollama (`ollama_url`, an `http://` URL); sent in `identify`.
    pub ollama_url: Option<String>,
    /// The model asked of Ollama when the hub selected none (`ollama_model`).
    pub ollama_model: Option<String>,
    /// The Claude Code CLI (`claude_command`, default `claude`): a name on PATH or a path.
    pub claude_command: String,
    /// The model passed to the Claude CLI with `--model` (`claude_model`); none when unset.
    pub claude_model: Option<String>,
    /// How long one execution may run (`execution_timeout_ms`); `None`: by tier (10 min trivial,
    /// 30 min otherwise).
    pub execution_timeout: Option<Duration>,
    /// The repository the agent works in (`repo_dir`, the Node key), absolute: tasks get a branch
    /// there on accept and are delivered from it (commit, push, pull request); `None` when unset.
    pub repo_dir: Option<PathBuf>,
    /// Where a task's `repo` is cloned (`workspaces_dir`, default `workspaces/` beside queue.json).
    pub workspaces_dir: PathBuf,
    /// The hub's HTTP API (`hub_api_url`; default derived from `hub_url`: `ws://h:p/ws` gives
    /// `http://h:p`, `wss://` gives `https://`), without a trailing `/`.
    pub hub_api_url: String,
    /// The GitHub CLI used to open pull requests (`gh_command`, default `gh`).
    pub gh_command: String,
    /// Who is asked to review the pull requests (`reviewer`, passed to `gh pr create --reviewer`).
    pub reviewer: Option<String>,
    /// One human-readable line per accepted-but-unused, unknown or doubtful setting.
    pub warnings: Vec<String>,
}

/// `direct_execution`: whether the sidecar runs routed tasks itself (protocol §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectExecution {
    /// Carry out the routing when its target can run here, else wake the agent (the default).
    Auto,
    /// Carry out every routing; fail the task with the reason when it cannot run here.
    On,
    /// Wake the agent for every task (the relay only, as before).
    Off,
}

/// The longest `ollama_url` the hub accepts in `identify`.
pub const MAX_OLLAMA_URL_CHARS: usize = 512;

/// What [`Config::load_with`] and [`Config::parse_with`] take from outside the config file, so
/// tests need not touch the process environment.
#[derive(Clone, Default)]
pub struct LoadOptions {
    /// The value of `$AGENTCOM_TOKEN`; `None` (or blank) when unset.
    pub env_token: Option<String>,
    /// Accept a config file or token file that its group or others may read or write
    /// (`--allow-insecure-permissions`).
    pub allow_insecure_permissions: bool,
}

impl LoadOptions {
    /// `$AGENTCOM_TOKEN` from the process environment; permissions are checked.
    pub fn from_env() -> Self {
        LoadOptions {
            env_token: std::env::var(TOKEN_ENV).ok(),
            allow_insecure_permissions: false,
        }
    }
}

impl fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadOptions")
            .field("env_token", &self.env_token.as_ref().map(|_| "<redacted>"))
            .field("allow_insecure_permissions", &self.allow_insecure_permissions)
            .finish()
    }
}

/// `$AGENTCOM_SIDECAR_CONFIG` if set and non-empty, else `./config.json`.
pub fn default_config_path() -> PathBuf {
    match std::env::var_os(CONFIG_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("./config.json"),
    }
}

impl Config {
    /// The state folder: the one holding queue.json, where the instance lock and the state file
    /// for `status` live.
    pub fn state_dir(&self) -> PathBuf {
        self.queue_file
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }

    /// Reads and validates the config file at `path`, with `$AGENTCOM_TOKEN` from the process
    /// environment and permissions checked: `load_with(path, &LoadOptions::from_env())`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, &LoadOptions::from_env())
    }

    /// Reads and validates the config file at `path`. On Unix, a config file or token file that
    /// its group or others may read or write is refused ([`ConfigErrorKind::InsecurePermissions`])
    /// unless `opts.allow_insecure_permissions`; on Windows nothing is checked.
    pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<Config, ConfigError> {
        Config::load_inner(path, opts, true)
    }

    /// Reads and validates the config file at `path` for a command that does not talk to the hub
    /// (`status`, `try`): the token is not looked for (`$AGENTCOM_TOKEN`, `token_file` and `token`
    /// are all ignored; [`Config::token`] is empty) and file permissions are not checked. Every
    /// other field is validated as by [`Config::load_with`].
    pub fn load_without_token(path: &Path) -> Result<Config, ConfigError> {
        let opts = LoadOptions {
            env_token: None,
            allow_insecure_permissions: true,
        };
        Config::load_inner(path, &opts, false)
    }

    fn load_inner(path: &Path, opts: &LoadOptions, need_token: bool) -> Result<Config, ConfigError> {
        let abs = absolute(path);
        let text = load::read_config(&abs, opts)?;
        Config::parse_inner(&text, &abs, opts, need_token)
    }

    /// Validates config text, without `$AGENTCOM_TOKEN` (`LoadOptions::default()`). `path` names
    /// the file in messages and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_with(text, path, &LoadOptions::default())
    }

    /// Validates config text. `path` names the file in messages and anchors relative paths; a
    /// `token_file` is read from disk, and refused, like the config file in [`Config::load_with`],
    /// when its group or others may read or write it, unless `opts.allow_insecure_permissions`.
    pub fn parse_with(text: &str, path: &Path, opts: &LoadOptions) -> Result<Config, ConfigError> {
        Config::parse_inner(text, path, opts, true)
    }

    /// Parses the text (syntax, then types), checks the values, and keeps the file's `token` out
    /// of every message.
    fn parse_inner(
        text: &str,
        path: &Path,
        opts: &LoadOptions,
        need_token: bool,
    ) -> Result<Config, ConfigError> {
        let path = absolute(path);
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let fail = |kind| ConfigError {
            path: path.clone(),
            kind,
        };
        // Syntax first (serde_json's messages, with line and column); then the top level must be
        // an object.
        let value: Value = serde_json::from_str(text).map_err(|e| fail(json_error(text, &e)))?;
        if !value.is_object() {
            return Err(fail(ConfigErrorKind::NotAnObject));
        }
        // Valid JSON and an object, so this succeeds; it gives file order and duplicate keys.
        let pairs = serde_json::from_str::<Pairs>(text).unwrap_or(Pairs(Vec::new()));
        // Types next: the first wrong one in the file is the error, with its path.
        let raw = pairs.typed().map_err(fail)?;
        // Each message is made with the token in use kept out. A `token` that $AGENTCOM_TOKEN or
        // `token_file` overrides is a secret too: keep it out as well. Under 6 characters it is
        // no real secret (see `echo`).
        let secret = match &raw.token {
            Some(Ok(t)) if t.chars().count() >= 6 => Some(t.clone()),
            _ => None,
        };
        let result = Config::build(raw, &pairs, &path, opts, need_token);
        let Some(secret) = secret else {
            return result;
        };
        let scrub = |s: &mut String| {
            if s.contains(&secret) {
                *s = s.replace(&secret, "<redacted>");
            }
        };
        match result {
            Ok(mut config) => {
                config.warnings.iter_mut().for_each(scrub);
                Ok(config)
            }
            Err(mut e) => {
                match &mut e.kind {
                    ConfigErrorKind::Invalid { field, message } => {
                        scrub(field);
                        scrub(message);
                    }
                    ConfigErrorKind::WrongType { field, .. } => scrub(field),
                    ConfigErrorKind::EnvToken { message } => scrub(message),
                    _ => {}
                }
                Err(e)
            }
        }
    }
}

/// The hub's HTTP API base derived from its WebSocket URL: the scheme `ws`/`wss` becomes
/// `http`/`https` and the path (`/ws`) is dropped (protocol §7: both are served on one port).
pub fn api_url_from(hub_url: &str) -> String {
    let (scheme, rest) = match hub_url.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("ws".to_owned(), hub_url),
    };
    let http = if scheme == "wss" || scheme == "https" {
        "https"
    } else {
        "http"
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    format!("{http}://{authority}")
}
