//! The agent's side: wake attempts and their retries, `.started`, the agent's end and its exit
//! grace, the task timeout, and the result file.

use super::{Phase, Relay, RelayAction, ResultFile, Standing, WakeEnd};
use crate::event_log::Event;
use crate::protocol::{cut_chars, Outbound, MAX_REASON_CHARS};
use crate::relay::task::Outcome;
use serde_json::Value;
use std::time::{Duration, Instant};

impl Relay {
    pub(super) fn wake(&mut self, i: usize, attempt: u32, now: Instant) {
        let now_ms = self.now_ms;
        let timeout = self.settings.task_timeout;
        let h = &mut self.held[i];
        if h.watch.timeout_at.is_none() {
            h.watch.woken_at = Some(now);
            h.watch.timeout_at = Some(now + timeout);
            h.record.woken_at = Some(now_ms);
        }
        h.watch.gone = false;
        h.watch.exit_at = None;
        h.watch.started_while_waking = false;
        h.executing = false;
        h.record.executed_by = None;
        h.phase = Phase::Waking { attempt };
        h.record.wake_attempts = attempt;
        h.record.status = "waking".into();
        let task = h.record.clone();
        self.log(Event::WakeAttempt {
            task_id: task.task_id.clone(),
            attempt,
        });
        self.persist();
        self.actions.push_back(RelayAction::Wake { task, attempt });
    }

    pub(super) fn wake_finished(&mut self, task_id: &str, attempt: u32, end: WakeEnd, now: Instant) {
        let Some(i) = self.find(task_id) else { return };
        let (status, error) = match &end {
            WakeEnd::Success => ("success", None),
            WakeEnd::Failed(e) => ("failed", Some(cut_chars(e, MAX_REASON_CHARS))),
            WakeEnd::Timeout => (
                "timeout",
                Some("wake_command ran past wake_timeout_ms; its process group was killed".to_owned()),
            ),
        };
        self.log(Event::WakeFinished {
            task_id: task_id.to_owned(),
            attempt,
            status: status.to_owned(),
            error: error.clone(),
        });
        self.send_if_up(
            i,
            Outbound::WakeResult {
                task_id: task_id.to_owned(),
                status,
                attempt: Some(attempt),
                error: error.clone(),
                reason: None,
            },
        );
        let h = &mut self.held[i];
        if h.phase != (Phase::Waking { attempt }) {
            return; // done or cancelled meanwhile
        }
        if end == WakeEnd::Success || h.started {
            h.phase = if h.started {
                Phase::Working
            } else {
                Phase::AwaitStart {
                    deadline: Some(now + self.settings.confirmation_timeout),
                }
            };
            self.persist();
        } else if let Some(delay) = self.settings.wake_retry_delays.get(attempt as usize - 1).copied() {
            h.phase = Phase::RetryAt {
                attempt: attempt + 1,
                at: now + delay,
            };
            self.log(Event::WakeRetryScheduled {
                task_id: task_id.to_owned(),
                attempt: attempt + 1,
                delay_ms: delay.as_millis() as u64,
            });
        } else {
            let reason = format!(
                "wake_failed_after_{attempt}_attempts: {}",
                error.unwrap_or_default()
            );
            self.finish(i, Outcome::failed(reason));
        }
    }

    pub(super) fn started(&mut self, task_id: &str, now: Instant) {
        let Some(i) = self.find(task_id) else { return };
        let h = &mut self.held[i];
        if h.started || h.phase == Phase::Done {
            return;
        }
        h.started = true;
        if matches!(h.phase, Phase::Waking { .. }) {
            h.watch.started_while_waking = true;
        }
        if matches!(
            h.phase,
            Phase::Queued | Phase::AwaitStart { .. } | Phase::RetryAt { .. }
        ) {
            h.phase = Phase::Working;
        }
        self.log(Event::AgentStarted {
            task_id: task_id.to_owned(),
        });
        self.persist();
        self.start_exit_grace(i, now);
    }

    /// Every process of task `task_id`'s agent ended. It counts only when the agent ran in the
    /// group we watch: a process outlived the wake shell, or `.started` came while the shell
    /// ran. A wake command that only notified an agent running elsewhere (its group empties as
    /// it returns, before `.started`) is covered by `task_timeout_ms` instead.
    pub(super) fn agent_gone(&mut self, task_id: &str, outlived_wake: bool, now: Instant) {
        let Some(i) = self.find(task_id) else { return };
        let h = &mut self.held[i];
        // Kept while detached too: it applies again if the hub assigns the task back.
        if !matches!(
            h.phase,
            Phase::RetryAt { .. } | Phase::AwaitStart { .. } | Phase::Working
        ) {
            return;
        }
        if outlived_wake || h.watch.started_while_waking {
            h.watch.gone = true;
            self.start_exit_grace(i, now);
        }
    }

    /// Once the agent is gone and has started, its result has `agent_exit_grace` to appear.
    pub(super) fn start_exit_grace(&mut self, i: usize, now: Instant) {
        let h = &mut self.held[i];
        if h.watch.gone && h.started && h.phase == Phase::Working && h.watch.exit_at.is_none() {
            h.watch.exit_at = Some(now + self.settings.agent_exit_grace);
            let task_id = h.record.task_id.clone();
            self.log(Event::AgentExited {
                task_id,
                grace_ms: self.settings.agent_exit_grace.as_millis() as u64,
            });
        }
    }

    /// Task `i` ran past `task_timeout`: stop its agent, fail it with the time it ran.
    pub(super) fn timed_out(&mut self, i: usize, elapsed: Duration) {
        let task_id = self.held[i].record.task_id.clone();
        let elapsed_ms = elapsed.as_millis() as u64;
        if matches!(self.held[i].phase, Phase::Finishing { .. }) {
            self.log(Event::TaskTimeout {
                task_id: task_id.clone(),
                elapsed_ms,
            });
            self.actions.push_back(RelayAction::Kill { task_id });
            let reason = format!(
                "task_timeout: the task ran {} (task_timeout_ms {}) and its result was still being \
                 verified and delivered; that was stopped",
                crate::event_log::human_duration(elapsed),
                self.settings.task_timeout.as_millis()
            );
            return self.finish(i, Outcome::failed(reason));
        }
        if self.held[i].executing {
            self.log(Event::TaskTimeout {
                task_id: task_id.clone(),
                elapsed_ms,
            });
            self.actions.push_back(RelayAction::Kill { task_id });
            let reason = format!(
                "task_timeout: the execution ran {} (task_timeout_ms {}); it was stopped",
                crate::event_log::human_duration(elapsed),
                self.settings.task_timeout.as_millis()
            );
            return self.finish(i, Outcome::failed(reason));
        }
        let stopped = if self.held[i].record.agent_groups.is_empty() {
            "its agent was not started by this sidecar and could not be stopped"
        } else {
            "its processes were stopped"
        };
        self.log(Event::TaskTimeout {
            task_id: task_id.clone(),
            elapsed_ms,
        });
        self.actions.push_back(RelayAction::Kill { task_id });
        let reason = format!(
            "task_timeout: the agent ran {} (task_timeout_ms {}); {stopped}",
            crate::event_log::human_duration(elapsed),
            self.settings.task_timeout.as_millis()
        );
        self.finish(i, Outcome::failed(reason));
    }

    pub(super) fn result(&mut self, task_id: &str, file: ResultFile, _now: Instant) {
        let Some(i) = self
            .find(task_id)
            .filter(|i| self.held[*i].standing != Standing::Persisting)
        else {
            self.log(Event::ResultDiscarded {
                task_id: task_id.to_owned(),
                reason: "no such task is held".into(),
            });
            self.actions.push_back(RelayAction::DiscardResult {
                task_id: task_id.to_owned(),
            });
            return;
        };
        if matches!(self.held[i].phase, Phase::Done | Phase::Finishing { .. }) {
            return;
        }
        let outcome = match file {
            ResultFile::Object(result) => {
                let success = result.get("status").and_then(Value::as_str) == Some("success");
                if success && self.settings.finish_results {
                    return self.start_finishing(i, result);
                }
                Outcome::from_result(result)
            }
            ResultFile::Invalid(why) => {
                self.log(Event::ResultInvalid {
                    task_id: task_id.to_owned(),
                    error: why,
                });
                Outcome::failed("result_invalid")
            }
        };
        self.finish(i, outcome);
    }
}
