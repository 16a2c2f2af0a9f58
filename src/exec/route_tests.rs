//! [`Runners::route`], row by row of the choice table (issue 10, "Choosing how a task runs"), and
//! a routed task carried through [`Runners`] with in-test executors and a fake probe.

use super::executor::{ExecFn, Executors};
use super::*;
use crate::event_log::Event;
use crate::exec::direct::{EventKind, ExecEvent, ExecOutput};
use crate::exec::pipeline::NoPipeline;
use serde_json::{json, Value};
use std::cell::Cell;
use std::rc::Rc;
use tokio::time::Instant;

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("agentcom-route-")
        .tempdir()
        .unwrap()
}

/// A config in `dir` with these extra keys.
fn config(dir: &Path, keys: Value) -> Config {
    let mut v = json!({"agent_id":"a1","token":TOKEN,"hub_url":"ws://127.0.0.1:4000/ws",
        "wake_command":"exit 0"});
    for (k, val) in keys.as_object().unwrap() {
        v[k] = val.clone();
    }
    if v["wake_command"].is_null() {
        v.as_object_mut().unwrap().remove("wake_command");
    }
    let mut config = Config::parse(&v.to_string(), &dir.join("config.json")).unwrap();
    config.results_dir = dir.join("results");
    config.queue_file = dir.join("queue.json");
    config
}

/// An executor that answers `output` with `model_used` `model`.
fn answering(model: &'static str, output: &'static str) -> ExecFn {
    Box::new(move |job, events| {
        Box::pin(async move {
            let _ = events.send(ExecEvent {
                kind: EventKind::Token,
                text: output.into(),
                model: Some(model.into()),
            });
            Ok(ExecOutput {
                output: format!("{output} ({})", job.endpoint.unwrap_or_default()),
                model_used: model.into(),
                tokens_in: 3,
                tokens_out: 4,
                ..ExecOutput::default()
            })
        })
    })
}

/// Executors that answer, and a probe that says `answers` (counting its calls).
fn direct(answers: bool, calls: Rc<Cell<u32>>) -> Option<(Executors, ProbeFn)> {
    let probe: ProbeFn = Box::new(move |url| {
        calls.set(calls.get() + 1);
        Box::pin(async move {
            if answers {
                Ok(vec!["m".to_owned()])
            } else {
                Err(format!("connection refused ({url})"))
            }
        })
    });
    Some((
        Executors {
            ollama: answering("qwen3:8b", "ollama said"),
            claude: answering("claude-sonnet-4.5", "claude said"),
            shell: answering("none", "shell said"),
        },
        probe,
    ))
}

fn runners(dir: &Path, keys: Value) -> Runners {
    Runners::with(
        &config(dir, keys),
        direct(true, Rc::default()),
        Box::new(NoPipeline),
    )
}

/// A task with this routing_decision (and metadata).
fn task(routing: Value, metadata: Value) -> TaskRecord {
    let frame = json!({"type":"task_assign","task_id":"t1","description":"d","generation":1,
        "routing_decision": routing, "metadata": metadata});
    TaskRecord::from_assign(frame.as_object().unwrap(), 0).unwrap()
}

fn ollama(endpoint: Value) -> TaskRecord {
    task(
        json!({"target_type":"ollama","effective_tier":"standard","selected_endpoint":endpoint,
            "selected_model":"qwen3:8b","fallback_used":endpoint.is_null()}),
        json!({}),
    )
}

fn claude() -> TaskRecord {
    task(
        json!({"target_type":"claude","effective_tier":"complex","selected_endpoint":"claude_api","selected_model":"claude"}),
        json!({}),
    )
}

fn shell(command: Option<&str>) -> TaskRecord {
    let metadata = match command {
        Some(c) => json!({"shell_command": c}),
        None => json!({}),
    };
    task(
        json!({"target_type":"sidecar","effective_tier":"trivial"}),
        metadata,
    )
}

fn wake(why: &str) -> Route {
    Route::Wake { why: why.into() }
}

/// A program that exists on every platform the tests run on.
fn a_program() -> String {
    std::env::current_exe().unwrap().display().to_string()
}

fn answered(r: &mut Runners, url: &str, answer: Result<(), String>) {
    r.probes.answers.insert(url.to_owned(), (Instant::now(), answer));
}

#[tokio::test]
async fn off_absent_and_wake_routings_wake_the_agent() {
    let dir = temp_dir();
    let off = runners(
        dir.path(),
        json!({"direct_execution":"off","ollama_url":"http://127.0.0.1:9"}),
    );
    assert_eq!(
        off.route(&ollama(json!("10.0.0.5:11434"))),
        wake("direct_execution is off")
    );
    let r = runners(dir.path(), json!({}));
    let plain = TaskRecord::from_assign(json!({"task_id":"t1"}).as_object().unwrap(), 0).unwrap();
    assert_eq!(r.route(&plain), wake("no routing_decision"));
    assert_eq!(
        r.route(&task(json!({"target_type":"wake"}), json!({}))),
        wake("routed to wake")
    );
    // A build without executors wakes for every task.
    let none = Runners::with(
        &config(dir.path(), json!({"direct_execution":"on"})),
        None,
        Box::new(NoPipeline),
    );
    assert_eq!(none.route(&claude()), wake("this build has no direct executors"));
}

#[tokio::test]
async fn auto_ollama_is_probed_then_used_when_it_answers_and_falls_back_when_not() {
    let dir = temp_dir();
    let mut r = runners(dir.path(), json!({}));
    let t = ollama(json!("10.0.0.5:11434"));
    assert_eq!(r.route(&t), Route::Probe("http://10.0.0.5:11434".into()));
    answered(&mut r, "http://10.0.0.5:11434", Ok(()));
    assert_eq!(
        r.route(&t),
        Route::Execute(Plan {
            target: Target::Ollama,
            endpoint: Some("http://10.0.0.5:11434".into()),
            model: Some("qwen3:8b".into()),
            why: "the hub selected it, and it answers".into(),
        })
    );
    answered(&mut r, "http://10.0.0.5:11434", Err("connection refused".into()));
    assert_eq!(
        r.route(&t),
        wake("fallback: no ollama endpoint answered (http://10.0.0.5:11434: connection refused)")
    );
    // A stale answer is asked again.
    r.probes.answers.insert(
        "http://10.0.0.5:11434".into(),
        (Instant::now() - PROBE_TTL, Ok(())),
    );
    assert_eq!(r.route(&t), Route::Probe("http://10.0.0.5:11434".into()));
}

#[tokio::test]
async fn auto_ollama_without_an_endpoint_uses_ollama_url_or_wakes() {
    let dir = temp_dir();
    let r = runners(dir.path(), json!({}));
    // An Ollama that merely runs on the host is not used unless configured.
    assert_eq!(
        r.route(&ollama(Value::Null)),
        wake("fallback: no ollama endpoint: the hub selected none and ollama_url is not set")
    );
    let mut r = runners(
        dir.path(),
        json!({"ollama_url":"http://127.0.0.1:11500","ollama_model":"mine:1b"}),
    );
    assert_eq!(
        r.route(&ollama(Value::Null)),
        Route::Probe("http://127.0.0.1:11500".into())
    );
    answered(&mut r, "http://127.0.0.1:11500", Ok(()));
    match r.route(&ollama(Value::Null)) {
        Route::Execute(plan) => {
            assert_eq!(plan.endpoint.as_deref(), Some("http://127.0.0.1:11500"));
            assert_eq!(plan.model.as_deref(), Some("mine:1b"));
        }
        other => panic!("{other:?}"),
    }
    // The hub's endpoint is dead, ours answers: ours.
    answered(&mut r, "http://10.0.0.5:11434", Err("refused".into()));
    match r.route(&ollama(json!("10.0.0.5:11434"))) {
        Route::Execute(plan) => assert_eq!(plan.endpoint.as_deref(), Some("http://127.0.0.1:11500")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn on_ollama_tries_the_default_endpoint_unprobed() {
    let dir = temp_dir();
    let r = runners(dir.path(), json!({"direct_execution":"on"}));
    let mut t = ollama(Value::Null);
    t.extra["routing_decision"]["selected_model"] = Value::Null;
    assert_eq!(
        r.route(&t),
        Route::Execute(Plan {
            target: Target::Ollama,
            endpoint: Some(DEFAULT_OLLAMA_URL.into()),
            model: Some(DEFAULT_OLLAMA_MODEL.into()),
            why: "direct_execution is on; nothing names an endpoint, Ollama's default".into(),
        })
    );
}

#[tokio::test]
async fn claude_runs_when_its_command_is_found() {
    let dir = temp_dir();
    let found = runners(dir.path(), json!({"claude_command": a_program()}));
    match found.route(&claude()) {
        Route::Execute(plan) => {
            assert_eq!(plan.target, Target::Claude);
            // The hub's "claude" is a placeholder: no model unless the config names one.
            assert_eq!(plan.model, None);
        }
        other => panic!("{other:?}"),
    }
    let with_model = runners(
        dir.path(),
        json!({"claude_command": a_program(), "claude_model":"claude-opus-4.5"}),
    );
    match with_model.route(&claude()) {
        Route::Execute(plan) => assert_eq!(plan.model.as_deref(), Some("claude-opus-4.5")),
        other => panic!("{other:?}"),
    }
    let missing = runners(dir.path(), json!({"claude_command":"no-such-claude-here"}));
    assert_eq!(
        missing.route(&claude()),
        wake("fallback: claude_command `no-such-claude-here` was not found (on PATH or as a path)")
    );
}

#[tokio::test]
async fn the_shell_tier_runs_only_with_allow_hub_commands_and_a_command() {
    let dir = temp_dir();
    let closed = runners(dir.path(), json!({}));
    assert_eq!(
        closed.route(&shell(Some("touch /tmp/canary"))),
        wake("fallback: metadata.shell_command runs only with allow_hub_commands (off)")
    );
    let open = runners(dir.path(), json!({"allow_hub_commands": true}));
    match open.route(&shell(Some("echo hi"))) {
        Route::Execute(plan) => assert_eq!(plan.target, Target::Shell),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        open.route(&shell(None)),
        wake("fallback: the task has no metadata.shell_command to run")
    );
}

#[tokio::test]
async fn on_fails_what_cannot_run_here_with_the_reason() {
    let dir = temp_dir();
    let on = runners(
        dir.path(),
        json!({"direct_execution":"on","claude_command":"no-such-claude-here"}),
    );
    assert_eq!(
        on.route(&claude()),
        Route::Fail(
            "claude_command_not_found: claude_command `no-such-claude-here` was not found (on PATH \
             or as a path)"
                .into()
        )
    );
    // Found, it runs.
    let on = runners(
        dir.path(),
        json!({"direct_execution":"on","claude_command": a_program()}),
    );
    assert!(matches!(on.route(&claude()), Route::Execute(_)));
    assert_eq!(
        on.route(&shell(Some("echo hi"))),
        Route::Fail(
            "shell_command_not_allowed: metadata.shell_command runs only with allow_hub_commands (off)"
                .into()
        )
    );
}

#[tokio::test]
async fn neither_executable_nor_wakeable_fails_naming_the_key_that_would_serve_it() {
    let dir = temp_dir();
    let r = runners(
        dir.path(),
        json!({"wake_command": null, "claude_command":"no-such-claude-here"}),
    );
    assert_eq!(
        r.route(&shell(Some("echo hi"))),
        Route::Fail(
            "no_wake_command_configured: fallback: metadata.shell_command runs only with \
             allow_hub_commands (off); set `allow_hub_commands` so it can run here, or a \
             `wake_command` to wake the agent"
                .into()
        )
    );
    match r.route(&claude()) {
        Route::Fail(reason) => assert!(reason.contains("set `claude_command`"), "{reason}"),
        other => panic!("{other:?}"),
    }
    match r.route(&ollama(Value::Null)) {
        Route::Fail(reason) => assert!(reason.contains("set `ollama_url`"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // No setting runs a shell task without a command: only a wake_command serves it.
    assert_eq!(
        r.route(&shell(None)),
        Route::Fail(
            "no_wake_command_configured: fallback: the task has no metadata.shell_command to run; \
             set a `wake_command` to wake the agent"
                .into()
        )
    );
}

#[test]
fn selected_endpoints_become_urls() {
    assert_eq!(
        endpoint_url("10.0.0.5:11434").as_deref(),
        Some("http://10.0.0.5:11434")
    );
    assert_eq!(endpoint_url("gpu-box").as_deref(), Some("http://gpu-box:11434"));
    assert_eq!(endpoint_url("claude_api"), None);
    assert_eq!(endpoint_url(" "), None);
}

async fn next(r: &mut Runners) -> RelayInput {
    tokio::time::timeout(Duration::from_secs(10), r.next_input())
        .await
        .expect("the runners said nothing within 10 s")
}

#[tokio::test(start_paused = true)]
async fn a_routed_task_is_probed_once_chosen_logged_executed_and_reported() {
    let dir = temp_dir();
    let calls = Rc::new(Cell::new(0));
    let mut r = Runners::with(
        &config(dir.path(), json!({})),
        direct(true, calls.clone()),
        Box::new(NoPipeline),
    );
    let start = RunRequest::Start {
        task: ollama(json!("10.0.0.5:11434")),
        attempt: 1,
    };
    assert_eq!(r.handle(start.clone()), [], "waits for the probe");
    match next(&mut r).await {
        RelayInput::Log(Event::ExecutionChosen {
            task_id,
            target,
            endpoint,
            model,
            why,
        }) => {
            assert_eq!(
                (task_id.as_str(), target.as_str(), why.as_str()),
                ("t1", "ollama", "the hub selected it, and it answers")
            );
            assert_eq!(endpoint.as_deref(), Some("http://10.0.0.5:11434"));
            assert_eq!(model.as_deref(), Some("qwen3:8b"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        next(&mut r).await,
        RelayInput::Executing {
            task_id: "t1".into(),
            attempt: 1,
            executor: "ollama".into()
        }
    );
    // The streamed text, and the pipeline's verification run logged, before the end.
    let (mut logged, mut streamed) = (Vec::new(), Vec::new());
    let end = loop {
        match next(&mut r).await {
            RelayInput::Log(event) => logged.push(event.name()),
            RelayInput::ExecutionEvent { event, .. } => streamed.push(event["text"].clone()),
            other => break other,
        }
    };
    assert_eq!(streamed, ["ollama said"]);
    assert_eq!(logged, ["verification_started", "verification_finished"]);
    match end {
        RelayInput::Executed {
            outcome: Ok(result), ..
        } => {
            assert_eq!(result["output"], "ollama said (http://10.0.0.5:11434)");
            assert_eq!(result["model_used"], "qwen3:8b");
            assert_eq!(result["verification_status"], "verified");
        }
        other => panic!("{other:?}"),
    }
    // The answer is cached: a second task goes straight to the executor.
    let now = r.handle(start);
    assert!(
        matches!(now.as_slice(), [RelayInput::Log(_), RelayInput::Executing { .. }]),
        "{now:?}"
    );
    assert_eq!(calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_dead_endpoint_without_wake_command_fails_and_a_stop_drops_a_waiting_start() {
    let dir = temp_dir();
    let mut r = Runners::with(
        &config(dir.path(), json!({"wake_command": null})),
        direct(false, Rc::default()),
        Box::new(NoPipeline),
    );
    let start = RunRequest::Start {
        task: ollama(json!("10.0.0.5:11434")),
        attempt: 1,
    };
    assert_eq!(r.handle(start), []);
    match next(&mut r).await {
        RelayInput::Log(Event::ExecutionChosen { target, why, .. }) => {
            assert_eq!(target, "fail");
            assert!(
                why.contains("connection refused (http://10.0.0.5:11434)"),
                "{why}"
            );
        }
        other => panic!("{other:?}"),
    }
    match next(&mut r).await {
        RelayInput::Executed {
            outcome: Err(reason), ..
        } => assert!(
            reason.starts_with("no_wake_command_configured: fallback: no ollama endpoint answered"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    // A stop while the probe runs drops the task's start.
    let mut r = Runners::with(
        &config(dir.path(), json!({})),
        direct(true, Rc::default()),
        Box::new(NoPipeline),
    );
    r.handle(RunRequest::Start {
        task: ollama(json!("10.0.0.6:11434")),
        attempt: 1,
    });
    r.handle(RunRequest::Stop { task_id: "t1".into() });
    let quiet = tokio::time::timeout(Duration::from_secs(5), r.next_input()).await;
    assert!(quiet.is_err(), "{quiet:?}");
}

/// Feed the runners' requests from `relay` to `r`, and their immediate answers back.
fn run_requests(
    relay: &mut crate::relay::runtime::RelayRuntime,
    r: &mut Runners,
    log: &mut crate::event_log::EventLog,
) {
    while let Some(request) = relay.take_run_request() {
        for input in r.handle(request) {
            relay.handle(input, log);
        }
    }
}

#[tokio::test]
async fn an_execution_cut_short_by_a_kill_is_run_again_from_queue_json_after_the_restart() {
    use crate::event_log::EventLog;
    use crate::protocol::{Outbound, TaskFrame};
    use crate::relay::runtime::RelayRuntime;
    let dir = temp_dir();
    let config = config(dir.path(), json!({"claude_command": a_program()}));
    // A claude execution that never ends: the sidecar dies in the middle of it.
    let hanging = || -> Option<(Executors, ProbeFn)> {
        let (executors, probe) = direct(true, Rc::default()).unwrap();
        let claude: ExecFn = Box::new(|_job, _events| Box::pin(std::future::pending()));
        Some((Executors { claude, ..executors }, probe))
    };
    let assign = json!({"type":"task_assign","task_id":"t1","description":"d","generation":1,
        "routing_decision":{"target_type":"claude","effective_tier":"complex","selected_model":"claude"}});
    {
        let (mut log, _captured) = EventLog::capture("a1");
        let mut r = Runners::with(&config, hanging(), Box::new(NoPipeline));
        let mut relay = RelayRuntime::start(&config, &mut log, |_| {}).unwrap();
        relay.handle(RelayInput::LinkUp, &mut log);
        relay.handle(
            RelayInput::Frame(TaskFrame::Assign(assign.as_object().unwrap().clone())),
            &mut log,
        );
        run_requests(&mut relay, &mut r, &mut log);
        assert!(r.executor.is_running("t1"));
        let queue: Value =
            serde_json::from_str(&std::fs::read_to_string(&config.queue_file).unwrap()).unwrap();
        assert_eq!(queue["active"]["status"], "working", "{queue}");
        assert_eq!(queue["active"]["executed_by"], "claude", "{queue}");
        // SIGKILL: nothing more is written (the relay writes queue.json only when asked to).
        drop((relay, r));
    }
    // The restart: the task is reported, confirmed, and executed again from the start.
    let (mut log, _captured) = EventLog::capture("a1");
    let mut r = Runners::with(&config, direct(true, Rc::default()), Box::new(NoPipeline));
    let mut relay = RelayRuntime::start(&config, &mut log, |tasks| r.recover(tasks)).unwrap();
    relay.handle(RelayInput::LinkUp, &mut log);
    let sent = relay.take_sends();
    assert!(
        matches!(sent.as_slice(), [Outbound::TaskRecovering { task_id, .. }] if task_id == "t1"),
        "{sent:?}"
    );
    relay.handle(
        RelayInput::Frame(TaskFrame::Continue {
            task_id: "t1".into(),
            generation: Some(3),
        }),
        &mut log,
    );
    run_requests(&mut relay, &mut r, &mut log);
    assert!(r.executor.is_running("t1"), "executed again");
    loop {
        let input = next(&mut r).await;
        let done = matches!(input, RelayInput::Executed { .. });
        relay.handle(input, &mut log);
        if done {
            break;
        }
    }
    let sent = relay.take_sends();
    let complete = sent
        .iter()
        .find_map(|f| match f {
            Outbound::TaskComplete {
                generation,
                result,
                tokens_used,
                ..
            } => Some((*generation, result.clone(), *tokens_used)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no task_complete in {sent:?}"));
    assert_eq!(complete.0, 3, "with the generation of the confirmation");
    assert_eq!(complete.1["model_used"], "claude-sonnet-4.5");
    assert_eq!(complete.2, Some(7));
}
