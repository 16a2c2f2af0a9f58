//! Reading and validating `config.json`, the file the Node.js sidecar used.
//!
//! The file is read as it is, so an existing Node `config.json` keeps working: the keys the Node
//! sidecar had but this one does not use are accepted with a warning, and relative paths resolve
//! against the folder holding the file, as in Node. Errors name the file, the field, what was wrong
//! and what to do. The hub token is kept in a [`Secret`] and never appears in an error, a warning
//! or `Debug` output.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// The environment variable that names the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "AGENTCOM_SIDECAR_CONFIG";

/// The environment variable holding the hub token; when set and non-empty it wins over
/// `token_file` and `token`.
pub const TOKEN_ENV: &str = "AGENTCOM_TOKEN";

/// Default `log_max_bytes`: 10 MiB.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 10_485_760;
/// Smallest `log_max_bytes` accepted: 64 KiB.
pub const MIN_LOG_MAX_BYTES: u64 = 65_536;
/// Default `log_keep`.
pub const DEFAULT_LOG_KEEP: u32 = 5;
/// Largest `log_keep` accepted.
pub const MAX_LOG_KEEP: u32 = 100;

/// Longest `agent_id` the hub accepts (hub schema, protocol §2.4).
pub const MAX_AGENT_ID_CHARS: usize = 128;
/// Longest `token` the hub accepts (hub schema, protocol §2.4).
pub const MAX_TOKEN_CHARS: usize = 256;
/// Shortest token accepted. The hub issues 64 hex characters (protocol §7.1); a token under 16 is
/// no real secret, and could not be redacted from a panic message without garbling it (a token
/// `t` would be replaced inside every word holding a t).
pub const MIN_TOKEN_CHARS: usize = 16;
/// Longest `name` the hub accepts (hub schema, protocol §2.4).
pub const MAX_NAME_CHARS: usize = 256;

/// Longest duration accepted, in milliseconds: 2^31 - 1 (about 24.8 days).
///
/// Node's `setTimeout` fires at once for anything larger, so no working Node config had more, and
/// the bound keeps `Instant + Duration` far from overflowing anywhere in the sidecar.
pub const MAX_DURATION_MS: u64 = 2_147_483_647;

/// `max_pending` when unset: well above the hub's worst burst (it assigns two or three tasks at
/// once); a pending task costs one entry in queue.json.
pub const DEFAULT_MAX_PENDING: usize = 16;

/// The hub's Reaper drops a connection whose last JSON `ping` is older than this (protocol §2.6).
const HUB_REAPER_MS: u64 = 60_000;

/// The keys this sidecar reads.
const KNOWN_KEYS: &[&str] = &[
    "agent_id",
    "token",
    "hub_url",
    "name",
    "capabilities",
    "wake_command",
    "confirmation_timeout_ms",
    "results_dir",
    "log_file",
    "heartbeat_interval_ms",
    "heartbeat_timeout_ms",
    "reconnect_initial_ms",
    "reconnect_max_ms",
    "reconnect_jitter",
    "queue_file",
    "cancel_command",
    "wake_timeout_ms",
    "wake_retry_delays_ms",
    "max_pending",
    "progress_keepalive_ms",
    "readopt_window_ms",
    "token_file",
    "ca_file",
    "log_max_bytes",
    "log_keep",
    "report_resources",
];

/// Keys of the Node sidecar's config (protocol §6.5) that this sidecar accepts but does not use.
const NODE_ONLY_KEYS: &[&str] = &[
    "hub_api_url",
    "repo_dir",
    "reviewer",
    "ollama_url",
    "log_level",
    "workspace",
];

/// A secret string (the hub token). `Debug` and `Display` print `<redacted>`.
///
/// It deliberately does not implement `Serialize`: the only way to the value is [`Secret::expose`].
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: String) -> Self {
        Secret(s)
    }

    /// The secret value itself, for the one place that must send it (the `identify` frame).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

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
    pub wake_retry_delays: Vec<Duration>,
    /// Tasks waiting behind the current one before each further one is logged as a warning
    /// (`max_pending`, default [`DEFAULT_MAX_PENDING`]); an assigned task is never refused.
    pub max_pending: usize,
    /// Period of the `task_progress` keepalive while a task is held (`progress_keepalive_ms`, 300000).
    pub progress_keepalive: Duration,
    /// How long a task the hub took back is kept for re-assignment (`readopt_window_ms`, 120000).
    pub readopt_window: Duration,
    /// One human-readable line per accepted-but-unused, unknown or doubtful setting.
    pub warnings: Vec<String>,
}

/// Where the hub token was read from. Precedence: `$AGENTCOM_TOKEN` > `token_file` > `token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// The `AGENTCOM_TOKEN` environment variable.
    Environment,
    /// The file named by `token_file`.
    File,
    /// The `token` key of the config file.
    Config,
}

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

/// Why a config could not be used. `Display` is the full message for a person, hints included.
#[derive(Debug)]
pub struct ConfigError {
    /// The config file, absolute when it could be made so.
    pub path: PathBuf,
    /// What was wrong.
    pub kind: ConfigErrorKind,
}

/// What was wrong with a config file.
#[derive(Debug)]
pub enum ConfigErrorKind {
    /// The file does not exist.
    NotFound,
    /// The file exists but could not be read (permissions, a directory, not UTF-8...).
    Unreadable(std::io::Error),
    /// The file is not valid JSON. `line` and `column` are 1-based (column in characters);
    /// `message` is serde_json's message without its position.
    InvalidJson {
        /// Line of the error, 1-based.
        line: usize,
        /// Column of the error in characters, 1-based.
        column: usize,
        /// What the JSON parser said, without its own position.
        message: String,
    },
    /// The JSON is valid, but its top level is not an object.
    NotAnObject,
    /// A required field is absent or null.
    Missing {
        /// The field's key.
        field: &'static str,
    },
    /// A required field is an empty or blank string.
    Empty {
        /// The field's key.
        field: &'static str,
    },
    /// A field has the wrong JSON type.
    WrongType {
        /// The field's key, with an index for an array item (`capabilities[2]`).
        field: String,
        /// What it must be, e.g. "an array of strings".
        expected: &'static str,
        /// What it is, e.g. "a number".
        found: &'static str,
    },
    /// The config file or the token file can be read or written by its group or by others
    /// (Unix only; `--allow-insecure-permissions` skips the check).
    InsecurePermissions {
        /// The file: the config file itself, or its `token_file`.
        file: PathBuf,
        /// Its permission bits (`mode & 0o7777`).
        mode: u32,
    },
    /// `$AGENTCOM_TOKEN` is set, but its value cannot be a hub token.
    EnvToken {
        /// What is wrong and what to do; it follows "the AGENTCOM_TOKEN environment variable ".
        message: String,
    },
    /// A field has the right type but a value that cannot be used.
    Invalid {
        /// The field's key.
        field: String,
        /// What is wrong and what to do; it follows "field `X` " in the message.
        message: String,
    },
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ConfigErrorKind::Unreadable(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match &self.kind {
            ConfigErrorKind::NotFound => write!(
                f,
                "config file {path} not found\n\
                 help: create it from the example, readable only by you (it will hold the hub token),\n\
                 \x20     then set `agent_id`, `token` and `hub_url` in it:\n\
                 \x20         install -m 600 config.json.example {quoted}\n\
                 help: or give another file with `--config PATH` or the {CONFIG_ENV} environment variable.",
                quoted = shell_quote(&self.path.to_string_lossy()),
            ),
            ConfigErrorKind::Unreadable(e) => {
                write!(f, "cannot read config file {path}: {e}")?;
                match e.kind() {
                    std::io::ErrorKind::PermissionDenied => write!(
                        f,
                        "\nhelp: the file must be readable by the user running the sidecar; \
                         as its owner, run `chmod 600 {}`",
                        shell_quote(&self.path.to_string_lossy())
                    ),
                    std::io::ErrorKind::InvalidData => f.write_str(
                        "\nhelp: the file must be UTF-8 text; save it again as UTF-8 in your editor",
                    ),
                    _ => Ok(()),
                }
            }
            ConfigErrorKind::InvalidJson {
                line,
                column,
                message,
            } => write!(
                f,
                "{path}:{line}:{column}: invalid JSON: {message}\nhelp: {}",
                json_hint(message)
            ),
            ConfigErrorKind::NotAnObject => write!(
                f,
                "{path}: the file must hold one JSON object, `{{ \"agent_id\": ..., \"token\": ..., \"hub_url\": ... }}`\n\
                 help: start from config.json.example"
            ),
            ConfigErrorKind::Missing { field } => {
                writeln!(f, "{path}: required field `{field}` is missing")?;
                write!(
                    f,
                    "help: add it inside the top-level {{ }}, for example:\n    {}",
                    example_line(field)
                )?;
                extra_help(f, field)
            }
            ConfigErrorKind::Empty { field } => {
                writeln!(f, "{path}: field `{field}` is empty")?;
                write!(f, "help: set it, for example:\n    {}", example_line(field))?;
                extra_help(f, field)
            }
            ConfigErrorKind::WrongType {
                field,
                expected,
                found,
            } => {
                write!(
                    f,
                    "{path}: field `{field}` must be {expected}, found {found}"
                )?;
                let base = field.split('[').next().unwrap_or(field);
                if KNOWN_KEYS.contains(&base) {
                    write!(f, "\nhelp: for example:\n    {}", example_line(base))?;
                }
                Ok(())
            }
            ConfigErrorKind::InsecurePermissions { file, mode } => {
                let who = match (mode & 0o070 != 0, mode & 0o007 != 0) {
                    (true, true) => "its group and by others",
                    (true, false) => "its group",
                    _ => "others",
                };
                let how = match (mode & 0o044 != 0, mode & 0o022 != 0) {
                    (true, true) => "read and written",
                    (false, true) => "written",
                    _ => "read",
                };
                let quoted = shell_quote(&file.to_string_lossy());
                if *file == self.path {
                    write!(
                        f,
                        "config file {path} can be {how} by {who} (mode {mode:04o})\n\
                         why: it holds the hub token and the wake command: anyone who can write it can run \
                         commands as the sidecar's user, and anyone who can read it can connect to the hub as this agent"
                    )?;
                } else {
                    write!(
                        f,
                        "token file {} (the `token_file` of {path}) can be {how} by {who} (mode {mode:04o})\n\
                         why: it holds the hub token: anyone who can read it can connect to the hub as this agent, \
                         and anyone who can write it can change which agent the sidecar runs as",
                        file.display()
                    )?;
                }
                write!(
                    f,
                    "\nhelp: as the file's owner, run `chmod 600 {quoted}`\n\
                     help: to start anyway (only on a machine where every user is trusted), \
                     run with `--allow-insecure-permissions`"
                )
            }
            ConfigErrorKind::EnvToken { message } => write!(
                f,
                "the {TOKEN_ENV} environment variable (which overrides the token of {path}) {message}\n\
                 help: or unset {TOKEN_ENV} to use `token_file` or `token` from the config"
            ),
            ConfigErrorKind::Invalid { field, message } => {
                write!(f, "{path}: field `{field}` {message}")
            }
        }
    }
}

/// An example line of config.json for a key, shown in hints. Never holds a real token.
fn example_line(field: &str) -> String {
    let value = match field {
        "agent_id" => "\"my-agent\"",
        "token" => "\"<the 64-hex-character token the hub issued for this agent_id>\"",
        "hub_url" => "\"ws://hub.example:4000/ws\"",
        "name" => "\"My agent\"",
        "capabilities" => "[\"code\"]",
        "wake_command" => {
            "\"openclaw system event --text \\\"AgentCom task ${TASK_ID}: ${TASK_DESCRIPTION}\\\" --mode now\""
        }
        "confirmation_timeout_ms" | "heartbeat_interval_ms" => "30000",
        "heartbeat_timeout_ms" => "10000",
        "reconnect_initial_ms" => "1000",
        "reconnect_max_ms" => "60000",
        "reconnect_jitter" => "0.5",
        "results_dir" => "\"./results\"",
        "queue_file" => "\"./queue.json\"",
        "wake_timeout_ms" => "60000",
        "wake_retry_delays_ms" => "[5000, 15000, 30000]",
        "max_pending" => "16",
        "progress_keepalive_ms" => "300000",
        "readopt_window_ms" => "120000",
        "log_file" => "\"./sidecar.log\"",
        "token_file" => "\"/etc/agentcom/token\"",
        "ca_file" => "\"/etc/agentcom/hub-ca.pem\"",
        "log_max_bytes" => "10485760",
        "log_keep" => "5",
        "report_resources" => "true",
        _ => "...",
    };
    format!("\"{field}\": {value}")
}

/// Further help for some fields, after the example line.
fn extra_help(f: &mut fmt::Formatter<'_>, field: &str) -> fmt::Result {
    match field {
        "token" => f.write_str(
            "\nhelp: get a token on the hub with `mix agent_com.gen_token --agent-id ID`, \
             or from `POST /api/onboard/register`\n\
             help: or keep it out of this file: name a file holding it with `token_file`, \
             or set the AGENTCOM_TOKEN environment variable",
        ),
        "hub_url" => f.write_str(
            "\nhelp: the hub serves WebSocket at /ws: `ws://HOST:4000/ws`, or `wss://HOST/ws` behind TLS",
        ),
        _ => Ok(()),
    }
}

/// A hint for a JSON syntax error, from serde_json's message.
fn json_hint(message: &str) -> &'static str {
    if message.contains("trailing comma") {
        "remove the comma after the last entry; JSON does not allow a comma before `}` or `]`"
    } else if message.contains("EOF while parsing") {
        "the file ends too early: look for a missing `}`, `]` or `\"` (an empty file is not a config either; start from config.json.example)"
    } else if message.contains("key must be a string") {
        "keys must be in double quotes (\"agent_id\"); a comma before `}` or a comment causes this too (JSON has no comments)"
    } else if message.contains("expected `,` or `}`") || message.contains("expected `,` or `]`") {
        "a comma is probably missing at the end of the previous entry, or a comment is there (JSON has no comments)"
    } else if message.contains("invalid escape") {
        "a backslash starts an escape in JSON strings: write Windows paths with `\\\\` or `/`"
    } else if message.contains("control character") {
        "a string holds a raw tab or line break: close the string on the same line, or write \\t or \\n"
    } else if message.contains("trailing characters") {
        "there is text after the closing `}`: the file must hold exactly one JSON object"
    } else if message.contains("expected value") {
        "strings need double quotes, not single quotes; comments and trailing commas are not allowed in JSON"
    } else {
        "check the JSON near there: strings need double quotes, and comments and trailing commas are not allowed"
    }
}

/// Quotes a string for a POSIX shell when it holds anything but plain path characters.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@,=%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The top-level object as (key, value) pairs in file order, duplicates kept.
struct Pairs(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pairs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                let mut v = Vec::new();
                while let Some(pair) = map.next_entry::<String, Value>()? {
                    v.push(pair);
                }
                Ok(Pairs(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// The JSON type of a value, for messages.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal number",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Edit distance with adjacent transpositions (optimal string alignment), on characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The known key an unknown key was probably meant to be: within edit distance 2 (ignoring
/// case), the same key without its `_ms` suffix, or `hub_ws_url` (the hub's register reply).
fn suggest(key: &str) -> Option<&'static str> {
    let lower = key.to_lowercase();
    if lower == "hub_ws_url" {
        return Some("hub_url");
    }
    if let Some(k) = KNOWN_KEYS.iter().find(|k| **k == format!("{lower}_ms")) {
        return Some(k);
    }
    KNOWN_KEYS
        .iter()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// A value from the file, made safe to quote in a message: control characters escaped, long
/// values cut, and the token (if known) replaced by `<redacted>` wherever it occurs. A token of
/// under 6 characters is no real secret (hub tokens are 64 hex digits), and replacing it would
/// garble the message (`t` inside `http`), so only longer tokens are replaced.
fn echo(value: &str, token: Option<&str>) -> String {
    let mut s = value.to_string();
    if let Some(t) = token {
        if t.chars().count() >= 6 {
            s = s.replace(t, "<redacted>");
        }
    }
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().count() > 80 {
        out.push_str("...");
    }
    out
}

/// Makes `p` absolute against `base`, dropping `.` components. `~` and `~/...` use `$HOME`.
fn resolve(base: &Path, p: &str) -> PathBuf {
    let expanded = match (p.strip_prefix('~'), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            PathBuf::from(home).join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(p),
    };
    let joined = base.join(expanded);
    joined
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// Refuses a file that its group or others may read or write (`mode & 0o077 != 0`): it holds the
/// hub token (and, for the config file, the wake command). Returns the file's permission bits on
/// refusal. A file whose metadata cannot be read passes: reading it will report the problem.
#[cfg(unix)]
fn insecure_mode(file: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file).ok()?.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then_some(mode)
}

/// On Windows nothing is checked: files there have ACLs, not mode bits, and a file in the user's
/// profile is private by default.
#[cfg(not(unix))]
fn insecure_mode(_file: &Path) -> Option<u32> {
    None
}

/// Makes a path absolute (against the current directory) without touching the file system.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Builds a [`Config`] from the top-level object, collecting warnings.
struct Builder<'a> {
    path: &'a Path,
    obj: serde_json::Map<String, Value>,
    warnings: Vec<String>,
    /// Refuse a token file its group or others may read or write.
    check_permissions: bool,
}

impl Builder<'_> {
    fn err(&self, kind: ConfigErrorKind) -> ConfigError {
        ConfigError {
            path: self.path.to_path_buf(),
            kind,
        }
    }

    fn warn(&mut self, msg: String) {
        self.warnings.push(format!("{}: {msg}", self.path.display()));
    }

    fn invalid(&self, field: &str, message: String) -> ConfigError {
        self.err(ConfigErrorKind::Invalid {
            field: field.to_string(),
            message,
        })
    }

    /// The value of a key, with null read as absent.
    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    /// An optional string; null is absent.
    fn opt_string(&self, key: &'static str) -> Result<Option<String>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.err(ConfigErrorKind::WrongType {
                field: key.to_string(),
                expected: "a string",
                found: json_type(v),
            })),
        }
    }

    /// A required, non-blank string of at most `max` characters, without control characters or
    /// surrounding spaces. The value is never echoed (it may be the token).
    fn required_string(&self, key: &'static str, max: usize) -> Result<String, ConfigError> {
        let s = match self.get(key) {
            None => {
                // A typo of a required key is the likely cause: say so instead of "missing".
                if let Some(typo) = self
                    .obj
                    .keys()
                    .find(|k| !KNOWN_KEYS.contains(&k.as_str()) && suggest(k) == Some(key))
                {
                    return Err(self.invalid(
                        key,
                        format!(
                            "is missing, but there is a key `{}`\nhelp: did you mean `{key}`? rename the key",
                            echo(typo, None)
                        ),
                    ));
                }
                return Err(self.err(ConfigErrorKind::Missing { field: key }));
            }
            Some(Value::String(s)) => s.clone(),
            Some(v) => {
                return Err(self.err(ConfigErrorKind::WrongType {
                    field: key.to_string(),
                    expected: "a string",
                    found: json_type(v),
                }))
            }
        };
        if s.trim().is_empty() {
            return Err(self.err(ConfigErrorKind::Empty { field: key }));
        }
        let n = s.chars().count();
        if n > max {
            return Err(self.invalid(
                key,
                format!(
                    "is too long: {n} characters, the hub accepts at most {max}\n\
                     help: check that the value is complete and nothing was pasted into it twice"
                ),
            ));
        }
        if s.trim() != s {
            return Err(self.invalid(
                key,
                "has spaces or a line break at its start or end\nhelp: remove them; the hub compares the value exactly"
                    .to_string(),
            ));
        }
        if s.chars().any(char::is_control) {
            return Err(self.invalid(
                key,
                "holds a control character (a tab or line break?)\nhelp: remove it".to_string(),
            ));
        }
        Ok(s)
    }

    /// A duration in milliseconds; `None` when absent or null.
    fn opt_ms(&self, key: &'static str) -> Result<Option<u64>, ConfigError> {
        let v = match self.get(key) {
            None => return Ok(None),
            Some(v) => v,
        };
        let wrong = |found| {
            self.err(ConfigErrorKind::WrongType {
                field: key.to_string(),
                expected: "a whole number of milliseconds",
                found,
            })
        };
        let Value::Number(n) = v else {
            return Err(wrong(json_type(v)));
        };
        if let Some(ms) = n.as_u64() {
            if ms > MAX_DURATION_MS {
                return Err(self.invalid(
                    key,
                    format!(
                        "is {ms} ms, more than the largest accepted, {MAX_DURATION_MS} ms (about 24.8 days)"
                    ),
                ));
            }
            Ok(Some(ms))
        } else if n.is_i64() {
            Err(self.invalid(
                key,
                format!(
                    "is negative ({n})\nhelp: give a duration in milliseconds, for example:\n    {}",
                    example_line(key)
                ),
            ))
        } else {
            Err(wrong("a decimal number"))
        }
    }

    /// A whole number; `None` when absent or null. `expected` names it in messages
    /// ("a whole number of bytes").
    fn opt_uint(&self, key: &'static str, expected: &'static str) -> Result<Option<u64>, ConfigError> {
        let v = match self.get(key) {
            None => return Ok(None),
            Some(v) => v,
        };
        let wrong = |found| {
            self.err(ConfigErrorKind::WrongType {
                field: key.to_string(),
                expected,
                found,
            })
        };
        let Value::Number(n) = v else {
            return Err(wrong(json_type(v)));
        };
        if let Some(x) = n.as_u64() {
            Ok(Some(x))
        } else if n.is_i64() {
            Err(self.invalid(
                key,
                format!("is negative ({n})\nhelp: for example:\n    {}", example_line(key)),
            ))
        } else {
            Err(wrong("a decimal number"))
        }
    }

    /// An optional path resolved against `dir`; absent, null, "" or blank is `None`.
    fn opt_path(&self, key: &'static str, dir: &Path) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self
            .opt_string(key)?
            .filter(|s| !s.trim().is_empty())
            .map(|s| resolve(dir, &s)))
    }

    /// Reads the token from `file` (the `token_file`), trimmed of surrounding whitespace. The
    /// file's content is never echoed.
    fn read_token_file(&self, file: &Path) -> Result<String, ConfigError> {
        let shown = shell_quote(&file.to_string_lossy());
        let fail = |message: String| self.invalid("token_file", message);
        if file.is_dir() {
            return Err(fail(format!(
                "names {shown}, which is a folder\nhelp: name the file that holds the token"
            )));
        }
        if let Some(kind) = crate::files::not_regular(file) {
            return Err(fail(format!(
                "names {shown}, which is {kind}, not a regular file\n\
                 help: name a regular file that holds the token alone (a FIFO or a device would block or never end)"
            )));
        }
        if self.check_permissions {
            if let Some(mode) = insecure_mode(file) {
                return Err(self.err(ConfigErrorKind::InsecurePermissions {
                    file: file.to_path_buf(),
                    mode,
                }));
            }
        }
        let text = match read_limited(file, MAX_TOKEN_FILE_BYTES) {
            Ok(t) => t,
            Err(e) => {
                return Err(fail(match e.kind() {
                    std::io::ErrorKind::FileTooLarge => format!(
                        "names {shown}, which holds more than {MAX_TOKEN_FILE_BYTES} bytes\n\
                         help: it must hold the token alone"
                    ),
                    std::io::ErrorKind::NotFound => format!(
                        "names {shown}, which does not exist\n\
                         help: create it holding only the token, readable only by you:\n\
                         \x20   (umask 077 && printf '%s\\n' 'THE_TOKEN' > {shown})\n\
                         help: a relative path is read from the config file's folder"
                    ),
                    std::io::ErrorKind::PermissionDenied => format!(
                        "names {shown}, which cannot be read: {e}\n\
                         help: it must be readable by the user running the sidecar; as its owner, run `chmod 600 {shown}`"
                    ),
                    std::io::ErrorKind::InvalidData => format!(
                        "names {shown}, which is not UTF-8 text\nhelp: it must hold the token alone, as text"
                    ),
                    _ => format!("names {shown}, which cannot be read: {e}"),
                }))
            }
        };
        let token = text.trim();
        if token.is_empty() {
            return Err(fail(format!(
                "names {shown}, which is empty\n\
                 help: write the token the hub issued for this agent_id into it \
                 (`mix agent_com.gen_token --agent-id ID` on the hub)"
            )));
        }
        if let Err(message) = check_token(token) {
            return Err(fail(format!("names {shown}, whose token {message}")));
        }
        Ok(token.to_string())
    }

    /// Refuses `file` (the value of `field`, or `what` beside it) when it exists and is not a
    /// regular file (a FIFO, a socket, a device, a folder). It is never opened here.
    fn regular_or_absent(&self, field: &str, file: &Path, what: &str) -> Result<(), ConfigError> {
        let Some(kind) = crate::files::not_regular(file) else {
            return Ok(());
        };
        let shown = shell_quote(&file.to_string_lossy());
        let message = if what.is_empty() {
            format!(
                "names {shown}, which is {kind}, not a regular file\n\
                 help: name a regular file (or a path where the sidecar can create one); \
                 a FIFO or a device would block the sidecar or never end"
            )
        } else {
            format!(
                "names a folder that holds {shown}, {what}, which is {kind}, not a regular file\n\
                 help: remove it (the sidecar creates it), or choose another folder for `{field}`"
            )
        };
        Err(self.invalid(field, message))
    }

    /// Refuses a token under [`MIN_TOKEN_CHARS`], naming where it came from.
    fn check_token_length(
        &self,
        token: &str,
        source: TokenSource,
        file: Option<&Path>,
    ) -> Result<(), ConfigError> {
        let n = token.chars().count();
        if n >= MIN_TOKEN_CHARS {
            return Ok(());
        }
        let why = format!(
            "is {n} characters long, but a token must have at least {MIN_TOKEN_CHARS}: the hub issues \
             64 hex characters, and a shorter token could not be kept out of panic messages without \
             garbling them"
        );
        let help = "help: copy the whole token the hub issued for this agent_id \
                    (`mix agent_com.gen_token --agent-id ID` on the hub)";
        Err(match source {
            TokenSource::Environment => self.err(ConfigErrorKind::EnvToken {
                message: format!("holds a token that {why}\n{help}"),
            }),
            TokenSource::File => {
                let shown = shell_quote(&file.unwrap_or(Path::new("")).to_string_lossy());
                self.invalid("token_file", format!("names {shown}, whose token {why}\n{help}"))
            }
            TokenSource::Config => self.invalid("token", format!("{why}\n{help}")),
        })
    }

    /// A duration in milliseconds that must be more than 0.
    fn positive_ms(&self, key: &'static str, default: u64) -> Result<u64, ConfigError> {
        match self.opt_ms(key)? {
            None => Ok(default),
            Some(0) => Err(self.invalid(
                key,
                format!("is 0, but it must be more than 0\nhelp: leave it out for the default, {default}"),
            )),
            Some(ms) => Ok(ms),
        }
    }

    /// Sorts each top-level key into used, Node-only (warn) or unknown (warn, maybe suggest).
    fn check_keys(&mut self, pairs: &[(String, Value)], token: Option<&str>) {
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in pairs {
            let shown = echo(key, token);
            if seen.contains(&key.as_str()) {
                self.warn(format!("`{shown}` appears more than once; the last one is used"));
                continue;
            }
            seen.push(key);
            if KNOWN_KEYS.contains(&key.as_str()) {
                continue;
            }
            if NODE_ONLY_KEYS.contains(&key.as_str()) {
                // A Node setting left at its "off" value (null or "", as add-agent.js writes them)
                // changes nothing in Node either, so ignoring it loses nothing: no warning.
                let off = value.is_null() || value.as_str() == Some("");
                if !off {
                    self.warn(format!(
                        "`{shown}` is a Node sidecar setting this sidecar does not use; it is ignored"
                    ));
                }
                continue;
            }
            match suggest(key) {
                Some(k) => self.warn(format!("unknown key `{shown}` is ignored; did you mean `{k}`?")),
                None => self.warn(format!("unknown key `{shown}` is ignored")),
            }
        }
    }

    fn hub_url(&mut self, token: &str) -> Result<String, ConfigError> {
        let url = self.required_string("hub_url", usize::MAX)?;
        if let Err(message) = check_hub_url(&url, Some(token)) {
            return Err(self.invalid("hub_url", message));
        }
        let after_scheme = &url[url.find("://").map_or(0, |i| i + 3)..];
        let rest = after_scheme.find(['/', '?']).map_or("", |i| &after_scheme[i..]);
        if rest.is_empty() || rest == "/" {
            self.warn(format!(
                "`hub_url` `{}` has no path, but the AgentCom hub serves WebSocket at /ws; did you mean `{}/ws`?",
                echo(&url, Some(token)),
                echo(url.trim_end_matches('/'), Some(token))
            ));
        }
        Ok(url)
    }
}

/// The largest config file read (a config is a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The largest token file read (a token is 64 characters).
pub const MAX_TOKEN_FILE_BYTES: u64 = 64 << 10;

/// Reads a UTF-8 text file of at most `limit` bytes. A larger one, or an endless one such as
/// `/dev/zero`, is refused (`ErrorKind::FileTooLarge`) after reading `limit + 1` bytes.
fn read_limited(path: &Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    crate::files::open_read(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("it holds more than {limit} bytes"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Checks a token read from `token_file` or the environment (already trimmed and non-empty);
/// on error returns a message that never holds the token.
fn check_token(token: &str) -> Result<(), String> {
    let n = token.chars().count();
    if n > MAX_TOKEN_CHARS {
        return Err(format!(
            "is too long: {n} characters, the hub accepts at most {MAX_TOKEN_CHARS}\n\
             help: it must hold the token alone"
        ));
    }
    if token.chars().any(char::is_control) {
        return Err(
            "holds a control character or a line break inside it\nhelp: it must hold the token alone, on one line"
                .to_string(),
        );
    }
    Ok(())
}

/// Checks a hub URL; on error returns the message that follows "field `hub_url` ".
fn check_hub_url(url: &str, token: Option<&str>) -> Result<(), String> {
    const GOOD: &str =
        "help: write `ws://HOST:4000/ws`, or `wss://HOST/ws` when TLS is terminated in front of the hub";
    let shown = echo(url, token);
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "(`{shown}`) holds a space or a control character\n{GOOD}"
        ));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "(`{shown}`) has no scheme\nhelp: write `ws://{}{}`",
            echo(url.trim_start_matches('/'), token),
            if url.contains('/') { "" } else { "/ws" }
        ));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "ws" | "wss" => {}
        s @ ("http" | "https") => {
            let ws = if s == "http" { "ws" } else { "wss" };
            let mut fixed = format!("{ws}://{rest}");
            if !rest.contains('/') || rest.ends_with(':') {
                fixed.push_str("/ws");
            } else if rest.ends_with('/') && rest.matches('/').count() == 1 {
                fixed.push_str("ws");
            }
            return Err(format!(
                "(`{shown}`) is an HTTP URL; the sidecar connects over WebSocket: use ws:// or wss://\nhelp: write `{}`",
                echo(&fixed, token)
            ));
        }
        _ => {
            return Err(format!(
                "(`{shown}`) has the scheme `{}`, but it must be ws:// or wss://\n{GOOD}",
                echo(scheme, token)
            ))
        }
    }
    if url.contains('#') {
        return Err(format!(
            "(`{shown}`) has a `#fragment`, which WebSocket URLs cannot have\n{GOOD}"
        ));
    }
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    if authority.contains('@') {
        // Not echoed: user info may hold a password.
        return Err(format!(
            "must not hold a user name or password (`user@`); the hub authenticates with `token`\n{GOOD}"
        ));
    }
    if !authority.starts_with('[') && authority.matches(':').count() > 1 {
        return Err(format!(
            "(`{shown}`) has an IPv6 address without brackets\nhelp: write it like `ws://[::1]:4000/ws`"
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(format!(
                "(`{shown}`) has an IPv6 address without its closing `]`\n{GOOD}"
            ));
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "(`{shown}`) has `{}`, which is not an IPv6 address\nhelp: write it like `ws://[::1]:4000/ws`",
                echo(addr, token)
            ));
        }
        match after.strip_prefix(':') {
            Some(p) => (addr, Some(p)),
            None if after.is_empty() => (addr, None),
            None => {
                return Err(format!(
                    "(`{shown}`) has text after the IPv6 address's `]`\n{GOOD}"
                ))
            }
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("(`{shown}`) has no host\n{GOOD}"));
    }
    if !authority.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    {
        return Err(format!(
            "(`{shown}`) has `{}`, which is not a host name or address\n{GOOD}",
            echo(host, token)
        ));
    }
    if let Some(p) = port {
        if p.is_empty()
            || !p.chars().all(|c| c.is_ascii_digit())
            || !matches!(p.parse::<u32>(), Ok(1..=65535))
        {
            return Err(format!(
                "(`{shown}`): the port must be a number from 1 to 65535, as in `ws://HOST:4000/ws`"
            ));
        }
    }
    Ok(())
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
        let fail = |kind| ConfigError {
            path: abs.clone(),
            kind,
        };
        if abs.is_dir() {
            return Err(fail(ConfigErrorKind::Unreadable(std::io::Error::other(
                "it is a directory; give the path of the JSON file itself",
            ))));
        }
        // A FIFO would block the read until a writer comes, a device may never end: never open one.
        if let Some(kind) = crate::files::not_regular(&abs) {
            return Err(fail(ConfigErrorKind::Unreadable(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("it is {kind}, not a regular file; give the path of the JSON file itself"),
            ))));
        }
        // Before anything reads the token or connects: a file others can write is a way to run
        // commands as this user.
        if !opts.allow_insecure_permissions {
            if let Some(mode) = insecure_mode(&abs) {
                return Err(fail(ConfigErrorKind::InsecurePermissions {
                    file: abs.clone(),
                    mode,
                }));
            }
        }
        let text = match read_limited(&abs, MAX_CONFIG_BYTES) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(fail(ConfigErrorKind::NotFound))
            }
            Err(e) => return Err(fail(ConfigErrorKind::Unreadable(e))),
        };
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

    fn parse_inner(
        text: &str,
        path: &Path,
        opts: &LoadOptions,
        need_token: bool,
    ) -> Result<Config, ConfigError> {
        let result = Config::build(text, path, opts, need_token);
        // Each message is made with the token in use kept out. A `token` that $AGENTCOM_TOKEN or
        // `token_file` overrides is a secret too: keep it out as well. Under 6 characters it is
        // no real secret (see `echo`).
        let ignored = serde_json::from_str::<Value>(text.strip_prefix('\u{feff}').unwrap_or(text))
            .ok()
            .and_then(|v| v.get("token")?.as_str().map(str::to_owned))
            .filter(|t| t.chars().count() >= 6);
        let Some(secret) = ignored else {
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

    /// [`Config::parse_with`] before the overridden `token` is scrubbed from its messages.
    fn build(text: &str, path: &Path, opts: &LoadOptions, need_token: bool) -> Result<Config, ConfigError> {
        let path = absolute(path);
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let fail = |kind| ConfigError {
            path: path.clone(),
            kind,
        };
        let value: Value = serde_json::from_str(text).map_err(|e| fail(json_error(text, &e)))?;
        let Value::Object(obj) = value else {
            return Err(fail(ConfigErrorKind::NotAnObject));
        };
        // Valid JSON and an object, so this succeeds; it gives file order and duplicate keys.
        let pairs = serde_json::from_str::<Pairs>(text)
            .map(|p| p.0)
            .unwrap_or_default();
        let mut b = Builder {
            path: &path,
            obj,
            warnings: Vec::new(),
            check_permissions: !opts.allow_insecure_permissions,
        };

        // agent_id's messages never echo a value, so it can come before the token is known.
        let agent_id = b.required_string("agent_id", MAX_AGENT_ID_CHARS)?;
        let dir = path
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);

        // The token: $AGENTCOM_TOKEN > token_file > token. Never echoed.
        let token_file = b.opt_path("token_file", &dir)?;
        let env_token = opts.env_token.as_deref().map(str::trim).filter(|t| !t.is_empty());
        let config_token_present = b
            .get("token")
            .is_some_and(|v| v.as_str().is_none_or(|s| !s.trim().is_empty()));
        let (token, token_source) = if !need_token {
            (String::new(), TokenSource::Config)
        } else if let Some(t) = env_token {
            if let Err(message) = check_token(t) {
                return Err(b.err(ConfigErrorKind::EnvToken { message }));
            }
            let ignored = match (token_file.is_some(), config_token_present) {
                (true, true) => Some("`token_file` and `token` in the config are"),
                (true, false) => Some("`token_file` in the config is"),
                (false, true) => Some("`token` in the config is"),
                (false, false) => None,
            };
            if let Some(ignored) = ignored {
                b.warn(format!(
                    "the token from the {TOKEN_ENV} environment variable is used; {ignored} ignored"
                ));
            }
            (t.to_string(), TokenSource::Environment)
        } else if let Some(file) = &token_file {
            let t = b.read_token_file(file)?;
            if config_token_present {
                b.warn(format!(
                    "the token from `token_file` ({}) is used; `token` is ignored",
                    file.display()
                ));
            }
            (t, TokenSource::File)
        } else {
            (b.required_string("token", MAX_TOKEN_CHARS)?, TokenSource::Config)
        };
        b.check_keys(&pairs, Some(&token));
        let hub_url = b.hub_url(&token)?;

        let name = match b.opt_string("name")? {
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

        let capabilities =
            match b.get("capabilities") {
                None => Vec::new(),
                Some(Value::Array(items)) => {
                    let mut caps = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        match item {
                            Value::String(s) if s.trim().is_empty() => return Err(b.invalid(
                                &format!("capabilities[{i}]"),
                                "is an empty string\nhelp: remove it, or name a capability such as \"code\""
                                    .to_string(),
                            )),
                            Value::String(s) => caps.push(s.clone()),
                            other => {
                                return Err(b.err(ConfigErrorKind::WrongType {
                                    field: format!("capabilities[{i}]"),
                                    expected: "a string",
                                    found: json_type(other),
                                }))
                            }
                        }
                    }
                    caps
                }
                Some(other) => {
                    return Err(b.err(ConfigErrorKind::WrongType {
                        field: "capabilities".to_string(),
                        expected: "an array of strings",
                        found: json_type(other),
                    }))
                }
            };

        let wake_command = b.opt_string("wake_command")?.filter(|w| !w.trim().is_empty());
        if wake_command.is_none() {
            b.warn(
                "no `wake_command`: every task will be failed with `no_wake_command_configured`".to_string(),
            );
        }

        let confirmation_ms = match b.opt_ms("confirmation_timeout_ms")? {
            None => 30_000,
            Some(0) => {
                // Node reads it with `||`, so 0 has always meant the default.
                b.warn(
                    "`confirmation_timeout_ms` is 0, which means the default, 30000 (as in the Node sidecar)"
                        .to_string(),
                );
                30_000
            }
            Some(ms) => ms,
        };

        let results_dir = resolve(
            &dir,
            &b.opt_string("results_dir")?
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "./results".to_string()),
        );
        let log_file = resolve(
            &dir,
            &b.opt_string("log_file")?
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "./sidecar.log".to_string()),
        );

        let heartbeat_interval = b.positive_ms("heartbeat_interval_ms", 30_000)?;
        if heartbeat_interval >= HUB_REAPER_MS {
            return Err(b.invalid(
                "heartbeat_interval_ms",
                format!(
                    "is {heartbeat_interval}, but the hub drops a connection that has not pinged for {HUB_REAPER_MS} ms\n\
                     help: use less than {HUB_REAPER_MS}; the default is 30000"
                ),
            ));
        }
        let heartbeat_timeout = b.positive_ms("heartbeat_timeout_ms", 10_000)?;
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
        let reconnect_initial = b.positive_ms("reconnect_initial_ms", 1_000)?;
        let reconnect_max = b.positive_ms("reconnect_max_ms", 60_000)?;
        if reconnect_initial > reconnect_max {
            return Err(b.invalid(
                "reconnect_initial_ms",
                format!(
                    "({reconnect_initial}) must not be more than `reconnect_max_ms` ({reconnect_max})\n\
                     help: the defaults are 1000 and 60000"
                ),
            ));
        }

        let reconnect_jitter = match b.get("reconnect_jitter") {
            None => 0.5,
            Some(Value::Number(n)) => {
                let j = n.as_f64().unwrap_or(f64::NAN);
                if !(0.0..=1.0).contains(&j) {
                    return Err(b.invalid(
                        "reconnect_jitter",
                        format!("is {n}, but it must be from 0.0 to 1.0 (a fraction of the delay)\nhelp: the default is 0.5"),
                    ));
                }
                j
            }
            Some(other) => {
                return Err(b.err(ConfigErrorKind::WrongType {
                    field: "reconnect_jitter".to_string(),
                    expected: "a number from 0.0 to 1.0",
                    found: json_type(other),
                }))
            }
        };

        let queue_file = resolve(
            &dir,
            &b.opt_string("queue_file")?
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "./queue.json".to_string()),
        );
        let cancel_command = b.opt_string("cancel_command")?.filter(|c| !c.trim().is_empty());
        let wake_timeout = b.positive_ms("wake_timeout_ms", 60_000)?;
        let wake_retry_delays = match b.get("wake_retry_delays_ms") {
            None => vec![5_000, 15_000, 30_000],
            Some(Value::Array(items)) => {
                let mut delays = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item.as_u64().filter(|ms| *ms <= MAX_DURATION_MS) {
                        Some(ms) => delays.push(ms),
                        None => {
                            return Err(b.err(ConfigErrorKind::WrongType {
                                field: format!("wake_retry_delays_ms[{i}]"),
                                expected: "a whole number of milliseconds",
                                found: json_type(item),
                            }))
                        }
                    }
                }
                delays
            }
            Some(other) => {
                return Err(b.err(ConfigErrorKind::WrongType {
                    field: "wake_retry_delays_ms".to_string(),
                    expected: "an array of milliseconds, e.g. [5000, 15000, 30000]",
                    found: json_type(other),
                }))
            }
        };
        let max_pending = match b.get("max_pending") {
            None => DEFAULT_MAX_PENDING,
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= 100) => {
                n.as_u64().unwrap_or(1) as usize
            }
            Some(other) => {
                return Err(b.err(ConfigErrorKind::WrongType {
                    field: "max_pending".to_string(),
                    expected: "a whole number from 0 to 100",
                    found: json_type(other),
                }))
            }
        };
        let progress_keepalive = b.positive_ms("progress_keepalive_ms", 300_000)?;
        let readopt_window = b.positive_ms("readopt_window_ms", 120_000)?;

        let ca_file = b.opt_path("ca_file", &dir)?;
        let log_max_bytes = match b.opt_uint("log_max_bytes", "a whole number of bytes")? {
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
        let log_keep = match b.opt_uint("log_keep", "a whole number from 1 to 100")? {
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
        let report_resources = match b.get("report_resources") {
            None => true,
            Some(Value::Bool(v)) => *v,
            Some(other) => {
                return Err(b.err(ConfigErrorKind::WrongType {
                    field: "report_resources".to_string(),
                    expected: "true or false",
                    found: json_type(other),
                }))
            }
        };

        // Every file the sidecar reads or appends to is a regular file or absent: a FIFO would
        // block the sidecar before it could say anything, a device may never end.
        let state_dir = queue_file.parent().map(Path::to_path_buf).unwrap_or_default();
        b.regular_or_absent("log_file", &log_file, "")?;
        b.regular_or_absent("queue_file", &queue_file, "")?;
        if let Some(ca) = &ca_file {
            b.regular_or_absent("ca_file", ca, "")?;
        }
        for (name, what) in [
            (crate::status::STATE_FILE, "the state file for `status`"),
            (crate::lock::LOCK_FILE, "the instance lock file"),
        ] {
            b.regular_or_absent("queue_file", &state_dir.join(name), what)?;
        }
        if results_dir.exists() && !results_dir.is_dir() {
            let kind = std::fs::metadata(&results_dir)
                .map(|m| crate::files::kind_name(&m.file_type()))
                .unwrap_or("not a folder");
            return Err(b.invalid(
                "results_dir",
                format!(
                    "names {}, which is {kind}, not a folder\n\
                     help: `results_dir` is the folder where the agent writes its files: name a folder \
                     (it is created if missing), or move that file away",
                    shell_quote(&results_dir.to_string_lossy())
                ),
            ));
        }
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
            path: path.clone(),
            agent_id,
            token: Secret::new(token),
            token_source,
            token_file,
            ca_file,
            log_max_bytes,
            log_keep,
            report_resources,
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

/// Turns a serde_json syntax error into [`ConfigErrorKind::InvalidJson`], with the column
/// counted in characters (serde counts bytes) and serde's own position cut from the message.
fn json_error(text: &str, e: &serde_json::Error) -> ConfigErrorKind {
    let (line, byte_col) = (e.line(), e.column());
    let full = e.to_string();
    let suffix = format!(" at line {line} column {byte_col}");
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
    let column = match text.split('\n').nth(line.saturating_sub(1)) {
        Some(l) => {
            let mut end = byte_col.min(l.len());
            while !l.is_char_boundary(end) {
                end += 1;
            }
            l[..end].chars().count().max(1)
        }
        None => byte_col.max(1),
    };
    ConfigErrorKind::InvalidJson {
        line,
        column,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn p() -> PathBuf {
        PathBuf::from("/srv/agent/config.json")
    }

    fn minimal() -> String {
        format!(
            r#"{{"agent_id":"a1","token":"{TOKEN}","hub_url":"ws://127.0.0.1:4000/ws","wake_command":"true"}}"#
        )
    }

    /// The minimal config with `key` set to the raw JSON `value`.
    fn with(key: &str, value: &str) -> String {
        let mut v: serde_json::Map<String, Value> = serde_json::from_str(&minimal()).unwrap();
        v.insert(key.to_string(), serde_json::from_str(value).unwrap());
        serde_json::to_string(&v).unwrap()
    }

    fn without(key: &str) -> String {
        let mut v: serde_json::Map<String, Value> = serde_json::from_str(&minimal()).unwrap();
        v.remove(key);
        serde_json::to_string(&v).unwrap()
    }

    fn err(text: &str) -> (ConfigErrorKind, String) {
        let e = Config::parse(text, &p()).expect_err("should fail");
        let msg = e.to_string();
        assert!(msg.contains("/srv/agent/config.json"), "no path in: {msg}");
        assert!(!msg.contains(TOKEN), "token leaked in: {msg}");
        (e.kind, msg)
    }

    #[test]
    fn defaults() {
        let c = Config::parse(&minimal(), &p()).unwrap();
        assert_eq!(c.path, p());
        assert_eq!(c.agent_id, "a1");
        assert_eq!(c.token.expose(), TOKEN);
        assert_eq!(c.hub_url, "ws://127.0.0.1:4000/ws");
        assert_eq!(c.name, "a1");
        assert!(c.capabilities.is_empty());
        assert_eq!(c.wake_command.as_deref(), Some("true"));
        assert_eq!(c.confirmation_timeout, Duration::from_millis(30_000));
        assert_eq!(c.queue_file, PathBuf::from("/srv/agent/queue.json"));
        assert_eq!(c.cancel_command, None);
        assert_eq!(c.wake_timeout, Duration::from_secs(60));
        assert_eq!(c.wake_retry_delays, [5, 15, 30].map(Duration::from_secs));
        assert_eq!(c.max_pending, DEFAULT_MAX_PENDING);
        assert_eq!(c.progress_keepalive, Duration::from_secs(300));
        assert_eq!(c.readopt_window, Duration::from_secs(120));
        assert_eq!(c.results_dir, PathBuf::from("/srv/agent/results"));
        assert_eq!(c.log_file, PathBuf::from("/srv/agent/sidecar.log"));
        assert_eq!(c.heartbeat_interval, Duration::from_millis(30_000));
        assert_eq!(c.heartbeat_timeout, Duration::from_millis(10_000));
        assert_eq!(c.reconnect_initial, Duration::from_millis(1_000));
        assert_eq!(c.reconnect_max, Duration::from_millis(60_000));
        assert_eq!(c.reconnect_jitter, 0.5);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn nulls_mean_defaults() {
        let mut text = minimal();
        for k in [
            "name",
            "capabilities",
            "confirmation_timeout_ms",
            "results_dir",
            "log_file",
            "heartbeat_interval_ms",
            "heartbeat_timeout_ms",
            "reconnect_initial_ms",
            "reconnect_max_ms",
            "reconnect_jitter",
        ] {
            text = {
                let mut v: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
                v.insert(k.to_string(), Value::Null);
                serde_json::to_string(&v).unwrap()
            };
        }
        let c = Config::parse(&text, &p()).unwrap();
        assert_eq!(c.name, "a1");
        assert_eq!(c.reconnect_jitter, 0.5);
        assert_eq!(c.results_dir, PathBuf::from("/srv/agent/results"));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn tokens_under_16_characters_are_refused_saying_why() {
        // Sixteen is enough (the hub issues 64): only shorter ones are refused.
        assert!(Config::parse(&with("token", r#""0123456789abcdef""#), &p()).is_ok());
        let err = Config::parse(&with("token", r#""secret""#), &p())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/srv/agent/config.json: field `token` is 6 characters long"),
            "{err}"
        );
        assert!(err.contains("at least 16"), "{err}");
        assert!(err.contains("panic messages"), "{err}");
        assert!(!err.contains("\"secret\""), "{err}");
        let opts = LoadOptions {
            env_token: Some("zq9x".into()),
            allow_insecure_permissions: false,
        };
        let err = Config::parse_with(&minimal(), &p(), &opts)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("the AGENTCOM_TOKEN environment variable"),
            "{err}"
        );
        assert!(err.contains("holds a token that is 4 characters long"), "{err}");
        assert!(!err.contains("zq9x"), "{err}");
    }

    #[test]
    fn explicit_values() {
        let text = r#"{"agent_id":"a1","token":"0123456789abcdef","hub_url":"wss://[::1]/ws","name":"Agent One",
            "capabilities":["code","review"],"wake_command":"  ","confirmation_timeout_ms":120000,
            "results_dir":"/var/res","log_file":"logs/s.log","heartbeat_interval_ms":20000,
            "heartbeat_timeout_ms":5000,"reconnect_initial_ms":500,"reconnect_max_ms":500,"reconnect_jitter":0}"#;
        let c = Config::parse(text, &p()).unwrap();
        assert_eq!(c.name, "Agent One");
        assert_eq!(c.capabilities, ["code", "review"]);
        assert_eq!(c.wake_command, None);
        assert!(c.warnings[0].contains("no `wake_command`"), "{:?}", c.warnings);
        assert_eq!(c.confirmation_timeout, Duration::from_secs(120));
        assert_eq!(c.results_dir, PathBuf::from("/var/res"));
        assert_eq!(c.log_file, PathBuf::from("/srv/agent/logs/s.log"));
        assert_eq!(c.heartbeat_interval, Duration::from_secs(20));
        assert_eq!(c.reconnect_max, Duration::from_millis(500));
        assert_eq!(c.reconnect_jitter, 0.0);
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let text = with("results_dir", r#""../shared/results""#);
        let c = Config::parse(&text, Path::new("/etc/agentcom/config.json")).unwrap();
        assert_eq!(c.results_dir, PathBuf::from("/etc/agentcom/../shared/results"));
        assert_eq!(c.log_file, PathBuf::from("/etc/agentcom/sidecar.log"));
        // A relative config path is made absolute against the cwd, not left relative.
        let c = Config::parse(&minimal(), Path::new("sub/config.json")).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(c.path, cwd.join("sub/config.json"));
        assert_eq!(c.results_dir, cwd.join("sub/results"));
        // "" means the default, as with Node's `||`.
        let c = Config::parse(&with("log_file", r#""""#), &p()).unwrap();
        assert_eq!(c.log_file, PathBuf::from("/srv/agent/sidecar.log"));
    }

    #[test]
    fn bom_is_stripped() {
        let text = format!("\u{feff}{}", minimal());
        assert_eq!(Config::parse(&text, &p()).unwrap().agent_id, "a1");
    }

    #[test]
    fn node_only_keys_warn_once_each() {
        let text = with("repo_dir", r#""/home/me/repo""#);
        let text = {
            let mut v: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
            for (k, val) in [
                ("hub_api_url", "http://h:4000"),
                ("reviewer", "someone"),
                ("ollama_url", "http://localhost:11434"),
                ("log_level", "debug"),
            ] {
                v.insert(k.into(), Value::String(val.into()));
            }
            serde_json::to_string(&v).unwrap()
        };
        let c = Config::parse(&text, &p()).unwrap();
        assert_eq!(c.warnings.len(), 5, "{:?}", c.warnings);
        assert!(c.warnings.contains(&"/srv/agent/config.json: `repo_dir` is a Node sidecar setting this sidecar does not use; it is ignored".to_string()), "{:?}", c.warnings);
        for k in ["hub_api_url", "reviewer", "ollama_url", "log_level"] {
            assert!(c
                .warnings
                .iter()
                .any(|w| w.contains(&format!("`{k}` is a Node sidecar setting"))));
        }
        // Left at Node's "off" value, they change nothing: no warning.
        let c = Config::parse(&with("repo_dir", r#""""#), &p()).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn unknown_keys_warn_with_suggestions() {
        let c = Config::parse(&with("confirmaton_timeout_ms", "5"), &p()).unwrap();
        assert_eq!(
            c.warnings,
            ["/srv/agent/config.json: unknown key `confirmaton_timeout_ms` is ignored; did you mean `confirmation_timeout_ms`?"]
        );
        let c = Config::parse(&with("heartbeat_interval", "5"), &p()).unwrap();
        assert!(c.warnings[0].contains("did you mean `heartbeat_interval_ms`?"));
        let c = Config::parse(&with("colour", "5"), &p()).unwrap();
        assert_eq!(
            c.warnings,
            ["/srv/agent/config.json: unknown key `colour` is ignored"]
        );
        // A typo of a required key is an error that says so.
        let text = without("hub_url").replace('}', r#","hub_ulr":"ws://h:4000/ws"}"#);
        let (kind, msg) = err(&text);
        assert!(matches!(kind, ConfigErrorKind::Invalid { ref field, .. } if field == "hub_url"));
        assert!(msg.contains("there is a key `hub_ulr`"), "{msg}");
        assert!(msg.contains("did you mean `hub_url`?"), "{msg}");
    }

    #[test]
    fn duplicate_keys_warn() {
        let text = minimal().replace('}', r#","agent_id":"a2"}"#);
        let c = Config::parse(&text, &p()).unwrap();
        assert_eq!(c.agent_id, "a2");
        assert!(c.warnings[0].contains("`agent_id` appears more than once; the last one is used"));
    }

    #[test]
    fn not_found_and_unreadable() {
        let dir = std::env::temp_dir().join(format!("agentcom-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("nope.json");
        let e = Config::load(&missing).unwrap_err();
        assert!(matches!(e.kind, ConfigErrorKind::NotFound));
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("config file {} not found", missing.display())),
            "{msg}"
        );
        assert!(
            msg.contains(&format!(
                "install -m 600 config.json.example {}",
                missing.display()
            )),
            "{msg}"
        );
        assert!(msg.contains("`agent_id`, `token` and `hub_url`"), "{msg}");
        assert!(
            msg.contains("--config PATH") && msg.contains("AGENTCOM_SIDECAR_CONFIG"),
            "{msg}"
        );
        assert!(!msg.contains("cp config.json.example"), "{msg}");

        let e = Config::load(&dir).unwrap_err();
        assert!(matches!(e.kind, ConfigErrorKind::Unreadable(_)));
        assert!(e.to_string().contains("is a directory"), "{e}");

        let bad = dir.join("latin1.json");
        std::fs::write(&bad, b"{\"agent_id\":\"\xe9\"}").unwrap();
        set_private(&bad);
        let e = Config::load(&bad).unwrap_err();
        assert!(matches!(e.kind, ConfigErrorKind::Unreadable(_)));
        assert!(e.to_string().contains("UTF-8"), "{e}");

        let good = dir.join("config.json");
        write_private(&good, &minimal());
        let c = Config::load(&good).unwrap();
        assert_eq!(c.results_dir, dir.join("results"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shell_quoting_in_not_found() {
        let e = ConfigError {
            path: PathBuf::from("/my dir/it's.json"),
            kind: ConfigErrorKind::NotFound,
        };
        assert!(e
            .to_string()
            .contains(r"install -m 600 config.json.example '/my dir/it'\''s.json'"));
    }

    #[test]
    fn invalid_json() {
        let text = "{\n  \"agent_id\": \"a1\",\n  \"token\": \"x\",\n}\n";
        let (kind, msg) = err(text);
        assert!(
            matches!(
                kind,
                ConfigErrorKind::InvalidJson {
                    line: 4,
                    column: 1,
                    ..
                }
            ),
            "{kind:?}"
        );
        assert!(
            msg.starts_with("/srv/agent/config.json:4:1: invalid JSON: trailing comma\n"),
            "{msg}"
        );
        assert!(!msg.contains("at line"), "{msg}");
        assert!(msg.contains("help: remove the comma"), "{msg}");

        let (_, msg) = err("{\n  // my agent\n  \"agent_id\": \"a1\"\n}");
        assert!(
            msg.starts_with("/srv/agent/config.json:2:3: invalid JSON: key must be a string"),
            "{msg}"
        );
        assert!(msg.contains("JSON has no comments"), "{msg}");

        // Columns count characters, not bytes.
        let (kind, _) = err("{\"name\": \"é\" x}");
        assert!(
            matches!(
                kind,
                ConfigErrorKind::InvalidJson {
                    line: 1,
                    column: 14,
                    ..
                }
            ),
            "{kind:?}"
        );

        let (_, msg) = err("");
        assert!(
            msg.contains("EOF while parsing") && msg.contains("ends too early"),
            "{msg}"
        );
        let (_, msg) = err(r#"{"results_dir": "C:\agent\results"}"#);
        assert!(msg.contains("Windows paths"), "{msg}");
    }

    #[test]
    fn not_an_object() {
        let (kind, msg) = err("[1, 2]");
        assert!(matches!(kind, ConfigErrorKind::NotAnObject));
        assert!(
            msg.starts_with("/srv/agent/config.json: the file must hold one JSON object"),
            "{msg}"
        );
        assert!(msg.contains("config.json.example"), "{msg}");
    }

    #[test]
    fn missing_and_empty() {
        let (kind, msg) = err(&without("hub_url"));
        assert!(matches!(kind, ConfigErrorKind::Missing { field: "hub_url" }));
        assert!(
            msg.starts_with("/srv/agent/config.json: required field `hub_url` is missing"),
            "{msg}"
        );
        assert!(msg.contains(r#""hub_url": "ws://hub.example:4000/ws""#), "{msg}");

        let (kind, msg) = err(&with("agent_id", "null"));
        assert!(matches!(kind, ConfigErrorKind::Missing { field: "agent_id" }));
        assert!(msg.contains(r#""agent_id": "my-agent""#), "{msg}");

        let (kind, msg) = err(&with("token", r#""  ""#));
        assert!(matches!(kind, ConfigErrorKind::Empty { field: "token" }));
        assert!(
            msg.starts_with("/srv/agent/config.json: field `token` is empty"),
            "{msg}"
        );
        assert!(msg.contains("mix agent_com.gen_token"), "{msg}");
    }

    #[test]
    fn wrong_types() {
        let (kind, msg) = err(&with("capabilities", "3"));
        assert!(matches!(
            kind,
            ConfigErrorKind::WrongType {
                expected: "an array of strings",
                found: "a number",
                ..
            }
        ));
        assert!(
            msg.contains("field `capabilities` must be an array of strings, found a number"),
            "{msg}"
        );
        assert!(msg.contains(r#""capabilities": ["code"]"#), "{msg}");

        let (_, msg) = err(&with("capabilities", r#"["code", 7]"#));
        assert!(
            msg.contains("field `capabilities[1]` must be a string, found a number"),
            "{msg}"
        );

        let (_, msg) = err(&with("agent_id", "42"));
        assert!(
            msg.contains("field `agent_id` must be a string, found a number"),
            "{msg}"
        );

        let (_, msg) = err(&with("wake_command", "true"));
        assert!(
            msg.contains("field `wake_command` must be a string, found a boolean"),
            "{msg}"
        );
    }

    #[test]
    fn relay_settings_are_checked() {
        let (_, msg) = err(&with("wake_retry_delays_ms", "[5000, \"15s\"]"));
        assert!(msg.contains("wake_retry_delays_ms[1]"), "{msg}");
        let (_, msg) = err(&with("max_pending", "-1"));
        assert!(msg.contains("max_pending"), "{msg}");
        let c = Config::parse(&with("wake_retry_delays_ms", "[]"), &p()).unwrap();
        assert!(c.wake_retry_delays.is_empty());
        let c = Config::parse(&with("max_pending", "3"), &p()).unwrap();
        assert_eq!(c.max_pending, 3);
    }

    #[test]
    fn durations() {
        let (_, msg) = err(&with("heartbeat_interval_ms", "1.5"));
        assert!(msg.contains("field `heartbeat_interval_ms` must be a whole number of milliseconds, found a decimal number"), "{msg}");
        let (_, msg) = err(&with("reconnect_max_ms", r#""60000""#));
        assert!(
            msg.contains("field `reconnect_max_ms` must be a whole number of milliseconds, found a string"),
            "{msg}"
        );
        let (kind, msg) = err(&with("confirmation_timeout_ms", "-5"));
        assert!(
            matches!(kind, ConfigErrorKind::Invalid { ref field, .. } if field == "confirmation_timeout_ms")
        );
        assert!(
            msg.contains("field `confirmation_timeout_ms` is negative (-5)"),
            "{msg}"
        );
        let (_, msg) = err(&with("reconnect_initial_ms", "0"));
        assert!(
            msg.contains("field `reconnect_initial_ms` is 0, but it must be more than 0"),
            "{msg}"
        );
        let (_, msg) = err(&with("reconnect_initial_ms", "70000"));
        assert!(
            msg.contains(
                "field `reconnect_initial_ms` (70000) must not be more than `reconnect_max_ms` (60000)"
            ),
            "{msg}"
        );
        let (_, msg) = err(&with("heartbeat_timeout_ms", "30000"));
        assert!(
            msg.contains(
                "field `heartbeat_timeout_ms` (30000) must be less than `heartbeat_interval_ms` (30000)"
            ),
            "{msg}"
        );
        let (_, msg) = err(&with("heartbeat_interval_ms", "60000"));
        assert!(
            msg.contains("field `heartbeat_interval_ms` is 60000, but the hub drops"),
            "{msg}"
        );
        let (_, msg) = err(&with("confirmation_timeout_ms", "99999999999"));
        assert!(msg.contains("more than the largest accepted"), "{msg}");

        let c = Config::parse(&with("confirmation_timeout_ms", "0"), &p()).unwrap();
        assert_eq!(c.confirmation_timeout, Duration::from_millis(30_000));
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("`confirmation_timeout_ms` is 0, which means the default"));
    }

    #[test]
    fn jitter() {
        assert_eq!(
            Config::parse(&with("reconnect_jitter", "1"), &p())
                .unwrap()
                .reconnect_jitter,
            1.0
        );
        let (_, msg) = err(&with("reconnect_jitter", "1.5"));
        assert!(
            msg.contains("field `reconnect_jitter` is 1.5, but it must be from 0.0 to 1.0"),
            "{msg}"
        );
        let (_, msg) = err(&with("reconnect_jitter", r#""0.5""#));
        assert!(
            msg.contains("field `reconnect_jitter` must be a number from 0.0 to 1.0, found a string"),
            "{msg}"
        );
    }

    #[test]
    fn limits() {
        let (_, msg) = err(&with("agent_id", &format!("\"{}\"", "a".repeat(129))));
        assert!(
            msg.contains("field `agent_id` is too long: 129 characters, the hub accepts at most 128"),
            "{msg}"
        );
        assert!(Config::parse(&with("agent_id", &format!("\"{}\"", "é".repeat(128))), &p()).is_ok());
        let (_, msg) = err(&with("name", &format!("\"{}\"", "n".repeat(257))));
        assert!(msg.contains("field `name` is too long: 257 characters"), "{msg}");
        let (_, msg) = err(&with("agent_id", r#"" a1""#));
        assert!(msg.contains("field `agent_id` has spaces"), "{msg}");
        let (_, msg) = err(&with("capabilities", r#"["code", ""]"#));
        assert!(
            msg.contains("field `capabilities[1]` is an empty string"),
            "{msg}"
        );
    }

    #[test]
    fn hub_urls() {
        for good in [
            "ws://127.0.0.1:4000/ws",
            "wss://hub.example.com/ws",
            "ws://[::1]:4000/ws",
            "WS://localhost:4000/ws?x=1",
        ] {
            let c = Config::parse(&with("hub_url", &format!("\"{good}\"")), &p());
            assert!(c.is_ok(), "{good}: {}", c.unwrap_err());
        }
        let cases = [
            ("http://h:4000", "use ws:// or wss://", "`ws://h:4000/ws`"),
            (
                "https://h.example/",
                "use ws:// or wss://",
                "`wss://h.example/ws`",
            ),
            ("h:4000/ws", "has no scheme", "`ws://h:4000/ws`"),
            ("localhost:4000", "has no scheme", "`ws://localhost:4000/ws`"),
            ("ftp://h/ws", "must be ws:// or wss://", "ws://HOST:4000/ws"),
            ("ws:///ws", "has no host", "wss://HOST/ws"),
            ("ws://h :4000/ws", "holds a space", "ws://HOST:4000/ws"),
            (
                "ws://[::g]:4000/ws",
                "is not an IPv6 address",
                "ws://[::1]:4000/ws",
            ),
            (
                "ws://h:99999/ws",
                "port must be a number from 1 to 65535",
                "ws://HOST:4000/ws",
            ),
            ("ws://h:4000/ws#x", "fragment", "ws://HOST:4000/ws"),
        ];
        for (url, what, hint) in cases {
            let (kind, msg) = err(&with("hub_url", &format!("\"{url}\"")));
            assert!(
                matches!(kind, ConfigErrorKind::Invalid { ref field, .. } if field == "hub_url"),
                "{url}"
            );
            assert!(msg.contains("field `hub_url`"), "{msg}");
            assert!(msg.contains(what), "{url}: {msg}");
            assert!(msg.contains(hint), "{url}: {msg}");
        }
        // User info is never echoed: it may hold a password.
        let (_, msg) = err(&with("hub_url", r#""ws://me:hunter2@h:4000/ws""#));
        assert!(
            msg.contains("must not hold a user name or password") && !msg.contains("hunter2"),
            "{msg}"
        );
        // No path: accepted with a warning.
        let c = Config::parse(&with("hub_url", r#""ws://h:4000""#), &p()).unwrap();
        assert!(
            c.warnings[0].contains("did you mean `ws://h:4000/ws`?"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn token_is_never_shown() {
        let c = Config::parse(&minimal(), &p()).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains(TOKEN), "{debug}");
        assert!(debug.contains("token: <redacted>"), "{debug}");
        assert_eq!(c.token.to_string(), "<redacted>");

        // A number as the token: its value is not printed.
        let (_, msg) = err(&with("token", "987654321987"));
        assert!(
            msg.contains("field `token` must be a string, found a number"),
            "{msg}"
        );
        assert!(!msg.contains("987654321987"), "{msg}");
        // A too-long token is not echoed.
        let long = "s3cr3t".repeat(50);
        let (_, msg) = err(&with("token", &format!("\"{long}\"")));
        assert!(msg.contains("field `token` is too long: 300 characters"), "{msg}");
        assert!(!msg.contains("s3cr3t"), "{msg}");
        // Nor one with stray spaces, nor one pasted into hub_url or used as a key.
        let (_, msg) = err(&with("token", "\"s3cr3t-value \""));
        assert!(!msg.contains("s3cr3t"), "{msg}");
        let (_, msg) = err(&with("hub_url", &format!("\"http://h/ws?token={TOKEN}\"")));
        assert!(msg.contains("<redacted>"), "{msg}");
        let c = Config::parse(&with(TOKEN, "1"), &p()).unwrap();
        assert!(!c.warnings.concat().contains(TOKEN), "{:?}", c.warnings);
        assert!(!format!("{c:?}").contains(TOKEN));
    }

    #[test]
    fn default_path_uses_env() {
        std::env::remove_var(CONFIG_ENV);
        assert_eq!(default_config_path(), PathBuf::from("./config.json"));
        std::env::set_var(CONFIG_ENV, "");
        assert_eq!(default_config_path(), PathBuf::from("./config.json"));
        std::env::set_var(CONFIG_ENV, "/etc/agentcom/sidecar.json");
        assert_eq!(default_config_path(), PathBuf::from("/etc/agentcom/sidecar.json"));
        std::env::remove_var(CONFIG_ENV);
    }

    #[test]
    fn example_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.json.example");
        let text = std::fs::read_to_string(&path).unwrap();
        let c = Config::parse(&text, &path).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.hub_url, "ws://127.0.0.1:4000/ws");
        assert_eq!(
            c.wake_command.as_deref(),
            Some(
                r#"openclaw system event --text "AgentCom task ${TASK_ID}: ${TASK_DESCRIPTION}" --mode now"#
            )
        );
        assert_eq!(c.confirmation_timeout, Duration::from_millis(30_000));
        assert_eq!(c.reconnect_jitter, 0.5);
    }

    /// A fresh folder under the temp dir for one test.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("agentcom-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Writes `text` to `path`, readable and writable only by its owner.
    fn write_private(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        set_private(path);
    }

    fn set_private(path: &Path) {
        #[cfg(unix)]
        set_mode(path, 0o600);
        #[cfg(not(unix))]
        let _ = path;
    }

    #[cfg(unix)]
    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn insecure_permissions_are_refused() {
        let dir = temp_dir("permissions");
        let cfg = dir.join("config.json");
        let token_path = dir.join("token");
        write_private(&token_path, FILE_TOKEN);
        let strict = LoadOptions::default();
        let lax = LoadOptions {
            env_token: None,
            allow_insecure_permissions: true,
        };

        for (mode, shown, how) in [
            (0o644, "0644", "can be read by its group and by others"),
            (0o640, "0640", "can be read by its group (mode"),
            (0o606, "0606", "can be read and written by others"),
            (0o620, "0620", "can be written by its group"),
        ] {
            write_private(&cfg, &minimal());
            set_mode(&cfg, mode);
            let e = Config::load_with(&cfg, &strict).unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(e.kind, ConfigErrorKind::InsecurePermissions { ref file, mode: m } if *file == cfg && m == mode),
                "{msg}"
            );
            assert!(
                msg.starts_with(&format!("config file {} {how}", cfg.display())),
                "{msg}"
            );
            assert!(msg.contains(&format!("(mode {shown})")), "{msg}");
            assert!(
                msg.contains("anyone who can write it can run commands as the sidecar's user"),
                "{msg}"
            );
            assert!(msg.contains(&format!("chmod 600 {}", cfg.display())), "{msg}");
            assert!(msg.contains("--allow-insecure-permissions"), "{msg}");
            assert!(!msg.contains(TOKEN), "{msg}");
            // Allowed on request.
            assert!(Config::load_with(&cfg, &lax).is_ok());
        }
        // 0600 and 0400 pass; so does 0700 (the owner's bits are the owner's business).
        for mode in [0o600, 0o400, 0o700] {
            set_mode(&cfg, mode);
            assert!(Config::load_with(&cfg, &strict).is_ok(), "{mode:o}");
        }

        // The token file too, through load_with and parse_with alike.
        write_private(&cfg, &without("token").replace('}', r#","token_file":"token"}"#));
        assert_eq!(
            Config::load_with(&cfg, &strict).unwrap().token.expose(),
            FILE_TOKEN
        );
        set_mode(&token_path, 0o644);
        for e in [
            Config::load_with(&cfg, &strict).unwrap_err(),
            Config::parse_with(&std::fs::read_to_string(&cfg).unwrap(), &cfg, &strict).unwrap_err(),
        ] {
            let msg = e.to_string();
            assert!(
                matches!(e.kind, ConfigErrorKind::InsecurePermissions { ref file, mode: 0o644 } if *file == token_path),
                "{msg}"
            );
            assert!(
                msg.starts_with(&format!(
                    "token file {} (the `token_file` of {})",
                    token_path.display(),
                    cfg.display()
                )),
                "{msg}"
            );
            assert!(msg.contains("(mode 0644)") && msg.contains("chmod 600"), "{msg}");
            assert!(!msg.contains(FILE_TOKEN), "{msg}");
        }
        assert_eq!(Config::load_with(&cfg, &lax).unwrap().token.expose(), FILE_TOKEN);
        // An environment token means the token file is not read, nor checked.
        let c = Config::load_with(
            &cfg,
            &LoadOptions {
                env_token: Some(ENV_TOKEN.into()),
                allow_insecure_permissions: false,
            },
        )
        .unwrap();
        assert_eq!(c.token_source, TokenSource::Environment);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn env(token: &str) -> LoadOptions {
        LoadOptions {
            env_token: Some(token.to_string()),
            allow_insecure_permissions: false,
        }
    }

    const FILE_TOKEN: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
    const ENV_TOKEN: &str = "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1";

    #[test]
    fn token_file_is_read_trimmed_and_resolved() {
        let dir = temp_dir("token-file");
        write_private(&dir.join("token"), &format!("  {FILE_TOKEN}\n\n"));
        let cfg = dir.join("config.json");
        let text = without("token").replace('}', r#","token_file":"./token"}"#);
        let c = Config::parse(&text, &cfg).unwrap();
        assert_eq!(c.token.expose(), FILE_TOKEN);
        assert_eq!(c.token_source, TokenSource::File);
        assert_eq!(c.token_file, Some(dir.join("token")));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(!format!("{c:?}").contains(FILE_TOKEN));

        // Both present: the file wins, with one warning that names neither value.
        let text = with("token_file", r#""token""#);
        let c = Config::parse(&text, &cfg).unwrap();
        assert_eq!(c.token.expose(), FILE_TOKEN);
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(
            c.warnings[0].contains("the token from `token_file` (")
                && c.warnings[0].contains("is used; `token` is ignored"),
            "{:?}",
            c.warnings
        );
        assert!(!c.warnings[0].contains(FILE_TOKEN) && !c.warnings[0].contains(TOKEN));
        // "" is unset, as for the other paths.
        let c = Config::parse(&with("token_file", r#""""#), &cfg).unwrap();
        assert_eq!(c.token_source, TokenSource::Config);
        assert_eq!(c.token_file, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn env_token_wins() {
        let dir = temp_dir("env-token");
        write_private(&dir.join("token"), FILE_TOKEN);
        let cfg = dir.join("config.json");

        // Only the environment: `token` becomes optional.
        let c = Config::parse_with(&without("token"), &cfg, &env(ENV_TOKEN)).unwrap();
        assert_eq!(c.token.expose(), ENV_TOKEN);
        assert_eq!(c.token_source, TokenSource::Environment);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);

        let cases = [
            (minimal(), "`token` in the config is ignored"),
            (
                without("token").replace('}', r#","token_file":"token"}"#),
                "`token_file` in the config is ignored",
            ),
            (
                with("token_file", r#""token""#),
                "`token_file` and `token` in the config are ignored",
            ),
        ];
        for (text, ignored) in cases {
            let c = Config::parse_with(&text, &cfg, &env(&format!(" {ENV_TOKEN}\n"))).unwrap();
            assert_eq!(c.token.expose(), ENV_TOKEN);
            assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
            assert!(
                c.warnings[0].contains("the token from the AGENTCOM_TOKEN environment variable is used")
                    && c.warnings[0].contains(ignored),
                "{:?}",
                c.warnings
            );
            for secret in [TOKEN, FILE_TOKEN, ENV_TOKEN] {
                assert!(!c.warnings[0].contains(secret));
                assert!(!format!("{c:?}").contains(secret));
            }
        }
        // An empty or blank variable counts as unset.
        for blank in ["", "  "] {
            let c = Config::parse_with(&minimal(), &cfg, &env(blank)).unwrap();
            assert_eq!(c.token_source, TokenSource::Config);
            let e = Config::parse_with(&without("token"), &cfg, &env(blank)).unwrap_err();
            assert!(matches!(e.kind, ConfigErrorKind::Missing { field: "token" }));
            let msg = e.to_string();
            assert!(
                msg.contains("token_file") && msg.contains("AGENTCOM_TOKEN"),
                "{msg}"
            );
        }
        // A bad variable: named, not echoed.
        let bad = format!("{ENV_TOKEN}\n{ENV_TOKEN}");
        let e = Config::parse_with(&minimal(), &cfg, &env(&bad)).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e.kind, ConfigErrorKind::EnvToken { .. }));
        assert!(msg.contains("the AGENTCOM_TOKEN environment variable"), "{msg}");
        assert!(msg.contains(&cfg.display().to_string()), "{msg}");
        assert!(!msg.contains(ENV_TOKEN), "{msg}");
        // The overridden `token` is kept out of messages as well as the one in use.
        let ignored = "s3cr3t-config-token";
        let text = with("token", &format!("\"{ignored}\""));
        let e = Config::parse_with(
            &text.replace("ws://127.0.0.1:4000/ws", &format!("http://h/ws?t={ignored}")),
            &cfg,
            &env(ENV_TOKEN),
        )
        .unwrap_err();
        assert!(e.to_string().contains("<redacted>"), "{e}");
        assert!(!e.to_string().contains(ignored), "{e}");
        let text = text.replace('}', &format!(r#","{ignored}":1}}"#));
        let c = Config::parse_with(&text, &cfg, &env(ENV_TOKEN)).unwrap();
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(!c.warnings.concat().contains(ignored), "{:?}", c.warnings);
        // Debug of the options does not show it either.
        assert!(!format!("{:?}", env(ENV_TOKEN)).contains(ENV_TOKEN));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn token_file_errors_name_the_file_and_the_fix() {
        let dir = temp_dir("token-file-errors");
        let cfg = dir.join("config.json");
        let text = without("token").replace('}', r#","token_file":"secret/token"}"#);
        let token_path = dir.join("secret/token");
        let shown = token_path.display().to_string();
        let check = |needles: &[&str]| {
            let e = Config::parse(&text, &cfg).unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(e.kind, ConfigErrorKind::Invalid { ref field, .. } if field == "token_file"),
                "{msg}"
            );
            assert!(
                msg.starts_with(&format!("{}: field `token_file`", cfg.display())),
                "{msg}"
            );
            assert!(msg.contains(&shown), "{msg}");
            for n in needles {
                assert!(msg.contains(n), "{n:?} in {msg}");
            }
            assert!(!msg.contains(FILE_TOKEN), "{msg}");
        };
        check(&["does not exist", "umask 077", "help:"]);
        std::fs::create_dir_all(&token_path).unwrap();
        check(&["is a folder"]);
        std::fs::remove_dir(&token_path).unwrap();
        write_private(&token_path, " \n\n");
        check(&["is empty", "mix agent_com.gen_token"]);
        write_private(&token_path, &format!("{FILE_TOKEN}\n{FILE_TOKEN}\n"));
        check(&["line break", "token alone"]);
        write_private(&token_path, &FILE_TOKEN.repeat(5));
        check(&["too long: 320 characters"]);
        std::fs::write(&token_path, b"\xff\xfe").unwrap();
        set_private(&token_path);
        check(&["not UTF-8"]);
        let (_, msg) = err(&with("token_file", "7"));
        assert!(
            msg.contains("field `token_file` must be a string, found a number"),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ca_file_and_log_and_resource_keys() {
        let c = Config::parse(&minimal(), &p()).unwrap();
        assert_eq!(c.ca_file, None);
        assert_eq!(c.log_max_bytes, 10_485_760);
        assert_eq!(c.log_keep, 5);
        assert!(c.report_resources);
        assert_eq!(c.token_source, TokenSource::Config);
        assert_eq!(c.token_file, None);

        let c = Config::parse(&with("ca_file", r#""certs/hub.pem""#), &p()).unwrap();
        assert_eq!(c.ca_file, Some(PathBuf::from("/srv/agent/certs/hub.pem")));
        let c = Config::parse(&with("ca_file", r#""/etc/ssl/ca.pem""#), &p()).unwrap();
        assert_eq!(c.ca_file, Some(PathBuf::from("/etc/ssl/ca.pem")));
        let c = Config::parse(&with("ca_file", "null"), &p()).unwrap();
        assert_eq!(c.ca_file, None);
        let (_, msg) = err(&with("ca_file", "true"));
        assert!(
            msg.contains("field `ca_file` must be a string, found a boolean"),
            "{msg}"
        );
        assert!(msg.contains(r#""ca_file": "/etc/agentcom/hub-ca.pem""#), "{msg}");

        let c = Config::parse(&with("log_max_bytes", "65536"), &p()).unwrap();
        assert_eq!(c.log_max_bytes, 65_536);
        let (_, msg) = err(&with("log_max_bytes", "65535"));
        assert!(
            msg.contains("field `log_max_bytes` is 65535, but it must be at least 65536"),
            "{msg}"
        );
        assert!(msg.contains("the default is 10485760"), "{msg}");
        let (_, msg) = err(&with("log_max_bytes", "-1"));
        assert!(msg.contains("field `log_max_bytes` is negative (-1)"), "{msg}");
        let (_, msg) = err(&with("log_max_bytes", r#""10M""#));
        assert!(
            msg.contains("field `log_max_bytes` must be a whole number of bytes, found a string"),
            "{msg}"
        );
        let (_, msg) = err(&with("log_max_bytes", "1e7"));
        assert!(msg.contains("found a decimal number"), "{msg}");

        for (v, n) in [("1", 1), ("100", 100)] {
            assert_eq!(Config::parse(&with("log_keep", v), &p()).unwrap().log_keep, n);
        }
        for bad in ["0", "101"] {
            let (_, msg) = err(&with("log_keep", bad));
            assert!(
                msg.contains(&format!(
                    "field `log_keep` is {bad}, but it must be from 1 to 100"
                )),
                "{msg}"
            );
        }
        let (_, msg) = err(&with("log_keep", "2.5"));
        assert!(
            msg.contains("field `log_keep` must be a whole number from 1 to 100"),
            "{msg}"
        );

        assert!(
            !Config::parse(&with("report_resources", "false"), &p())
                .unwrap()
                .report_resources
        );
        let (_, msg) = err(&with("report_resources", r#""no""#));
        assert!(
            msg.contains("field `report_resources` must be true or false, found a string"),
            "{msg}"
        );
        assert!(msg.contains(r#""report_resources": true"#), "{msg}");
    }

    #[test]
    fn edit_distance_works() {
        assert_eq!(edit_distance("hub_ulr", "hub_url"), 1);
        assert_eq!(edit_distance("tokn", "token"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(suggest("Agent_ID"), Some("agent_id"));
        assert_eq!(suggest("hub_ws_url"), Some("hub_url"));
        assert_eq!(suggest("zzz"), None);
    }
}
