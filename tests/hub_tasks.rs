//! The embedded hub's task side through its handle API, on a paused clock: the double-assign
//! knob, capability matching, cancel, admin push-task and hostile task frames; then its task
//! endpoints over real HTTP (submit, get, list, retry, cancel, classify) and the scheduler's
//! priority, depends_on and assign_to rules (the overdue and TTL sweeps: hub_sweeps.rs; the
//! stuck sweep and reclaims from other agents: hub_reclaims.rs).

mod support;

use std::time::Duration;

use agentcom_sidecar::hub::{EmbeddedHub, HubOptions, TaskSpec};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::hub_client::*;
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::Message;

/// Options that keep a silent client connected for hours (no idle close, no reaper kill).
fn quiet_opts() -> HubOptions {
    HubOptions {
        idle_timeout: Duration::from_secs(100_000),
        reaper_ttl: Duration::from_secs(100_000),
        ..HubOptions::default()
    }
}

async fn hub(opts: HubOptions) -> EmbeddedHub {
    EmbeddedHub::start(opts).await.expect("hub starts")
}

/// Asserts `agent`'s FSM is in `state` holding `task`.
fn assert_fsm(hub: &EmbeddedHub, agent: &str, state: &str, task: &str) {
    let fsm = hub.agent_state(agent).expect("fsm");
    assert_eq!(
        (fsm.fsm_state.as_str(), fsm.current_task_id.as_deref()),
        (state, Some(task))
    );
}

/// Asserts the hub's log holds one line: `event` about `task_id` with `detail`.
fn assert_only_log(hub: &EmbeddedHub, event: &str, task_id: &str, detail: &str) {
    let log = hub.hub_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        (
            log[0].event.as_str(),
            log[0].task_id.as_deref(),
            log[0].detail.as_str()
        ),
        (event, Some(task_id), detail)
    );
}

fn spec(description: &str, caps: &[&str]) -> TaskSpec {
    TaskSpec {
        description: description.into(),
        needed_capabilities: caps.iter().map(|c| c.to_string()).collect(),
        ..TaskSpec::default()
    }
}

#[tokio::test(start_paused = true)]
async fn double_assign_knob_gives_a_busy_agent_a_second_task() {
    let hub = hub(quiet_opts()).await;
    let mut ws = agent(&hub, "dbl-1", &["code"]).await;
    let first = hub.submit_task(spec("one", &["code"]));
    let assign = recv(&mut ws).await;
    assert_eq!(
        (assign["task_id"].as_str(), assign["generation"].as_u64()),
        (Some(first.as_str()), Some(1))
    );
    let second = hub.submit_task(spec("two", &["code"]));
    silent(&mut ws, "ws").await;
    assert_eq!(hub.task(&second).map(|t| t.status), Some("queued".into()));

    hub.set_double_assign(true);
    let assign = recv(&mut ws).await;
    assert_eq!(assign["type"], "task_assign");
    assert_eq!(assign["task_id"], second.as_str());
    assert_eq!(assign["generation"], 1);
    let task = hub.task(&second).expect("second task");
    assert_eq!(
        (task.status.as_str(), task.assigned_to.as_deref()),
        ("assigned", Some("dbl-1"))
    );
    // Both are assigned to the same agent; its FSM refused the second (assigned -> assigned is
    // no transition of the real AgentFSM) and holds the first, with no timer for the second.
    assert_eq!(hub.task(&first).map(|t| t.status), Some("assigned".into()));
    assert_fsm(&hub, "dbl-1", "assigned", &first);
    assert_only_log(
        &hub,
        "fsm_invalid_transition",
        &second,
        "from_state assigned, to_state assigned, trigger task_assigned",
    );
    hub.stop().await;
}

#[tokio::test(start_paused = true)]
async fn capabilities_must_all_be_declared() {
    let hub = hub(quiet_opts()).await;
    let mut coder = agent(&hub, "cap-coder", &["code"]).await;
    let gpu_task = hub.submit_task(spec("needs a gpu", &["code", "gpu"]));
    silent(&mut coder, "coder").await;
    assert_eq!(hub.task(&gpu_task).map(|t| t.status), Some("queued".into()));

    // A task with no needs goes to anyone; FIFO does not block on the unassignable one.
    let any = hub.submit_task(spec("anything", &[]));
    assert_eq!(recv(&mut coder).await["task_id"], any.as_str());

    let mut gpu = agent(&hub, "cap-gpu", &["gpu", "code", "docs"]).await;
    let assign = recv(&mut gpu).await;
    assert_eq!(assign["task_id"], gpu_task.as_str());
    assert_eq!(
        hub.task(&gpu_task).and_then(|t| t.assigned_to),
        Some("cap-gpu".into())
    );
    assert_eq!(recv(&mut coder).await["type"], "agent_joined");
    silent(&mut coder, "coder").await;
    hub.stop().await;
}

#[tokio::test(start_paused = true)]
async fn cancel_unknown_queued_and_assigned() {
    let hub = hub(quiet_opts()).await;
    assert!(!hub.cancel_task("task-00000000000000ff").await);
    let queued = hub.submit_task(spec("nobody here", &[]));
    assert!(hub.cancel_task(&queued).await);
    assert!(hub.task(&queued).is_none());
    assert!(!hub.cancel_task(&queued).await);

    let mut ws = agent(&hub, "cancel-1", &[]).await;
    let id = hub.submit_task(spec("to cancel", &[]));
    assert_eq!(recv(&mut ws).await["task_id"], id.as_str());
    assert!(hub.cancel_task(&id).await);
    let cancelled = recv(&mut ws).await;
    assert_eq!(cancelled["type"], "task_cancelled");
    assert_eq!(cancelled["task_id"], id.as_str());
    assert!(cancelled["timestamp"].is_u64());
    let fsm = hub.agent_state("cancel-1").expect("fsm");
    assert_eq!((fsm.fsm_state.as_str(), fsm.current_task_id), ("idle", None));
    hub.stop().await;
}

#[tokio::test(start_paused = true)]
async fn admin_push_task_is_not_in_the_queue() {
    let hub = hub(quiet_opts()).await;
    assert!(hub.push_task("nobody", "x").await.is_err());
    assert!(hub.restart_sidecar("nobody", "upgrade").await.is_err());
    let mut ws = agent(&hub, "push-1", &["code"]).await;
    let id = hub.push_task("push-1", "wake me").await.expect("pushed");
    let assign = recv(&mut ws).await;
    assert_eq!(assign["generation"], 0);
    assert_eq!(assign["task_id"], id.as_str());
    assert_eq!(assign["description"], "wake me");
    assert!(assign["routing_decision"].is_null());
    assert!(hub.task(&id).is_none());
    send(&mut ws, json!({"type": "task_accepted", "task_id": id})).await;
    assert_eq!(recv(&mut ws).await["status"], "accepted");
    send(
        &mut ws,
        json!({"type": "task_complete", "task_id": id, "generation": 0}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["error"], "task_complete_failed: not_found");
    assert_eq!(
        hub.agent_state("push-1").map(|s| s.fsm_state),
        Some("working".into())
    );
    hub.restart_sidecar("push-1", "upgrade").await.expect("restart");
    assert_eq!(
        recv(&mut ws).await,
        json!({"reason": "upgrade", "type": "restart_sidecar"})
    );
    hub.stop().await;
}

#[tokio::test(start_paused = true)]
async fn odd_generations_and_results_do_not_panic() {
    let hub = hub(quiet_opts()).await;
    let mut ws = agent(&hub, "odd-1", &[]).await;
    let id = hub.submit_task(spec("odd", &[]));
    recv(&mut ws).await;
    for generation in [json!(-1), json!(i64::MIN), json!(u64::MAX)] {
        send(
            &mut ws,
            json!({"type": "task_complete", "task_id": id, "generation": generation}),
        )
        .await;
        assert_eq!(
            recv(&mut ws).await["error"],
            "task_complete_failed: stale_generation"
        );
        send(
            &mut ws,
            json!({"type": "state_report", "task_id": id, "generation": generation}),
        )
        .await;
        assert_eq!(recv(&mut ws).await["action"], "abort");
    }
    // tokens_used falls back to result.tokens_used; error wins over reason.
    send(
        &mut ws,
        json!({"type": "task_complete", "task_id": id, "generation": 1, "result": {"tokens_used": 7}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["status"], "complete");
    let task = hub.task(&id).expect("task");
    assert_eq!((task.tokens_used, task.status.as_str()), (Some(7), "completed"));

    let failing = hub.submit_task(TaskSpec {
        max_retries: 0,
        ..spec("fails", &[])
    });
    recv(&mut ws).await;
    send(
        &mut ws,
        json!({"type": "task_failed", "task_id": failing, "generation": 1, "error": "e", "reason": "r"}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["status"], "dead_letter");
    assert_eq!(hub.task(&failing).and_then(|t| t.last_error), Some("e".into()));
    hub.stop().await;
}

#[tokio::test(start_paused = true)]
async fn hub_side_close_reclaims_and_another_agent_gets_the_task() {
    let hub = hub(quiet_opts()).await;
    let mut first = agent(&hub, "gone-1", &["code"]).await;
    let id = hub.submit_task(spec("handed over", &["code"]));
    assert_eq!(recv(&mut first).await["generation"], 1);
    // Busy agents do not get it; the second agent joins while the first holds the task.
    let mut second = agent(&hub, "gone-2", &["code"]).await;
    assert_eq!(recv(&mut first).await["type"], "agent_joined");
    silent(&mut second, "second").await;
    // A JSON array crashes the first agent's connection on the real hub: close 1011.
    first
        .send(Message::text(r#"[{"type":"ping"}]"#))
        .await
        .expect("send");
    let mut close = None;
    while let Ok(Some(Ok(msg))) = timeout(Duration::from_secs(5), first.next()).await {
        if let Message::Close(Some(frame)) = msg {
            close = Some(u16::from(frame.code));
        }
    }
    assert_eq!(close, Some(1011));
    assert_eq!(recv(&mut second).await["type"], "agent_left");
    let assign = recv(&mut second).await;
    assert_eq!(
        (assign["task_id"].as_str(), assign["generation"].as_u64()),
        (Some(id.as_str()), Some(3))
    );
    let task = hub.task(&id).expect("task");
    assert_eq!(task.assigned_to.as_deref(), Some("gone-2"));
    assert_eq!(
        task.history[2],
        ("reclaimed".to_string(), Some("agent_disconnect".to_string()))
    );
    assert!(hub.agent_state("gone-1").is_none());
    hub.stop().await;
}

#[tokio::test(start_paused = true)]
async fn unaccepted_push_task_times_out_silently() {
    let hub = hub(quiet_opts()).await;
    let mut ws = agent(&hub, "late-1", &[]).await;
    let id = hub.push_task("late-1", "never accepted").await.expect("pushed");
    recv(&mut ws).await;
    let fsm = hub.agent_state("late-1").expect("fsm");
    assert_eq!(
        (fsm.fsm_state.as_str(), fsm.current_task_id.as_deref()),
        ("assigned", Some(id.as_str()))
    );
    sleep(Duration::from_secs(59)).await;
    assert_eq!(
        hub.agent_state("late-1").map(|s| s.fsm_state),
        Some("assigned".into())
    );
    sleep(Duration::from_secs(1)).await;
    silent(&mut ws, "ws").await;
    let fsm = hub.agent_state("late-1").expect("fsm");
    assert_eq!((fsm.fsm_state.as_str(), fsm.current_task_id), ("idle", None));
    assert_eq!(fsm.flags, ["unresponsive"]);
    hub.stop().await;
}

/// What the real hub does with a refusal before acceptance (transcript task_failed_before_accept):
/// the queue counts a retry and requeues the task, but the agent's FSM ignores the event and
/// stays assigned for the 60 s acceptance timeout; then it is idle and flagged unresponsive,
/// nothing is reclaimed, and neither queued task is assigned to it.
#[tokio::test(start_paused = true)]
async fn task_failed_before_task_accepted_stalls_the_agent_60_s_and_costs_a_retry() {
    let hub = hub(quiet_opts()).await;
    let mut ws = agent(&hub, "refuser", &["code"]).await;
    let first = hub.submit_task(spec("no room", &["code"]));
    let assign = recv(&mut ws).await;
    assert_eq!(assign["task_id"], first.as_str());
    let assigned_at = tokio::time::Instant::now();
    send(
        &mut ws,
        json!({"type": "task_failed", "task_id": first, "generation": 1, "reason": "busy"}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "task_ack", "status": "retried", "task_id": first})
    );
    let task = hub.task(&first).expect("task");
    assert_eq!(
        (
            task.status.as_str(),
            task.generation,
            task.retry_count,
            task.assigned_to
        ),
        ("queued", 2, 1, None)
    );
    assert_fsm(&hub, "refuser", "assigned", &first);
    assert_only_log(
        &hub,
        "fsm_unexpected_event",
        &first,
        "event task_failed, current_state assigned",
    );
    sleep(Duration::from_secs(5)).await;
    let second = hub.submit_task(spec("second", &["code"]));
    silent(&mut ws, "ws").await;
    sleep(Duration::from_secs(59) - assigned_at.elapsed()).await;
    assert_eq!(hub.agent_state("refuser").unwrap().fsm_state, "assigned");
    sleep(Duration::from_secs(2)).await;
    let fsm = hub.agent_state("refuser").expect("fsm");
    assert_eq!(
        (fsm.fsm_state.as_str(), fsm.current_task_id, fsm.flags),
        ("idle", None, vec!["unresponsive".to_string()])
    );
    let events: Vec<String> = hub.hub_log().into_iter().map(|l| l.event).collect();
    assert_eq!(
        events,
        [
            "fsm_unexpected_event",
            "fsm_acceptance_timeout",
            "fsm_reclaim_failed"
        ]
    );
    sleep(Duration::from_secs(8)).await;
    silent(&mut ws, "ws").await;
    for (id, generation) in [(&first, 2), (&second, 0)] {
        let task = hub.task(id).expect("task");
        assert_eq!((task.status.as_str(), task.generation), ("queued", generation));
    }
    hub.stop().await;
}

/// The same refusal after `task_accepted` (what the sidecar sends when it cannot run a task):
/// the agent is idle at once and the task comes straight back to it, no warning.
#[tokio::test(start_paused = true)]
async fn task_failed_after_task_accepted_frees_the_agent_at_once() {
    let hub = hub(quiet_opts()).await;
    let mut ws = agent(&hub, "acceptor", &["code"]).await;
    let id = hub.submit_task(spec("cannot run", &["code"]));
    assert_eq!(recv(&mut ws).await["generation"], 1);
    send(&mut ws, json!({"type": "task_accepted", "task_id": id})).await;
    assert_eq!(recv(&mut ws).await["status"], "accepted");
    assert_eq!(hub.agent_state("acceptor").unwrap().fsm_state, "working");
    send(
        &mut ws,
        json!({"type": "task_failed", "task_id": id, "generation": 1, "reason": "no_wake_command_configured"}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["status"], "retried");
    let again = recv(&mut ws).await;
    assert_eq!(
        (
            again["type"].as_str(),
            again["task_id"].as_str(),
            again["generation"].as_u64()
        ),
        (Some("task_assign"), Some(id.as_str()), Some(3))
    );
    assert!(hub.hub_log().is_empty(), "{:?}", hub.hub_log());
    assert!(hub.agent_state("acceptor").unwrap().flags.is_empty());
    hub.stop().await;
}

/// A double assignment accepted in turn (what the sidecar does with max_pending 1 and above):
/// both tasks complete, nothing is stalled or flagged, no retry is counted; the hub only logs
/// that the agent's FSM refused the second assignment.
#[tokio::test(start_paused = true)]
async fn a_double_assignment_accepted_in_turn_completes_both_without_a_retry() {
    let hub = hub(quiet_opts()).await;
    hub.set_double_assign(true);
    let mut ws = agent(&hub, "holder", &["code"]).await;
    let first = hub.submit_task(spec("one", &["code"]));
    let second = hub.submit_task(spec("two", &["code"]));
    let mut got = vec![];
    for _ in 0..2 {
        let assign = recv(&mut ws).await;
        got.push(assign["task_id"].as_str().unwrap().to_string());
    }
    assert_eq!(got, [first.clone(), second.clone()]);
    for id in [&first, &second] {
        send(&mut ws, json!({"type": "task_accepted", "task_id": id})).await;
        assert_eq!(recv(&mut ws).await["status"], "accepted");
    }
    sleep(Duration::from_secs(61)).await;
    for id in [&first, &second] {
        send(
            &mut ws,
            json!({"type": "task_complete", "task_id": id, "generation": 1, "result": {}}),
        )
        .await;
        assert_eq!(recv(&mut ws).await["status"], "complete");
        let task = hub.task(id).expect("task");
        assert_eq!((task.status.as_str(), task.retry_count), ("completed", 0));
    }
    let fsm = hub.agent_state("holder").unwrap();
    assert_eq!((fsm.fsm_state.as_str(), fsm.flags.len()), ("idle", 0));
    let log: Vec<(String, Option<String>)> =
        hub.hub_log().into_iter().map(|l| (l.event, l.task_id)).collect();
    assert_eq!(log, [("fsm_invalid_transition".to_string(), Some(second))]);
    hub.stop().await;
}

/// The 8 keys of `routing_decision` on the wire, sorted.
const WIRE_DECISION_KEYS: [&str; 8] = [
    "classification_reason",
    "effective_tier",
    "estimated_cost_tier",
    "fallback_reason",
    "fallback_used",
    "selected_endpoint",
    "selected_model",
    "target_type",
];

fn keys(v: &Value) -> Vec<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

#[tokio::test(start_paused = true)]
async fn a_bad_complexity_tier_is_a_422_and_queues_nothing() {
    let hub = hub(quiet_opts()).await;
    let mut ws = agent(&hub, "tier-1", &["code"]).await;
    let bad = hub.try_submit_task(TaskSpec {
        complexity_tier: Some("huge".into()),
        ..spec("Write the release notes", &["code"])
    });
    let body = bad.expect_err("422");
    assert_eq!(body["error"], "validation_failed");
    assert_eq!(body["errors"][0]["field"], "complexity_tier");
    assert_eq!(body["errors"][0]["value"], "huge");
    silent(&mut ws, "ws").await;
    hub.stop().await;
}

#[tokio::test(start_paused = true)]
async fn each_tier_routes_like_the_real_scheduler_and_the_record_keeps_the_extras() {
    let hub = hub(quiet_opts()).await;
    let mut ws = agent(&hub, "tier-2", &["code"]).await;
    let cases = [
        (
            Some("trivial"),
            "Write the release notes",
            "sidecar",
            Value::Null,
            "free",
        ),
        (
            Some("complex"),
            "Write the release notes",
            "claude",
            json!("claude_api"),
            "api",
        ),
        (None, "Migrate the database", "claude", json!("claude_api"), "api"),
        (None, "Bump version to 2.0", "sidecar", Value::Null, "free"),
        (Some("unknown"), "fix typo", "ollama", Value::Null, "local"),
    ];
    for (tier, description, target, endpoint, cost) in cases {
        let id = hub.submit_task(TaskSpec {
            complexity_tier: tier.map(String::from),
            ..spec(description, &["code"])
        });
        let assign = recv(&mut ws).await;
        assert_eq!(assign["task_id"], id.as_str());
        let wire = &assign["routing_decision"];
        assert_eq!(
            keys(wire),
            WIRE_DECISION_KEYS,
            "{description}: exactly the 8 keys"
        );
        assert_eq!(wire["target_type"], target, "{description}");
        assert_eq!(wire["selected_endpoint"], endpoint, "{description}");
        assert_eq!(wire["estimated_cost_tier"], cost, "{description}");
        let record = hub.task(&id).expect("record");
        let stored = record.routing_decision.expect("stored decision");
        for extra in ["candidate_count", "decided_at", "fallback_from_tier"] {
            assert!(stored.get(extra).is_some(), "{description}: stored {extra}");
        }
        assert!(stored["decided_at"]
            .as_u64()
            .is_some_and(|ms| ms > 1_000_000_000_000));
        assert_eq!(record.complexity, assign["complexity"], "{description}");
        send(&mut ws, json!({"type": "task_accepted", "task_id": id})).await;
        recv(&mut ws).await;
        send(
            &mut ws,
            json!({"type": "task_complete", "task_id": id, "generation": 1, "result": {}}),
        )
        .await;
        assert_eq!(recv(&mut ws).await["status"], "complete");
    }
    hub.stop().await;
}

#[tokio::test(start_paused = true)]
async fn file_hints_and_steps_feed_the_inference_and_are_forwarded() {
    let hub = hub(quiet_opts()).await;
    let mut ws = agent(&hub, "tier-3", &["code"]).await;
    let hints: Vec<Value> = (0..4).map(|i| json!({"path": format!("src/f{i}.rs")})).collect();
    let id = hub.submit_task(TaskSpec {
        file_hints: hints.clone(),
        max_verification_retries: Some(9),
        ..spec("Rewrite the parser", &["code"])
    });
    let assign = recv(&mut ws).await;
    assert_eq!(assign["file_hints"], json!(hints));
    assert_eq!(
        assign["complexity"],
        json!({"effective_tier": "complex", "explicit_tier": null, "source": "inferred",
            "inferred": {"tier": "complex", "confidence": 0.8}})
    );
    assert_eq!(
        assign["routing_decision"]["classification_reason"],
        "inferred:complex (confidence 0.80, word_count=3, files=4)"
    );
    assert_eq!(assign["max_verification_retries"], 5, "capped at 5");
    assert_eq!(hub.task(&id).map(|t| t.max_verification_retries), Some(5));
    hub.stop().await;
}

#[tokio::test(start_paused = true)]
async fn task_complete_stores_tokens_and_verification_reports_and_refuses_wrong_types() {
    let hub = hub(quiet_opts()).await;
    let mut ws = agent(&hub, "ver-1", &["code"]).await;
    let report = json!({"run_number": 2, "status": "pass", "checks": []});
    let mut ids = Vec::new();
    for (tokens, result) in [
        (json!(7), json!({"status": "success", "tokens_used": 99})),
        (Value::Null, json!({"status": "success", "tokens_used": 12})),
    ] {
        let id = hub.submit_task(spec("Write the release notes", &["code"]));
        recv(&mut ws).await;
        send(&mut ws, json!({"type": "task_accepted", "task_id": id})).await;
        recv(&mut ws).await;
        // Wrong types are refused by validation and change nothing.
        for bad in [
            json!({"verification_report": "pass"}),
            json!({"verification_history": {"run_number": 1}}),
            json!({"verification_history": ["x"]}),
        ] {
            let mut frame = json!({"type": "task_complete", "task_id": id, "generation": 1});
            for (k, v) in bad.as_object().expect("object") {
                frame[k] = v.clone();
            }
            send(&mut ws, frame).await;
            let error = recv(&mut ws).await;
            assert_eq!(error["error"], "validation_failed", "{bad}");
            assert_eq!(error["errors"][0]["error"], "wrong_type", "{bad}");
            assert_eq!(hub.task(&id).map(|t| t.status), Some("assigned".into()));
        }
        send(
            &mut ws,
            json!({"type": "task_complete", "task_id": id, "generation": 1, "result": result,
                "tokens_used": tokens, "verification_report": report,
                "verification_history": [report]}),
        )
        .await;
        assert_eq!(recv(&mut ws).await["status"], "complete");
        ids.push(id);
    }
    let first = hub.task(&ids[0]).expect("first");
    assert_eq!(first.tokens_used, Some(7), "top-level tokens_used wins");
    assert_eq!(first.verification_report, Some(report.clone()));
    assert_eq!(first.verification_history, vec![report.clone()]);
    let second = hub.task(&ids[1]).expect("second");
    assert_eq!(second.tokens_used, Some(12), "else result.tokens_used");
    // Null reports: None and [].
    let id = hub.submit_task(spec("Write the release notes", &["code"]));
    recv(&mut ws).await;
    send(
        &mut ws,
        json!({"type": "task_complete", "task_id": id, "generation": 1, "result": null,
            "verification_report": null, "verification_history": null}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["status"], "complete");
    let third = hub.task(&id).expect("third");
    assert_eq!(
        (
            third.verification_report,
            third.verification_history,
            third.tokens_used
        ),
        (None, vec![], None)
    );
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The task endpoints of the HTTP API, over real TCP with a raw HTTP/1.1 client (real clock).
// ---------------------------------------------------------------------------------------------

async fn post_task(hub: &EmbeddedHub, token: &str, body: Value) -> (u16, Value) {
    http_tcp(hub, "POST", "/api/tasks", token, Some(body)).await
}

/// The error entries' `field:error` pairs of a 422 body.
fn errors(body: &Value) -> Vec<String> {
    assert_eq!(body["error"], "validation_failed", "{body}");
    body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["field"].as_str().unwrap(),
                e["error"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn post_task_validates_every_field_like_the_hub() {
    let hub = hub(quiet_opts()).await;
    hub.set_rate_limits(false);
    let token = hub.add_token("submitter");
    let (status, body) = post_task(&hub, &token, json!({})).await;
    assert_eq!(
        (status, body),
        (
            422,
            json!({"error": "validation_failed", "errors": [
            {"detail": "field is required", "error": "required", "field": "description"}]})
        )
    );
    let wrong = json!({"description": 1, "priority": 2, "metadata": "x", "max_retries": "3",
        "needed_capabilities": ["code", 7], "file_hints": [1], "skip_verification": 1,
        "complete_by": 1.5, "success_criteria": "all", "verification_timeout_ms": "60",
        "depends_on": "task-1", "goal_id": 3});
    let (status, body) = post_task(&hub, &token, wrong).await;
    assert_eq!(status, 422);
    assert_eq!(
        errors(&body),
        [
            "description:wrong_type",
            "complete_by:wrong_type",
            "file_hints[0]:wrong_type",
            "max_retries:wrong_type",
            "metadata:wrong_type",
            "needed_capabilities[1]:wrong_type",
            "priority:wrong_type",
            "skip_verification:wrong_type",
            "success_criteria:wrong_type",
            "verification_timeout_ms:wrong_type",
            "depends_on:wrong_type",
            "goal_id:wrong_type",
        ]
    );
    assert_eq!(body["errors"][1]["detail"], "expected integer, got float");
    assert_eq!(body["errors"][8]["detail"], "expected array, got string");
    let (_, body) = post_task(&hub, &token, json!({"description": "d".repeat(10_001)})).await;
    assert_eq!(errors(&body), ["description:too_long"]);
    let enrich = json!({"description": "x", "file_hints": [{"path": "a"}, {"reason": "no path"}],
        "verification_steps": [{"type": "file_exists"}, {"type": "", "target": "t"}],
        "complexity_tier": "huge"});
    let (status, body) = post_task(&hub, &token, enrich).await;
    assert_eq!(status, 422);
    assert_eq!(
        errors(&body),
        [
            "file_hints[1].path:required",
            "verification_steps[0].target:required",
            "verification_steps[1].type:required",
            "complexity_tier:invalid_value",
        ]
    );
    assert_eq!(
        body["errors"][3]["detail"],
        "must be one of: trivial, standard, complex, unknown"
    );
    let (status, body) = post_task(
        &hub,
        &token,
        json!({"description": "x", "depends_on": ["task-00000000000000ff"]}),
    )
    .await;
    assert_eq!(
        (status, errors(&body)),
        (422, vec!["depends_on[0]:invalid_value".to_string()])
    );
    assert!(
        http_tcp(&hub, "GET", "/api/tasks", &token, None).await.1["tasks"] == json!([]),
        "nothing was queued"
    );
    // Accepted: the priority as its number (unknown names are normal), warnings past 10 steps.
    for (name, number) in [
        ("urgent", 0),
        ("high", 1),
        ("normal", 2),
        ("low", 3),
        ("critical", 2),
    ] {
        let (status, body) = post_task(&hub, &token, json!({"description": "p", "priority": name})).await;
        assert_eq!(
            (status, &body["priority"], &body["status"]),
            (201, &json!(number), &json!("queued"))
        );
        assert!(body["task_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("task-") && id.len() == 21));
        assert!(body["created_at"]
            .as_u64()
            .is_some_and(|ms| ms > 1_000_000_000_000));
        assert!(body.get("warnings").is_none());
    }
    let steps: Vec<Value> = (0..11)
        .map(|i| json!({"type": "file_exists", "target": format!("f{i}")}))
        .collect();
    let (status, body) = post_task(
        &hub,
        &token,
        json!({"description": "many", "verification_steps": steps}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        body["warnings"],
        json!(["Task has 11 verification steps (soft limit: 10). Consider splitting into smaller tasks."])
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_task_submitted_over_http_is_assigned_with_its_fields_and_shown_whole() {
    let hub = hub(quiet_opts()).await;
    let token = hub.add_token("submitter");
    let mut ws = agent(&hub, "http-1", &["code"]).await;
    let steps = json!([{"type": "file_exists", "target": "README.md"}]);
    let (status, created) = post_task(
        &hub,
        &token,
        json!({"description": "Add a README section", "needed_capabilities": ["code"],
            "priority": "high", "metadata": {"k": "v"}, "repo": "https://example.invalid/r",
            "branch": "feature/x", "success_criteria": ["README has a section"],
            "verification_steps": steps, "skip_verification": true, "verification_timeout_ms": 60000,
            "max_retries": 2, "max_verification_retries": 9, "complete_by": 9_999_999_999_999_i64,
            "goal_id": "goal-1", "file_hints": [{"path": "README.md", "reason": "edit"}]}),
    )
    .await;
    assert_eq!(status, 201);
    let id = created["task_id"].as_str().expect("id").to_string();
    let assign = recv(&mut ws).await;
    assert_eq!(assign["task_id"], id.as_str());
    for (key, want) in [
        ("repo", json!("https://example.invalid/r")),
        ("branch", json!("feature/x")),
        ("success_criteria", json!(["README has a section"])),
        ("skip_verification", json!(true)),
        ("verification_timeout_ms", json!(60000)),
        ("max_verification_retries", json!(5)),
        ("verification_steps", steps.clone()),
        ("metadata", json!({"k": "v"})),
    ] {
        assert_eq!(assign[key], want, "task_assign {key}");
    }
    let (status, task) = http_tcp(&hub, "GET", &format!("/api/tasks/{id}"), &token, None).await;
    assert_eq!(status, 200);
    let mut keys: Vec<&str> = task
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "assigned_at",
            "assigned_to",
            "branch",
            "complete_by",
            "complexity",
            "created_at",
            "depends_on",
            "description",
            "file_hints",
            "generation",
            "goal_id",
            "history",
            "id",
            "last_error",
            "max_retries",
            "max_verification_retries",
            "metadata",
            "needed_capabilities",
            "priority",
            "repo",
            "result",
            "retry_count",
            "routing_decision",
            "status",
            "submitted_by",
            "success_criteria",
            "tokens_used",
            "updated_at",
            "verification_history",
            "verification_report",
            "verification_steps"
        ]
    );
    for (key, want) in [
        ("status", json!("assigned")),
        ("assigned_to", json!("http-1")),
        ("priority", json!(1)),
        ("submitted_by", json!("submitter")),
        ("max_retries", json!(2)),
        ("goal_id", json!("goal-1")),
        ("complete_by", json!(9_999_999_999_999_i64)),
        ("verification_report", Value::Null),
        ("verification_history", json!([])),
        ("result", Value::Null),
    ] {
        assert_eq!(task[key], want, "GET {key}");
    }
    let events: Vec<&Value> = task["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["event"])
        .collect();
    assert_eq!(events, [&json!("assigned"), &json!("queued")], "newest first");
    assert!(task["history"][0]["timestamp"]
        .as_u64()
        .is_some_and(|ms| ms >= created["created_at"].as_u64().unwrap()));
    // The verification reports of task_complete are stored verbatim and shown.
    let report =
        json!({"task_id": id, "run_number": 2, "status": "pass", "checks": [], "summary": {"total": 0}});
    let first = json!({"task_id": id, "run_number": 1, "status": "fail", "checks": []});
    send(&mut ws, json!({"type": "task_accepted", "task_id": id})).await;
    recv(&mut ws).await;
    send(
        &mut ws,
        json!({"type": "task_complete", "task_id": id, "generation": 1, "result": {"status": "success"},
            "tokens_used": 42, "verification_report": report, "verification_history": [first, report]}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["status"], "complete");
    let (_, task) = http_tcp(&hub, "GET", &format!("/api/tasks/{id}"), &token, None).await;
    assert_eq!(task["status"], "completed");
    assert_eq!(task["verification_report"], report);
    assert_eq!(task["verification_history"], json!([first, report]));
    assert_eq!(task["tokens_used"], 42);
    assert_eq!(task["history"][0]["details"], json!({"tokens_used": 42}));
    let (status, body) = http_tcp(&hub, "GET", "/api/tasks/task-00000000000000ff", &token, None).await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": "task_not_found", "task_id": "task-00000000000000ff"})
        )
    );
    drop(ws);
    hub.stop().await;
}

#[tokio::test]
async fn listing_filters_and_orders_and_dead_letters_can_be_retried_or_cancelled() {
    let hub = hub(quiet_opts()).await;
    let token = hub.add_token("lister");
    let mut ids = Vec::new();
    for (desc, priority, goal) in [("a", "low", "g1"), ("b", "urgent", "g2"), ("c", "normal", "g1")] {
        let body = json!({"description": desc, "priority": priority, "goal_id": goal, "needed_capabilities": ["none"]});
        ids.push(
            post_task(&hub, &token, body).await.1["task_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let list = |q: &'static str| {
        let hub = hub.clone();
        let token = token.clone();
        async move {
            let (status, body) = http_tcp(&hub, "GET", &format!("/api/tasks{q}"), &token, None).await;
            assert_eq!(status, 200);
            assert_eq!(body["count"], body["tasks"].as_array().unwrap().len());
            body["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["description"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list("").await, ["b", "c", "a"], "by priority");
    assert_eq!(list("?priority=urgent").await, ["b"]);
    assert_eq!(
        list("?priority=2").await,
        ["b", "c", "a"],
        "a number names no priority: ignored"
    );
    assert_eq!(list("?goal_id=g1").await, ["c", "a"]);
    assert_eq!(list("?status=queued&goal_id=g1").await, ["c", "a"]);
    assert_eq!(
        list("?status=bogus").await,
        ["b", "c", "a"],
        "an unknown status is ignored"
    );
    assert!(list("?status=assigned").await.is_empty());
    assert!(list("?assigned_to=nobody").await.is_empty());
    // A task dead-lettered on its first failure: listed apart, retried back into the queue.
    let mut ws = agent(&hub, "dl-1", &["dl"]).await;
    let (_, created) = post_task(
        &hub,
        &token,
        json!({"description": "fails", "max_retries": 1, "needed_capabilities": ["dl"]}),
    )
    .await;
    let id = created["task_id"].as_str().unwrap().to_string();
    assert_eq!(recv(&mut ws).await["generation"], 1);
    send(&mut ws, json!({"type": "task_accepted", "task_id": id})).await;
    recv(&mut ws).await;
    send(
        &mut ws,
        json!({"type": "task_failed", "task_id": id, "generation": 1, "error": "boom"}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["status"], "dead_letter");
    assert!(!list("").await.contains(&"fails".to_string()));
    let (_, dead) = http_tcp(&hub, "GET", "/api/tasks/dead-letter", &token, None).await;
    assert_eq!(
        (dead["count"].clone(), dead["tasks"][0]["id"].clone()),
        (json!(1), json!(id))
    );
    let (_, task) = http_tcp(&hub, "GET", &format!("/api/tasks/{id}"), &token, None).await;
    assert_eq!(
        (&task["status"], &task["last_error"]),
        (&json!("dead_letter"), &json!("boom"))
    );
    let queued = &ids[0];
    let (status, body) = http_tcp(&hub, "POST", &format!("/api/tasks/{queued}/retry"), &token, None).await;
    assert_eq!(
        (status, body),
        (404, json!({"error": "task_not_found", "task_id": queued}))
    );
    let (status, body) = http_tcp(&hub, "POST", &format!("/api/tasks/{id}/retry"), &token, None).await;
    assert_eq!(
        (status, body),
        (200, json!({"status": "requeued", "task_id": id, "priority": 2}))
    );
    let again = recv(&mut ws).await;
    assert_eq!(
        (again["task_id"].as_str(), again["generation"].as_u64()),
        (Some(id.as_str()), Some(3))
    );
    let (_, task) = http_tcp(&hub, "GET", &format!("/api/tasks/{id}"), &token, None).await;
    assert_eq!(
        (&task["retry_count"], &task["last_error"], &task["status"]),
        (&json!(0), &Value::Null, &json!("assigned"))
    );
    assert_eq!(
        task["history"][1],
        json!({"event": "queued", "details": "retried from dead-letter", "timestamp": task["history"][1]["timestamp"]})
    );
    // Cancel: a queued task, then an unknown one.
    let (status, body) = http_tcp(&hub, "POST", &format!("/api/tasks/{queued}/cancel"), &token, None).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"status": "cancelled", "task_id": queued, "previous_status": "queued"})
        )
    );
    let (status, body) = http_tcp(&hub, "POST", &format!("/api/tasks/{queued}/cancel"), &token, None).await;
    assert_eq!(
        (status, body),
        (404, json!({"error": "task_not_found", "task_id": queued}))
    );
    assert!(!hub.retry_task(queued));
    drop(ws);
    hub.stop().await;
}

#[tokio::test]
async fn classify_over_http_uses_the_tasks_tier_and_report_and_the_auto_merge_flag() {
    let hub = hub(HubOptions {
        risk_auto_merge_tier1: true,
        ..quiet_opts()
    })
    .await;
    let token = hub.add_token("classifier");
    let small = json!({"lines_added": 3, "lines_deleted": 1, "files_changed": ["src/a.rs"], "files_added": [], "tests_exist": true});
    let mut ids = Vec::new();
    for tier in ["trivial", "complex"] {
        let body = json!({"description": "x", "complexity_tier": tier, "needed_capabilities": ["none"]});
        ids.push(
            post_task(&hub, &token, body).await.1["task_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let classify = |id: String, body: Value| {
        let (hub, token) = (hub.clone(), token.clone());
        async move {
            http(
                &hub,
                "POST",
                &format!("/api/tasks/{id}/classify"),
                &token,
                Some(body),
            )
            .await
        }
    };
    let (status, body) = classify(ids[0].clone(), small.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"tier": 1, "auto_merge_eligible": true, "reasons": ["complexity: trivial", "lines: 4",
            "files: 1", "new files: 0", "tests: present", "verification: passed"]})
    );
    let (_, body) = classify(ids[1].clone(), small.clone()).await;
    assert_eq!(
        body,
        json!({"tier": 2, "auto_merge_eligible": false, "reasons": ["complexity: complex"]})
    );
    let (_, body) = classify(
        ids[0].clone(),
        json!({"files_changed": [".github/workflows/ci.yml"], "tests_exist": true}),
    )
    .await;
    assert_eq!(
        body["reasons"],
        json!(["protected paths: .github/workflows/ci.yml"])
    );
    hub.set_auto_merge_tier1(false);
    assert_eq!(
        classify(ids[0].clone(), small.clone()).await.1["auto_merge_eligible"],
        false
    );
    let (status, body) = classify(ids[0].clone(), json!({"lines_added": "3", "files_changed": "a"})).await;
    assert_eq!(
        (status, errors(&body)),
        (
            422,
            vec![
                "files_changed:wrong_type".to_string(),
                "lines_added:wrong_type".to_string()
            ]
        )
    );
    let (status, _) = classify("task-00000000000000ff".into(), small.clone()).await;
    assert_eq!(status, 404);
    // Classifying changes nothing on the task.
    let (_, task) = http_tcp(&hub, "GET", &format!("/api/tasks/{}", ids[0]), &token, None).await;
    assert_eq!(task["history"].as_array().map(Vec::len), Some(1));
    hub.stop().await;
}

#[tokio::test(start_paused = true)]
async fn priority_dependencies_and_assign_to_steer_the_scheduler() {
    let hub = hub(quiet_opts()).await;
    let first = hub.submit_task(TaskSpec {
        priority: "low".into(),
        ..spec("low", &["s"])
    });
    let urgent = hub.submit_task(TaskSpec {
        priority: "urgent".into(),
        ..spec("urgent", &["s"])
    });
    let after = hub.submit_task(TaskSpec {
        depends_on: vec![first.clone()],
        ..spec("after low", &["s"])
    });
    let pinned = hub.submit_task(TaskSpec {
        assign_to: Some("s-2".into()),
        ..spec("pinned", &["s"])
    });
    let mut one = agent(&hub, "s-1", &["s"]).await;
    assert_eq!(
        recv(&mut one).await["task_id"],
        urgent.as_str(),
        "urgent first, though submitted later"
    );
    let complete =
        |ws_id: String| json!({"type": "task_complete", "task_id": ws_id, "generation": 1, "result": {}});
    send(&mut one, complete(urgent.clone())).await;
    assert_eq!(recv(&mut one).await["status"], "complete");
    // "after low" waits for "low"; "pinned" waits for s-2.
    assert_eq!(recv(&mut one).await["task_id"], first.as_str());
    send(&mut one, complete(first.clone())).await;
    assert_eq!(recv(&mut one).await["status"], "complete");
    assert_eq!(recv(&mut one).await["task_id"], after.as_str());
    assert_eq!(hub.task(&pinned).map(|t| t.status), Some("queued".into()));
    let mut two = agent(&hub, "s-2", &["s"]).await;
    assert_eq!(recv(&mut two).await["task_id"], pinned.as_str());
    hub.stop().await;
}

#[tokio::test]
async fn stats_agent_states_and_admin_push_over_http() {
    let hub = hub(quiet_opts()).await;
    let token = hub.add_token("admin");
    let mut ws = agent(&hub, "st-1", &["st"]).await;
    for priority in ["urgent", "normal", "normal"] {
        post_task(
            &hub,
            &token,
            json!({"description": "x", "priority": priority, "needed_capabilities": ["none"]}),
        )
        .await;
    }
    let (status, stats) = http_tcp(&hub, "GET", "/api/tasks/stats", &token, None).await;
    assert_eq!(
        (status, stats),
        (
            200,
            json!({"by_status": {"queued": 3}, "by_priority": {"0": 1, "2": 2}, "dead_letter": 0, "queued_index_size": 3})
        )
    );
    let (status, states) = http_tcp(&hub, "GET", "/api/agents/states", &token, None).await;
    assert_eq!(status, 200);
    let agent = &states["agents"][0];
    assert_eq!(
        (
            &agent["agent_id"],
            &agent["fsm_state"],
            &agent["capabilities"],
            &agent["name"]
        ),
        (
            &json!("st-1"),
            &json!("idle"),
            &json!([{"name": "st"}]),
            &json!("st-1")
        )
    );
    let (status, body) = http(
        &hub,
        "POST",
        "/api/admin/push-task",
        &token,
        Some(json!({"agent_id": "st-1"})),
    )
    .await;
    assert_eq!(
        (status, errors(&body)),
        (422, vec!["description:required".to_string()])
    );
    let push = json!({"agent_id": "st-1", "description": "pushed", "metadata": {"m": 1}});
    let (status, body) = http_tcp(&hub, "POST", "/api/admin/push-task", &token, Some(push)).await;
    assert_eq!(
        (status, &body["status"], &body["agent_id"]),
        (200, &json!("pushed"), &json!("st-1"))
    );
    let assign = recv(&mut ws).await;
    assert_eq!(
        (&assign["task_id"], &assign["generation"], &assign["metadata"]),
        (&body["task_id"], &json!(0), &json!({"m": 1}))
    );
    let (status, state) = http_tcp(&hub, "GET", "/api/agents/st-1/state", &token, None).await;
    assert_eq!(
        (status, &state["fsm_state"], &state["current_task_id"]),
        (200, &json!("assigned"), &body["task_id"])
    );
    assert!(state["last_state_change"].as_u64() >= state["connected_at"].as_u64());
    let gone = json!({"agent_id": "nobody", "description": "x"});
    let (status, body) = http_tcp(&hub, "POST", "/api/admin/push-task", &token, Some(gone)).await;
    assert_eq!(
        (status, body),
        (404, json!({"error": "agent_not_connected", "agent_id": "nobody"}))
    );
    let (status, body) = http_tcp(&hub, "GET", "/api/agents/nobody/state", &token, None).await;
    assert_eq!((status, body), (404, json!({"error": "agent_not_found"})));
    let (status, body) = http(
        &hub,
        "POST",
        "/api/admin/agents/st-1/restart",
        &token,
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"agent_id": "st-1", "reason": "admin_commanded", "status": "restart_commanded"})
        )
    );
    assert_eq!(
        recv(&mut ws).await,
        json!({"reason": "admin_commanded", "type": "restart_sidecar"})
    );
    drop(ws);
    hub.stop().await;
}
