//! The agent's side: wake retries, the confirmation timeout, `.started`, results, progress.

use super::*;

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
