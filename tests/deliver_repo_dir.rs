//! Delivery from `repo_dir` (the Node key: the user's own clone) on the real binary (issue 11,
//! protocol §11.9): the task's branch is started there, the agent's commits and what it left
//! uncommitted are pushed; a user's uncommitted work is never committed nor pushed; a task whose
//! check fails keeps its work as a local commit on its branch, so the next task starts from a
//! clean tree; a branch left by an earlier task with the same description is not taken for the
//! new task's.
#![cfg(unix)]

mod support;

use agentcom_sidecar::hub::TaskSpec;
use std::time::Duration;
use support::deliver::*;
use support::*;

/// An agent in `repo_dir`: records the branch it finds checked out, commits COMMITTED.md
/// itself, leaves UNCOMMITTED.md for the sidecar, and reports success.
const REPO_DIR_AGENT_SH: &str = r#"#!/bin/sh
ws="$AGENTCOM_WORKSPACE"
git -C "$ws" rev-parse --abbrev-ref HEAD > "$AGENTCOM_RESULTS_DIR/../branch-$AGENTCOM_TASK_ID"
: > "$AGENTCOM_STARTED_FILE"
printf 'committed by the agent\n' > "$ws/COMMITTED.md"
git -C "$ws" add COMMITTED.md
git -C "$ws" commit --quiet -m "The agent's own commit"
printf 'left for the sidecar\n' > "$ws/UNCOMMITTED.md"
printf '{"status":"success","output":"two files"}' > "$AGENTCOM_RESULT_FILE.tmp"
mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_in_repo_dir_works_on_its_branch_and_delivers_both_commits() {
    let RepoDirSidecar {
        origin,
        clone,
        gh,
        s,
        sidecar: _sidecar,
    } = RepoDirSidecar::start("deliver-repodir", REPO_DIR_AGENT_SH).await;
    let task_id = s.hub.submit_task(TaskSpec {
        description: "Document the release".into(),
        verification_steps: vec![file_exists("COMMITTED.md")],
        ..TaskSpec::default()
    });
    let task = completed(&s, &task_id).await;
    let branch = "deliver-repodir/document-the-release";
    // The agent found the task's branch checked out in repo_dir when it started.
    let seen = std::fs::read_to_string(s.dir.join(format!("branch-{task_id}"))).unwrap();
    assert_eq!(seen.trim_end(), branch);
    // Both files are on the pushed branch: the agent's commit, then the sidecar's.
    assert_eq!(task["result"]["branch"], branch, "{task:#}");
    assert_eq!(task["result"]["pr_url"], FakeGh::URL, "{task:#}");
    assert!(origin.has_branch(branch));
    assert_eq!(
        origin.git(&["show", &format!("{branch}:COMMITTED.md")]),
        "committed by the agent\n"
    );
    assert_eq!(
        origin.git(&["show", &format!("{branch}:UNCOMMITTED.md")]),
        "left for the sidecar\n"
    );
    let log = origin.git(&["log", "--format=%s", &format!("main..{branch}")]);
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["Document the release", "The agent's own commit"],
        "{log}"
    );
    assert_eq!(gh.pr_runs("create").len(), 1);
    let args = gh.args(1);
    assert_eq!(
        &args[..6],
        ["pr", "create", "--base", "main", "--head", branch],
        "{args:?}"
    );
    assert_eq!(gh.cwd(1).as_deref(), Some(clone.as_path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_work_of_the_user_in_repo_dir_is_never_pushed() {
    let RepoDirSidecar {
        origin,
        clone,
        gh,
        s,
        sidecar,
    } = RepoDirSidecar::start("deliver-dirty", REPO_DIR_AGENT_SH).await;
    std::fs::write(clone.join("PRIVATE.md"), "the user's own draft\n").unwrap();
    let task_id = s.hub.submit_task(TaskSpec {
        description: "Document the release".into(),
        ..TaskSpec::default()
    });
    // The task is worked on and completes; the branch could not be started (the tree was
    // dirty), so nothing is committed nor pushed: the result says why.
    let task = completed(&s, &task_id).await;
    let delivery = &task["result"]["delivery"];
    assert_eq!(delivery["status"], "withheld", "{task:#}");
    let reason = delivery["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("was not started"), "{reason}");
    assert!(task["result"].get("pr_url").is_none(), "{task:#}");
    let branches = origin.git(&["for-each-ref", "--format=%(refname)", "refs/heads"]);
    assert_eq!(branches.trim_end(), "refs/heads/main", "{branches}");
    assert_eq!(
        origin.git(&["log", "--all", "--format=%H", "--", "PRIVATE.md"]),
        ""
    );
    assert_eq!(gh.calls(), 0);
    // The user's draft is where it was, still uncommitted; the log said why at accept.
    let status = git_in(&clone, &["status", "--porcelain", "--", "PRIVATE.md"]);
    assert_eq!(status.trim_end(), "?? PRIVATE.md");
    let warning = sidecar
        .wait_log_event("prepare_warning", Duration::from_secs(5))
        .await
        .expect("a prepare_warning");
    assert!(
        warning["warning"]
            .as_str()
            .is_some_and(|w| w.contains("PRIVATE.md")),
        "{warning}"
    );
}

/// An agent in `repo_dir` that writes the file named by its task's first word (`DRAFT.md` for
/// "DRAFT the notes") and reports success, or failure for a task whose first word is BROKEN.
const NAMED_FILE_AGENT_SH: &str = r#"#!/bin/sh
ws="$AGENTCOM_WORKSPACE"
: > "$AGENTCOM_STARTED_FILE"
name=$(sed -n 's/.*"description": *"\([A-Z]*\) .*/\1/p' "$AGENTCOM_TASK_FILE" | head -n 1)
printf 'written for the task\n' > "$ws/$name.md"
status=success
[ "$name" = BROKEN ] && status=failed
printf '{"status":"%s","output":"ok"}' "$status" > "$AGENTCOM_RESULT_FILE.tmp"
mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withheld_work_is_kept_as_a_local_commit_and_a_stale_branch_is_not_taken() {
    let RepoDirSidecar {
        origin,
        clone,
        gh,
        s,
        sidecar: _sidecar,
    } = RepoDirSidecar::start("deliver-keep", NAMED_FILE_AGENT_SH).await;
    let submit = |description: &str, must_exist: &str| {
        s.hub.submit_task(TaskSpec {
            description: description.into(),
            verification_steps: vec![file_exists(must_exist)],
            ..TaskSpec::default()
        })
    };

    // 1. The check fails: nothing is pushed, the work is kept as a commit on the local branch.
    let first = submit("DRAFT the notes", "MISSING.md");
    let task = completed(&s, &first).await;
    let delivery = &task["result"]["delivery"];
    assert_eq!(delivery["status"], "withheld", "{task:#}");
    let reason = delivery["reason"].as_str().unwrap_or_default();
    let kept = "deliver-keep/draft-the-notes";
    assert!(
        reason.contains(&format!("on the local branch {kept}")),
        "{reason}"
    );
    assert!(!origin.has_branch(kept));
    assert_eq!(git_in(&clone, &["status", "--porcelain"]), "", "a clean tree");
    assert_eq!(
        git_in(&clone, &["show", &format!("{kept}:DRAFT.md")]),
        "written for the task\n"
    );
    let message = git_in(&clone, &["log", "-1", "--format=%B", kept]);
    assert!(
        message.contains(&format!("Task: {first}")) && message.contains("Not pushed: verification"),
        "{message}"
    );

    // 2. The next task starts from that clean tree and is delivered: only its own file.
    let second = submit("FINAL notes", "FINAL.md");
    let task = completed(&s, &second).await;
    let branch = "deliver-keep/final-notes";
    assert_eq!(task["result"]["delivery"]["status"], "pr_opened", "{task:#}");
    let files = origin.git(&["ls-tree", "--name-only", branch]);
    assert_eq!(
        files.lines().collect::<Vec<_>>(),
        ["FINAL.md", "README.md"],
        "{files}"
    );
    let delivered = origin.git(&["rev-parse", branch]);

    // 3. The user edits the clone, still on that branch; a task with the same description
    // comes: the branch of that name is the earlier task's, and the user's file is not the
    // task's work. Nothing is committed nor pushed, and the user's file stays untracked.
    std::fs::write(clone.join("PRIVATE.md"), "the user's own draft\n").unwrap();
    let third = submit("FINAL notes", "FINAL.md");
    let task = completed(&s, &third).await;
    let delivery = &task["result"]["delivery"];
    assert_eq!(delivery["status"], "withheld", "{task:#}");
    let reason = delivery["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("was not started for this task"), "{reason}");
    assert_eq!(
        origin.git(&["rev-parse", branch]),
        delivered,
        "the branch is untouched"
    );
    assert_eq!(
        git_in(&clone, &["log", "--all", "--format=%H", "--", "PRIVATE.md"]),
        ""
    );
    assert_eq!(
        git_in(&clone, &["status", "--porcelain", "--", "PRIVATE.md"]).trim_end(),
        "?? PRIVATE.md"
    );
    assert_eq!(gh.pr_runs("create").len(), 1);
}

/// A task that fails leaves its partial work in `repo_dir`: once the task is over, the work is
/// kept as a local commit on its branch (never pushed), and the next task starts from a clean
/// tree and is delivered with only its own work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_tasks_leftovers_are_kept_on_its_branch_and_the_next_task_starts_clean() {
    let RepoDirSidecar {
        origin,
        clone,
        gh,
        s,
        sidecar,
    } = RepoDirSidecar::start("deliver-left", NAMED_FILE_AGENT_SH).await;
    let failing = s.hub.submit_task(TaskSpec {
        description: "BROKEN attempt".into(),
        max_retries: 1,
        ..TaskSpec::default()
    });
    s.wait_status(&failing, "dead_letter", Duration::from_secs(30))
        .await;
    let kept = "deliver-left/broken-attempt";
    let event = poll(
        Duration::from_secs(10),
        || format!("no delivery event for {failing}: {:?}", sidecar.log_events()),
        || {
            sidecar
                .log_events()
                .into_iter()
                .find(|e| e["event"] == "delivery" && e["task_id"] == failing.as_str())
        },
    )
    .await;
    let reason = event["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(&format!("on the local branch {kept}")), "{event}");
    assert_eq!(git_in(&clone, &["status", "--porcelain"]), "", "a clean tree");
    assert_eq!(
        git_in(&clone, &["show", &format!("{kept}:BROKEN.md")]),
        "written for the task\n"
    );
    let message = git_in(&clone, &["log", "-1", "--format=%B", kept]);
    assert!(
        message.starts_with(&format!("Work left by task {failing}")),
        "{message}"
    );
    assert!(!origin.has_branch(kept));

    let next = s.hub.submit_task(TaskSpec {
        description: "FINAL notes".into(),
        verification_steps: vec![file_exists("FINAL.md")],
        ..TaskSpec::default()
    });
    let task = completed(&s, &next).await;
    assert_eq!(task["result"]["delivery"]["status"], "pr_opened", "{task:#}");
    let branch = "deliver-left/final-notes";
    let files = origin.git(&["ls-tree", "--name-only", branch]);
    assert_eq!(
        files.lines().collect::<Vec<_>>(),
        ["FINAL.md", "README.md"],
        "{files}"
    );
    assert!(
        !sidecar
            .log_events()
            .iter()
            .any(|e| e["event"] == "prepare_warning"),
        "the next task found a clean tree"
    );
    assert_eq!(gh.pr_runs("create").len(), 1);
}
