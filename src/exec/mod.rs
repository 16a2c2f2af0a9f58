//! How a task runs. The relay hands out [`RunRequest`]s (start this task, stop it, the hub
//! cancelled it, forget it); the daemon's loop gives each to [`Runners`], which routes it to the
//! [`TaskRunner`] for that task; the runner answers with [`RelayInput`]s, which the loop hands back
//! to the relay. The relay keeps the task's lifecycle either way (queue.json, retries, timeouts,
//! keepalive, the outcome, recovery with the hub).
//!
//! Today a task is run one way, [`Route::Wake`]: [`agent::AgentWaker`] runs `wake_command`, and the
//! agent answers through its files in results_dir, which the relay watches. Executors (the sidecar
//! runs a routed task itself: protocol §11, an Ollama endpoint, the Claude CLI, a shell) become
//! further runners: a field of [`Runners`], a variant of [`Route`], and a line in
//! [`Runners::route`], which reads `routing_decision.target_type` and the config.
//!
//! The pieces: `template` renders the wake command with the task's values, quoted per shell
//! context; `wake` runs it and reports how it ended; `process` starts children without the token
//! and finds and stops a task's agent by process group; `agent` is the runner built from them.

pub mod agent;
pub mod direct;
pub mod process;
#[cfg(target_os = "linux")]
mod procfs;
pub mod template;
pub mod wake;
pub mod ollama;
pub mod fake_ollama;

use crate::config::Config;
use crate::relay::machine::RelayInput;
use crate::relay::task::TaskRecord;
use agent::AgentWaker;
use std::future::Future;

pub use crate::relay::runtime::RunRequest;

/// Runs tasks for the relay, and says what became of them.
///
/// For a [`RunRequest::Start`] a runner answers, through [`TaskRunner::next_input`],
/// `WakeFinished` once the run began or could not (an executor: the request was sent, the process
/// started), then what the task's run produces: `Started`, `Progress`, `Result` (an executor: its
/// output as the result object). A [`RunRequest::Stop`] actually stops the run (process group
/// killed, request dropped); `Stop` and `Forget` go to every runner, each acting only on the tasks
/// it runs. What a runner wants logged (the route it took, and why) it answers as `Log`.
pub trait TaskRunner {
    /// Carry out one request. Returns what the relay must hear at once, before any other request
    /// is carried out (the process group a wake started in, so that queue.json records it).
    fn handle(&mut self, request: RunRequest) -> Vec<RelayInput>;

    /// The next thing that happened to a task being run. Cancel-safe: the loop selects on it.
    fn next_input(&mut self) -> impl Future<Output = RelayInput> + '_;
}

/// How a task is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Wake the agent (`wake_command`); it works on the task and writes its files in results_dir.
    Wake,
}

/// Every runner, and the choice of which one runs a task ([`Runners::route`]).
pub struct Runners {
    agent: AgentWaker,
}

impl Runners {
    /// The runners a config asks for (today the agent waker, always).
    pub fn new(config: &Config) -> Runners {
        Runners {
            agent: AgentWaker::new(config),
        }
    }

    /// Before the relay resumes the tasks an earlier sidecar held: let each runner look at what
    /// became of the runs it started (see [`AgentWaker::recover`]).
    pub fn recover(&mut self, tasks: &mut [TaskRecord]) {
        self.agent.recover(tasks);
    }

    /// How `task` runs: the one place that decides it. Today every task wakes the agent.
    pub fn route(&self, _task: &TaskRecord) -> Route {
        Route::Wake
    }
}

impl TaskRunner for Runners {
    fn handle(&mut self, request: RunRequest) -> Vec<RelayInput> {
        match &request {
            RunRequest::Start { task, .. } | RunRequest::Cancelled { task } => match self.route(task) {
                Route::Wake => self.agent.handle(request),
            },
            // Every runner hears these: each acts only on the tasks it runs.
            RunRequest::Stop { .. } | RunRequest::Forget { .. } => self.agent.handle(request),
        }
    }

    fn next_input(&mut self) -> impl Future<Output = RelayInput> + '_ {
        self.agent.next_input()
    }
}

#[cfg(test)]
mod tests;
