//! The launchd plist (macOS), and loading it with `launchctl`.
//!
//! `KeepAlive` is `{ Crashed: true }`, not `{ SuccessfulExit: false }`: launchd cannot exempt one
//! exit code the way systemd's `RestartPreventExitStatus=78` does, and `SuccessfulExit: false`
//! restarts on *every* non-zero exit, so a config error (exit 78) would be retried every
//! `ThrottleInterval` forever. The sidecar never exits on its own while it runs (hub outages and
//! auth failures are retried inside it); it exits only on a stop signal (0), a config error (78)
//! or a fatal start-up error (1), none of which a restart fixes. So launchd restarts it only when
//! it *crashed* (killed by a signal such as SIGABRT or SIGSEGV), and `RunAtLoad` starts it at login.

use super::{find_on_path, step, write_file, Scope, ServiceSpec};
use std::path::PathBuf;

/// The job's label: `com.agentcom.sidecar[.NAME]`.
pub fn label(spec: &ServiceSpec) -> String {
    match &spec.name {
        Some(name) => format!("com.agentcom.sidecar.{name}"),
        None => "com.agentcom.sidecar".to_owned(),
    }
}

/// Where the plist goes: `~/Library/LaunchAgents` (user) or `/Library/LaunchDaemons` (system).
pub fn plist_path(spec: &ServiceSpec) -> PathBuf {
    let dir = match spec.scope {
        Scope::User => PathBuf::from(&spec.home).join("Library/LaunchAgents"),
        Scope::System => PathBuf::from("/Library/LaunchDaemons"),
    };
    dir.join(format!("{}.plist", label(spec)))
}

/// Where stdout and stderr go: `~/Library/Logs/LABEL.{out,err}.log` (user) or
/// `/Library/Logs/LABEL.{out,err}.log` (system).
pub fn log_paths(spec: &ServiceSpec) -> (String, String) {
    let dir = match spec.scope {
        Scope::User => PathBuf::from(&spec.home).join("Library/Logs"),
        Scope::System => PathBuf::from("/Library/Logs"),
    };
    let l = label(spec);
    (
        dir.join(format!("{l}.out.log")).to_string_lossy().into_owned(),
        dir.join(format!("{l}.err.log")).to_string_lossy().into_owned(),
    )
}

/// Escape text for a plist `<string>`.
pub fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The plist's text.
pub fn plist(spec: &ServiceSpec) -> String {
    let args: String = std::iter::once(spec.binary.clone())
        .chain(spec.run_args())
        .map(|a| format!("\t\t<string>{}</string>\n", xml(&a)))
        .collect();
    let (out, err) = log_paths(spec);
    let environment = if spec.environment.is_empty() {
        String::new()
    } else {
        let entries: String = spec
            .environment
            .iter()
            .map(|(name, value)| {
                format!(
                    "\t\t<key>{}</key>\n\t\t<string>{}</string>\n",
                    xml(name),
                    xml(value)
                )
            })
            .collect();
        format!("\t<key>EnvironmentVariables</key>\n\t<dict>\n{entries}\t</dict>\n")
    };
    let user = match (spec.scope, &spec.run_as) {
        (Scope::System, Some(user)) => format!("\t<key>UserName</key>\n\t<string>{}</string>\n", xml(user)),
        _ => String::new(),
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- The AgentCom sidecar as a launchd job. Written by `agentcom-sidecar service install`.
     KeepAlive restarts it only after a crash: exit 78 (config error) and exit 0 (stopped) are final. -->
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>{label}</string>
	<key>ProgramArguments</key>
	<array>
{args}	</array>
	<key>WorkingDirectory</key>
	<string>{wd}</string>
	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<dict>
		<key>Crashed</key>
		<true/>
	</dict>
	<key>ThrottleInterval</key>
	<integer>10</integer>
	<key>ExitTimeOut</key>
	<integer>10</integer>
	<key>AbandonProcessGroup</key>
	<true/>
	<key>ProcessType</key>
	<string>Background</string>
	<key>StandardOutPath</key>
	<string>{out}</string>
	<key>StandardErrorPath</key>
	<string>{err}</string>
{environment}{user}</dict>
</plist>
"#,
        label = xml(&label(spec)),
        wd = xml(&spec.working_directory()),
        out = xml(&out),
        err = xml(&err),
    )
}

/// `gui/UID` for a user job, `system` for a daemon.
fn domain(spec: &ServiceSpec) -> String {
    match spec.scope {
        Scope::System => "system".to_owned(),
        Scope::User => {
            #[cfg(unix)]
            // SAFETY: getuid has no preconditions and cannot fail.
            let uid = unsafe { libc::getuid() };
            #[cfg(not(unix))]
            let uid = 0;
            format!("gui/{uid}")
        }
    }
}

/// Write the plist and load it: `launchctl bootout` (an older copy, if loaded), then `bootstrap`.
pub fn install(spec: &ServiceSpec) -> Result<(), String> {
    let path = plist_path(spec);
    let (out, _) = log_paths(spec);
    if let Some(dir) = PathBuf::from(&out).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    write_file(&path, &plist(spec), spec.has_credentials())?;
    if let Some(note) = spec.environment_note() {
        crate::outln!("{note}");
    }
    let domain = domain(spec);
    let target = format!("{domain}/{}", label(spec));
    let path_text = path.to_string_lossy().into_owned();
    if find_on_path("launchctl").is_none() {
        crate::outln!(
            "launchctl is not on PATH: the plist is written to {path_text} but not loaded. On macOS, run:\n  launchctl bootstrap {domain} {path_text}"
        );
        return Err("launchctl not found: the job is not loaded".into());
    }
    // Not loaded yet is the usual case: its failure means nothing.
    let _ = step("launchctl", &["bootout", &target]);
    step("launchctl", &["bootstrap", &domain, &path_text])?;
    crate::outln!("\n{} is installed and running. Next:", label(spec));
    crate::outln!("  launchctl print {target}");
    crate::outln!("  tail -f {out}");
    Ok(())
}

/// `launchctl bootout`, then remove the plist.
pub fn uninstall(spec: &ServiceSpec) -> Result<(), String> {
    let path = plist_path(spec);
    if !path.exists() {
        crate::outln!("{} does not exist: nothing to uninstall", path.display());
        return Ok(());
    }
    let target = format!("{}/{}", domain(spec), label(spec));
    if find_on_path("launchctl").is_some() {
        let _ = step("launchctl", &["bootout", &target]);
    } else {
        crate::outln!("launchctl is not on PATH; on macOS, run: launchctl bootout {target}");
    }
    std::fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
    crate::outln!("removed {}\n{} is uninstalled.", path.display(), label(spec));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plist_text() {
        let spec = ServiceSpec {
            name: Some("rev".into()),
            binary: "/Users/a b/bin/agentcom-sidecar".into(),
            config: "/Users/a b/R&D <x>/config.json".into(),
            scope: Scope::User,
            run_as: None,
            home: "/Users/a b".into(),
            environment: vec![],
        };
        let text = plist(&spec);
        for expected in [
            "\t<string>com.agentcom.sidecar.rev</string>",
            "\t\t<string>/Users/a b/bin/agentcom-sidecar</string>\n\t\t<string>run</string>\n\t\t<string>--config</string>\n\t\t<string>/Users/a b/R&amp;D &lt;x&gt;/config.json</string>\n\t</array>",
            "\t<key>WorkingDirectory</key>\n\t<string>/Users/a b/R&amp;D &lt;x&gt;</string>",
            "\t<key>RunAtLoad</key>\n\t<true/>",
            "\t<key>KeepAlive</key>\n\t<dict>\n\t\t<key>Crashed</key>\n\t\t<true/>\n\t</dict>",
            "<string>/Users/a b/Library/Logs/com.agentcom.sidecar.rev.out.log</string>",
            "<string>/Users/a b/Library/Logs/com.agentcom.sidecar.rev.err.log</string>",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("SuccessfulExit"));
        assert!(!text.contains("UserName"));
        assert_eq!(
            plist_path(&spec),
            PathBuf::from("/Users/a b/Library/LaunchAgents/com.agentcom.sidecar.rev.plist")
        );
        assert!(!text.contains("EnvironmentVariables"));
        let spec = ServiceSpec {
            environment: vec![
                ("HTTPS_PROXY".into(), "http://al:p&w@proxy:3128".into()),
                ("NO_PROXY".into(), "localhost".into()),
            ],
            ..spec
        };
        let text = plist(&spec);
        assert!(
            text.contains(
                "\t<key>EnvironmentVariables</key>\n\t<dict>\n\
                 \t\t<key>HTTPS_PROXY</key>\n\t\t<string>http://al:p&amp;w@proxy:3128</string>\n\
                 \t\t<key>NO_PROXY</key>\n\t\t<string>localhost</string>\n\t</dict>\n"
            ),
            "{text}"
        );
    }
}
