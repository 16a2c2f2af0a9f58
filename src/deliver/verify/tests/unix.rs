//! Checks that run real processes: git, make, the shell.

use super::*;
use std::process::Command;
use std::time::Instant;

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git").args(args).current_dir(dir).output().unwrap();
    assert!(ok.status.success(), "git {args:?}: {ok:?}");
}

/// Whether `pid` is a live process (a zombie counts as gone).
fn alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}

#[tokio::test]
async fn git_clean_passes_on_a_clean_tree_and_fails_on_changes() {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q"]);
    for target in [".", "", dir.path().to_str().unwrap()] {
        let c = one(dir.path(), "git_clean", target, false).await;
        assert_eq!(
            (c.status, c.output.as_str()),
            (Status::Pass, ""),
            "target {target:?}"
        );
    }
    std::fs::write(dir.path().join("new.txt"), "x").unwrap();
    let c = one(dir.path(), "git_clean", ".", false).await;
    assert_eq!(c.status, Status::Fail);
    assert!(c.output.contains("?? new.txt"), "{}", c.output);

    let plain = tempfile::tempdir().unwrap();
    let c = one(plain.path(), "git_clean", "nowhere", false).await;
    assert_eq!(c.status, Status::Fail);
    assert!(c.output.starts_with("Not a directory: nowhere"), "{}", c.output);
    let c = one(plain.path(), "git_clean", ".", false).await;
    assert_eq!(c.status, Status::Fail, "not a repository: {}", c.output);
    assert!(c.output.contains("exited with code"), "{}", c.output);
}

#[tokio::test]
async fn command_succeeds_runs_in_the_workdir_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("marker"), "x").unwrap();
    let c = one(dir.path(), "command_succeeds", "test -f marker && echo hi", true).await;
    assert_eq!((c.status, c.output.as_str()), (Status::Pass, "hi\n"));
    let c = one(
        dir.path(),
        "command_succeeds",
        "echo out; echo err >&2; exit 3",
        true,
    )
    .await;
    assert_eq!(c.status, Status::Fail);
    assert_eq!(c.output, "out\nerr\n(exited with code 3)");
    let c = one(dir.path(), "test_passes", "test -f absent", true).await;
    assert_eq!(
        (c.status, c.output.as_str()),
        (Status::Fail, "(exited with code 1)")
    );
}

#[tokio::test]
async fn hub_commands_do_not_run_without_allow_hub_commands() {
    let dir = tempfile::tempdir().unwrap();
    let steps = vec![
        step("command_succeeds", "touch canary1"),
        step("test_passes", "touch canary2"),
    ];
    let report = run(&spec(dir.path(), steps.clone(), false), 1).await;
    for c in &report.checks {
        assert_eq!((c.status, c.output.as_str()), (Status::Skip, NOT_ALLOWED));
    }
    assert!(NOT_ALLOWED.contains("\"allow_hub_commands\": true"));
    assert!(!dir.path().join("canary1").exists() && !dir.path().join("canary2").exists());
    assert_eq!(report.status(), Status::Skip);
    assert_eq!(report.to_value()["summary"]["skipped"], 2);

    let report = run(&spec(dir.path(), steps, true), 1).await;
    assert_eq!(report.status(), Status::Pass);
    assert!(dir.path().join("canary1").exists() && dir.path().join("canary2").exists());
}

#[tokio::test]
async fn test_passes_auto_runs_the_projects_make_test() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Makefile"),
        "test:\n\t@touch ran\n\t@echo all good CI=$$CI\n",
    )
    .unwrap();
    for target in ["auto", ""] {
        std::fs::remove_file(dir.path().join("ran")).ok();
        // Our own command: it runs without allow_hub_commands.
        let c = one(dir.path(), "test_passes", target, false).await;
        assert_eq!(
            (c.status, c.output.as_str()),
            (Status::Pass, "all good CI=true\n")
        );
        assert!(dir.path().join("ran").exists());
    }
    std::fs::write(dir.path().join("Makefile"), "test:\n\t@echo boom; exit 1\n").unwrap();
    let c = one(dir.path(), "test_passes", "auto", false).await;
    assert_eq!(c.status, Status::Fail);
    assert!(c.output.starts_with("boom\n"), "{}", c.output);
    assert!(c.output.ends_with("(exited with code 2)"), "{}", c.output);
}

#[tokio::test]
async fn test_passes_auto_without_a_runner_is_skipped_never_passed() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(&spec(dir.path(), vec![step("test_passes", "auto")], true), 1).await;
    let c = &report.checks[0];
    assert_eq!(c.status, Status::Skip);
    assert!(
        c.output.starts_with("not run: no test runner found in "),
        "{}",
        c.output
    );
    for runner in [
        "mix.exs (mix test)",
        "package.json (npm test)",
        "Makefile (make test)",
        "Cargo.toml (cargo test)",
    ] {
        assert!(c.output.contains(runner), "{}", c.output);
    }
    assert_eq!(report.status(), Status::Skip);
}

#[tokio::test]
async fn output_keeps_the_end_of_long_failures() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = "i=0; while [ $i -lt 1000 ]; do echo line$i; i=$((i+1)); done; echo THE-FAILURE >&2; exit 1";
    let c = one(dir.path(), "command_succeeds", cmd, true).await;
    assert_eq!(c.status, Status::Fail);
    assert!(c.output.starts_with("[... "), "{}", &c.output[..80]);
    assert!(
        c.output.ends_with("line999\nTHE-FAILURE\n(exited with code 1)"),
        "{}",
        c.output
    );
    assert!(c.output.chars().count() <= OUTPUT_LIMIT + 40);
}

#[tokio::test]
async fn hostile_targets_of_path_checks_are_paths_never_commands() {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q"]);
    std::fs::create_dir(dir.path().join("victim")).unwrap();
    std::fs::write(dir.path().join("victim/keep"), "x").unwrap();
    let literal = dir.path().join("$(touch pwned3)");
    std::fs::create_dir(&literal).unwrap();
    let steps = vec![
        step("file_exists", "; rm -rf victim"),
        step("file_exists", "$(touch pwned1)"),
        step("git_clean", "; rm -rf victim; touch pwned2"),
        step("git_clean", "$(touch pwned3)"),
    ];
    let report = run(&spec(dir.path(), steps, true), 1).await;
    let statuses: Vec<Status> = report.checks.iter().map(|c| c.status).collect();
    // The literal directory exists (its own untracked content is none, the repo's is).
    assert_eq!(statuses[..3], [Status::Fail, Status::Fail, Status::Fail]);
    assert_ne!(statuses[3], Status::Error, "{}", report.checks[3].output);
    assert!(dir.path().join("victim/keep").exists());
    for name in ["pwned1", "pwned2", "pwned3"] {
        assert!(
            !dir.path().join(name).exists() && !literal.join(name).exists(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_hanging_check_is_killed_at_the_budget_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let ticks = Arc::new(AtomicU32::new(0));
    let counter = ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let mut s = spec(
        dir.path(),
        vec![
            step(
                "command_succeeds",
                "echo $$ > pids; sleep 30 & echo $! >> pids; echo started; wait",
            ),
            step("file_exists", "pids"),
        ],
        true,
    );
    s.timeout = Duration::from_millis(300);
    let begun = Instant::now();
    let report = run(&s, 1).await;
    let took = begun.elapsed();
    ticker.abort();

    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(
        ticks.load(Ordering::Relaxed) >= 10,
        "the event loop was blocked: {ticks:?}"
    );
    assert_eq!(report.status(), Status::Timeout);
    let hung = &report.checks[0];
    assert_eq!(hung.status, Status::Timeout);
    assert!(
        hung.output.starts_with("started\n(timed out: "),
        "{}",
        hung.output
    );
    assert!(hung.duration_ms >= 300);
    let rest = &report.checks[1];
    assert_eq!(
        (rest.status, rest.output.as_str()),
        (
            Status::Timeout,
            "not run: verification_timeout_ms (300 ms) used up"
        )
    );
    assert_eq!(report.to_value()["summary"]["timed_out"], 2);

    let pids: Vec<i32> = std::fs::read_to_string(dir.path().join("pids"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "the shell and its background sleep");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) {
        assert!(Instant::now() < deadline, "still running: {pids:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
