//! `agentcom-sidecar leave`: uninstall the service, revoke the token on the hub, delete the token
//! file; with `--purge` also the agent's state, never its results, workspaces or repository
//! (listed as kept).

use super::{Progress, Steps, PROGRESS_FILE};
use crate::config::{Config, LoadOptions, TokenSource};
use crate::hub_api::HubApi;
use crate::lock::{InstanceLock, LOCK_FILE};
use crate::service::{self, Platform, ServiceArgs, ServiceCli, ServiceCommand};
use clap::Args;
use std::path::{Path, PathBuf};

/// `leave`'s command line.
#[derive(Debug, Clone, Args)]
pub struct LeaveArgs {
    /// Also remove the agent's state: the config, queue.json, the log, the state, lock and
    /// progress files, and the state folder if that empties it. results_dir, workspaces_dir and
    /// repo_dir are kept (and listed).
    #[arg(long)]
    pub purge: bool,
    /// The config file [default: $AGENTCOM_SIDECAR_CONFIG, else ./config.json].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// `leave --help`'s end.
pub const AFTER_HELP: &str = "Exit codes:\n  0   left: the token is revoked and its file deleted\n  \
1   a step failed (the message says which and what to do)\n  69  the hub could not be reached: nothing \
was deleted (run leave again when it is back)\n  78  the config is missing or invalid\n\n\
If the hub refuses the revocation, leave says so with the hub's answer and keeps the token file, \
so it can be run again. A token the hub no longer accepts (401) counts as revoked.\n\n\
Examples:\n  agentcom-sidecar leave --config ~/.config/agentcom/config.json\n  agentcom-sidecar leave --purge";

/// `leave`: returns the exit code.
pub async fn run(args: LeaveArgs) -> u8 {
    let steps = Steps::new();
    let (path, _) = super::config_location(args.config.clone());
    // The token as the daemon gets it: $AGENTCOM_TOKEN, else token_file, else token.
    let config = match Config::load_with(&path, &LoadOptions::from_env()) {
        Ok(c) => c,
        Err(e) => {
            steps.fail(
                "config",
                &e.to_string(),
                "give the config of the agent to remove with --config",
            );
            return crate::exit_code::CONFIG;
        }
    };
    let state_dir = config.state_dir();
    let progress = Progress::load(&state_dir).unwrap_or_default();

    // 1. The service.
    let scope = progress.service_scope.as_deref();
    let service_args = ServiceArgs {
        config: Some(config.path.clone()),
        user: scope == Some("user"),
        system: scope == Some("system"),
        name: None,
    };
    if service_installed(&service_args, &progress) {
        let code = service::main(ServiceCli {
            command: ServiceCommand::Uninstall(service_args),
        });
        if code != 0 {
            steps.fail(
                "service",
                &format!("service uninstall ended with exit code {code} (see above)"),
                "uninstall it by hand (agentcom-sidecar service uninstall), then run leave again",
            );
            return crate::exit_code::FATAL;
        }
        steps.ok("service", "stopped and uninstalled");
    } else {
        steps.ok("service", "none installed for this config");
    }
    if let Some(pid) = InstanceLock::holder(&state_dir) {
        let pid = pid.map(|p| format!(" (PID {p})")).unwrap_or_default();
        steps.note("service", &format!("a sidecar{pid} still runs with this config: stop it (once revoked, it only gets invalid_token)"));
    }

    // 2. Revoke the token on the hub.
    let api = match HubApi::from_config(&config) {
        Ok(api) => api,
        Err(e) => {
            steps.fail("revoke", &e.to_string(), "fix hub_api_url in the config");
            return crate::exit_code::CONFIG;
        }
    };
    match api.revoke(&config.agent_id).await {
        Ok(()) => steps.ok(
            "revoke",
            &format!(
                "the hub at {} revoked every token of {}",
                api.base(),
                config.agent_id
            ),
        ),
        Err(e) if e.status == Some(401) => steps.ok(
            "revoke",
            &format!(
                "the hub no longer accepts this token (it answered 401): {} is revoked already",
                config.agent_id
            ),
        ),
        Err(e) => {
            let code = super::hub_failed(&steps, "revoke", &e, "run leave again when the hub answers");
            steps.note(
                "revoke",
                "the hub refused the revocation: nothing was deleted; the token still works on the hub",
            );
            return code;
        }
    }

    // 3. The token file.
    match (&config.token_file, config.token_source) {
        (Some(file), _) if file.exists() => match std::fs::remove_file(file) {
            Ok(()) => steps.ok("token", &format!("deleted {}", file.display())),
            Err(e) => {
                steps.fail(
                    "token",
                    &format!("cannot delete {}: {e}", file.display()),
                    "delete it by hand (the token is revoked)",
                );
                return crate::exit_code::FATAL;
            }
        },
        (_, TokenSource::Config) => steps.ok(
            "token",
            &format!(
                "the token is in {} itself (revoked; remove the `token` key, or --purge)",
                config.path.display()
            ),
        ),
        _ => steps.ok("token", "no token file to delete"),
    }
    let _ = std::fs::remove_file(state_dir.join(PROGRESS_FILE));

    // 4. The state.
    if args.purge {
        purge(&config, &steps);
    } else {
        steps.ok(
            "state",
            &format!("kept {} (--purge removes the agent's state)", state_dir.display()),
        );
    }
    0
}

/// Whether a service for this config is installed (its unit or plist exists and names the
/// config; on Windows, when `join --service` installed it).
fn service_installed(args: &ServiceArgs, progress: &Progress) -> bool {
    let Ok(spec) = service::resolve(args) else {
        return false;
    };
    let file = match Platform::current() {
        Platform::Linux => service::systemd::unit_path(&spec),
        Platform::Macos => service::launchd::plist_path(&spec),
        Platform::Windows => return progress.service,
    };
    std::fs::read_to_string(file).is_ok_and(|text| text.contains(&spec.config))
}

/// Removes the sidecar's own files; lists what is kept.
fn purge(config: &Config, steps: &Steps) {
    let state_dir = config.state_dir();
    let mut removed = Vec::new();
    let mut files: Vec<PathBuf> = vec![
        config.path.clone(),
        config.queue_file.clone(),
        state_dir.join(crate::status::STATE_FILE),
        state_dir.join(LOCK_FILE),
    ];
    let log_name = config
        .log_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let queue_name = config
        .queue_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    for dir in [
        &state_dir,
        &config
            .log_file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    ] {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rotated = log_name
                .as_ref()
                .is_some_and(|l| name.starts_with(&format!("{l}.")));
            let corrupt = queue_name
                .as_ref()
                .is_some_and(|q| name.starts_with(&format!("{q}.corrupt-")));
            if rotated || corrupt {
                files.push(entry.path());
            }
        }
    }
    files.push(config.log_file.clone());
    for file in files {
        if file.is_file() && std::fs::remove_file(&file).is_ok() {
            removed.push(file.display().to_string());
        }
    }
    steps.ok(
        "state",
        &format!(
            "removed {}",
            if removed.is_empty() {
                "nothing".to_owned()
            } else {
                removed.join(", ")
            }
        ),
    );
    let mut kept = Vec::new();
    for (what, dir) in [
        ("results_dir", Some(config.results_dir.clone())),
        ("workspaces_dir", Some(config.workspaces_dir.clone())),
        ("repo_dir", config.repo_dir.clone()),
    ] {
        if let Some(dir) = dir.filter(|d| d.exists()) {
            kept.push(format!("{what} {}", dir.display()));
        }
    }
    if std::fs::remove_dir(&state_dir).is_ok() {
        steps.ok(
            "state",
            &format!("removed the empty folder {}", state_dir.display()),
        );
    } else if kept.is_empty() {
        steps.ok(
            "state",
            &format!("kept {}: it holds other files", state_dir.display()),
        );
    }
    if !kept.is_empty() {
        steps.ok(
            "state",
            &format!(
                "kept (delete them yourself when you no longer need them): {}",
                kept.join(", ")
            ),
        );
    }
}
