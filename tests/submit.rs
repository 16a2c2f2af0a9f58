//! `submit` and `tasks` on the real binary against the embedded hub's HTTP API, with a real
//! sidecar taking the tasks.

mod support;

use std::process::Output;
use support::{binary, text, HubSetup};

/// Confirms, then answers `$RESULT` (success by default).
const AGENT_SH: &str = r#"#!/bin/sh
: > "$AGENTCOM_STARTED_FILE"
result="${RESULT:-{\"status\":\"success\",\"output\":\"done by the agent\"\}}"
printf '%s' "$result" > "$AGENTCOM_RESULT_FILE.tmp"
mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
"#;

async fn cli(setup: &HubSetup, args: &[&str]) -> Output {
    let mut command = binary();
    command.args(args).arg("--config").arg(&setup.config);
    tokio::process::Command::from(command).output().await.unwrap()
}

/// Runs [`cli`], asserts it exits with `code`, and returns what it showed.
async fn cli_exits(setup: &HubSetup, args: &[&str], code: i32) -> String {
    let out = cli(setup, args).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(code), "{shown}");
    shown
}

/// A config whose `hub_api_url` is the hub's HTTP API, an agent, and a sidecar running it.
async fn running(agent: &str, wake: &str) -> (HubSetup, support::Sidecar) {
    let mut setup =
        HubSetup::start(agent, serde_json::json!({}))
            .await
            .with_agent(AGENT_SH, wake, serde_json::json!({}));
    let sidecar = setup.spawn();
    setup.identified().await;
    (setup, sidecar)
}

#[tokio::test]
async fn submit_prints_the_id_and_wait_exits_0_once_the_sidecar_completes_it() {
    let (setup, _sidecar) = running("submit-a", "sh AGENT").await;
    let out = cli(
        &setup,
        &[
            "submit",
            "Say hello",
            "--capability",
            "code",
            "--wait",
            "--timeout-secs",
            "30",
        ],
    )
    .await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout.lines().next().unwrap().trim().to_owned();
    let record = setup
        .hub
        .task(&id)
        .unwrap_or_else(|| panic!("no task {id:?} on the hub:\n{shown}"));
    assert_eq!(record.status, "completed");
    assert!(stdout.contains("status         completed"), "{shown}");
    assert!(
        stdout.contains("result         success done by the agent"),
        "{shown}"
    );
    assert!(!shown.contains(&setup.token), "the token was printed");

    // `tasks` shows it in the table and alone.
    let out = cli(&setup, &["tasks"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("ID "), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("completed") && row.contains("submit-a") && row.contains("Say hello"),
        "{row}"
    );
    let out = cli(&setup, &["tasks", &id]).await;
    let one = String::from_utf8_lossy(&out.stdout);
    assert!(one.contains("assigned_to    submit-a"), "{one}");
    let out = cli(&setup, &["tasks", "--status", "queued"]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(no tasks)"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn wait_exits_4_for_a_task_the_hub_dead_letters() {
    let wake = r#"RESULT='{"status":"failed","reason":"the agent says no"}' sh AGENT"#;
    let (setup, _sidecar) = running("submit-b", wake).await;
    let shown = cli_exits(
        &setup,
        &["submit", "Do the impossible", "--wait", "--timeout-secs", "60"],
        4,
    )
    .await;
    assert!(shown.contains("dead_letter"), "{shown}");
    assert!(shown.contains("the agent says no"), "{shown}");
}

#[tokio::test]
async fn wait_exits_5_when_nothing_takes_the_task_in_time() {
    // No sidecar runs: the task stays queued.
    let setup = HubSetup::start("submit-c", serde_json::json!({})).await;
    let shown = cli_exits(
        &setup,
        &["submit", "Nobody is there", "--wait", "--timeout-secs", "2"],
        5,
    )
    .await;
    assert!(shown.contains("still queued after 2 s"), "{shown}");
}

#[tokio::test]
async fn errors_name_the_hubs_status_and_message() {
    let setup = HubSetup::start("submit-d", serde_json::json!({})).await;
    // A token the hub does not know.
    let other = setup.dir.join("other.json");
    support::write_private(
        &other,
        &support::config_json(
            "submit-d",
            "ffffffffffffffffffffffffffffffff",
            &setup.hub.url(),
            serde_json::json!({}),
        ),
    );
    let mut command = binary();
    command.args(["submit", "x", "--config"]).arg(&other);
    let out = tokio::process::Command::from(command).output().await.unwrap();
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(77), "{shown}");
    assert!(
        shown.contains("/api/tasks: the hub answered 401: unauthorized"),
        "{shown}"
    );
    assert!(!shown.contains("ffffffffffffffff"), "{shown}");
    // A field the hub refuses (a description over 10000 characters).
    let long = "x".repeat(10_001);
    let shown = cli_exits(&setup, &["submit", &long], 65).await;
    assert!(shown.contains("answered 422: validation_failed"), "{shown}");
    assert!(shown.contains("description"), "{shown}");
    // A task the hub does not have.
    let shown = cli_exits(&setup, &["tasks", "task-00000000000000ff"], 65).await;
    assert!(shown.contains("answered 404: task_not_found"), "{shown}");
    // A hub that is not there.
    setup.hub.stop().await;
    let shown = cli_exits(&setup, &["tasks"], 69).await;
    assert!(shown.contains("hub_api_url"), "{shown}");
}

#[tokio::test]
async fn the_task_body_carries_every_option() {
    let setup = HubSetup::start("submit-e", serde_json::json!({})).await;
    let out = cli(
        &setup,
        &[
            "submit",
            "-starts with a dash",
            "--tier",
            "complex",
            "--capability",
            "code",
            "--capability",
            "review",
            "--repo",
            "https://git.example/app.git",
            "--branch",
            "dev",
            "--verify",
            "file_exists:README.md",
            "--verify",
            "command_succeeds:make lint",
            "--priority",
            "high",
            "--assign-to",
            "someone",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let api = agentcom_sidecar::hub_api::HubApi::new(
        &setup.hub.api_url(),
        Some(agentcom_sidecar::config::Secret::new(setup.token.clone())),
        None,
    )
    .unwrap()
    .with_proxy(agentcom_sidecar::link::connect::ProxyConfig::default());
    let task = api.task(&id).await.unwrap();
    assert_eq!(task["description"], "-starts with a dash");
    assert_eq!(task["complexity"]["effective_tier"], "complex", "{task:#}");
    assert_eq!(task["needed_capabilities"], serde_json::json!(["code", "review"]));
    assert_eq!(task["repo"], "https://git.example/app.git");
    assert_eq!(task["branch"], "dev");
    assert_eq!(task["priority"], 1);
    assert_eq!(
        task["verification_steps"],
        serde_json::json!([{"type": "file_exists", "target": "README.md"}, {"type": "command_succeeds", "target": "make lint"}])
    );
    let out = cli(&setup, &["submit", "x", "--verify", "nocolon"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is not TYPE:TARGET"), "{}", text(&out));
}

#[tokio::test]
async fn hub_api_classify_and_health_against_the_embedded_hub() {
    let setup = HubSetup::start("submit-f", serde_json::json!({})).await;
    let api = agentcom_sidecar::hub_api::HubApi::new(
        &setup.hub.api_url(),
        Some(agentcom_sidecar::config::Secret::new(setup.token.clone())),
        None,
    )
    .unwrap()
    .with_proxy(agentcom_sidecar::link::connect::ProxyConfig::default());
    assert_eq!(api.health().await.unwrap()["status"], "ok");
    let submitted = api
        .submit(&serde_json::json!({"description": "Tidy the docs", "complexity_tier": "standard"}))
        .await
        .unwrap();
    let body = serde_json::json!({"lines_added": 3, "lines_deleted": 1, "files_changed": ["docs/a.md"], "files_added": [], "tests_exist": true});
    let answer = api.classify(&submitted.task_id, &body).await.unwrap();
    assert!(answer["tier"].is_number(), "{answer:#}");
    assert!(answer["reasons"].is_array(), "{answer:#}");
    let e = api.classify("task-00000000000000ff", &body).await.unwrap_err();
    assert_eq!(e.status, Some(404), "{e}");
}

#[test]
fn every_new_command_has_its_manual_in_help() {
    for (command, wants) in [
        (
            "submit",
            &[
                "Examples:",
                "4   --wait: the hub dead-lettered",
                "--verify <TYPE:TARGET>",
            ][..],
        ),
        ("tasks", &["Examples:", "77  the hub refused the token"][..]),
        (
            "join",
            &["Examples:", "The test task:", "--rejoin", "join-progress.json"][..],
        ),
        ("leave", &["Examples:", "--purge", "results_dir"][..]),
    ] {
        let out = binary().args([command, "--help"]).output().unwrap();
        assert!(out.status.success(), "{command} --help: {out:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        for want in wants {
            assert!(help.contains(want), "{command} --help lacks {want:?}:\n{help}");
        }
    }
}

#[tokio::test]
async fn wait_exits_6_when_the_task_is_cancelled() {
    use tokio::io::AsyncBufReadExt;
    let setup = HubSetup::start("submit-g", serde_json::json!({})).await;
    let mut command = binary();
    command.args([
        "submit",
        "Cancel me",
        "--wait",
        "--timeout-secs",
        "30",
        "--config",
    ]);
    command
        .arg(&setup.config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = tokio::process::Command::from(command)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let id = lines.next_line().await.unwrap().expect("the task id first");
    assert!(setup.hub.cancel_task(&id).await, "the hub had task {id}");
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains(&format!("the hub no longer has task {id}")),
        "{stderr}"
    );
}
