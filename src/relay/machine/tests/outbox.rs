//! Outcomes: one at a time, resent after `rate_limited`, refused ones dropped; the keepalive.

use super::*;

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
