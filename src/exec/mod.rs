//! How a task runs. The relay hands out [`RunRequest`]s (start this task, stop it, the hub
//! cancelled it, forget it); the daemon's loop gives each to [`Runners`], which routes it to the
//! [`TaskRunner`] for that task; the runner answers with [`RelayInput`]s, which the loop hands back
//! to the relay. The relay keeps the task's lifecycle either way (queue.json, retries, timeouts,
//! keepalive, the outcome, recovery with the hub).
//!
//! A task is run one of two ways, chosen in one place, [`Runners::route`]: [`Route::Wake`]:
//! [`agent::AgentWaker`] runs `wake_command`, and the agent answers through its files in
//! results_dir, which the relay watches; or [`Route::Execute`]: the sidecar carries out what the
//! hub routed itself (protocol §11: an Ollama endpoint, the Claude CLI, a shell) with
//! [`executor::ExecutorRunner`] and the direct executors of [`executor::Executors`].
//!
//! The pieces: `template` renders the wake command with the task's values, quoted per shell
//! context; `wake` runs it and reports how it ended; `process` starts children without the token
//! and finds and stops a task's agent by process group; `agent` is the runner built from them.
//! [`Runners`] itself is spread over: `plan` (per target, whether it can run here, and why not),
//! `start` (carrying out a route), `probe` (the Ollama probes and their cache), `prepare` (a
//! task's workspace and branch before its first start).

pub mod agent;
pub mod claude;
pub mod direct;
pub mod executor;
pub mod fake_ollama;
#[cfg(windows)]
pub mod job;
pub mod ollama;
pub mod pipeline;
mod plan;
mod prepare;
mod probe;
pub mod process;
#[cfg(target_os = "linux")]
mod procfs;
pub mod shell;
mod start;
pub mod template;
pub mod wake;

use crate::config::{Config, DirectExecution};
use crate::relay::machine::RelayInput;
use crate::relay::task::TaskRecord;
use agent::AgentWaker;
use direct::{Routing, Target};
use executor::{ExecutorRunner, Executors};
use pipeline::{Finisher, Pipeline, Prepared};
use plan::no_executor;
use prepare::{PrepEnded, Preparations};
use probe::Probes;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

pub use crate::relay::runtime::RunRequest;
pub use plan::endpoint_url;
pub use probe::{ProbeFn, ProbeFuture, PROBE_TIMEOUT, PROBE_TTL};

/// Runs tasks for the relay, and says what became of them.
///
/// For a [`RunRequest::Start`] a runner answers, through [`TaskRunner::next_input`],
/// `WakeFinished` once the run began or could not (an executor: `Executing` at once, or `Executed`
/// with the reason it cannot run), then what the task's run produces: `Started`, `Progress`,
/// `Result` (an executor: `ExecutionEvent`s, then `Executed`). A [`RunRequest::Stop`] actually
/// stops the run (process group killed, request dropped); `Stop` and `Forget` go to every runner,
/// each acting only on the tasks it runs. What a runner wants logged (the route it took, and why)
/// it answers as `Log`. [`Runners`] also prepares a task before its first start (`Prepared`) and
/// answers a [`RunRequest::Finish`] with `Finished` (see [`pipeline`]).
pub trait TaskRunner {
    /// Carry out one request. Returns what the relay must hear at once, before any other request
    /// is carried out (the process group a wake started in, so that queue.json records it).
    fn handle(&mut self, request: RunRequest) -> Vec<RelayInput>;

    /// The next thing that happened to a task being run. Cancel-safe: the loop selects on it.
    fn next_input(&mut self) -> impl Future<Output = RelayInput> + '_;
}

/// The Ollama tried when nothing names one and `direct_execution` is `on` (Node's default).
pub const DEFAULT_OLLAMA_URL: &str = "http://127.0.0.1:11434";

/// The model asked of Ollama when neither the hub nor `ollama_model` names one (Node's default).
pub const DEFAULT_OLLAMA_MODEL: &str = "llama3.2:latest";

/// How a task is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Wake the agent (`wake_command`); it works on the task and writes its files in results_dir.
    Wake {
        /// Why (for `execution_chosen`).
        why: String,
    },
    /// Carry out the routing here.
    Execute(Plan),
    /// Neither can be done: fail the task with this reason (it names the config key to set).
    Fail(String),
    /// Whether this Ollama answers decides it: probe it, then route again.
    Probe(String),
}

/// An execution, chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The executor.
    pub target: Target,
    /// Ollama's base URL (`http://host:port`).
    pub endpoint: Option<String>,
    /// The model to ask for.
    pub model: Option<String>,
    /// Why (for `execution_chosen`).
    pub why: String,
}

/// Everything the choice reads from the config.
struct Choice {
    mode: DirectExecution,
    wake_configured: bool,
    allow_hub_commands: bool,
    ollama_url: Option<String>,
    ollama_model: Option<String>,
    claude_command: String,
    claude_model: Option<String>,
    execution_timeout: Option<Duration>,
    /// The sidecar's folder: where a task works that has neither a workspace nor `repo_dir`.
    workdir: PathBuf,
    /// `repo_dir`: where a task without a workspace of its own works.
    repo_dir: Option<PathBuf>,
}

/// Every runner, and the choice of which one runs a task ([`Runners::route`]).
pub struct Runners {
    agent: AgentWaker,
    executor: ExecutorRunner,
    /// The direct executors and the Ollama probe; `None` when this build has none (every task
    /// then wakes the agent, as with `direct_execution: "off"`).
    direct: Option<Rc<(Executors, ProbeFn)>>,
    choice: Choice,
    /// The Ollama probes' answers, and the starts waiting for one.
    probes: Probes,
    /// The work before and after a run (workspace, verification, delivery).
    pipeline: Rc<dyn Pipeline>,
    /// Starts waiting for their preparation, and the tasks already prepared.
    preparations: Preparations,
    /// Woken agents' success results being verified and delivered.
    finisher: Finisher,
    ready: VecDeque<RelayInput>,
}

/// The direct executors built into this sidecar, and the Ollama probe.
///
/// The one place that plugs them in: `ollama::run`, `claude::run` (with `claude_command` and
/// `claude_model`), `shell::run` (with `allow_hub_commands`) and `ollama::probe`.
fn built_in(config: &Config) -> Option<(Executors, ProbeFn)> {
    let claude_settings =
        claude::ClaudeSettings::new(config.claude_command.clone(), config.claude_model.clone());
    let allowed = config.allow_hub_commands;
    let executors = Executors {
        ollama: Box::new(|job, events| Box::pin(async move { ollama::run(&job, &events).await })),
        claude: Box::new(move |job, events| {
            let settings = claude_settings.clone();
            Box::pin(async move { claude::run(&job, &events, &settings).await })
        }),
        shell: Box::new(move |job, events| Box::pin(async move { shell::run(&job, &events, allowed).await })),
    };
    let probe: ProbeFn = Box::new(|url| Box::pin(async move { ollama::probe(&url).await }));
    Some((executors, probe))
}

impl Runners {
    /// The runners a config asks for: the agent waker, and the direct executors built in, with
    /// `pipeline` before and after each task (the daemon's is `crate::deliver::pipeline`; the
    /// pipeline is passed in rather than built here so that `exec` does not import `deliver`,
    /// which builds on `exec`'s processes). Must be called inside the tokio runtime.
    pub fn new(config: &Config, pipeline: Box<dyn Pipeline>) -> Runners {
        Runners::with(config, built_in(config), pipeline)
    }

    /// The runners with these direct executors and probe, and this pipeline (tests bring their
    /// own).
    pub fn with(
        config: &Config,
        direct: Option<(Executors, ProbeFn)>,
        pipeline: Box<dyn Pipeline>,
    ) -> Runners {
        let pipeline: Rc<dyn Pipeline> = Rc::from(pipeline);
        Runners {
            agent: AgentWaker::new(config),
            executor: ExecutorRunner::new(),
            direct: direct.map(Rc::new),
            choice: Choice {
                mode: config.direct_execution,
                wake_configured: config.wake_command.is_some(),
                allow_hub_commands: config.allow_hub_commands,
                ollama_url: config.ollama_url.clone(),
                ollama_model: config.ollama_model.clone(),
                claude_command: config.claude_command.clone(),
                claude_model: config.claude_model.clone(),
                execution_timeout: config.execution_timeout,
                workdir: config
                    .path
                    .parent()
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
                repo_dir: config.repo_dir.clone(),
            },
            probes: Probes::default(),
            finisher: Finisher::new(pipeline.clone()),
            pipeline,
            preparations: Preparations::default(),
            ready: VecDeque::new(),
        }
    }

    /// The folder task `task` works in: its workspace, else `repo_dir`, else the sidecar's folder.
    pub fn workdir(&self, task: &TaskRecord) -> PathBuf {
        task.workspace
            .clone()
            .or_else(|| self.choice.repo_dir.clone())
            .unwrap_or_else(|| self.choice.workdir.clone())
    }

    /// Before the relay resumes the tasks an earlier sidecar held: let each runner look at what
    /// became of the runs it started (see [`AgentWaker::recover`]).
    pub fn recover(&mut self, tasks: &mut [TaskRecord]) {
        self.agent.recover(tasks);
    }

    /// How `task` runs: the one place that decides it (issue 10, "Choosing how a task runs").
    ///
    /// - `direct_execution: "off"`, no executors built in, no `routing_decision`, or a target
    ///   other than `ollama`, `claude`, `sidecar`: wake.
    /// - `"auto"`: `ollama` when the hub's `selected_endpoint` or `ollama_url` answers a probe
    ///   (cached [`PROBE_TTL`]; [`Route::Probe`] when unknown); `claude` when `claude_command` is
    ///   found (on PATH, or an existing path); `sidecar` when the task has
    ///   `metadata.shell_command` and `allow_hub_commands` is true; otherwise wake.
    /// - `"on"`: carry out every routing (Ollama at [`DEFAULT_OLLAMA_URL`] when nothing names
    ///   one, unprobed: the executor fails with the endpoint's error), or fail with the reason
    ///   (`claude_command_not_found: ...`, `shell_command_not_allowed: ...`).
    /// - Wake without a `wake_command`: fail, naming the config key that would have served it.
    pub fn route(&self, task: &TaskRecord) -> Route {
        let c = &self.choice;
        let routing = Routing::from_task(&task.extra);
        let target = routing.as_ref().and_then(Routing::target);
        let (wake_why, key) = match (c.mode, &self.direct, &routing, target) {
            (DirectExecution::Off, ..) => ("direct_execution is off".to_owned(), None),
            (_, None, ..) => ("this build has no direct executors".to_owned(), None),
            (_, _, None, _) => ("no routing_decision".to_owned(), None),
            (_, _, Some(r), None) => (
                format!("routed to {}", r.target_type.as_deref().unwrap_or("no target")),
                None,
            ),
            (mode, Some(_), Some(r), Some(t)) => match self.execute(mode, task, r, t) {
                Ok(plan) => return Route::Execute(plan),
                Err(Some(url)) => return Route::Probe(url),
                Err(None) if mode == DirectExecution::On => {
                    return Route::Fail(format!("{}: {}", no_executor(t), self.why_not(task, r, t).0));
                }
                Err(None) => {
                    let (why, key) = self.why_not(task, r, t);
                    (format!("fallback: {why}"), key)
                }
            },
        };
        if c.wake_configured {
            return Route::Wake { why: wake_why };
        }
        let help = match key {
            Some(key) => format!("set `{key}` so it can run here, or a `wake_command` to wake the agent"),
            None => "set a `wake_command` to wake the agent".to_owned(),
        };
        Route::Fail(format!("no_wake_command_configured: {wake_why}; {help}"))
    }

    async fn next(&mut self) -> RelayInput {
        enum Ended {
            Probe(String, Result<Vec<String>, String>, RunRequest),
            Prepare(RunRequest, Result<Prepared, String>),
        }
        loop {
            if let Some(input) = self.ready.pop_front() {
                return input;
            }
            let Runners {
                agent,
                executor,
                finisher,
                probes,
                preparations,
                ..
            } = self;
            let ended = tokio::select! {
                input = agent.next_input() => return input,
                input = executor.next_input() => return input,
                input = finisher.next_input() => return input,
                (url, result, request) = poll_fn(|cx| probes.poll_ended(cx)) => {
                    Ended::Probe(url, result, request)
                }
                ended = poll_fn(|cx| preparations.poll_next(cx)) => match ended {
                    PrepEnded::Settled(event) => return RelayInput::Log(event),
                    PrepEnded::Prepared(ended) => Ended::Prepare(ended.0, ended.1),
                },
            };
            match ended {
                Ended::Probe(url, result, request) => self.probe_ended(url, result, request),
                Ended::Prepare(request, result) => self.prepare_ended(request, result),
            }
        }
    }
}

impl TaskRunner for Runners {
    fn handle(&mut self, request: RunRequest) -> Vec<RelayInput> {
        match &request {
            RunRequest::Start { task, .. } => {
                // Prepared once per task (a later wake attempt has its workspace already).
                if self.preparations.first_start(&task.task_id) {
                    if let Some(fut) = self.pipeline.prepare(task) {
                        self.preparations.wait(request, fut);
                        return Vec::new();
                    }
                }
                let route = self.route(task);
                self.start(request, route)
            }
            RunRequest::Finish { task, result } => {
                let workdir = self.workdir(task);
                self.finisher.start(task.clone(), result.clone(), workdir);
                Vec::new()
            }
            RunRequest::Cancelled { task } => {
                // An execution was stopped by the Stop before this; the cancel_command is the agent's.
                if task.executed_by.is_some() {
                    Vec::new()
                } else {
                    self.agent.handle(request)
                }
            }
            // Every runner hears these: each acts only on the tasks it runs.
            RunRequest::Stop { task_id } | RunRequest::Forget { task_id, .. } => {
                self.executor.stop(task_id);
                self.finisher.stop(task_id);
                let other = |request: &RunRequest| match request {
                    RunRequest::Start { task, .. } => &task.task_id != task_id,
                    _ => true,
                };
                self.probes.retain(other);
                // Its preparation is dropped unfinished: a later start prepares again.
                self.preparations.stop(task_id, other);
                if let RunRequest::Forget { settle, .. } = &request {
                    self.preparations.forget(task_id);
                    // The task is over without a complete outcome: its folder is settled before
                    // the next preparation.
                    if let Some(folder) = settle {
                        if let Some(fut) = self.pipeline.settle(task_id, folder) {
                            self.preparations.settle(fut);
                        }
                    }
                }
                self.agent.handle(request)
            }
        }
    }

    fn next_input(&mut self) -> impl Future<Output = RelayInput> + '_ {
        self.next()
    }
}

#[cfg(test)]
mod route_tests;
#[cfg(test)]
mod tests;
