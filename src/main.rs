//! The `agentcom-sidecar` command line.

use agentcom_sidecar::config::{default_config_path, Config, LoadOptions};
use agentcom_sidecar::daemon::{self, Peers, RunEnd};
use agentcom_sidecar::event_log::{ConsoleFormat, Event, EventLog};
use agentcom_sidecar::exec::Runners;
use agentcom_sidecar::link::connect::{NetConnector, NetOptions};
use agentcom_sidecar::link::policy::{LinkPolicy, LinkSettings};
use agentcom_sidecar::lock::InstanceLock;
use agentcom_sidecar::relay::runtime::RelayRuntime;
use agentcom_sidecar::resources::ResourceReporter;
use agentcom_sidecar::service::notify::Notifier;
use agentcom_sidecar::service::{self, ServiceCli, StopFuture};
use agentcom_sidecar::shutdown::Signals;
use agentcom_sidecar::status::{self, StatusBoard};
use agentcom_sidecar::{check, demo, errln, exit_code, init, out, outln, trial};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "agentcom-sidecar",
    version,
    about = "Keeps an AI coding agent connected to an AgentCom hub.",
    long_about = "Keeps an AI coding agent connected to an AgentCom hub: connects over WebSocket, \
identifies, heartbeats, and reconnects with jittered backoff through network loss and hub restarts; \
takes the hub's tasks, persists them crash-safely, gets them done (wakes the agent with \
wake_command, or runs them on Ollama, the Claude CLI or a shell as the hub routes them), verifies \
the work, delivers it as a branch and pull request, and reports the results.\n\n\
Getting started: `join HUB_URL` does it all in one command (register, token file, config, check, \
service, a test task); by hand: init, then check, then try, then service install (see each \
command's --help).\n\n\
A drop-in for the Node.js sidecar: it reads the same config.json and writes the same JSON-lines log.",
    after_help = "Exit codes:\n  0   stopped by SIGINT/SIGTERM/SIGHUP (Ctrl+C, Ctrl+Break on Windows)\n  1   a fatal runtime error (for example the log file cannot be opened)\n  2   bad command line\n  73  another sidecar already runs with this state folder
  75  the hub asked for a restart (restart_sidecar) while under a service manager
  78  the config file is missing or invalid (fix it; a service manager should not restart)\n\n\
Examples:\n  agentcom-sidecar demo\n  agentcom-sidecar join http://hub.example:4000 --service\n  agentcom-sidecar submit \"Add a README section\" --wait\n  agentcom-sidecar run --config /etc/agentcom/config.json"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a config file (mode 600) and print the next steps.
    #[command(
        long_about = "Write a valid config file, readable by its owner only (it names the token and the \
wake command), and print the next steps. It never overwrites a file unless --force is given.\n\n\
The token is not written into the config: give --token-file (a file holding the token, also mode 600 on Unix), \
or set AGENTCOM_TOKEN in the sidecar's environment.",
        after_help = "Example:\n  agentcom-sidecar init --agent-id my-agent --hub-url ws://hub.local:4000/ws \\\n      --token-file ~/.config/agentcom/token --wake-command 'my-agent --task-file ${TASK_FILE}'"
    )]
    Init {
        /// Where to write it [default: $AGENTCOM_SIDECAR_CONFIG, else ./config.json].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// The agent's id on the hub.
        #[arg(long, value_name = "ID")]
        agent_id: String,
        /// The hub's WebSocket URL, e.g. ws://hub.local:4000/ws.
        #[arg(long, value_name = "URL")]
        hub_url: String,
        /// A file holding the token (relative paths resolve against the config's folder).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// The display name [default: the agent id].
        #[arg(long)]
        name: Option<String>,
        /// Capabilities, comma-separated (e.g. code,review).
        #[arg(long, value_delimiter = ',')]
        capabilities: Vec<String>,
        /// The command that wakes the agent (see the README's agent contract).
        #[arg(long, value_name = "CMD")]
        wake_command: Option<String>,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Check a config: the host, then connect and identify once; one verdict, one exit code.
    #[command(
        long_about = "Check that a config is ready to run: validate it and the host (results_dir and the log \
folder writable, the wake command's program found), then connect to the hub and identify once, and \
report one precise verdict.\n\n\
While a daemon runs with the same config it does not identify (a second identify would take the \
agent's registration away from the running connection): it shows the daemon's state instead.",
        after_help = "Exit codes:\n  0   ok: the hub answered identified\n  10  a host problem (a folder not writable, the wake command's program missing)\n  11  the hub's name does not resolve\n  12  connection refused\n  13  TLS failure (the message says why)\n  14  invalid_token\n  15  token_agent_mismatch\n  16  the hub has this agent in a cooldown\n  17  no answer in time\n  18  another connection failure (proxy, HTTP status, I/O)\n  20  a daemon runs with this config but is not identified\n  78  the config is invalid\n\n\
Example:\n  agentcom-sidecar check --config ./config.json"
    )]
    Check {
        /// The config file [default: $AGENTCOM_SIDECAR_CONFIG, else ./config.json].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Accept a config or token file its group or others can read (Unix).
        #[arg(long)]
        allow_insecure_permissions: bool,
    },
    /// Run one task through your own wake_command and agent, against an embedded hub.
    #[command(
        long_about = "Run one task through your own wake_command and results contract, against an embedded \
hub on loopback: no real hub is involved. Each step is printed with its time; on failure it says what \
the agent did not do (no .started file, no result, a malformed result, a failing wake command).\n\n\
It uses the config's agent_id, wake_command, results_dir and timeouts; the hub, token, queue and log \
are private to the run. Stop the daemon first: it watches the same results folder.\n\n\
With --tier, try a route instead: the task is submitted with that complexity_tier and the sidecar \
carries out the hub's routing as direct_execution allows (standard: your ollama_url, registered in \
the private hub; complex: claude_command; trivial: --shell-command, with allow_hub_commands true). \
What the route needs, and whether the config has it, is printed first.",
        after_help = "Examples:\n  agentcom-sidecar try \"Add a README section\"\n  agentcom-sidecar try --config ./config.json --timeout 120 \"say hello\"\n  \
agentcom-sidecar try --tier standard \"Summarize the changelog\"\n  \
agentcom-sidecar try --tier trivial --shell-command \"git status\" \"show the status\""
    )]
    Try {
        /// The config file [default: $AGENTCOM_SIDECAR_CONFIG, else ./config.json].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Give up after this many seconds.
        #[arg(long, value_name = "SECS", default_value_t = 600)]
        timeout: u64,
        /// Try a route: the private hub submits the task with this complexity_tier and the
        /// sidecar carries out its routing as `direct_execution` allows. standard: Ollama at
        /// `ollama_url` (registered in the private hub); complex: `claude_command`; trivial: the
        /// --shell-command, when `allow_hub_commands` is true. A route that cannot run here falls
        /// back to the wake_command (auto). Without --tier the task always goes to the
        /// wake_command.
        #[arg(long, value_enum, value_name = "TIER")]
        tier: Option<trial::Tier>,
        /// The task's `metadata.shell_command` (for --tier trivial).
        #[arg(long, value_name = "CMD", requires = "tier")]
        shell_command: Option<String>,
        /// The task's description.
        description: String,
    },
    /// Connect to the hub and stay connected until stopped (the daemon).
    #[command(
        long_about = "Connect to the hub named in the config and stay connected until SIGINT, SIGTERM or SIGHUP, \
relaying the hub's tasks to the agent: each is saved to queue.json, the agent is woken with \
wake_command, and its files in results_dir are reported back (see the README's agent contract).\n\n\
Every event goes to stdout as a readable line and to log_file as one JSON object per line. \
On a stop signal the WebSocket is closed with code 1000 and the process exits 0 within 2 s.",
        after_help = "Example:\n  agentcom-sidecar run --config ./config.json"
    )]
    Run {
        /// The config file [default: $AGENTCOM_SIDECAR_CONFIG, else ./config.json].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Start even when the config file or token file can be read or written by its group or
        /// others (Unix). Those files hold the token and the wake command: only on a machine
        /// where every user is trusted.
        #[arg(long)]
        allow_insecure_permissions: bool,
        /// Run under the Windows Service Control Manager (set by `service install`).
        #[arg(long, hide = true)]
        windows_service: bool,
        /// What stdout gets for each event: a readable line, the log file's JSON line, or nothing.
        #[arg(long, value_enum, default_value = "text")]
        log_format: ConsoleFormat,
    },
    /// Show the daemon's state: running or not, connection, current task, outbox.
    #[command(
        long_about = "Show the daemon's state: whether it runs, its connection, last hub contact, \
reconnect attempt, current task, outbox depth, version and uptime.\n\n\
It reads the state file the daemon keeps beside queue.json, so it works whether the daemon runs \
or not, and says which. With --json, `running` and `connection` are always present.",
        after_help = "Examples:\n  agentcom-sidecar status\n  agentcom-sidecar status --json | jq .connection"
    )]
    Status {
        /// The config file [default: $AGENTCOM_SIDECAR_CONFIG, else ./config.json].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the sidecar as a service: systemd (Linux), launchd (macOS), Windows service.
    #[command(
        long_about = "Install, remove or show the service definition that keeps the sidecar running: a systemd unit on Linux (Type=notify, watchdog, restart unless the config is invalid), a launchd plist on macOS, a Windows service. The service runs `agentcom-sidecar run --config PATH` with this binary's and the config's absolute paths.",
        after_help = "Examples:\n  agentcom-sidecar service print --config ~/agent/config.json\n  agentcom-sidecar service install --config ~/agent/config.json\n  agentcom-sidecar service uninstall"
    )]
    Service(ServiceCli),
    /// Watch a sidecar connect, take a task through a sample agent, survive a hub restart and shut
    /// down, against an embedded hub on a free loopback port. Needs no config; takes about 15 s.
    Demo,
    /// The demo's sample agent (run by the demo's wake_command).
    #[command(hide = true)]
    SampleAgent,
    /// Put a task on the hub with the config's token and print its id; --wait follows it to its end.
    #[command(
        long_about = "Put a task on the hub (POST /api/tasks on hub_api_url, with the config's token) and \
print its id on stdout. With --wait, follow it (GET /api/tasks/ID every second) to its end, each change \
of state on stderr with its time, then print the outcome; the exit code says how it ended.\n\n\
The description is one argument: quote it. One that starts with '-' is taken as the description \
when it is not one of the options (or put it after --).",
        after_help = agentcom_sidecar::submit::AFTER_HELP
    )]
    Submit(agentcom_sidecar::submit::SubmitArgs),
    /// Show the hub's recent tasks, or one task's fields (status, assignee, result, verification, PR).
    #[command(
        long_about = "Show the hub's view of its tasks (GET /api/tasks on hub_api_url, with the config's token): \
a table of the most recent ones, newest first, or with an ID one task's fields: status, assigned_to, the \
result's summary, verification status and pr_url. --json prints the hub's JSON as it is.",
        after_help = "Exit codes:\n  0   shown\n  65  the hub refused the request (404: no such task)\n  69  the hub could not be reached, or failed\n  77  the hub refused the token\n  78  the config is missing or invalid\n\n\
Examples:\n  agentcom-sidecar tasks\n  agentcom-sidecar tasks --status queued\n  agentcom-sidecar tasks task-1a2b3c --json | jq .history"
    )]
    Tasks(agentcom_sidecar::tasks::TasksArgs),
    /// Join a hub in one command: register, token file, config, check, service, one test task.
    #[command(
        long_about = "Join a hub in one command. Each step is printed with its time and, on failure, the next \
step to take:\n  \
hub       GET /health: the hub answers\n  \
register  POST /api/onboard/register with --agent-id (or a generated name such as gcu-sleeper-service, \
with a short suffix if the hub has it); the token goes into `token` beside the config (mode 600 on Unix) and \
nowhere else (never printed, never in a command line)\n  \
repo      --repo URL (else the hub's default repository, if any) cloned into `repo` beside the config: repo_dir\n  \
config    the config, written as `init` writes it (mode 600 on Unix; never over an existing file without --force); \
hub_url is the address you typed with the hub's WebSocket path\n  \
check     the same checks as `agentcom-sidecar check` (it connects and identifies once)\n  \
service   with --service: `service install` (it starts the sidecar)\n  \
test      one task through the hub, assigned to this agent, followed to its end\n\n\
The steps done are recorded in join-progress.json beside the config (mode 600 on Unix): run join again after \
an interruption or a fix, and it finishes the job. --rejoin reuses the registration whose token file is \
already there instead of registering.",
        after_help = agentcom_sidecar::onboard::join::AFTER_HELP
    )]
    Join(agentcom_sidecar::onboard::JoinArgs),
    /// Leave the hub: uninstall the service, revoke the token on the hub, delete the token file.
    #[command(
        long_about = "Leave the hub: stop and uninstall the service if one is installed for this config, revoke \
the agent's tokens on the hub (DELETE /admin/tokens/AGENT_ID), and delete the token file. The config, \
results and logs stay; with --purge the agent's state goes too (the config, queue.json, the log and the \
state files), while results_dir, workspaces_dir and repo_dir are always kept and listed.",
        after_help = agentcom_sidecar::onboard::leave::AFTER_HELP
    )]
    Leave(agentcom_sidecar::onboard::LeaveArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(cli.command, Command::Run { .. });
    let code = dispatch(cli);
    // The daemon's console is best effort (its log file has every event); any other command whose
    // output could not be written says so and does not exit 0.
    match agentcom_sidecar::event_log::console::stdout_failure() {
        Some(e) if !daemon => {
            errln!("error: cannot write to stdout ({e}): the output is incomplete");
            if code == ExitCode::SUCCESS {
                return ExitCode::from(exit_code::FATAL);
            }
            code
        }
        _ => code,
    }
}

fn dispatch(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit_code::FATAL);
        }
    };
    match cli.command {
        Command::Run {
            config,
            allow_insecure_permissions,
            windows_service,
            log_format,
        } => {
            let options = LoadOptions {
                allow_insecure_permissions,
                ..LoadOptions::from_env()
            };
            let config = config.unwrap_or_else(default_config_path);
            if windows_service {
                return run_windows_service(runtime, config, options, log_format);
            }
            runtime.block_on(run(config, options, log_format, None))
        }
        Command::Service(cli) => ExitCode::from(service::main(cli)),
        Command::Demo => runtime.block_on(demo::run()),
        Command::SampleAgent => demo::sample_agent(),
        Command::Try {
            config,
            timeout,
            tier,
            shell_command,
            description,
        } => {
            let path = config.unwrap_or_else(default_config_path);
            let options = trial::TryOptions { tier, shell_command };
            match Config::load_without_token(&path) {
                Ok(config) => runtime.block_on(trial::run(
                    config,
                    description,
                    Duration::from_secs(timeout),
                    options,
                )),
                Err(e) => {
                    errln!("error: {e}");
                    ExitCode::from(exit_code::CONFIG)
                }
            }
        }
        Command::Init {
            config,
            agent_id,
            hub_url,
            token_file,
            name,
            capabilities,
            wake_command,
            force,
        } => {
            let path = config.unwrap_or_else(default_config_path);
            init::run(
                &path,
                init::InitArgs {
                    agent_id,
                    hub_url,
                    token_file,
                    name,
                    capabilities,
                    wake_command,
                },
                force,
            )
        }
        Command::Check {
            config,
            allow_insecure_permissions,
        } => {
            let options = LoadOptions {
                allow_insecure_permissions,
                ..LoadOptions::from_env()
            };
            match Config::load_with(&config.unwrap_or_else(default_config_path), &options) {
                Ok(config) => ExitCode::from(runtime.block_on(check::run(config))),
                Err(e) => {
                    errln!("error: {e}");
                    ExitCode::from(exit_code::CONFIG)
                }
            }
        }
        Command::Status { config, json } => status_command(config.unwrap_or_else(default_config_path), json),
        Command::Submit(args) => ExitCode::from(runtime.block_on(agentcom_sidecar::submit::run(args))),
        Command::Tasks(args) => ExitCode::from(runtime.block_on(agentcom_sidecar::tasks::run(args))),
        Command::Join(args) => ExitCode::from(runtime.block_on(agentcom_sidecar::onboard::join::run(args))),
        Command::Leave(args) => ExitCode::from(runtime.block_on(agentcom_sidecar::onboard::leave::run(args))),
    }
}

#[cfg(windows)]
fn run_windows_service(
    runtime: tokio::runtime::Runtime,
    config: PathBuf,
    options: LoadOptions,
    log_format: ConsoleFormat,
) -> ExitCode {
    let body = Box::new(move |stop: StopFuture| {
        let code = runtime.block_on(run(config, options, log_format, Some(stop)));
        if code == ExitCode::SUCCESS {
            0
        } else if code == ExitCode::from(exit_code::CONFIG) {
            exit_code::CONFIG
        } else {
            exit_code::FATAL
        }
    });
    match service::windows::run_as_service(body) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("error: {e}");
            ExitCode::from(exit_code::FATAL)
        }
    }
}

#[cfg(not(windows))]
fn run_windows_service(
    _runtime: tokio::runtime::Runtime,
    _config: PathBuf,
    _options: LoadOptions,
    _log_format: ConsoleFormat,
) -> ExitCode {
    errln!("error: --windows-service works only on Windows");
    ExitCode::from(2)
}

fn status_command(config_path: PathBuf, json: bool) -> ExitCode {
    // `status` does not talk to the hub: it needs no token (the daemon's may be in its own environment).
    let config = match Config::load_without_token(&config_path) {
        Ok(config) => config,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(exit_code::CONFIG);
        }
    };
    let state_dir = config.state_dir();
    let report = status::report(&state_dir);
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serializes")
        );
    } else {
        out!("{}", status::render(&report));
    }
    ExitCode::SUCCESS
}

async fn run(
    config_path: PathBuf,
    options: LoadOptions,
    log_format: ConsoleFormat,
    stop: Option<StopFuture>,
) -> ExitCode {
    let config = match Config::load_with(&config_path, &options) {
        Ok(config) => config,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(exit_code::CONFIG);
        }
    };
    // As soon as the token is known: no panic message may show it.
    agentcom_sidecar::secrets::install_redacting_panic_hook(&config.token);
    let net = NetOptions::from_env(config.ca_file.clone());
    if let Some(problem) = check::net_settings_problem(&config, &net) {
        errln!("error: {problem}");
        return ExitCode::from(exit_code::CONFIG);
    }
    // The first start over the Node sidecar's log: one file, one format.
    let node_log = agentcom_sidecar::event_log::move_node_log_aside(&config.log_file);
    let mut log = match EventLog::open_rotating(
        &config.log_file,
        &config.agent_id,
        log_format,
        config.log_max_bytes,
        config.log_keep,
    ) {
        Ok(log) => log,
        Err(e) => {
            errln!(
                "error: cannot open the log file {}: {e}\n  help: set `log_file` in {} to a writable path",
                config.log_file.display(),
                config.path.display()
            );
            return ExitCode::from(exit_code::FATAL);
        }
    };
    log.set_proxy(net.proxy_for_url(&config.hub_url).map(|proxy| proxy.address()));
    // One sidecar per state folder (the folder holding queue.json).
    let state_dir = config.state_dir();
    let lock = match InstanceLock::acquire(&state_dir) {
        Ok(lock) => lock,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(exit_code::ALREADY_RUNNING);
        }
    };
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            errln!("error: cannot install the stop-signal handlers: {e}");
            return ExitCode::from(exit_code::FATAL);
        }
    };
    log.record(&Event::Startup {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        config: config.path.display().to_string(),
        hub_url: config.hub_url.clone(),
    });
    match node_log {
        Ok(None) => {}
        Ok(Some(moved_to)) => log.record(&Event::NodeLogMovedAside {
            moved_to: moved_to.display().to_string(),
        }),
        Err(e) => log.record(&Event::ConfigWarning {
            message: format!(
                "{} holds the Node sidecar's log and cannot be moved aside ({e}): appending to it",
                config.log_file.display()
            ),
        }),
    }
    for message in &config.warnings {
        log.record(&Event::ConfigWarning {
            message: message.clone(),
        });
    }
    let mut runners = Runners::new(&config, agentcom_sidecar::deliver::pipeline(&config));
    let mut relay = match RelayRuntime::start(&config, &mut log, |tasks| runners.recover(tasks)) {
        Ok(relay) => relay,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(exit_code::FATAL);
        }
    };
    let mut board = StatusBoard::new(&state_dir, &config.agent_id, &config.hub_url);
    let policy = LinkPolicy::new(LinkSettings::from_config(&config), fastrand::u64(..));
    let mut notifier = Notifier::from_env();
    notifier.ready(&format!("connecting to {}", config.hub_url));
    let resources = ResourceReporter::system(&config.agent_id, config.report_resources)
        .with_ollama(config.ollama_url.clone());
    let end = daemon::run(
        policy,
        NetConnector::new(net),
        &config.hub_url,
        &mut log,
        service::stop_requested(signals.recv(), stop),
        Peers {
            relay: Some(&mut relay),
            runners: Some(&mut runners),
            board: Some(&mut board),
            notifier: Some(&mut notifier),
            resources: Some(resources),
        },
    )
    .await;
    notifier.stopping("stopped");
    drop(lock);
    match end {
        RunEnd::Stopped => ExitCode::SUCCESS,
        RunEnd::RestartRequested { .. } => restart(),
    }
}

/// After `restart_sidecar`: under systemd exit with [`exit_code::RESTART`] (the unit restarts on
/// any exit but 78); elsewhere (a terminal, launchd, which restarts only after a crash) re-execute
/// this binary with the same arguments, keeping the PID. Everything was persisted as it changed.
fn restart() -> ExitCode {
    let supervised = ["INVOCATION_ID", "NOTIFY_SOCKET"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    #[cfg(unix)]
    if !supervised {
        if let Ok(exe) = std::env::current_exe() {
            use std::os::unix::process::CommandExt;
            let args: Vec<_> = std::env::args_os().skip(1).collect();
            let error = std::process::Command::new(&exe).args(&args).exec();
            errln!("error: cannot restart {}: {error}", exe.display());
        }
    }
    // Windows: a service is restarted by the Service Control Manager's failure actions; a
    // console sidecar exits 75 (a new process could not take the lock before this one exits).
    #[cfg(not(unix))]
    let _ = supervised;
    ExitCode::from(exit_code::RESTART)
}
