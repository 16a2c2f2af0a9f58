//! The embedded hub's task side through its handle API, on a paused clock: the double-assign
//! knob, capability matching, the stuck sweep, cancel, admin push-task and hostile task frames.

use std::time::Duration;

use agentcom_sidecar::hub::{EmbeddedHub, HubOptions, TaskSpec};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::DuplexStream;
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<DuplexStream>;

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

/// Opens a socket and identifies as `agent` with `caps`.
async fn agent(hub: &EmbeddedHub, agent: &str, caps: &[&str]) -> Ws {
    let (client, server) = tokio::io::duplex(1 << 20);
    hub.serve_stream(server);
    let (mut ws, _) = tokio_tungstenite::client_async("ws://127.0.0.1/ws", client)
        .await
        .expect("handshake");
    let token = hub.add_token(agent);
    send(
        &mut ws,
        json!({"type": "identify", "agent_id": agent, "token": token, "capabilities": caps}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"agent_id": agent, "type": "identified"})
    );
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// The next text frame as JSON (within 5 s of virtual time).
async fn recv(ws: &mut Ws) -> Value {
    loop {
        match timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).expect("json"),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Asserts nothing arrives within 100 ms.
async fn silent(ws: &mut Ws) {
    if let Ok(frame) = timeout(Duration::from_millis(100), ws.next()).await {
        panic!("unexpected {frame:?}");
    }
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
    silent(&mut ws).await;
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
    // Both are assigned to the same agent; its FSM holds the newer one.
    assert_eq!(hub.task(&first).map(|t| t.status), Some("assigned".into()));
    let fsm = hub.agent_state("dbl-1").expect("fsm");
    assert_eq!(fsm.current_task_id.as_deref(), Some(second.as_str()));
    hub.stop().await;
}

#[tokio::test(start_paused = true)]
async fn capabilities_must_all_be_declared() {
    let hub = hub(quiet_opts()).await;
    let mut coder = agent(&hub, "cap-coder", &["code"]).await;
    let gpu_task = hub.submit_task(spec("needs a gpu", &["code", "gpu"]));
    silent(&mut coder).await;
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
    silent(&mut coder).await;
    hub.stop().await;
}

#[tokio::test(start_paused = true)]
async fn stuck_sweep_reclaims_after_10_min_or_20_when_working() {
    let opts = HubOptions {
        acceptance_timeout: Duration::from_secs(100_000),
        ..quiet_opts()
    };
    let hub = hub(opts).await;
    let mut ws = agent(&hub, "stuck-1", &["code"]).await;
    let id = hub.submit_task(spec("slow", &["code"]));
    assert_eq!(recv(&mut ws).await["generation"], 1);

    // Never accepted (FSM assigned): reclaimed by the first sweep past 10 min, and re-assigned
    // at once to the same idle agent, with no other frame.
    sleep(Duration::from_secs(600)).await;
    silent(&mut ws).await;
    sleep(Duration::from_secs(30)).await;
    let again = recv(&mut ws).await;
    assert_eq!(
        (again["task_id"].as_str(), again["generation"].as_u64()),
        (Some(id.as_str()), Some(3))
    );
    let events: Vec<String> = hub
        .task(&id)
        .expect("task")
        .history
        .into_iter()
        .map(|h| h.0)
        .collect();
    assert_eq!(events, ["queued", "assigned", "reclaimed", "assigned"]);

    // Accepted (FSM working): still held at 15 min, reclaimed once 20 min have passed.
    send(&mut ws, json!({"type": "task_accepted", "task_id": id})).await;
    assert_eq!(recv(&mut ws).await["status"], "accepted");
    sleep(Duration::from_secs(900)).await;
    silent(&mut ws).await;
    assert_eq!(hub.task(&id).map(|t| t.generation), Some(3));
    // task_progress touches updated_at: the 20 minutes start again.
    send(&mut ws, json!({"type": "task_progress", "task_id": id})).await;
    sleep(Duration::from_secs(1100)).await;
    silent(&mut ws).await;
    assert_eq!(hub.task(&id).map(|t| t.generation), Some(3));
    sleep(Duration::from_secs(150)).await;
    let again = recv(&mut ws).await;
    assert_eq!(again["generation"], 5);
    assert_eq!(
        hub.agent_state("stuck-1").map(|s| s.fsm_state),
        Some("assigned".into())
    );
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
    silent(&mut second).await;
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
    silent(&mut ws).await;
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
    let fsm = hub.agent_state("refuser").expect("fsm");
    assert_eq!(
        (fsm.fsm_state.as_str(), fsm.current_task_id.as_deref()),
        ("assigned", Some(first.as_str()))
    );
    let log = hub.hub_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        (
            log[0].event.as_str(),
            log[0].detail.as_str(),
            log[0].task_id.as_deref()
        ),
        (
            "fsm_unexpected_event",
            "event task_failed, current_state assigned",
            Some(first.as_str())
        )
    );
    sleep(Duration::from_secs(5)).await;
    let second = hub.submit_task(spec("second", &["code"]));
    silent(&mut ws).await;
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
    silent(&mut ws).await;
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
/// both tasks complete, nothing is stalled or flagged, no retry is counted.
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
    assert!(hub.hub_log().is_empty(), "{:?}", hub.hub_log());
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
    silent(&mut ws).await;
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
