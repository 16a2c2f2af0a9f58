//! The relay's deadlines: when it next wants [`Relay::handle_timeout`], and what happens then
//! (wake retries, the confirmation, task and agent-exit timeouts, the readopt window, resends,
//! re-asks, storage probes and the progress keepalive).

use super::{Phase, Relay, RelayAction, Standing};
use crate::event_log::Event;
use crate::protocol::Outbound;
use crate::relay::task::Outcome;
use std::time::Instant;

impl Relay {
    /// When [`Relay::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for h in &self.held {
            match h.phase {
                Phase::RetryAt { at, .. } => consider(at),
                Phase::AwaitStart {
                    deadline: Some(deadline),
                } => consider(deadline),
                _ => {}
            }
            if let Standing::Detached { until } = h.standing {
                consider(until);
            }
            if h.timed() {
                if let Some(t) = h.watch.timeout_at {
                    consider(t);
                }
                if let (Some(t), Phase::Working) = (h.watch.exit_at, h.phase) {
                    consider(t);
                }
            }
        }
        if let Some(t) = self.resend_at {
            consider(t);
        }
        if let Some(t) = self.reask_at {
            consider(t);
        }
        if let Some(t) = self.next_keepalive {
            consider(t);
        }
        if let Some(t) = self.storage_hold.and_then(|h| h.probe_at) {
            consider(t);
        }
        next
    }

    /// Act on every deadline that has passed by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.held.len() {
            let h = &self.held[i];
            let id = h.record.task_id.clone();
            if let Standing::Detached { until } = h.standing {
                if now >= until {
                    self.hand_back(i);
                    continue;
                }
            }
            if h.timed() && h.watch.timeout_at.is_some_and(|t| now >= t) {
                let elapsed = now.saturating_duration_since(h.watch.woken_at.unwrap_or(now));
                self.timed_out(i, elapsed);
                i += 1;
                continue;
            }
            if h.timed() && h.phase == Phase::Working && h.watch.exit_at.is_some_and(|t| now >= t) {
                self.actions.push_back(RelayAction::Kill { task_id: id });
                let grace = self.settings.agent_exit_grace.as_millis();
                self.finish(
                    i,
                    Outcome::failed(format!(
                        "the agent exited without writing a result (agent_exit_grace_ms {grace} after its \
                         last process ended)"
                    )),
                );
                i += 1;
                continue;
            }
            match h.phase {
                Phase::RetryAt { attempt, at } if now >= at => self.wake(i, attempt, now),
                Phase::AwaitStart {
                    deadline: Some(deadline),
                } if now >= deadline => {
                    self.log(Event::ConfirmationTimeout {
                        task_id: id.clone(),
                        waited_ms: self.settings.confirmation_timeout.as_millis() as u64,
                    });
                    self.send_if_up(
                        i,
                        Outbound::WakeResult {
                            task_id: id.clone(),
                            status: "timeout",
                            attempt: None,
                            error: None,
                            reason: Some("confirmation_timeout".into()),
                        },
                    );
                    self.actions.push_back(RelayAction::Kill { task_id: id });
                    self.finish(i, Outcome::failed("confirmation_timeout"));
                }
                _ => {}
            }
            i += 1;
        }
        if self.resend_at.is_some_and(|t| now >= t) {
            self.resend_at = None;
        }
        if self.reask_at.is_some_and(|t| now >= t) {
            self.reask_at = None;
            if self.link_up {
                for i in 0..self.held.len() {
                    if self.held[i].standing == Standing::Asked {
                        let frame = self.ask_frame(i);
                        self.send(frame);
                    }
                }
            }
        }
        if let Some(hold) = self.storage_hold.as_mut() {
            if hold.probe_at.is_some_and(|t| now >= t) {
                hold.probe_at = None;
                let records = self.records();
                self.actions.push_back(RelayAction::ProbeStorage(records));
            }
        }
        if self.next_keepalive.is_some_and(|t| now >= t) {
            self.next_keepalive = Some(now + self.settings.progress_keepalive);
            let alive: Vec<String> = self
                .held
                .iter()
                .filter(|h| h.standing == Standing::Confirmed && h.phase != Phase::Done)
                .map(|h| h.record.task_id.clone())
                .collect();
            for task_id in alive {
                self.send(Outbound::TaskProgress {
                    task_id,
                    progress: None,
                    execution_event: None,
                });
            }
        }
        self.pump(now);
    }
}
