//! The Claude CLI and shell executors on real processes: a fake `claude` (tests/support) and
//! `/bin/sh`. Unix only (the fake is a sh script; the process-group checks read /proc or use
//! `kill -0`).
#![cfg(unix)]

mod support;

use agentcom_sidecar::exec::claude::{self, ClaudeSettings};
use agentcom_sidecar::exec::direct::{EventKind, ExecEvent, Job, Routing};
use agentcom_sidecar::exec::shell;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use support::{poll, process_gone, read_pid, FakeClaude, FakeClaudeScenario, TempDir};
use tokio::sync::mpsc;

const WITHIN: Duration = Duration::from_secs(10);

fn job(description: &str, workdir: &Path, metadata: Value) -> Job {
    Job {
        task_id: "t1".into(),
        description: description.into(),
        context: Default::default(),
        metadata,
        routing: Routing {
            target_type: Some("claude".into()),
            selected_model: Some("claude".into()),
            ..Routing::default()
        },
        endpoint: None,
        model: None,
        workdir: workdir.to_path_buf(),
        timeout: Duration::from_secs(60),
    }
}

fn settings(fake: &FakeClaude) -> ClaudeSettings {
    let mut s = ClaudeSettings::new(fake.command(), None);
    s.retry_delays = vec![Duration::from_millis(1); 3];
    s
}

fn drain(rx: &mut mpsc::UnboundedReceiver<ExecEvent>) -> Vec<ExecEvent> {
    let mut all = Vec::new();
    while let Ok(e) = rx.try_recv() {
        all.push(e);
    }
    all
}

#[tokio::test]
async fn claude_success_gives_text_tokens_cost_and_model() {
    let fake = FakeClaude::new("claude-ok");
    fake.set(FakeClaudeScenario::Success {
        model: "claude-opus-4-5-20251101".into(),
        text: "All done.".into(),
        tokens_in: 1200,
        tokens_out: 300,
        cost_usd: 0.042,
    });
    let work = TempDir::new("claude-ok-work");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let out = claude::run(&job("Say hi", work.path(), json!({})), &tx, &settings(&fake))
        .await
        .unwrap();
    assert_eq!(out.output, "All done.");
    assert_eq!(out.model_used, "claude-opus-4-5-20251101");
    assert_eq!((out.tokens_in, out.tokens_out), (1200, 300));
    assert_eq!(out.reported_cost_usd, Some(0.042));
    assert_eq!(fake.calls(), 1);
    assert_eq!(
        fake.cwd(1).unwrap().canonicalize().unwrap(),
        work.path().canonicalize().unwrap()
    );
    let events = drain(&mut rx);
    assert!(
        events
            .iter()
            .any(|e| e.kind == EventKind::Token && e.text == "All done."),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_description_full_of_shell_syntax_reaches_claude_as_one_argument() {
    let fake = FakeClaude::new("claude-argv");
    let canary = fake.dir().join("canary");
    let description = format!(
        "Fix it; $(touch {c}) `touch {c}` \"quoted' ; touch {c}\nnext line && touch {c} | cat\n\n",
        c = canary.display()
    );
    let work = TempDir::new("claude-argv-work");
    let mut j = job(&description, work.path(), json!({}));
    j.context.insert("repo".into(), json!("r; touch x"));
    let (tx, _rx) = mpsc::unbounded_channel();
    claude::run(&j, &tx, &settings(&fake)).await.unwrap();
    let prompt = j.prompt();
    assert!(prompt.contains("\n\nContext:\nRepository: r; touch x"));
    // The placeholder "claude" is no model: no --model.
    assert_eq!(
        fake.args(1),
        [
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--",
            prompt.as_str()
        ]
    );
    assert!(!canary.exists(), "the description ran as a command");
}

#[tokio::test]
async fn claude_passes_a_real_model() {
    let fake = FakeClaude::new("claude-model");
    let work = TempDir::new("claude-model-work");
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut s = settings(&fake);
    s.model = Some("claude-haiku-4.5".into());
    claude::run(&job("x", work.path(), json!({})), &tx, &s)
        .await
        .unwrap();
    assert_eq!(fake.args(1)[4..6], ["--model", "claude-haiku-4.5"]);
}

#[tokio::test]
async fn claude_is_error_fails_with_its_text_and_is_not_retried() {
    let fake = FakeClaude::new("claude-iserror");
    fake.set(FakeClaudeScenario::IsError("Credit balance is too low".into()));
    let work = TempDir::new("claude-iserror-work");
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = claude::run(&job("x", work.path(), json!({})), &tx, &settings(&fake))
        .await
        .unwrap_err();
    assert_eq!(err.0, "claude reported an error: Credit balance is too low");
    assert_eq!(fake.calls(), 1);
}

#[tokio::test]
async fn claude_non_zero_exit_is_retried_then_fails_with_stderr() {
    let fake = FakeClaude::new("claude-exit");
    fake.set(FakeClaudeScenario::Exit {
        code: 3,
        stderr: "API overloaded\n".into(),
    });
    let work = TempDir::new("claude-exit-work");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let err = claude::run(&job("x", work.path(), json!({})), &tx, &settings(&fake))
        .await
        .unwrap_err();
    assert_eq!(err.0, "claude exited with code 3: API overloaded");
    assert_eq!(fake.calls(), 4, "4 attempts in all");
    let events = drain(&mut rx);
    assert!(events
        .iter()
        .any(|e| e.kind == EventKind::Stderr && e.text == "API overloaded\n"));
    assert!(events
        .iter()
        .any(|e| e.kind == EventKind::Status && e.text.starts_with("claude: attempt 4 of 4")));
}

#[tokio::test]
async fn a_missing_claude_says_which_config_key_to_set_at_once() {
    let dir = TempDir::new("claude-missing");
    let missing = dir.join("no-such-claude");
    let started = Instant::now();
    let (tx, _rx) = mpsc::unbounded_channel();
    // Default retries (2 s first): a missing command must not wait for them.
    let s = ClaudeSettings::new(missing.display().to_string(), None);
    let err = claude::run(&job("x", dir.path(), json!({})), &tx, &s)
        .await
        .unwrap_err();
    assert!(err
        .0
        .starts_with(&format!("claude_command \"{}\" was not found", missing.display())));
    assert!(err.0.contains("set \"claude_command\" in config.json"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "retried a missing command"
    );
}

#[tokio::test]
async fn dropping_a_claude_run_kills_its_process_group() {
    let fake = FakeClaude::new("claude-hang");
    fake.set(FakeClaudeScenario::Hang);
    let work = TempDir::new("claude-hang-work");
    let (tx, _rx) = mpsc::unbounded_channel();
    let j = job("x", work.path(), json!({}));
    let s = settings(&fake);
    let (pid, child) = tokio::select! {
        r = claude::run(&j, &tx, &s) => panic!("the hanging fake finished: {r:?}"),
        ids = poll(WITHIN, || "the fake never started its child".into(), || fake.pid().zip(fake.child_pid())) => ids,
    };
    // The future is dropped here.
    poll(
        WITHIN,
        || format!("claude {pid} or its child {child} still runs"),
        || (process_gone(pid) && process_gone(child)).then_some(()),
    )
    .await;
}

#[tokio::test]
async fn shell_success_gives_stdout_stderr_and_exit_code() {
    let work = TempDir::new("shell-ok");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let j = job(
        "",
        work.path(),
        json!({"shell_command": "echo hello; echo oops >&2; pwd"}),
    );
    let out = shell::run(&j, &tx, true).await.unwrap();
    let pwd = work.path().canonicalize().unwrap();
    assert_eq!(out.output, format!("hello\n{}\n", pwd.display()));
    assert_eq!(out.model_used, "none");
    assert_eq!(out.extra["stderr"], json!("oops\n"));
    assert_eq!(out.extra["exit_code"], json!(0));
    let events = drain(&mut rx);
    assert!(events
        .iter()
        .any(|e| e.kind == EventKind::Stdout && e.text.contains("hello")));
    assert!(events
        .iter()
        .any(|e| e.kind == EventKind::Stderr && e.text == "oops\n"));
}

#[tokio::test]
async fn shell_failure_gives_the_exit_code_and_stderr() {
    let work = TempDir::new("shell-fail");
    let (tx, _rx) = mpsc::unbounded_channel();
    let j = job(
        "",
        work.path(),
        json!({"shell_command": "echo out; echo bad >&2; exit 3"}),
    );
    let err = shell::run(&j, &tx, true).await.unwrap_err();
    assert_eq!(err.0, "command exited with code 3: bad");
    let j = job("", work.path(), json!({"shell_command": "  "}));
    let err = shell::run(&j, &tx, true).await.unwrap_err();
    assert!(
        err.0.starts_with("the task has no metadata.shell_command"),
        "{err}"
    );
}

#[tokio::test]
async fn shell_timeout_kills_the_group_with_a_background_child() {
    let work = TempDir::new("shell-timeout");
    let bg = work.join("bg");
    let command = format!("sleep 300 & echo $! > '{}'; sleep 300", bg.display());
    let (tx, _rx) = mpsc::unbounded_channel();
    let j = job(
        "",
        work.path(),
        json!({"shell_command": command, "timeout_ms": 500}),
    );
    let started = Instant::now();
    let err = shell::run(&j, &tx, true).await.unwrap_err();
    assert!(err.0.starts_with("command timed out after 500 ms"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(8));
    let child = read_pid(&bg).expect("the command wrote its background child's PID");
    poll(
        WITHIN,
        || format!("the background child {child} still runs"),
        || process_gone(child).then_some(()),
    )
    .await;
}

#[tokio::test]
async fn shell_not_allowed_never_runs_the_command() {
    let work = TempDir::new("shell-refused");
    let canary = work.join("canary");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let j = job(
        "",
        work.path(),
        json!({"shell_command": format!("touch '{}'", canary.display())}),
    );
    let err = shell::run(&j, &tx, false).await.unwrap_err();
    assert!(err.0.contains("allow_hub_commands is false"), "{err}");
    assert!(drain(&mut rx).is_empty());
    assert!(!canary.exists(), "the command ran without allow_hub_commands");
    // The same command, allowed, does create it (so the check above can fail).
    shell::run(&j, &tx, true).await.unwrap();
    assert!(canary.exists());
}

#[tokio::test]
async fn what_a_finished_command_left_in_its_group_is_stopped() {
    let work = TempDir::new("shell-leftover");
    let bg = work.join("bg");
    let command = format!("sleep 300 & echo $! > '{}'; echo started", bg.display());
    let (tx, _rx) = mpsc::unbounded_channel();
    let j = job("", work.path(), json!({"shell_command": command}));
    let out = shell::run(&j, &tx, true).await.unwrap();
    assert_eq!(out.output, "started\n");
    let child = read_pid(&bg).expect("the command wrote its background child's PID");
    poll(
        WITHIN,
        || format!("the background child {child} still runs"),
        || process_gone(child).then_some(()),
    )
    .await;
}
