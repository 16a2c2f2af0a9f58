//! The check types. Every command runs as an argument vector or, for hub text with
//! `allow_hub_commands`, through the platform shell; each in its own process group
//! ([`GroupChild`]) with stdin null, in the run's workdir, killed with its group when the run's
//! budget runs out. Nothing here blocks: processes and file lookups are awaited.

use super::report::Status;
use super::Step;
use crate::exec::direct::EventKind;
use crate::exec::process::child_command;
use crate::exec::shell::{shell_command, tail_chars, Capture, GroupChild, Waited};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How many characters of a check's output the report keeps: the last ones, where failures print.
pub const OUTPUT_LIMIT: usize = 4000;

/// The test runners `test_passes` `auto` looks for in the workdir, in this order: the file that
/// marks the project, and the command it runs (an argument vector of our own, not hub text).
const RUNNERS: [(&str, &str, &[&str]); 4] = [
    ("mix.exs", MIX, &["test"]),
    ("package.json", NPM, &["test"]),
    ("Makefile", "make", &["test"]),
    ("Cargo.toml", "cargo", &["test"]),
];
#[cfg(windows)]
const NPM: &str = "npm.cmd";
#[cfg(not(windows))]
const NPM: &str = "npm";
#[cfg(windows)]
const MIX: &str = "mix.bat";
#[cfg(not(windows))]
const MIX: &str = "mix";

/// Why a hub command did not run.
pub const NOT_ALLOWED: &str = "not run: allow_hub_commands is false in config.json, so no command \
     from the hub runs here; set \"allow_hub_commands\": true to allow it";

/// Runs `step` in `workdir` within `budget`: its status and output.
pub(super) async fn run_check(
    step: &Step,
    workdir: &Path,
    allow_hub_commands: bool,
    budget: Duration,
) -> (Status, String) {
    let target = step.target.trim();
    match step.kind.as_str() {
        "file_exists" => file_exists(&step.target, workdir, budget).await,
        "git_clean" => git_clean(target, workdir, budget).await,
        "test_passes" if target.is_empty() || target == "auto" => auto_test(workdir, budget).await,
        "test_passes" | "command_succeeds" if !allow_hub_commands => (Status::Skip, NOT_ALLOWED.to_owned()),
        "test_passes" | "command_succeeds" => {
            let mut cmd = shell_command(&step.target);
            run_command(&mut cmd, workdir, budget, "the shell").await
        }
        other => (Status::Error, format!("Unknown check type: {other}")),
    }
}

/// `target` against `workdir` (an absolute target stays as it is; empty or `.` is `workdir`).
fn resolve(workdir: &Path, target: &str) -> PathBuf {
    if target.is_empty() || target == "." {
        workdir.to_path_buf()
    } else {
        workdir.join(target)
    }
}

async fn file_exists(target: &str, workdir: &Path, budget: Duration) -> (Status, String) {
    let path = resolve(workdir, target);
    match tokio::time::timeout(budget, tokio::fs::try_exists(&path)).await {
        Err(_) => (
            Status::Timeout,
            format!("looking for {} took longer than the time left", path.display()),
        ),
        Ok(Ok(true)) => (Status::Pass, String::new()),
        Ok(Ok(false)) => (
            Status::Fail,
            format!("File not found: {target} (looked for {})", path.display()),
        ),
        Ok(Err(e)) => (Status::Error, format!("cannot look for {}: {e}", path.display())),
    }
}

async fn git_clean(target: &str, workdir: &Path, budget: Duration) -> (Status, String) {
    let dir = resolve(workdir, target);
    match tokio::time::timeout(budget, tokio::fs::metadata(&dir)).await {
        Err(_) => {
            return (
                Status::Timeout,
                format!("looking at {} took longer than the time left", dir.display()),
            )
        }
        Ok(Ok(m)) if m.is_dir() => {}
        Ok(_) => {
            return (
                Status::Fail,
                format!("Not a directory: {target} (looked at {})", dir.display()),
            )
        }
    }
    // No optional locks (the index is not rewritten) and no fsmonitor hook from the repository.
    let mut cmd = child_command("git");
    cmd.args([
        "--no-optional-locks",
        "-c",
        "core.fsmonitor=false",
        "status",
        "--porcelain",
    ]);
    match run_command(&mut cmd, &dir, budget, "git status --porcelain").await {
        (Status::Pass, out) if !out.trim().is_empty() => (
            Status::Fail,
            format!("{out}\n(the working tree has uncommitted changes)"),
        ),
        other => other,
    }
}

async fn auto_test(workdir: &Path, budget: Duration) -> (Status, String) {
    for (marker, program, args) in RUNNERS {
        if tokio::fs::try_exists(workdir.join(marker)).await.unwrap_or(false) {
            let mut cmd = child_command(program);
            // CI=true: test runners that would otherwise watch for changes (jest, vitest) run once.
            cmd.args(args).env("CI", "true");
            let what = format!("{program} {} (found {marker})", args.join(" "));
            return run_command(&mut cmd, workdir, budget, &what).await;
        }
    }
    let looked: Vec<String> = RUNNERS
        .iter()
        .map(|(marker, program, args)| format!("{marker} ({program} {})", args.join(" ")))
        .collect();
    (
        Status::Skip,
        format!(
            "not run: no test runner found in {}: looked for {}",
            workdir.display(),
            looked.join(", ")
        ),
    )
}

/// Runs `cmd` in `dir` in its own process group for at most `budget`: `pass` with its stdout
/// when it exits 0, `fail` with stdout and stderr otherwise, `timeout` (group killed) or `error`
/// (it did not start). `what` names it in messages.
async fn run_command(
    cmd: &mut tokio::process::Command,
    dir: &Path,
    budget: Duration,
    what: &str,
) -> (Status, String) {
    cmd.current_dir(dir);
    let mut child = match GroupChild::spawn(cmd) {
        Ok(c) => c,
        Err(e) => {
            return (
                Status::Error,
                format!("cannot start {what} in {}: {e}", dir.display()),
            )
        }
    };
    let (events, _) = tokio::sync::mpsc::unbounded_channel();
    let mut out = Capture::new(EventKind::Stdout, &events).keeping_last();
    let mut err = Capture::new(EventKind::Stderr, &events).keeping_last();
    let (stdout, stderr) = child.take_pipes();
    let waited = {
        let readers = async {
            tokio::join!(out.read_all(stdout), err.read_all(stderr));
        };
        child.wait_draining(readers, Some(budget)).await
    };
    let both = || join_output(&out.text(), &err.text());
    match waited {
        Waited::Exited(status) if status.success() => (Status::Pass, bounded(&out.text(), "")),
        Waited::Exited(status) => {
            let how = match status.code() {
                Some(code) => format!("(exited with code {code})"),
                None => "(killed by a signal)".to_owned(),
            };
            (Status::Fail, bounded(&both(), &how))
        }
        Waited::TimedOut => {
            child.kill().await;
            let note = format!(
                "(timed out: verification_timeout_ms ran out after {} ms of this check; its process \
                 group was killed)",
                budget.as_millis()
            );
            (Status::Timeout, bounded(&both(), &note))
        }
        Waited::Failed(e) => (Status::Error, format!("cannot wait for {what}: {e}")),
    }
}

fn join_output(stdout: &str, stderr: &str) -> String {
    match (stdout.is_empty(), stderr.is_empty()) {
        (_, true) => stdout.to_owned(),
        (true, false) => stderr.to_owned(),
        (false, false) if stdout.ends_with('\n') => format!("{stdout}{stderr}"),
        (false, false) => format!("{stdout}\n{stderr}"),
    }
}

/// The last [`OUTPUT_LIMIT`] characters of `text` followed by `note` (on a line of its own),
/// marked when cut.
fn bounded(text: &str, note: &str) -> String {
    let room = OUTPUT_LIMIT.saturating_sub(note.chars().count() + 1);
    let kept = tail_chars(text, room);
    let mut out = if kept.len() < text.len() {
        format!(
            "[... {} characters cut]\n{kept}",
            text.chars().count() - kept.chars().count()
        )
    } else {
        kept.to_owned()
    };
    if !note.is_empty() {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(note);
    }
    out
}
