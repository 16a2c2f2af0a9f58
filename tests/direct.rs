//! Direct execution end to end (issue 10's proof): the real binary against the embedded hub,
//! which routes each task by its `complexity_tier` (protocol §11), with a fake Ollama registered
//! in the hub's LLM registry, a fake `claude` (tests/support) and `/bin/sh`. Judged by the hub's
//! records (status, result, last_error), the frames it received, and files on disk. Unix only
//! (the fake claude and the agent are sh scripts).
#![cfg(unix)]

mod support;

use agentcom_sidecar::exec::fake_ollama::{Chat, FakeOllama};
use agentcom_sidecar::hub::{HubEvent, TaskSpec};
use serde_json::{json, Value};
use std::time::Duration;
use support::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A wake agent: records its wake in `wakes`, writes `.started` and a success result.
const AGENT_SH: &str = r#"#!/bin/sh
dir="$AGENTCOM_RESULTS_DIR"
echo "$AGENTCOM_TASK_ID" >> "$dir/../wakes"
: > "$AGENTCOM_STARTED_FILE"
printf '%s' '{"status":"success","output":"woken agent did it"}' > "$AGENTCOM_RESULT_FILE.tmp"
mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
"#;

/// A task of `tier` with `description`, dead-lettered at its first failure (so `last_error`
/// holds the sidecar's reason and nothing retries it).
fn spec(tier: &str, description: &str, metadata: Value) -> TaskSpec {
    TaskSpec {
        description: description.into(),
        metadata,
        complexity_tier: Some(tier.into()),
        max_retries: 1,
        ..TaskSpec::default()
    }
}

/// Waits for the task's dead-letter (its first failure); returns the hub's `last_error`.
async fn failed_reason(w: &HubSetup, id: &str) -> String {
    let rec = w.wait_status(id, "dead_letter", SECS(10)).await;
    rec.last_error.unwrap_or_default()
}

/// The `task_progress` frames with an `execution_event` the sidecar sent for `id`.
fn exec_events(w: &HubSetup, id: &str) -> Vec<Value> {
    w.sent_of_type("task_progress")
        .into_iter()
        .filter(|f| f["task_id"] == id && f["execution_event"].is_object())
        .collect()
}

/// The `error` frames the hub sent the sidecar (a frame it rejected, a rate limit): none expected.
fn assert_no_hub_errors(w: &HubSetup) {
    let errors: Vec<String> = w
        .hub
        .history()
        .into_iter()
        .filter_map(|e| match e {
            HubEvent::Sent { text, .. } if text.contains("\"type\":\"error\"") => Some(text),
            _ => None,
        })
        .collect();
    assert!(errors.is_empty(), "the hub answered with errors: {errors:#?}");
}

fn chat_requests(fake: &FakeOllama) -> usize {
    fake.received().iter().filter(|r| r.path == "/api/chat").count()
}

/// A shell command whose first run holds (a `sleep` in the background, its PID in `pidfile`)
/// and whose later runs finish at once; `runs` counts the runs.
fn holds_on_the_first_run(runs: &std::path::Path, pidfile: &std::path::Path) -> String {
    format!(
        "echo run >> '{r}'; if [ \"$(wc -l < '{r}')\" -eq 1 ]; then sleep 30 & echo $! > '{p}'; wait; fi; echo finished",
        r = runs.display(),
        p = pidfile.display()
    )
}

/// A sidecar running a shell-tier task whose first run holds (a sleep in the background, its
/// PID returned) and whose second finishes at once: the hub, the sidecar, the task id, the file
/// counting the runs, and the sleep's PID.
async fn holding_shell_task(agent: &str) -> (HubSetup, Sidecar, String, std::path::PathBuf, u32) {
    let mut w = HubSetup::start(agent, json!({"allow_hub_commands": true})).await;
    let sidecar = w.spawn();
    w.identified().await;
    let (runs, pidfile) = (w.dir.join("runs"), w.dir.join("sleep.pid"));
    let command = holds_on_the_first_run(&runs, &pidfile);
    let id = w
        .hub
        .submit_task(spec("trivial", "hold", json!({"shell_command": command})));
    let pid = poll(SECS(10), || "the command never ran".into(), || read_pid(&pidfile)).await;
    (w, sidecar, id, runs, pid)
}

/// Waits until the fake Ollama has had `n` chat requests.
async fn wait_chats(fake: &FakeOllama, n: usize) {
    poll(
        SECS(10),
        || "the chat request never arrived".into(),
        || (chat_requests(fake) == n).then_some(()),
    )
    .await;
}

#[tokio::test]
async fn ollama_success_completes_with_model_tokens_and_batched_progress() {
    let (w, fake, _sidecar) = with_ollama("direct-ollama-ok", json!({})).await;
    let tokens: Vec<String> = (0..200).map(|i| format!("t{i} ")).collect();
    fake.push_chat(Chat::Answer {
        tokens: tokens.clone(),
        delay: Duration::from_millis(1),
        prompt_eval_count: 11,
        eval_count: 200,
    });
    let id = w
        .hub
        .submit_task(spec("standard", "summarise the logs", json!({})));
    let rec = w.wait_status(&id, "completed", SECS(10)).await;
    let result = rec.result.expect("a result");
    assert_eq!(result["status"], "success");
    assert_eq!(result["output"], tokens.concat());
    assert_eq!(result["model_used"], "fake-model:latest");
    assert_eq!(result["tokens_in"], 11);
    assert_eq!(result["tokens_out"], 200);
    assert!(result["execution_ms"].is_u64(), "{result}");
    assert!(result.get("estimated_cost_usd").is_some(), "{result}");
    assert!(result.get("equivalent_claude_cost_usd").is_some(), "{result}");
    assert_eq!(rec.tokens_used, Some(211));
    // Verified once (no checks asked: auto_pass), the report at task_complete's top level.
    assert_eq!(result["verification_status"], "verified", "{result}");
    assert_eq!(result["verification_attempts"], 1, "{result}");
    assert!(
        result.get("verification_report").is_none(),
        "lifted out of the result: {result}"
    );
    let report = rec.verification_report.expect("a verification report");
    assert_eq!(report["status"], "auto_pass");
    assert_eq!(rec.verification_history, vec![report]);
    let events = exec_events(&w, &id);
    assert!(!events.is_empty(), "no task_progress with execution_event");
    assert!(
        events.len() < 100,
        "{} progress frames for 200 tokens: not batched",
        events.len()
    );
    assert!(events
        .iter()
        .any(|f| f["execution_event"]["event_type"] == "token"));
    // The request went to the registered endpoint, with the model the hub chose.
    let chat = fake
        .received()
        .into_iter()
        .find(|r| r.path == "/api/chat")
        .unwrap();
    let body: Value = serde_json::from_slice(&chat.body).unwrap();
    assert_eq!(body["model"], "fake-model:latest");
    assert!(!w.dir.join("wakes").exists(), "an agent was woken");
    assert_eq!(w.sent_of_type("task_complete").len(), 1);
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn ollama_error_line_fails_the_task_naming_the_endpoint() {
    let (w, fake, _sidecar) = with_ollama("direct-ollama-err", json!({})).await;
    fake.push_chat(Chat::ErrorLine {
        tokens: vec!["partial".into()],
        error: "model exploded".into(),
    });
    let id = w.hub.submit_task(spec("standard", "summarise", json!({})));
    let reason = failed_reason(&w, &id).await;
    assert!(reason.contains("model exploded"), "{reason}");
    assert!(reason.contains(&fake.host_port()), "{reason}");
    let failed = w.wait_sent("task_failed", |f| f["task_id"] == id.as_str()).await;
    assert!(
        failed["reason"].as_str().unwrap().contains("model exploded"),
        "{failed}"
    );
    assert!(w.sent_of_type("task_complete").is_empty());
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn ollama_500_three_times_fails_the_task_after_the_retries() {
    let (w, fake, _sidecar) = with_ollama("direct-ollama-500", json!({})).await;
    fake.set_default_chat(Chat::Status {
        code: 500,
        body: "overloaded".into(),
    });
    let id = w.hub.submit_task(spec("standard", "summarise", json!({})));
    let reason = failed_reason(&w, &id).await;
    assert!(reason.contains(&fake.host_port()), "{reason}");
    assert!(reason.contains("500"), "{reason}");
    assert_eq!(chat_requests(&fake), 3, "three attempts");
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn ollama_past_execution_timeout_is_stopped_and_failed_with_the_time() {
    let (w, fake, _sidecar) =
        with_ollama("direct-ollama-timeout", json!({"execution_timeout_ms": 700})).await;
    fake.set_default_chat(Chat::Hang);
    let id = w.hub.submit_task(spec("standard", "summarise", json!({})));
    let reason = failed_reason(&w, &id).await;
    assert!(reason.contains("execution_timeout"), "{reason}");
    assert!(reason.contains("700 ms"), "{reason}");
    tokio::time::timeout(SECS(5), fake.wait_hangs_closed(1))
        .await
        .expect("the fake Ollama saw its connection closed");
    assert_no_hub_errors(&w);
}

/// A hub and the binary whose `claude_command` is the fake claude.
async fn with_claude(agent: &str, fake: &FakeClaude, extra: Value) -> (HubSetup, Sidecar) {
    let mut w = HubSetup::start(agent, json!({"claude_command": fake.command()})).await;
    if let Value::Object(extra) = extra {
        let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&w.config).unwrap()).unwrap();
        for (k, v) in extra {
            config[k] = v;
        }
        write_private(&w.config, &config.to_string());
    }
    let sidecar = w.spawn();
    w.identified().await;
    (w, sidecar)
}

#[tokio::test]
async fn claude_success_and_a_description_full_of_shell_syntax_as_one_argument() {
    let fake = FakeClaude::new("direct-claude-ok");
    fake.set(FakeClaudeScenario::Success {
        model: "claude-opus-4-5-20251101".into(),
        text: "All done.".into(),
        tokens_in: 1200,
        tokens_out: 300,
        cost_usd: 0.042,
    });
    let (w, _sidecar) = with_claude("direct-claude-ok", &fake, json!({})).await;
    let canary = fake.dir().join("canary");
    let description = format!(
        "Fix it; $(touch {c}) `touch {c}` \"quoted' ; touch {c}\nnext && touch {c} | cat ${{HOME}} *",
        c = canary.display()
    );
    let id = w.hub.submit_task(spec("complex", &description, json!({})));
    let rec = w.wait_status(&id, "completed", SECS(10)).await;
    let result = rec.result.unwrap();
    assert_eq!(result["output"], "All done.");
    assert_eq!(result["model_used"], "claude-opus-4-5-20251101");
    assert_eq!(result["tokens_in"], 1200);
    assert_eq!(result["tokens_out"], 300);
    assert_eq!(result["estimated_cost_usd"], 0.042);
    assert_eq!(rec.tokens_used, Some(1500));
    assert_eq!(fake.calls(), 1);
    let args = fake.args(1);
    assert_eq!(args[0], "-p");
    assert_eq!(args[args.len() - 2], "--", "{args:?}");
    assert_eq!(args[args.len() - 1], description, "{args:?}");
    assert_eq!(
        args.iter().filter(|a| a.contains("touch")).count(),
        1,
        "the description split: {args:?}"
    );
    assert!(!canary.exists(), "the description ran as a command");
    assert!(!w.dir.join("wakes").exists());
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn claude_is_error_fails_the_task_with_its_text() {
    let fake = FakeClaude::new("direct-claude-err");
    fake.set(FakeClaudeScenario::IsError("Credit balance is too low".into()));
    let (w, _sidecar) = with_claude("direct-claude-err", &fake, json!({})).await;
    let id = w
        .hub
        .submit_task(spec("complex", "refactor everything", json!({})));
    let reason = failed_reason(&w, &id).await;
    assert!(reason.contains("Credit balance is too low"), "{reason}");
    assert!(w.sent_of_type("task_complete").is_empty());
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn claude_cancel_during_the_execution_stops_its_processes() {
    let fake = FakeClaude::new("direct-claude-cancel");
    fake.set(FakeClaudeScenario::Hang);
    let (w, _sidecar) = with_claude("direct-claude-cancel", &fake, json!({})).await;
    let id = w
        .hub
        .submit_task(spec("complex", "refactor everything", json!({})));
    let child = poll(
        SECS(10),
        || "the fake claude never started".into(),
        || fake.child_pid(),
    )
    .await;
    let pid = fake.pid().unwrap();
    assert!(w.hub.cancel_task(&id).await);
    poll(
        SECS(10),
        || format!("claude {pid} / its child {child} still run after the cancel"),
        || (process_gone(pid) && process_gone(child)).then_some(()),
    )
    .await;
    w.wait_queue_empty(SECS(10)).await;
    assert!(w.sent_of_type("task_complete").is_empty());
    assert!(w.sent_of_type("task_failed").is_empty());
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn shell_tier_runs_the_command_when_allowed() {
    let mut w = HubSetup::start("direct-shell-on", json!({"allow_hub_commands": true})).await;
    let _sidecar = w.spawn();
    w.identified().await;
    let id = w.hub.submit_task(spec(
        "trivial",
        "say hi",
        json!({"shell_command": "echo hello from sh; echo more"}),
    ));
    let rec = w.wait_status(&id, "completed", SECS(10)).await;
    let result = rec.result.unwrap();
    assert_eq!(result["output"], "hello from sh\nmore\n");
    assert_eq!(result["model_used"], "none");
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn shell_tier_off_never_runs_the_canary_and_wakes_the_agent() {
    let mut w =
        HubSetup::start("direct-shell-off", json!({}))
            .await
            .with_agent(AGENT_SH, "sh AGENT &", json!({}));
    let _sidecar = w.spawn();
    w.identified().await;
    let canary = w.dir.join("canary");
    let id = w.hub.submit_task(spec(
        "trivial",
        "say hi",
        json!({"shell_command": format!("touch '{}'", canary.display())}),
    ));
    let rec = w.wait_status(&id, "completed", SECS(10)).await;
    assert_eq!(rec.result.unwrap()["output"], "woken agent did it");
    assert_eq!(w.wakes(&id), 1);
    assert!(
        !canary.exists(),
        "the hub's command ran without allow_hub_commands"
    );
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn shell_tier_with_direct_execution_on_fails_naming_allow_hub_commands() {
    let mut w = HubSetup::start("direct-shell-on-off", json!({"direct_execution": "on"})).await;
    let _sidecar = w.spawn();
    w.identified().await;
    let canary = w.dir.join("canary");
    let id = w.hub.submit_task(spec(
        "trivial",
        "say hi",
        json!({"shell_command": format!("touch '{}'", canary.display())}),
    ));
    let reason = failed_reason(&w, &id).await;
    assert!(reason.contains("allow_hub_commands"), "{reason}");
    assert!(
        !canary.exists(),
        "the hub's command ran without allow_hub_commands"
    );
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn auto_with_no_ollama_answering_falls_back_to_waking_the_agent() {
    let mut w =
        HubSetup::start("direct-fallback", json!({}))
            .await
            .with_agent(AGENT_SH, "sh AGENT &", json!({}));
    let sidecar = w.spawn();
    w.identified().await;
    let id = w.hub.submit_task(spec("standard", "summarise", json!({})));
    let rec = w.wait_status(&id, "completed", SECS(10)).await;
    assert_eq!(rec.routing_decision.as_ref().unwrap()["fallback_used"], true);
    assert_eq!(rec.result.unwrap()["output"], "woken agent did it");
    assert_eq!(w.wakes(&id), 1);
    let chosen = sidecar
        .wait_log_event("execution_chosen", SECS(5))
        .await
        .expect("execution_chosen logged");
    assert!(chosen.to_string().contains("fallback"), "{chosen}");
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn sigkill_during_an_execution_then_restart_runs_it_again_and_completes_once() {
    let (mut w, fake, mut sidecar) = with_ollama("direct-sigkill", json!({})).await;
    fake.push_chat(Chat::Answer {
        tokens: (0..100).map(|i| format!("slow{i} ")).collect(),
        delay: Duration::from_millis(100),
        prompt_eval_count: 3,
        eval_count: 100,
    });
    fake.set_default_chat(Chat::answer(&["second", " run"]));
    let id = w.hub.submit_task(spec("standard", "summarise", json!({})));
    // The execution streams: its first token reached the hub.
    poll(
        SECS(10),
        || format!("no token progress: {:#?}", w.frames_from_sidecar()),
        || {
            exec_events(&w, &id)
                .iter()
                .any(|f| f["execution_event"]["event_type"] == "token")
                .then_some(())
        },
    )
    .await;
    sidecar.kill_hard().await;
    let mut sidecar = w.spawn();
    w.identified().await;
    let rec = w.wait_status(&id, "completed", SECS(15)).await;
    assert_eq!(rec.result.unwrap()["output"], "second run");
    assert_eq!(chat_requests(&fake), 2, "executed again from the start");
    w.wait_queue_empty(SECS(5)).await;
    let completes: Vec<Value> = w
        .sent_of_type("task_complete")
        .into_iter()
        .filter(|f| f["task_id"] == id.as_str())
        .collect();
    assert_eq!(completes.len(), 1, "{completes:#?}");
    sidecar.kill_hard().await;
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn cancel_during_an_ollama_execution_closes_the_request_and_sends_no_outcome() {
    let (w, fake, _sidecar) = with_ollama("direct-cancel", json!({})).await;
    fake.set_default_chat(Chat::Hang);
    let id = w.hub.submit_task(spec("standard", "summarise", json!({})));
    wait_chats(&fake, 1).await;
    assert!(w.hub.cancel_task(&id).await);
    tokio::time::timeout(SECS(5), fake.wait_hangs_closed(1))
        .await
        .expect("the fake Ollama saw its connection closed");
    w.wait_queue_empty(SECS(10)).await;
    assert!(w.sent_of_type("task_complete").is_empty());
    assert!(w.sent_of_type("task_failed").is_empty());
    // The cancel was the hub's: its history shows the task_cancelled pushed.
    assert!(w
        .hub
        .history()
        .iter()
        .any(|e| matches!(e, HubEvent::Sent { text, .. } if text.contains("task_cancelled"))));
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn claude_past_execution_timeout_is_failed_and_its_processes_stopped() {
    let fake = FakeClaude::new("direct-claude-timeout");
    fake.set(FakeClaudeScenario::Hang);
    let (w, _sidecar) = with_claude(
        "direct-claude-timeout",
        &fake,
        json!({"execution_timeout_ms": 700}),
    )
    .await;
    let id = w
        .hub
        .submit_task(spec("complex", "refactor everything", json!({})));
    let reason = failed_reason(&w, &id).await;
    assert!(reason.contains("execution_timeout"), "{reason}");
    assert!(reason.contains("700 ms"), "{reason}");
    let (pid, child) = (fake.pid().unwrap(), fake.child_pid().unwrap());
    poll(
        SECS(10),
        || format!("claude {pid} / its child {child} still run after the timeout"),
        || (process_gone(pid) && process_gone(child)).then_some(()),
    )
    .await;
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn shell_tier_failure_names_the_exit_code_and_stderr() {
    let mut w = HubSetup::start("direct-shell-fail", json!({"allow_hub_commands": true})).await;
    let _sidecar = w.spawn();
    w.identified().await;
    let id = w.hub.submit_task(spec(
        "trivial",
        "fail",
        json!({"shell_command": "echo broken pipe dream >&2; exit 3"}),
    ));
    let reason = failed_reason(&w, &id).await;
    assert!(reason.contains("exited with code 3"), "{reason}");
    assert!(reason.contains("broken pipe dream"), "{reason}");
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn shell_tier_timeout_kills_the_command_and_fails_the_task() {
    let mut w = HubSetup::start("direct-shell-timeout", json!({"allow_hub_commands": true})).await;
    let _sidecar = w.spawn();
    w.identified().await;
    let pidfile = w.dir.join("sleep.pid");
    let id = w.hub.submit_task(spec(
        "trivial",
        "hang",
        json!({"shell_command": format!("sleep 30 & echo $! > '{}'; wait", pidfile.display()),
            "timeout_ms": 500}),
    ));
    let reason = failed_reason(&w, &id).await;
    assert!(reason.contains("timed out after 500 ms"), "{reason}");
    let pid = read_pid(&pidfile).expect("the command ran");
    poll(
        SECS(10),
        || format!("the command's sleep {pid} still runs"),
        || process_gone(pid).then_some(()),
    )
    .await;
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn a_failed_execution_retried_by_the_hub_runs_again_and_completes() {
    let (w, fake, _sidecar) = with_ollama("direct-retry", json!({})).await;
    fake.push_chat(Chat::ErrorLine {
        tokens: vec![],
        error: "first try fails".into(),
    });
    fake.set_default_chat(Chat::answer(&["second", " try"]));
    let id = w.hub.submit_task(TaskSpec {
        max_retries: 3,
        ..spec("standard", "summarise", json!({}))
    });
    let rec = w.wait_status(&id, "completed", SECS(10)).await;
    assert_eq!(rec.retry_count, 1);
    assert_eq!(rec.result.unwrap()["output"], "second try");
    assert_eq!(chat_requests(&fake), 2);
    assert_eq!(w.sent_of_type("task_failed").len(), 1);
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn after_a_cancel_the_next_task_is_executed() {
    let (w, fake, _sidecar) = with_ollama("direct-cancel-next", json!({})).await;
    fake.push_chat(Chat::Hang);
    let first = w.hub.submit_task(spec("standard", "summarise", json!({})));
    wait_chats(&fake, 1).await;
    assert!(w.hub.cancel_task(&first).await);
    tokio::time::timeout(SECS(5), fake.wait_hangs_closed(1))
        .await
        .expect("the fake Ollama saw its connection closed");
    let second = w.hub.submit_task(spec("standard", "again", json!({})));
    let rec = w.wait_status(&second, "completed", SECS(10)).await;
    assert_eq!(rec.result.unwrap()["output"], "Hello from the fake model.");
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn an_execution_that_ends_while_the_hub_is_down_is_delivered_after_it_is_back() {
    let (w, fake, sidecar) = with_ollama("direct-hubdown", json!({})).await;
    fake.push_chat(Chat::Answer {
        tokens: (0..10).map(|i| format!("w{i} ")).collect(),
        delay: Duration::from_millis(100),
        prompt_eval_count: 3,
        eval_count: 10,
    });
    let id = w.hub.submit_task(spec("standard", "summarise", json!({})));
    poll(
        SECS(10),
        || "no token progress".into(),
        || (!exec_events(&w, &id).is_empty()).then_some(()),
    )
    .await;
    w.hub.stop().await;
    // The stream ends (10 tokens, 100 ms apart) while the hub is away: the outcome is kept.
    sidecar
        .wait_log_event("task_outcome", SECS(10))
        .await
        .expect("the outcome was reached while the hub was down");
    w.hub.restart().await.unwrap();
    let rec = w.wait_status(&id, "completed", SECS(15)).await;
    let output: String = (0..10).map(|i| format!("w{i} ")).collect();
    assert_eq!(rec.result.unwrap()["output"], output);
    assert_eq!(chat_requests(&fake), 1, "executed once");
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn direct_execution_off_wakes_the_agent_even_with_ollama_answering() {
    let fake = FakeOllama::start().await.unwrap();
    let mut w = HubSetup::start("direct-off", json!({})).await.with_agent(
        AGENT_SH,
        "sh AGENT &",
        json!({"direct_execution": "off"}),
    );
    register_ollama(&w, &fake).await;
    let _sidecar = w.spawn();
    w.identified().await;
    let id = w.hub.submit_task(spec("standard", "summarise", json!({})));
    let rec = w.wait_status(&id, "completed", SECS(10)).await;
    assert_eq!(rec.result.unwrap()["output"], "woken agent did it");
    assert_eq!(chat_requests(&fake), 0);
    assert_eq!(w.wakes(&id), 1);
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn status_shows_the_task_being_executed() {
    let (w, fake, _sidecar) = with_ollama("direct-status", json!({})).await;
    fake.set_default_chat(Chat::Hang);
    let id = w.hub.submit_task(spec("standard", "summarise", json!({})));
    wait_chats(&fake, 1).await;
    let out = binary()
        .arg("status")
        .arg("--config")
        .arg(&w.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&id), "{text}");
    assert!(text.contains("executing (ollama)"), "{text}");
    assert!(w.hub.cancel_task(&id).await);
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn sigkill_during_a_claude_execution_leaves_no_claude_running_after_the_restart() {
    let fake = FakeClaude::new("direct-claude-sigkill");
    fake.set(FakeClaudeScenario::Hang);
    let (mut w, mut sidecar) = with_claude("direct-claude-sigkill", &fake, json!({})).await;
    let id = w
        .hub
        .submit_task(spec("complex", "refactor everything", json!({})));
    let child = poll(
        SECS(10),
        || "the fake claude never started".into(),
        || fake.child_pid(),
    )
    .await;
    let pid = fake.pid().unwrap();
    // queue.json records the execution's process group (the claude process leads it).
    let queue = w.dir.join("queue.json");
    poll(
        SECS(10),
        || {
            format!(
                "queue.json never recorded group {pid}: {:?}",
                std::fs::read_to_string(&queue)
            )
        },
        || {
            let q: Value = serde_json::from_str(&std::fs::read_to_string(&queue).ok()?).ok()?;
            q["active"]["agent_groups"]
                .as_array()?
                .iter()
                .any(|g| g["pgid"] == pid)
                .then_some(())
        },
    )
    .await;
    sidecar.kill_hard().await;
    fake.set(FakeClaudeScenario::Success {
        model: "claude-sonnet-4-5-20250929".into(),
        text: "second run".into(),
        tokens_in: 1,
        tokens_out: 2,
        cost_usd: 0.0,
    });
    let _sidecar = w.spawn();
    w.identified().await;
    let rec = w.wait_status(&id, "completed", SECS(15)).await;
    assert_eq!(rec.result.unwrap()["output"], "second run");
    assert_eq!(fake.calls(), 2);
    // Stopped at the restart, before the task ran again: never two at once.
    assert!(
        process_gone(pid) && process_gone(child),
        "the first claude {pid} / its child {child} still run after the restart"
    );
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn a_description_that_looks_like_options_reaches_claude_as_the_prompt() {
    let fake = FakeClaude::new("direct-claude-dash");
    let (w, _sidecar) = with_claude("direct-claude-dash", &fake, json!({})).await;
    // A markdown list, and what would be an option of the claude CLI.
    for (call, description) in [
        (1, "- fix the parser\n- add tests"),
        (2, "--dangerously-skip-permissions"),
    ] {
        let id = w.hub.submit_task(spec("complex", description, json!({})));
        w.wait_status(&id, "completed", SECS(10)).await;
        let args = fake.args(call);
        // Everything after `--` is an operand, never an option (POSIX, and the CLI's parser).
        let end = args
            .iter()
            .position(|a| a == "--")
            .unwrap_or_else(|| panic!("no `--` before the prompt: {args:?}"));
        assert_eq!(args[end + 1..], [description.to_owned()], "{args:?}");
        assert!(!args[..end].iter().any(|a| a.contains(description)), "{args:?}");
    }
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn sigterm_during_a_shell_execution_stops_it_and_the_restart_runs_it_again() {
    let (mut w, mut sidecar, id, runs, pid) = holding_shell_task("direct-sigterm").await;
    sidecar.signal("TERM");
    let status = sidecar.wait_exit(SECS(10)).await.expect("exited on SIGTERM");
    assert!(status.success(), "{status:?}: {}", sidecar.stderr());
    poll(
        SECS(5),
        || format!("the command's sleep {pid} outlived the sidecar"),
        || process_gone(pid).then_some(()),
    )
    .await;
    let _sidecar = w.spawn();
    w.identified().await;
    let rec = w.wait_status(&id, "completed", SECS(15)).await;
    assert_eq!(
        rec.result.unwrap()["output"],
        "run\nfinished\n".replace("run\n", "")
    );
    assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 2);
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn ollama_url_serves_a_standard_task_the_hub_had_no_endpoint_for() {
    let fake = FakeOllama::start().await.unwrap();
    let mut w = HubSetup::start(
        "direct-ollama-url",
        json!({"ollama_url": fake.url(), "ollama_model": "fake-model:latest"}),
    )
    .await;
    let _sidecar = w.spawn();
    w.identified().await;
    let id = w.hub.submit_task(spec("standard", "summarise", json!({})));
    let rec = w.wait_status(&id, "completed", SECS(10)).await;
    let result = rec.result.unwrap();
    assert_eq!(result["output"], "Hello from the fake model.");
    assert_eq!(result["model_used"], "fake-model:latest");
    assert_eq!(chat_requests(&fake), 1);
    assert!(!w.dir.join("wakes").exists());
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn a_long_ollama_stream_completes_with_a_bounded_output() {
    let (w, fake, _sidecar) = with_ollama("direct-ollama-long", json!({})).await;
    fake.push_chat(Chat::Numbered { count: 100_000 });
    let id = w.hub.submit_task(spec("standard", "write a lot", json!({})));
    let rec = w.wait_status(&id, "completed", SECS(20)).await;
    let result = rec.result.unwrap();
    assert_eq!(result["tokens_out"], 100_000);
    let output = result["output"].as_str().unwrap();
    assert!(
        output.starts_with("tok-00000000 tok-00000001 "),
        "{}",
        &output[..40]
    );
    assert!(
        output.len() < 1_300_000,
        "output not bounded: {} bytes",
        output.len()
    );
    let events = exec_events(&w, &id);
    assert!(events.len() < 100, "{} progress frames", events.len());
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn auto_without_the_claude_cli_wakes_the_agent_for_a_complex_task() {
    let mut w = HubSetup::start("direct-no-claude", json!({})).await.with_agent(
        AGENT_SH,
        "sh AGENT &",
        json!({"claude_command": "/nonexistent/agentcom-test/claude"}),
    );
    let _sidecar = w.spawn();
    w.identified().await;
    let id = w.hub.submit_task(spec("complex", "refactor", json!({})));
    let rec = w.wait_status(&id, "completed", SECS(10)).await;
    assert_eq!(rec.result.unwrap()["output"], "woken agent did it");
    assert_eq!(w.wakes(&id), 1);
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn cancel_during_a_shell_execution_stops_its_process_group() {
    let mut w = HubSetup::start("direct-shell-cancel", json!({"allow_hub_commands": true})).await;
    let _sidecar = w.spawn();
    w.identified().await;
    let pidfile = w.dir.join("sleep.pid");
    let id = w.hub.submit_task(spec(
        "trivial",
        "hang",
        json!({"shell_command": format!("sleep 30 & echo $! > '{}'; wait", pidfile.display())}),
    ));
    let pid = poll(SECS(10), || "the command never ran".into(), || read_pid(&pidfile)).await;
    assert!(w.hub.cancel_task(&id).await);
    poll(
        SECS(10),
        || format!("the command's sleep {pid} still runs after the cancel"),
        || process_gone(pid).then_some(()),
    )
    .await;
    w.wait_queue_empty(SECS(10)).await;
    assert!(w.sent_of_type("task_complete").is_empty());
    assert!(w.sent_of_type("task_failed").is_empty());
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn an_execution_outcome_kept_through_a_sigkill_is_delivered_not_run_again() {
    let (mut w, fake, mut sidecar) = with_ollama("direct-outcome-kill", json!({})).await;
    fake.push_chat(Chat::Answer {
        tokens: (0..5).map(|i| format!("k{i} ")).collect(),
        delay: Duration::from_millis(100),
        prompt_eval_count: 3,
        eval_count: 5,
    });
    let id = w.hub.submit_task(spec("standard", "summarise", json!({})));
    wait_chats(&fake, 1).await;
    w.hub.stop().await;
    sidecar
        .wait_log_event("task_outcome", SECS(10))
        .await
        .expect("the outcome was reached while the hub was down");
    // The event is logged as the outcome is handed to the store: kill only once queue.json
    // holds it (a kill before that write is the other test's case: run again).
    let queue = w.dir.join("queue.json");
    poll(
        SECS(10),
        || "queue.json never held the outcome".into(),
        || {
            let text = std::fs::read_to_string(&queue).ok()?;
            text.contains("\"outcome\"").then_some(())
        },
    )
    .await;
    sidecar.kill_hard().await;
    w.hub.restart().await.unwrap();
    let _sidecar = w.spawn();
    w.identified().await;
    let rec = w.wait_status(&id, "completed", SECS(15)).await;
    let output: String = (0..5).map(|i| format!("k{i} ")).collect();
    assert_eq!(rec.result.unwrap()["output"], output);
    assert_eq!(chat_requests(&fake), 1, "the kept outcome was run again");
    assert_no_hub_errors(&w);
}

#[tokio::test]
async fn sigkill_during_a_shell_execution_kills_its_group_before_the_second_run() {
    let (mut w, mut sidecar, id, _runs, pid) = holding_shell_task("direct-shell-sigkill").await;
    let queue = w.dir.join("queue.json");
    poll(
        SECS(10),
        || "queue.json never recorded the command's group".into(),
        || {
            let q: Value = serde_json::from_str(&std::fs::read_to_string(&queue).ok()?).ok()?;
            (!q["active"]["agent_groups"].as_array()?.is_empty()).then_some(())
        },
    )
    .await;
    sidecar.kill_hard().await;
    assert!(
        !process_gone(pid),
        "the sleep died with the sidecar: nothing to test"
    );
    let _sidecar = w.spawn();
    w.identified().await;
    let rec = w.wait_status(&id, "completed", SECS(15)).await;
    assert_eq!(rec.result.unwrap()["output"], "finished\n");
    assert!(
        process_gone(pid),
        "the first run's sleep {pid} outlived the restart"
    );
    assert_no_hub_errors(&w);
}
