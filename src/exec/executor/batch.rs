//! The pacing of one execution's events: coalesced, bounded, the first token at once, then at
//! most one frame per [`PROGRESS_INTERVAL`], slower after a burst ([`PROGRESS_BURST`]).

use crate::exec::direct::{EventKind, ExecEvent};
use crate::protocol::cut_chars;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// The shortest time between two `task_progress` frames of one execution.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Frames one execution may send at the [`PROGRESS_INTERVAL`] pace before it slows down to one
/// per [`PROGRESS_REFILL`]: the hub's "normal" bucket holds 60 frames and refills one a second, and
/// pings and the outcome need their share (protocol §11.6).
pub const PROGRESS_BURST: f64 = 30.0;

/// How long one frame of the burst takes to come back.
pub const PROGRESS_REFILL: Duration = Duration::from_millis(1500);

/// Events waiting to be sent for one execution, at most (older ones are dropped first).
pub(super) const MAX_PENDING_EVENTS: usize = 32;

/// The longest `text` of one `execution_event` (a coalesced batch keeps its first characters).
const MAX_EVENT_TEXT_CHARS: usize = 10_000;

/// The events of one execution not yet sent, and when the next frame may go.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) pending: VecDeque<ExecEvent>,
    /// Characters of streamed text so far (`tokens_so_far`, as Node counts it).
    token_chars: u64,
    /// The first token went out (it goes at once).
    first_token_sent: bool,
    /// No frame before this.
    pub(super) next_at: Option<Instant>,
    /// Events dropped because too many waited.
    pub(super) dropped: u64,
    /// Frames left in the burst (see [`PROGRESS_BURST`]), as of `budget_at`.
    budget: f64,
    budget_at: Option<Instant>,
}

impl Batch {
    /// Queue `event`: joined to the last one waiting when of the same kind and model; the
    /// oldest dropped when too many wait.
    pub(super) fn push(&mut self, event: ExecEvent) {
        if event.kind == EventKind::Token {
            self.token_chars += event.text.chars().count() as u64;
        }
        if let Some(last) = self.pending.back_mut() {
            if last.kind == event.kind && last.model == event.model {
                if last.text.len() < MAX_EVENT_TEXT_CHARS * 4 {
                    last.text.push_str(&event.text);
                }
                return;
            }
        }
        if self.pending.len() >= MAX_PENDING_EVENTS {
            self.pending.pop_front();
            self.dropped += 1;
        }
        self.pending.push_back(event);
    }

    /// The next event to send now, if one may go.
    pub(super) fn take_due(&mut self, now: Instant) -> Option<Value> {
        let first = self.pending.front()?;
        let first_token = first.kind == EventKind::Token && !self.first_token_sent;
        if !first_token && self.next_at.is_some_and(|at| now < at) {
            return None;
        }
        self.take(now)
    }

    fn take(&mut self, now: Instant) -> Option<Value> {
        let event = self.pending.pop_front()?;
        if event.kind == EventKind::Token {
            self.first_token_sent = true;
        }
        // The burst budget refills with time; an empty one spaces frames by the refill period.
        let refilled = self
            .budget_at
            .map_or(PROGRESS_BURST, |at| {
                self.budget + (now - at).as_secs_f64() / PROGRESS_REFILL.as_secs_f64()
            })
            .min(PROGRESS_BURST);
        self.budget = refilled - 1.0;
        self.budget_at = Some(now);
        let wait = if self.budget >= 1.0 {
            PROGRESS_INTERVAL
        } else {
            PROGRESS_REFILL.mul_f64(1.0 - self.budget).max(PROGRESS_INTERVAL)
        };
        self.next_at = Some(now + wait);
        let tokens_so_far = match event.kind {
            // The count up to this batch's end; later batches are still pending.
            EventKind::Token => {
                let later: u64 = self
                    .pending
                    .iter()
                    .filter(|e| e.kind == EventKind::Token)
                    .map(|e| e.text.chars().count() as u64)
                    .sum();
                json!(self.token_chars - later)
            }
            _ => Value::Null,
        };
        Some(json!({
            "event_type": event.kind.as_str(),
            "text": cut_chars(&event.text, MAX_EVENT_TEXT_CHARS),
            "tokens_so_far": tokens_so_far,
            "model": event.model,
            "timestamp": epoch_ms(),
        }))
    }

    /// Everything still pending merged into one event (texts of the first one's kind joined;
    /// the other kinds are dropped: the execution is over, the result holds its output).
    pub(super) fn take_rest_later(&mut self) -> Option<ExecEvent> {
        let mut first = self.pending.pop_front()?;
        for e in self.pending.drain(..) {
            if e.kind == first.kind {
                first.text.push_str(&e.text);
            }
        }
        Some(first)
    }
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
