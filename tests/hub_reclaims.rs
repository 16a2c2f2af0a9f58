//! The embedded hub's reclaims that leave agents behind, on a paused clock, judged by the frames
//! on each agent's socket, the task records, the agents' FSM states and the hub's log: the
//! scheduler's stuck sweep (10 min, 20 min when the holder is working) takes the task back and
//! touches no FSM, so the holder stays `assigned` (its acceptance timer still running) or
//! `working` (unschedulable, its late `task_complete` refused `stale_generation`, until it
//! reconnects) and the task goes to another idle agent (§7.4, C7); and the 60 s acceptance
//! timer reclaims its task from whoever holds it by then (§2.2, §7.4). Every identify makes a
//! new FSM, `assigned` (with a new 60 s timer) when a task is still assigned to the agent (C6),
//! and only the close of that FSM's own socket reclaims its task (§2.3).

mod support;

use std::time::Duration;

use agentcom_sidecar::hub::{EmbeddedHub, HubOptions, TaskSpec};
use serde_json::{json, Value};
use support::hub_client::*;
use tokio::time::{sleep, Instant};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Options that keep silent clients connected for hours (no idle close, no reaper kill) and
/// queued tasks alive (no TTL dead letter); the sweeps and the acceptance timer as on the hub.
fn quiet_opts() -> HubOptions {
    HubOptions {
        idle_timeout: SECS(100_000),
        reaper_ttl: SECS(100_000),
        task_ttl: SECS(100_000),
        ..HubOptions::default()
    }
}

async fn hub(opts: HubOptions) -> EmbeddedHub {
    EmbeddedHub::start(opts).await.expect("hub starts")
}

fn spec(description: &str) -> TaskSpec {
    TaskSpec {
        description: description.into(),
        needed_capabilities: vec!["code".into()],
        ..TaskSpec::default()
    }
}

/// `(task_id, generation)` of a `task_assign`.
fn assigned(frame: &Value) -> (String, u64) {
    assert_eq!(frame["type"], "task_assign", "{frame}");
    (
        frame["task_id"].as_str().expect("task_id").to_string(),
        frame["generation"].as_u64().expect("generation"),
    )
}

/// The task's `(status, generation, assigned_to)`.
fn task(hub: &EmbeddedHub, id: &str) -> (String, u64, Option<String>) {
    let t = hub.task(id).expect("task");
    (t.status, t.generation, t.assigned_to)
}

/// The agent's `(fsm_state, current_task_id)`.
fn fsm(hub: &EmbeddedHub, agent: &str) -> (String, Option<String>) {
    let s = hub.agent_state(agent).expect("fsm");
    (s.fsm_state, s.current_task_id)
}

/// The hub's log as `(event, agent_id)` pairs.
fn log(hub: &EmbeddedHub) -> Vec<(String, String)> {
    hub.hub_log().into_iter().map(|l| (l.event, l.agent_id)).collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn stuck_sweep_reclaims_after_10_min_or_20_when_working() {
    let opts = HubOptions {
        acceptance_timeout: SECS(100_000),
        ..quiet_opts()
    };
    let hub = hub(opts).await;
    let mut first = agent(&hub, "stuck-1", &["code"]).await;
    let id = hub.submit_task(spec("slow"));
    assert_eq!(assigned(&recv(&mut first).await), (id.clone(), 1));

    // Never accepted (FSM assigned): reclaimed by the first sweep past 10 min, without a word to
    // the agent, whose FSM stays assigned to it: nobody is idle, so it stays queued.
    sleep(SECS(600)).await;
    silent(&mut first, "stuck-1").await;
    assert_eq!(task(&hub, &id).0, "assigned");
    sleep(SECS(30)).await;
    silent(&mut first, "stuck-1").await;
    assert_eq!(task(&hub, &id), ("queued".into(), 2, None));
    assert_eq!(fsm(&hub, "stuck-1"), ("assigned".into(), Some(id.clone())));
    assert_eq!(log(&hub), pairs(&[("scheduler_reclaim_stuck", "stuck-1")]));
    let line = &hub.hub_log()[0];
    assert_eq!(
        (line.task_id.as_deref(), line.detail.as_str()),
        (Some(id.as_str()), "stale_minutes 10.5")
    );

    // It goes to the next idle agent.
    let mut second = agent(&hub, "stuck-2", &["code"]).await;
    assert_eq!(assigned(&recv(&mut second).await), (id.clone(), 3));
    assert_eq!(recv(&mut first).await["type"], "agent_joined");

    // Accepted (FSM working): still held at 15 min, reclaimed once 20 min have passed.
    send(&mut second, json!({"type": "task_accepted", "task_id": id})).await;
    assert_eq!(recv(&mut second).await["status"], "accepted");
    sleep(SECS(900)).await;
    silent(&mut second, "stuck-2").await;
    assert_eq!(task(&hub, &id).1, 3);
    // task_progress touches updated_at: the 20 minutes start again.
    send(&mut second, json!({"type": "task_progress", "task_id": id})).await;
    sleep(SECS(1100)).await;
    silent(&mut second, "stuck-2").await;
    assert_eq!(task(&hub, &id).1, 3);
    sleep(SECS(150)).await;
    silent(&mut second, "stuck-2").await;
    silent(&mut first, "stuck-1").await;
    assert_eq!(task(&hub, &id), ("queued".into(), 4, None));
    assert_eq!(fsm(&hub, "stuck-2"), ("working".into(), Some(id.clone())));
    assert_eq!(fsm(&hub, "stuck-1"), ("assigned".into(), Some(id.clone())));
    let events: Vec<String> = hub
        .task(&id)
        .expect("task")
        .history
        .into_iter()
        .map(|h| h.0)
        .collect();
    assert_eq!(
        events,
        ["queued", "assigned", "reclaimed", "assigned", "reclaimed"]
    );
    hub.stop().await;
}

/// C7: a working agent whose task the stuck sweep took back is never scheduled again on that
/// connection: its late `task_complete` and `task_failed` are refused, which moves no FSM, and
/// a new task waits in the queue until the agent reconnects.
#[tokio::test(start_paused = true)]
async fn after_a_stuck_reclaim_a_working_agent_is_unschedulable_until_it_reconnects() {
    let hub = hub(quiet_opts()).await;
    let mut ws = agent(&hub, "c7-1", &["code"]).await;
    let first = hub.submit_task(spec("a long wake-path task"));
    assert_eq!(assigned(&recv(&mut ws).await), (first.clone(), 1));
    send(&mut ws, json!({"type": "task_accepted", "task_id": first})).await;
    assert_eq!(recv(&mut ws).await["status"], "accepted");
    sleep(SECS(1230)).await;
    silent(&mut ws, "c7-1").await;
    assert_eq!(task(&hub, &first), ("queued".into(), 2, None));
    assert_eq!(fsm(&hub, "c7-1"), ("working".into(), Some(first.clone())));

    let second = hub.submit_task(spec("another"));
    silent(&mut ws, "c7-1").await;
    assert_eq!(task(&hub, &second), ("queued".into(), 0, None));

    for (kind, error) in [
        ("task_complete", "task_complete_failed: stale_generation"),
        ("task_failed", "task_fail_failed: stale_generation"),
    ] {
        send(
            &mut ws,
            json!({"type": kind, "task_id": first, "generation": 1, "reason": "late",
                "result": {"status": "success"}}),
        )
        .await;
        assert_eq!(recv(&mut ws).await, json!({"type": "error", "error": error}));
        assert_eq!(fsm(&hub, "c7-1"), ("working".into(), Some(first.clone())));
    }
    sleep(SECS(3600)).await;
    silent(&mut ws, "c7-1").await;
    assert_eq!(task(&hub, &first), ("queued".into(), 2, None));
    assert_eq!(task(&hub, &second), ("queued".into(), 0, None));
    assert_eq!(log(&hub), pairs(&[("scheduler_reclaim_stuck", "c7-1")]));

    // A reconnect makes a new FSM, idle: the tasks flow again, the oldest first.
    ws.close(None).await.expect("close");
    let deadline = Instant::now() + SECS(5);
    while hub.agent_state("c7-1").is_some() {
        assert!(Instant::now() < deadline, "the FSM outlived its socket");
        sleep(Duration::from_millis(10)).await;
    }
    let mut ws = agent(&hub, "c7-1", &["code"]).await;
    assert_eq!(assigned(&recv(&mut ws).await), (first.clone(), 3));
    assert_eq!(fsm(&hub, "c7-1"), ("assigned".into(), Some(first.clone())));
    assert_eq!(task(&hub, &second).0, "queued");
    hub.stop().await;
}

/// A stuck reclaim from an agent that never accepted leaves its acceptance timer running: when
/// it fires (here at 15 min) it takes the task from the agent that holds it by then, and the
/// first agent, idle and flagged unresponsive, gets it again.
#[tokio::test(start_paused = true)]
async fn a_stuck_reclaim_leaves_an_assigned_agent_to_its_acceptance_timer() {
    let opts = HubOptions {
        acceptance_timeout: SECS(900),
        ..quiet_opts()
    };
    let hub = hub(opts).await;
    let start = Instant::now();
    let mut first = agent(&hub, "timer-1", &["code"]).await;
    let id = hub.submit_task(spec("never accepted"));
    assert_eq!(assigned(&recv(&mut first).await), (id.clone(), 1));
    sleep(SECS(630)).await;
    silent(&mut first, "timer-1").await;
    assert_eq!(task(&hub, &id), ("queued".into(), 2, None));
    assert_eq!(fsm(&hub, "timer-1"), ("assigned".into(), Some(id.clone())));

    let mut second = agent(&hub, "timer-2", &["code"]).await;
    assert_eq!(assigned(&recv(&mut second).await), (id.clone(), 3));
    assert_eq!(recv(&mut first).await["type"], "agent_joined");
    sleep(SECS(900) - start.elapsed() - Duration::from_millis(1)).await;
    assert_eq!(task(&hub, &id), ("assigned".into(), 3, Some("timer-2".into())));

    // 900 s after the first assignment: reclaimed from timer-2, which is told nothing and
    // stays assigned to it (its own timer runs on), and given to timer-1, idle again.
    assert_eq!(assigned(&recv(&mut first).await), (id.clone(), 5));
    silent(&mut second, "timer-2").await;
    assert_eq!(task(&hub, &id), ("assigned".into(), 5, Some("timer-1".into())));
    assert_eq!(fsm(&hub, "timer-2"), ("assigned".into(), Some(id.clone())));
    let state = hub.agent_state("timer-1").expect("fsm");
    assert_eq!(
        (state.fsm_state.as_str(), state.flags),
        ("assigned", vec!["unresponsive".to_string()])
    );
    assert_eq!(
        log(&hub),
        pairs(&[
            ("scheduler_reclaim_stuck", "timer-1"),
            ("fsm_acceptance_timeout", "timer-1")
        ])
    );
    hub.stop().await;
}

/// The acceptance timer reclaims its task by id, like the real `TaskQueue.reclaim_task`: after a
/// refusal before `task_accepted` requeued the task and the scheduler gave it to another agent,
/// the first agent's timer takes it from that agent 60 s after the first assignment.
#[tokio::test(start_paused = true)]
async fn acceptance_timeout_reclaims_the_task_from_whoever_holds_it() {
    let hub = hub(quiet_opts()).await;
    let start = Instant::now();
    let mut a = agent(&hub, "hold-a", &["code"]).await;
    let mut b = agent(&hub, "hold-b", &["code"]).await;
    assert_eq!(recv(&mut a).await["type"], "agent_joined");
    let id = hub.submit_task(spec("refused, then taken"));
    assert_eq!(assigned(&recv(&mut a).await), (id.clone(), 1));
    send(
        &mut a,
        json!({"type": "task_failed", "task_id": id, "generation": 1, "reason": "busy"}),
    )
    .await;
    assert_eq!(recv(&mut a).await["status"], "retried");
    // hold-a's FSM ignored the failure (still assigned): the task goes to hold-b.
    assert_eq!(assigned(&recv(&mut b).await), (id.clone(), 3));
    send(&mut b, json!({"type": "task_accepted", "task_id": id})).await;
    assert_eq!(recv(&mut b).await["status"], "accepted");
    assert_eq!(fsm(&hub, "hold-a"), ("assigned".into(), Some(id.clone())));

    sleep(SECS(60) - start.elapsed() - Duration::from_millis(1)).await;
    assert_eq!(task(&hub, &id), ("assigned".into(), 3, Some("hold-b".into())));
    assert_eq!(assigned(&recv(&mut a).await), (id.clone(), 5));
    silent(&mut b, "hold-b").await;
    assert_eq!(task(&hub, &id), ("assigned".into(), 5, Some("hold-a".into())));
    assert_eq!(fsm(&hub, "hold-b"), ("working".into(), Some(id.clone())));
    let history: Vec<(String, Option<String>)> = hub.task(&id).expect("task").history;
    assert_eq!(
        history[3..],
        [
            (
                "assigned".into(),
                Some(r#"{"agent_id":"hold-b","generation":3}"#.into())
            ),
            ("reclaimed".into(), Some("agent_disconnect".into())),
            (
                "assigned".into(),
                Some(r#"{"agent_id":"hold-a","generation":5}"#.into())
            ),
        ]
    );
    assert_eq!(
        log(&hub),
        pairs(&[
            ("fsm_unexpected_event", "hold-a"),
            ("fsm_acceptance_timeout", "hold-a")
        ])
    );
    // hold-b finishes the work it was given: too late.
    send(
        &mut b,
        json!({"type": "task_complete", "task_id": id, "generation": 3, "result": {}}),
    )
    .await;
    assert_eq!(
        recv(&mut b).await,
        json!({"type": "error", "error": "task_complete_failed: stale_generation"})
    );
    assert_eq!(fsm(&hub, "hold-b"), ("working".into(), Some(id.clone())));
    hub.stop().await;
}

/// Every identify makes a new AgentFSM (§2.2): one that finds a task still assigned to the agent
/// starts `assigned` to it, pushes nothing, and reclaims it 60 s later unless a `task_accepted`
/// for it comes first (C6), even when the old FSM was already `working` on it.
#[tokio::test(start_paused = true)]
async fn identify_again_starts_a_new_fsm_that_waits_60_s_for_task_accepted() {
    let hub = hub(quiet_opts()).await;
    let token = hub.add_token("c6-1");
    let identify = json!({"type": "identify", "agent_id": "c6-1", "token": token, "capabilities": ["code"]});
    let mut ws = agent(&hub, "c6-1", &["code"]).await;
    let id = hub.submit_task(spec("held across identifies"));
    assert_eq!(assigned(&recv(&mut ws).await), (id.clone(), 1));
    send(&mut ws, json!({"type": "task_accepted", "task_id": id})).await;
    assert_eq!(recv(&mut ws).await["status"], "accepted");
    assert_eq!(fsm(&hub, "c6-1"), ("working".into(), Some(id.clone())));

    // Identify again on the same socket; re-accepted within the 60 s: nothing is reclaimed.
    send(&mut ws, identify.clone()).await;
    assert_eq!(recv(&mut ws).await["type"], "identified");
    assert_eq!(fsm(&hub, "c6-1"), ("assigned".into(), Some(id.clone())));
    sleep(SECS(59)).await;
    send(&mut ws, json!({"type": "task_accepted", "task_id": id})).await;
    assert_eq!(recv(&mut ws).await["status"], "accepted");
    assert_eq!(fsm(&hub, "c6-1"), ("working".into(), Some(id.clone())));
    sleep(SECS(60)).await;
    silent(&mut ws, "c6-1").await;
    assert_eq!(task(&hub, &id), ("assigned".into(), 1, Some("c6-1".into())));

    // Identify again, not re-accepted: at +60 s reclaimed, and back to the now idle agent.
    let start = Instant::now();
    send(&mut ws, identify).await;
    assert_eq!(recv(&mut ws).await["type"], "identified");
    assert_eq!(fsm(&hub, "c6-1"), ("assigned".into(), Some(id.clone())));
    sleep(SECS(60) - start.elapsed() - Duration::from_millis(1)).await;
    assert_eq!(task(&hub, &id).1, 1);
    assert_eq!(assigned(&recv(&mut ws).await), (id.clone(), 3));
    let state = hub.agent_state("c6-1").expect("fsm");
    assert_eq!(
        (state.fsm_state.as_str(), state.flags),
        ("assigned", vec!["unresponsive".to_string()])
    );
    assert_eq!(log(&hub), pairs(&[("fsm_acceptance_timeout", "c6-1")]));
    hub.stop().await;
}

/// Only the close of the socket whose identify made the agent's FSM reclaims its task (the real
/// FSM's `:DOWN`); an older socket of the same agent_id closing changes neither FSM nor task.
#[tokio::test(start_paused = true)]
async fn only_the_fsm_s_own_socket_closing_reclaims_its_task() {
    let hub = hub(quiet_opts()).await;
    let mut old = agent(&hub, "dup-1", &["code"]).await;
    let id = hub.submit_task(spec("survives the old socket"));
    assert_eq!(assigned(&recv(&mut old).await), (id.clone(), 1));
    let mut new = agent(&hub, "dup-1", &["code"]).await;
    send(&mut new, json!({"type": "task_accepted", "task_id": id})).await;
    assert_eq!(recv(&mut new).await["status"], "accepted");
    assert_eq!(fsm(&hub, "dup-1"), ("working".into(), Some(id.clone())));

    old.close(None).await.expect("close");
    // The new socket hears its own agent leave (the duplicate agent_id defect, §2.3).
    assert_eq!(
        recv(&mut new).await,
        json!({"type": "agent_left", "agent_id": "dup-1"})
    );
    assert_eq!(task(&hub, &id), ("assigned".into(), 1, Some("dup-1".into())));
    assert_eq!(fsm(&hub, "dup-1"), ("working".into(), Some(id.clone())));

    new.close(None).await.expect("close");
    let deadline = Instant::now() + SECS(5);
    while hub.agent_state("dup-1").is_some() {
        assert!(Instant::now() < deadline, "the FSM outlived its socket");
        sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(task(&hub, &id), ("queued".into(), 2, None));
    hub.stop().await;
}
