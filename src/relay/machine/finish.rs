//! Before and after a task's run (protocol §11.8-§11.9): what its preparation made
//! (`Prepared`), and a woken agent's success result on its way to the outcome, verified and
//! delivered by whoever runs the task ([`RelayAction::Finish`], answered with `Finished`).

use super::{Phase, Relay, RelayAction, Standing};
use crate::event_log::Event;
use crate::protocol::cut_chars;
use crate::relay::task::Outcome;
use serde_json::{Map, Value};
use std::path::PathBuf;

impl Relay {
    /// Task `i`'s agent wrote a success result: the task is `verifying` until it is finished.
    pub(super) fn start_finishing(&mut self, i: usize, result: Map<String, Value>) {
        let h = &mut self.held[i];
        h.phase = Phase::Finishing { running: false };
        h.finishing = Some(result);
        h.record.status = "verifying".into();
        self.persist();
        self.begin_finishing(i);
    }

    /// Ask for task `i`'s result to be finished, once the hub holds the task ours (delivery
    /// pushes and opens a pull request: not for a task the hub may have given to another agent).
    pub(super) fn begin_finishing(&mut self, i: usize) {
        let h = &mut self.held[i];
        if h.phase != (Phase::Finishing { running: false }) || h.standing != Standing::Confirmed {
            return;
        }
        let Some(result) = h.finishing.clone() else {
            return;
        };
        h.phase = Phase::Finishing { running: true };
        let task = h.record.clone();
        self.actions.push_back(RelayAction::Finish { task, result });
    }

    /// Task `task_id`'s result was verified and delivered: it is the outcome.
    pub(super) fn finished(&mut self, task_id: &str, result: Map<String, Value>) {
        let Some(i) = self.find(task_id) else { return };
        if self.held[i].phase != (Phase::Finishing { running: true }) {
            return; // stopped meanwhile: a late answer
        }
        self.held[i].finishing = None;
        self.finish(i, Outcome::from_result(result));
    }

    /// Task `task_id` was prepared for its run (or could not be).
    pub(super) fn prepared(&mut self, task_id: &str, outcome: Result<Option<PathBuf>, String>) {
        let Some(i) = self.find(task_id) else { return };
        if !matches!(self.held[i].phase, Phase::Waking { .. }) {
            return; // done or cancelled meanwhile
        }
        match outcome {
            Ok(Some(folder)) => {
                if self.held[i].record.workspace.as_ref() != Some(&folder) {
                    self.held[i].record.workspace = Some(folder);
                    self.persist();
                }
            }
            Ok(None) => {}
            Err(reason) => {
                self.log(Event::PrepareFailed {
                    task_id: task_id.to_owned(),
                    error: cut_chars(&reason, 500),
                });
                self.finish(i, Outcome::failed(reason));
            }
        }
    }
}
