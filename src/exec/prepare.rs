//! The preparation of a task before its first start ([`Pipeline::prepare`]: its workspace and
//! branch): the start waits for it, then is routed with the workspace known.
//!
//! [`Pipeline::prepare`]: super::pipeline::Pipeline::prepare

use super::pipeline::{BoxFut, Prepared};
use super::{RelayInput, RunRequest, Runners, TaskRunner};
use crate::event_log::Event;
use std::collections::HashSet;
use std::task::{Context, Poll};

/// A task's start waiting for its preparation (`Pipeline::prepare`).
struct Preparing {
    request: RunRequest,
    fut: BoxFut<Result<Prepared, String>>,
}

/// The starts waiting for their preparation, and the tasks already prepared.
#[derive(Default)]
pub(super) struct Preparations {
    /// Starts waiting for their preparation.
    preparing: Vec<Preparing>,
    /// Tasks whose preparation was done (or asked for) since their first start: a later wake
    /// attempt is not prepared again.
    prepared: HashSet<String>,
}

impl Preparations {
    /// Whether this is task `task_id`'s first start since it was held (recorded: the next one
    /// is not).
    pub(super) fn first_start(&mut self, task_id: &str) -> bool {
        self.prepared.insert(task_id.to_owned())
    }

    /// Hold `request` (a task's start) until `fut`, its preparation, ends.
    pub(super) fn wait(&mut self, request: RunRequest, fut: BoxFut<Result<Prepared, String>>) {
        self.preparing.push(Preparing { request, fut });
    }

    /// Drop the preparation of task `task_id`'s start, if any (`other` accepts every request
    /// but that task's start): a later start prepares again.
    pub(super) fn stop(&mut self, task_id: &str, other: impl Fn(&RunRequest) -> bool) {
        if self.preparing.iter().any(|p| !other(&p.request)) {
            self.preparing.retain(|p| other(&p.request));
            self.prepared.remove(task_id);
        }
    }

    /// Task `task_id` is gone: a start with the same id is prepared again.
    pub(super) fn forget(&mut self, task_id: &str) {
        self.prepared.remove(task_id);
    }

    /// The first preparation to end, taken out with its answer.
    pub(super) fn poll_ended(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<(RunRequest, Result<Prepared, String>)> {
        for i in 0..self.preparing.len() {
            if let Poll::Ready(result) = self.preparing[i].fut.as_mut().poll(cx) {
                let p = self.preparing.remove(i);
                return Poll::Ready((p.request, result));
            }
        }
        Poll::Pending
    }
}

impl Runners {
    /// A task's preparation ended: record what it made, and start the task with its workspace
    /// known (or fail it with the reason).
    pub(super) fn prepare_ended(&mut self, request: RunRequest, result: Result<Prepared, String>) {
        let RunRequest::Start { mut task, attempt } = request else {
            return;
        };
        let task_id = task.task_id.clone();
        match result {
            Ok(prepared) => {
                if let Some(folder) = &prepared.workdir {
                    task.workspace = Some(folder.clone());
                }
                self.ready.push_back(RelayInput::Prepared {
                    task_id: task_id.clone(),
                    outcome: Ok(prepared.workdir),
                });
                if let Some(warning) = prepared.warning {
                    self.ready
                        .push_back(RelayInput::Log(Event::PrepareWarning { task_id, warning }));
                }
                let inputs = self.handle(RunRequest::Start { task, attempt });
                self.ready.extend(inputs);
            }
            Err(reason) => self.ready.push_back(RelayInput::Prepared {
                task_id,
                outcome: Err(reason),
            }),
        }
    }
}
