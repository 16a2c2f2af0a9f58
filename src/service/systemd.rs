//! The systemd unit, and installing it with `systemctl`.

use super::{find_on_path, step, write_file, Scope, ServiceSpec};
use std::path::PathBuf;

/// The unit's file name: `agentcom-sidecar[-NAME].service`.
pub fn unit_name(spec: &ServiceSpec) -> String {
    format!("{}.service", spec.base_name())
}

/// Where the unit goes: `$XDG_CONFIG_HOME/systemd/user` (else `~/.config/systemd/user`) for a
/// user unit, `/etc/systemd/system` for a system one.
pub fn unit_path(spec: &ServiceSpec) -> PathBuf {
    let dir = match spec.scope {
        Scope::System => PathBuf::from("/etc/systemd/system"),
        Scope::User => std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| PathBuf::from(&spec.home).join(".config"))
            .join("systemd/user"),
    };
    dir.join(unit_name(spec))
}

/// One `ExecStart=` word, quoted per systemd.syntax(7) when needed: inside double quotes `\` and
/// `"` are backslash-escaped; `%` (a specifier) becomes `%%` and `$` (a variable) `$$` anywhere.
pub fn exec_word(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    let plain = !escaped.is_empty()
        && !escaped
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'));
    if plain {
        escaped
    } else {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// A value systemd takes verbatim to the end of the line (`WorkingDirectory=`): no quoting (quotes
/// would become part of the path), only `%` doubled so it is not read as a specifier.
pub fn verbatim(value: &str) -> String {
    value.replace('%', "%%")
}

/// One `Environment=` line: the assignment in double quotes (`\\` and `"` escaped inside), `%`
/// doubled (a specifier); systemd expands no `$` here.
pub fn environment_line(name: &str, value: &str) -> String {
    let assignment = format!("{name}={value}")
        .replace('%', "%%")
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!("Environment=\"{assignment}\"\n")
}

/// The unit file's text.
pub fn unit(spec: &ServiceSpec) -> String {
    let exec = std::iter::once(spec.binary.clone())
        .chain(spec.run_args())
        .map(|w| exec_word(&w))
        .collect::<Vec<_>>()
        .join(" ");
    let (kind, wanted_by) = match spec.scope {
        Scope::User => ("user", "default.target"),
        Scope::System => ("system", "multi-user.target"),
    };
    let mut u = String::new();
    u.push_str(&format!(
        "# {name}: the AgentCom sidecar as a systemd {kind} service.\n\
         # Written by `agentcom-sidecar service install`; `agentcom-sidecar service print` shows it.\n\
         [Unit]\n\
         Description=AgentCom sidecar{suffix}\n\
         Documentation=https://github.com/notno/AgentCom\n",
        name = unit_name(spec),
        suffix = spec
            .name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
    ));
    if spec.scope == Scope::System {
        u.push_str("Wants=network-online.target\nAfter=network-online.target\n");
    }
    u.push_str(&format!(
        "\n[Service]\n\
         # READY=1 once the config is loaded; WATCHDOG=1 from the event loop while it is healthy.\n\
         Type=notify\n\
         NotifyAccess=main\n\
         ExecStart={exec}\n\
         WorkingDirectory={wd}\n\
         Restart=always\n\
         RestartSec=2\n\
         # 78 = the config is missing or invalid, 73 = another sidecar already runs on this state\n\
         # folder: a restart cannot fix either, so do not loop on them.\n\
         RestartPreventExitStatus=73 78\n\
         # The sidecar closes the hub link and exits within 2 s of SIGTERM.\n\
         TimeoutStopSec=10\n\
         # Pinged every 30 s while the event loop turns and the link is identified or in its\n\
         # designed backoff: a hub outage does not trip it, a stuck sidecar does.\n\
         WatchdogSec=60\n\
         # Agents started by wake_command keep running through a sidecar restart; the restarted\n\
         # sidecar picks up their result files (queue.json keeps the tasks).\n\
         KillMode=process\n\
         NoNewPrivileges=yes\n\
         # No ProtectHome= or ProtectSystem=strict: the agents this sidecar wakes write in the\n\
         # user's repositories, home folder and tool caches, and those options would make them\n\
         # read-only or invisible.\n",
        wd = verbatim(&spec.working_directory()),
    ));
    if let (Scope::System, Some(user)) = (spec.scope, &spec.run_as) {
        u.push_str(&format!("User={user}\n"));
    }
    if !spec.environment.is_empty() {
        u.push_str("# The proxy settings of the shell that ran `service install`.\n");
        for (name, value) in &spec.environment {
            u.push_str(&environment_line(name, value));
        }
    }
    u.push_str(&format!("\n[Install]\nWantedBy={wanted_by}\n"));
    u
}

fn systemctl_args<'a>(spec: &ServiceSpec, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = Vec::new();
    if spec.scope == Scope::User {
        args.push("--user");
    }
    args.extend_from_slice(rest);
    args
}

/// The commands install runs, as text (for the "no systemctl" hint).
fn manual_commands(spec: &ServiceSpec, verbs: &[&[&str]]) -> String {
    let user = if spec.scope == Scope::User { " --user" } else { "" };
    verbs
        .iter()
        .map(|v| format!("  systemctl{user} {}\n", v.join(" ")))
        .collect()
}

/// Write the unit, then `systemctl [--user] daemon-reload` and `enable --now`; when it replaced an
/// installed unit, also `restart`, so the running sidecar picks up the new definition.
pub fn install(spec: &ServiceSpec) -> Result<(), String> {
    let path = unit_path(spec);
    let name = unit_name(spec);
    let replacing = path.exists();
    write_file(&path, &unit(spec), spec.has_credentials())?;
    if let Some(note) = spec.environment_note() {
        crate::outln!("{note}");
    }
    let Some(_) = find_on_path("systemctl") else {
        crate::outln!(
            "systemctl is not on PATH: the unit is written to {} but not enabled. On a machine with systemd, run:\n{}",
            path.display(),
            manual_commands(spec, &[&["daemon-reload"], &["enable", "--now", &name]])
        );
        return Err("systemctl not found: the service is not enabled".into());
    };
    step("systemctl", &systemctl_args(spec, &["daemon-reload"]))?;
    step("systemctl", &systemctl_args(spec, &["enable", "--now", &name]))?;
    if replacing {
        step("systemctl", &systemctl_args(spec, &["restart", &name]))?;
    }
    let (user, journal) = match spec.scope {
        Scope::User => (" --user", "journalctl --user"),
        Scope::System => ("", "journalctl"),
    };
    crate::outln!("\n{name} is installed and running. Next:");
    crate::outln!("  systemctl{user} status {name}");
    crate::outln!("  {journal} -u {name} -f");
    if spec.scope == Scope::User {
        crate::outln!("  loginctl enable-linger $USER     # to keep it running while you are logged out, and start it at boot");
    }
    Ok(())
}

/// `systemctl [--user] disable --now`, remove the unit, `daemon-reload`.
pub fn uninstall(spec: &ServiceSpec) -> Result<(), String> {
    let path = unit_path(spec);
    let name = unit_name(spec);
    if !path.exists() {
        crate::outln!("{} does not exist: nothing to uninstall", path.display());
        return Ok(());
    }
    let systemctl = find_on_path("systemctl");
    if systemctl.is_some() {
        // A unit that is not loaded fails to disable; removing the file is still right.
        let _ = step("systemctl", &systemctl_args(spec, &["disable", "--now", &name]));
    }
    std::fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
    crate::outln!("removed {}", path.display());
    match systemctl {
        Some(_) => step("systemctl", &systemctl_args(spec, &["daemon-reload"]))?,
        None => crate::outln!(
            "systemctl is not on PATH; on a machine with systemd, run:\n{}",
            manual_commands(spec, &[&["disable", "--now", &name], &["daemon-reload"]])
        ),
    }
    crate::outln!("{name} is uninstalled.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(scope: Scope) -> ServiceSpec {
        ServiceSpec {
            name: Some("rev".into()),
            binary: "/opt/agent com/bin/agentcom-sidecar".into(),
            config: "/home/al ice/my \"agent\" 100%/config.json".into(),
            scope,
            run_as: Some("alice".into()),
            home: "/home/al ice".into(),
            environment: vec![],
        }
    }

    #[test]
    fn exec_words_are_quoted_per_systemd() {
        assert_eq!(exec_word("run"), "run");
        assert_eq!(exec_word("/a b/c"), "\"/a b/c\"");
        assert_eq!(exec_word("/a\"b\\c"), "\"/a\\\"b\\\\c\"");
        assert_eq!(exec_word("/100%/$HOME"), "/100%%/$$HOME");
        assert_eq!(exec_word(""), "\"\"");
    }

    #[test]
    fn user_unit_lines() {
        let text = unit(&spec(Scope::User));
        let lines: Vec<&str> = text.lines().collect();
        for expected in [
            "[Service]",
            "Type=notify",
            "NotifyAccess=main",
            r#"ExecStart="/opt/agent com/bin/agentcom-sidecar" run --config "/home/al ice/my \"agent\" 100%%/config.json""#,
            r#"WorkingDirectory=/home/al ice/my "agent" 100%%"#,
            "Restart=always",
            "RestartSec=2",
            // 73: another sidecar runs on this state folder; 78: the config is invalid.
            "RestartPreventExitStatus=73 78",
            "TimeoutStopSec=10",
            "WatchdogSec=60",
            "NoNewPrivileges=yes",
            "[Install]",
            "WantedBy=default.target",
        ] {
            assert!(lines.contains(&expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("User="), "{text}");
        assert!(!text.contains("\nProtectHome"), "{text}");
        assert!(!text.contains("\nProtectSystem"), "{text}");
        assert!(text.contains("Description=AgentCom sidecar (rev)"));
        assert_eq!(unit_name(&spec(Scope::User)), "agentcom-sidecar-rev.service");
    }

    #[test]
    fn proxy_variables_become_quoted_environment_lines() {
        let mut spec = spec(Scope::User);
        spec.environment = vec![
            ("HTTPS_PROXY".into(), "http://al:s%40c\"r\\t$x@proxy:3128".into()),
            ("no_proxy".into(), "localhost, .corp".into()),
        ];
        let text = unit(&spec);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.contains(&r#"Environment="HTTPS_PROXY=http://al:s%%40c\"r\\t$x@proxy:3128""#),
            "{text}"
        );
        assert!(
            lines.contains(&r#"Environment="no_proxy=localhost, .corp""#),
            "{text}"
        );
        // In [Service], before [Install].
        let at = |l: &str| text.find(l).unwrap();
        assert!(at("[Service]") < at("Environment=") && at("Environment=") < at("[Install]"));
        assert!(!unit(&super::super::ServiceSpec {
            environment: vec![],
            ..spec
        })
        .contains("Environment="));
    }

    #[test]
    fn system_unit_runs_as_the_user() {
        let text = unit(&spec(Scope::System));
        assert!(text.lines().any(|l| l == "User=alice"), "{text}");
        assert!(text.lines().any(|l| l == "WantedBy=multi-user.target"), "{text}");
        assert!(text.lines().any(|l| l == "After=network-online.target"), "{text}");
        assert_eq!(
            unit_path(&spec(Scope::System)),
            PathBuf::from("/etc/systemd/system/agentcom-sidecar-rev.service")
        );
    }
}
