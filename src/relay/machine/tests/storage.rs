//! queue.json: a task is accepted only once persisted; the link is held down while it cannot be.

use super::*;

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
