//! `agentcom-sidecar init`: write a valid config (mode 600) and say what to do next.

use crate::config::Config;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What `init` was told.
#[derive(Debug, Clone)]
pub struct InitArgs {
    /// The agent's id.
    pub agent_id: String,
    /// The hub's URL.
    pub hub_url: String,
    /// A file holding the token.
    pub token_file: Option<PathBuf>,
    /// The display name.
    pub name: Option<String>,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// The wake command.
    pub wake_command: Option<String>,
}

/// The config text for `args`.
pub fn config_text(args: &InitArgs) -> String {
    let mut config = serde_json::Map::new();
    config.insert("agent_id".into(), args.agent_id.clone().into());
    if let Some(file) = &args.token_file {
        config.insert("token_file".into(), file.display().to_string().into());
    }
    config.insert("hub_url".into(), args.hub_url.clone().into());
    config.insert(
        "name".into(),
        args.name.clone().unwrap_or_else(|| args.agent_id.clone()).into(),
    );
    config.insert("capabilities".into(), args.capabilities.clone().into());
    if let Some(wake) = &args.wake_command {
        config.insert("wake_command".into(), wake.clone().into());
    }
    config.insert("results_dir".into(), "./results".into());
    config.insert("log_file".into(), "./sidecar.log".into());
    serde_json::to_string_pretty(&config).expect("json") + "\n"
}

/// Write the config at `path`; refuses to overwrite without `force`.
pub fn run(path: &Path, args: InitArgs, force: bool) -> ExitCode {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    if path.exists() && !force {
        crate::errln!(
            "error: {} already exists; not overwriting it.\nhelp: pass --force to replace it, or --config to write another file",
            path.display()
        );
        return ExitCode::from(crate::exit_code::CONFIG);
    }
    let text = config_text(&args);
    // Check it as `run` will, before writing anything (a token from the environment or the token
    // file makes it complete; without one, say how to give it).
    if let Err(e) = Config::parse(
        &text.replace(
            "\"agent_id\"",
            "\"token\": \"placeholder-for-the-check\",\n  \"agent_id\"",
        ),
        &path,
    ) {
        crate::errln!("error: that would not be a valid config: {e}");
        return ExitCode::from(crate::exit_code::CONFIG);
    }
    if let Some(dir) = path.parent() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            crate::errln!("error: cannot create {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = write_private(&path, text.as_bytes()) {
        crate::errln!("error: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    let c = path.display();
    #[cfg(unix)]
    crate::outln!("wrote {c} (readable by you only: it names the token and the wake command)");
    #[cfg(not(unix))]
    crate::outln!(
        "wrote {c} ({}; it names the token and the wake command)",
        crate::files::PRIVATE_NOTE
    );
    if args.token_file.is_none() {
        crate::outln!("\nThe config holds no token. Give it one of these ways:");
        crate::outln!("  - a token file:   add \"token_file\": \"/path/to/token\" (chmod 600 the file), or rerun init with --token-file");
        crate::outln!("  - the environment: AGENTCOM_TOKEN=... agentcom-sidecar run --config {c}");
    }
    if args.wake_command.is_none() {
        crate::outln!("\nNo wake_command: tasks will be refused until you add one (see \"The agent contract\" in the README).");
    }
    crate::outln!("\nNext steps:");
    crate::outln!("  agentcom-sidecar check --config {c}              # connect and identify once");
    crate::outln!("  agentcom-sidecar try --config {c} \"say hello\"    # one task through your agent, on a private hub");
    crate::outln!("  agentcom-sidecar service install --config {c}    # run it as a service");
    ExitCode::SUCCESS
}

/// Write a file readable and writable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // An existing file keeps its mode on open: set it.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)
}
