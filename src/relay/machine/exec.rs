//! Tasks the sidecar carries out itself (protocol §11): a runner answers a wake with `Executing`
//! instead of a wake result, streams `ExecutionEvent`s, and ends with `Executed`. Everything else
//! (persistence, the task timeout, cancel, recovery, the outcome's delivery) is the woken task's.

use super::{Phase, Relay};
use crate::event_log::Event;
use crate::protocol::{cut_chars, Outbound, MAX_REASON_CHARS};
use crate::relay::task::Outcome;
use serde_json::Value;

impl Relay {
    /// A runner began executing task `task_id` for wake attempt `attempt`.
    pub(super) fn executing(&mut self, task_id: &str, attempt: u32, executor: String) {
        let Some(i) = self.find(task_id) else { return };
        let h = &mut self.held[i];
        if h.phase != (Phase::Waking { attempt }) {
            return; // done or cancelled meanwhile
        }
        h.phase = Phase::Working;
        h.started = true;
        h.executing = true;
        h.record.status = "working".into();
        h.record.executed_by = Some(executor);
        self.persist();
    }

    /// Forward one batched execution event as `task_progress` while the hub holds the task ours.
    pub(super) fn execution_event(&mut self, task_id: String, event: Value) {
        let Some(i) = self.find(&task_id) else { return };
        if self.held[i].phase == Phase::Working && self.held[i].executing {
            self.send_if_up(
                i,
                Outbound::TaskProgress {
                    task_id,
                    progress: None,
                    execution_event: Some(event),
                },
            );
        }
    }

    /// An execution (or the runner's choice, when it could neither execute nor wake) ended.
    pub(super) fn executed(&mut self, task_id: &str, outcome: Result<Value, String>) {
        let Some(i) = self.find(task_id) else { return };
        if !matches!(self.held[i].phase, Phase::Working | Phase::Waking { .. }) {
            return; // done, or not (yet) run: a late answer of a stopped execution
        }
        let outcome = match outcome {
            // The verification the runner put in the result goes to the top level.
            Ok(Value::Object(result)) => Outcome::complete(result),
            Ok(other) => Outcome::failed(format!(
                "execution_result_invalid: the executor's result is not an object: {}",
                cut_chars(&other.to_string(), 200)
            )),
            Err(reason) => {
                self.log(Event::ExecutionFailed {
                    task_id: task_id.to_owned(),
                    error: cut_chars(&reason, 500),
                });
                Outcome::failed(cut_chars(&reason, MAX_REASON_CHARS))
            }
        };
        self.finish(i, outcome);
    }
}
