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

pub mod agent;
pub mod claude;
pub mod direct;
pub mod executor;
pub mod fake_ollama;
pub mod ollama;
pub mod pipeline;
pub mod process;
#[cfg(target_os = "linux")]
mod procfs;
pub mod shell;
pub mod template;
pub mod wake;

use crate::config::{Config, DirectExecution};
use crate::event_log::Event;
use crate::relay::machine::RelayInput;
use crate::relay::task::TaskRecord;
use agent::AgentWaker;
use direct::{Job, Routing, Target};
use executor::{ExecFn, ExecutorRunner, Executors};
use pipeline::{BoxFut, Finisher, Pipeline, Prepared, Verification};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::{poll_fn, Future};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;
use tokio::time::Instant;

pub use crate::relay::runtime::RunRequest;

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

/// An Ollama probe in progress: the model names its `GET /api/tags` lists, or why it failed.
pub type ProbeFuture = Pin<Box<dyn Future<Output = Result<Vec<String>, String>>>>;

/// Asks an Ollama base URL (`http://host:port`) for its models (`ollama::probe`).
pub type ProbeFn = Box<dyn Fn(String) -> ProbeFuture>;

/// How long a probe's answer is trusted, per endpoint.
pub const PROBE_TTL: Duration = Duration::from_secs(30);

/// How long a probe may take before the endpoint counts as not answering.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

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

/// A routed task waiting for a probe of an Ollama endpoint.
struct Probing {
    url: String,
    request: RunRequest,
    fut: ProbeFuture,
}

/// A task's start waiting for its preparation ([`Pipeline::prepare`]).
struct Preparing {
    request: RunRequest,
    fut: BoxFut<Result<Prepared, String>>,
}

/// Every runner, and the choice of which one runs a task ([`Runners::route`]).
pub struct Runners {
    agent: AgentWaker,
    executor: ExecutorRunner,
    /// The direct executors and the Ollama probe; `None` when this build has none (every task
    /// then wakes the agent, as with `direct_execution: "off"`).
    direct: Option<Rc<(Executors, ProbeFn)>>,
    choice: Choice,
    /// Per Ollama base URL: when it was probed, and whether it answered (else why not).
    probes: HashMap<String, (Instant, Result<(), String>)>,
    probing: Vec<Probing>,
    /// The work before and after a run (workspace, verification, delivery).
    pipeline: Rc<dyn Pipeline>,
    /// Starts waiting for their preparation.
    preparing: Vec<Preparing>,
    /// Tasks whose preparation was done (or asked for) since their first start: a later wake
    /// attempt is not prepared again.
    prepared: HashSet<String>,
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
            probes: HashMap::new(),
            probing: Vec::new(),
            finisher: Finisher::new(pipeline.clone()),
            pipeline,
            preparing: Vec::new(),
            prepared: HashSet::new(),
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

    /// The plan for routing `r` to `t`, or what is missing: `Err(Some(url))` when a probe of
    /// `url` decides it, `Err(None)` when it cannot run here.
    fn execute(
        &self,
        mode: DirectExecution,
        task: &TaskRecord,
        r: &Routing,
        t: Target,
    ) -> Result<Plan, Option<String>> {
        let c = &self.choice;
        let on = mode == DirectExecution::On;
        match t {
            Target::Ollama => {
                let selected = r.selected_endpoint.as_deref().and_then(endpoint_url);
                let hub_model = r.selected_model.clone().filter(|m| !m.is_empty());
                let mut candidates = Vec::new();
                if let Some(url) = selected {
                    candidates.push((
                        url,
                        hub_model.clone().or(c.ollama_model.clone()),
                        "the hub selected it",
                    ));
                }
                if let Some(url) = &c.ollama_url {
                    candidates.push((
                        url.clone(),
                        c.ollama_model.clone().or(hub_model.clone()),
                        "ollama_url",
                    ));
                }
                if on {
                    let (url, model, why) = candidates.into_iter().next().unwrap_or((
                        DEFAULT_OLLAMA_URL.to_owned(),
                        c.ollama_model.clone().or(hub_model),
                        "direct_execution is on; nothing names an endpoint, Ollama's default",
                    ));
                    return Ok(ollama_plan(url, model, why));
                }
                for (url, model, why) in candidates {
                    match self.probed(&url) {
                        Some(Ok(())) => {
                            return Ok(ollama_plan(url, model, &format!("{why}, and it answers")))
                        }
                        Some(Err(_)) => continue,
                        None => return Err(Some(url)),
                    }
                }
                Err(None)
            }
            Target::Claude => {
                if !command_found(&c.claude_command) {
                    return Err(None);
                }
                let model = c.claude_model.clone().or_else(|| {
                    r.selected_model
                        .clone()
                        .filter(|m| !m.is_empty() && m != "claude")
                });
                Ok(Plan {
                    target: t,
                    endpoint: None,
                    model,
                    why: format!("claude_command `{}`", c.claude_command),
                })
            }
            Target::Shell => {
                if c.allow_hub_commands && shell_command(task).is_some() {
                    Ok(Plan {
                        target: t,
                        endpoint: None,
                        model: None,
                        why: "metadata.shell_command, allow_hub_commands is true".to_owned(),
                    })
                } else {
                    Err(None)
                }
            }
        }
    }

    /// Why routing `r` to `t` cannot run here, and the config key that would serve it (none
    /// when no setting would: a shell task without a command).
    fn why_not(&self, task: &TaskRecord, r: &Routing, t: Target) -> (String, Option<&'static str>) {
        let c = &self.choice;
        match t {
            Target::Ollama => {
                let mut tried: Vec<String> = Vec::new();
                let urls = r
                    .selected_endpoint
                    .as_deref()
                    .and_then(endpoint_url)
                    .into_iter()
                    .chain(c.ollama_url.clone());
                for url in urls {
                    match self.probed(&url) {
                        Some(Err(e)) => tried.push(format!("{url}: {e}")),
                        _ => tried.push(url),
                    }
                }
                if tried.is_empty() {
                    (
                        "no ollama endpoint: the hub selected none and ollama_url is not set".to_owned(),
                        Some("ollama_url"),
                    )
                } else {
                    (
                        format!("no ollama endpoint answered ({})", tried.join("; ")),
                        Some("ollama_url"),
                    )
                }
            }
            Target::Claude => (
                format!(
                    "claude_command `{}` was not found (on PATH or as a path)",
                    c.claude_command
                ),
                Some("claude_command"),
            ),
            Target::Shell if shell_command(task).is_none() => {
                ("the task has no metadata.shell_command to run".to_owned(), None)
            }
            Target::Shell => (
                "metadata.shell_command runs only with allow_hub_commands (off)".to_owned(),
                Some("allow_hub_commands"),
            ),
        }
    }

    /// A fresh probe result for `url`, if any.
    fn probed(&self, url: &str) -> Option<Result<(), String>> {
        let (at, result) = self.probes.get(url)?;
        (at.elapsed() < PROBE_TTL).then(|| result.clone())
    }

    /// Start routed task `task` (attempt `attempt`) as `route` says.
    fn start(&mut self, request: RunRequest, route: Route) -> Vec<RelayInput> {
        let RunRequest::Start { task, attempt } = &request else {
            return Vec::new();
        };
        let (task_id, attempt) = (task.task_id.clone(), *attempt);
        let chosen = |target: &str, endpoint: Option<String>, model: Option<String>, why: &str| {
            RelayInput::Log(Event::ExecutionChosen {
                task_id: task_id.clone(),
                target: target.to_owned(),
                endpoint,
                model,
                why: why.to_owned(),
            })
        };
        match route {
            Route::Wake { why } => {
                // A choice is logged when there was one: the hub routed the task and direct
                // execution is not off (the plain wake path logs as it always did).
                let routed = task.extra.get("routing_decision").is_some_and(|r| r.is_object());
                let mut inputs = Vec::new();
                if routed && self.choice.mode != DirectExecution::Off {
                    inputs.push(chosen("wake", None, None, &why));
                }
                inputs.extend(self.agent.handle(request));
                inputs
            }
            Route::Fail(reason) => vec![
                chosen("fail", None, None, &reason),
                RelayInput::Executed {
                    task_id: task_id.clone(),
                    outcome: Err(reason),
                },
            ],
            Route::Probe(url) => {
                let Some(direct) = &self.direct else {
                    return Vec::new();
                };
                let fut = (direct.1)(url.clone());
                self.probing.push(Probing {
                    url,
                    request,
                    fut: Box::pin(async move {
                        tokio::time::timeout(PROBE_TIMEOUT, fut)
                            .await
                            .unwrap_or_else(|_| {
                                Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs()))
                            })
                    }),
                });
                Vec::new()
            }
            Route::Execute(plan) => {
                let Some(direct) = self.direct.clone() else {
                    return Vec::new();
                };
                let target = plan.target;
                let run = move |job, events| {
                    let run: &ExecFn = match target {
                        Target::Ollama => &direct.0.ollama,
                        Target::Claude => &direct.0.claude,
                        Target::Shell => &direct.0.shell,
                    };
                    run(job, events)
                };
                let routing = Routing::from_task(&task.extra).unwrap_or_default();
                let timeout =
                    self.choice
                        .execution_timeout
                        .unwrap_or(match routing.effective_tier.as_deref() {
                            Some("trivial") => Duration::from_secs(600),
                            _ => Duration::from_secs(1800),
                        });
                let job = Job {
                    task_id: task_id.clone(),
                    description: task.description.clone(),
                    context: task.extra.clone(),
                    metadata: task.metadata.clone(),
                    routing,
                    endpoint: plan.endpoint.clone(),
                    model: plan.model.clone(),
                    workdir: self.workdir(task),
                    timeout,
                };
                // Corrective retries only where a model can act on the prompt (§11.8).
                let retries = match target {
                    Target::Ollama | Target::Claude => pipeline::retries_for(task),
                    Target::Shell => 0,
                };
                let (pipeline, task) = (self.pipeline.clone(), (*task).clone());
                self.executor
                    .start_with(task_id.clone(), timeout, move |events, logs| {
                        let verification = Verification {
                            pipeline,
                            task,
                            retries,
                            logs,
                        };
                        Box::pin(pipeline::execute_verified(run, job, events, verification))
                    });
                vec![
                    chosen(plan.target.as_str(), plan.endpoint, plan.model, &plan.why),
                    RelayInput::Executing {
                        task_id: task_id.clone(),
                        attempt,
                        executor: plan.target.as_str().to_owned(),
                    },
                ]
            }
        }
    }

    /// A probe ended: cache its answer and route again every task that waited for it.
    fn probe_ended(&mut self, url: String, result: Result<Vec<String>, String>, request: RunRequest) {
        self.probes
            .insert(url.clone(), (Instant::now(), result.map(|_| ())));
        let mut requests = vec![request];
        let mut j = 0;
        while j < self.probing.len() {
            if self.probing[j].url == url {
                requests.push(self.probing.remove(j).request);
            } else {
                j += 1;
            }
        }
        for request in requests {
            let inputs = self.handle(request);
            self.ready.extend(inputs);
        }
    }

    /// A task's preparation ended: record what it made, and start the task with its workspace
    /// known (or fail it with the reason).
    fn prepare_ended(&mut self, request: RunRequest, result: Result<Prepared, String>) {
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
                probing,
                preparing,
                ..
            } = self;
            let ended = tokio::select! {
                input = agent.next_input() => return input,
                input = executor.next_input() => return input,
                input = finisher.next_input() => return input,
                (url, result, request) = poll_fn(|cx| poll_probes(probing, cx)) => {
                    Ended::Probe(url, result, request)
                }
                (request, result) = poll_fn(|cx| poll_preparing(preparing, cx)) => {
                    Ended::Prepare(request, result)
                }
            };
            match ended {
                Ended::Probe(url, result, request) => self.probe_ended(url, result, request),
                Ended::Prepare(request, result) => self.prepare_ended(request, result),
            }
        }
    }
}

/// The first probe in `probing` to end, taken out with its answer.
fn poll_probes(
    probing: &mut Vec<Probing>,
    cx: &mut std::task::Context<'_>,
) -> Poll<(String, Result<Vec<String>, String>, RunRequest)> {
    for i in 0..probing.len() {
        if let Poll::Ready(result) = probing[i].fut.as_mut().poll(cx) {
            let p = probing.remove(i);
            return Poll::Ready((p.url, result, p.request));
        }
    }
    Poll::Pending
}

/// The first preparation in `preparing` to end, taken out with its answer.
fn poll_preparing(
    preparing: &mut Vec<Preparing>,
    cx: &mut std::task::Context<'_>,
) -> Poll<(RunRequest, Result<Prepared, String>)> {
    for i in 0..preparing.len() {
        if let Poll::Ready(result) = preparing[i].fut.as_mut().poll(cx) {
            let p = preparing.remove(i);
            return Poll::Ready((p.request, result));
        }
    }
    Poll::Pending
}

/// `http://host:port` for a hub `selected_endpoint` (`"host:port"`, §11.3: a non-numeric last
/// part makes the whole string the host, port 11434); `None` for `claude_api` and blanks.
pub fn endpoint_url(selected: &str) -> Option<String> {
    let s = selected.trim();
    if s.is_empty() || s == "claude_api" {
        return None;
    }
    if s.starts_with("http://") || s.starts_with("https://") {
        return Some(s.trim_end_matches('/').to_owned());
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Some(format!("http://{s}")),
        _ => Some(format!("http://{s}:11434")),
    }
}

fn ollama_plan(url: String, model: Option<String>, why: &str) -> Plan {
    Plan {
        target: Target::Ollama,
        endpoint: Some(url),
        model: Some(model.unwrap_or_else(|| DEFAULT_OLLAMA_MODEL.to_owned())),
        why: why.to_owned(),
    }
}

/// The `no_*` reason prefix when `direct_execution: "on"` cannot run a target.
fn no_executor(t: Target) -> &'static str {
    match t {
        Target::Ollama => "no_ollama_endpoint",
        Target::Claude => "claude_command_not_found",
        Target::Shell => "shell_command_not_allowed",
    }
}

/// The task's `metadata.shell_command`, when a non-blank string.
fn shell_command(task: &TaskRecord) -> Option<&str> {
    task.metadata
        .get("shell_command")
        .and_then(serde_json::Value::as_str)
        .filter(|c| !c.trim().is_empty())
}

/// Whether `command` names a program: an existing path (when it has a separator), or a file in
/// a folder of PATH (on Windows also with `.exe`, `.cmd`, `.bat`).
fn command_found(command: &str) -> bool {
    let path = Path::new(command);
    if path.components().count() > 1 || path.is_absolute() {
        return path.is_file();
    }
    let Some(dirs) = std::env::var_os("PATH") else {
        return false;
    };
    let exts: &[&str] = if cfg!(windows) {
        &["", ".exe", ".cmd", ".bat"]
    } else {
        &[""]
    };
    std::env::split_paths(&dirs).any(|d| exts.iter().any(|e| d.join(format!("{command}{e}")).is_file()))
}

impl TaskRunner for Runners {
    fn handle(&mut self, request: RunRequest) -> Vec<RelayInput> {
        match &request {
            RunRequest::Start { task, .. } => {
                // Prepared once per task (a later wake attempt has its workspace already).
                if self.prepared.insert(task.task_id.clone()) {
                    if let Some(fut) = self.pipeline.prepare(task) {
                        self.preparing.push(Preparing { request, fut });
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
            RunRequest::Stop { task_id } | RunRequest::Forget { task_id } => {
                self.executor.stop(task_id);
                self.finisher.stop(task_id);
                let other = |request: &RunRequest| match request {
                    RunRequest::Start { task, .. } => &task.task_id != task_id,
                    _ => true,
                };
                self.probing.retain(|p| other(&p.request));
                if self.preparing.iter().any(|p| !other(&p.request)) {
                    // Its preparation is dropped unfinished: a later start prepares again.
                    self.preparing.retain(|p| other(&p.request));
                    self.prepared.remove(task_id);
                }
                if matches!(request, RunRequest::Forget { .. }) {
                    self.prepared.remove(task_id);
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
