//! The `agentcom-sidecar` command line.

use agentcom_sidecar::config::{default_config_path, Config};
use agentcom_sidecar::event_log::{Event, EventLog};
use agentcom_sidecar::link::policy::{LinkPolicy, LinkSettings};
use agentcom_sidecar::link::socket::{self, NetConnector};
use agentcom_sidecar::relay::runtime::RelayRuntime;
use agentcom_sidecar::service::notify::Notifier;
use agentcom_sidecar::service::{self, ServiceCli, StopFuture};
use agentcom_sidecar::shutdown::Signals;
use agentcom_sidecar::{demo, exit_code};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "agentcom-sidecar",
    version,
    about = "Keeps an AI coding agent connected to an AgentCom hub.",
    long_about = "Keeps an AI coding agent connected to an AgentCom hub: connects over WebSocket, \
identifies, heartbeats, and reconnects with jittered backoff through network loss and hub restarts.\n\n\
A drop-in for the Node.js sidecar: it reads the same config.json and writes the same JSON-lines log.",
    after_help = "Exit codes:\n  0   stopped by SIGINT/SIGTERM (Ctrl+C, Ctrl+Break on Windows)\n  1   a fatal runtime error (for example the log file cannot be opened)\n  2   bad command line\n  78  the config file is missing or invalid (fix it; a service manager should not restart)\n\n\
Examples:\n  agentcom-sidecar demo\n  agentcom-sidecar run --config /etc/agentcom/config.json"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to the hub and stay connected until stopped (the daemon).
    #[command(
        long_about = "Connect to the hub named in the config and stay connected until SIGINT or SIGTERM.\n\n\
Every event goes to stdout as a readable line and to log_file as one JSON object per line. \
On a stop signal the WebSocket is closed with code 1000 and the process exits 0 within 2 s.",
        after_help = "Example:\n  agentcom-sidecar run --config ./config.json"
    )]
    Run {
        /// The config file [default: $AGENTCOM_SIDECAR_CONFIG, else ./config.json].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Run under the Windows Service Control Manager (set by `service install`).
        #[arg(long, hide = true)]
        windows_service: bool,
    },
    /// Run the sidecar as a service: systemd (Linux), launchd (macOS), Windows service.
    #[command(
        long_about = "Install, remove or show the service definition that keeps the sidecar running: a systemd unit on Linux (Type=notify, watchdog, restart unless the config is invalid), a launchd plist on macOS, a Windows service. The service runs `agentcom-sidecar run --config PATH` with this binary's and the config's absolute paths.",
        after_help = "Examples:\n  agentcom-sidecar service print --config ~/agent/config.json\n  agentcom-sidecar service install --config ~/agent/config.json\n  agentcom-sidecar service uninstall"
    )]
    Service(ServiceCli),
    /// Watch a sidecar connect, identify, heartbeat, survive a hub restart and shut down, against
    /// an embedded hub on a free loopback port. Needs no config; takes about 15 s.
    Demo,
    /// The demo's sample agent (run by the demo's wake_command).
    #[command(hide = true)]
    SampleAgent,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit_code::FATAL);
        }
    };
    match cli.command {
        Command::Run {
            config,
            windows_service,
        } => {
            let config = config.unwrap_or_else(default_config_path);
            if windows_service {
                return run_windows_service(runtime, config);
            }
            runtime.block_on(run(config, None))
        }
        Command::Service(cli) => ExitCode::from(service::main(cli)),
        Command::Demo => runtime.block_on(demo::run()),
        Command::SampleAgent => demo::sample_agent(),
    }
}

#[cfg(windows)]
fn run_windows_service(runtime: tokio::runtime::Runtime, config: PathBuf) -> ExitCode {
    let body = Box::new(move |stop: StopFuture| {
        let code = runtime.block_on(run(config, Some(stop)));
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
            eprintln!("error: {e}");
            ExitCode::from(exit_code::FATAL)
        }
    }
}

#[cfg(not(windows))]
fn run_windows_service(_runtime: tokio::runtime::Runtime, _config: PathBuf) -> ExitCode {
    eprintln!("error: --windows-service works only on Windows");
    ExitCode::from(2)
}

async fn run(config_path: PathBuf, stop: Option<StopFuture>) -> ExitCode {
    let config = match Config::load(&config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit_code::CONFIG);
        }
    };
    let mut log = match EventLog::open(&config.log_file, &config.agent_id, true) {
        Ok(log) => log,
        Err(e) => {
            eprintln!(
                "error: cannot open the log file {}: {e}\n  help: set `log_file` in {} to a writable path",
                config.log_file.display(),
                config.path.display()
            );
            return ExitCode::from(exit_code::FATAL);
        }
    };
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("error: cannot install the stop-signal handlers: {e}");
            return ExitCode::from(exit_code::FATAL);
        }
    };
    log.record(&Event::Startup {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        config: config.path.display().to_string(),
        hub_url: config.hub_url.clone(),
    });
    for message in &config.warnings {
        log.record(&Event::ConfigWarning {
            message: message.clone(),
        });
    }
    let mut relay = match RelayRuntime::start(&config, &mut log) {
        Ok(relay) => relay,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit_code::FATAL);
        }
    };
    let policy = LinkPolicy::new(LinkSettings::from_config(&config), fastrand::u64(..));
    let mut notifier = Notifier::from_env();
    notifier.ready(&format!("connecting to {}", config.hub_url));
    socket::run_with_notifier(
        policy,
        NetConnector,
        &config.hub_url,
        &mut log,
        service::stop_requested(signals.recv(), stop),
        Some(&mut relay),
        Some(&mut notifier),
    )
    .await;
    notifier.stopping("stopped");
    ExitCode::SUCCESS
}
