//! `task_timeout_ms`, `agent_exit_grace_ms`, process groups and the hand-back text.

use super::*;

/// Settings where only the timers under test come first: keepalive and confirmation far away.
fn timed(task_timeout: Duration, grace: Duration) -> RelaySettings {
    RelaySettings {
        confirmation_timeout: 100_000 * SEC,
        progress_keepalive: 100_000 * SEC,
        task_timeout,
        agent_exit_grace: grace,
        ..settings()
    }
}

/// Nothing is due but the far-away keepalive.
fn quiet(h: &H) -> bool {
    h.relay.poll_timeout().is_none_or(|t| t >= h.now + 50_000 * SEC)
}

fn failed_reason(actions: &[RelayAction]) -> Option<String> {
    sends(actions).into_iter().find_map(|f| match f {
        Outbound::TaskFailed { reason, .. } => Some(reason),
        _ => None,
    })
}

fn gone(h: &mut H, id: &str, outlived_wake: bool) -> Vec<RelayAction> {
    h.input(RelayInput::AgentGone {
        task_id: id.into(),
        outlived_wake,
    })
}

/// Put task t1 in `phase` (woken at `h.now`): "waking", "retry", "await_start" or "working".
fn in_phase(h: &mut H, phase: &str) {
    h.input(RelayInput::LinkUp);
    h.assign("t1", 1);
    h.input(RelayInput::AgentGroup {
        task_id: "t1".into(),
        group: AgentGroup {
            pgid: 4242,
            start_ticks: Some(1),
            boot_id: None,
        },
    });
    match phase {
        "waking" => {}
        "retry" => {
            h.wake_end("t1", 1, WakeEnd::Failed("exit code 1".into()));
        }
        "await_start" => {
            h.wake_end("t1", 1, WakeEnd::Success);
        }
        "working" => {
            h.wake_end("t1", 1, WakeEnd::Success);
            h.input(RelayInput::Started { task_id: "t1".into() });
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_task_past_its_timeout_is_stopped_and_failed_with_the_elapsed_time_in_every_woken_phase() {
    for phase in ["waking", "await_start", "working"] {
        let mut h = H::with(timed(7200 * SEC, 60 * SEC), vec![]);
        in_phase(&mut h, phase);
        let (waited, a) = h.fire();
        assert_eq!(waited, 7200 * SEC, "{phase}");
        assert_eq!(kinds(&a), ["kill", "persist 1", "send task_failed"], "{phase}");
        let reason = failed_reason(&a).unwrap();
        assert_eq!(
            reason,
            "task_timeout: the agent ran 2 h 0 min 0 s (task_timeout_ms 7200000); its processes were stopped",
            "{phase}"
        );
        assert!(events(&a).contains(&Event::TaskTimeout {
            task_id: "t1".into(),
            elapsed_ms: 7_200_000
        }));
        assert!(quiet(&h), "{phase}: nothing more is due");
    }
    // Between wake retries the timeout still counts from the first attempt.
    let mut h = H::with(timed(10 * SEC, 60 * SEC), vec![]);
    in_phase(&mut h, "retry");
    let (waited, a) = h.fire();
    assert_eq!(
        (waited, kinds(&a)),
        (5 * SEC, vec!["persist 1".to_string(), "wake 2".into()])
    );
    let (waited, a) = h.fire();
    assert_eq!(waited, 5 * SEC);
    assert!(failed_reason(&a)
        .unwrap()
        .starts_with("task_timeout: the agent ran 10 s "));
}

#[test]
fn the_task_timeout_does_not_run_before_the_wake_after_the_outcome_or_while_detached() {
    // Queued behind another task: not woken, no timer of its own.
    let mut h = H::with(timed(100 * SEC, 60 * SEC), vec![]);
    in_phase(&mut h, "working");
    h.assign("t2", 1);
    let (waited, a) = h.fire();
    assert_eq!(waited, 100 * SEC);
    assert!(failed_reason(&a).is_some());
    // t2 is woken now: its timer starts now.
    assert!(h.relay.held_ids().contains(&"t2".to_string()));
    assert_eq!(h.relay.poll_timeout(), Some(h.now + 100 * SEC));
    // Done: the outcome waits for its ack without a timer.
    let mut h = H::with(timed(100 * SEC, 60 * SEC), vec![]);
    in_phase(&mut h, "working");
    h.succeed("t1");
    assert!(quiet(&h));
    // Detached: only the re-adopt window counts.
    let mut h = H::with(timed(100 * SEC, 60 * SEC), vec![]);
    in_phase(&mut h, "working");
    h.input(RelayInput::LinkDown);
    h.input(RelayInput::LinkUp);
    h.frame(TaskFrame::StateReportAck {
        task_id: "t1".into(),
        action: "abort".into(),
    });
    let (waited, a) = h.fire();
    assert_eq!(waited, 120 * SEC, "the hand-back, not the timeout at 100 s");
    assert!(failed_reason(&a).is_none(), "{a:?}");
    assert!(events(&a)
        .iter()
        .any(|e| matches!(e, Event::TaskHandedBack { .. })));
}

#[test]
fn a_recovered_task_keeps_the_time_it_ran_before_the_restart() {
    let mut r = record("t1", "working", 1);
    // Woken 7000 s before "now" (the harness's wall clock is 0).
    r.woken_at = Some(-7_000_000);
    let mut h = H::with(timed(7200 * SEC, 60 * SEC), vec![r]);
    h.input(RelayInput::LinkUp);
    assert!(quiet(&h), "not before the hub confirms it");
    h.frame(TaskFrame::Continue {
        task_id: "t1".into(),
        generation: Some(2),
    });
    let (waited, a) = h.fire();
    assert_eq!(waited, 200 * SEC);
    assert!(failed_reason(&a)
        .unwrap()
        .starts_with("task_timeout: the agent ran 2 h 0 min 0 s"));
    // Without a process group of its own (the Node sidecar's agent), the reason says so.
    assert!(failed_reason(&a)
        .unwrap()
        .ends_with("; its agent was not started by this sidecar and could not be stopped"));
    // A Node record has no wake time: counted from the confirmation.
    let mut h = H::with(timed(7200 * SEC, 60 * SEC), vec![record("t1", "working", 1)]);
    h.input(RelayInput::LinkUp);
    h.frame(TaskFrame::Continue {
        task_id: "t1".into(),
        generation: Some(2),
    });
    assert_eq!(h.relay.poll_timeout(), Some(h.now + 7200 * SEC));
}

const EXITED: &str =
    "the agent exited without writing a result (agent_exit_grace_ms 60000 after its last process ended)";

#[test]
fn a_backgrounded_agent_that_exits_without_a_result_fails_after_the_grace() {
    let mut h = H::with(timed(7200 * SEC, 60 * SEC), vec![]);
    in_phase(&mut h, "working");
    let a = gone(&mut h, "t1", true);
    assert_eq!(
        events(&a),
        [Event::AgentExited {
            task_id: "t1".into(),
            grace_ms: 60_000
        }]
    );
    let (waited, a) = h.fire();
    assert_eq!(waited, 60 * SEC);
    assert_eq!(kinds(&a), ["kill", "persist 1", "send task_failed"]);
    assert_eq!(failed_reason(&a).as_deref(), Some(EXITED));
    assert!(quiet(&h));
}

#[test]
fn a_result_within_the_grace_completes_the_task() {
    let mut h = H::with(timed(7200 * SEC, 60 * SEC), vec![]);
    in_phase(&mut h, "working");
    gone(&mut h, "t1", true);
    h.now += 59 * SEC;
    let a = h.succeed("t1");
    assert_eq!(sends(&a), [succeeded("t1", 1)]);
    assert!(quiet(&h));
}

#[test]
fn an_agent_that_ran_inside_the_wake_command_counts_and_a_notified_one_does_not() {
    // Foreground: `.started` while the wake command ran, then the group emptied with it.
    let mut h = H::with(timed(7200 * SEC, 60 * SEC), vec![]);
    in_phase(&mut h, "waking");
    h.input(RelayInput::Started { task_id: "t1".into() });
    h.wake_end("t1", 1, WakeEnd::Success);
    gone(&mut h, "t1", false);
    let (waited, a) = h.fire();
    assert_eq!((waited, failed_reason(&a).as_deref()), (60 * SEC, Some(EXITED)));
    // Notified: the wake command returned, its group emptied, then the agent (running elsewhere)
    // wrote `.started`: only the task timeout covers it.
    let mut h = H::with(timed(7200 * SEC, 60 * SEC), vec![]);
    in_phase(&mut h, "await_start");
    let a = gone(&mut h, "t1", false);
    assert!(events(&a).is_empty(), "{a:?}");
    h.input(RelayInput::Started { task_id: "t1".into() });
    let (waited, a) = h.fire();
    assert_eq!(waited, 7200 * SEC);
    assert!(failed_reason(&a).unwrap().starts_with("task_timeout"));
}

#[test]
fn an_agent_gone_before_its_started_file_is_seen_gets_the_grace_from_the_started_file() {
    let mut h = H::with(timed(7200 * SEC, 60 * SEC), vec![]);
    in_phase(&mut h, "await_start");
    gone(&mut h, "t1", true);
    h.now += 10 * SEC;
    let a = h.input(RelayInput::Started { task_id: "t1".into() });
    assert!(events(&a).contains(&Event::AgentExited {
        task_id: "t1".into(),
        grace_ms: 60_000
    }));
    let (waited, a) = h.fire();
    assert_eq!((waited, failed_reason(&a).as_deref()), (60 * SEC, Some(EXITED)));
}

#[test]
fn agent_gone_reports_that_do_not_apply_are_ignored() {
    // While a wake runs (a late report from an earlier group), for a task not held, for a task
    // with an outcome, and twice.
    let mut h = H::with(timed(7200 * SEC, 60 * SEC), vec![]);
    in_phase(&mut h, "waking");
    assert!(events(&gone(&mut h, "t1", true)).is_empty());
    assert!(events(&gone(&mut h, "nope", true)).is_empty());
    let mut h = H::with(timed(7200 * SEC, 60 * SEC), vec![]);
    in_phase(&mut h, "working");
    h.succeed("t1");
    assert!(events(&gone(&mut h, "t1", true)).is_empty());
    let mut h = H::with(timed(7200 * SEC, 60 * SEC), vec![]);
    in_phase(&mut h, "working");
    assert_eq!(events(&gone(&mut h, "t1", true)).len(), 1);
    assert!(events(&gone(&mut h, "t1", true)).is_empty());
    assert_eq!(h.relay.poll_timeout(), Some(h.now + 60 * SEC));
}

#[test]
fn a_new_wake_attempt_forgets_the_previous_agent_exit() {
    // The agent started while the wake shell ran, the shell failed; the group emptied. A
    // recovered task woken again starts clean (the grace of the old agent is gone).
    let mut h = H::with(timed(7200 * SEC, 60 * SEC), vec![record("t1", "accepted", 1)]);
    h.input(RelayInput::LinkUp);
    gone(&mut h, "t1", true);
    let a = h.frame(TaskFrame::Continue {
        task_id: "t1".into(),
        generation: Some(2),
    });
    assert!(kinds(&a).contains(&"wake 1".to_string()));
    h.input(RelayInput::Started { task_id: "t1".into() });
    h.wake_end("t1", 1, WakeEnd::Success);
    assert_eq!(
        h.relay.poll_timeout(),
        Some(h.now + 7200 * SEC),
        "no grace running"
    );
}

#[test]
fn process_groups_are_kept_with_the_task_and_persisted() {
    let mut h = H::with(timed(7200 * SEC, 60 * SEC), vec![]);
    in_phase(&mut h, "waking");
    let group = AgentGroup {
        pgid: 4242,
        start_ticks: Some(7),
        boot_id: None,
    };
    let a = h.input(RelayInput::AgentGroup {
        task_id: "t1".into(),
        group: group.clone(),
    });
    let RelayAction::Persist(records) = &a[0] else {
        panic!("{a:?}")
    };
    assert_eq!(records[0].agent_groups, std::slice::from_ref(&group));
    // The same group again changes nothing.
    let a = h.input(RelayInput::AgentGroup {
        task_id: "t1".into(),
        group: group.clone(),
    });
    assert!(a.is_empty(), "{a:?}");
    // Its PID reused by a later wake's group: the new one replaces it.
    let reused = AgentGroup {
        start_ticks: Some(8),
        ..group
    };
    let a = h.input(RelayInput::AgentGroup {
        task_id: "t1".into(),
        group: reused.clone(),
    });
    let RelayAction::Persist(records) = &a[0] else {
        panic!("{a:?}")
    };
    assert_eq!(records[0].agent_groups, [reused]);
}

fn handed_back_text(actions: &[RelayAction]) -> String {
    events(actions)
        .into_iter()
        .find(|e| matches!(e, Event::TaskHandedBack { .. }))
        .expect("handed back")
        .describe()
}

#[test]
fn a_hand_back_says_what_was_done_about_the_agent() {
    // The Node sidecar's child: nothing of it is known, nothing could be stopped.
    let mut h = H::new(vec![record("t1", "working", 1)]);
    h.input(RelayInput::LinkUp);
    h.frame(TaskFrame::Reassign { task_id: "t1".into() });
    let text = handed_back_text(&h.fire().1);
    assert_eq!(
        text,
        "task t1 was not assigned again: task dropped; nothing could be stopped: its agent was not \
         started by this sidecar (the Node sidecar's child, or one whose process group cannot be \
         recognised after a restart)"
    );
    assert!(!text.contains("agent stopped"));
    // Ours, with its process group recorded.
    let mut r = record("t1", "working", 1);
    r.agent_groups.push(AgentGroup {
        pgid: 4242,
        start_ticks: Some(1),
        boot_id: None,
    });
    let mut h = H::new(vec![r]);
    h.input(RelayInput::LinkUp);
    h.frame(TaskFrame::Reassign { task_id: "t1".into() });
    assert_eq!(
        handed_back_text(&h.fire().1),
        "task t1 was not assigned again: task dropped; stopping its agent (process group 4242)"
    );
    // Never woken.
    let mut h = H::new(vec![record("t1", "accepted", 1)]);
    h.input(RelayInput::LinkUp);
    h.frame(TaskFrame::Reassign { task_id: "t1".into() });
    assert_eq!(
        handed_back_text(&h.fire().1),
        "task t1 was not assigned again: task dropped; its agent was never woken"
    );
}

#[test]
fn an_agent_gone_while_detached_fails_the_task_once_it_is_assigned_back() {
    let mut h = H::with(timed(7200 * SEC, 60 * SEC), vec![]);
    in_phase(&mut h, "working");
    h.input(RelayInput::LinkDown);
    h.input(RelayInput::LinkUp);
    h.frame(TaskFrame::StateReportAck {
        task_id: "t1".into(),
        action: "abort".into(),
    });
    gone(&mut h, "t1", true);
    h.now += 10 * SEC;
    // Assigned back within the re-adopt window: the grace counts from the agent's end.
    h.assign("t1", 2);
    let (waited, a) = h.fire();
    assert_eq!((waited, failed_reason(&a).as_deref()), (50 * SEC, Some(EXITED)));
}
