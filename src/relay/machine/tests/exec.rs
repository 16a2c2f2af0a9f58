//! Tasks the sidecar executes itself: `Executing`, `ExecutionEvent`, `Executed`, and what a
//! restart does with a task that was being executed (ours, and the Node sidecar's queue.json).

use super::*;

/// Assign task `id` routed to `target` (with `direct_execution` on in the settings), wake it,
/// and have the runner answer that it executes it.
fn executing(h: &mut H, id: &str, target: &str) -> Vec<RelayAction> {
    h.input(RelayInput::LinkUp);
    let frame = json!({"type":"task_assign","task_id":id,"description":"d","generation":1,"assigned_at":1000,
        "routing_decision":{"target_type":target,"effective_tier":"standard"}});
    let a = h.frame(TaskFrame::Assign(frame.as_object().unwrap().clone()));
    assert!(kinds(&a).contains(&"wake 1".to_string()), "{:?}", kinds(&a));
    h.input(RelayInput::Executing {
        task_id: id.into(),
        attempt: 1,
        executor: target.into(),
    })
}

fn exec_settings() -> RelaySettings {
    RelaySettings {
        direct_execution: true,
        ..settings()
    }
}

#[test]
fn an_execution_is_persisted_as_working_by_its_executor_and_sends_no_wake_result() {
    let mut h = H::with(exec_settings(), vec![]);
    let a = executing(&mut h, "t1", "ollama");
    assert_eq!(kinds(&a), ["persist 1"], "no wake_result: nothing was woken");
    let records = last_persist(&a);
    assert_eq!(records[0].status, "working");
    assert_eq!(records[0].executed_by.as_deref(), Some("ollama"));
    assert_eq!(
        h.relay.snapshot(),
        [("t1".to_owned(), "executing (ollama)", 1)],
        "status shows how the task runs"
    );
    // The agent never sees the bookkeeping.
    assert!(!records[0].to_task_json().contains("executed_by"));
}

#[test]
fn execution_events_go_out_as_task_progress_with_the_event_and_no_progress_number() {
    let mut h = H::with(exec_settings(), vec![]);
    executing(&mut h, "t1", "ollama");
    let event = json!({"event_type":"token","text":"Hel","tokens_so_far":3,"model":"m","timestamp":5});
    let a = h.input(RelayInput::ExecutionEvent {
        task_id: "t1".into(),
        event: event.clone(),
    });
    assert_eq!(
        sends(&a),
        [Outbound::TaskProgress {
            task_id: "t1".into(),
            progress: None,
            execution_event: Some(event.clone()),
        }]
    );
    let wire = serde_json::to_value(&sends(&a)[0]).unwrap();
    assert_eq!(
        wire,
        json!({"type":"task_progress","task_id":"t1","execution_event":event})
    );
    // Link down: nothing is sent (and nothing is queued for later).
    h.input(RelayInput::LinkDown);
    let a = h.input(RelayInput::ExecutionEvent {
        task_id: "t1".into(),
        event: json!({}),
    });
    assert!(sends(&a).is_empty());
}

#[test]
fn a_successful_execution_completes_with_the_result_and_a_top_level_tokens_used() {
    let mut h = H::with(exec_settings(), vec![]);
    executing(&mut h, "t1", "ollama");
    let result = json!({"status":"success","output":"hi","model_used":"m","tokens_in":22,"tokens_out":10});
    let a = h.input(RelayInput::Executed {
        task_id: "t1".into(),
        outcome: Ok(result.clone()),
    });
    assert_eq!(
        sends(&a),
        [Outbound::TaskComplete {
            task_id: "t1".into(),
            generation: 1,
            result: result.as_object().unwrap().clone(),
            tokens_used: Some(32),
            verification_report: None,
            verification_history: None,
        }]
    );
}

#[test]
fn a_failed_execution_is_task_failed_with_the_reason_cut_to_2000_characters() {
    let mut h = H::with(exec_settings(), vec![]);
    executing(&mut h, "t1", "claude");
    let long = "x".repeat(5000);
    let a = h.input(RelayInput::Executed {
        task_id: "t1".into(),
        outcome: Err(long.clone()),
    });
    assert_eq!(sends(&a), [failed("t1", &long[..2000], 1)]);
    assert!(events(&a)
        .iter()
        .any(|e| matches!(e, Event::ExecutionFailed { task_id, .. } if task_id == "t1")));
    // A late second answer changes nothing.
    let a = h.input(RelayInput::Executed {
        task_id: "t1".into(),
        outcome: Ok(json!({"status":"success"})),
    });
    assert!(sends(&a).is_empty());
}

#[test]
fn the_runner_can_fail_a_task_it_could_neither_execute_nor_wake() {
    // The wake attempt itself is answered with Executed(Err): no Executing came first.
    let mut h = H::with(
        RelaySettings {
            wake_configured: false,
            ..exec_settings()
        },
        vec![],
    );
    h.input(RelayInput::LinkUp);
    let frame = json!({"type":"task_assign","task_id":"t1","description":"d","generation":1,
        "routing_decision":{"target_type":"sidecar"}});
    let a = h.frame(TaskFrame::Assign(frame.as_object().unwrap().clone()));
    // Routed, and direct execution allowed: accepted and handed to the runner, not failed.
    assert_eq!(sends(&a), [accepted("t1")]);
    assert!(kinds(&a).contains(&"wake 1".to_string()), "{:?}", kinds(&a));
    let reason = "no_executor_or_wake_command: set allow_hub_commands to run metadata.shell_command, or a wake_command";
    let a = h.input(RelayInput::Executed {
        task_id: "t1".into(),
        outcome: Err(reason.into()),
    });
    assert_eq!(sends(&a), [failed("t1", reason, 1)]);
}

#[test]
fn without_direct_execution_a_routed_task_without_wake_command_is_still_refused() {
    let mut h = H::with(
        RelaySettings {
            wake_configured: false,
            ..settings()
        },
        vec![],
    );
    h.input(RelayInput::LinkUp);
    let frame = json!({"type":"task_assign","task_id":"t1","description":"d","generation":1,
        "routing_decision":{"target_type":"ollama"}});
    let a = h.frame(TaskFrame::Assign(frame.as_object().unwrap().clone()));
    assert_eq!(
        sends(&a),
        [accepted("t1"), failed("t1", "no_wake_command_configured", 1)]
    );
}

#[test]
fn cancel_stops_an_execution_like_an_agent() {
    let mut h = H::with(exec_settings(), vec![]);
    executing(&mut h, "t1", "ollama");
    let a = h.frame(TaskFrame::Cancelled { task_id: "t1".into() });
    assert_eq!(kinds(&a)[0], "kill");
    assert!(h.relay.held_ids().is_empty());
    // The dropped execution's late answer is ignored.
    let a = h.input(RelayInput::Executed {
        task_id: "t1".into(),
        outcome: Ok(json!({"status":"success"})),
    });
    assert!(sends(&a).is_empty());
}

#[test]
fn an_execution_past_task_timeout_is_stopped_and_failed_as_an_execution() {
    let mut h = H::with(
        RelaySettings {
            progress_keepalive: 10_000 * SEC,
            ..exec_settings()
        },
        vec![],
    );
    executing(&mut h, "t1", "ollama");
    let (waited, a) = h.fire();
    assert_eq!(waited, 7200 * SEC);
    assert_eq!(kinds(&a)[0], "kill");
    assert_eq!(
        sends(&a),
        [failed(
            "t1",
            "task_timeout: the execution ran 2 h 0 min 0 s (task_timeout_ms 7200000); it was stopped",
            1
        )]
    );
}

fn routed_record(id: &str, status: &str, target: &str) -> TaskRecord {
    let mut r = record(id, status, 1);
    r.extra
        .insert("routing_decision".into(), json!({"target_type": target}));
    r
}

#[test]
fn an_execution_cut_short_by_a_restart_is_run_again_from_the_start() {
    let mut r = routed_record("t1", "working", "ollama");
    r.executed_by = Some("ollama".into());
    r.woken_at = Some(5);
    let mut h = H::new(vec![r]);
    let a = h.input(RelayInput::LinkUp);
    assert_eq!(
        sends(&a),
        [Outbound::TaskRecovering {
            task_id: "t1".into(),
            description: String::new(),
            metadata: json!({}),
            last_status: "accepted".into(),
        }],
        "reported as not started: the execution will start over"
    );
    let a = h.frame(TaskFrame::Continue {
        task_id: "t1".into(),
        generation: Some(2),
    });
    assert!(kinds(&a).contains(&"wake 1".to_string()), "{:?}", kinds(&a));
}

#[test]
fn a_node_queue_entry_executing_a_routed_task_is_run_again_not_held_forever() {
    // Node's queue.json: status working, a non-wake routing, no agent files, none of our fields.
    let h0 = routed_record("t1", "working", "claude");
    let mut h = H::new(vec![h0]);
    h.input(RelayInput::LinkUp);
    let a = h.frame(TaskFrame::Continue {
        task_id: "t1".into(),
        generation: Some(2),
    });
    assert!(kinds(&a).contains(&"wake 1".to_string()), "{:?}", kinds(&a));
    // A woken agent's task (ours: woken_at set, or a wake-routed one) still waits for its agent.
    let mut woken = routed_record("t2", "working", "claude");
    woken.woken_at = Some(5);
    let mut h = H::new(vec![woken, routed_record("t3", "working", "wake")]);
    h.input(RelayInput::LinkUp);
    for id in ["t2", "t3"] {
        let a = h.frame(TaskFrame::Continue {
            task_id: id.into(),
            generation: Some(2),
        });
        assert!(
            !kinds(&a).iter().any(|k| k.starts_with("wake")),
            "{id}: {:?}",
            kinds(&a)
        );
    }
}
