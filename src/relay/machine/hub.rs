//! What the hub says: the link going up and down, the task frames, new assignments, and the
//! answers about held tasks after a reconnect (confirm, detach, hand back).

use super::{AgentWatch, Held, Phase, Relay, RelayAction, Standing};
use crate::event_log::Event;
use crate::protocol::{cut_chars, Outbound, TaskFrame};
use crate::relay::task::{assign_generation, AssignError, Outcome, TaskRecord};
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

impl Relay {
    pub(super) fn link_up(&mut self, now: Instant) {
        self.link_up = true;
        self.in_flight = None;
        self.next_keepalive = Some(now + self.settings.progress_keepalive);
        for i in 0..self.held.len() {
            let h = &self.held[i];
            if h.is_detached() || h.standing == Standing::Persisting {
                continue;
            }
            let frame = self.ask_frame(i);
            self.send(frame);
            self.held[i].standing = Standing::Asked;
        }
    }

    /// What to ask the hub about held task `i` after a reconnect (or again after `rate_limited`).
    pub(super) fn ask_frame(&self, i: usize) -> Outbound {
        let h = &self.held[i];
        let r = &h.record;
        if h.recovered {
            Outbound::TaskRecovering {
                task_id: r.task_id.clone(),
                description: r.description.clone(),
                metadata: r.metadata.clone(),
                last_status: h.status().to_owned(),
            }
        } else {
            Outbound::StateReport {
                task_id: r.task_id.clone(),
                status: h.status().to_owned(),
                generation: r.generation,
                assigned_at: r.assigned_at,
            }
        }
    }

    pub(super) fn link_down(&mut self) {
        self.link_up = false;
        self.in_flight = None;
        self.resend_at = None;
        self.reask_at = None;
        self.next_keepalive = None;
        // The hub reclaims a task the moment the connection drops; it will assign them again.
        self.deferred.clear();
        for h in &mut self.held {
            if matches!(h.standing, Standing::Confirmed | Standing::Asked) {
                h.standing = Standing::Unknown;
            }
        }
    }

    pub(super) fn on_frame(&mut self, frame: TaskFrame, now: Instant) {
        match frame {
            TaskFrame::Assign(frame) => {
                let known = frame
                    .get("task_id")
                    .and_then(Value::as_str)
                    .and_then(|id| self.find(id));
                if known.is_none() && self.held.iter().any(|h| h.standing == Standing::Asked) {
                    // Whether we are busy depends on the answers still to come.
                    self.deferred.push_back(frame);
                } else {
                    self.assign(frame, now);
                }
            }
            TaskFrame::Ack { task_id, status } => {
                if status != "accepted" && self.in_flight.as_deref() == Some(task_id.as_str()) {
                    self.in_flight = None;
                    if let Some(i) = self.find(&task_id) {
                        self.log(Event::OutcomeAcknowledged {
                            task_id: task_id.clone(),
                            status,
                        });
                        self.remove(i, RelayAction::ClearFiles { task_id });
                    }
                }
            }
            TaskFrame::Continue { task_id, generation } => {
                if let Some(i) = self.asked(&task_id) {
                    if let Some(g) = generation {
                        self.held[i].record.generation = g;
                    }
                    self.confirm(i, "task_continue", now);
                }
                self.drain_deferred(now);
            }
            TaskFrame::StateReportAck { task_id, action } => {
                if let Some(i) = self.asked(&task_id) {
                    if action == "continue" {
                        self.confirm(i, "state_report_ack continue", now);
                    } else {
                        self.detach(i, "state_report_ack abort", now);
                    }
                }
                self.drain_deferred(now);
            }
            TaskFrame::Reassign { task_id } => {
                if let Some(i) = self.asked(&task_id) {
                    self.detach(i, "task_reassign", now);
                }
                self.drain_deferred(now);
            }
            TaskFrame::Cancelled { task_id } => {
                if let Some(i) = self.find(&task_id) {
                    if self.in_flight.as_deref() == Some(task_id.as_str()) {
                        self.in_flight = None;
                    }
                    self.log(Event::TaskCancelled {
                        task_id: task_id.clone(),
                    });
                    self.actions.push_back(RelayAction::Kill {
                        task_id: task_id.clone(),
                    });
                    if self.settings.cancel_configured {
                        let task = self.held[i].record.clone();
                        self.actions.push_back(RelayAction::RunCancelCommand { task });
                    }
                    self.remove(i, RelayAction::ClearFiles { task_id });
                }
            }
            TaskFrame::RestartSidecar { reason } => self.log(Event::UnhandledMessage {
                message_type: format!("restart_sidecar ({reason})"),
            }),
        }
    }

    pub(super) fn assign(&mut self, frame: Map<String, Value>, now: Instant) {
        let generation = assign_generation(&frame);
        let record = match TaskRecord::from_assign(&frame, self.now_ms) {
            Ok(r) => r,
            Err(AssignError::InvalidTaskId(id)) => {
                let error = AssignError::InvalidTaskId(id.clone()).to_string();
                self.log(Event::TaskRefused {
                    task_id: cut_chars(&id, 200),
                    reason: "invalid_task_id".into(),
                    detail: format!("{error}; accepted, then failed"),
                });
                // Never task_failed before task_accepted: the hub's agent state machine ignores
                // it and stalls the agent until its 60 s acceptance timeout.
                self.send(Outbound::TaskAccepted { task_id: id.clone() });
                self.send(Outbound::TaskFailed {
                    task_id: id,
                    reason: "invalid_task_id".into(),
                    generation,
                });
                return;
            }
            Err(e @ AssignError::NoTaskId) => {
                self.log(Event::MalformedFrame { error: e.to_string() });
                return;
            }
        };
        let task_id = record.task_id.clone();
        if let Some(i) = self.find(&task_id) {
            return self.adopt(i, generation, now);
        }
        if self.storage_hold.is_some() {
            // The link is being dropped because queue.json cannot be written: the disconnect
            // hands this assignment back too (answering it would cost the task a retry).
            self.log(Event::TaskRefused {
                task_id,
                reason: "storage_unwritable".into(),
                detail: "queue.json cannot be written; not answered, the hub takes it back on the disconnect"
                    .into(),
            });
            return;
        }
        self.log(Event::TaskReceived {
            task_id: task_id.clone(),
            generation,
        });
        let waiting = self
            .held
            .iter()
            .filter(|h| h.phase != Phase::Done && !h.is_detached())
            .count();
        if waiting > self.settings.max_pending {
            // Held all the same: a refusal before task_accepted stalls the agent at the hub and
            // burns the task's retries, and a disconnect returns only the hub's current task.
            self.log(Event::MaxPendingExceeded {
                task_id: task_id.clone(),
                held: waiting + 1,
                max_pending: self.settings.max_pending,
            });
        }
        // Leftovers of an earlier run with this id are not this assignment's work.
        self.actions.push_back(RelayAction::ClearFiles {
            task_id: task_id.clone(),
        });
        let mut held = Held {
            record,
            phase: Phase::Queued,
            standing: Standing::Persisting,
            recovered: false,
            started: false,
            watch: AgentWatch::default(),
            executing: false,
            finishing: None,
        };
        // A task the sidecar may carry out itself is not failed here: the runner decides, and
        // fails it naming the config key that would have served it when it can do neither.
        let executable = self.settings.direct_execution && held.record.routed_target().is_some();
        if !self.settings.wake_configured && !executable {
            // Accepted (once persisted), then failed with the reason: never task_failed before
            // task_accepted.
            self.log(Event::TaskRefused {
                task_id: task_id.clone(),
                reason: "no_wake_command_configured".into(),
                detail:
                    "no wake_command in the config: set one so the agent can be woken; accepted, then failed"
                        .into(),
            });
            held.phase = Phase::Done;
            held.record.outcome = Some(Outcome::failed("no_wake_command_configured"));
        }
        self.held.push(held);
        self.persist();
    }

    /// The hub assigned a task we already hold: take its generation, accept again, do not wake again.
    pub(super) fn adopt(&mut self, i: usize, generation: i64, now: Instant) {
        let h = &mut self.held[i];
        if h.standing == Standing::Persisting {
            return;
        }
        h.record.generation = generation;
        self.confirm(i, "task_assign", now);
    }

    /// The hub holds task `i` assigned to us: persist, accept (again), and carry on with it.
    pub(super) fn confirm(&mut self, i: usize, why: &str, now: Instant) {
        let h = &mut self.held[i];
        h.standing = Standing::Confirmed;
        h.recovered = false;
        if let Phase::AwaitStart { deadline: None } = h.phase {
            h.phase = Phase::AwaitStart {
                deadline: Some(now + self.settings.confirmation_timeout),
            };
        }
        if h.watch.timeout_at.is_none() && h.timed() {
            // Recovered from queue.json: the time it ran before the restart counts (wall clock).
            let before = h
                .record
                .woken_at
                .map(|w| Duration::from_millis(self.now_ms.saturating_sub(w).max(0) as u64))
                .unwrap_or_default()
                .min(self.settings.task_timeout);
            let woken = now.checked_sub(before).unwrap_or(now);
            h.watch.woken_at = Some(woken);
            h.watch.timeout_at = Some(now + (self.settings.task_timeout - before));
            if h.record.woken_at.is_none() {
                h.record.woken_at = Some(self.now_ms);
            }
        }
        let (task_id, generation) = (h.record.task_id.clone(), h.record.generation);
        self.log(Event::TaskConfirmed {
            task_id: task_id.clone(),
            answer: why.to_owned(),
            generation,
        });
        self.persist();
        // The hub's new AgentFSM waits 60 s for task_accepted after a reconnect (C6).
        self.send(Outbound::TaskAccepted {
            task_id: task_id.clone(),
        });
        self.actions.push_back(RelayAction::Track { task_id });
    }

    pub(super) fn detach(&mut self, i: usize, why: &str, now: Instant) {
        let until = now + self.settings.readopt_window;
        self.held[i].standing = Standing::Detached { until };
        self.log(Event::TaskDetached {
            task_id: self.held[i].record.task_id.clone(),
            answer: why.to_owned(),
            keep_ms: self.settings.readopt_window.as_millis() as u64,
        });
    }

    /// The readopt window passed: stop the agent and let the task go.
    pub(super) fn hand_back(&mut self, i: usize) {
        let h = &self.held[i];
        let task_id = h.record.task_id.clone();
        let groups = &h.record.agent_groups;
        let woken = h.started
            || h.record.wake_attempts > 0
            || h.phase != Phase::Queued
            || matches!(
                h.record.status.as_str(),
                "waking" | "waking_confirmation" | "working"
            );
        let agent = if !groups.is_empty() {
            let ids: Vec<String> = groups.iter().map(|g| g.pgid.to_string()).collect();
            format!("stopping its agent (process group {})", ids.join(", "))
        } else if woken {
            "nothing could be stopped: its agent was not started by this sidecar (the Node \
             sidecar's child, or one whose process group cannot be recognised after a restart)"
                .to_owned()
        } else {
            "its agent was never woken".to_owned()
        };
        self.log(Event::TaskHandedBack {
            task_id: task_id.clone(),
            agent,
        });
        self.actions.push_back(RelayAction::Kill {
            task_id: task_id.clone(),
        });
        // A result the agent wrote (an outcome, or one being verified) is moved aside, not lost.
        let cleanup = if self.held[i].record.outcome.is_some() || self.held[i].finishing.is_some() {
            RelayAction::DiscardResult { task_id }
        } else {
            RelayAction::ClearFiles { task_id }
        };
        self.remove(i, cleanup);
    }

    pub(super) fn asked(&self, task_id: &str) -> Option<usize> {
        self.find(task_id)
            .filter(|i| self.held[*i].standing == Standing::Asked)
    }

    pub(super) fn drain_deferred(&mut self, now: Instant) {
        while !self.held.iter().any(|h| h.standing == Standing::Asked) {
            let Some(frame) = self.deferred.pop_front() else {
                break;
            };
            self.assign(frame, now);
        }
    }
}
