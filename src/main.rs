//! The `agentcom-sidecar` command line.

use agentcom_sidecar::config::{default_config_path, Config};
use agentcom_sidecar::event_log::{ConsoleFormat, Event, EventLog, DEFAULT_LOG_KEEP, DEFAULT_LOG_MAX_BYTES};
use agentcom_sidecar::link::policy::{LinkPolicy, LinkSettings};
use agentcom_sidecar::link::socket::{self, NetConnector};
use agentcom_sidecar::relay::runtime::RelayRuntime;
use agentcom_sidecar::resources::ResourceReporter;
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
        /// What stdout gets for each event: a readable line, the log file's JSON line, or nothing.
        #[arg(long, value_enum, default_value = "text")]
        log_format: ConsoleFormat,
    },
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
        Command::Run { config, log_format } => {
            runtime.block_on(run(config.unwrap_or_else(default_config_path), log_format))
        }
        Command::Demo => runtime.block_on(demo::run()),
        Command::SampleAgent => demo::sample_agent(),
    }
}

async fn run(config_path: PathBuf, log_format: ConsoleFormat) -> ExitCode {
    let config = match Config::load(&config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit_code::CONFIG);
        }
    };
    // TODO(config): config.log_max_bytes / log_keep
    let (log_max_bytes, log_keep) = (DEFAULT_LOG_MAX_BYTES, DEFAULT_LOG_KEEP);
    let mut log = match EventLog::open_rotating(
        &config.log_file,
        &config.agent_id,
        log_format,
        log_max_bytes,
        log_keep,
    ) {
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
    // TODO(config): config.report_resources
    let resources = ResourceReporter::system(&config.agent_id, true);
    socket::run_with_resources(
        policy,
        NetConnector,
        &config.hub_url,
        &mut log,
        signals.recv(),
        Some(&mut relay),
        Some(resources),
    )
    .await;
    ExitCode::SUCCESS
}
