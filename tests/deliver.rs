//! Verification and delivery on the real binary (issue 11, protocol §11.8-§11.9): a task with a
//! `repo` is worked on in a workspace cloned from a bare repository (`origin`), verified, and
//! delivered as a pushed branch and a pull request (a fake `gh` records its arguments); a failing
//! check withholds the push; a hanging check is killed at its timeout while the link stays up;
//! a hostile description creates nothing and runs nothing. Also: a direct execution (the fake
//! Ollama) retried with corrective prompts while its check fails;
//! an agent that changes nothing; the agent's own report kept in the history; a restart while
//! `gh` hangs; a task's own base branch; a reused, cleaned workspace; a cancel while `gh` hangs.
//! `repo_dir` delivery on the wake path is in tests/deliver_repo_dir.rs.
#![cfg(unix)]

mod support;

use agentcom_sidecar::exec::fake_ollama::{Chat, FakeOllama};
use agentcom_sidecar::hub::TaskSpec;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use support::deliver::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_with_a_repo_ends_as_a_pushed_branch_and_a_pull_request() {
    let origin = GitOrigin::new("deliver-origin");
    let gh = FakeGh::new("deliver-gh");
    let (s, _sidecar) = setup("deliver-agent", &gh, json!({"reviewer": "octocat"})).await;
    let task_id = s.hub.submit_task(TaskSpec {
        success_criteria: vec![json!("NOTES.md exists")],
        ..repo_task(&origin, "Add notes for the team", vec![file_exists("NOTES.md")])
    });
    let task = completed(&s, &task_id).await;
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
    // gh opened the pull request against main, from the branch, with the reviewer and labels.
    assert_eq!(gh.pr_runs("create"), [1]);
    let args = gh.args(1);
    assert_eq!(
        &args[..6],
        ["pr", "create", "--base", "main", "--head", &branch],
        "{args:?}"
    );
    assert!(args.contains(&"--title".to_owned()) || args.iter().any(|a| a.starts_with("--title")));
    assert!(args.contains(&"Add notes for the team".to_owned()), "{args:?}");
    assert!(args.contains(&"octocat".to_owned()), "{args:?}");
    assert!(
        args.contains(&"--label=agent:deliver-agent".to_owned()),
        "{args:?}"
    );
    assert!(args.contains(&"--label=priority:normal".to_owned()), "{args:?}");
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
    let tier = result["risk_classification"]["tier"].as_u64().expect("a tier");
    assert!(
        !result["risk_classification"]["reasons"]
            .to_string()
            .contains("unavailable"),
        "{result:#}"
    );
    // The hub's tier became the pull request's risk label, after the classification.
    let risk = format!("risk:tier-{tier}");
    assert_eq!(gh.pr_runs("edit"), [2]);
    assert_eq!(
        gh.args(2),
        ["pr", "edit", FakeGh::URL, &format!("--add-label={risk}")]
    );
    assert_eq!(
        result["delivery"]["labels"],
        json!(["agent:deliver-agent", "priority:normal", risk]),
        "{result:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_check_withholds_the_push_and_the_report_reaches_the_hub() {
    let origin = GitOrigin::new("deliver-fail-origin");
    let gh = FakeGh::new("deliver-fail-gh");
    let (s, _sidecar) = setup("deliver-fail", &gh, json!({})).await;
    let task_id = s.hub.submit_task(repo_task(
        &origin,
        "Write the changelog",
        vec![file_exists("NOTES.md"), file_exists("CHANGELOG.md")],
    ));
    // It still completes (the hub's dashboard shows the verdict); only delivery is withheld.
    let task = completed(&s, &task_id).await;
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
    let task = completed(&s, &task_id).await;
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

/// The user message of each chat request the fake Ollama got, in order.
fn user_prompts(fake: &FakeOllama) -> Vec<String> {
    fake.received()
        .into_iter()
        .filter(|r| r.path == "/api/chat")
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            let messages = body["messages"].as_array().cloned().unwrap_or_default();
            let user = messages
                .iter()
                .rev()
                .find(|m| m["role"] == "user")
                .unwrap_or_else(|| panic!("no user message in {body}"));
            user["content"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// [`with_ollama`] with the hub's rate limits off.
async fn with_ollama_unlimited(agent: &str) -> (HubSetup, FakeOllama, Sidecar) {
    let (w, fake, sidecar) = with_ollama(agent, json!({})).await;
    w.hub.set_rate_limits(false);
    (w, fake, sidecar)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_execution_whose_check_keeps_failing_is_retried_with_corrective_prompts() {
    let (w, fake, _sidecar) = with_ollama_unlimited("deliver-retry").await;
    // A model that takes its time (0.9 s an answer), as real ones do: the progress frames of
    // one run go out while it streams, not merged at its end.
    fake.set_default_chat(Chat::Answer {
        tokens: vec!["Done".into(), " at".into(), " last.".into()],
        delay: Duration::from_millis(300),
        prompt_eval_count: 7,
        eval_count: 3,
    });
    let task_id = w.hub.submit_task(TaskSpec {
        description: "Write the quarterly report".into(),
        complexity_tier: Some("standard".into()),
        verification_steps: vec![file_exists("NOBODY-WRITES-THIS.md")],
        max_verification_retries: Some(2),
        max_retries: 1,
        ..TaskSpec::default()
    });
    w.wait_status(&task_id, "completed", Duration::from_secs(30))
        .await;
    // Three executions: the task, then two corrective prompts naming the failed check.
    let prompts = user_prompts(&fake);
    assert_eq!(prompts.len(), 3, "{prompts:#?}");
    assert_eq!(prompts[0], "Write the quarterly report");
    for (i, prompt) in prompts[1..].iter().enumerate() {
        let head = format!("VERIFICATION RETRY {}/2", i + 1);
        assert!(prompt.starts_with(&head), "{prompt}");
        assert!(
            prompt.contains("- file_exists (NOBODY-WRITES-THIS.md): FAIL"),
            "{prompt}"
        );
        assert!(prompt.contains("Write the quarterly report"), "{prompt}");
    }
    // The hub holds every report, the last at the top level; the result says it stayed failing.
    let task = w.hub.task_json(&task_id).unwrap();
    let history = task["verification_history"].as_array().expect("a history");
    let runs: Vec<&Value> = history.iter().map(|r| &r["run_number"]).collect();
    assert_eq!(runs, [&json!(1), &json!(2), &json!(3)], "{task:#}");
    assert!(history.iter().all(|r| r["status"] == "fail"), "{task:#}");
    // `started_at` in epoch milliseconds, as the hub's stored reports have it.
    assert!(
        history
            .iter()
            .all(|r| r["started_at"].as_u64() > Some(1_000_000_000_000)),
        "{task:#}"
    );
    assert_eq!(task["verification_report"]["run_number"], 3, "{task:#}");
    assert_eq!(task["verification_report"]["status"], "fail");
    let result = &task["result"];
    assert_eq!(result["verification_status"], "partial_pass", "{result:#}");
    assert_eq!(result["verification_attempts"], 3, "{result:#}");
    assert!(result.get("verification_history").is_none(), "{result:#}");
    assert_eq!(task["status"], "completed");
    assert!(w.sent_of_type("task_failed").is_empty());
    // The dashboard was told of each retry while it ran (a status event between the runs).
    let progress: Vec<String> = w
        .sent_of_type("task_progress")
        .iter()
        .filter(|f| f["task_id"] == task_id.as_str())
        .map(|f| f["execution_event"].to_string())
        .collect();
    for retry in ["Verification retry 1/2", "Verification retry 2/2"] {
        assert!(progress.iter().any(|p| p.contains(retry)), "{progress:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_execution_with_a_repo_is_verified_in_its_workspace() {
    let origin = GitOrigin::new("deliver-direct-repo-origin");
    let (w, fake, _sidecar) = with_ollama_unlimited("deliver-direct-repo").await;
    let task_id = w.hub.submit_task(TaskSpec {
        description: "Explain the readme".into(),
        complexity_tier: Some("standard".into()),
        repo: Some(origin.url()),
        // Only in the clone of the repository, not in the sidecar's folder.
        verification_steps: vec![file_exists("README.md")],
        max_verification_retries: Some(2),
        max_retries: 1,
        ..TaskSpec::default()
    });
    w.wait_status(&task_id, "completed", Duration::from_secs(30))
        .await;
    assert!(!w.dir.join("README.md").exists());
    assert_eq!(
        user_prompts(&fake).len(),
        1,
        "retried: the check did not see the clone"
    );
    let task = w.hub.task_json(&task_id).unwrap();
    let result = &task["result"];
    assert_eq!(result["verification_status"], "verified", "{task:#}");
    assert_eq!(result["verification_attempts"], 1, "{task:#}");
    assert_eq!(task["verification_report"]["checks"][0]["status"], "pass");
    // The model wrote nothing into the clone: nothing to push.
    assert_eq!(result["delivery"]["status"], "nothing", "{task:#}");
    let branches = origin.git(&["for-each-ref", "--format=%(refname)", "refs/heads"]);
    assert_eq!(branches.trim_end(), "refs/heads/main", "{branches}");
    assert!(w.dir.join("workspaces").is_dir(), "no workspace was made");
}

/// An agent that changes nothing: it only reports success.
const IDLE_AGENT_SH: &str = r#"#!/bin/sh
: > "$AGENTCOM_STARTED_FILE"
printf '{"status":"success","output":"nothing to do"}' > "$AGENTCOM_RESULT_FILE.tmp"
mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_changes_nothing_completes_without_a_branch_or_a_pull_request() {
    let origin = GitOrigin::new("deliver-idle-origin");
    let gh = FakeGh::new("deliver-idle-gh");
    let (s, _sidecar) = setup_script("deliver-idle", IDLE_AGENT_SH, &gh, json!({})).await;
    let task_id = s
        .hub
        .submit_task(repo_task(&origin, "Check that all is fine", vec![]));
    let task = completed(&s, &task_id).await;
    let result = &task["result"];
    assert_eq!(result["delivery"]["status"], "nothing", "{task:#}");
    assert!(result.get("pr_url").is_none(), "{result:#}");
    assert!(result.get("branch").is_none(), "{result:#}");
    let branches = origin.git(&["for-each-ref", "--format=%(refname)", "refs/heads"]);
    assert_eq!(branches.trim_end(), "refs/heads/main", "{branches}");
    assert_eq!(gh.calls(), 0);
}

/// An agent that writes NOTES.md in its workspace and reports success with a verification
/// report of its own (run 1, a failing check it then fixed).
const SELF_VERIFYING_AGENT_SH: &str = r#"#!/bin/sh
ws="$AGENTCOM_WORKSPACE"
: > "$AGENTCOM_STARTED_FILE"
printf 'notes\n' > "$ws/NOTES.md"
cat > "$AGENTCOM_RESULT_FILE.tmp" <<JSON
{"status":"success","output":"wrote NOTES.md","verification_report":{"task_id":"$AGENTCOM_TASK_ID","run_number":1,"status":"fail","started_at":1,"duration_ms":5,"timeout_ms":1000,"checks":[{"type":"test_passes","target":"make test","description":null,"status":"fail","output":"agent's own run","duration_ms":5}],"summary":{"total":1,"passed":0,"failed":1,"errors":0,"timed_out":0}}}
JSON
mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_own_report_is_lifted_into_the_history_before_the_sidecars_run() {
    let origin = GitOrigin::new("deliver-own-origin");
    let gh = FakeGh::new("deliver-own-gh");
    let (s, _sidecar) = setup_script("deliver-own", SELF_VERIFYING_AGENT_SH, &gh, json!({})).await;
    let task_id = s
        .hub
        .submit_task(repo_task(&origin, "Take notes", vec![file_exists("NOTES.md")]));
    let task = completed(&s, &task_id).await;
    let history = task["verification_history"].as_array().expect("a history");
    assert_eq!(history.len(), 2, "{task:#}");
    // The agent's report, verbatim, first.
    assert_eq!(history[0]["status"], "fail", "{task:#}");
    assert_eq!(history[0]["checks"][0]["output"], "agent's own run");
    assert_eq!(history[0]["run_number"], 1);
    // The sidecar's own run last, numbered after the agent's, and at the top level.
    assert_eq!(history[1]["status"], "pass", "{task:#}");
    assert_eq!(history[1]["checks"][0]["target"], "NOTES.md");
    assert_eq!(history[1]["run_number"], 2, "{task:#}");
    assert_eq!(task["verification_report"], history[1]);
    // Lifted out of the result, not left inside it.
    let result = &task["result"];
    assert!(result.get("verification_report").is_none(), "{result:#}");
    assert!(result.get("verification_history").is_none(), "{result:#}");
    assert_eq!(result["verification_status"], "verified", "{result:#}");
    assert_eq!(result["pr_url"], FakeGh::URL, "{result:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_gh_hangs_delivers_the_task_once_with_its_pull_request() {
    let origin = GitOrigin::new("deliver-restart-origin");
    let gh = FakeGh::new("deliver-restart-gh");
    gh.set(FakeGhScenario::Hang);
    let (mut s, mut sidecar) = setup("deliver-restart", &gh, json!({})).await;
    let task_id = s.hub.submit_task(repo_task(
        &origin,
        "Add notes for the team",
        vec![file_exists("NOTES.md")],
    ));
    // The branch is pushed; gh hangs on `pr create`: the sidecar dies right there.
    let hung = poll(
        Duration::from_secs(30),
        || format!("gh never ran: {:?}", s.hub.task(&task_id)),
        || gh.child_pid(),
    )
    .await;
    let branch = "deliver-restart/add-notes-for-the-team";
    assert!(origin.has_branch(branch));
    sidecar.kill_hard().await;
    // The pull request was in fact made: gh now says so, and `pr view` gives its URL.
    gh.set(FakeGhScenario::AlreadyExists);
    let _ = std::process::Command::new("kill").arg(hung.to_string()).status();
    let _sidecar = s.spawn();
    s.identified().await;
    let task = completed(&s, &task_id).await;
    assert_eq!(task["result"]["pr_url"], FakeGh::URL, "{task:#}");
    assert_eq!(task["result"]["branch"], branch, "{task:#}");
    // One commit on the branch (not a second one on top), one task_complete.
    let count = origin.git(&["rev-list", "--count", &format!("main..{branch}")]);
    assert_eq!(count.trim(), "1", "{count}");
    let completes: Vec<Value> = s
        .sent_of_type("task_complete")
        .into_iter()
        .filter(|f| f["task_id"] == task_id.as_str())
        .collect();
    assert_eq!(completes.len(), 1, "{completes:#?}");
    // gh: the hung create, a create that found the pull request, `pr view`, then the risk
    // label on the pull request found.
    let calls: Vec<Vec<String>> = (1..=gh.calls()).map(|n| gh.args(n)).collect();
    let subcommands: Vec<&str> = calls.iter().map(|c| c[1].as_str()).collect();
    assert_eq!(subcommands, ["create", "create", "view", "edit"], "{calls:?}");
    assert_eq!(calls[3][2], FakeGh::URL, "{calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_naming_a_branch_starts_from_it_and_asks_to_merge_into_it() {
    let origin = GitOrigin::new("deliver-base-origin");
    origin.push_file("develop", "DEVELOP.md", "only on develop\n");
    let gh = FakeGh::new("deliver-base-gh");
    let (s, _sidecar) = setup("deliver-base", &gh, json!({})).await;
    let task_id = s.hub.submit_task(TaskSpec {
        branch: Some("develop".into()),
        ..repo_task(
            &origin,
            "Add notes on develop",
            vec![file_exists("DEVELOP.md"), file_exists("NOTES.md")],
        )
    });
    let task = completed(&s, &task_id).await;
    let branch = "deliver-base/add-notes-on-develop";
    assert_eq!(task["result"]["branch"], branch, "{task:#}");
    assert_eq!(task["verification_report"]["status"], "pass", "{task:#}");
    // Built on develop: one commit above it, none of main's own.
    let above = origin.git(&["rev-list", "--count", &format!("develop..{branch}")]);
    assert_eq!(above.trim(), "1");
    assert_eq!(
        origin.git(&["show", &format!("{branch}:DEVELOP.md")]),
        "only on develop\n"
    );
    let args = gh.args(1);
    assert_eq!(
        &args[..6],
        ["pr", "create", "--base", "develop", "--head", branch],
        "{args:?}"
    );
}

/// An agent that writes NOTES.md and, for the task described "First", LEFTOVER.md too.
const TWO_TASKS_AGENT_SH: &str = r#"#!/bin/sh
ws="$AGENTCOM_WORKSPACE"
: > "$AGENTCOM_STARTED_FILE"
printf 'notes\n' > "$ws/NOTES.md"
grep -q '"First try"' "$AGENTCOM_TASK_FILE" && printf 'left\n' > "$ws/LEFTOVER.md"
printf '{"status":"success","output":"ok"}' > "$AGENTCOM_RESULT_FILE.tmp"
mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_task_on_the_same_repo_starts_from_a_clean_workspace() {
    let origin = GitOrigin::new("deliver-reuse-origin");
    let gh = FakeGh::new("deliver-reuse-gh");
    let (s, _sidecar) = setup_script("deliver-reuse", TWO_TASKS_AGENT_SH, &gh, json!({})).await;
    // The first task's check fails: its files are kept as a local commit in the workspace.
    let first = s
        .hub
        .submit_task(repo_task(&origin, "First try", vec![file_exists("MISSING.md")]));
    let task = completed(&s, &first).await;
    assert_eq!(task["result"]["delivery"]["status"], "withheld", "{task:#}");
    let leftovers: Vec<_> = std::fs::read_dir(s.dir.join("workspaces"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("LEFTOVER.md").exists())
        .collect();
    assert_eq!(leftovers.len(), 1, "the first task left nothing behind");
    let second = s
        .hub
        .submit_task(repo_task(&origin, "Second try", vec![file_exists("NOTES.md")]));
    let task = completed(&s, &second).await;
    let branch = "deliver-reuse/second-try";
    assert_eq!(task["result"]["branch"], branch, "{task:#}");
    // The same clone was used again, cleaned: the first task's leftover is not delivered.
    let workspaces: Vec<_> = std::fs::read_dir(s.dir.join("workspaces"))
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(workspaces.len(), 1, "{workspaces:?}");
    let files = origin.git(&["ls-tree", "--name-only", branch]);
    assert_eq!(
        files.lines().collect::<Vec<_>>(),
        ["NOTES.md", "README.md"],
        "{files}"
    );
    assert!(!origin.has_branch("deliver-reuse/first-try"));
    assert_eq!(gh.pr_runs("create").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_gh_hangs_kills_gh_and_sends_no_outcome() {
    let origin = GitOrigin::new("deliver-cancel-origin");
    let gh = FakeGh::new("deliver-cancel-gh");
    gh.set(FakeGhScenario::Hang);
    let (s, _sidecar) = setup("deliver-cancel", &gh, json!({})).await;
    let task_id = s
        .hub
        .submit_task(repo_task(&origin, "Add notes for the team", vec![]));
    let hung = poll(
        Duration::from_secs(30),
        || format!("gh never ran: {:?}", s.hub.task(&task_id)),
        || gh.child_pid(),
    )
    .await;
    assert!(s.hub.cancel_task(&task_id).await);
    // gh is stopped with its process group, and the sidecar lets the task go.
    poll(
        Duration::from_secs(10),
        || format!("gh's child {hung} still runs after the cancel"),
        || process_gone(hung).then_some(()),
    )
    .await;
    s.wait_queue_empty(Duration::from_secs(10)).await;
    assert!(s
        .sent_of_type("task_complete")
        .iter()
        .all(|f| f["task_id"] != task_id.as_str()));
    assert!(s
        .sent_of_type("task_failed")
        .iter()
        .all(|f| f["task_id"] != task_id.as_str()));
}
