//! `agentcom-sidecar join HUB_URL`: register with the hub, keep the token in a 0600 file, write the
//! config, check it, optionally install the service, and prove it with one task through the hub.
//! Each step is recorded in the progress file, so running it again finishes the job.

use super::write::{clone, read_token, write_config};
use super::{config_location, hub_failed, Progress, Steps, TypedHub, TOKEN_FILE};
use crate::config::{Config, LoadOptions};
use crate::hub_api::HubApi;
use crate::init::write_private;
use clap::Args;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `join`'s command line.
#[derive(Debug, Clone, Args)]
pub struct JoinArgs {
    /// The hub: its HTTP address (http://HOST:4000, https://HOST) or its WebSocket URL
    /// (ws://HOST:4000/ws).
    pub hub_url: String,
    /// The agent's id on the hub [default: a generated readable name, e.g. gcu-sleeper-service].
    #[arg(long, value_name = "ID")]
    pub agent_id: Option<String>,
    /// Capabilities, comma-separated: the hub gives the agent only tasks whose needed
    /// capabilities it has.
    #[arg(long, value_delimiter = ',', default_value = "code")]
    pub capabilities: Vec<String>,
    /// The command that wakes the agent for a task (see the README's agent contract).
    #[arg(long, value_name = "CMD")]
    pub wake_command: Option<String>,
    /// A repository to clone beside the config as the agent's `repo_dir` [default: the hub's
    /// default repository, if it has one].
    #[arg(long, value_name = "URL")]
    pub repo: Option<String>,
    /// Install and start the sidecar as a service (systemd, launchd, Windows), then send the test
    /// task through it.
    #[arg(long)]
    pub service: bool,
    /// With --service: a per-user service (the default when not root).
    #[arg(long, conflicts_with = "system", requires = "service")]
    pub user: bool,
    /// With --service: a system-wide service (the default as root).
    #[arg(long, requires = "service")]
    pub system: bool,
    /// Reuse the registration whose token file is already beside the config instead of
    /// registering again (after `leave` without --purge kept the config, or on a new machine).
    #[arg(long)]
    pub rejoin: bool,
    /// Replace an existing config or token file that this join did not write; on a join
    /// already under way, rewrite the config from this command line and check it again.
    #[arg(long)]
    pub force: bool,
    /// Extra PEM CA certificates for an https hub (written into the config as ca_file).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// How long the test task may take.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub test_timeout_secs: u64,
    /// Do not send the test task.
    #[arg(long)]
    pub no_test_task: bool,
    /// Where to write the config; the token file, the progress file and the agent's state go
    /// beside it [default: $AGENTCOM_SIDECAR_CONFIG, else ./config.json].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// `join --help`'s end: what the test task needs, the exit codes and examples.
pub const AFTER_HELP: &str = "The test task: one task through the hub, assigned to this agent \
(assign_to), trivial tier with no shell command, so the sidecar wakes your agent with \
wake_command and the agent answers with its result files. It proves the whole path: the hub \
routes to you, the sidecar takes it, your agent answers, the hub records it completed. \
With --service the service takes it. Without --service, if no sidecar runs for this config, \
join starts one (`agentcom-sidecar run`) for this one task and stops it afterwards: a user who \
asked for no service expects nothing left running, and still wants to know the agent works.\n\n\
Exit codes:\n  0   joined: every step done\n  3   the test task failed\n  4   the test task was dead-lettered\n  \
5   the test task did not end within --test-timeout-secs\n  10-20 `check` failed (see check --help)\n  \
65  the hub refused (409: the agent id is taken; 422: a field)\n  69  the hub could not be reached\n  \
77  the hub refused the token\n  78  a config or token file exists (use --force), or the config is invalid\n\n\
Examples:\n  agentcom-sidecar join http://hub.local:4000 --wake-command 'my-agent --task-file ${TASK_FILE}'\n  \
agentcom-sidecar join https://hub.example --agent-id reviewer-1 --capabilities code,review --service \\\n      \
--config ~/.config/agentcom/config.json\n  agentcom-sidecar join http://hub.local:4000 --rejoin --config ~/agent/config.json";

/// A step's failure: the exit code (already printed).
type Failed = u8;

/// `join`: returns the exit code.
pub async fn run(args: JoinArgs) -> u8 {
    match join(args).await {
        Ok(()) => 0,
        Err(code) => code,
    }
}

async fn join(args: JoinArgs) -> Result<(), Failed> {
    let steps = Steps::new();
    let (config_path, dir) = config_location(args.config.clone());
    let typed = TypedHub::parse(&args.hub_url).map_err(|e| {
        steps.fail(
            "hub",
            &e,
            "give the hub as http://HOST:4000 (or ws://HOST:4000/ws)",
        );
        2
    })?;
    crate::files::create_dir_all(&dir).map_err(|e| {
        steps.fail(
            "config",
            &format!("cannot create {}: {e}", dir.display()),
            "choose another --config",
        );
        crate::exit_code::CONFIG
    })?;
    let mut progress = Progress::load(&dir).map_err(|e| {
        steps.fail("progress", &e, "remove it, then run join again");
        crate::exit_code::CONFIG
    })?;
    if !progress.hub_api_url.is_empty() && progress.hub_api_url != typed.api {
        steps.fail(
            "hub",
            &format!(
                "{} records a join with another hub, {}",
                dir.join(super::PROGRESS_FILE).display(),
                progress.hub_api_url
            ),
            "run `agentcom-sidecar leave` for that one first, or use another --config",
        );
        return Err(crate::exit_code::CONFIG);
    }
    progress.hub_api_url = typed.api.clone();
    if args.force {
        // --force rewrites the config from this command line (a corrected --wake-command, say),
        // and checks it again; the registration is kept.
        progress.done.remove("config");
        progress.done.remove("check");
    }
    let save = |p: &Progress| {
        p.save(&dir).map_err(|e| {
            steps.fail(
                "progress",
                &e,
                "make the config's folder writable, then run join again",
            );
            crate::exit_code::FATAL
        })
    };
    let api = HubApi::new(&typed.api, None, args.ca_file.as_deref()).map_err(|e| {
        steps.fail("hub", &e.to_string(), "check HUB_URL");
        2
    })?;

    if config_path.exists() && !args.force && !args.rejoin && !progress.is_done("config") {
        steps.fail(
            "config",
            &format!("{} already exists; not overwriting it", config_path.display()),
            "pass --force to replace it, --config to write another file, or `join --rejoin` for the agent it names",
        );
        return Err(crate::exit_code::CONFIG);
    }

    // 1. The hub answers.
    match api.health().await {
        Ok(h) => steps.ok(
            "hub",
            &format!(
                "{} answers ({} agents connected)",
                typed.api, h["agents_connected"]
            ),
        ),
        Err(e) => {
            return Err(hub_failed(
                &steps,
                "hub",
                &e,
                "is the hub running, and is HUB_URL its address?",
            ))
        }
    }

    // 2. Register (or reuse the registration).
    let token_path = dir.join(TOKEN_FILE);
    if progress.is_done("register") {
        steps.ok(
            "register",
            &format!("done earlier: {}", progress.agent_id.as_deref().unwrap_or("?")),
        );
    } else {
        let (agent_id, ws_url) = register(&args, &api, &token_path, &config_path, &steps).await?;
        let hub_url = typed.hub_url(ws_url.as_deref());
        if let Some(ws) = &ws_url {
            if super::authority_of(ws) != super::authority_of(&hub_url) {
                steps.note(
                    "register",
                    &format!("the hub calls itself {ws}; the config uses the address you typed: {hub_url}"),
                );
            }
        }
        progress.agent_id = Some(agent_id);
        progress.hub_url = Some(hub_url);
        progress.mark("register");
        save(&progress)?;
    }
    let agent_id = progress.agent_id.clone().unwrap_or_default();
    let token = read_token(&token_path).map_err(|e| {
        steps.fail(
            "register",
            &e,
            "run join again with --rejoin (token file restored) or after `leave`",
        );
        crate::exit_code::CONFIG
    })?;
    let api = api.with_token(Some(token));

    // 3. The repository.
    let mut repo_dir = None;
    if progress.is_done("repo") {
        repo_dir = dir
            .join("repo")
            .join(".git")
            .exists()
            .then(|| "./repo".to_owned());
        steps.ok("repo", "done earlier");
    } else {
        let url = match &args.repo {
            Some(url) => Some(url.clone()),
            None => api.default_repo().await.unwrap_or(None),
        };
        match url {
            None => steps.ok("repo", "none (no --repo, and the hub has no default repository)"),
            Some(url) => {
                let dest = dir.join("repo");
                if dest.join(".git").exists() {
                    steps.ok("repo", &format!("{} is already a clone", dest.display()));
                } else {
                    steps.note(
                        "repo",
                        &format!("cloning {} into {}", crate::tasks::clean(&url), dest.display()),
                    );
                    clone(&url, &dest).await.map_err(|e| {
                        steps.fail(
                            "repo",
                            &e,
                            "check the URL and your git credentials, then run join again",
                        );
                        crate::exit_code::UNAVAILABLE
                    })?;
                    steps.ok("repo", &format!("cloned into {} (repo_dir)", dest.display()));
                }
                repo_dir = Some("./repo".to_owned());
            }
        }
        progress.mark("repo");
        save(&progress)?;
    }

    // 4. The config.
    if progress.is_done("config") && config_path.exists() {
        steps.ok("config", &format!("done earlier: {}", config_path.display()));
    } else if args.rejoin && !args.force && config_path.exists() {
        steps.ok(
            "config",
            &format!(
                "keeping {} (--rejoin; --force rewrites it)",
                config_path.display()
            ),
        );
        progress.mark("config");
        save(&progress)?;
    } else {
        let hub_url = progress.hub_url.clone().unwrap_or_else(|| typed.hub_url(None));
        write_config(&args, &config_path, &agent_id, &hub_url, &typed, repo_dir, &steps)?;
        progress.mark("config");
        save(&progress)?;
    }
    let options = LoadOptions {
        env_token: None,
        allow_insecure_permissions: false,
    };
    let config = Config::load_with(&config_path, &options).map_err(|e| {
        steps.fail(
            "config",
            &e.to_string(),
            "fix the config (or rerun join with --force to rewrite it)",
        );
        crate::exit_code::CONFIG
    })?;

    // 5. check (the same checks as `check`, by `check` itself).
    if progress.is_done("check") {
        steps.ok("check", "done earlier");
    } else {
        steps.note("check", "agentcom-sidecar check:");
        let code = crate::check::run(config.clone()).await;
        if code != 0 {
            steps.fail(
                "check",
                &format!("check ended with exit code {code} (see above)"),
                "fix what check says (a config option: run join again with it and --force), then run join again (the steps done are kept)",
            );
            return Err(code);
        }
        steps.ok("check", "the config is valid and the hub identified the agent");
        progress.mark("check");
        save(&progress)?;
    }

    // 6. The service.
    if args.service && !progress.is_done("service") {
        let cli = crate::service::ServiceCli {
            command: crate::service::ServiceCommand::Install(crate::service::ServiceArgs {
                config: Some(config_path.clone()),
                user: args.user,
                system: args.system,
                name: None,
            }),
        };
        let scope = match &cli.command {
            crate::service::ServiceCommand::Install(a) => {
                crate::service::resolve(a).ok().map(|spec| spec.scope)
            }
            _ => None,
        };
        let code = crate::service::main(cli);
        if code != 0 {
            steps.fail(
                "service",
                &format!("service install ended with exit code {code} (see above)"),
                "fix what it says, then run join again; or run the sidecar yourself: agentcom-sidecar run --config ...",
            );
            return Err(code);
        }
        steps.ok("service", "installed and started");
        progress.service = true;
        progress.service_scope = scope.map(|s| {
            if s == crate::service::Scope::System {
                "system"
            } else {
                "user"
            }
            .to_owned()
        });
        progress.mark("service");
        save(&progress)?;
    } else if progress.is_done("service") {
        steps.ok("service", "done earlier");
    }

    // 7. One task through the hub.
    if args.no_test_task {
        steps.ok("test", "skipped (--no-test-task)");
    } else if progress.is_done("test") {
        steps.ok("test", "done earlier");
    } else {
        super::test_task::run(
            Duration::from_secs(args.test_timeout_secs),
            &api,
            &config,
            &config_path,
            &mut progress,
            &steps,
        )
        .await?;
        progress.mark("test");
        save(&progress)?;
    }
    crate::outln!("\njoined {} as {agent_id}.", typed.api);
    crate::outln!(
        "  config:  {} (token in {}, {})",
        config_path.display(),
        token_path.display(),
        crate::files::PRIVATE_NOTE
    );
    if !progress.service {
        crate::outln!(
            "  run it:  agentcom-sidecar service install --config {}",
            config_path.display()
        );
    }
    crate::outln!(
        "  tasks:   agentcom-sidecar submit --config {} \"...\"",
        config_path.display()
    );
    Ok(())
}

/// The register step: the agent id and the hub's `hub_ws_url` (None on --rejoin).
async fn register(
    args: &JoinArgs,
    api: &HubApi,
    token_path: &Path,
    config_path: &Path,
    steps: &Steps,
) -> Result<(String, Option<String>), Failed> {
    if args.rejoin {
        read_token(token_path).map_err(|e| {
            steps.fail(
                "register",
                &e,
                "--rejoin needs the token file of the registration; without it, join without --rejoin",
            );
            crate::exit_code::CONFIG
        })?;
        let existing = std::fs::read_to_string(config_path)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|c| c["agent_id"].as_str().map(str::to_owned));
        let Some(agent_id) = args.agent_id.clone().or(existing) else {
            steps.fail("register", "--rejoin needs the agent id", "give --agent-id ID");
            return Err(2);
        };
        steps.ok(
            "register",
            &format!(
                "reusing the registration of {agent_id} ({})",
                token_path.display()
            ),
        );
        return Ok((agent_id, None));
    }
    if token_path.exists() && !args.force {
        steps.fail(
            "register",
            &format!("a token file exists at {}", token_path.display()),
            "--rejoin to reuse that registration, or --force to register anew and replace it",
        );
        return Err(crate::exit_code::CONFIG);
    }
    let generated = args.agent_id.is_none();
    let base = args.agent_id.clone().unwrap_or_else(super::generate_name);
    let mut agent_id = base.clone();
    for attempt in 1..=4 {
        match api.register(&agent_id).await {
            Ok(reg) => {
                write_private(token_path, format!("{}\n", reg.token.expose()).as_bytes()).map_err(|e| {
                    steps.fail("register", &format!("cannot write {}: {e}", token_path.display()),
                        "the hub registered the agent, but its token is lost: make the folder writable, then `leave` is not possible; ask the hub admin to revoke it, or join with another --agent-id");
                    crate::exit_code::FATAL
                })?;
                steps.ok(
                    "register",
                    &format!(
                        "registered {} (token in {}, {})",
                        reg.agent_id,
                        token_path.display(),
                        crate::files::PRIVATE_NOTE
                    ),
                );
                return Ok((reg.agent_id, Some(reg.hub_ws_url)));
            }
            Err(e) if e.status == Some(409) && generated && attempt < 4 => {
                steps.note(
                    "register",
                    &format!("{agent_id} is taken on the hub; trying another name"),
                );
                agent_id = super::with_suffix(&base);
            }
            Err(e) => {
                return Err(hub_failed(steps, "register", &e, "see the hub's answer"));
            }
        }
    }
    unreachable!("the last attempt returns")
}
