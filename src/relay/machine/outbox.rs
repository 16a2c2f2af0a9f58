//! Outcomes: recorded, sent to the hub one at a time until acknowledged, and the next task
//! woken once the current one is done.

use super::{Phase, Relay, RelayAction, Standing};
use crate::event_log::Event;
use crate::protocol::{cut_chars, Outbound};
use crate::relay::task::Outcome;
use std::time::Instant;

impl Relay {
    pub(super) fn outcome_refused(&mut self, reason: String, now: Instant) {
        let Some(task_id) = self.in_flight.take() else {
            self.log(Event::HubError {
                error: reason,
                detail: None,
            });
            return;
        };
        let Some(i) = self.find(&task_id) else { return };
        let generation = self.held[i].record.generation;
        self.log(Event::OutcomeRefused {
            task_id: task_id.clone(),
            generation,
            reason: reason.clone(),
        });
        if reason == "stale_generation" {
            // The hub moved on to another generation: it may assign the task to us again.
            self.detach(i, "stale_generation", now);
        } else {
            self.remove(i, RelayAction::DiscardResult { task_id });
        }
    }

    /// Task `i` has its outcome: persist it before it is sent, and move on to the next task.
    pub(super) fn finish(&mut self, i: usize, outcome: Outcome) {
        let h = &mut self.held[i];
        h.phase = Phase::Done;
        h.finishing = None;
        let kind = match &outcome {
            Outcome::Complete { .. } => "complete".to_owned(),
            Outcome::Failed { reason } => format!("failed: {}", cut_chars(reason, 200)),
        };
        h.record.outcome = Some(outcome);
        self.log(Event::TaskOutcome {
            task_id: self.held[i].record.task_id.clone(),
            outcome: kind,
        });
        self.persist();
    }

    /// Send outcomes (one at a time), start finishing results, and wake the next task.
    pub(super) fn pump(&mut self, now: Instant) {
        if self.link_up && self.in_flight.is_none() && self.resend_at.is_none_or(|t| now >= t) {
            self.resend_at = None;
            if let Some(h) = self
                .held
                .iter()
                .find(|h| h.standing == Standing::Confirmed && h.record.outcome.is_some())
            {
                let r = &h.record;
                let frame = match r.outcome.clone().expect("filtered") {
                    Outcome::Complete {
                        result,
                        tokens_used,
                        verification_report,
                        verification_history,
                    } => Outbound::TaskComplete {
                        task_id: r.task_id.clone(),
                        generation: r.generation,
                        result,
                        tokens_used,
                        verification_report,
                        verification_history,
                    },
                    Outcome::Failed { reason } => Outbound::TaskFailed {
                        task_id: r.task_id.clone(),
                        reason,
                        generation: r.generation,
                    },
                };
                self.in_flight = Some(r.task_id.clone());
                self.send(frame);
            }
        }
        // A result waiting for the hub's confirmation before it is verified and delivered.
        for i in 0..self.held.len() {
            self.begin_finishing(i);
        }
        // Wake the first task that is not done, once the hub confirms it and nothing runs before it.
        let current = self
            .held
            .iter()
            .position(|h| h.phase != Phase::Done && !h.is_detached());
        if let Some(i) = current {
            if self.held[i].phase == Phase::Queued && self.held[i].standing == Standing::Confirmed {
                let attempt = self.held[i].record.wake_attempts + 1;
                self.wake(i, attempt, now);
            }
        }
    }
}
