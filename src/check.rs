//! `agentcom-sidecar check`: is this config ready to run? One precise verdict, one exit code.
//!
//! It validates the config and the host (results_dir and the log folder writable, the wake
//! command's program found), then connects and identifies once. While a daemon runs on the same
//! state folder it does not identify (on the real hub a second identify takes the agent's
//! registration away from the running connection, reference section 2.3): it shows the
//! daemon's state instead.

use crate::config::Config;
use crate::link::connect::{ConnectError, NetConnector, NetOptions, ProxyConfig};
use crate::link::policy::LinkSettings;
use crate::lock::InstanceLock;
use crate::protocol::{self, HubError, Inbound, Outbound};
use crate::service::find_on_path;
use crate::status;
use futures_util::{SinkExt, StreamExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// The exit codes of `check`, one per verdict.
pub mod code {
    /// Everything works: the hub answered `identified`.
    pub const OK: u8 = 0;
    /// A host problem: a folder is not writable, or the wake command's program is missing.
    pub const HOST: u8 = 10;
    /// The hub's host name does not resolve.
    pub const NAME_NOT_RESOLVED: u8 = 11;
    /// Nothing listens at the hub's address.
    pub const REFUSED: u8 = 12;
    /// The TLS handshake failed.
    pub const TLS: u8 = 13;
    /// The hub does not know the token.
    pub const INVALID_TOKEN: u8 = 14;
    /// The token belongs to another agent_id.
    pub const TOKEN_AGENT_MISMATCH: u8 = 15;
    /// The hub has this agent in a cooldown (after too many invalid frames).
    pub const COOLDOWN: u8 = 16;
    /// The connection or the identify got no answer in time.
    pub const NO_ANSWER: u8 = 17;
    /// Another connection failure (proxy, an HTTP status instead of a WebSocket, I/O).
    pub const OTHER: u8 = 18;
    /// A daemon runs with this config but is not identified right now.
    pub const DAEMON_NOT_IDENTIFIED: u8 = 20;
}

/// What `check` concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The exit code (see [`code`]).
    pub code: u8,
    /// One line for a person.
    pub message: String,
}

fn verdict(code: u8, message: impl Into<String>) -> Verdict {
    Verdict {
        code,
        message: message.into(),
    }
}

/// The verdict for a connection that could not be made.
pub fn connect_verdict(e: &ConnectError) -> Verdict {
    let code = match e {
        ConnectError::NameNotResolved { .. } => code::NAME_NOT_RESOLVED,
        ConnectError::Refused { .. } => code::REFUSED,
        ConnectError::TimedOut => code::NO_ANSWER,
        ConnectError::Tls { .. } => code::TLS,
        ConnectError::Proxy { .. } | ConnectError::HttpStatus { .. } | ConnectError::Io(_) => code::OTHER,
    };
    verdict(code, e.to_string())
}

/// Connect to the hub and identify once; close with 1000 either way.
pub async fn probe(config: &Config, net: NetOptions, within: Duration) -> Verdict {
    let via = net
        .proxy_for_url(&config.hub_url)
        .map(|proxy| {
            format!(
                " through the proxy {} (from {})",
                proxy.address(),
                proxy.variable()
            )
        })
        .unwrap_or_default();
    let connector = NetConnector::new(net);
    let ws = tokio::time::timeout(within, connector.connect_classified(&config.hub_url)).await;
    let mut ws = match ws {
        Err(_) => {
            return verdict(
                code::NO_ANSWER,
                format!(
                    "no answer from {}{via} within {} s",
                    config.hub_url,
                    within.as_secs()
                ),
            )
        }
        Ok(Err(e)) => return connect_verdict(&e),
        Ok(Ok(ws)) => ws,
    };
    let identify = Outbound::Identify(LinkSettings::from_config(config).identify).to_json();
    if let Err(e) = ws.send(Message::text(identify)).await {
        return verdict(
            code::OTHER,
            format!("the connection broke while identifying: {e}"),
        );
    }
    let answer = tokio::time::timeout(within, async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Text(text)) => match protocol::parse_inbound(text.as_str()) {
                    Ok(Inbound::Identified { agent_id }) => {
                        return verdict(code::OK, format!("ok: the hub identified this sidecar as {agent_id}"))
                    }
                    Ok(Inbound::Error(HubError::InvalidToken)) => {
                        return verdict(code::INVALID_TOKEN, "invalid_token: the hub does not know this token; copy it again from the hub admin (POST /admin/tokens) into token, token_file or AGENTCOM_TOKEN")
                    }
                    Ok(Inbound::Error(HubError::TokenAgentMismatch)) => {
                        return verdict(code::TOKEN_AGENT_MISMATCH, format!("token_agent_mismatch: the token belongs to another agent, not \"{}\"; set agent_id to the agent the token was issued for", config.agent_id))
                    }
                    Ok(Inbound::Error(e)) => return verdict(code::OTHER, format!("the hub answered an error: {}", e.code())),
                    _ => continue,
                },
                Ok(Message::Close(frame)) => {
                    let (c, reason) = frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((0, String::new()));
                    if reason.starts_with("cooldown active") {
                        return verdict(code::COOLDOWN, format!("cooldown: the hub refuses this agent for now ({reason}); this follows 10 invalid frames in a minute. Wait, then check again"));
                    }
                    return verdict(code::OTHER, format!("the hub closed the connection (code {c} {reason})"));
                }
                Ok(_) => continue,
                Err(e) => return verdict(code::OTHER, format!("the connection broke: {e}")),
            }
        }
        verdict(code::OTHER, "the hub closed the connection without answering identify")
    })
    .await
    .unwrap_or_else(|_| verdict(code::NO_ANSWER, format!("the hub did not answer identify within {} s", within.as_secs())));
    let done = CloseFrame {
        code: CloseCode::Normal,
        reason: "check done".into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(done))).await;
    answer
}

/// Checks of the host, each an `(ok, line)`.
pub fn host_checks(config: &Config) -> Vec<(bool, String)> {
    let mut out = vec![writable(&config.results_dir, "results_dir")];
    if let Some(dir) = config.log_file.parent() {
        out.push(writable(dir, "the log folder"));
    }
    if let Some(dir) = config.queue_file.parent() {
        out.push(writable(dir, "the queue.json folder"));
    }
    match &config.wake_command {
        None => out.push((
            true,
            "warning: no wake_command: every task will be refused (no_wake_command_configured)".into(),
        )),
        Some(command) => out.push(wake_program(
            command,
            config.path.parent().unwrap_or(Path::new(".")),
        )),
    }
    out
}

fn writable(dir: &Path, what: &str) -> (bool, String) {
    let probe = dir.join(format!(".agentcom-check-{}", std::process::id()));
    match std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&probe, b"")) {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            (true, format!("ok: {what} {} is writable", dir.display()))
        }
        Err(e) => (
            false,
            format!("error: {what} {} is not writable: {e}", dir.display()),
        ),
    }
}

/// Shell words that are not programs on PATH.
const BUILTINS: &[&str] = &[
    "true", "false", ":", "echo", "printf", "exec", "cd", "test", "[", "export", "set", "eval", ".", "exit",
    "nohup", "env",
];

/// cmd.exe's words that are not programs on PATH (compared without case).
const CMD_BUILTINS: &[&str] = &[
    "echo", "start", "call", "cd", "chdir", "set", "setlocal", "endlocal", "exit", "type", "copy", "del",
    "erase", "if", "for", "rem", "pushd", "popd", "mkdir", "md", "move", "ren", "rename", "title", "ver",
];

/// The extensions cmd.exe tries when `PATHEXT` is not set.
const DEFAULT_PATHEXT: &str = ".COM;.EXE;.BAT;.CMD";

/// The wake command's program: the first word that is not a `NAME=value` assignment, as the
/// shell that runs it reads it (`sh`, or `cmd.exe` on Windows).
pub fn wake_program_name(command: &str) -> Option<String> {
    program_name(command, cfg!(windows))
}

/// [`wake_program_name`] for `sh` (`cmd_exe` false: `'` and `"` quote, `\` escapes) or for
/// `cmd.exe` (only `"` quotes, `^` escapes, `\` is a path separator like any other character).
fn program_name(command: &str, cmd_exe: bool) -> Option<String> {
    let mut word = String::new();
    let mut words = vec![];
    let (mut quote, mut chars) = (None::<char>, command.chars().peekable());
    let escape = if cmd_exe { '^' } else { '\\' };
    let ends_word =
        |c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|') || (cmd_exe && matches!(c, '<' | '>'));
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\'' | '"') if c == '"' || !cmd_exe => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c == escape => word.extend(chars.next()),
            (None, c) if ends_word(c) => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                if !c.is_whitespace() {
                    break;
                }
            }
            (_, c) => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words.into_iter().find(|w| {
        let assignment = w.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        !assignment
    })
}

/// The file names cmd.exe tries for `program`: the name itself when it has an extension, then
/// the name with each of `pathext`'s extensions (`whoami` runs `whoami.EXE`).
fn cmd_candidates(program: &str, pathext: &str) -> Vec<String> {
    let has_extension = Path::new(program).extension().is_some();
    has_extension
        .then(|| program.to_owned())
        .into_iter()
        .chain(
            pathext
                .split(';')
                .filter(|ext| ext.starts_with('.') && ext.len() > 1)
                .map(|ext| format!("{program}{ext}")),
        )
        .collect()
}

/// Where the platform's shell finds `program`: a path (against `base`), else on PATH; on
/// Windows also with `PATHEXT`'s extensions, as cmd.exe looks.
fn find_program(program: &str, base: &Path) -> Option<PathBuf> {
    let is_path = program.contains('/') || (cfg!(windows) && program.contains('\\'));
    if !cfg!(windows) {
        return if is_path {
            Some(base.join(program)).filter(|p| p.exists())
        } else {
            find_on_path(program)
        };
    }
    let pathext = std::env::var("PATHEXT").unwrap_or_else(|_| DEFAULT_PATHEXT.to_owned());
    let names = cmd_candidates(program, &pathext);
    if is_path {
        return names.iter().map(|n| base.join(n)).find(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

fn wake_program(command: &str, base: &Path) -> (bool, String) {
    let Some(program) = wake_program_name(command) else {
        return (false, "error: wake_command has no program to run".into());
    };
    let builtin = if cfg!(windows) {
        CMD_BUILTINS.contains(&program.to_ascii_lowercase().as_str())
    } else {
        BUILTINS.contains(&program.as_str())
    };
    if builtin || program.contains("${") {
        return (true, format!("ok: wake_command runs `{program}` (a shell word)"));
    }
    match find_program(&program, base) {
        Some(path) => (true, format!("ok: wake_command's program `{program}` is {}", path.display())),
        None => (
            false,
            format!(
                "error: wake_command's program `{program}` is not found{}\nhelp: install it, or give its absolute path in wake_command (a service's PATH is often shorter than your shell's)",
                if program.contains('/') || program.contains('\\') { String::new() } else { " on PATH".to_owned() }
            ),
        ),
    }
}

/// What makes the network settings unusable before anything connects: a `ca_file` that is not
/// a readable PEM file of CA certificates (a config error naming the file and the field), or a
/// proxy variable this sidecar cannot use. `None` when both are fine.
pub fn net_settings_problem(config: &Config, net: &NetOptions) -> Option<String> {
    let ca_only = NetOptions {
        proxy: ProxyConfig::default(),
        ..net.clone()
    };
    if let Err(e) = ca_only.check() {
        return Some(format!(
            "{}: {e}\nhelp: set `ca_file` to a PEM file holding the certificate of the CA that signed the hub's \
             certificate, or remove `ca_file` to trust only the system's CAs",
            config.path.display()
        ));
    }
    net.proxy.check().err().map(|e| {
        format!(
            "the proxy setting in the environment cannot be used: {e}\nhelp: fix or unset that variable \
             (a proxy URL is http://[user:pass@]host:port)"
        )
    })
}

/// The whole `check`: prints each step, returns the exit code.
pub async fn run(config: Config) -> u8 {
    // A config failure is reported as one, before anything says the config is ok.
    let net = NetOptions::from_env(config.ca_file.clone());
    if let Some(problem) = net_settings_problem(&config, &net) {
        crate::errln!("error: {problem}");
        return crate::exit_code::CONFIG;
    }
    crate::outln!(
        "ok: config {} (agent_id {}, hub {})",
        config.path.display(),
        config.agent_id,
        config.hub_url
    );
    for warning in &config.warnings {
        crate::outln!("warning: {warning}");
    }
    if let Some(proxy) = net.proxy_for_url(&config.hub_url) {
        crate::outln!(
            "ok: the hub is reached through the proxy {} (from {})",
            proxy.address(),
            proxy.variable()
        );
    }
    let mut host_ok = true;
    for (ok, line) in host_checks(&config) {
        host_ok &= ok;
        crate::outln!("{line}");
    }
    let state_dir = config.state_dir();
    if InstanceLock::holder(&state_dir).is_some() {
        let report = status::report(&state_dir);
        crate::outln!(
            "\na sidecar is running with this config: not identifying again (a second identify would take the\n\
             agent's registration away from the running connection). Its state:\n"
        );
        crate::out!("{}", status::render(&report));
        return if !host_ok {
            code::HOST
        } else if report.connection == "identified" {
            code::OK
        } else {
            code::DAEMON_NOT_IDENTIFIED
        };
    }
    let verdict = probe(&config, net, Duration::from_secs(10)).await;
    crate::outln!("{}", verdict.message);
    if verdict.code == code::OK && !host_ok {
        return code::HOST;
    }
    verdict.code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_program_past_assignments_and_quotes() {
        assert_eq!(
            program_name("openclaw system event --text \"x\"", false).as_deref(),
            Some("openclaw")
        );
        assert_eq!(
            program_name("HOLD=1 FOO='a b' sh ./agent.sh", false).as_deref(),
            Some("sh")
        );
        assert_eq!(
            program_name("'/opt/my agent/bin' run", false).as_deref(),
            Some("/opt/my agent/bin")
        );
        assert_eq!(program_name("cd /x && run", false).as_deref(), Some("cd"));
        assert_eq!(program_name("  ", false).as_deref(), None);
    }

    #[test]
    fn cmd_exe_reads_backslashes_as_path_separators_and_only_double_quotes() {
        assert_eq!(
            program_name(r"C:\agent\agent.exe ${TASK_ID}", true).as_deref(),
            Some(r"C:\agent\agent.exe")
        );
        assert_eq!(
            program_name(r#""C:\Program Files\agent\run.cmd" x"#, true).as_deref(),
            Some(r"C:\Program Files\agent\run.cmd")
        );
        assert_eq!(
            program_name("agent.exe>log.txt", true).as_deref(),
            Some("agent.exe")
        );
        assert_eq!(program_name("it's x", true).as_deref(), Some("it's"));
        // sh reads the same text differently.
        assert_eq!(
            program_name(r"C:\agent\agent.exe", false).as_deref(),
            Some("C:agentagent.exe")
        );
    }

    #[test]
    fn cmd_exe_tries_pathext_extensions() {
        assert_eq!(
            cmd_candidates("whoami", DEFAULT_PATHEXT),
            ["whoami.COM", "whoami.EXE", "whoami.BAT", "whoami.CMD"]
        );
        assert_eq!(
            cmd_candidates("agent.exe", ".EXE;;.CMD"),
            ["agent.exe", "agent.exe.EXE", "agent.exe.CMD"]
        );
    }

    #[test]
    fn a_missing_program_is_a_host_error() {
        let (ok, line) = wake_program("definitely-not-a-program-xyz --flag", Path::new("/"));
        assert!(!ok);
        assert!(
            line.contains("`definitely-not-a-program-xyz` is not found on PATH"),
            "{line}"
        );
        #[cfg(unix)]
        assert!(wake_program("sh -c true", Path::new("/")).0);
        #[cfg(windows)]
        assert!(wake_program("cmd /c exit 0", Path::new("C:\\")).0);
        assert!(wake_program("echo", Path::new("/")).0);
    }
}
