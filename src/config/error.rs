//! Why a config could not be used: [`ConfigError`], its message for a person (what was wrong,
//! where, and what to do), and the helpers that make values safe to quote in a message.

use std::fmt;
use std::path::PathBuf;

use super::{CONFIG_ENV, TOKEN_ENV};

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
                if example_value(base).is_some() {
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

/// An example value of a key for hints, `None` for a key this sidecar does not read. Never a
/// real token.
fn example_value(field: &str) -> Option<&'static str> {
    let value = match field {
        "agent_id" => "\"my-agent\"",
        "token" => "\"<the 64-hex-character token the hub issued for this agent_id>\"",
        "hub_url" => "\"ws://hub.example:4000/ws\"",
        "name" => "\"My agent\"",
        "capabilities" => "[\"code\"]",
        "wake_command" => {
            "\"openclaw system event --text \\\"AgentCom task ${TASK_ID}: ${TASK_DESCRIPTION}\\\" --mode now\""
        }
        "cancel_command" => {
            "\"openclaw system event --text \\\"AgentCom task ${TASK_ID} cancelled\\\" --mode now\""
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
        "task_timeout_ms" => "7200000",
        "agent_exit_grace_ms" => "60000",
        "log_file" => "\"./sidecar.log\"",
        "token_file" => "\"/etc/agentcom/token\"",
        "ca_file" => "\"/etc/agentcom/hub-ca.pem\"",
        "log_max_bytes" => "10485760",
        "log_keep" => "5",
        "report_resources" => "true",
        "direct_execution" => "\"auto\"",
        "allow_hub_commands" => "false",
        "ollama_url" => "\"http://127.0.0.1:11434\"",
        "ollama_model" => "\"qwen2.5-coder:7b\"",
        "claude_command" => "\"claude\"",
        "claude_model" => "\"claude-sonnet-4.5\"",
        "execution_timeout_ms" => "1800000",
        "repo_dir" => "\"/home/me/project\"",
        "workspaces_dir" => "\"./workspaces\"",
        "hub_api_url" => "\"http://127.0.0.1:4000\"",
        "gh_command" => "\"gh\"",
        "reviewer" => "\"octocat\"",
        _ => return None,
    };
    Some(value)
}

/// An example line of config.json for a key, shown in hints.
pub(super) fn example_line(field: &str) -> String {
    format!("\"{field}\": {}", example_value(field).unwrap_or("..."))
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
pub(super) fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@,=%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A value from the file, made safe to quote in a message: control characters escaped, long
/// values cut, and the token (if known) replaced by `<redacted>` wherever it occurs. A token of
/// under 6 characters is no real secret (hub tokens are 64 hex digits), and replacing it would
/// garble the message (`t` inside `http`), so only longer tokens are replaced.
pub(super) fn echo(value: &str, token: Option<&str>) -> String {
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

/// Turns a serde_json syntax error into [`ConfigErrorKind::InvalidJson`], with the column
/// counted in characters (serde counts bytes) and serde's own position cut from the message.
pub(super) fn json_error(text: &str, e: &serde_json::Error) -> ConfigErrorKind {
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
