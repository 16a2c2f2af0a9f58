//! Verification and delivery on the real binary (issue 11, protocol §11.8-§11.9): a task with a
//! `repo` is worked on in a workspace cloned from a bare repository (`origin`), verified, and
//! delivered as a pushed branch and a pull request (a fake `gh` records its arguments); a failing
//! check withholds the push; a hanging check is killed at its timeout while the link stays up;
//! a hostile description creates nothing and runs nothing.
#![cfg(unix)]

mod support;

use agentcom_sidecar::hub::TaskSpec;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use support::*;

/// An agent that works where the sidecar says (`AGENTCOM_WORKSPACE`): it writes NOTES.md there
/// and reports success.
const AGENT_SH: &str = r#"#!/bin/sh
ws="${AGENTCOM_WORKSPACE:-.}"
printf '%s' "$ws" > "$AGENTCOM_RESULTS_DIR/../workspace-$AGENTCOM_TASK_ID"
: > "$AGENTCOM_STARTED_FILE"
printf 'hello from the agent\n' > "$ws/NOTES.md"
printf '{"status":"success","output":"wrote NOTES.md"}' > "$AGENTCOM_RESULT_FILE.tmp"
mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
"#;

async fn setup(agent: &str, gh: &FakeGh, extra: Value) -> (HubSetup, Sidecar) {
    let mut config = json!({"gh_command": gh.command()});
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            config[k] = v;
        }
    }
    let mut setup = HubSetup::start(agent, json!({}))
        .await
        .with_agent(AGENT_SH, "sh AGENT", config);
    setup.hub.set_rate_limits(false);
    let sidecar = setup.spawn();
    setup.identified().await;
    (setup, sidecar)
}

fn file_exists(target: &str) -> Value {
    json!({"type": "file_exists", "target": target})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_with_a_repo_ends_as_a_pushed_branch_and_a_pull_request() {
    let origin = GitOrigin::new("deliver-origin");
    let gh = FakeGh::new("deliver-gh");
    let (s, _sidecar) = setup("deliver-agent", &gh, json!({"reviewer": "octocat"})).await;
    let task_id = s.hub.submit_task(TaskSpec {
        description: "Add notes for the team".into(),
        repo: Some(origin.url()),
        verification_steps: vec![file_exists("NOTES.md")],
        success_criteria: vec![json!("NOTES.md exists")],
        ..TaskSpec::default()
    });
    s.wait_status(&task_id, "completed", Duration::from_secs(30))
        .await;
    let task = s.hub.task_json(&task_id).unwrap();
    let result = &task["result"];
    assert_eq!(result["pr_url"], FakeGh::URL, "{task:#}");
    let branch = result["branch"]
        .as_str()
        .expect("the branch is in the result")
        .to_owned();
    assert_eq!(branch, "deliver-agent/add-notes-for-the-team");
    // The branch holds the agent's file, committed with the description as its subject.
    assert!(origin.has_branch(&branch), "{branch} not pushed");
    assert_eq!(
        origin.git(&["show", &format!("{branch}:NOTES.md")]),
        "hello from the agent\n"
    );
    let subject = origin.git(&["log", "-1", "--format=%s%n%b", &branch]);
    assert!(subject.starts_with("Add notes for the team\n"), "{subject}");
    assert!(subject.contains(&format!("Task: {task_id}")), "{subject}");
    // The workspace was under workspaces_dir (beside queue.json), never the sidecar's folder.
    let ws = std::fs::read_to_string(s.dir.join(format!("workspace-{task_id}"))).unwrap();
    assert!(Path::new(&ws).starts_with(s.dir.join("workspaces")), "{ws}");
    assert!(!s.dir.join("NOTES.md").exists());
    // gh opened the pull request against main, from the branch, with the reviewer.
    assert_eq!(gh.calls(), 1);
    let args = gh.args(1);
    assert_eq!(
        &args[..6],
        ["pr", "create", "--base", "main", "--head", &branch],
        "{args:?}"
    );
    assert!(args.contains(&"--title".to_owned()) || args.iter().any(|a| a.starts_with("--title")));
    assert!(args.contains(&"Add notes for the team".to_owned()), "{args:?}");
    assert!(args.contains(&"octocat".to_owned()), "{args:?}");
    let body = gh.body(1).unwrap_or_default();
    assert!(
        body.contains(&task_id) && body.contains("NOTES.md exists"),
        "{body}"
    );
    // The verification report reached the hub at the top level; the hub classified the change.
    assert_eq!(task["verification_report"]["status"], "pass", "{task:#}");
    assert_eq!(task["verification_report"]["checks"][0]["type"], "file_exists");
    assert_eq!(task["verification_history"].as_array().map(Vec::len), Some(1));
    assert!(
        result.get("verification_report").is_none(),
        "lifted, not left in the result"
    );
    assert!(result["risk_classification"]["tier"].is_u64(), "{result:#}");
    assert!(
        !result["risk_classification"]["reasons"]
            .to_string()
            .contains("unavailable"),
        "{result:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_check_withholds_the_push_and_the_report_reaches_the_hub() {
    let origin = GitOrigin::new("deliver-fail-origin");
    let gh = FakeGh::new("deliver-fail-gh");
    let (s, _sidecar) = setup("deliver-fail", &gh, json!({})).await;
    let task_id = s.hub.submit_task(TaskSpec {
        description: "Write the changelog".into(),
        repo: Some(origin.url()),
        verification_steps: vec![file_exists("NOTES.md"), file_exists("CHANGELOG.md")],
        ..TaskSpec::default()
    });
    // It still completes (the hub's dashboard shows the verdict); only delivery is withheld.
    s.wait_status(&task_id, "completed", Duration::from_secs(30))
        .await;
    let task = s.hub.task_json(&task_id).unwrap();
    assert_eq!(task["verification_report"]["status"], "fail", "{task:#}");
    assert_eq!(task["verification_report"]["summary"]["failed"], 1);
    assert_eq!(task["verification_report"]["checks"][1]["status"], "fail");
    assert_eq!(task["result"]["verification_status"], "failed", "{task:#}");
    assert_eq!(task["result"]["delivery"]["status"], "withheld", "{task:#}");
    assert!(task["result"].get("pr_url").is_none());
    assert!(!origin.has_branch("deliver-fail/write-the-changelog"));
    assert_eq!(gh.calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_check_is_killed_at_its_timeout_while_pings_go_on() {
    let gh = FakeGh::new("deliver-hang-gh");
    let (s, _sidecar) = setup("deliver-hang", &gh, json!({"allow_hub_commands": true})).await;
    let pid_file = s.dir.join("check.pid");
    let command = format!("echo $$ > '{}'; exec sleep 30", pid_file.display());
    let task_id = s.hub.submit_task(TaskSpec {
        description: "Run the slow check".into(),
        verification_steps: vec![json!({"type": "command_succeeds", "target": command})],
        verification_timeout_ms: Some(2500),
        ..TaskSpec::default()
    });
    wait_file(&pid_file, Duration::from_secs(20)).await;
    let pid = read_pid(&pid_file).expect("the check wrote its pid");
    let pings_before = s.sent_of_type("ping").len();
    s.wait_status(&task_id, "completed", Duration::from_secs(20))
        .await;
    let task = s.hub.task_json(&task_id).unwrap();
    assert_eq!(task["verification_report"]["status"], "timeout", "{task:#}");
    assert_eq!(task["verification_report"]["checks"][0]["status"], "timeout");
    assert_eq!(task["verification_report"]["timeout_ms"], 2500);
    // The link stayed up meanwhile (a ping a second), and the check's process is gone.
    assert!(
        s.sent_of_type("ping").len() > pings_before,
        "no ping while the check ran"
    );
    poll(
        Duration::from_secs(5),
        || format!("the check's process {pid} still runs"),
        || process_gone(pid).then_some(()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_description_creates_nothing_and_runs_nothing() {
    let origin = GitOrigin::new("deliver-hostile-origin");
    let gh = FakeGh::new("deliver-hostile-gh");
    let (s, _sidecar) = setup("deliver-hostile", &gh, json!({})).await;
    let canary = TempDir::new("deliver-canary");
    let c = |n: &str| canary.join(n).display().to_string();
    let description = format!(
        "Fix \"login\" $(touch {}) ; touch {} && `touch {}` | --force -rf ~ 'x'",
        c("one"),
        c("two"),
        c("three")
    );
    let task_id = s.hub.submit_task(TaskSpec {
        description: description.clone(),
        repo: Some(origin.url()),
        verification_steps: vec![
            file_exists("NOTES.md"),
            file_exists(&format!("$(touch {})", c("four"))),
        ],
        skip_verification: true,
        ..TaskSpec::default()
    });
    s.wait_status(&task_id, "completed", Duration::from_secs(30))
        .await;
    let task = s.hub.task_json(&task_id).unwrap();
    let branch = task["result"]["branch"].as_str().expect("delivered").to_owned();
    assert!(
        branch
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'/'),
        "{branch}"
    );
    assert!(origin.has_branch(&branch));
    // The title arrived intact as one argument; nothing ran.
    let args = gh.args(1);
    assert!(
        args.iter()
            .any(|a| *a == format!("{}...", &description[..57]) || *a == description),
        "{args:?}"
    );
    assert_eq!(
        std::fs::read_dir(canary.path()).unwrap().count(),
        0,
        "a canary was created"
    );
    let subject = origin.git(&["log", "-1", "--format=%s", &branch]);
    assert_eq!(
        subject.trim_end(),
        description.chars().take(72).collect::<String>()
    );
}
