//! Unit tests of the task queue and the FSMs ([`super`]).
use super::*;

#[test]
fn fencing_and_retries() {
    let now = Instant::now();
    let mut t = Tasks::default();
    t.fsms.insert("a".into(), Fsm::new(vec!["code".into()]));
    let id = t.submit(TaskSpec::default(), now);
    assert_eq!(id.len(), 21);
    assert_eq!(
        t.complete("a", &id, 0, Completion::default(), now),
        Err(Refusal::InvalidState)
    );
    t.assign(&id, "a", now);
    t.fsms.get_mut("a").unwrap().state = "working";
    assert_eq!(t.fail("a", &id, 0, "x", now), Err(Refusal::StaleGeneration));
    assert_eq!(t.fail("a", &id, 1, "x", now), Ok("retried"));
    assert_eq!(t.map[&id].rec.generation, 2);
    t.assign(&id, "a", now);
    assert_eq!(t.fail("a", &id, 3, "y", now), Ok("retried"));
    t.assign(&id, "a", now);
    assert_eq!(t.fail("a", &id, 5, "z", now), Ok("dead_letter"));
    assert_eq!(t.map[&id].rec.retry_count, 3);
    assert_eq!(
        t.map[&id].rec.assigned_to.as_deref(),
        Some("a"),
        "kept on dead-letter"
    );
    assert_eq!(
        t.complete("a", "nope", 5, Completion::default(), now),
        Err(Refusal::NotFound)
    );
}

#[test]
fn task_failed_before_task_accepted_counts_a_retry_but_leaves_the_fsm_assigned() {
    let now = Instant::now();
    let mut t = Tasks::default();
    t.fsms.insert("a".into(), Fsm::new(vec![]));
    let id = t.submit(TaskSpec::default(), now);
    t.assign(&id, "a", now);
    assert_eq!(t.fail("a", &id, 1, "busy", now), Ok("retried"));
    let task = &t.map[&id].rec;
    assert_eq!(
        (task.status.as_str(), task.generation, task.retry_count),
        ("queued", 2, 1)
    );
    assert_eq!(task.assigned_to, None);
    let fsm = &t.fsms["a"];
    assert_eq!(
        (fsm.state, fsm.current.as_deref(), fsm.generation),
        ("assigned", Some(id.as_str()), 1)
    );
    // From working, the FSM goes idle.
    t.assign(&id, "a", now);
    t.fsms.get_mut("a").unwrap().state = "working";
    assert_eq!(t.fail("a", &id, 3, "x", now), Ok("retried"));
    assert_eq!(t.fsms["a"].state, "idle");
}
