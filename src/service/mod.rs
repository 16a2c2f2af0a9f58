//! `agentcom-sidecar service print|install|uninstall`: run the sidecar under the machine's service
//! manager (systemd on Linux, launchd on macOS, the Service Control Manager on Windows), and
//! [`notify`]: the sd_notify protocol for `Type=notify` units.
//!
//! The unit/plist text is produced by pure functions ([`systemd::unit`], [`launchd::plist`],
//! [`windows::sc_commands`]) from a [`ServiceSpec`], so every platform's text can be printed and
//! tested anywhere; only installing touches the system.

pub mod launchd;
pub mod notify;
pub mod systemd;
pub mod windows;

use clap::{Args, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A future that resolves with the reason when a service manager asks the sidecar to stop
/// (the Windows service's Stop control); it joins the stop signals in `run`.
pub type StopFuture = std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>;

/// Resolve with whichever comes first: `signals` (SIGINT/SIGTERM, Ctrl+C) or `stop`, if any.
/// Both end the run the same way: a close with 1000 and exit 0.
pub async fn stop_requested(
    signals: impl std::future::Future<Output = String>,
    stop: Option<StopFuture>,
) -> String {
    match stop {
        Some(stop) => tokio::select! {
            why = signals => why,
            why = stop => why,
        },
        None => signals.await,
    }
}

/// Exit code for a step of install/uninstall that failed.
const FAILED: u8 = 1;
/// Exit code for a bad `--name` or path (clap's usage code).
const USAGE: u8 = 2;

/// `agentcom-sidecar service ...`.
#[derive(Debug, Args)]
pub struct ServiceCli {
    /// What to do.
    #[command(subcommand)]
    pub command: ServiceCommand,
}

/// The `service` subcommands.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Print the unit file (systemd), plist (launchd) or sc.exe commands (Windows) that `install`
    /// would use, without touching the system.
    #[command(
        long_about = "Print the service definition that `install` would write, without touching the system: \
a systemd unit on Linux, a launchd plist on macOS, the equivalent sc.exe commands on Windows. \
--platform prints another platform's text (for review, or to copy to another machine).",
        after_help = "Examples:\n  agentcom-sidecar service print --config ~/agent/config.json\n  agentcom-sidecar service print --platform macos --name reviewer"
    )]
    Print(PrintArgs),
    /// Install the sidecar as a service that starts at boot/login and restarts on failure, and
    /// start it now.
    #[command(
        long_about = "Install the sidecar as a service and start it now.\n\n\
Linux (systemd): writes agentcom-sidecar[-NAME].service to ~/.config/systemd/user/ (--user, the default \
when not root) or /etc/systemd/system/ (--system, the default as root), then runs `systemctl [--user] \
daemon-reload` and `systemctl [--user] enable --now` (and `restart` when it replaced an installed unit), \
printing each command and its result. \
Without systemctl, the unit is still written and the manual commands are printed.\n\n\
macOS (launchd): writes com.agentcom.sidecar[.NAME].plist to ~/Library/LaunchAgents/ (--user) or \
/Library/LaunchDaemons/ (--system) and loads it with `launchctl bootstrap`.\n\n\
Windows: registers a service with the Service Control Manager (run as Administrator) that runs \
`agentcom-sidecar run --config PATH --windows-service`, and starts it.\n\n\
The service runs this very binary (its absolute path) with the config's absolute path; the config \
must exist. Run `install` again after moving either.",
        after_help = "Examples:\n  agentcom-sidecar service install --config ~/agent/config.json\n  sudo agentcom-sidecar service install --system --config /etc/agentcom/config.json\n  agentcom-sidecar service install --name reviewer --config ~/reviewer/config.json"
    )]
    Install(ServiceArgs),
    /// Stop the service, disable it and remove its file.
    #[command(
        long_about = "Stop the service, disable it and remove its unit file (systemd: `disable --now`, \
remove, `daemon-reload`), plist (launchd: `bootout`, remove) or registration (Windows). \
Use the same --user/--system and --name as for install.",
        after_help = "Examples:\n  agentcom-sidecar service uninstall\n  agentcom-sidecar service uninstall --name reviewer"
    )]
    Uninstall(ServiceArgs),
}

/// Flags shared by every `service` subcommand.
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// The config file the service runs with (made absolute) [default: $AGENTCOM_SIDECAR_CONFIG,
    /// else ./config.json].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// A per-user service (systemd --user, a LaunchAgent). The default when not root.
    #[arg(long, conflicts_with = "system")]
    pub user: bool,
    /// A system-wide service (/etc/systemd/system running as the invoking user, a LaunchDaemon).
    /// The default as root.
    #[arg(long)]
    pub system: bool,
    /// A name for a second sidecar on the same machine: the service becomes
    /// agentcom-sidecar-NAME (systemd, Windows) or com.agentcom.sidecar.NAME (launchd).
    /// Letters, digits, '.', '_' and '-'.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// `service print`'s flags.
#[derive(Debug, Clone, Args)]
pub struct PrintArgs {
    /// The shared flags.
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Print for this platform instead of the one this binary runs on.
    #[arg(long, value_enum)]
    pub platform: Option<Platform>,
}

/// A service manager's platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Platform {
    /// systemd.
    Linux,
    /// launchd.
    Macos,
    /// The Windows Service Control Manager.
    Windows,
}

impl Platform {
    /// The platform this binary was built for (other Unixes count as Linux: systemd or nothing).
    pub fn current() -> Platform {
        if cfg!(target_os = "macos") {
            Platform::Macos
        } else if cfg!(windows) {
            Platform::Windows
        } else {
            Platform::Linux
        }
    }
}

/// Per-user or system-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// systemd --user, a LaunchAgent.
    User,
    /// A system unit, a LaunchDaemon, a Windows service.
    System,
}

/// Everything a service definition needs, resolved: absolute paths, the name, the scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// The optional `--name` suffix.
    pub name: Option<String>,
    /// This binary, absolute.
    pub binary: String,
    /// The config file, absolute.
    pub config: String,
    /// User or system.
    pub scope: Scope,
    /// For a system service: the account it runs as (the invoking user by default).
    pub run_as: Option<String>,
    /// The home folder (for the user unit folder, LaunchAgents and log paths).
    pub home: String,
    /// Variables carried into the service's environment, `(name, value)`: the proxy settings of
    /// the shell that ran `service` (see [`PROXY_VARIABLES`]). Values may hold credentials.
    pub environment: Vec<(String, String)>,
}

/// The proxy variables a service inherits from the shell that installs it, both cases (the
/// sidecar reads the lowercase one first, as curl does).
pub const PROXY_VARIABLES: [&str; 8] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// The proxy variables set (and not empty) according to `get`, in [`PROXY_VARIABLES`] order. A
/// value a service file cannot carry (a control character) is an error naming the variable.
pub fn proxy_environment(get: impl Fn(&str) -> Option<String>) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for name in PROXY_VARIABLES {
        let Some(value) = get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
            continue;
        };
        if value.chars().any(char::is_control) {
            return Err(format!(
                "{name} holds a control character: it cannot go into a service definition; fix or unset it"
            ));
        }
        out.push((name.to_owned(), value));
    }
    Ok(out)
}

impl ServiceSpec {
    /// The folder holding the config: the service's working directory.
    pub fn working_directory(&self) -> String {
        Path::new(&self.config)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_owned())
    }

    /// The arguments after the binary: `run --config PATH`.
    pub fn run_args(&self) -> Vec<String> {
        vec!["run".into(), "--config".into(), self.config.clone()]
    }

    /// The same spec with the credentials of every proxy URL hidden (`http://***@host:port`): what
    /// `service print` and the console show.
    pub fn redacted(&self) -> ServiceSpec {
        ServiceSpec {
            environment: self
                .environment
                .iter()
                .map(|(name, value)| (name.clone(), crate::link::connect::redact_credentials(value)))
                .collect(),
            ..self.clone()
        }
    }

    /// Whether a value in the environment holds credentials (the service file must be private).
    pub fn has_credentials(&self) -> bool {
        self.redacted().environment != self.environment
    }

    /// One line for the console saying which proxy variables go into the service (credentials
    /// hidden), or `None` when there are none.
    pub fn environment_note(&self) -> Option<String> {
        if self.environment.is_empty() {
            return None;
        }
        let shown: Vec<String> = self
            .redacted()
            .environment
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        Some(format!(
            "the service gets this shell's proxy settings: {}{} (install again after changing them)",
            shown.join(" "),
            if self.has_credentials() {
                "; the service file holds the proxy credentials and is readable by its owner only"
            } else {
                ""
            }
        ))
    }

    /// `agentcom-sidecar` or `agentcom-sidecar-NAME`.
    pub fn base_name(&self) -> String {
        match &self.name {
            Some(name) => format!("agentcom-sidecar-{name}"),
            None => "agentcom-sidecar".to_owned(),
        }
    }
}

/// Check a `--name`: 1-64 characters of `A-Za-z0-9._-`, not starting with `.` or `-`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--name {name:?} is not usable in a service name: use 1-64 letters, digits, '.', '_' or '-' (not first)"
        ))
    }
}

/// Resolve the flags against the environment: absolute paths, default scope and account.
pub fn resolve(args: &ServiceArgs) -> Result<ServiceSpec, String> {
    if let Some(name) = &args.name {
        check_name(name)?;
    }
    let config = args
        .config
        .clone()
        .unwrap_or_else(crate::config::default_config_path);
    let config = std::path::absolute(&config)
        .map_err(|e| format!("cannot make the config path {} absolute: {e}", config.display()))?;
    let binary = std::env::current_exe().map_err(|e| format!("cannot find this binary's path: {e}"))?;
    let scope = if args.system {
        Scope::System
    } else if args.user || !is_root() {
        Scope::User
    } else {
        Scope::System
    };
    let run_as = match scope {
        Scope::System => invoking_user(),
        Scope::User => None,
    };
    let home = std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .map(PathBuf::from)
        .unwrap_or_default();
    Ok(ServiceSpec {
        name: args.name.clone(),
        binary: text(&binary)?,
        config: text(&config)?,
        scope,
        run_as,
        home: text(&home)?,
        environment: proxy_environment(|name| std::env::var(name).ok())?,
    })
}

/// A path as UTF-8 text without control characters (a service file cannot carry anything else).
fn text(path: &Path) -> Result<String, String> {
    let s = path.to_str().ok_or_else(|| {
        format!(
            "the path {} is not UTF-8: move it to a plain path",
            path.display()
        )
    })?;
    if s.chars().any(char::is_control) {
        return Err(format!(
            "the path {s:?} holds a control character: move it to a plain path"
        ));
    }
    Ok(s.to_owned())
}

fn is_root() -> bool {
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// The user who ran the command: `$SUDO_USER` under sudo, else `$USER`/`$USERNAME`.
fn invoking_user() -> Option<String> {
    ["SUDO_USER", "USER", "USERNAME", "LOGNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|u| {
            !u.is_empty()
                && u.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-@$".contains(c))
        })
}

/// `agentcom-sidecar service ...`: returns the process exit code.
pub fn main(cli: ServiceCli) -> u8 {
    let (args, platform, action) = match cli.command {
        ServiceCommand::Print(p) => (p.service, p.platform.unwrap_or_else(Platform::current), "print"),
        ServiceCommand::Install(a) => (a, Platform::current(), "install"),
        ServiceCommand::Uninstall(a) => (a, Platform::current(), "uninstall"),
    };
    let spec = match resolve(&args) {
        Ok(spec) => spec,
        Err(e) => {
            crate::errln!("error: {e}");
            return USAGE;
        }
    };
    // `print` never shows proxy credentials: it prints them hidden, and says so.
    let shown = spec.redacted();
    match (action, platform) {
        ("print", Platform::Linux) => crate::out!("{}", systemd::unit(&shown)),
        ("print", Platform::Macos) => crate::out!("{}", launchd::plist(&shown)),
        ("print", Platform::Windows) => crate::out!("{}", windows::sc_commands(&shown)),
        ("install", _) | ("uninstall", _) => {
            if action == "install" && !Path::new(&spec.config).is_file() {
                crate::errln!(
                    "error: no config file at {}\n  help: write it first (agent_id, token, hub_url; see config.json.example), or pass --config PATH",
                    spec.config
                );
                return crate::exit_code::CONFIG;
            }
            let result = match (action, platform) {
                ("install", Platform::Linux) => systemd::install(&spec),
                ("uninstall", Platform::Linux) => systemd::uninstall(&spec),
                ("install", Platform::Macos) => launchd::install(&spec),
                ("uninstall", Platform::Macos) => launchd::uninstall(&spec),
                ("install", Platform::Windows) => windows::install(&spec),
                _ => windows::uninstall(&spec),
            };
            if let Err(e) = result {
                crate::errln!("error: {e}");
                return FAILED;
            }
        }
        _ => unreachable!("print, install and uninstall are the only actions"),
    }
    if action == "print" && !Path::new(&spec.config).is_file() {
        crate::errln!("note: there is no config file at {} yet", spec.config);
    }
    if let (true, Some(note)) = (action == "print", spec.environment_note()) {
        crate::errln!("note: {note}");
    }
    if action == "print" && spec.has_credentials() {
        crate::errln!(
            "note: the proxy credentials are shown as *** here; `install` writes them into the service file"
        );
    }
    0
}

/// The first executable named `program` on `$PATH`.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// Run one step of an install, printing the command line and its result. `Err` carries the
/// step's description when it failed.
fn step(program: &str, args: &[&str]) -> Result<(), String> {
    let line = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    crate::outln!("$ {line}");
    let output = Command::new(program)
        .args(args.iter().map(OsString::from))
        .output()
        .map_err(|e| format!("`{line}` could not run: {e}"))?;
    for stream in [&output.stdout, &output.stderr] {
        let text = String::from_utf8_lossy(stream);
        for l in text.lines() {
            crate::outln!("  {l}");
        }
    }
    if output.status.success() {
        crate::outln!("  ok");
        Ok(())
    } else {
        let status = output
            .status
            .code()
            .map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit code {c}"));
        crate::outln!("  failed ({status})");
        Err(format!("`{line}` failed ({status})"))
    }
}

/// Write `text` to `path` (creating its folder), replacing it atomically; readable by its owner
/// only when `private` (it holds proxy credentials), else as the umask says.
fn write_file(path: &Path, text: &str, private: bool) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    options
        .open(&tmp)
        .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    crate::outln!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("reviewer-2.a_b").is_ok());
        for bad in ["", "-x", ".x", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn working_directory_is_the_config_folder() {
        let spec = ServiceSpec {
            name: None,
            binary: "/bin/x".into(),
            config: "/home/a b/agent/config.json".into(),
            scope: Scope::User,
            run_as: None,
            home: "/home/a b".into(),
            environment: vec![],
        };
        assert_eq!(spec.working_directory(), "/home/a b/agent");
        assert_eq!(
            spec.run_args(),
            ["run", "--config", "/home/a b/agent/config.json"]
        );
        assert_eq!(spec.base_name(), "agentcom-sidecar");
    }
}

#[cfg(test)]
mod environment_tests {
    use super::*;

    #[test]
    fn proxy_variables_both_cases_in_order_and_redacted_for_show() {
        let vars = [
            ("no_proxy", "localhost,.corp"),
            ("HTTPS_PROXY", "http://al:s%40cret@proxy:3128"),
            ("http_proxy", "  "),
            ("HOME", "/home/x"),
        ];
        let get = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        let environment = proxy_environment(get).unwrap();
        assert_eq!(
            environment,
            [
                (
                    "HTTPS_PROXY".to_owned(),
                    "http://al:s%40cret@proxy:3128".to_owned()
                ),
                ("no_proxy".to_owned(), "localhost,.corp".to_owned()),
            ]
        );
        let spec = ServiceSpec {
            name: None,
            binary: "/bin/x".into(),
            config: "/c/config.json".into(),
            scope: Scope::User,
            run_as: None,
            home: "/h".into(),
            environment,
        };
        assert!(spec.has_credentials());
        let note = spec.environment_note().unwrap();
        assert!(
            note.contains("HTTPS_PROXY=http://***@proxy:3128 no_proxy=localhost,.corp"),
            "{note}"
        );
        assert!(!note.contains("s%40cret"), "{note}");
        let bad = proxy_environment(|n| (n == "ALL_PROXY").then(|| "http://a\nb".to_owned()));
        assert!(bad
            .unwrap_err()
            .starts_with("ALL_PROXY holds a control character"));
    }
}
