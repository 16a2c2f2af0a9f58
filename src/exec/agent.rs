//! The agent waker: runs a task by waking the agent. The one [`TaskRunner`] today.
//!
//! For a task's start it writes the task file and runs `wake_command` in its own process group,
//! with the task in its variables and environment (`super::wake`, `super::template`); the agent then answers
//! through its files in results_dir, which the relay watches. It keeps every process group a
//! task's wake commands ran in, so that a stop kills them all (SIGTERM, then SIGKILL after
//! [`KILL_GRACE`]) even after the wake shell exited, and says when every process of a woken agent
//! has ended ([`RelayInput::AgentGone`]: checked on each SIGCHLD and every [`AGENT_CHECK_EVERY`]
//! once the wake shell exited). A cancelled task gets `cancel_command`.

use super::process::{
    agent_alive, become_subreaper, exempt_group, kill_group_now, reap_adopted, recorded_group_is_ours,
    stop_agent, AgentGroup, KILL_GRACE,
};
use super::template::WakeVars;
use super::wake::{spawn_wake, WakeOutcome, WakeSpec};
use super::{RunRequest, TaskRunner};
use crate::config::Config;
use crate::relay::machine::{RelayInput, WakeEnd};
use crate::relay::runtime::task_file;
use crate::relay::task::TaskRecord;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How often the agents' process groups are checked while one may end unnoticed (on Linux a
/// SIGCHLD usually says it first).
pub const AGENT_CHECK_EVERY: Duration = Duration::from_secs(1);

/// What the waker knows of a task's agent processes, kept until the task ends or is stopped.
#[derive(Debug, Default)]
struct Agent {
    /// Every process group its wake commands ran in (kill by group id outlives the shell).
    groups: Vec<AgentGroup>,
    /// A wake command's shell is running.
    wake_running: bool,
    /// A process was alive after the shell exited: the agent runs in our group.
    outlived_wake: bool,
    /// [`RelayInput::AgentGone`] was sent for the current wake.
    reported: bool,
}

/// Runs tasks by waking the agent: its wake and cancel commands, and the agents' process groups.
pub struct AgentWaker {
    wakes_tx: mpsc::UnboundedSender<RelayInput>,
    wakes_rx: mpsc::UnboundedReceiver<RelayInput>,
    agents: HashMap<String, Agent>,
    next_agent_check: Instant,
    #[cfg(unix)]
    sigchld: Option<tokio::signal::unix::Signal>,
    wake_command: Option<String>,
    cancel_command: Option<String>,
    wake_timeout: Duration,
    results_dir: PathBuf,
    hub_url: String,
    /// `repo_dir`: the folder a task without a workspace of its own works in.
    repo_dir: Option<PathBuf>,
}

impl AgentWaker {
    /// The waker for a config's wake_command, cancel_command and results_dir. Must be called
    /// inside the tokio runtime (it listens for SIGCHLD on Unix).
    pub fn new(config: &Config) -> AgentWaker {
        let (wakes_tx, wakes_rx) = mpsc::unbounded_channel();
        AgentWaker {
            wakes_tx,
            wakes_rx,
            agents: HashMap::new(),
            next_agent_check: Instant::now(),
            #[cfg(unix)]
            sigchld: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok(),
            wake_command: config.wake_command.clone(),
            cancel_command: config.cancel_command.clone(),
            wake_timeout: config.wake_timeout,
            results_dir: config.results_dir.clone(),
            hub_url: config.hub_url.clone(),
            repo_dir: config.repo_dir.clone(),
        }
    }

    /// Before the relay resumes the tasks an earlier sidecar held (queue.json): a task whose agent
    /// started (or even finished) while the sidecar was down is marked `working`, so it is not
    /// woken again; recorded process groups are kept only while they are provably the same, and
    /// watched for their end.
    pub fn recover(&mut self, tasks: &mut [TaskRecord]) {
        // An agent that started (or even finished) while the sidecar was down must not be woken
        // again: look at its files before the machine decides what to resume.
        for task in tasks.iter_mut() {
            let file = |ext: &str| self.results_dir.join(format!("{}.{ext}", task.task_id));
            let woken = matches!(
                task.status.as_str(),
                "accepted" | "waking" | "waking_confirmation" | ""
            );
            if task.outcome.is_none() && woken && (file("started").exists() || file("json").exists()) {
                task.status = "working".into();
            }
        }
        // Agents the wake shell backgrounded, or that left its process group, become our children
        // (Linux) rather than init's: they can be found, stopped and reaped.
        become_subreaper();
        // Process groups recorded by an earlier run: kept only while they are provably the same.
        for task in tasks.iter_mut() {
            if task.executed_by.is_some() && task.outcome.is_none() {
                // An execution the crash cut short: what it left running (the claude CLI, a shell
                // command) is stopped now, before the task is run again from the start.
                for g in task.agent_groups.drain(..) {
                    if recorded_group_is_ours(&g) {
                        kill_group_now(g.pgid);
                    }
                }
                continue;
            }
            // Only groups recorded with a start time can be recognised (Linux); without one,
            // whether the agent still runs cannot be known, so it is not watched.
            let recognisable = task.agent_groups.iter().any(|g| g.start_ticks.is_some());
            task.agent_groups.retain(recorded_group_is_ours);
            if recognisable && cfg!(target_os = "linux") && task.outcome.is_none() {
                self.agents.insert(
                    task.task_id.clone(),
                    Agent {
                        groups: task.agent_groups.clone(),
                        outlived_wake: true,
                        ..Agent::default()
                    },
                );
            }
        }
    }

    /// A wake command's shell exited: from now on the agent is watched for its end.
    fn wake_ended(&mut self, task_id: &str) {
        if let Some(agent) = self.agents.get_mut(task_id) {
            agent.wake_running = false;
        }
        self.check_agent(task_id);
    }

    /// Whether any agent is watched for its end.
    fn watching(&self) -> bool {
        self.agents.values().any(|a| !a.wake_running && !a.reported)
    }

    /// Reap adopted zombies and look at every watched agent.
    fn check_agents(&mut self) {
        reap_adopted();
        self.next_agent_check = Instant::now() + AGENT_CHECK_EVERY;
        let ids: Vec<String> = self.agents.keys().cloned().collect();
        for task_id in ids {
            self.check_agent(&task_id);
        }
    }

    /// After the wake shell exited: is any process of the agent alive? Once none is, say so.
    fn check_agent(&mut self, task_id: &str) {
        let Some(agent) = self.agents.get_mut(task_id) else {
            return;
        };
        if agent.wake_running || agent.reported {
            return;
        }
        if agent_alive(task_id, &agent.groups) {
            agent.outlived_wake = true;
            return;
        }
        agent.reported = true;
        let _ = self.wakes_tx.send(RelayInput::AgentGone {
            task_id: task_id.to_owned(),
            outlived_wake: agent.outlived_wake,
        });
    }

    /// The next thing that happened to a woken task: a wake command ended, or its agent's
    /// processes all did.
    async fn next_wake_input(&mut self) -> RelayInput {
        loop {
            let watching = self.watching();
            #[cfg(unix)]
            let child_exited = async {
                match self.sigchld.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let child_exited = std::future::pending::<Option<()>>();
            tokio::select! {
                Some(input) = self.wakes_rx.recv() => {
                    // Looked at before the relay hears of it: if the relay then stops the task,
                    // an `AgentGone` may follow for a task already done, which the relay ignores.
                    if let RelayInput::WakeFinished { task_id, .. } = &input {
                        let task_id = task_id.clone();
                        self.wake_ended(&task_id);
                    }
                    return input;
                }
                () = tokio::time::sleep_until(self.next_agent_check), if watching => {}
                _ = child_exited => {}
            }
            self.check_agents();
        }
    }

    fn spec(&self, template: &str, task: &TaskRecord, output: PathBuf) -> WakeSpec {
        let task_file = task_file(&self.results_dir, &task.task_id);
        // The folder the task works in: its workspace (prepared for it), else repo_dir.
        let workspace = task.workspace.clone().or_else(|| self.repo_dir.clone());
        let vars = WakeVars {
            task_id: task.task_id.clone(),
            description: task.description.clone(),
            task_json: task.to_task_json(),
            task_file: task_file.clone(),
            results_dir: self.results_dir.clone(),
            generation: task.generation,
            workspace: workspace.clone().unwrap_or_default(),
        };
        let file = |ext: &str| {
            self.results_dir
                .join(format!("{}.{ext}", task.task_id))
                .display()
                .to_string()
        };
        let mut env = vec![
            ("AGENTCOM_TASK_ID".to_owned(), task.task_id.clone()),
            ("AGENTCOM_TASK_FILE".to_owned(), task_file.display().to_string()),
            ("AGENTCOM_GENERATION".to_owned(), task.generation.to_string()),
            (
                "AGENTCOM_RESULTS_DIR".to_owned(),
                self.results_dir.display().to_string(),
            ),
            ("AGENTCOM_STARTED_FILE".to_owned(), file("started")),
            ("AGENTCOM_RESULT_FILE".to_owned(), file("json")),
            ("AGENTCOM_PROGRESS_FILE".to_owned(), file("progress")),
            ("AGENTCOM_HUB_URL".to_owned(), self.hub_url.clone()),
        ];
        if let Some(folder) = &workspace {
            env.push(("AGENTCOM_WORKSPACE".to_owned(), folder.display().to_string()));
        }
        WakeSpec {
            command: template.to_owned(),
            vars,
            env,
            cwd: None,
            timeout: self.wake_timeout,
            output_file: output,
        }
    }

    /// Run the wake command; the process group it started in, for the relay.
    fn wake(&mut self, task: TaskRecord, attempt: u32) -> Option<RelayInput> {
        let task_id = task.task_id.clone();
        let finished = |end| RelayInput::WakeFinished {
            task_id: task_id.clone(),
            attempt,
            end,
        };
        let Some(template) = self.wake_command.clone() else {
            let _ = self
                .wakes_tx
                .send(finished(WakeEnd::Failed("no wake_command configured".into())));
            return None;
        };
        if let Err(e) = write_task_file(&task_file(&self.results_dir, &task_id), &task.to_task_json()) {
            let error = format!("cannot write the task file: {e}");
            let _ = self.wakes_tx.send(finished(WakeEnd::Failed(error)));
            return None;
        }
        let output = self.results_dir.join("logs").join(format!("{task_id}.wake.log"));
        match spawn_wake(&self.spec(&template, &task, output)) {
            Ok(handle) => {
                let group = handle.group();
                let agent = self.agents.entry(task_id.clone()).or_default();
                agent.groups.retain(|g| g.pgid != group.pgid);
                agent.groups.push(group.clone());
                agent.wake_running = true;
                agent.outlived_wake = false;
                agent.reported = false;
                let announce = RelayInput::AgentGroup {
                    task_id: task_id.clone(),
                    group,
                };
                let tx = self.wakes_tx.clone();
                tokio::spawn(async move {
                    let end = match handle.wait().await {
                        WakeOutcome::Success => WakeEnd::Success,
                        WakeOutcome::Timeout => WakeEnd::Timeout,
                        WakeOutcome::Failed { error } | WakeOutcome::CouldNotStart { error } => {
                            WakeEnd::Failed(error)
                        }
                    };
                    let _ = tx.send(RelayInput::WakeFinished {
                        task_id,
                        attempt,
                        end,
                    });
                });
                Some(announce)
            }
            Err(outcome) => {
                let error = match outcome {
                    WakeOutcome::CouldNotStart { error } | WakeOutcome::Failed { error } => error,
                    other => format!("{other:?}"),
                };
                let _ = self.wakes_tx.send(finished(WakeEnd::Failed(error)));
                None
            }
        }
    }

    /// Run cancel_command for a cancelled task (its agent is stopped by the `Stop` before it).
    fn run_cancel_command(&mut self, task: TaskRecord) {
        let Some(template) = self.cancel_command.clone() else {
            return;
        };
        let output = self
            .results_dir
            .join("logs")
            .join(format!("{}.cancel.log", task.task_id));
        if let Ok(handle) = spawn_wake(&self.spec(&template, &task, output)) {
            // What the cancel command starts is not the agent being stopped.
            exempt_group(handle.pgid);
            // Waiting enforces the timeout (the group is killed past it).
            tokio::spawn(handle.wait());
        }
    }
}

impl TaskRunner for AgentWaker {
    fn handle(&mut self, request: RunRequest) -> Vec<RelayInput> {
        match request {
            RunRequest::Start { task, attempt } => return self.wake(task, attempt).into_iter().collect(),
            RunRequest::Stop { task_id } => {
                let groups = self.agents.remove(&task_id).map(|a| a.groups).unwrap_or_default();
                tokio::spawn(async move { stop_agent(&task_id, &groups, KILL_GRACE).await });
            }
            RunRequest::Cancelled { task } => self.run_cancel_command(task),
            RunRequest::Forget { task_id, .. } => {
                self.agents.remove(&task_id);
            }
            // Verifying and delivering a result is not the waker's.
            RunRequest::Finish { .. } => {}
        }
        Vec::new()
    }

    fn next_input(&mut self) -> impl Future<Output = RelayInput> + '_ {
        self.next_wake_input()
    }
}

fn write_task_file(path: &Path, json: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        crate::files::create_dir_all(dir)?;
    }
    crate::files::write(path, json.as_bytes())
}
