//! queue.json: what is persisted, and the link held down while it cannot be written.

use super::{Relay, RelayAction, Standing};
use crate::event_log::Event;
use crate::protocol::{cut_chars, Outbound, MAX_REASON_CHARS};
use crate::relay::task::TaskRecord;
use std::time::{Duration, Instant};

/// The first wait before queue.json is tried again after a failed persist.
pub const STORAGE_PROBE_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two tries of queue.json (the wait doubles up to it).
pub const STORAGE_PROBE_MAX: Duration = Duration::from_secs(60);

/// The link is held down because queue.json could not be written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct StorageHold {
    /// When to try queue.json again (None while a probe is out).
    pub(super) probe_at: Option<Instant>,
    /// Since when the link is held down.
    pub(super) since: Instant,
}

impl Relay {
    pub(super) fn persist(&mut self) {
        let records = self.records();
        self.actions.push_back(RelayAction::Persist(records));
    }

    /// The held tasks as queue.json holds them.
    pub(super) fn records(&self) -> Vec<TaskRecord> {
        self.held
            .iter()
            .map(|h| {
                let mut r = h.record.clone();
                r.status = h.status().to_owned();
                r
            })
            .collect()
    }

    pub(super) fn persisted(&mut self, result: Result<(), String>, now: Instant) {
        let fresh: Vec<usize> = (0..self.held.len())
            .filter(|i| self.held[*i].standing == Standing::Persisting)
            .collect();
        match result {
            Ok(()) => {
                if !fresh.is_empty() {
                    self.probe_delay = STORAGE_PROBE_FIRST;
                }
                for i in fresh {
                    let task_id = self.held[i].record.task_id.clone();
                    self.held[i].standing = Standing::Confirmed;
                    self.send(Outbound::TaskAccepted {
                        task_id: task_id.clone(),
                    });
                    self.log(Event::TaskAccepted {
                        task_id: task_id.clone(),
                        generation: self.held[i].record.generation,
                    });
                    self.actions.push_back(RelayAction::Track { task_id });
                }
            }
            Err(error) => {
                self.log(Event::PersistFailed { error: error.clone() });
                if fresh.is_empty() {
                    return;
                }
                // Not accepted, so not ours: neither answered (a task_failed before
                // task_accepted stalls the agent and costs a retry) nor kept. Dropping the link
                // makes the hub take the task back at once without counting a retry.
                let mut ids = Vec::new();
                for i in fresh.into_iter().rev() {
                    ids.push(self.held.remove(i).record.task_id);
                }
                ids.reverse();
                self.hold_link(&error, &ids, now);
            }
        }
    }

    /// queue.json cannot be written: drop the link and stay away until a probe succeeds.
    pub(super) fn hold_link(&mut self, error: &str, ids: &[String], now: Instant) {
        self.probe_later(error, ids.to_vec(), now);
        self.actions.push_back(RelayAction::HoldLink {
            reason: cut_chars(&format!("queue.json cannot be written: {error}"), 200),
        });
    }

    pub(super) fn storage_probed(&mut self, result: Result<(), String>, now: Instant) {
        let Some(hold) = self.storage_hold else { return };
        match result {
            Ok(()) => {
                self.storage_hold = None;
                self.log(Event::StorageWritable {
                    held_down_ms: now.saturating_duration_since(hold.since).as_millis() as u64,
                });
                self.actions.push_back(RelayAction::ReleaseLink);
            }
            Err(error) => self.probe_later(&error, Vec::new(), now),
        }
    }

    /// Keep the link held down (since the first failure) and try queue.json again later: the
    /// wait doubles each time, up to [`STORAGE_PROBE_MAX`]. Logs `error` and the tasks it cost.
    fn probe_later(&mut self, error: &str, task_ids: Vec<String>, now: Instant) {
        let delay = self.probe_delay;
        self.probe_delay = (delay * 2).min(STORAGE_PROBE_MAX);
        let since = self.storage_hold.map_or(now, |h| h.since);
        self.storage_hold = Some(StorageHold {
            probe_at: Some(now + delay),
            since,
        });
        self.log(Event::StorageUnwritable {
            error: cut_chars(error, MAX_REASON_CHARS),
            task_ids,
            retry_ms: delay.as_millis() as u64,
        });
    }
}
