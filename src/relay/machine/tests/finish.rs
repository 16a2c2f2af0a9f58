//! A woken agent's success result verified and delivered before it becomes the outcome
//! (`finish_results`): `Finish` out, `Finished` in; cancel, timeout, hand-back and recovery
//! meanwhile. And a task's preparation (`Prepared`).

use super::*;
use std::path::PathBuf;

fn finishing_settings() -> RelaySettings {
    RelaySettings {
        finish_results: true,
        ..settings()
    }
}

/// A relay that finishes results, its link up and task `id` assigned, woken and started.
fn at_work(id: &str) -> H {
    let mut h = H::with(finishing_settings(), vec![]);
    h.working(id, 1);
    h
}

/// The `Finish` request among `actions`, if any: the task and the result to finish.
fn finish_request(actions: &[RelayAction]) -> Option<(TaskRecord, Map<String, Value>)> {
    actions.iter().find_map(|a| match a {
        RelayAction::Finish { task, result } => Some((task.clone(), result.clone())),
        _ => None,
    })
}

fn object(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn finished(h: &mut H, id: &str, result: Value) -> Vec<RelayAction> {
    h.input(RelayInput::Finished {
        task_id: id.into(),
        result: object(result),
    })
}

#[test]
fn a_success_result_is_verifying_then_finished_and_sent_with_the_verification_at_the_top_level() {
    let mut h = at_work("t1");
    let a = h.result("t1", json!({"status":"success","output":"done"}));
    // Persisted as `verifying` first, then handed out; nothing goes to the hub yet.
    assert_eq!(kinds(&a), ["persist 1", "finish"]);
    assert_eq!(last_persist(&a)[0].status, "verifying");
    assert!(last_persist(&a)[0].outcome.is_none());
    let (task, result) = finish_request(&a).unwrap();
    assert_eq!(task.task_id, "t1");
    assert_eq!(result, object(json!({"status":"success","output":"done"})));
    assert_eq!(h.relay.snapshot(), [("t1".to_owned(), "verifying", 1)]);
    // The result file seen again (an overwrite, a re-scan) does not start a second finishing.
    assert!(kinds(&h.succeed("t1")).is_empty());
    // The keepalive goes on while verifying.
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
    // Finished: the outcome is persisted, then sent, the report and history at the top level.
    let report = json!({"task_id":"t1","run_number":1,"status":"fail","checks":[]});
    let a = finished(
        &mut h,
        "t1",
        json!({"status":"success","output":"done","verification_status":"failed",
               "verification_report":report,"verification_history":[report],"delivery":"not pushed"}),
    );
    assert_eq!(kinds(&a), ["persist 1", "send task_complete"]);
    assert!(last_persist(&a)[0].outcome.is_some(), "on disk before it is sent");
    assert_eq!(
        sends(&a),
        [Outbound::TaskComplete {
            task_id: "t1".into(),
            generation: 1,
            result: object(
                json!({"status":"success","output":"done","verification_status":"failed","delivery":"not pushed"})
            ),
            tokens_used: None,
            verification_report: Some(report.clone()),
            verification_history: Some(vec![report]),
        }]
    );
    // A late second answer changes nothing.
    assert!(sends(&finished(&mut h, "t1", json!({"status":"success"}))).is_empty());
}

#[test]
fn a_result_that_is_not_a_success_is_not_verified() {
    for result in [
        json!({"status":"failed","reason":"tests failed"}),
        json!({"output":"no status"}),
    ] {
        let mut h = at_work("t1");
        let a = h.result("t1", result);
        assert!(finish_request(&a).is_none(), "{:?}", kinds(&a));
        assert!(matches!(&sends(&a)[..], [Outbound::TaskFailed { .. }]));
    }
    let mut h = at_work("t1");
    let a = h.input(RelayInput::Result {
        task_id: "t1".into(),
        file: ResultFile::Invalid("not JSON".into()),
    });
    assert_eq!(sends(&a), [failed("t1", "result_invalid", 1)]);
}

#[test]
fn without_finish_results_the_result_is_the_outcome_at_once() {
    let mut h = H::at_work("t1", 1);
    let report = json!({"run_number":1,"status":"pass"});
    let a = h.result("t1", json!({"status":"success","verification_report":report}));
    assert!(finish_request(&a).is_none());
    // The agent's own report is lifted all the same.
    assert_eq!(
        sends(&a),
        [Outbound::TaskComplete {
            task_id: "t1".into(),
            generation: 1,
            result: object(json!({"status":"success"})),
            tokens_used: None,
            verification_report: Some(report),
            verification_history: None,
        }]
    );
}

#[test]
fn a_cancel_while_verifying_stops_the_finishing_and_a_late_answer_is_dropped() {
    let mut h = at_work("t1");
    h.succeed("t1");
    let a = h.frame(TaskFrame::Cancelled { task_id: "t1".into() });
    // The Kill becomes the runners' Stop: the finishing future is dropped.
    assert_eq!(
        kinds(&a),
        ["kill", "cancel_command", "untrack", "clear", "persist 0"]
    );
    assert!(sends(&finished(&mut h, "t1", json!({"status":"success"}))).is_empty());
    assert!(h.relay.held_ids().is_empty());
}

#[test]
fn the_task_timeout_while_verifying_stops_it_and_fails_the_task() {
    let mut h = at_work("t1");
    h.succeed("t1");
    let mut fired = Vec::new();
    while fired.is_empty() {
        let (_, a) = h.fire();
        fired = sends(&a)
            .into_iter()
            .filter(|f| !matches!(f, Outbound::TaskProgress { .. }))
            .collect();
        if !fired.is_empty() {
            assert!(kinds(&a).contains(&"kill".to_string()), "{:?}", kinds(&a));
        }
    }
    match &fired[..] {
        [Outbound::TaskFailed { reason, .. }] => assert_eq!(
            reason,
            "task_timeout: the task ran 2 h 0 min 0 s (task_timeout_ms 7200000) and its result was still \
             being verified and delivered; that was stopped"
        ),
        other => panic!("{other:?}"),
    }
    assert!(sends(&finished(&mut h, "t1", json!({"status":"success"}))).is_empty());
}

#[test]
fn a_task_handed_back_while_verifying_is_stopped_and_its_result_moved_aside() {
    let mut h = at_work("t1");
    h.succeed("t1");
    h.input(RelayInput::LinkDown);
    h.input(RelayInput::LinkUp);
    h.frame(TaskFrame::Reassign { task_id: "t1".into() });
    let (waited, a) = h.fire();
    assert_eq!(waited, 120 * SEC);
    assert_eq!(kinds(&a), ["kill", "untrack", "discard", "persist 0"]);
}

#[test]
fn a_result_is_finished_only_once_the_hub_holds_the_task_ours() {
    // Recovered from queue.json as `verifying`: treated as working, and its result file, reported
    // again once watched, starts the finishing again.
    let mut h = H::with(finishing_settings(), vec![record("t1", "verifying", 1)]);
    assert_eq!(h.relay.snapshot(), [("t1".to_owned(), "working", 1)]);
    let a = h.input(RelayInput::LinkUp);
    assert!(
        matches!(&sends(&a)[..], [Outbound::TaskRecovering { last_status, .. }] if last_status == "working")
    );
    let a = h.succeed("t1");
    assert!(
        finish_request(&a).is_none(),
        "no push or pull request for a task the hub may have given away: {:?}",
        kinds(&a)
    );
    assert_eq!(last_persist(&a)[0].status, "verifying");
    let a = h.frame(TaskFrame::Continue {
        task_id: "t1".into(),
        generation: Some(4),
    });
    let (task, result) = finish_request(&a).expect("finished once confirmed");
    assert_eq!(
        (task.generation, result),
        (4, object(json!({"status":"success"})))
    );
    let a = finished(
        &mut h,
        "t1",
        json!({"status":"success","verification_status":"verified"}),
    );
    assert_eq!(
        sends(&a),
        [complete(
            "t1",
            4,
            json!({"status":"success","verification_status":"verified"})
        )]
    );
}

#[test]
fn a_prepared_workspace_is_persisted_with_the_task_and_a_failed_preparation_fails_it() {
    let mut h = H::with(finishing_settings(), vec![]);
    h.input(RelayInput::LinkUp);
    h.assign("t1", 1);
    let a = h.input(RelayInput::Prepared {
        task_id: "t1".into(),
        outcome: Ok(Some(PathBuf::from("/w/repo"))),
    });
    assert_eq!(kinds(&a), ["persist 1"]);
    assert_eq!(
        last_persist(&a)[0].workspace.as_deref(),
        Some(std::path::Path::new("/w/repo"))
    );
    // The same folder again, or none: nothing to write.
    assert!(kinds(&h.input(RelayInput::Prepared {
        task_id: "t1".into(),
        outcome: Ok(Some(PathBuf::from("/w/repo"))),
    }))
    .is_empty());
    // A later wake attempt carries it (the runner builds ${WORKSPACE} from it).
    let a = h.wake_end("t1", 1, WakeEnd::Failed("exit code 1".into()));
    assert!(sends(&a).len() == 1);
    let (_, a) = h.fire();
    let task = a
        .iter()
        .find_map(|a| match a {
            RelayAction::Wake { task, attempt: 2 } => Some(task.clone()),
            _ => None,
        })
        .expect("wake 2");
    assert_eq!(task.workspace, Some(PathBuf::from("/w/repo")));

    let mut h = H::with(finishing_settings(), vec![]);
    h.input(RelayInput::LinkUp);
    h.assign("t2", 1);
    let reason = "workspace setup failed for /srv/git/r.git: git clone exited 128";
    let a = h.input(RelayInput::Prepared {
        task_id: "t2".into(),
        outcome: Err(reason.into()),
    });
    assert_eq!(sends(&a), [failed("t2", reason, 1)]);
    assert!(events(&a)
        .iter()
        .any(|e| matches!(e, Event::PrepareFailed { task_id, .. } if task_id == "t2")));
    // An answer for a task no longer waiting for its start changes nothing.
    assert!(kinds(&h.input(RelayInput::Prepared {
        task_id: "t2".into(),
        outcome: Err("late".into()),
    }))
    .is_empty());
}

/// A task over without a complete outcome (here: cancelled) is untracked with its workspace to
/// settle; a complete one without (its delivery took care of the folder, and what is there now
/// may be someone's own work).
#[test]
fn only_a_task_ended_without_a_complete_outcome_is_untracked_with_a_folder_to_settle() {
    let untracked = |a: &[RelayAction]| -> Vec<(String, Option<PathBuf>)> {
        a.iter()
            .filter_map(|a| match a {
                RelayAction::Untrack { task_id, settle } => Some((task_id.clone(), settle.clone())),
                _ => None,
            })
            .collect()
    };
    let prepared = |h: &mut H, id: &str| {
        h.input(RelayInput::Prepared {
            task_id: id.into(),
            outcome: Ok(Some(PathBuf::from("/w/repo"))),
        });
    };
    let mut h = H::with(finishing_settings(), vec![]);
    h.input(RelayInput::LinkUp);
    h.assign("t1", 1);
    prepared(&mut h, "t1");
    let a = h.frame(TaskFrame::Cancelled { task_id: "t1".into() });
    assert_eq!(untracked(&a), [("t1".to_owned(), Some(PathBuf::from("/w/repo")))]);

    let mut h = at_work("t2");
    prepared(&mut h, "t2");
    h.succeed("t2");
    let a = finished(&mut h, "t2", json!({"status":"success"}));
    assert_eq!(sends(&a).len(), 1, "{a:?}");
    let a = h.frame(TaskFrame::Ack {
        task_id: "t2".into(),
        status: "complete".into(),
    });
    assert_eq!(untracked(&a), [("t2".to_owned(), None)]);
}
