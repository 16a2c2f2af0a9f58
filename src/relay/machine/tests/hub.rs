//! The hub's side: assignments, reconnects and restarts (state reports, recovery, re-adoption,
//! detach and hand-back), cancels.

use super::*;

#[test]
fn happy_path_persists_before_accepting_and_before_completing() {
    let mut h = H::new(vec![]);
    h.input(RelayInput::LinkUp);
    let a = h.assign("t1", 1);
    assert_eq!(
        kinds(&a),
        [
            "clear",
            "persist 1",
            "send task_accepted",
            "track",
            "persist 1",
            "wake 1"
        ]
    );
    let RelayAction::Wake { task, .. } = &a[a.len() - 1] else {
        panic!()
    };
    assert_eq!(task.status, "waking");
    assert_eq!(task.description, "do t1");
    let a = h.wake_end("t1", 1, WakeEnd::Success);
    assert_eq!(
        sends(&a),
        [Outbound::WakeResult {
            task_id: "t1".into(),
            status: "success",
            attempt: Some(1),
            error: None,
            reason: None
        }]
    );
    let a = h.input(RelayInput::Started { task_id: "t1".into() });
    let RelayAction::Persist(records) = &a.iter().find(|a| matches!(a, RelayAction::Persist(_))).unwrap()
    else {
        panic!()
    };
    assert_eq!(records[0].status, "working");
    let a = h.result("t1", json!({"status":"success","output":"done","tokens_used":7}));
    assert_eq!(kinds(&a), ["persist 1", "send task_complete"]);
    let RelayAction::Persist(records) = &a[a.len() - 2] else {
        panic!()
    };
    assert!(
        records[0].outcome.is_some(),
        "the outcome is on disk before it is sent"
    );
    assert_eq!(
        sends(&a),
        [Outbound::TaskComplete {
            task_id: "t1".into(),
            generation: 1,
            result: json!({"status":"success","output":"done","tokens_used":7})
                .as_object()
                .unwrap()
                .clone(),
            tokens_used: Some(7),
            verification_report: None,
            verification_history: None,
        }]
    );
    let a = h.frame(TaskFrame::Ack {
        task_id: "t1".into(),
        status: "complete".into(),
    });
    assert_eq!(kinds(&a), ["untrack", "clear", "persist 0"]);
    assert!(h.relay.held_ids().is_empty());
}

#[test]
fn bad_task_ids_are_accepted_then_failed_without_touching_a_path() {
    let mut h = H::new(vec![]);
    h.input(RelayInput::LinkUp);
    let a = h.assign("../../etc/passwd", 2);
    assert_eq!(kinds(&a), ["send task_accepted", "send task_failed"]);
    assert_eq!(
        sends(&a),
        [
            accepted("../../etc/passwd"),
            failed("../../etc/passwd", "invalid_task_id", 2)
        ]
    );
    let frame = json!({"type":"task_assign","task_id":42,"generation":1});
    let a = h.frame(TaskFrame::Assign(frame.as_object().unwrap().clone()));
    assert!(
        kinds(&a).is_empty(),
        "nothing valid can be sent without a string task_id"
    );
}

#[test]
fn no_wake_command_accepts_then_fails_with_its_reason() {
    let mut h = H::with(
        RelaySettings {
            wake_configured: false,
            direct_execution: false,
            ..settings()
        },
        vec![],
    );
    h.input(RelayInput::LinkUp);
    let a = h.assign("t1", 1);
    assert_eq!(
        sends(&a),
        [accepted("t1"), failed("t1", "no_wake_command_configured", 1)],
        "never task_failed before task_accepted"
    );
    assert!(!kinds(&a).iter().any(|k| k.starts_with("wake")));
    let RelayAction::Persist(records) = a.iter().find(|a| matches!(a, RelayAction::Persist(_))).unwrap()
    else {
        panic!()
    };
    assert!(
        records[0].outcome.is_some(),
        "the failure is on disk before it is sent"
    );
}

#[test]
fn a_double_and_a_triple_assignment_are_all_held_and_woken_in_turn() {
    // max_pending 1: t1 current, t2 waiting, t3 and t4 beyond the limit (the hub's triple
    // assignment and one more): each is accepted and held, never refused.
    let mut h = H::at_work("t1", 1);
    let a = h.assign("t2", 1);
    assert_eq!(
        kinds(&a),
        ["clear", "persist 2", "send task_accepted", "track"],
        "held, not woken"
    );
    assert!(!events(&a)
        .iter()
        .any(|e| matches!(e, Event::MaxPendingExceeded { .. })));
    for (id, n) in [("t3", 3), ("t4", 4)] {
        let a = h.assign(id, 7);
        assert_eq!(
            sends(&a),
            [accepted(id)],
            "{id}: no task_failed before task_accepted"
        );
        assert!(
            events(&a).iter().any(|e| matches!(e,
                Event::MaxPendingExceeded { held, max_pending: 1, .. } if *held == n)),
            "{a:?}"
        );
    }
    assert_eq!(h.relay.held_ids(), ["t1", "t2", "t3", "t4"]);
    let mut woken = vec![];
    let mut current = "t1".to_owned();
    for _ in 0..4 {
        let a = h.result(&current, json!({"status":"success"}));
        let gen = if current == "t1" || current == "t2" { 1 } else { 7 };
        assert_eq!(sends(&a)[0], complete(&current, gen, json!({"status":"success"})));
        h.frame(TaskFrame::Ack {
            task_id: current.clone(),
            status: "complete".into(),
        });
        let next = h.relay.snapshot().into_iter().find(|(_, s, _)| *s == "waking");
        let Some((id, _, _)) = next else { break };
        woken.push(id.clone());
        h.wake_end(&id, 1, WakeEnd::Success);
        h.input(RelayInput::Started { task_id: id.clone() });
        current = id;
    }
    assert_eq!(woken, ["t2", "t3", "t4"]);
    assert!(h.relay.held_ids().is_empty());
}

#[test]
fn the_same_assignment_again_is_adopted_without_a_new_wake() {
    let mut h = H::at_work("t1", 1);
    let a = h.assign("t1", 3);
    assert_eq!(kinds(&a), ["persist 1", "send task_accepted", "track"]);
    let a = h.succeed("t1");
    assert_eq!(sends(&a), [succeeded("t1", 3)]);
}

#[test]
fn cancel_stops_the_agent_runs_the_cancel_command_and_clears() {
    let mut h = H::at_work("t1", 1);
    let a = h.frame(TaskFrame::Cancelled { task_id: "t1".into() });
    assert_eq!(
        kinds(&a),
        ["kill", "cancel_command", "untrack", "clear", "persist 0"]
    );
    // A late result is discarded, not sent.
    assert_eq!(kinds(&h.succeed("t1")), ["discard"]);
}

#[test]
fn after_a_restart_reassign_then_the_same_assignment_adopts_and_reports_the_result() {
    let mut h = H::new(vec![record("t1", "working", 1)]);
    let a = h.input(RelayInput::LinkUp);
    assert_eq!(
        sends(&a),
        [Outbound::TaskRecovering {
            task_id: "t1".into(),
            description: String::new(),
            metadata: json!({}),
            last_status: "working".into()
        }]
    );
    // The result was written while the sidecar was down; the watcher finds it.
    let a = h.succeed("t1");
    assert!(
        sends(&a).is_empty(),
        "not sent before the hub says the task is ours"
    );
    let a = h.frame(TaskFrame::Reassign { task_id: "t1".into() });
    assert!(sends(&a).is_empty());
    let a = h.assign("t1", 3);
    assert_eq!(sends(&a), [accepted("t1"), succeeded("t1", 3)]);
    assert!(
        !kinds(&a).iter().any(|k| k.starts_with("wake")),
        "the agent is not woken again"
    );
}

#[test]
fn after_a_restart_continue_takes_the_hubs_generation() {
    let mut h = H::new(vec![record("t1", "working", 1)]);
    h.input(RelayInput::LinkUp);
    let a = h.frame(TaskFrame::Continue {
        task_id: "t1".into(),
        generation: Some(5),
    });
    assert_eq!(sends(&a), [accepted("t1")]);
    let a = h.succeed("t1");
    assert_eq!(sends(&a), [succeeded("t1", 5)]);
}

#[test]
fn a_recovered_task_that_was_never_woken_is_woken_once_confirmed() {
    let mut h = H::new(vec![record("t1", "accepted", 1)]);
    h.input(RelayInput::LinkUp);
    let a = h.frame(TaskFrame::Continue {
        task_id: "t1".into(),
        generation: Some(1),
    });
    assert!(kinds(&a).contains(&"wake 1".to_string()), "{:?}", kinds(&a));
}

#[test]
fn a_detached_task_is_handed_back_when_the_window_passes() {
    let mut h = H::new(vec![record("t1", "working", 1)]);
    h.input(RelayInput::LinkUp);
    h.frame(TaskFrame::Reassign { task_id: "t1".into() });
    let (waited, a) = h.fire();
    assert_eq!(waited, 120 * SEC);
    assert_eq!(kinds(&a), ["kill", "untrack", "clear", "persist 0"]);
    // With an outcome, the result is moved aside instead.
    let mut h = H::new(vec![record("t1", "working", 1)]);
    h.input(RelayInput::LinkUp);
    h.succeed("t1");
    h.frame(TaskFrame::Reassign { task_id: "t1".into() });
    let (_, a) = h.fire();
    assert_eq!(kinds(&a), ["kill", "untrack", "discard", "persist 0"]);
}

#[test]
fn an_answer_that_arrives_after_re_adoption_is_stale() {
    let mut h = H::new(vec![record("t1", "working", 1)]);
    h.input(RelayInput::LinkUp);
    h.assign("t1", 3); // the hub re-assigned before answering task_recovering
    h.frame(TaskFrame::Reassign { task_id: "t1".into() });
    let a = h.succeed("t1");
    assert_eq!(sends(&a), [succeeded("t1", 3)]);
}

#[test]
fn other_assignments_wait_for_the_answers() {
    let mut h = H::new(vec![record("t1", "working", 1)]);
    h.input(RelayInput::LinkUp);
    let a = h.assign("t2", 1);
    assert!(kinds(&a).is_empty(), "deferred until t1's standing is known");
    let a = h.frame(TaskFrame::Reassign { task_id: "t1".into() });
    assert_eq!(
        sends(&a),
        [accepted("t2")],
        "t1 detached, so t2 is taken and woken"
    );
    assert!(kinds(&a).contains(&"wake 1".to_string()));
}

#[test]
fn a_reconnect_reports_state_and_an_abort_then_reassign_keeps_the_work() {
    let mut h = H::at_work("t1", 1);
    h.input(RelayInput::LinkDown);
    // The agent finishes while the link is down.
    let a = h.succeed("t1");
    assert!(sends(&a).is_empty());
    let a = h.input(RelayInput::LinkUp);
    assert_eq!(
        sends(&a),
        [Outbound::StateReport {
            task_id: "t1".into(),
            status: "done".into(),
            generation: 1,
            assigned_at: 1000
        }]
    );
    h.frame(TaskFrame::StateReportAck {
        task_id: "t1".into(),
        action: "abort".into(),
    });
    let a = h.assign("t1", 3);
    assert_eq!(sends(&a), [accepted("t1"), succeeded("t1", 3)]);
}

#[test]
fn state_report_continue_accepts_again_and_sends_the_outcome() {
    let mut h = H::at_work("t1", 1);
    h.input(RelayInput::LinkDown);
    h.succeed("t1");
    h.input(RelayInput::LinkUp);
    let a = h.frame(TaskFrame::StateReportAck {
        task_id: "t1".into(),
        action: "continue".into(),
    });
    assert_eq!(sends(&a), [accepted("t1"), succeeded("t1", 1)]);
}

#[test]
fn a_rate_limited_question_is_asked_again_after_the_delay() {
    // The hub dropped the task_recovering (rate_limited): it will never answer it, so without a
    // second ask t1 would stay unconfirmed (its outcome unsent) and t2 deferred until a reconnect.
    let mut h = H::new(vec![record("t1", "working", 1)]);
    let a = h.input(RelayInput::LinkUp);
    assert_eq!(kinds(&a), ["send task_recovering"]);
    h.input(RelayInput::RateLimited { retry_after: SEC });
    let a = h.assign("t2", 1);
    assert!(kinds(&a).is_empty(), "deferred until t1's standing is known");
    let (waited, a) = h.fire();
    assert_eq!(waited, SEC);
    assert_eq!(kinds(&a), ["send task_recovering"]);
    let a = h.frame(TaskFrame::Continue {
        task_id: "t1".into(),
        generation: Some(2),
    });
    assert_eq!(sends(&a), [accepted("t1"), accepted("t2")]);
    let a = h.succeed("t1");
    assert_eq!(sends(&a), [succeeded("t1", 2)]);
    // Answered questions are not asked again.
    let mut h = H::new(vec![record("t1", "working", 1)]);
    h.input(RelayInput::LinkUp);
    h.frame(TaskFrame::Continue {
        task_id: "t1".into(),
        generation: Some(2),
    });
    h.input(RelayInput::RateLimited { retry_after: SEC });
    assert!(
        h.relay.poll_timeout().is_none_or(|t| t > h.now + SEC),
        "nothing to ask again"
    );
}

#[test]
fn nothing_is_sent_while_the_link_is_down() {
    let mut h = H::at_work("t1", 1);
    h.input(RelayInput::LinkDown);
    let a = h.input(RelayInput::Progress {
        task_id: "t1".into(),
        progress: 1,
        message: None,
    });
    assert!(sends(&a).is_empty());
    let a = h.succeed("t1");
    assert!(sends(&a).is_empty());
    assert_eq!(h.relay.outbox_depth(), 1);
}
