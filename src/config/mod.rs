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
//! `hub_url` (URL checks), `check` (checks shared by fields), `error` (the messages). This module
//! parses the text, has it type-checked (the first wrong type in the file is the error, with its
//! path), then checks the values in a fixed order and builds the [`Config`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

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

use check::Checker;
use error::{echo, json_error};
use load::{absolute, opt_path, path_or, Files};
use schema::{default, Pairs, RawConfig};

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

/// The hub's Reaper drops a connection whose last JSON `ping` is older than this (protocol §2.6).
const HUB_REAPER_MS: u64 = 60_000;

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
    /// Waits before the 2nd, 3rd, ... wake attempt (`wake_retry_delays_ms`, [5000, 15000, 30000]).
    /// How long a woken task may run before its agent is stopped and the task failed
    /// (`task_timeout_ms`, 7200000: 2 h).
    pub task_timeout: Duration,
    /// How long after the agent's processes all ended a missing result fails the task
    /// (`agent_exit_grace_ms`, 60000).
    pub agent_exit_grace: Duration,
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

    /// Checks the values of a type-checked config in a fixed order (so the first problem reported
    /// does not depend on the file's order), and builds the [`Config`].
    fn build(
        raw: RawConfig,
        pairs: &Pairs,
        path: &Path,
        opts: &LoadOptions,
        need_token: bool,
    ) -> Result<Config, ConfigError> {
        let mut b = Checker {
            path,
            keys: pairs.keys().map(str::to_string).collect(),
            warnings: Vec::new(),
            check_permissions: !opts.allow_insecure_permissions,
        };

        // agent_id's messages never echo a value, so it can come before the token is known.
        let agent_id = b.required_string("agent_id", raw.agent_id, MAX_AGENT_ID_CHARS)?;
        let dir = path
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);

        // The token: $AGENTCOM_TOKEN > token_file > token. Never echoed.
        let token_file = opt_path(raw.token_file, &dir);
        let (token, token_source) = if need_token {
            token::find_token(&mut b, raw.token, token_file.as_deref(), opts)?
        } else {
            (String::new(), TokenSource::Config)
        };
        for w in pairs.key_warnings(Some(&token)) {
            b.warn(w);
        }

        let hub_url = b.required_string("hub_url", raw.hub_url, usize::MAX)?;
        if let Err(message) = hub_url::check_hub_url(&hub_url, Some(&token)) {
            return Err(b.invalid("hub_url", message));
        }
        if let Some(w) = hub_url::no_path_warning(&hub_url, Some(&token)) {
            b.warn(w);
        }

        let name = match raw.name {
            Some(n) if !n.trim().is_empty() => {
                let count = n.chars().count();
                if count > MAX_NAME_CHARS {
                    return Err(b.invalid(
                        "name",
                        format!("is too long: {count} characters, the hub accepts at most {MAX_NAME_CHARS}"),
                    ));
                }
                n
            }
            _ => agent_id.clone(),
        };

        let capabilities = raw.capabilities.unwrap_or_default();
        if let Some(i) = capabilities.iter().position(|c| c.trim().is_empty()) {
            return Err(b.invalid(
                &format!("capabilities[{i}]"),
                "is an empty string\nhelp: remove it, or name a capability such as \"code\"".to_string(),
            ));
        }

        let wake_command = raw.wake_command.filter(|w| !w.trim().is_empty());
        let executes = raw.direct_execution.as_deref().map(str::trim) != Some("off");
        if wake_command.is_none() && !executes {
            b.warn(
                "no `wake_command`: every task will be failed with `no_wake_command_configured`".to_string(),
            );
        } else if wake_command.is_none() {
            b.warn(
                "no `wake_command`: every task the sidecar cannot carry out itself (see `direct_execution`) \
                 will be failed with `no_wake_command_configured`"
                    .to_string(),
            );
        }

        let confirmation_ms = match b.ms("confirmation_timeout_ms", raw.confirmation_timeout_ms)? {
            None => default::CONFIRMATION_TIMEOUT_MS,
            Some(0) => {
                // Node reads it with `||`, so 0 has always meant the default.
                b.warn(
                    "`confirmation_timeout_ms` is 0, which means the default, 30000 (as in the Node sidecar)"
                        .to_string(),
                );
                default::CONFIRMATION_TIMEOUT_MS
            }
            Some(ms) => ms,
        };

        let results_dir = path_or(raw.results_dir, default::RESULTS_DIR, &dir);
        let log_file = path_or(raw.log_file, default::LOG_FILE, &dir);

        let heartbeat_interval = b.positive_ms(
            "heartbeat_interval_ms",
            raw.heartbeat_interval_ms,
            default::HEARTBEAT_INTERVAL_MS,
        )?;
        if heartbeat_interval >= HUB_REAPER_MS {
            return Err(b.invalid(
                "heartbeat_interval_ms",
                format!(
                    "is {heartbeat_interval}, but the hub drops a connection that has not pinged for {HUB_REAPER_MS} ms\n\
                     help: use less than {HUB_REAPER_MS}; the default is 30000"
                ),
            ));
        }
        let heartbeat_timeout = b.positive_ms(
            "heartbeat_timeout_ms",
            raw.heartbeat_timeout_ms,
            default::HEARTBEAT_TIMEOUT_MS,
        )?;
        // One ping is in flight at a time: its pong deadline must pass before the next ping is
        // due. Otherwise the next ping would go out while the previous one is still unanswered,
        // a dead link would be noticed only after several intervals, and a late pong could not be
        // told apart from the answer to the newer ping.
        if heartbeat_timeout >= heartbeat_interval {
            return Err(b.invalid(
                "heartbeat_timeout_ms",
                format!(
                    "({heartbeat_timeout}) must be less than `heartbeat_interval_ms` ({heartbeat_interval}): \
                     a pong must be due before the next ping is sent\nhelp: the defaults are 10000 and 30000"
                ),
            ));
        }
        let reconnect_initial = b.positive_ms(
            "reconnect_initial_ms",
            raw.reconnect_initial_ms,
            default::RECONNECT_INITIAL_MS,
        )?;
        let reconnect_max = b.positive_ms(
            "reconnect_max_ms",
            raw.reconnect_max_ms,
            default::RECONNECT_MAX_MS,
        )?;
        if reconnect_initial > reconnect_max {
            return Err(b.invalid(
                "reconnect_initial_ms",
                format!(
                    "({reconnect_initial}) must not be more than `reconnect_max_ms` ({reconnect_max})\n\
                     help: the defaults are 1000 and 60000"
                ),
            ));
        }

        let reconnect_jitter = match raw.reconnect_jitter {
            None => default::RECONNECT_JITTER,
            Some(n) => {
                let j = n.as_f64().unwrap_or(f64::NAN);
                if !(0.0..=1.0).contains(&j) {
                    return Err(b.invalid(
                        "reconnect_jitter",
                        format!("is {n}, but it must be from 0.0 to 1.0 (a fraction of the delay)\nhelp: the default is 0.5"),
                    ));
                }
                j
            }
        };

        let queue_file = path_or(raw.queue_file, default::QUEUE_FILE, &dir);
        let cancel_command = raw.cancel_command.filter(|c| !c.trim().is_empty());
        let wake_timeout = b.positive_ms("wake_timeout_ms", raw.wake_timeout_ms, default::WAKE_TIMEOUT_MS)?;
        let wake_retry_delays = raw
            .wake_retry_delays_ms
            .unwrap_or_else(|| default::WAKE_RETRY_DELAYS_MS.to_vec());
        let max_pending = raw.max_pending.unwrap_or(DEFAULT_MAX_PENDING);
        let progress_keepalive = b.positive_ms(
            "progress_keepalive_ms",
            raw.progress_keepalive_ms,
            default::PROGRESS_KEEPALIVE_MS,
        )?;
        let readopt_window = b.positive_ms(
            "readopt_window_ms",
            raw.readopt_window_ms,
            default::READOPT_WINDOW_MS,
        )?;
        let task_timeout = b.positive_ms("task_timeout_ms", raw.task_timeout_ms, default::TASK_TIMEOUT_MS)?;
        let agent_exit_grace = b.positive_ms(
            "agent_exit_grace_ms",
            raw.agent_exit_grace_ms,
            default::AGENT_EXIT_GRACE_MS,
        )?;

        let ca_file = opt_path(raw.ca_file, &dir);
        let log_max_bytes = match b.uint("log_max_bytes", raw.log_max_bytes)? {
            None => DEFAULT_LOG_MAX_BYTES,
            Some(n) if n < MIN_LOG_MAX_BYTES => {
                return Err(b.invalid(
                    "log_max_bytes",
                    format!(
                        "is {n}, but it must be at least {MIN_LOG_MAX_BYTES} (64 KiB)\n\
                         help: the default is {DEFAULT_LOG_MAX_BYTES} (10 MiB)"
                    ),
                ))
            }
            Some(n) => n,
        };
        let log_keep = match b.uint("log_keep", raw.log_keep)? {
            None => DEFAULT_LOG_KEEP,
            Some(n @ 1..=100) => n as u32,
            Some(n) => {
                return Err(b.invalid(
                    "log_keep",
                    format!(
                    "is {n}, but it must be from 1 to {MAX_LOG_KEEP} (how many rotated log files are kept)\n\
                         help: the default is {DEFAULT_LOG_KEEP}"
                ),
                ))
            }
        };
        let report_resources = raw.report_resources.unwrap_or(true);
        let direct_execution = match raw.direct_execution.as_deref().map(str::trim) {
            None | Some("auto") => DirectExecution::Auto,
            Some("on") => DirectExecution::On,
            Some("off") => DirectExecution::Off,
            Some(other) => {
                return Err(b.invalid(
                    "direct_execution",
                    format!(
                        "is \"{}\", but it must be \"auto\", \"on\" or \"off\"\n\
                         help: \"auto\" (the default) runs a routed task here when its target can run here and \
                         wakes the agent otherwise; \"off\" always wakes the agent",
                        echo(other, Some(&token))
                    ),
                ))
            }
        };
        let allow_hub_commands = raw.allow_hub_commands.unwrap_or(false);
        let ollama_url = match raw.ollama_url.filter(|u| !u.trim().is_empty()) {
            None => None,
            Some(u) => {
                let count = u.chars().count();
                let lower = u.to_ascii_lowercase();
                if count > MAX_OLLAMA_URL_CHARS {
                    return Err(b.invalid(
                        "ollama_url",
                        format!(
                            "is too long: {count} characters, the hub accepts at most {MAX_OLLAMA_URL_CHARS}"
                        ),
                    ));
                }
                let rest = lower.strip_prefix("http://").unwrap_or("");
                if rest.is_empty() || u.trim() != u || u.chars().any(char::is_whitespace) {
                    return Err(b.invalid(
                        "ollama_url",
                        format!(
                            "is \"{}\", but it must be an http:// URL with a host (Ollama speaks plain HTTP)\n\
                             help: for example \"http://127.0.0.1:11434\"",
                            echo(&u, Some(&token))
                        ),
                    ));
                }
                Some(u.trim_end_matches('/').to_owned())
            }
        };
        let ollama_model = raw.ollama_model.filter(|m| !m.trim().is_empty());
        let claude_command = match raw.claude_command {
            None => "claude".to_owned(),
            Some(c) if c.trim().is_empty() => {
                return Err(b.invalid(
                    "claude_command",
                    "is blank\nhelp: leave it out for the default, \"claude\" (found on PATH), \
                     or give the CLI's path"
                        .to_string(),
                ))
            }
            Some(c) => c,
        };
        let claude_model = raw.claude_model.filter(|m| !m.trim().is_empty());
        let execution_timeout = match b.ms("execution_timeout_ms", raw.execution_timeout_ms)? {
            None => None,
            Some(0) => {
                return Err(b.invalid(
                    "execution_timeout_ms",
                    "is 0, but an execution needs time\nhelp: leave it out for the defaults by tier \
                     (600000 trivial, 1800000 standard and complex)"
                        .to_string(),
                ))
            }
            Some(ms) => Some(Duration::from_millis(ms)),
        };

        let repo_dir = opt_path(raw.repo_dir, &dir);
        let workspaces_dir = match raw.workspaces_dir.filter(|s| !s.trim().is_empty()) {
            Some(w) => load::resolve(&dir, &w),
            None => queue_file
                .parent()
                .map_or_else(|| dir.clone(), Path::to_path_buf)
                .join("workspaces"),
        };
        let hub_api_url = match raw.hub_api_url.filter(|u| !u.trim().is_empty()) {
            Some(u) => {
                let lower = u.trim().to_ascii_lowercase();
                if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                    return Err(b.invalid(
                        "hub_api_url",
                        format!(
                            "is \"{}\", but it must be an http:// or https:// URL\n\
                             help: leave it out to derive it from hub_url (ws://host:port/ws gives http://host:port)",
                            echo(&u, Some(&token))
                        ),
                    ));
                }
                u.trim().trim_end_matches('/').to_owned()
            }
            None => api_url_from(&hub_url),
        };
        let gh_command = match raw.gh_command {
            None => "gh".to_owned(),
            Some(c) if c.trim().is_empty() => {
                return Err(b.invalid(
                    "gh_command",
                    "is blank\nhelp: leave it out for the default, \"gh\" (found on PATH), or give the \
                     GitHub CLI's path"
                        .to_string(),
                ))
            }
            Some(c) => c,
        };
        let reviewer = raw.reviewer.filter(|r| !r.trim().is_empty());

        b.check_files(&Files {
            log_file: &log_file,
            queue_file: &queue_file,
            ca_file: ca_file.as_deref(),
            results_dir: &results_dir,
        })?;
        if need_token {
            b.check_token_length(&token, token_source, token_file.as_deref())?;
        }

        Ok(Config {
            queue_file,
            cancel_command,
            wake_timeout: Duration::from_millis(wake_timeout),
            wake_retry_delays: wake_retry_delays.into_iter().map(Duration::from_millis).collect(),
            max_pending,
            progress_keepalive: Duration::from_millis(progress_keepalive),
            readopt_window: Duration::from_millis(readopt_window),
            task_timeout: Duration::from_millis(task_timeout),
            agent_exit_grace: Duration::from_millis(agent_exit_grace),
            path: path.to_path_buf(),
            agent_id,
            token: Secret::new(token),
            token_source,
            token_file,
            ca_file,
            log_max_bytes,
            log_keep,
            report_resources,
            direct_execution,
            allow_hub_commands,
            ollama_url,
            ollama_model,
            claude_command,
            claude_model,
            execution_timeout,
            repo_dir,
            workspaces_dir,
            hub_api_url,
            gh_command,
            reviewer,
            hub_url,
            name,
            capabilities,
            wake_command,
            confirmation_timeout: Duration::from_millis(confirmation_ms),
            results_dir,
            log_file,
            heartbeat_interval: Duration::from_millis(heartbeat_interval),
            heartbeat_timeout: Duration::from_millis(heartbeat_timeout),
            reconnect_initial: Duration::from_millis(reconnect_initial),
            reconnect_max: Duration::from_millis(reconnect_max),
            reconnect_jitter,
            warnings: b.warnings,
        })
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
