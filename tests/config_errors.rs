//! Every config error stops the binary before it connects, with exit code 78 and a message that
//! names the file, the field and what to do.

mod support;

use std::net::TcpListener;
use std::time::Duration;
use support::*;

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
    // A valid config with Node-only keys starts, logs one warning per key, and stops on SIGTERM.
    let dir = TempDir::new("config-legacy");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    drop(listener);
    let mut config: serde_json::Value =
        serde_json::from_str(&config_json("legacy", "tok", &url, serde_json::json!({}))).unwrap();
    config["hub_api_url"] = "http://127.0.0.1:4000".into();
    config["repo_dir"] = "/tmp/repo".into();
    config["reviewer"] = "someone".into();
    write_private(&dir.join("config.json"), &config.to_string());
    let mut sidecar = Sidecar::spawn(dir.path(), &dir.join("config.json"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
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
    for key in ["hub_api_url", "repo_dir", "reviewer"] {
        assert_eq!(
            warnings.iter().filter(|w| w.contains(key)).count(),
            1,
            "{key}: {warnings:?}"
        );
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
