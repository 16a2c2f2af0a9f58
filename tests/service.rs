//! `agentcom-sidecar service ...` through the real binary: the printed unit and plist, install and
//! uninstall into a temporary home with a fake `systemctl` on PATH (no real systemd is touched),
//! and sd_notify (READY=1, STATUS=, WATCHDOG=1, STOPPING=1) to a Unix datagram socket of the test's.

#![cfg(unix)]

mod support;

use agentcom_sidecar::service::{systemd, Scope, ServiceSpec};
use serde_json::json;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;
use support::*;
use tokio::net::UnixDatagram;

fn service(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = binary();
    cmd.arg("service").args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn bin_path() -> String {
    env!("CARGO_BIN_EXE_agentcom-sidecar").to_owned()
}

#[test]
fn print_unit_quotes_a_config_path_with_spaces() {
    let dir = TempDir::new("svc-print");
    let config = dir.join("my agent/config.json");
    let out = service(
        &[
            "print",
            "--platform",
            "linux",
            "--user",
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let exec = format!("ExecStart={} run --config \"{}\"", bin_path(), config.display());
    let wd = format!("WorkingDirectory={}", dir.join("my agent").display());
    for expected in [exec.as_str(), wd.as_str()] {
        assert!(lines.contains(&expected), "missing {expected:?} in\n{text}");
    }
    // The rest is the library's unit for these paths, whose every line `service::systemd`'s
    // unit tests check (`user_unit_lines`): written there once.
    let spec = ServiceSpec {
        name: None,
        binary: bin_path(),
        config: config.display().to_string(),
        scope: Scope::User,
        run_as: None,
        home: std::env::var("HOME").unwrap_or_default(),
        environment: vec![],
    };
    assert_eq!(text.trim_end(), systemd::unit(&spec).trim_end());
    // The config does not exist yet: printing still works, with a note.
    assert!(String::from_utf8_lossy(&out.stderr).contains("no config file"));
}

#[test]
fn print_plist_and_windows_commands() {
    let dir = TempDir::new("svc-plist");
    let config = dir.join("config.json");
    let home = dir.join("home");
    let out = service(
        &[
            "print",
            "--platform",
            "macos",
            "--user",
            "--name",
            "rev",
            "--config",
            config.to_str().unwrap(),
        ],
        &[("HOME", &home)],
    );
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    for expected in [
        "<string>com.agentcom.sidecar.rev</string>".to_owned(),
        format!("\t\t<string>{}</string>\n\t\t<string>run</string>\n\t\t<string>--config</string>\n\t\t<string>{}</string>", bin_path(), config.display()),
        format!("<key>WorkingDirectory</key>\n\t<string>{}</string>", dir.path().display()),
        "<key>KeepAlive</key>\n\t<dict>\n\t\t<key>Crashed</key>\n\t\t<true/>".to_owned(),
        format!("<string>{}/Library/Logs/com.agentcom.sidecar.rev.err.log</string>", home.display()),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in\n{text}");
    }
    let out = service(
        &[
            "print",
            "--platform",
            "windows",
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains("sc.exe create agentcom-sidecar binPath= "),
        "{out:?}"
    );
    assert!(stdout(&out).contains("--windows-service"), "{out:?}");
}

#[test]
fn a_bad_name_is_a_usage_error() {
    let out = service(&["print", "--name", "a b"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--name"));
}

#[test]
fn help_is_the_manual() {
    for args in [
        &["--help"][..],
        &["print", "--help"],
        &["install", "--help"],
        &["uninstall", "--help"],
    ] {
        let out = service(args, &[]);
        assert!(out.status.success(), "{args:?}: {out:?}");
        let text = stdout(&out);
        assert!(text.contains("Example"), "{args:?}:\n{text}");
    }
    let text = stdout(&service(&["install", "--help"], &[]));
    for flag in ["--config", "--user", "--system", "--name", "enable --now"] {
        assert!(text.contains(flag), "{flag} in\n{text}");
    }
}

/// A folder with a fake `systemctl` that appends its arguments to `systemctl.log`.
fn fake_systemctl(dir: &TempDir) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("systemctl");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\necho \"fake systemctl: $*\"\n",
            dir.join("systemctl.log").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn install_and_uninstall_with_a_fake_systemctl() {
    let dir = TempDir::new("svc-install");
    let bin = fake_systemctl(&dir);
    let home = dir.join("home");
    let xdg = dir.join("xdg config");
    let config = dir.join("agent dir/config.json");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    write_private(&config, "{}");
    let env = [
        ("PATH", bin.as_path()),
        ("HOME", home.as_path()),
        ("XDG_CONFIG_HOME", xdg.as_path()),
    ];
    let common = ["--user", "--name", "t1", "--config", config.to_str().unwrap()];

    let out = service(&[&["install"][..], &common].concat(), &env);
    assert!(out.status.success(), "{out:?}");
    let unit_path = xdg.join("systemd/user/agentcom-sidecar-t1.service");
    let written = std::fs::read_to_string(&unit_path).unwrap();
    let printed = stdout(&service(
        &[&["print", "--platform", "linux"][..], &common].concat(),
        &env,
    ));
    assert_eq!(written, printed);
    let log = std::fs::read_to_string(dir.join("systemctl.log")).unwrap();
    assert_eq!(
        log,
        "--user daemon-reload\n--user enable --now agentcom-sidecar-t1.service\n"
    );
    let text = stdout(&out);
    for expected in [
        "$ systemctl --user daemon-reload",
        "$ systemctl --user enable --now agentcom-sidecar-t1.service",
        "fake systemctl: --user enable --now agentcom-sidecar-t1.service",
        "systemctl --user status agentcom-sidecar-t1.service",
        "journalctl --user -u agentcom-sidecar-t1.service -f",
        "loginctl enable-linger $USER",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }

    // Installing again replaces the unit and restarts the running service with it.
    let out = service(&[&["install"][..], &common].concat(), &env);
    assert!(out.status.success(), "{out:?}");
    let log = std::fs::read_to_string(dir.join("systemctl.log")).unwrap();
    assert!(
        log.ends_with(
            "--user enable --now agentcom-sidecar-t1.service\n--user restart agentcom-sidecar-t1.service\n"
        ),
        "{log}"
    );

    let out = service(&[&["uninstall"][..], &common].concat(), &env);
    assert!(out.status.success(), "{out:?}");
    assert!(!unit_path.exists());
    let log = std::fs::read_to_string(dir.join("systemctl.log")).unwrap();
    assert!(
        log.ends_with("--user disable --now agentcom-sidecar-t1.service\n--user daemon-reload\n"),
        "{log}"
    );
    // Nothing left to remove: still fine.
    let out = service(&[&["uninstall"][..], &common].concat(), &env);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("nothing to uninstall"));
}

#[test]
fn install_without_systemctl_writes_the_unit_and_says_what_to_run() {
    let dir = TempDir::new("svc-nosystemctl");
    let empty = dir.join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let config = dir.join("config.json");
    write_private(&config, "{}");
    let env = [
        ("PATH", empty.as_path()),
        ("HOME", dir.path()),
        ("XDG_CONFIG_HOME", dir.path()),
    ];
    let out = service(&["install", "--user", "--config", config.to_str().unwrap()], &env);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(dir.join("systemd/user/agentcom-sidecar.service").is_file());
    let text = stdout(&out);
    assert!(text.contains("systemctl is not on PATH"), "{text}");
    assert!(
        text.contains("systemctl --user enable --now agentcom-sidecar.service"),
        "{text}"
    );
}

#[test]
fn install_without_a_config_exits_78() {
    let dir = TempDir::new("svc-noconfig");
    let bin = fake_systemctl(&dir);
    let env = [
        ("PATH", bin.as_path()),
        ("HOME", dir.path()),
        ("XDG_CONFIG_HOME", dir.path()),
    ];
    let missing = dir.join("missing.json");
    let out = service(
        &["install", "--user", "--config", missing.to_str().unwrap()],
        &env,
    );
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(!dir.join("systemctl.log").exists());
}

/// The next datagram, or None after `within`.
async fn next_message(sock: &UnixDatagram, within: Duration) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(within, sock.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

/// Collect messages until one satisfies `pred`; panics with what was seen after `within`.
async fn wait_message(
    sock: &UnixDatagram,
    seen: &mut Vec<String>,
    within: Duration,
    what: &str,
    pred: impl Fn(&str) -> bool,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_message(sock, left).await {
            Some(m) => {
                let hit = pred(&m);
                seen.push(m);
                if hit {
                    return;
                }
            }
            None => panic!("no {what} within {within:?}; got {seen:?}"),
        }
    }
}

fn spawn_notified(dir: &TempDir, config: &Path, socket: &str) -> Sidecar {
    let env = [("NOTIFY_SOCKET", socket), ("WATCHDOG_USEC", "400000")];
    Sidecar::spawn_with_env(dir.path(), config, &env)
}

#[tokio::test]
async fn sd_notify_ready_watchdog_stopping() {
    let HubSetup {
        hub: _hub,
        dir,
        config,
        ..
    } = HubSetup::start("svc-notify", json!({})).await;
    let socket_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).unwrap();
    let mut sidecar = spawn_notified(&dir, &config, socket_path.to_str().unwrap());
    let mut seen = Vec::new();
    let secs = Duration::from_secs;
    wait_message(&sock, &mut seen, secs(10), "READY=1", |m| {
        m.starts_with("READY=1\nSTATUS=connecting")
    })
    .await;
    wait_message(&sock, &mut seen, secs(10), "identified status", |m| {
        m == "STATUS=identified as svc-notify"
    })
    .await;
    // WATCHDOG_USEC=400000: a ping every 200 ms; three more prove it keeps coming.
    for _ in 0..3 {
        wait_message(&sock, &mut seen, secs(2), "WATCHDOG=1", |m| m == "WATCHDOG=1").await;
    }
    sidecar.signal("TERM");
    wait_message(&sock, &mut seen, secs(5), "STOPPING=1", |m| {
        m.starts_with("STOPPING=1")
    })
    .await;
    let status = sidecar.wait_exit(secs(5)).await.expect("exited");
    assert_eq!(status.code(), Some(0));
    while let Some(m) = next_message(&sock, Duration::from_millis(100)).await {
        seen.push(m);
    }
    let stopping = seen.iter().position(|m| m.starts_with("STOPPING=1")).unwrap();
    assert!(
        !seen[stopping..].iter().any(|m| m == "WATCHDOG=1"),
        "no watchdog ping after STOPPING=1: {seen:?}"
    );
}

/// A hub that is down keeps the link in its designed backoff: healthy, so the watchdog is still
/// fed (systemd must not restart the sidecar over a hub outage). Abstract socket this time.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn sd_notify_watchdog_keeps_coming_while_the_hub_is_down() {
    use std::os::linux::net::SocketAddrExt;
    let dir = TempDir::new("svc-notify-down");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = dir.join("config.json");
    write_private(
        &config,
        &config_json(
            "svc-down",
            "svc-down-token-0123456789",
            &format!("ws://127.0.0.1:{port}/ws"),
            json!({}),
        ),
    );
    let name = format!("agentcom-sidecar-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let std_sock = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
    std_sock.set_nonblocking(true).unwrap();
    let sock = UnixDatagram::from_std(std_sock).unwrap();
    let mut sidecar = spawn_notified(&dir, &config, &format!("@{name}"));
    let mut seen = Vec::new();
    let secs = Duration::from_secs;
    wait_message(&sock, &mut seen, secs(10), "READY=1", |m| {
        m.starts_with("READY=1")
    })
    .await;
    wait_message(&sock, &mut seen, secs(5), "reconnecting status", |m| {
        m.starts_with("STATUS=reconnecting in ")
    })
    .await;
    for _ in 0..5 {
        wait_message(&sock, &mut seen, secs(2), "WATCHDOG=1", |m| m == "WATCHDOG=1").await;
    }
    sidecar.signal("TERM");
    wait_message(&sock, &mut seen, secs(5), "STOPPING=1", |m| {
        m.starts_with("STOPPING=1")
    })
    .await;
    assert_eq!(sidecar.wait_exit(secs(5)).await.expect("exited").code(), Some(0));
}

#[test]
fn no_notify_socket_no_trouble() {
    // Without NOTIFY_SOCKET, run behaves as before: covered by tests/cli.rs. Here: a config error
    // under a notify socket exits 78 without READY=1.
    let dir = TempDir::new("svc-notify-78");
    let socket_path = dir.join("n.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    sock.set_nonblocking(true).unwrap();
    let out = binary()
        .args(["run", "--config"])
        .arg(dir.join("missing.json"))
        .env("NOTIFY_SOCKET", &socket_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let mut buf = [0u8; 256];
    assert!(
        sock.recv(&mut buf).is_err(),
        "no READY=1 before the config is loaded"
    );
}

/// `service ARGS` with exactly these proxy variables (every other one removed).
fn service_with_proxies(args: &[&str], env: &[(&str, &Path)], proxies: &[(&str, &str)]) -> Output {
    let mut cmd = binary();
    cmd.arg("service").args(args).stdin(Stdio::null());
    for name in agentcom_sidecar::service::PROXY_VARIABLES {
        cmd.env_remove(name);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    for (k, v) in proxies {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn install_carries_the_proxy_settings_into_the_unit_without_echoing_credentials() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("svc-proxy");
    let bin = fake_systemctl(&dir);
    let home = dir.join("home");
    let config = dir.join("config.json");
    write_private(&config, "{}");
    let env = [
        ("PATH", bin.as_path()),
        ("HOME", home.as_path()),
        ("XDG_CONFIG_HOME", dir.path()),
    ];
    let proxies = [
        ("HTTPS_PROXY", "http://frank:s%40cr3t-pw@proxy.corp:3128"),
        ("no_proxy", "localhost,.corp"),
    ];
    let common = ["--user", "--config", config.to_str().unwrap()];
    let out = service_with_proxies(&[&["install"][..], &common].concat(), &env, &proxies);
    assert!(out.status.success(), "{out:?}");
    let unit_path = dir.join("systemd/user/agentcom-sidecar.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let lines: Vec<&str> = unit.lines().collect();
    // The service needs the credentials: they are in the unit, which only its owner can read.
    for expected in [
        r#"Environment="HTTPS_PROXY=http://frank:s%%40cr3t-pw@proxy.corp:3128""#,
        r#"Environment="no_proxy=localhost,.corp""#,
        "RestartPreventExitStatus=73 78",
    ] {
        assert!(lines.contains(&expected), "missing {expected:?} in\n{unit}");
    }
    let mode = std::fs::metadata(&unit_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the unit holds credentials: mode {mode:o}");
    // The console says what was carried, credentials hidden.
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(
            "the service gets this shell's proxy settings: HTTPS_PROXY=http://***@proxy.corp:3128 no_proxy=localhost,.corp"
        ),
        "{said}"
    );
    assert!(!said.contains("s%40cr3t-pw") && !said.contains("cr3t"), "{said}");

    // print (each platform) shows the settings with the credentials hidden, and says so.
    for (platform, expected) in [
        ("linux", r#"Environment="HTTPS_PROXY=http://***@proxy.corp:3128""#),
        (
            "macos",
            "\t<key>EnvironmentVariables</key>\n\t<dict>\n\t\t<key>HTTPS_PROXY</key>\n\t\t<string>http://***@proxy.corp:3128</string>\n\t\t<key>no_proxy</key>\n\t\t<string>localhost,.corp</string>\n\t</dict>",
        ),
        (
            "windows",
            r#"/v Environment /t REG_MULTI_SZ /d "HTTPS_PROXY=http://***@proxy.corp:3128\0no_proxy=localhost,.corp" /f"#,
        ),
    ] {
        let out = service_with_proxies(
            &[&["print", "--platform", platform][..], &common].concat(),
            &env,
            &proxies,
        );
        assert!(out.status.success(), "{out:?}");
        let text = stdout(&out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(text.contains(expected), "{platform}: missing {expected:?} in\n{text}");
        assert!(!text.contains("cr3t") && !stderr.contains("cr3t"), "{platform}: {text}{stderr}");
        assert!(stderr.contains("credentials are shown as ***"), "{stderr}");
        assert!(
            stderr.contains("proxy settings: HTTPS_PROXY=http://***@proxy.corp:3128 no_proxy=localhost,.corp"),
            "{stderr}"
        );
    }

    // Without proxy variables: no Environment= line, and nothing said about it.
    let out = service_with_proxies(&[&["install"][..], &common].concat(), &env, &[]);
    assert!(out.status.success(), "{out:?}");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert!(!unit.contains("Environment="), "{unit}");
    assert!(!stdout(&out).contains("proxy settings"), "{out:?}");
}
