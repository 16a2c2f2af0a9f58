//! The scheduler: matches queued tasks (FIFO) to idle, capable, connected agents and pushes
//! `task_assign`; the acceptance timers; the stuck sweep; reclaims on disconnect.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::complexity;
use super::state::{ConnCmd, State};
use super::tasks::Task;
use super::{epoch_ms, later, wire_text, Shared};

/// Sends `frame` to the socket registered for `agent_id`; false if there is none.
pub fn push_to(st: &State, agent_id: &str, frame: &Value) -> bool {
    let Some(entry) = st.registry.get(agent_id).and_then(|c| st.conns.get(c)) else {
        return false;
    };
    entry.tx.send(ConnCmd::Push(wire_text(frame))).is_ok()
}

/// The scheduler's `task_assign` frame: the enrichment fields, the `complexity` object and
/// the routing decision's 8 wire keys (the stored extras are not forwarded).
pub fn assign_frame(task: &Task) -> Value {
    json!({
        "type": "task_assign",
        "task_id": task.rec.task_id,
        "description": task.description,
        "metadata": task.metadata,
        "generation": task.rec.generation,
        "assigned_at": epoch_ms(),
        "repo": task.extra.repo,
        "branch": task.extra.branch,
        "file_hints": task.file_hints,
        "success_criteria": task.extra.success_criteria,
        "verification_steps": task.verification_steps,
        "complexity": task.rec.complexity,
        "routing_decision": task.rec.routing_decision.as_ref().map(complexity::wire_decision),
        "skip_verification": task.extra.skip_verification,
        "verification_timeout_ms": task.extra.verification_timeout_ms,
        "max_verification_retries": task.rec.max_verification_retries,
    })
}

/// The admin push-task frame: generation 0, no enrichment.
pub fn push_frame(task_id: &str, description: &str) -> Value {
    json!({
        "type": "task_assign", "task_id": task_id, "description": description,
        "metadata": {}, "generation": 0, "assigned_at": epoch_ms(), "repo": null,
        "branch": null, "file_hints": [], "success_criteria": [], "verification_steps": [],
        "complexity": null, "routing_decision": null, "skip_verification": false,
        "verification_timeout_ms": null, "max_verification_retries": 0,
    })
}

/// Assigns every queued task it can, in FIFO order, pushing `task_assign` and arming the
/// acceptance timers. Call it with the state locked after anything that frees an agent or
/// queues a task.
pub fn schedule(shared: &Arc<Shared>, st: &mut State) {
    let now = Instant::now();
    for task_id in st.tasks.queued() {
        let Some((needed, only)) = st
            .tasks
            .map
            .get(&task_id)
            .map(|t| (t.needed.clone(), t.extra.assign_to.clone()))
        else {
            continue;
        };
        let double = st.tasks.double_assign;
        // Agents in a stable order (agent_id) so tests are deterministic.
        let mut candidates: Vec<&String> = st
            .tasks
            .fsms
            .iter()
            .filter(|(id, fsm)| {
                (fsm.state == "idle" || double)
                    && only.as_ref().is_none_or(|only| only == *id)
                    && st.registry.contains_key(*id)
                    && needed.iter().all(|n| fsm.capabilities.contains(n))
            })
            .map(|(id, _)| id)
            .collect();
        candidates.sort();
        // Idle agents first; with the knob, a busy one when no idle one is left.
        let pick = candidates
            .iter()
            .find(|id| st.tasks.fsms.get(**id).is_some_and(|f| f.state == "idle"))
            .or(candidates.first())
            .map(|id| (*id).clone());
        let Some(agent_id) = pick else {
            continue;
        };
        // Routed at placement, like the real scheduler (§11.1): the registry as it is now.
        let candidates = st.llm.candidates();
        let Some(task) = st.tasks.map.get_mut(&task_id) else {
            continue;
        };
        let decision = complexity::decide(&task.rec.complexity, task.signals, &candidates, epoch_ms());
        task.rec.routing_decision = Some(decision);
        let Some(task) = st.tasks.assign(&task_id, &agent_id, now) else {
            continue;
        };
        push_to(st, &agent_id, &assign_frame(&task));
        arm_acceptance(shared, &agent_id, &task_id, task.rec.generation);
    }
}

/// Starts the 60 s acceptance timer of an assignment (a no-op outside a tokio runtime).
pub fn arm_acceptance(shared: &Arc<Shared>, agent_id: &str, task_id: &str, generation: u64) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let deadline = later(Instant::now(), shared.opts.acceptance_timeout);
    let (shared, agent_id, task_id) = (shared.clone(), agent_id.to_string(), task_id.to_string());
    rt.spawn(async move {
        tokio::time::sleep_until(deadline).await;
        let mut st = shared.lock();
        let Some(fsm) = st.tasks.fsms.get_mut(&agent_id) else {
            return;
        };
        // Live only while the FSM still holds this very assignment: a newer assignment (of this
        // task or another) has its own timer, and task_accepted moved it on to working.
        if fsm.state != "assigned"
            || fsm.current.as_deref() != Some(task_id.as_str())
            || fsm.generation != generation
        {
            return;
        }
        fsm.idle();
        if !fsm.flags.iter().any(|f| f == "unresponsive") {
            fsm.flags.push("unresponsive".into());
        }
        st.warn(
            "fsm_acceptance_timeout",
            &agent_id,
            Some(&task_id),
            format!("no task_accepted within {:?}", shared.opts.acceptance_timeout),
        );
        // The task itself may have moved on: a task_failed before task_accepted already put it
        // back in the queue (the FSM ignored that event, the queue did not). Then nothing is
        // reclaimed and nothing is scheduled: the agent sits idle beside the queued tasks.
        let ours = st.tasks.map.get(&task_id).is_some_and(|t| {
            t.rec.status == "assigned" && t.rec.assigned_to.as_deref() == Some(agent_id.as_str())
        });
        if ours && st.tasks.reclaim(&task_id, "agent_disconnect", Instant::now()) {
            schedule(&shared, &mut st);
        } else {
            st.warn(
                "fsm_reclaim_failed",
                &agent_id,
                Some(&task_id),
                "reason :not_assigned".into(),
            );
        }
    });
}

/// A socket identified as `agent_id` closed: reclaim its task at once; drop its FSM unless
/// another socket is still identified as it (then the FSM goes idle).
pub fn agent_gone(shared: &Arc<Shared>, st: &mut State, agent_id: &str) {
    let now = Instant::now();
    let still_there = st.conns.values().any(|c| c.agent_id.as_deref() == Some(agent_id));
    let current = st.tasks.fsms.get(agent_id).and_then(|f| f.current.clone());
    if let Some(task_id) = current {
        st.tasks.reclaim(&task_id, "agent_disconnect", now);
    }
    if still_there {
        if let Some(fsm) = st.tasks.fsms.get_mut(agent_id) {
            fsm.idle();
        }
    } else {
        st.tasks.fsms.remove(agent_id);
    }
    schedule(shared, st);
}

/// Every `stuck_sweep_interval`, reclaims assigned tasks not touched for `stuck_after`
/// (`stuck_after_working` when the holder's FSM is working). Tasks past their `complete_by`
/// are the overdue sweep's ([`super::sweeps::overdue_sweep`]).
pub async fn stuck_sweep(shared: Arc<Shared>) {
    let period = shared.opts.stuck_sweep_interval.max(Duration::from_millis(1));
    let mut next = later(Instant::now(), period);
    loop {
        tokio::time::sleep_until(next).await;
        next = later(next, period);
        let now = Instant::now();
        let mut st = shared.lock();
        let stuck: Vec<(String, Option<String>)> = st
            .tasks
            .map
            .values()
            .filter(|t| t.rec.status == "assigned")
            .filter(|t| {
                let working = t
                    .rec
                    .assigned_to
                    .as_ref()
                    .and_then(|a| st.tasks.fsms.get(a))
                    .is_some_and(|f| f.state == "working");
                let limit = if working {
                    shared.opts.stuck_after_working
                } else {
                    shared.opts.stuck_after
                };
                now.saturating_duration_since(t.updated_at) > limit
            })
            .map(|t| (t.rec.task_id.clone(), t.rec.assigned_to.clone()))
            .collect();
        let reclaimed = !stuck.is_empty();
        for (task_id, agent) in stuck {
            st.tasks.reclaim(&task_id, "agent_disconnect", now);
            if let Some(fsm) = agent.and_then(|a| st.tasks.fsms.get_mut(&a)) {
                if fsm.current.as_deref() == Some(task_id.as_str()) {
                    fsm.idle();
                }
            }
        }
        // Like the real scheduler, it assigns on events (here: the reclaims), not on every sweep.
        if reclaimed {
            schedule(&shared, &mut st);
        }
    }
}
