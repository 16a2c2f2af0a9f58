//! `try` (one task through the user's agent on a private hub) and `init` (a config, mode 600).

mod support;

use serde_json::json;
use std::time::Duration;
use support::*;

/// A config whose agent is `wake` (a shell command), with fast timers; returns (dir, config path).
fn config_with(label: &str, wake: &str, extra: serde_json::Value) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new(label);
    let mut config: serde_json::Value = serde_json::from_str(&config_json(
        label,
        "unused-token-0123456789",
        "ws://127.0.0.1:9/ws",
        extra,
    ))
    .unwrap();
    config["wake_command"] = wake.into();
    let path = dir.join("config.json");
    write_private(&path, &config.to_string());
    (dir, path)
}

fn try_task(path: &std::path::Path, description: &str) -> (Option<i32>, String, String) {
    let out = binary()
        .args(["try", "--timeout", "20", "--config"])
        .arg(path)
        .arg(description)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD_AGENT: &str = r#": > "$AGENTCOM_STARTED_FILE"; printf '{"status":"success","output":"%s"}' "$AGENTCOM_TASK_ID" > "$AGENTCOM_RESULT_FILE.tmp" && mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE""#;

#[test]
fn try_runs_a_task_through_a_working_agent() {
    let (_dir, path) = config_with("try-ok", GOOD_AGENT, json!({}));
    let (code, stdout, stderr) = try_task(&path, "say hello");
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    for step in [
        "assigned: \"say hello\"",
        "accepted",
        "running wake_command (attempt 1)",
        ".started appeared",
        "outcome: complete",
        "completed",
        "ok:",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }
}

#[test]
fn try_says_when_the_agent_never_writes_started() {
    let (_dir, path) = config_with("try-nostart", "true", json!({"confirmation_timeout_ms": 300}));
    let (code, stdout, _) = try_task(&path, "x");
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains(".started within confirmation_timeout_ms (300 ms)"),
        "{stdout}"
    );
    assert!(stdout.contains("AGENTCOM_STARTED_FILE"), "{stdout}");
}

#[test]
fn try_says_when_the_wake_command_fails_and_shows_its_output() {
    let (_dir, path) = config_with(
        "try-wakefail",
        "echo 'my-agent: command not found' >&2; exit 7",
        json!({"wake_retry_delays_ms": []}),
    );
    let (code, stdout, _) = try_task(&path, "x");
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("the wake command did not succeed: exit code 7"),
        "{stdout}"
    );
    assert!(stdout.contains("my-agent: command not found"), "{stdout}");
}

#[test]
fn try_says_when_the_result_is_malformed() {
    let wake = r#": > "$AGENTCOM_STARTED_FILE"; echo '[1, 2]' > "$AGENTCOM_RESULT_FILE""#;
    let (_dir, path) = config_with("try-malformed", wake, json!({}));
    let (code, stdout, _) = try_task(&path, "x");
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("is not a usable result: not a JSON object: array"),
        "{stdout}"
    );
}

#[test]
fn try_relays_the_agents_own_failure() {
    let wake = r#": > "$AGENTCOM_STARTED_FILE"; echo '{"status":"failed","reason":"tests are red"}' > "$AGENTCOM_RESULT_FILE""#;
    let (_dir, path) = config_with("try-agentfail", wake, json!({}));
    let (code, stdout, _) = try_task(&path, "x");
    assert_eq!(code, Some(1));
    assert!(
        stdout.contains("the agent reported a failure: tests are red"),
        "{stdout}"
    );
}

#[test]
fn try_refuses_while_the_daemon_runs() {
    let (dir, path) = config_with("try-daemon", GOOD_AGENT, json!({}));
    let mut daemon = Sidecar::spawn(dir.path(), &path);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !dir.join("agentcom-sidecar.lock").exists()
        || std::fs::read_to_string(dir.join("agentcom-sidecar.lock"))
            .unwrap_or_default()
            .trim()
            .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, _, stderr) = try_task(&path, "x");
    assert_eq!(code, Some(73), "{stderr}");
    assert!(stderr.contains(&format!("PID {}", daemon.pid())), "{stderr}");
    let _ = daemon.child.kill();
}

#[test]
fn init_writes_a_private_config_and_never_overwrites_without_force() {
    let dir = TempDir::new("init");
    let path = dir.join("sub").join("config.json");
    let init = |extra: &[&str]| {
        binary()
            .args([
                "init",
                "--agent-id",
                "my-agent",
                "--hub-url",
                "ws://127.0.0.1:4000/ws",
                "--capabilities",
                "code,review",
                "--config",
            ])
            .arg(&path)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = init(&["--wake-command", "my-agent --task-file ${TASK_FILE}"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("agentcom-sidecar check --config"), "{stdout}");
    assert!(
        stdout.contains("AGENTCOM_TOKEN"),
        "no token given: it says how to give one:\n{stdout}"
    );
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(config["agent_id"], "my-agent");
    assert_eq!(config["capabilities"], json!(["code", "review"]));
    assert_eq!(config["wake_command"], "my-agent --task-file ${TASK_FILE}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let again = init(&[]);
    assert_eq!(again.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert!(init(&["--force"]).status.success());
    let bad = binary()
        .args([
            "init",
            "--agent-id",
            "a",
            "--hub-url",
            "http://x/ws",
            "--force",
            "--config",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("ws://"));
}

/// `try` with extra arguments before the description, off the async runtime.
async fn try_with(path: &std::path::Path, args: &[&str], description: &str) -> (Option<i32>, String, String) {
    let mut cmd = binary();
    cmd.args(["try", "--timeout", "20", "--config"])
        .arg(path)
        .args(args)
        .arg(description);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const FAILING_AGENT: &str = "echo the agent was woken >&2; exit 3";

#[tokio::test(flavor = "multi_thread")]
async fn try_tier_standard_runs_the_task_on_ollama_url_registered_in_the_private_hub() {
    use agentcom_sidecar::exec::fake_ollama::FakeOllama;
    let ollama = FakeOllama::start().await.unwrap();
    let (_dir, path) = config_with("try-standard", FAILING_AGENT, json!({"ollama_url": ollama.url()}));
    let (code, stdout, stderr) = try_with(&path, &["--tier", "standard"], "Summarize the changelog").await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "ollama_url {} registered in the private hub (healthy",
            ollama.url()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("standard -> ollama {}", ollama.host_port())),
        "{stdout}"
    );
    assert!(
        stdout.contains("executing it here with ollama (fake-model:latest"),
        "{stdout}"
    );
    assert!(stdout.contains("Hello from the fake model."), "{stdout}");
    assert!(
        stdout.contains("ok: the sidecar ran the task with ollama"),
        "{stdout}"
    );
    assert!(!stdout.contains("wake_command attempt"), "{stdout}");
    assert!(ollama.received().iter().any(|r| r.path == "/api/chat"));
}

#[tokio::test(flavor = "multi_thread")]
async fn try_without_tier_wakes_the_agent_even_when_ollama_url_answers() {
    use agentcom_sidecar::exec::fake_ollama::FakeOllama;
    let ollama = FakeOllama::start().await.unwrap();
    let (_dir, path) = config_with("try-no-tier", GOOD_AGENT, json!({"ollama_url": ollama.url()}));
    let (code, stdout, stderr) = try_with(&path, &[], "Summarize the changelog for the team").await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("ok: your agent took the task"), "{stdout}");
    assert!(!ollama.received().iter().any(|r| r.path == "/api/chat"));
}

#[tokio::test(flavor = "multi_thread")]
async fn try_tier_standard_without_ollama_url_says_so_and_falls_back_to_the_agent() {
    let (_dir, path) = config_with("try-standard-none", GOOD_AGENT, json!({}));
    let (code, stdout, stderr) = try_with(&path, &["--tier", "standard"], "Summarize the changelog").await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("has no `ollama_url`, so the private hub has no local model"),
        "{stdout}"
    );
    assert!(
        stdout.contains("fallback: no_healthy_ollama_endpoints"),
        "{stdout}"
    );
    assert!(stdout.contains("waking the agent: fallback"), "{stdout}");
    assert!(stdout.contains("ok: your agent took the task"), "{stdout}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn try_tier_trivial_runs_the_shell_command_when_hub_commands_are_allowed() {
    let (_dir, path) = config_with("try-trivial", FAILING_AGENT, json!({"allow_hub_commands": true}));
    let args = ["--tier", "trivial", "--shell-command", "echo hi-from-the-shell"];
    let (code, stdout, stderr) = try_with(&path, &args, "say hi").await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("route trivial -> sidecar: runs the shell command"),
        "{stdout}"
    );
    assert!(stdout.contains("executing it here with sidecar"), "{stdout}");
    assert!(stdout.contains("hi-from-the-shell"), "{stdout}");
    assert!(
        stdout.contains("ok: the sidecar ran the task with sidecar"),
        "{stdout}"
    );
}

#[test]
fn try_shell_command_needs_a_tier() {
    let (_dir, path) = config_with("try-shell-no-tier", GOOD_AGENT, json!({}));
    let out = binary()
        .args(["try", "--config"])
        .arg(&path)
        .args(["--shell-command", "true", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tier"));
}
