//! What `join` writes and fetches: the token read back, the config (with `init`'s writer and
//! rules), and the repository's clone.

use super::{JoinArgs, Steps, TypedHub, TOKEN_FILE};
use crate::config::{Config, Secret};
use crate::init::{config_text, write_private, InitArgs};
use serde_json::Value;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

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
            "wrote {} ({}; the token is in its own file)",
            path.display(),
            crate::files::PRIVATE_NOTE
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

/// `git clone -- URL DEST` through the delivery's one git runner: an argument vector (the URL
/// never reaches a shell, nor git's `ext::` transport), its own process group, 5 minutes at most,
/// the token scrubbed from its environment, no prompts.
pub(super) async fn clone(url: &str, dest: &Path) -> Result<(), String> {
    use crate::deliver::git::{git, CLONE_TIMEOUT};
    // git runs in the destination's folder, so the destination is named from there.
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dest.file_name().unwrap_or(dest.as_os_str());
    let args = [OsStr::new("clone"), OsStr::new("--"), OsStr::new(url), name];
    git(parent, &args, CLONE_TIMEOUT)
        .await
        .map(drop)
        .map_err(|e| format!("git clone failed: {}", crate::tasks::clean(&e.to_string())))
}
