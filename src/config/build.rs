//! Checking a type-checked config's values field by field, in a fixed order, and building the [`Config`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::check::Checker;
use super::error::echo;
use super::load::{self, opt_path, path_or, Files};
use super::schema::{default, Pairs, RawConfig};
use super::{
    api_url_from, hub_url, token, Config, ConfigError, DirectExecution, LoadOptions, Secret, TokenSource,
    DEFAULT_LOG_KEEP, DEFAULT_LOG_MAX_BYTES, DEFAULT_MAX_PENDING, MAX_AGENT_ID_CHARS, MAX_LOG_KEEP,
    MAX_NAME_CHARS, MAX_OLLAMA_URL_CHARS, MIN_LOG_MAX_BYTES,
};

/// The hub's Reaper drops a connection whose last JSON `ping` is older than this (protocol §2.6).
const HUB_REAPER_MS: u64 = 60_000;

impl Config {
    /// Checks the values of a type-checked config in a fixed order (so the first problem reported
    /// does not depend on the file's order), and builds the [`Config`].
    pub(super) fn build(
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
