//! The two task sweeps beside the scheduler's stuck sweep (§7.4): the TaskQueue's overdue
//! sweep (every 30 s, assigned tasks past `complete_by` go back to the queue as "overdue") and
//! the scheduler's TTL sweep (every 60 s, queued non-trivial tasks older than `task_ttl_ms` are
//! dead-lettered as "ttl_expired"). Like the real hub, neither tells any agent anything (C2).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::scheduler;
use super::tasks::{push_history, Tasks};
use super::{later, Shared};

impl Tasks {
    /// The overdue sweep's queue step: every assigned task whose `complete_by` is before
    /// `now_ms` goes back to the queue (generation + 1, no holder, `reclaimed` "overdue"), in
    /// submission order. The holders' FSMs are left as they are: the real TaskQueue does not
    /// know them. Returns the reclaimed ids with their holders.
    pub fn reclaim_overdue(&mut self, now_ms: u64, now: Instant) -> Vec<(String, Option<String>)> {
        let now_ms = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let mut overdue: Vec<(u64, String, Option<String>)> = self
            .map
            .values()
            .filter(|t| t.rec.status == "assigned")
            .filter(|t| t.extra.complete_by.is_some_and(|by| by < now_ms))
            .map(|t| (t.seq, t.rec.task_id.clone(), t.rec.assigned_to.clone()))
            .collect();
        overdue.sort();
        overdue
            .into_iter()
            .filter(|(_, id, _)| self.reclaim(id, "overdue", now))
            .map(|(_, id, holder)| (id, holder))
            .collect()
    }

    /// The TTL sweep's choice: queued tasks whose complexity tier is not `trivial` and that
    /// were submitted more than `ttl` before `now`, in submission order. The age counts from
    /// submission even when the task was requeued since (the real hub's `created_at`, C31).
    pub fn expired(&self, now: Instant, ttl: Duration) -> Vec<String> {
        let mut expired: Vec<(u64, String)> = self
            .map
            .values()
            .filter(|t| t.rec.status == "queued")
            .filter(|t| t.rec.complexity["effective_tier"] != "trivial")
            .filter(|t| now.saturating_duration_since(t.created) > ttl)
            .map(|t| (t.seq, t.rec.task_id.clone()))
            .collect();
        expired.sort();
        expired.into_iter().map(|(_, id)| id).collect()
    }

    /// Dead-letters a queued task as `ttl_expired` (`last_error` and a `dead_letter` history
    /// entry; retries untouched). False if it is not queued.
    pub fn expire(&mut self, task_id: &str, now: Instant) -> bool {
        let Some(task) = self.map.get_mut(task_id).filter(|t| t.rec.status == "queued") else {
            return false;
        };
        task.rec.status = "dead_letter".into();
        task.rec.last_error = Some("ttl_expired".into());
        task.updated_at = now;
        push_history(task, "dead_letter", json!("ttl_expired"));
        true
    }
}

/// Runs `sweep` every `period` (at least 1 ms) from now on, like `Process.send_after` loops.
async fn every<F, Fut>(period: Duration, mut sweep: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let period = period.max(Duration::from_millis(1));
    let mut next = later(Instant::now(), period);
    loop {
        tokio::time::sleep_until(next).await;
        next = later(next, period);
        sweep().await;
    }
}

/// Every `overdue_sweep_interval` (30 s): reclaims assigned tasks past their `complete_by`
/// (epoch ms on [`Shared::clock_ms`]) and, when it reclaimed any, runs the scheduler (the real
/// TaskQueue's `task_reclaimed` broadcast). Nothing is sent to the agent that held the task,
/// and its FSM stays where it was (assigned or working), so the task goes to another agent.
pub async fn overdue_sweep(shared: Arc<Shared>) {
    every(shared.opts.overdue_sweep_interval, || async {
        let now_ms = shared.clock_ms();
        let mut st = shared.lock();
        let overdue = st.tasks.reclaim_overdue(now_ms, Instant::now());
        for (task_id, holder) in &overdue {
            st.warn(
                "task_overdue_reclaim",
                holder.as_deref().unwrap_or(""),
                Some(task_id),
                format!("complete_by passed (now {now_ms})"),
            );
        }
        if !overdue.is_empty() {
            scheduler::schedule(&shared, &mut st);
        }
    })
    .await;
}

/// Every `ttl_sweep_interval` (60 s): dead-letters queued non-trivial tasks submitted more than
/// `task_ttl` ago ([`Tasks::expired`]). A dead letter is no scheduling event, and no frame goes
/// anywhere.
pub async fn ttl_sweep(shared: Arc<Shared>) {
    every(shared.opts.ttl_sweep_interval, || async {
        let now = Instant::now();
        let ttl = shared.opts.task_ttl;
        let mut st = shared.lock();
        for task_id in st.tasks.expired(now, ttl) {
            let age = st
                .tasks
                .map
                .get(&task_id)
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t.created));
            if st.tasks.expire(&task_id, now) {
                st.warn(
                    "scheduler_task_ttl_expired",
                    "",
                    Some(&task_id),
                    format!("age_ms {}, ttl_ms {}", age.as_millis(), ttl.as_millis()),
                );
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::super::tasks::{Fsm, TaskSpec};
    use super::*;

    fn spec(tier: &str) -> TaskSpec {
        TaskSpec {
            description: "write the parser".into(),
            complexity_tier: Some(tier.into()),
            ..TaskSpec::default()
        }
    }

    #[test]
    fn only_queued_non_trivial_tasks_past_the_ttl_expire() {
        let t0 = Instant::now();
        let mut t = Tasks::default();
        t.fsms.insert("a".into(), Fsm::new(vec![]));
        let trivial = t.submit(spec("trivial"), t0);
        let unknown = t.submit(spec("unknown"), t0);
        let standard = t.submit(spec("standard"), t0);
        let held = t.submit(spec("complex"), t0);
        t.assign(&held, "a", t0);
        let ttl = Duration::from_secs(600);
        assert!(t.expired(t0 + ttl, ttl).is_empty(), "not older than the TTL yet");
        let later = t0 + ttl + Duration::from_millis(1);
        assert_eq!(t.expired(later, ttl), [unknown.clone(), standard.clone()]);
        assert!(t.expire(&standard, later));
        assert!(!t.expire(&standard, later), "already dead-lettered");
        assert!(!t.expire(&held, later), "assigned tasks are not expired");
        assert!(!t.expire(&trivial.replace("task-", "task-x"), later));
        let rec = &t.map[&standard].rec;
        assert_eq!(
            (rec.status.as_str(), rec.last_error.as_deref(), rec.retry_count),
            ("dead_letter", Some("ttl_expired"), 0)
        );
        assert_eq!(
            rec.history.last(),
            Some(&("dead_letter".into(), Some("ttl_expired".into())))
        );
    }

    #[test]
    fn overdue_reclaims_only_assigned_tasks_strictly_past_complete_by() {
        let now = Instant::now();
        let mut t = Tasks::default();
        t.fsms.insert("a".into(), Fsm::new(vec![]));
        t.fsms.insert("b".into(), Fsm::new(vec![]));
        let due = |by: i64| TaskSpec {
            complete_by: Some(by),
            ..TaskSpec::default()
        };
        let late = t.submit(due(1_000), now);
        let on_time = t.submit(due(2_000), now);
        let queued = t.submit(due(0), now);
        t.assign(&late, "a", now);
        t.assign(&on_time, "b", now);
        assert_eq!(t.reclaim_overdue(2_000, now), [(late.clone(), Some("a".into()))]);
        let rec = &t.map[&late].rec;
        assert_eq!((rec.status.as_str(), rec.generation), ("queued", 2));
        assert_eq!(
            rec.history.last(),
            Some(&("reclaimed".into(), Some("overdue".into())))
        );
        assert_eq!(t.map[&on_time].rec.status, "assigned");
        assert_eq!(t.map[&queued].rec.status, "queued");
        // The holder's state machine is not the queue's business.
        assert_eq!(t.fsms["a"].current.as_deref(), Some(late.as_str()));
    }
}
