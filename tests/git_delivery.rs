//! Workspaces and git delivery (issue 11, protocol §11.9) against a local bare `origin` and a
//! fake `gh`: what ends up in origin's branches, the argv gh receives, the files left behind.
#![cfg(unix)]

mod support;

use agentcom_sidecar::deliver::git::{git, GitError};
use agentcom_sidecar::deliver::pr::{
    add_label, branch_name, commit_and_push, default_branch, open_pr, open_pr_within, risk_label,
    start_branch, task_labels, Delivery, Pushed,
};
use agentcom_sidecar::deliver::workspace::{prepare, prepare_within, workspace_path};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{git_in, poll, process_gone, FakeGh, FakeGhScenario, GitOrigin, TempDir};

/// A description full of shell syntax, short enough to be the PR title unchanged.
const HOSTILE: &str = "Fix \"it\" $(touch pwned) && `touch pwned2`; 'q' $HOME";

fn delivery(repo: &Path, branch: &str, description: &str, gh: &FakeGh) -> Delivery {
    Delivery {
        repo: repo.to_path_buf(),
        branch: branch.to_owned(),
        base_branch: "main".to_owned(),
        task_id: "task-42".to_owned(),
        agent_id: "gcu-sleeper-service".to_owned(),
        description: description.to_owned(),
        success_criteria: vec!["a file `hello.txt` $(exists)".to_owned()],
        verification_summary: "pass: 1 of 1 checks passed".to_owned(),
        task_link: Some("http://127.0.0.1:4000/api/tasks/task-42".to_owned()),
        gh_command: gh.command(),
        reviewer: None,
        labels: task_labels("gcu-sleeper-service", Some("high")),
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn head_of(repo: &Path, rev: &str) -> String {
    git_in(repo, &["rev-parse", rev]).trim().to_owned()
}

#[tokio::test]
async fn a_workspace_is_cloned_once_then_fetched_and_reset() {
    let origin = GitOrigin::new("ws-reuse");
    let ws = TempDir::new("ws-reuse-workspaces");
    let first = prepare(ws.path(), &origin.url()).await.unwrap();
    assert_eq!(first.dir, workspace_path(ws.path(), &origin.url()));
    assert_eq!(first.warning, None);
    assert_eq!(
        std::fs::read_to_string(first.dir.join("README.md")).unwrap(),
        "seed\n"
    );
    assert_eq!(
        entries(ws.path()).len(),
        1,
        "only the workspace: {:?}",
        entries(ws.path())
    );

    // The last task left things behind; origin moved on meanwhile.
    std::fs::write(first.dir.join("README.md"), "changed by the last task\n").unwrap();
    std::fs::write(first.dir.join("junk.txt"), "left over\n").unwrap();
    git_in(&first.dir, &["checkout", "--quiet", "-b", "bot/last-task"]);
    origin.push_file("main", "second.txt", "new on origin\n");

    let second = prepare(ws.path(), &origin.url()).await.unwrap();
    assert_eq!(second.dir, first.dir);
    assert_eq!(second.warning, None);
    assert_eq!(
        std::fs::read_to_string(second.dir.join("second.txt")).unwrap(),
        "new on origin\n"
    );
    assert_eq!(
        std::fs::read_to_string(second.dir.join("README.md")).unwrap(),
        "seed\n"
    );
    assert!(!second.dir.join("junk.txt").exists());
    assert_eq!(
        git_in(&second.dir, &["symbolic-ref", "--short", "HEAD"]).trim(),
        "main"
    );
    assert_eq!(
        head_of(&second.dir, "HEAD"),
        origin.git(&["rev-parse", "main"]).trim()
    );
    assert_eq!(git_in(&second.dir, &["status", "--porcelain"]), "");

    // Origin gone: the checkout is kept as it was, with a warning.
    std::fs::rename(&origin.bare, origin.dir().join("moved.git")).unwrap();
    let third = prepare(ws.path(), &origin.url()).await.unwrap();
    let warning = third.warning.expect("a failed fetch warns");
    assert!(warning.contains("fetch_failed"), "{warning}");
    assert!(third.dir.join("second.txt").exists());
}

#[tokio::test]
async fn a_failed_clone_leaves_nothing_that_blocks_the_next() {
    let origin = GitOrigin::new("ws-fail");
    let ws = TempDir::new("ws-fail-workspaces");
    let missing = origin.dir().join("no-such-repo.git").display().to_string();
    let err = prepare(ws.path(), &missing).await.unwrap_err();
    assert_eq!(err.code, "clone_failed", "{err}");
    assert!(err.message.contains("no-such-repo.git"), "{err}");
    assert_eq!(entries(ws.path()), Vec::<String>::new());

    // A clone cut short by its timeout, and one a killed sidecar left half-way.
    let err = prepare_within(ws.path(), &origin.url(), Duration::from_millis(1))
        .await
        .unwrap_err();
    assert_eq!(err.code, "timeout", "{err}");
    assert_eq!(entries(ws.path()), Vec::<String>::new());
    let slug = workspace_path(ws.path(), &origin.url());
    let slug = slug.file_name().unwrap().to_string_lossy();
    let half = ws.join(format!(".{slug}.clone-1-deadbeef"));
    std::fs::create_dir_all(half.join("objects")).unwrap();

    let ok = prepare(ws.path(), &origin.url()).await.unwrap();
    assert!(ok.dir.join("README.md").exists());
    assert_eq!(entries(ws.path()), vec![slug.into_owned()]);

    // A folder someone else put there is not taken for a checkout, nor deleted.
    let other = "https://example.invalid/other/repo";
    std::fs::create_dir_all(workspace_path(ws.path(), other).join("notes")).unwrap();
    let err = prepare(ws.path(), other).await.unwrap_err();
    assert_eq!(err.code, "not_a_git_repo", "{err}");
    assert!(err.message.contains("move it away or delete it"), "{err}");
    assert!(workspace_path(ws.path(), other).join("notes").is_dir());
}

#[tokio::test]
async fn the_diff_counts_lines_and_finds_tests_for_classify() {
    let origin = GitOrigin::new("diff");
    let seed = origin.clone_as("seed2");
    std::fs::create_dir_all(seed.join("lib/app")).unwrap();
    std::fs::create_dir_all(seed.join("test/app")).unwrap();
    std::fs::write(seed.join("lib/app/router.ex"), "a\nb\nc\n").unwrap();
    std::fs::write(seed.join("test/app/router_test.exs"), "t\n").unwrap();
    std::fs::write(seed.join("old.txt"), "old\n").unwrap();
    GitOrigin::commit_all(&seed, "Elixir layout");
    git_in(&seed, &["push", "--quiet", "origin", "HEAD:refs/heads/main"]);

    let gh = FakeGh::new("diff-gh");
    let (repo, branch) = started(&origin, "Route better").await;
    std::fs::write(repo.join("lib/app/router.ex"), "a\nB\nc\nd\n").unwrap();
    std::fs::write(repo.join("logo.bin"), [0u8, 159, 146, 150, 0, 1]).unwrap();
    std::fs::remove_file(repo.join("old.txt")).unwrap();
    let d = delivery(&repo, &branch, "Route better", &gh);
    let Pushed::Branch { diff, .. } = commit_and_push(&d).await.unwrap() else {
        panic!("work must be pushed");
    };
    assert_eq!(
        diff.to_value(),
        serde_json::json!({"lines_added": 2, "lines_deleted": 2,
            "files_changed": ["lib/app/router.ex", "logo.bin", "old.txt"],
            "files_added": ["logo.bin"], "tests_exist": true})
    );
    assert_eq!(
        diff,
        agentcom_sidecar::deliver::pr::diff_meta(&repo, "main")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn an_ext_url_runs_nothing() {
    let canary_dir = TempDir::new("ext-canary");
    let canary = canary_dir.join("canary");
    let url = format!("ext::sh -c touch% {}", canary.display());
    let ws = TempDir::new("ext-workspaces");

    let err = prepare(ws.path(), &url).await.unwrap_err();
    assert_eq!(err.code, "clone_failed", "{err}");
    assert!(err.message.contains("transport 'ext' not allowed"), "{err}");
    // Even with the protocol allowed in git's config, the environment wins.
    let args = ["-c", "protocol.ext.allow=always", "clone", "--", &url, "x"];
    let err = git(ws.path(), &args, Duration::from_secs(30)).await.unwrap_err();
    assert!(err.message.contains("transport 'ext' not allowed"), "{err}");
    assert!(!canary.exists(), "the ext:: command ran");

    // The same clone run directly does run it: the check above can fail.
    let status = std::process::Command::new("git")
        .args(args)
        .current_dir(ws.path())
        .env_remove("GIT_ALLOW_PROTOCOL")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
    assert!(
        canary.exists(),
        "control: without GIT_ALLOW_PROTOCOL the ext:: command runs"
    );

    let err = prepare(ws.path(), "--upload-pack=touch /tmp/x")
        .await
        .unwrap_err();
    assert!(err.message.contains("cannot start with '-'"), "{err}");
}

/// A clone of origin standing for `repo_dir`, and the task's branch started in it.
async fn started(origin: &GitOrigin, description: &str) -> (PathBuf, String) {
    let repo = origin.clone_as("work");
    let branch = branch_name("gcu-sleeper-service", description);
    let s = start_branch(&repo, &branch, None).await.unwrap();
    assert_eq!(s.branch, branch);
    assert_eq!(s.base_branch, "main");
    assert!(
        origin.git(&["rev-parse", "main"]).starts_with(&s.base_commit),
        "{s:?}"
    );
    assert_eq!(s.warning, None);
    assert_eq!(git_in(&repo, &["symbolic-ref", "--short", "HEAD"]).trim(), branch);
    (repo, branch)
}

#[tokio::test]
async fn a_hostile_description_ends_as_an_intact_commit_and_pr_title() {
    let origin = GitOrigin::new("deliver");
    let gh = FakeGh::new("deliver-gh");
    let (repo, branch) = started(&origin, HOSTILE).await;
    assert_eq!(
        branch,
        "gcu-sleeper-service/fix-it-touch-pwned-touch-pwned2-q-home"
    );

    std::fs::write(repo.join("hello.txt"), "hello\n").unwrap();
    let mut d = delivery(&repo, &branch, HOSTILE, &gh);
    d.reviewer = Some("octocat".to_owned());
    // An absolute canary too, in hub text that only reaches the body.
    let canary = std::env::temp_dir().join(format!("agentcom-git-canary-{}", std::process::id()));
    let c = canary.display();
    d.success_criteria
        .push(format!("`touch {c}` $(touch {c}) | touch {c}"));
    let Pushed::Branch { head, diff, .. } = commit_and_push(&d).await.unwrap() else {
        panic!("a change must be pushed");
    };
    assert_eq!(origin.git(&["rev-parse", &branch]).trim(), head);
    let message = origin.git(&["log", "-1", "--format=%B", &branch]);
    assert_eq!(message.trim_end(), format!("{HOSTILE}\n\nTask: task-42"));
    assert_eq!(origin.git(&["show", &format!("{branch}:hello.txt")]), "hello\n");
    assert_eq!(diff.files_added, ["hello.txt"]);
    assert_eq!(diff.files_changed, ["hello.txt"]);
    assert_eq!(
        (diff.lines_added, diff.lines_deleted, diff.tests_exist),
        (1, 0, false)
    );

    let opened = open_pr(&d, &diff).await.unwrap();
    assert_eq!(opened.url, FakeGh::URL);
    assert_eq!(opened.labels, ["agent:gcu-sleeper-service", "priority:high"]);
    assert_eq!(opened.label_error, None);
    assert_eq!(gh.calls(), 1);
    let args = gh.args(1);
    assert_eq!(
        args[..8],
        [
            "pr",
            "create",
            "--base",
            "main",
            "--head",
            branch.as_str(),
            "--title",
            HOSTILE
        ]
    );
    assert!(args[8].starts_with("--body-file="), "{args:?}");
    assert_eq!(
        args[9..],
        [
            "--reviewer",
            "octocat",
            "--label=agent:gcu-sleeper-service",
            "--label=priority:high"
        ]
    );
    let body_file = PathBuf::from(args[8].trim_start_matches("--body-file="));
    assert!(
        !body_file.starts_with(&repo),
        "the body is written outside the repository"
    );
    assert!(!body_file.exists(), "the body file is removed afterwards");
    let body = gh.body(1).unwrap();
    assert!(body.contains(HOSTILE) && body.contains("task-42") && body.contains("`hello.txt` (new)"));
    assert_eq!(
        gh.cwd(1).unwrap().canonicalize().unwrap(),
        repo.canonicalize().unwrap()
    );
    assert_eq!(gh.prompt_disabled(1).as_deref(), Some("1"));

    // Nothing ran: no file from the description anywhere git or gh ran.
    for dir in [repo.as_path(), gh.dir(), origin.dir(), Path::new(".")] {
        for name in ["pwned", "pwned2"] {
            assert!(!dir.join(name).exists(), "{} appeared in {}", name, dir.display());
        }
    }
    assert!(!canary.exists(), "{c} appeared");
    assert!(body.contains(&format!("$(touch {c})")), "{body}");
    assert_eq!(git_in(&repo, &["status", "--porcelain", "--ignored"]), "");
}

#[tokio::test]
async fn nothing_changed_means_no_commit_and_no_push() {
    let origin = GitOrigin::new("nothing");
    let gh = FakeGh::new("nothing-gh");
    let (repo, branch) = started(&origin, "Look but do not touch").await;
    let before = head_of(&repo, "HEAD");
    let d = delivery(&repo, &branch, "Look but do not touch", &gh);
    assert_eq!(commit_and_push(&d).await.unwrap(), Pushed::Nothing);
    assert_eq!(head_of(&repo, "HEAD"), before);
    assert!(!origin.has_branch(&branch));
}

#[tokio::test]
async fn work_on_another_branch_and_the_agents_own_commits_are_delivered() {
    let origin = GitOrigin::new("moved");
    let gh = FakeGh::new("moved-gh");
    let (repo, branch) = started(&origin, "Add two files").await;
    // The agent commits one file itself, then wanders to main with another left uncommitted.
    std::fs::write(repo.join("one.txt"), "1\n").unwrap();
    GitOrigin::commit_all(&repo, "feat: one");
    git_in(&repo, &["checkout", "--quiet", "main"]);
    std::fs::write(repo.join("two.txt"), "2\n").unwrap();

    let d = delivery(&repo, &branch, "Add two files", &gh);
    let Pushed::Branch { diff, .. } = commit_and_push(&d).await.unwrap() else {
        panic!("work must be pushed");
    };
    assert_eq!(diff.files_added, ["one.txt", "two.txt"]);
    let subjects = origin.git(&["log", "--format=%s", &format!("main..{branch}")]);
    assert_eq!(subjects, "Add two files\nfeat: one\n");

    // Delivered again (after a restart): the push is repeated, the PR found.
    gh.set(FakeGhScenario::AlreadyExists);
    assert!(matches!(
        commit_and_push(&d).await.unwrap(),
        Pushed::Branch { .. }
    ));
    assert_eq!(open_pr(&d, &diff).await.unwrap().url, FakeGh::URL);
    assert_eq!(
        gh.args(2),
        ["pr", "view", branch.as_str(), "--json", "url", "--jq", ".url"]
    );
}

/// Two tasks with the same description share a branch name: the second is pushed beside the
/// first (its name plus the task id's end) instead of replacing the first's work; each
/// delivered again (after a restart) goes where it went the first time, and a task run again
/// from the start replaces only its own earlier push.
#[tokio::test]
async fn a_second_task_with_the_same_description_does_not_replace_the_first() {
    let origin = GitOrigin::new("twins");
    let gh = FakeGh::new("twins-gh");
    let (repo, branch) = started(&origin, "Write the changelog").await;
    std::fs::write(repo.join("CHANGELOG.md"), "first\n").unwrap();
    let first = delivery(&repo, &branch, "Write the changelog", &gh);
    let Pushed::Branch {
        branch: pushed,
        head: first_head,
        ..
    } = commit_and_push(&first).await.unwrap()
    else {
        panic!("the first task's work must be pushed");
    };
    assert_eq!(pushed, branch);

    // The second task with the same description starts again from main in the same repo_dir.
    let again = start_branch(&repo, &branch, None).await.unwrap();
    assert_eq!(again.branch, branch);
    std::fs::write(repo.join("CHANGELOG.md"), "second\n").unwrap();
    let mut second = delivery(&repo, &branch, "Write the changelog", &gh);
    second.task_id = "task-7768415c60657e08".to_owned();
    let Pushed::Branch {
        branch: pushed,
        head: second_head,
        diff,
    } = commit_and_push(&second).await.unwrap()
    else {
        panic!("the second task's work must be pushed");
    };
    let beside = format!("{branch}-60657e08");
    assert_eq!(pushed, beside);
    assert_eq!(
        origin.git(&["rev-parse", &branch]).trim(),
        first_head,
        "the first task's branch is kept"
    );
    assert_eq!(origin.git(&["rev-parse", &beside]).trim(), second_head);
    assert_eq!(
        origin.git(&["show", &format!("{branch}:CHANGELOG.md")]),
        "first\n"
    );
    assert_eq!(
        origin.git(&["show", &format!("{beside}:CHANGELOG.md")]),
        "second\n"
    );

    // The pull request is for the branch as pushed.
    let pr = Delivery {
        branch: pushed,
        ..second.clone()
    };
    open_pr(&pr, &diff).await.unwrap();
    assert_eq!(gh.args(1)[4..6], ["--head", beside.as_str()]);

    // Delivered again after a restart: the same names, nothing replaced.
    let Pushed::Branch { branch: pushed, .. } = commit_and_push(&second).await.unwrap() else {
        panic!("the second delivery pushes again");
    };
    assert_eq!(pushed, beside);
    assert_eq!(origin.git(&["rev-parse", &branch]).trim(), first_head);

    // The first task run again from the start (the hub reassigned it): new work, the same id;
    // its own earlier push is replaced, under its own name.
    start_branch(&repo, &branch, None).await.unwrap();
    std::fs::write(repo.join("CHANGELOG.md"), "first, again\n").unwrap();
    let Pushed::Branch { branch: pushed, .. } = commit_and_push(&first).await.unwrap() else {
        panic!("the rerun is pushed");
    };
    assert_eq!(pushed, branch);
    assert_eq!(
        origin.git(&["show", &format!("{branch}:CHANGELOG.md")]),
        "first, again\n"
    );
    assert_eq!(
        origin.git(&["show", &format!("{beside}:CHANGELOG.md")]),
        "second\n"
    );
}

/// Labels missing on the repository are created when gh says so, then the pull request is
/// opened with them; the risk label is added afterwards the same way. A label gh cannot create
/// costs only the labels, never the pull request.
#[tokio::test]
async fn missing_labels_are_created_and_a_label_that_cannot_be_never_costs_the_pr() {
    let origin = GitOrigin::new("labels");
    let gh = FakeGh::new("labels-gh");
    gh.set(FakeGhScenario::LabelsMissing);
    let (repo, branch) = started(&origin, "Label me").await;
    std::fs::write(repo.join("hello.txt"), "hello\n").unwrap();
    let d = delivery(&repo, &branch, "Label me", &gh);
    let Pushed::Branch { diff, .. } = commit_and_push(&d).await.unwrap() else {
        panic!("a change must be pushed");
    };
    let opened = open_pr(&d, &diff).await.unwrap();
    assert_eq!(opened.url, FakeGh::URL);
    assert_eq!(opened.labels, ["agent:gcu-sleeper-service", "priority:high"]);
    assert_eq!(opened.label_error, None);
    // create (refused: no such label), label create x2, create again with the labels.
    assert_eq!(gh.pr_runs("create"), [1, 4]);
    assert_eq!(
        gh.created_labels(),
        ["agent:gcu-sleeper-service", "priority:high"]
    );
    assert_eq!(gh.args(2)[..3], ["label", "create", "agent:gcu-sleeper-service"]);
    assert!(gh.args(2)[3].starts_with("--color="), "{:?}", gh.args(2));
    assert!(gh.args(4).contains(&"--label=priority:high".to_owned()));

    let risk = risk_label(2).unwrap();
    add_label(&d, &opened.url, &risk, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(gh.pr_runs("edit"), [5, 7]);
    assert_eq!(
        gh.created_labels().last().map(String::as_str),
        Some("risk:tier-2")
    );

    // gh cannot create labels (no permission, say): the pull request is opened without them.
    let other = FakeGh::new("labels-denied-gh");
    other.set(FakeGhScenario::LabelsDenied);
    let mut denied = d.clone();
    denied.gh_command = other.command();
    let opened = open_pr(&denied, &diff).await.unwrap();
    assert_eq!(opened.url, FakeGh::URL);
    assert!(opened.labels.is_empty(), "{opened:?}");
    let why = opened.label_error.expect("the result says why");
    assert!(
        why.starts_with("opened without labels") && why.contains("HTTP 403"),
        "{why}"
    );
    let last = other.args(other.calls());
    assert_eq!(last[..2], ["pr", "create"]);
    assert!(!last.iter().any(|a| a.starts_with("--label")), "{last:?}");
}

#[tokio::test]
async fn without_a_git_identity_the_agent_signs() {
    let origin = GitOrigin::new("ident");
    let gh = FakeGh::new("ident-gh");
    let (repo, branch) = started(&origin, "Sign it").await;
    // Blank in the repository's config: what git would refuse to commit with.
    git_in(&repo, &["config", "user.name", ""]);
    git_in(&repo, &["config", "user.email", ""]);
    std::fs::write(repo.join("f.txt"), "f\n").unwrap();
    commit_and_push(&delivery(&repo, &branch, "Sign it", &gh))
        .await
        .unwrap();
    let author = origin.git(&["log", "-1", "--format=%an <%ae>", &branch]);
    assert_eq!(
        author.trim(),
        "gcu-sleeper-service <gcu-sleeper-service@agentcom.invalid>"
    );
}

#[tokio::test]
async fn branches_start_from_the_tasks_branch_and_refuse_a_dirty_tree() {
    let origin = GitOrigin::new("base");
    origin.push_file("release/1.x", "release.txt", "r\n");
    let repo = origin.clone_as("work");
    assert_eq!(default_branch(&repo).await.unwrap(), "main");

    let s = start_branch(&repo, "bot/fix", Some("release/1.x")).await.unwrap();
    assert_eq!(s.base_branch, "release/1.x");
    assert!(repo.join("release.txt").exists());

    let err = start_branch(&repo, "bot/other", Some("no-such-branch"))
        .await
        .unwrap_err();
    assert_eq!(err.code, "base_branch_not_found", "{err}");
    let err = start_branch(&repo, "bot/other", Some("--orphan"))
        .await
        .unwrap_err();
    assert_eq!(err.code, "checkout_failed", "{err}");

    std::fs::write(repo.join("left-over.txt"), "x").unwrap();
    let err = start_branch(&repo, "bot/next", None).await.unwrap_err();
    assert_eq!(err.code, "dirty_working_tree");
    assert!(err.to_string().contains("left-over.txt"), "{err}");
}

#[tokio::test]
async fn failures_say_which_step_and_why() {
    let origin = GitOrigin::new("fails");
    let gh = FakeGh::new("fails-gh");
    let (repo, branch) = started(&origin, "Break things").await;
    std::fs::write(repo.join("x.txt"), "x\n").unwrap();
    let mut d = delivery(&repo, &branch, "Break things", &gh);

    std::fs::rename(&origin.bare, origin.dir().join("gone.git")).unwrap();
    let err = commit_and_push(&d).await.unwrap_err();
    assert_eq!(err.code, "push_failed", "{err}");
    assert!(err.to_string().starts_with("push_failed: "), "{err}");
    assert!(err.message.contains("origin.git"), "git's own reason: {err}");
    std::fs::rename(origin.dir().join("gone.git"), &origin.bare).unwrap();

    let diff = Default::default();
    gh.set(FakeGhScenario::Exit {
        code: 1,
        stderr: "To get started with GitHub CLI, please run:  gh auth login\n".to_owned(),
    });
    let err = open_pr(&d, &diff).await.unwrap_err();
    assert_eq!(
        err,
        GitError::new(
            "pr_create_failed",
            "To get started with GitHub CLI, please run:  gh auth login"
        )
    );

    d.gh_command = origin.dir().join("no-gh-here").display().to_string();
    let err = open_pr(&d, &diff).await.unwrap_err();
    assert_eq!(err.code, "gh_not_found", "{err}");
    assert!(err.message.contains("gh_command"), "{err}");

    let err = git(origin.dir(), &["status"], Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(err.code, "not_a_git_repo", "{err}");
}

#[tokio::test]
async fn a_hanging_gh_or_git_is_killed_at_its_timeout() {
    let origin = GitOrigin::new("hang");
    let gh = FakeGh::new("hang-gh");
    gh.set(FakeGhScenario::Hang);
    let d = delivery(&origin.clone_as("work"), "bot/x", "Hang", &gh);
    let started = std::time::Instant::now();
    let err = open_pr_within(&d, &Default::default(), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(err.code, "timeout", "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let child = gh.child_pid().expect("the fake started its sleep");
    poll(
        Duration::from_secs(10),
        || format!("gh's child {child} survived"),
        || process_gone(child).then_some(()),
    )
    .await;

    // git itself (a shell alias the test defines, standing for a stuck fetch), with a child.
    let pid_file = origin.dir().join("alias.pid");
    let alias = format!("alias.hang=!echo $$ > '{}'; exec sleep 300", pid_file.display());
    let err = git(origin.dir(), &["-c", &alias, "hang"], Duration::from_millis(500))
        .await
        .unwrap_err();
    assert_eq!(err.code, "timeout", "{err}");
    assert!(
        err.message.contains("hang") && err.message.contains("500 ms"),
        "{err}"
    );
    let pid = support::read_pid(&pid_file).expect("the alias ran");
    poll(
        Duration::from_secs(10),
        || format!("git's child {pid} survived"),
        || process_gone(pid).then_some(()),
    )
    .await;
}
