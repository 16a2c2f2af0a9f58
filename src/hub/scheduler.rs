//! The scheduler: matches queued tasks (FIFO) to idle, capable, connected agents and pushes
//! `task_assign`; the acceptance timers; the stuck sweep; reclaims on disconnect.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::complexity;
use super::state::{ConnCmd, State};
use super::tasks::{Fsm, Task};
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
        let (busy, epoch) = st
            .tasks
            .fsms
            .get(&agent_id)
            .map_or(("idle", 0), |f| (f.state, f.epoch));
        let Some(task) = st.tasks.assign(&task_id, &agent_id, now) else {
            continue;
        };
        push_to(st, &agent_id, &assign_frame(&task));
        if busy == "idle" {
            arm_acceptance(shared, &agent_id, &task_id, task.rec.generation, epoch);
        } else {
            // The double assignment: the real AgentFSM refuses assigned -> assigned (or working
            // -> assigned), keeps its task and arms no timer for this one.
            st.warn(
                "fsm_invalid_transition",
                &agent_id,
                Some(&task_id),
                format!("from_state {busy}, to_state assigned, trigger task_assigned"),
            );
        }
    }
}

/// Starts the 60 s acceptance timer of an assignment made to the FSM `epoch` (a no-op outside a
/// tokio runtime).
pub fn arm_acceptance(shared: &Arc<Shared>, agent_id: &str, task_id: &str, generation: u64, epoch: u64) {
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
        // Live only while the FSM that armed it still holds this very assignment: a newer FSM
        // (a new identify) or a newer assignment (of this task or another) has its own timer,
        // and task_accepted moved it on to working.
        if fsm.epoch != epoch
            || fsm.state != "assigned"
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
        // Like the real FSM's `reclaim_task_from_agent`, which calls `TaskQueue.reclaim_task(task_id)`
        // (§2.2, §7.4: "no matching task_accepted → reclaim"): the task is taken back if it is
        // assigned, to this agent or to any other. So when a task_failed before task_accepted put
        // it back in the queue and the scheduler then gave it to another agent, this timer takes
        // it from that agent (which is told nothing, C2). If it is queued (or completed, or gone)
        // nothing is reclaimed and nothing is scheduled: the agent sits idle beside the queued
        // tasks (transcript task_failed_before_accept).
        let found = st.tasks.map.contains_key(&task_id);
        if st.tasks.reclaim(&task_id, "agent_disconnect", Instant::now()) {
            schedule(&shared, &mut st);
        } else {
            let reason = if found { ":not_assigned" } else { ":not_found" };
            st.warn(
                "fsm_reclaim_failed",
                &agent_id,
                Some(&task_id),
                format!("reason {reason}"),
            );
        }
    });
}

/// An identify made a new AgentFSM for `agent_id` on connection `conn`, replacing any older one
/// without a reclaim (§2.2, §2.3). Like the real one it looks for tasks still assigned to the
/// agent (`TaskQueue.tasks_assigned_to`): with one it starts `assigned` to it, nothing pushed,
/// under a new 60 s acceptance timer (C6: only a `task_accepted` for it makes it `working`);
/// else `idle`. Flags start empty. The reference does not say which task when several are
/// assigned (the real fold over a DETS table has no order): here the earliest submitted.
pub fn start_fsm(
    shared: &Arc<Shared>,
    st: &mut State,
    agent_id: &str,
    conn: u64,
    caps: Vec<String>,
    name: String,
) {
    st.tasks.next_epoch += 1;
    let mut fsm = Fsm::new(caps);
    fsm.name = name;
    fsm.conn = conn;
    fsm.epoch = st.tasks.next_epoch;
    let held = st
        .tasks
        .map
        .values()
        .filter(|t| t.rec.status == "assigned" && t.rec.assigned_to.as_deref() == Some(agent_id))
        .min_by_key(|t| t.seq)
        .map(|t| (t.rec.task_id.clone(), t.rec.generation));
    if let Some((task_id, generation)) = &held {
        fsm.state = "assigned";
        fsm.current = Some(task_id.clone());
        fsm.generation = *generation;
    }
    let epoch = fsm.epoch;
    st.tasks.fsms.insert(agent_id.to_string(), fsm);
    if let Some((task_id, generation)) = held {
        arm_acceptance(shared, agent_id, &task_id, generation, epoch);
    }
}

/// Connection `conn`, identified as `agent_id`, closed. If it is the socket of the agent's FSM
/// (the real FSM's `:DOWN`): the FSM goes, and its current task is reclaimed at once, by task_id,
/// from whoever holds it now (e.g. another agent after a stuck reclaim). An older socket's close
/// (a duplicate agent_id, or a socket that identified again elsewhere) leaves FSM and tasks be.
pub fn agent_gone(shared: &Arc<Shared>, st: &mut State, agent_id: &str, conn: u64) {
    if st.tasks.fsms.get(agent_id).is_none_or(|f| f.conn != conn) {
        return;
    }
    let current = st.tasks.fsms.remove(agent_id).and_then(|f| f.current);
    if let Some(task_id) = current {
        if st.tasks.reclaim(&task_id, "agent_disconnect", Instant::now()) {
            schedule(shared, st);
        }
    }
}

/// Every `stuck_sweep_interval`, reclaims assigned tasks not touched for `stuck_after`
/// (`stuck_after_working` when the holder's FSM is working), logging `scheduler_reclaim_stuck`.
/// Tasks past their `complete_by` are the overdue sweep's ([`super::sweeps::overdue_sweep`]).
///
/// Like the real sweep, which only calls `TaskQueue.reclaim_task`, it leaves every agent's
/// FSM as it was (§7.4, C7), whichever state the holder was in:
/// - offline (no FSM: the agent is not connected): nothing to leave;
/// - idle (e.g. the holder of a double assignment finished the other task): stays idle;
/// - assigned: stays assigned to the task, and its acceptance timer (armed at the
///   assignment, not touched by the sweep) still runs: when it fires it reclaims the task
///   again from whoever holds it then, idles the agent and flags it `unresponsive`. The
///   reference says nothing about this case beyond "the FSM is not touched"; this follows the
///   AgentFSM code it cites (`{:acceptance_timeout, task_id}` matches on `current_task_id`);
/// - working: stays working with the task as its current one, so the scheduler never picks
///   it; its late `task_complete` / `task_failed` is refused `stale_generation`, which moves
///   no FSM: it stays unschedulable until its socket closes and it identifies again;
/// - blocked: not modelled (no frame puts an FSM there).
///
/// The task goes to another idle agent, not back to its holder.
pub async fn stuck_sweep(shared: Arc<Shared>) {
    let period = shared.opts.stuck_sweep_interval.max(Duration::from_millis(1));
    let mut next = later(Instant::now(), period);
    loop {
        tokio::time::sleep_until(next).await;
        next = later(next, period);
        let now = Instant::now();
        let mut st = shared.lock();
        let mut stuck: Vec<(u64, String, String, Duration)> = st
            .tasks
            .map
            .values()
            .filter(|t| t.rec.status == "assigned")
            .filter_map(|t| {
                let holder = t.rec.assigned_to.clone().unwrap_or_default();
                let working = st.tasks.fsms.get(&holder).is_some_and(|f| f.state == "working");
                let limit = if working {
                    shared.opts.stuck_after_working
                } else {
                    shared.opts.stuck_after
                };
                let stale = now.saturating_duration_since(t.updated_at);
                (stale > limit).then(|| (t.seq, t.rec.task_id.clone(), holder, stale))
            })
            .collect();
        stuck.sort();
        let reclaimed = !stuck.is_empty();
        for (_, task_id, holder, stale) in stuck {
            st.warn(
                "scheduler_reclaim_stuck",
                &holder,
                Some(&task_id),
                format!("stale_minutes {:.1}", stale.as_secs_f64() / 60.0),
            );
            st.tasks.reclaim(&task_id, "agent_disconnect", now);
        }
        // Like the real scheduler, it assigns on events (here: the reclaims), not on every sweep.
        if reclaimed {
            schedule(&shared, &mut st);
        }
    }
}
