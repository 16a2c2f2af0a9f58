//! What `join` writes and fetches: the token read back, the config (with `init`'s writer and
//! rules), and the repository's clone.

use super::{JoinArgs, Steps, TypedHub, TOKEN_FILE};
use crate::config::{Config, Secret};
use crate::init::{config_text, write_private, InitArgs};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A step's failure: the exit code (already printed).
type Failed = u8;

/// The token in `path` (trimmed), or why not.
pub(super) fn read_token(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("the token file {} is empty", path.display()));
    }
    Ok(Secret::new(token.to_owned()))
}

/// Writes the config with `init`'s writer and rules (never over an existing file without --force).
pub(super) fn write_config(
    args: &JoinArgs,
    path: &Path,
    agent_id: &str,
    hub_url: &str,
    typed: &TypedHub,
    repo_dir: Option<String>,
    steps: &Steps,
) -> Result<(), Failed> {
    if path.exists() && !args.force {
        steps.fail(
            "config",
            &format!("{} already exists; not overwriting it", path.display()),
            "pass --force to replace it, or --config to write another file",
        );
        return Err(crate::exit_code::CONFIG);
    }
    let text = config_text(&InitArgs {
        agent_id: agent_id.to_owned(),
        hub_url: hub_url.to_owned(),
        token_file: Some(PathBuf::from(TOKEN_FILE)),
        name: None,
        capabilities: args.capabilities.clone(),
        wake_command: args.wake_command.clone(),
    });
    let mut config: serde_json::Map<String, Value> =
        serde_json::from_str(&text).expect("init writes an object");
    if crate::config::api_url_from(hub_url) != typed.api {
        config.insert("hub_api_url".into(), typed.api.clone().into());
    }
    if let Some(repo) = repo_dir {
        config.insert("repo_dir".into(), repo.into());
    }
    if let Some(ca) = &args.ca_file {
        let ca = std::path::absolute(ca).unwrap_or_else(|_| ca.clone());
        config.insert("ca_file".into(), ca.display().to_string().into());
    }
    let text = serde_json::to_string_pretty(&Value::Object(config)).expect("json") + "\n";
    if let Err(e) = Config::parse(
        &text.replacen('{', "{\n  \"token\": \"placeholder-for-the-check\",", 1),
        path,
    ) {
        steps.fail(
            "config",
            &format!("that would not be a valid config: {e}"),
            "fix the option it names",
        );
        return Err(crate::exit_code::CONFIG);
    }
    write_private(path, text.as_bytes()).map_err(|e| {
        steps.fail(
            "config",
            &format!("cannot write {}: {e}", path.display()),
            "make the folder writable",
        );
        crate::exit_code::FATAL
    })?;
    steps.ok(
        "config",
        &format!(
            "wrote {} (mode 600; the token is in its own file)",
            path.display()
        ),
    );
    if args.wake_command.is_none() {
        steps.note(
            "config",
            "no --wake-command: the agent cannot be woken for tasks (the test task will fail)",
        );
    }
    Ok(())
}

/// `git clone -- URL DEST`: an argument vector (the URL never reaches a shell), its own process
/// group, 5 minutes at most, the token scrubbed from its environment.
pub(super) async fn clone(url: &str, dest: &Path) -> Result<(), String> {
    use crate::exec::shell::{GroupChild, Waited};
    use tokio::io::AsyncReadExt;
    let mut cmd = crate::exec::process::child_command("git");
    cmd.arg("clone")
        .arg("--")
        .arg(url)
        .arg(dest)
        .env("GIT_TERMINAL_PROMPT", "0");
    let mut child =
        GroupChild::spawn(&mut cmd).map_err(|e| format!("cannot run git: {e} (is git installed?)"))?;
    let (_, stderr) = child.take_pipes();
    let mut text = Vec::new();
    let read = async {
        if let Some(mut err) = stderr {
            let _ = (&mut err).take(16 * 1024).read_to_end(&mut text).await;
        }
    };
    let waited = child.wait_draining(read, Some(Duration::from_secs(300))).await;
    let said = crate::tasks::clean(String::from_utf8_lossy(&text).trim());
    match waited {
        Waited::Exited(status) if status.success() => Ok(()),
        Waited::Exited(status) => Err(format!("git clone failed ({status}): {said}")),
        Waited::TimedOut => {
            child.kill().await;
            Err("git clone took more than 5 minutes and was stopped".to_owned())
        }
        Waited::Failed(e) => Err(format!("git clone: {e}")),
    }
}
