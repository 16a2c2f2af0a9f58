//! Every config error stops the binary before it connects, with exit code 78 and a message that
//! names the file, the field and what to do.

mod support;

use agentcom_sidecar::hub::{EmbeddedHub, HubEvent, HubOptions};
use std::net::TcpListener;
use std::time::Duration;
use support::*;

/// Runs `future` to completion on a current-thread runtime, for a test that is sync until then.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// Run `run --config` on `text`; return (exit code, stderr). A listener stands where hub_url
/// points, and the test fails if anything connects to it.
fn run_with(name: &str, text: Option<&str>) -> (Option<i32>, String, std::path::PathBuf, TempDir) {
    let dir = TempDir::new(&format!("config-{name}"));
    let path = dir.join("config.json");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    if let Some(text) = text {
        let text = text.replace("HUB", &format!("ws://{}/ws", listener.local_addr().unwrap()));
        write_private(&path, &text);
    }
    let out = binary().arg("run").arg("--config").arg(&path).output().unwrap();
    assert!(
        listener.accept().is_err(),
        "{name}: the sidecar connected despite a bad config"
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path,
        dir,
    )
}

fn assert_error(name: &str, text: Option<&str>, needles: &[&str]) {
    let (code, stderr, path, _dir) = run_with(name, text);
    assert_eq!(code, Some(78), "{name}: exit code; stderr:\n{stderr}");
    assert!(stderr.starts_with("error: "), "{name}:\n{stderr}");
    assert!(
        stderr.contains(&path.display().to_string()),
        "{name}: the message must name the file:\n{stderr}"
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{name}: expected {needle:?} in:\n{stderr}"
        );
    }
}

#[test]
fn missing_file_points_to_the_example_and_a_private_copy() {
    assert_error(
        "missing",
        None,
        &["not found", "config.json.example", "install -m 600"],
    );
}

#[test]
fn invalid_json_gives_line_and_column() {
    let text = "{\n  \"agent_id\": \"a\",\n  \"token\": \"t\",,\n}";
    assert_error("json", Some(text), &["config.json:3:", "invalid JSON"]);
}

#[test]
fn missing_and_empty_required_fields_are_named() {
    assert_error(
        "no-agent",
        Some(r#"{"token":"t","hub_url":"HUB"}"#),
        &["agent_id"],
    );
    assert_error(
        "no-token",
        Some(r#"{"agent_id":"a","hub_url":"HUB"}"#),
        &["token"],
    );
    assert_error(
        "no-url",
        Some(r#"{"agent_id":"a","token":"t"}"#),
        &["hub_url", "ws://"],
    );
    assert_error(
        "empty-agent",
        Some(r#"{"agent_id":"  ","token":"t","hub_url":"HUB"}"#),
        &["agent_id"],
    );
    assert_error(
        "empty-token",
        Some(r#"{"agent_id":"a","token":"","hub_url":"HUB"}"#),
        &["token"],
    );
}

#[test]
fn wrong_types_name_the_field_and_the_expected_type() {
    assert_error(
        "caps",
        Some(r#"{"agent_id":"a","token":"t","hub_url":"HUB","capabilities":["code",5]}"#),
        &["capabilities[1]", "string"],
    );
    assert_error(
        "interval",
        Some(r#"{"agent_id":"a","token":"t","hub_url":"HUB","heartbeat_interval_ms":"30s"}"#),
        &["heartbeat_interval_ms"],
    );
    assert_error("not-object", Some(r#"["agent_id"]"#), &["object"]);
}

#[test]
fn bad_hub_urls_say_what_a_valid_one_looks_like() {
    assert_error(
        "http-url",
        Some(r#"{"agent_id":"a","token":"t","hub_url":"http://127.0.0.1:4000/ws"}"#),
        &["hub_url", "ws://"],
    );
    assert_error(
        "junk-url",
        Some(r#"{"agent_id":"a","token":"t","hub_url":"hub"}"#),
        &["hub_url", "ws://"],
    );
}

#[test]
fn errors_never_echo_the_token() {
    let long = "x".repeat(300);
    let text = format!(r#"{{"agent_id":"a","token":"{long}","hub_url":"HUB"}}"#);
    let (code, stderr, _, _dir) = run_with("long-token", Some(&text));
    assert_eq!(code, Some(78));
    assert!(stderr.contains("token"), "{stderr}");
    assert!(!stderr.contains(&long[..40]), "token echoed:\n{stderr}");
}

#[test]
fn unused_node_keys_are_warnings_not_errors() {
    // A valid config with Node-only keys starts, logs one warning per key it does not use (and
    // none for the Node keys it now uses: repo_dir, hub_api_url, reviewer), and stops on SIGTERM.
    let dir = TempDir::new("config-legacy");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    drop(listener);
    let mut config: serde_json::Value = serde_json::from_str(&config_json(
        "legacy",
        "legacy-token-0123456789",
        &url,
        serde_json::json!({}),
    ))
    .unwrap();
    config["hub_api_url"] = "http://127.0.0.1:4000".into();
    config["repo_dir"] = "/tmp/repo".into();
    config["reviewer"] = "someone".into();
    config["log_level"] = "debug".into();
    config["workspace"] = "/tmp/ws".into();
    write_private(&dir.join("config.json"), &config.to_string());
    let mut sidecar = Sidecar::spawn(dir.path(), &dir.join("config.json"));
    block_on(async {
        sidecar
            .wait_log_event("ws_connect_error", Duration::from_secs(10))
            .await
            .expect("it runs");
        sidecar.signal("TERM");
        assert_eq!(
            sidecar
                .wait_exit(Duration::from_secs(2))
                .await
                .and_then(|s| s.code()),
            Some(0)
        );
    });
    let warnings: Vec<String> = sidecar
        .log_events()
        .iter()
        .filter(|e| e["event"] == "config_warning")
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect();
    for key in ["log_level", "workspace"] {
        assert_eq!(
            warnings.iter().filter(|w| w.contains(key)).count(),
            1,
            "{key}: {warnings:?}"
        );
    }
    for key in ["hub_api_url", "repo_dir", "reviewer"] {
        assert!(!warnings.iter().any(|w| w.contains(key)), "{key}: {warnings:?}");
    }
}

#[test]
fn config_path_comes_from_the_environment_when_not_given() {
    let dir = TempDir::new("config-env");
    let out = binary()
        .arg("run")
        .env("AGENTCOM_SIDECAR_CONFIG", dir.join("from-env.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("from-env.json"));
}

// Secrets: permissions of the config and token files, the token from the environment.

const SECRET: &str = "5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2";

#[cfg(unix)]
fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Starts `run --config PATH` with `args` and `env`, output to files in `dir`.
fn spawn_with(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Sidecar {
    let mut command = binary();
    command
        .arg("run")
        .arg("--config")
        .arg(dir.join("config.json"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(dir.join("stdout.txt")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr.txt")).unwrap());
    for (k, v) in env {
        command.env(k, v);
    }
    Sidecar {
        child: command.spawn().unwrap(),
        dir: dir.path().to_owned(),
    }
}

/// Everything the sidecar wrote: stdout, stderr and the JSON-lines log.
fn all_output(sidecar: &Sidecar) -> String {
    let log = std::fs::read_to_string(sidecar.dir.join("sidecar.log")).unwrap_or_default();
    format!("{}{}{log}", sidecar.stdout(), sidecar.stderr())
}

#[cfg(unix)]
#[test]
fn a_config_others_can_read_is_refused_with_the_chmod_fix() {
    let dir = TempDir::new("config-0644");
    let path = dir.join("config.json");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    write_private(&path, &config_json("perm", SECRET, &url, serde_json::json!({})));
    set_mode(&path, 0o644);
    let out = binary().arg("run").arg("--config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(listener.accept().is_err(), "it connected despite the permissions");
    assert!(
        stderr.starts_with(&format!("error: config file {}", path.display())),
        "{stderr}"
    );
    for needle in [
        "(mode 0644)",
        "run commands as the sidecar's user",
        &format!("chmod 600 {}", path.display()),
        "--allow-insecure-permissions",
    ] {
        assert!(stderr.contains(needle), "{needle:?} in:\n{stderr}");
    }
    assert!(!stderr.contains(SECRET), "token leaked:\n{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET));
}

#[cfg(unix)]
#[test]
fn allow_insecure_permissions_lets_it_start() {
    block_on(async {
        let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
        let HubSetup {
            hub: _hub,
            token,
            mut events,
            dir,
            config: path,
            ..
        } = HubSetup::with_hub(hub, None, "perm-allowed", serde_json::json!({}));
        set_mode(&path, 0o664);
        let mut sidecar = spawn_with(&dir, &["--allow-insecure-permissions"], &[]);
        wait_hub(
            &mut events,
            Duration::from_secs(10),
            "identified",
            identified("perm-allowed"),
        )
        .await;
        sidecar.signal("TERM");
        let status = sidecar.wait_exit(Duration::from_secs(2)).await;
        assert_eq!(status.and_then(|s| s.code()), Some(0));
        assert!(!all_output(&sidecar).contains(&token));
    });
}

#[cfg(unix)]
#[test]
fn a_token_file_others_can_read_is_refused() {
    let dir = TempDir::new("token-file-0644");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let mut config: serde_json::Value =
        serde_json::from_str(&config_json("perm-token", "unused", &url, serde_json::json!({}))).unwrap();
    config.as_object_mut().unwrap().remove("token");
    config["token_file"] = "agent.token".into();
    write_private(&dir.join("config.json"), &config.to_string());
    let token_path = dir.join("agent.token");
    write_private(&token_path, &format!("{SECRET}\n"));
    set_mode(&token_path, 0o644);
    let mut sidecar = spawn_with(&dir, &[], &[]);
    let status = block_on(sidecar.wait_exit(Duration::from_secs(10)));
    let stderr = sidecar.stderr();
    assert_eq!(status.and_then(|s| s.code()), Some(78), "{stderr}");
    assert!(listener.accept().is_err(), "it connected despite the permissions");
    assert!(
        stderr.starts_with(&format!(
            "error: token file {} (the `token_file` of {})",
            token_path.display(),
            dir.join("config.json").display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("(mode 0644)"), "{stderr}");
    assert!(
        stderr.contains(&format!("chmod 600 {}", token_path.display())),
        "{stderr}"
    );
    assert!(!all_output(&sidecar).contains(SECRET), "token leaked");
}

#[test]
fn the_token_comes_from_agentcom_token_then_token_file_and_is_never_shown() {
    block_on(async {
        let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
        // The hub knows the environment's token; the config's and the file's are wrong.
        let env_token = hub.add_token("env-token");
        let file_token = "f11ef11ef11ef11ef11ef11ef11ef11ef11ef11ef11ef11ef11ef11ef11ef11e";
        let mut events = hub.events();
        let dir = TempDir::new("env-token");
        let config = config_json(
            "env-token",
            SECRET,
            &hub.url(),
            serde_json::json!({"token_file": "agent.token"}),
        );
        write_private(&dir.join("config.json"), &config);
        write_private(&dir.join("agent.token"), &format!("{file_token}\n"));
        let mut sidecar = spawn_with(&dir, &[], &[("AGENTCOM_TOKEN", &env_token)]);
        let HubEvent::Received { text, .. } = wait_hub(
            &mut events,
            Duration::from_secs(10),
            "identify",
            |e| matches!(e, HubEvent::Received { text, .. } if text.contains("\"identify\"")),
        )
        .await
        else {
            unreachable!()
        };
        let identify: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(identify["token"], env_token.as_str());
        wait_hub(
            &mut events,
            Duration::from_secs(10),
            "identified",
            identified("env-token"),
        )
        .await;
        let warning = sidecar
            .wait_log_event("config_warning", Duration::from_secs(5))
            .await
            .expect("a warning says which token is used");
        let message = warning["message"].as_str().unwrap();
        assert!(
            message.contains("AGENTCOM_TOKEN environment variable is used")
                && message.contains("`token_file` and `token` in the config are ignored"),
            "{message}"
        );
        sidecar.signal("TERM");
        let status = sidecar.wait_exit(Duration::from_secs(2)).await;
        assert_eq!(status.and_then(|s| s.code()), Some(0));
        let output = all_output(&sidecar);
        for secret in [env_token.as_str(), file_token, SECRET] {
            assert!(!output.contains(secret), "a token leaked:\n{output}");
        }
    });
}
