//! The real binary never answers an assignment with `task_failed` before `task_accepted` (the
//! hub's agent state machine would ignore it, stall the agent 60 s and still count a retry):
//! the hub's double and triple assignments are all held, and every task completes.

mod support;

use agentcom_sidecar::hub::TaskSpec;
use serde_json::{json, Value};
use std::time::Duration;
use support::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Records its wake, writes `.started`, waits for `../release`, then writes a result naming
/// its own task.
const AGENT_SH: &str = r#"#!/bin/sh
dir="$AGENTCOM_RESULTS_DIR"
echo "$AGENTCOM_TASK_ID" >> "$dir/../wakes"
: > "$AGENTCOM_STARTED_FILE"
(
  while [ ! -e "$dir/../release" ] && [ -d "$(dirname "$dir")" ]; do sleep 0.05; done
  printf '{"status":"success","output":"%s"}' "$AGENTCOM_TASK_ID" > "$AGENTCOM_RESULT_FILE.tmp"
  mv "$AGENTCOM_RESULT_FILE.tmp" "$AGENTCOM_RESULT_FILE"
) > /dev/null 2>&1 &
"#;

/// The hub, the folder and the config (see [`HubSetup`]), with [`AGENT_SH`] as the agent.
type World = HubSetup;

/// Waits until `done` holds, saying what the sidecar sent if it does not within `within`.
async fn until(w: &World, what: &str, within: Duration, done: impl Fn(&World) -> bool) {
    poll(
        within,
        || {
            format!(
                "{what} not within {within:?}; the sidecar sent {:#?}",
                w.frames_from_sidecar()
            )
        },
        || done(w).then_some(()),
    )
    .await
}

/// `n` tasks submitted back to back while the hub's double assignment is on: the hub hands all
/// of them to the one agent at once (its FSM takes the first and refuses the others, logging
/// `fsm_invalid_transition` for each: the hub's own race, whatever the sidecar does).
async fn burst(agent: &str, max_pending: Option<u64>, n: usize) -> (World, Sidecar, Vec<String>) {
    // `max_pending`: None leaves the default.
    let extra = match max_pending {
        Some(n) => json!({"max_pending": n}),
        None => json!({}),
    };
    let mut w = HubSetup::start(agent, extra)
        .await
        .with_agent(AGENT_SH, "sh AGENT", json!({}));
    let sidecar = w.spawn();
    w.identified().await;
    w.hub.set_double_assign(true);
    let ids: Vec<String> = (0..n)
        .map(|i| {
            w.hub.submit_task(TaskSpec {
                description: format!("burst {i}"),
                ..TaskSpec::default()
            })
        })
        .collect();
    let assigned = ids
        .iter()
        .filter(|id| w.hub.task(id).is_some_and(|t| t.status == "assigned"))
        .count();
    assert_eq!(assigned, n, "the hub assigned all {n} at once");
    (w, sidecar, ids)
}

/// Every task accepted, none failed or refused, each woken once and completed with its own
/// result and no retry; the hub logged no warning about the agent's answers (only its FSM's
/// refusals of the double assignment) and the agent is neither stalled nor flagged.
async fn all_held_and_completed(w: &World, ids: &[String]) {
    until(w, "every task accepted", SECS(10), |w| {
        let sent = w.frames_from_sidecar();
        ids.iter().all(|id| {
            sent.iter()
                .any(|f| f["type"] == "task_accepted" && f["task_id"] == id.as_str())
        })
    })
    .await;
    w.release();
    until(w, "every task completed", SECS(20), |w| {
        ids.iter()
            .all(|id| w.hub.task(id).is_some_and(|t| t.status == "completed"))
    })
    .await;
    let failed: Vec<Value> = w.sent_of_type("task_failed");
    assert!(failed.is_empty(), "task_failed sent: {failed:?}");
    for id in ids {
        let task = w.hub.task(id).unwrap();
        assert_eq!(task.retry_count, 0, "{task:?}");
        assert_eq!(
            task.result.as_ref().and_then(|r| r["output"].as_str()),
            Some(id.as_str())
        );
        assert_eq!(w.wakes(id), 1, "{id} woken once");
    }
    let warnings: Vec<_> = w
        .hub
        .hub_log()
        .into_iter()
        .filter(|l| l.event != "fsm_invalid_transition")
        .collect();
    assert!(warnings.is_empty(), "hub warnings: {warnings:?}");
    let fsm = w.hub.agent_state(&w.agent).expect("agent");
    assert!(fsm.flags.is_empty(), "{fsm:?}");
}

#[tokio::test]
async fn a_triple_assignment_and_one_more_with_max_pending_1_are_held_and_all_complete() {
    let (w, sidecar, ids) = burst("accept-triple-1", Some(1), 4).await;
    all_held_and_completed(&w, &ids).await;
    // Beyond max_pending: held all the same, with a warning in the log.
    let over: Vec<Value> = sidecar
        .log_events()
        .into_iter()
        .filter(|e| e["event"] == "max_pending_exceeded")
        .collect();
    assert_eq!(over.len(), 2, "{over:?}");
    assert!(
        !sidecar.log_events().iter().any(|e| e["event"] == "task_refused"),
        "nothing refused"
    );
}

#[tokio::test]
async fn a_triple_assignment_with_the_default_max_pending_is_held_without_a_warning() {
    let (w, sidecar, ids) = burst("accept-triple-default", None, 3).await;
    all_held_and_completed(&w, &ids).await;
    assert!(!sidecar
        .log_events()
        .iter()
        .any(|e| e["event"] == "max_pending_exceeded" || e["event"] == "task_refused"));
}
