//! `RelayRuntime`: the I/O shell around the task [`Relay`] machine.
//!
//! It carries out the machine's actions that concern the relay's own things (queue.json writes,
//! watching the results folder, file moves) and turns their outcomes back into machine inputs.
//! What it does not carry out it hands out: frames to send ([`RelayRuntime::take_sends`]), what
//! the link must do ([`RelayRuntime::take_link_requests`]), and what whoever runs a task must do
//! ([`RelayRuntime::take_run_request`]: start it, stop it; `crate::exec` runs it).

use super::machine::{Relay, RelayAction, RelayInput, RelaySettings, ResultFile};
use super::store::TaskStore;
use super::task::TaskRecord;
use super::watch::{FileEvent, ResultContent, ResultWatcher, WatchOptions};
use crate::config::Config;
use crate::event_log::{Event, EventLog};
use crate::protocol::Outbound;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What the relay asks of the link driver, besides frames.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkRequest {
    /// Drop the connection and do not connect again until [`LinkRequest::Release`].
    Hold {
        /// Why, for the log.
        reason: String,
    },
    /// Connect again.
    Release,
}

/// What the relay asks of whoever runs a task (the daemon's loop routes it to a runner in
/// `crate::exec`, which answers with [`RelayInput`]s: `WakeFinished`, `AgentGroup`, `AgentGone`).
///
/// The relay keeps the task's lifecycle (retries, confirmation, timeouts, keepalive, the outcome,
/// recovery); a runner only starts and stops runs.
#[derive(Debug, Clone, PartialEq)]
pub enum RunRequest {
    /// Run this task (the machine's `Wake`): attempt 1, 2, ... Answered with `WakeFinished` (an
    /// executor: `Executing`), after `Prepared` when the task was prepared for its run first.
    Start {
        /// The task as `${TASK_JSON}` shows it.
        task: TaskRecord,
        /// Which attempt.
        attempt: u32,
    },
    /// Verify and deliver a woken agent's success result (the machine's `Finish`), then answer
    /// `Finished` with the result to send. Stopped by a [`RunRequest::Stop`].
    Finish {
        /// The task, as persisted (with its workspace, if it has one).
        task: TaskRecord,
        /// The agent's result object.
        result: Map<String, Value>,
    },
    /// Stop the task's run if it still goes on (the machine's `Kill`).
    Stop {
        /// The task.
        task_id: String,
    },
    /// The hub cancelled the task (the machine's `RunCancelCommand`; a [`RunRequest::Stop`] for it
    /// comes first): tell whoever works on it.
    Cancelled {
        /// The task.
        task: TaskRecord,
    },
    /// The relay no longer holds the task (the machine's `Untrack`): forget its runs.
    Forget {
        /// The task.
        task_id: String,
        /// The folder to settle, if any (the machine's `Untrack`: a task's workspace when it
        /// ended without a complete outcome).
        settle: Option<PathBuf>,
    },
}

/// The relay, its store and its watcher.
pub struct RelayRuntime {
    relay: Relay,
    store: TaskStore,
    watcher: ResultWatcher,
    files: mpsc::UnboundedReceiver<FileEvent>,
    sends: VecDeque<Outbound>,
    link_requests: VecDeque<LinkRequest>,
    runs: VecDeque<RunRequest>,
    results_dir: PathBuf,
}

/// The machine's settings a config asks for.
pub fn relay_settings(config: &Config) -> RelaySettings {
    RelaySettings {
        wake_configured: config.wake_command.is_some(),
        direct_execution: config.direct_execution != crate::config::DirectExecution::Off,
        cancel_configured: config.cancel_command.is_some(),
        max_pending: config.max_pending,
        wake_retry_delays: config.wake_retry_delays.clone(),
        confirmation_timeout: config.confirmation_timeout,
        progress_keepalive: config.progress_keepalive,
        readopt_window: config.readopt_window,
        task_timeout: config.task_timeout,
        agent_exit_grace: config.agent_exit_grace,
        finish_results: true,
    }
}

/// `results_dir/tasks/{task_id}.json`: the full task for the agent (`${TASK_FILE}`).
pub fn task_file(results_dir: &Path, task_id: &str) -> PathBuf {
    results_dir.join("tasks").join(format!("{task_id}.json"))
}

fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl RelayRuntime {
    /// Load queue.json (a corrupt one is moved aside and logged), let `recover` look at the held
    /// tasks before the machine decides what to resume (the runners: what became of the runs an
    /// earlier sidecar started), start watching results_dir.
    /// Fails only when queue.json can be neither read nor moved aside, or the folder cannot be watched.
    pub fn start(
        config: &Config,
        log: &mut EventLog,
        recover: impl FnOnce(&mut [TaskRecord]),
    ) -> Result<RelayRuntime, String> {
        let store = TaskStore::new(&config.queue_file);
        let loaded = store.load()?;
        if let Some(moved) = loaded.moved_aside {
            log.record(&Event::QueueCorrupt {
                moved_to: moved.moved_to.display().to_string(),
                error: moved.error,
            });
        }
        let mut tasks = loaded.tasks;
        recover(&mut tasks);
        let (watcher, files) = ResultWatcher::start(WatchOptions::new(&config.results_dir))
            .map_err(|e| watch_error(&config.results_dir, &e))?;
        let mut runtime = RelayRuntime {
            relay: Relay::new(relay_settings(config), tasks),
            store,
            watcher,
            files,
            sends: VecDeque::new(),
            link_requests: VecDeque::new(),
            runs: VecDeque::new(),
            results_dir: config.results_dir.clone(),
        };
        runtime.run_actions(log);
        Ok(runtime)
    }

    /// Feed one input and carry out what follows.
    pub fn handle(&mut self, input: RelayInput, log: &mut EventLog) {
        self.relay.handle(input, now(), epoch_ms());
        self.run_actions(log);
    }

    /// Act on the machine's deadlines.
    pub fn handle_timeout(&mut self, log: &mut EventLog) {
        self.relay.handle_timeout(now());
        self.run_actions(log);
    }

    /// When the machine next wants [`RelayRuntime::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<std::time::Instant> {
        self.relay.poll_timeout()
    }

    /// Frames to send now, in order.
    pub fn take_sends(&mut self) -> Vec<Outbound> {
        self.sends.drain(..).collect()
    }

    /// What the link driver must do about the connection (hold it down, release it), in order.
    pub fn take_link_requests(&mut self) -> Vec<LinkRequest> {
        self.link_requests.drain(..).collect()
    }

    /// The oldest request for the runners, if any. One at a time: a runner's answer fed back
    /// through [`RelayRuntime::handle`] may queue further requests behind the rest.
    pub fn take_run_request(&mut self) -> Option<RunRequest> {
        self.runs.pop_front()
    }

    /// Each held task's id, status and generation, and the outbox depth, for `status`.
    pub fn snapshot(&self) -> (Vec<(String, &'static str, i64)>, usize) {
        (self.relay.snapshot(), self.relay.outbox_depth())
    }

    /// The next event from the results folder (the agent wrote a file). Cancel-safe.
    pub async fn next_input(&mut self) -> RelayInput {
        match self.files.recv().await {
            Some(event) => file_input(event, &self.results_dir),
            // The watcher stopped: nothing more will come from it.
            None => std::future::pending().await,
        }
    }

    fn run_actions(&mut self, log: &mut EventLog) {
        while let Some(action) = self.relay.poll_action() {
            match action {
                RelayAction::Send(frame) => self.sends.push_back(frame),
                RelayAction::Persist(records) => {
                    let result = self.store.save(&records).map_err(|e| e.to_string());
                    self.relay
                        .handle(RelayInput::Persisted(result), now(), epoch_ms());
                }
                RelayAction::Wake { task, attempt } => {
                    self.runs.push_back(RunRequest::Start { task, attempt })
                }
                RelayAction::Finish { task, result } => {
                    self.runs.push_back(RunRequest::Finish { task, result })
                }
                RelayAction::Kill { task_id } => self.runs.push_back(RunRequest::Stop { task_id }),
                RelayAction::RunCancelCommand { task } => self.runs.push_back(RunRequest::Cancelled { task }),
                RelayAction::Track { task_id } => self.watcher.track(&task_id),
                RelayAction::Untrack { task_id, settle } => {
                    self.watcher.untrack(&task_id);
                    self.runs.push_back(RunRequest::Forget { task_id, settle });
                }
                RelayAction::ClearFiles { task_id } => self.clear_files(&task_id),
                RelayAction::DiscardResult { task_id } => self.discard_result(&task_id, log),
                RelayAction::Log(event) => log.record(&event),
                RelayAction::HoldLink { reason } => {
                    self.link_requests.push_back(LinkRequest::Hold { reason })
                }
                RelayAction::ReleaseLink => self.link_requests.push_back(LinkRequest::Release),
                RelayAction::ProbeStorage(records) => {
                    // The very write a new task needs: queue.json, through its temp file.
                    let result = self.store.save(&records).map_err(|e| e.to_string());
                    self.relay
                        .handle(RelayInput::StorageProbed(result), now(), epoch_ms());
                }
            }
        }
    }

    fn clear_files(&self, task_id: &str) {
        for ext in ["started", "json", "progress"] {
            remove_if_present(&self.results_dir.join(format!("{task_id}.{ext}")));
        }
        remove_if_present(&task_file(&self.results_dir, task_id));
    }

    fn discard_result(&self, task_id: &str, log: &mut EventLog) {
        let from = self.results_dir.join(format!("{task_id}.json"));
        if from.exists() {
            let dir = self.results_dir.join("discarded");
            let mut to = dir.join(format!("{task_id}.json"));
            if to.exists() {
                to = dir.join(format!("{task_id}.{}.json", epoch_ms()));
            }
            let moved = crate::files::create_dir_all(&dir).and_then(|()| std::fs::rename(&from, &to));
            if let Err(e) = moved {
                log.record(&Event::PersistFailed {
                    error: format!("cannot move {} to {}: {e}", from.display(), to.display()),
                });
            }
        }
        for ext in ["started", "progress"] {
            remove_if_present(&self.results_dir.join(format!("{task_id}.{ext}")));
        }
        remove_if_present(&task_file(&self.results_dir, task_id));
    }
}

/// Why the results folder cannot be watched, and what to do.
fn watch_error(dir: &Path, e: &std::io::Error) -> String {
    let mut message = format!("cannot watch results_dir {}: {e}", dir.display());
    // inotify_init fails with EMFILE when the user's inotify instances are used up (128 by default).
    if cfg!(target_os = "linux") && e.raw_os_error() == Some(24) {
        message.push_str(
            "\nhelp: on Linux this usually means the user's inotify instances are used up (one per sidecar and per\n\
             help: file-watching program); raise the limit: sudo sysctl fs.inotify.max_user_instances=1024",
        );
    }
    message
}

fn file_input(event: FileEvent, results_dir: &Path) -> RelayInput {
    match event {
        FileEvent::NotRegular { task_id, file, kind } => RelayInput::Log(Event::FileNotRegular {
            task_id,
            file: file.display().to_string(),
            kind,
        }),
        FileEvent::Polling { error, help } => RelayInput::Log(Event::ResultsPolling {
            results_dir: results_dir.display().to_string(),
            error,
            help,
        }),
        FileEvent::Started { task_id } => RelayInput::Started { task_id },
        FileEvent::Progress {
            task_id,
            progress,
            message,
        } => RelayInput::Progress {
            task_id,
            progress,
            message,
        },
        FileEvent::Result { task_id, content } => {
            let file = match content {
                ResultContent::Object(map) => ResultFile::Object(map),
                ResultContent::NotObject(what) => ResultFile::Invalid(format!("not a JSON object: {what}")),
                ResultContent::Invalid(why) => ResultFile::Invalid(format!("not JSON: {why}")),
                ResultContent::TooLarge(n) => ResultFile::Invalid(format!("{n} bytes, over the size limit")),
            };
            RelayInput::Result { task_id, file }
        }
    }
}

fn remove_if_present(path: &Path) {
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_inotify_instances_says_how_to_raise_the_limit() {
        let message = watch_error(Path::new("/r"), &std::io::Error::from_raw_os_error(24));
        assert!(message.starts_with("cannot watch results_dir /r: "), "{message}");
        if cfg!(target_os = "linux") {
            assert!(message.contains("fs.inotify.max_user_instances"), "{message}");
        }
        let other = watch_error(Path::new("/r"), &std::io::Error::from_raw_os_error(13));
        assert!(!other.contains("inotify"), "{other}");
    }
}
