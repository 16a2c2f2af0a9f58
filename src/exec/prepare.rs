//! The preparation of a task before its first start ([`Pipeline::prepare`]: its workspace and
//! branch): the start waits for it, then is routed with the workspace known.
//!
//! [`Pipeline::prepare`]: super::pipeline::Pipeline::prepare

use super::pipeline::{BoxFut, Prepared};
use super::{RelayInput, RunRequest, Runners, TaskRunner};
use crate::event_log::Event;
use std::collections::HashSet;
use std::task::{Context, Poll};

/// What ended among the preparations and settlings.
pub(super) enum PrepEnded {
    /// An ended task's folder was settled, with this to log.
    Settled(Event),
    /// A start's preparation ended: the start, and what the preparation made.
    Prepared(Box<(RunRequest, Result<Prepared, String>)>),
}

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
    /// Ended tasks' folders being settled (`Pipeline::settle`): preparations wait for them, so
    /// that two git commands never work in one repository at once.
    settling: Vec<BoxFut<Option<Event>>>,
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

    /// Settle an ended task's folder with `fut`; preparations wait until it ends.
    pub(super) fn settle(&mut self, fut: BoxFut<Option<Event>>) {
        self.settling.push(fut);
    }

    /// The first settling to end with something to log, else the first preparation to end
    /// (none while a settling goes on).
    pub(super) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<PrepEnded> {
        if let Poll::Ready(event) = self.poll_settled(cx) {
            return Poll::Ready(PrepEnded::Settled(event));
        }
        self.poll_ended(cx)
            .map(|ended| PrepEnded::Prepared(Box::new(ended)))
    }

    /// The first settling to end with something to log (those ending with nothing are dropped).
    fn poll_settled(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        let mut i = 0;
        while i < self.settling.len() {
            match self.settling[i].as_mut().poll(cx) {
                Poll::Ready(event) => {
                    drop(self.settling.remove(i));
                    if let Some(event) = event {
                        return Poll::Ready(event);
                    }
                }
                Poll::Pending => i += 1,
            }
        }
        Poll::Pending
    }

    /// The first preparation to end, taken out with its answer.
    fn poll_ended(&mut self, cx: &mut Context<'_>) -> Poll<(RunRequest, Result<Prepared, String>)> {
        // Nothing is prepared while an ended task's folder is being settled (woken again by the
        // settling's end, through `poll_settled` in the same select).
        if !self.settling.is_empty() {
            return Poll::Pending;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn start(id: &str) -> RunRequest {
        let frame = json!({"type": "task_assign", "task_id": id, "description": "d", "generation": 1});
        let task = crate::relay::task::TaskRecord::from_assign(frame.as_object().unwrap(), 0).unwrap();
        RunRequest::Start { task, attempt: 1 }
    }

    /// A preparation (git in a repository) never runs while an ended task's folder is being
    /// settled (git in maybe the same repository): it is not even polled until the settling
    /// ends; a settling with nothing to say is dropped silently.
    #[test]
    fn preparations_wait_for_settlings() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut p = Preparations::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        p.settle(Box::pin(async move {
            rx.await.ok();
            Some(Event::TaskCancelled { task_id: "t0".into() })
        }));
        p.settle(Box::pin(async { None }));
        let polled = std::rc::Rc::new(std::cell::Cell::new(false));
        let seen = polled.clone();
        p.wait(
            start("t1"),
            Box::pin(async move {
                seen.set(true);
                Ok(Prepared::default())
            }),
        );
        assert!(p.poll_next(&mut cx).is_pending());
        assert!(
            !polled.get(),
            "the preparation was polled while a settling went on"
        );

        tx.send(()).unwrap();
        match p.poll_next(&mut cx) {
            Poll::Ready(PrepEnded::Settled(Event::TaskCancelled { task_id })) => assert_eq!(task_id, "t0"),
            _ => panic!("the settling's event comes first"),
        }
        match p.poll_next(&mut cx) {
            Poll::Ready(PrepEnded::Prepared(ended)) => {
                let (RunRequest::Start { task, .. }, Ok(_)) = *ended else {
                    panic!("a prepared start")
                };
                assert_eq!(task.task_id, "t1")
            }
            _ => panic!("then the preparation"),
        }
        assert!(polled.get());
    }
}
