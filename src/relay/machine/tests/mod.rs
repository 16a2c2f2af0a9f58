//! I/O-free tests of the task lifecycle.

use super::*;
use serde_json::json;

const SEC: Duration = Duration::from_secs(1);

fn settings() -> RelaySettings {
    RelaySettings {
        wake_configured: true,
        cancel_configured: true,
        max_pending: 1,
        wake_retry_delays: vec![5 * SEC, 15 * SEC, 30 * SEC],
        confirmation_timeout: 30 * SEC,
        progress_keepalive: 300 * SEC,
        readopt_window: 120 * SEC,
        task_timeout: 7200 * SEC,
        agent_exit_grace: 60 * SEC,
    }
}

struct H {
    relay: Relay,
    now: Instant,
    persist_result: Result<(), String>,
}

impl H {
    fn new(recovered: Vec<TaskRecord>) -> H {
        H::with(settings(), recovered)
    }

    fn with(settings: RelaySettings, recovered: Vec<TaskRecord>) -> H {
        let mut h = H {
            relay: Relay::new(settings, recovered),
            now: Instant::now(),
            persist_result: Ok(()),
        };
        h.drain();
        h
    }

    /// Drain actions, answering every Persist with `persist_result` as the I/O shell does.
    fn drain(&mut self) -> Vec<RelayAction> {
        let mut out = vec![];
        while let Some(a) = self.relay.poll_action() {
            let persist = matches!(a, RelayAction::Persist(_));
            out.push(a);
            if persist {
                self.relay
                    .handle(RelayInput::Persisted(self.persist_result.clone()), self.now, 0);
            }
        }
        out
    }

    fn input(&mut self, input: RelayInput) -> Vec<RelayAction> {
        self.relay.handle(input, self.now, 0);
        self.drain()
    }

    fn frame(&mut self, frame: TaskFrame) -> Vec<RelayAction> {
        self.input(RelayInput::Frame(frame))
    }

    fn assign(&mut self, id: &str, generation: i64) -> Vec<RelayAction> {
        let frame = json!({"type":"task_assign","task_id":id,"description":format!("do {id}"),"generation":generation,"assigned_at":1000});
        self.frame(TaskFrame::Assign(frame.as_object().unwrap().clone()))
    }

    /// Advance to the next deadline and fire it.
    fn fire(&mut self) -> (Duration, Vec<RelayAction>) {
        let at = self.relay.poll_timeout().expect("a deadline");
        let waited = at.saturating_duration_since(self.now);
        self.now = self.now.max(at);
        self.relay.handle_timeout(self.now);
        (waited, self.drain())
    }

    fn result(&mut self, id: &str, v: Value) -> Vec<RelayAction> {
        let file = match v {
            Value::Object(m) => ResultFile::Object(m),
            other => ResultFile::Invalid(format!("not an object: {other}")),
        };
        self.input(RelayInput::Result {
            task_id: id.into(),
            file,
        })
    }

    /// The agent writes `{"status":"success"}` as task `id`'s result.
    fn succeed(&mut self, id: &str) -> Vec<RelayAction> {
        self.result(id, json!({"status":"success"}))
    }

    fn wake_end(&mut self, id: &str, attempt: u32, end: WakeEnd) -> Vec<RelayAction> {
        self.input(RelayInput::WakeFinished {
            task_id: id.into(),
            attempt,
            end,
        })
    }

    /// A fresh relay with its link up and task `id` assigned, woken and started.
    fn at_work(id: &str, generation: i64) -> H {
        let mut h = H::new(vec![]);
        h.working(id, generation);
        h
    }

    /// Link up, one task assigned, woken, started.
    fn working(&mut self, id: &str, generation: i64) {
        self.input(RelayInput::LinkUp);
        self.assign(id, generation);
        self.wake_end(id, 1, WakeEnd::Success);
        self.input(RelayInput::Started { task_id: id.into() });
    }
}

fn sends(actions: &[RelayAction]) -> Vec<Outbound> {
    actions
        .iter()
        .filter_map(|a| match a {
            RelayAction::Send(f) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

fn kinds(actions: &[RelayAction]) -> Vec<String> {
    actions
        .iter()
        .filter(|a| !matches!(a, RelayAction::Log(_)))
        .map(|a| match a {
            RelayAction::Send(f) => format!("send {}", f.kind()),
            RelayAction::Persist(r) => format!("persist {}", r.len()),
            RelayAction::Wake { attempt, .. } => format!("wake {attempt}"),
            RelayAction::Kill { .. } => "kill".into(),
            RelayAction::RunCancelCommand { .. } => "cancel_command".into(),
            RelayAction::Track { .. } => "track".into(),
            RelayAction::Untrack { .. } => "untrack".into(),
            RelayAction::ClearFiles { .. } => "clear".into(),
            RelayAction::DiscardResult { .. } => "discard".into(),
            RelayAction::HoldLink { .. } => "hold_link".into(),
            RelayAction::ReleaseLink => "release_link".into(),
            RelayAction::ProbeStorage(r) => format!("probe {}", r.len()),
            RelayAction::Log(_) => unreachable!(),
        })
        .collect()
}

fn accepted(id: &str) -> Outbound {
    Outbound::TaskAccepted { task_id: id.into() }
}

fn failed(id: &str, reason: &str, generation: i64) -> Outbound {
    Outbound::TaskFailed {
        task_id: id.into(),
        reason: reason.into(),
        generation,
    }
}

/// The `task_complete` for [`H::succeed`]'s result.
fn succeeded(id: &str, generation: i64) -> Outbound {
    complete(id, generation, json!({"status":"success"}))
}

fn complete(id: &str, generation: i64, result: Value) -> Outbound {
    Outbound::TaskComplete {
        task_id: id.into(),
        generation,
        result: result.as_object().unwrap().clone(),
        tokens_used: None,
    }
}

fn record(id: &str, status: &str, generation: i64) -> TaskRecord {
    let mut r = TaskRecord::from_assign(
        json!({"task_id": id, "generation": generation})
            .as_object()
            .unwrap(),
        0,
    )
    .unwrap();
    r.status = status.into();
    r
}

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
            tokens_used: Some(7)
        }]
    );
    let a = h.frame(TaskFrame::Ack {
        task_id: "t1".into(),
        status: "complete".into(),
    });
    assert_eq!(kinds(&a), ["untrack", "clear", "persist 0"]);
    assert!(h.relay.held_ids().is_empty());
}

fn events(actions: &[RelayAction]) -> Vec<Event> {
    actions
        .iter()
        .filter_map(|a| match a {
            RelayAction::Log(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// Answers the next storage probe with `result` (the I/O shell writes queue.json).
fn probed(h: &mut H, result: Result<(), String>) -> Vec<RelayAction> {
    h.input(RelayInput::StorageProbed(result))
}

#[test]
fn a_task_that_cannot_be_persisted_is_not_answered_and_the_link_is_held_until_a_probe_succeeds() {
    let mut h = H::new(vec![]);
    h.input(RelayInput::LinkUp);
    h.persist_result = Err("No space left on device (os error 28)".into());
    let a = h.assign("t1", 4);
    assert!(
        sends(&a).is_empty(),
        "no task_failed before task_accepted (the hub would stall the agent 60 s and count a retry): {a:?}"
    );
    assert_eq!(kinds(&a), ["clear", "persist 1", "hold_link"]);
    let RelayAction::HoldLink { reason } = a.last().unwrap() else {
        panic!()
    };
    assert!(reason.contains("No space left on device"), "{reason}");
    assert!(events(&a).iter().any(|e| matches!(e,
        Event::StorageUnwritable { task_ids, retry_ms: 1000, .. } if task_ids == &["t1".to_owned()])));
    assert!(h.relay.held_ids().is_empty(), "not accepted, not kept");
    h.input(RelayInput::LinkDown);
    // Probes with backoff: 1 s, 2 s, 4 s ... while queue.json still cannot be written.
    for want in [1, 2, 4, 8] {
        let (waited, a) = h.fire();
        assert_eq!(waited, want * SEC);
        assert_eq!(kinds(&a), ["probe 0"]);
        let a = probed(&mut h, Err("No space left on device (os error 28)".into()));
        assert!(kinds(&a).is_empty(), "{a:?}");
    }
    // An assignment that arrives before the close lands is not answered either.
    h.input(RelayInput::LinkUp);
    let a = h.assign("t2", 1);
    assert!(kinds(&a).is_empty(), "{a:?}");
    h.input(RelayInput::LinkDown);
    let (waited, a) = h.fire();
    assert_eq!((waited, kinds(&a)), (16 * SEC, vec!["probe 0".to_owned()]));
    let a = probed(&mut h, Ok(()));
    assert_eq!(kinds(&a), ["release_link"]);
    assert!(events(&a)
        .iter()
        .any(|e| matches!(e, Event::StorageWritable { .. })));
    assert_eq!(h.relay.poll_timeout(), None, "no more probes");
    // Back on the hub: the task the hub gives again is persisted and accepted.
    h.persist_result = Ok(());
    h.input(RelayInput::LinkUp);
    let a = h.assign("t1", 6);
    assert_eq!(sends(&a)[0], accepted("t1"));
}

#[test]
fn the_probe_backoff_is_capped_and_resets_once_a_task_is_persisted() {
    let mut h = H::new(vec![]);
    h.input(RelayInput::LinkUp);
    h.persist_result = Err("Read-only file system (os error 30)".into());
    h.assign("t1", 1);
    h.input(RelayInput::LinkDown);
    let mut waits = vec![];
    for _ in 0..8 {
        let (waited, _) = h.fire();
        waits.push(waited.as_secs());
        probed(&mut h, Err("Read-only file system (os error 30)".into()));
    }
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
    h.fire();
    probed(&mut h, Ok(()));
    // Writable again, but the next task's write fails: the wait goes on growing (the disk is
    // flapping), until a task is persisted.
    h.input(RelayInput::LinkUp);
    let a = h.assign("t2", 1);
    assert_eq!(kinds(&a).last().unwrap(), "hold_link");
    h.input(RelayInput::LinkDown);
    assert_eq!(h.fire().0, 60 * SEC);
    probed(&mut h, Ok(()));
    h.persist_result = Ok(());
    h.input(RelayInput::LinkUp);
    h.assign("t3", 1);
    h.persist_result = Err("Read-only file system (os error 30)".into());
    let a = h.assign("t4", 1);
    assert_eq!(kinds(&a).last().unwrap(), "hold_link");
    assert_eq!(h.fire().0, SEC, "reset by the persisted task");
}

#[test]
fn a_failed_write_of_a_task_already_accepted_does_not_drop_the_link() {
    let mut h = H::at_work("t1", 1);
    h.persist_result = Err("No space left on device (os error 28)".into());
    let a = h.succeed("t1");
    assert!(!kinds(&a).contains(&"hold_link".to_owned()), "{a:?}");
    assert_eq!(sends(&a), [succeeded("t1", 1)]);
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
fn wake_failures_retry_after_5_15_30_s_then_fail_with_the_count() {
    let mut h = H::new(vec![]);
    h.input(RelayInput::LinkUp);
    h.assign("t1", 1);
    for (attempt, delay) in [(1, 5), (2, 15), (3, 30)] {
        let end = if attempt == 2 {
            WakeEnd::Timeout
        } else {
            WakeEnd::Failed("exit code 1: nope".into())
        };
        let a = h.wake_end("t1", attempt, end.clone());
        let status = if end == WakeEnd::Timeout {
            "timeout"
        } else {
            "failed"
        };
        assert!(
            matches!(&sends(&a)[..], [Outbound::WakeResult { status: s, attempt: Some(n), .. }] if *s == status && *n == attempt)
        );
        let (waited, a) = h.fire();
        assert_eq!(waited, delay * SEC);
        assert_eq!(
            kinds(&a),
            ["persist 1".to_string(), format!("wake {}", attempt + 1)]
        );
    }
    let a = h.wake_end(
        "t1",
        4,
        WakeEnd::Failed("exit code 127: sh: openclaw: not found".into()),
    );
    let sent = sends(&a);
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[1],
        failed(
            "t1",
            "wake_failed_after_4_attempts: exit code 127: sh: openclaw: not found",
            1
        )
    );
}

#[test]
fn no_started_file_within_the_confirmation_timeout_fails_the_task() {
    let mut h = H::new(vec![]);
    h.input(RelayInput::LinkUp);
    h.assign("t1", 1);
    h.wake_end("t1", 1, WakeEnd::Success);
    let (waited, a) = h.fire();
    assert_eq!(waited, 30 * SEC);
    assert_eq!(
        kinds(&a),
        ["send wake_result", "kill", "persist 1", "send task_failed"]
    );
    assert_eq!(sends(&a)[1], failed("t1", "confirmation_timeout", 1));
    assert!(
        matches!(&sends(&a)[0], Outbound::WakeResult { status: "timeout", reason: Some(r), .. } if r == "confirmation_timeout")
    );
}

#[test]
fn started_before_the_wake_command_exits_counts() {
    let mut h = H::new(vec![]);
    h.input(RelayInput::LinkUp);
    h.assign("t1", 1);
    h.input(RelayInput::Started { task_id: "t1".into() });
    h.wake_end("t1", 1, WakeEnd::Success);
    assert_eq!(
        h.relay.poll_timeout(),
        Some(h.now + 300 * SEC),
        "only the keepalive is due: no confirmation timer"
    );
    // And a failing wake whose agent started anyway is not retried.
    let mut h = H::new(vec![]);
    h.input(RelayInput::LinkUp);
    h.assign("t1", 1);
    h.input(RelayInput::Started { task_id: "t1".into() });
    h.wake_end("t1", 1, WakeEnd::Failed("exit code 2".into()));
    assert_eq!(h.relay.poll_timeout(), Some(h.now + 300 * SEC));
}

#[test]
fn results_that_are_not_objects_or_say_failure() {
    let mut h = H::at_work("t1", 1);
    assert_eq!(
        sends(&h.result("t1", json!(null))),
        [failed("t1", "result_invalid", 1)]
    );
    let mut h = H::at_work("t1", 2);
    assert_eq!(
        sends(&h.result("t1", json!({"status":"failed","error":"tests red"}))),
        [failed("t1", "tests red", 2)]
    );
}

#[test]
fn a_result_for_a_task_not_held_is_discarded() {
    let mut h = H::new(vec![]);
    h.input(RelayInput::LinkUp);
    assert_eq!(kinds(&h.succeed("ghost")), ["discard"]);
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
fn outcomes_go_one_at_a_time() {
    let mut s = settings();
    s.max_pending = 2;
    let mut h = H::with(s, vec![]);
    h.input(RelayInput::LinkUp);
    h.assign("t1", 1);
    h.assign("t2", 1);
    h.succeed("t1");
    let a = h.succeed("t2");
    assert!(sends(&a).is_empty(), "t1 is in flight");
    let a = h.frame(TaskFrame::Ack {
        task_id: "t1".into(),
        status: "complete".into(),
    });
    assert_eq!(sends(&a), [succeeded("t2", 1)]);
}

#[test]
fn rate_limited_outcomes_are_sent_again_after_the_delay() {
    let mut h = H::at_work("t1", 1);
    h.succeed("t1");
    h.input(RelayInput::RateLimited { retry_after: SEC });
    let (waited, a) = h.fire();
    assert_eq!(waited, SEC);
    assert_eq!(sends(&a), [succeeded("t1", 1)]);
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
fn refused_outcomes_end_their_retries() {
    for (reason, expect) in [("not_found", "discard"), ("invalid_state", "discard")] {
        let mut h = H::at_work("t1", 1);
        h.succeed("t1");
        let a = h.input(RelayInput::OutcomeRefused {
            reason: reason.into(),
        });
        assert_eq!(kinds(&a), ["untrack", expect, "persist 0"], "{reason}");
    }
    // stale_generation: kept detached, so a re-assignment can still report it.
    let mut h = H::at_work("t1", 1);
    h.succeed("t1");
    h.input(RelayInput::OutcomeRefused {
        reason: "stale_generation".into(),
    });
    let a = h.assign("t1", 4);
    assert_eq!(sends(&a), [accepted("t1"), succeeded("t1", 4)]);
}

#[test]
fn keepalive_progress_every_period_while_a_task_is_held() {
    let mut h = H::at_work("t1", 1);
    for _ in 0..3 {
        let (waited, a) = h.fire();
        assert_eq!(waited, 300 * SEC);
        assert_eq!(
            sends(&a),
            [Outbound::TaskProgress {
                task_id: "t1".into(),
                progress: None,
                execution_event: None
            }]
        );
    }
}

#[test]
fn agent_progress_is_forwarded() {
    let mut h = H::at_work("t1", 1);
    let a = h.input(RelayInput::Progress {
        task_id: "t1".into(),
        progress: 40,
        message: Some("halfway".into()),
    });
    assert_eq!(
        sends(&a),
        [Outbound::TaskProgress {
            task_id: "t1".into(),
            progress: Some(40),
            execution_event: Some(json!({"event_type":"progress","text":"halfway"}))
        }]
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

// ---- task_timeout_ms, agent_exit_grace_ms, hand-back text (issue 8, item 11 and Upgrading) ----

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
