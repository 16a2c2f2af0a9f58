//! `RelayRuntime`: the I/O shell around the task [`Relay`] machine.
//!
//! It carries out the machine's actions (queue.json writes, wake processes, kills, file moves,
//! watching the results folder) and turns their outcomes back into machine inputs. Frames the
//! machine wants sent are queued for the link driver ([`RelayRuntime::take_sends`]).

use super::machine::{Relay, RelayAction, RelayInput, RelaySettings, ResultFile, WakeEnd};
use super::store::TaskStore;
use super::task::{AgentGroup, TaskRecord};
use super::watch::{FileEvent, ResultContent, ResultWatcher, WatchOptions};
use crate::config::Config;
use crate::event_log::{Event, EventLog};
use crate::exec::process::{
    agent_alive, become_subreaper, exempt_group, reap_adopted, recorded_group_is_ours, stop_agent, KILL_GRACE,
};
use crate::exec::template::WakeVars;
use crate::exec::wake::{spawn_wake, WakeOutcome, WakeSpec};
use crate::protocol::Outbound;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
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

/// How often the agents' process groups are checked while one may end unnoticed (on Linux a
/// SIGCHLD usually says it first).
const AGENT_CHECK_EVERY: Duration = Duration::from_secs(1);

/// What the runtime knows of a task's agent processes, kept until the task ends or is stopped.
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

/// The relay, its store, its watcher and its running wake commands.
pub struct RelayRuntime {
    relay: Relay,
    store: TaskStore,
    watcher: ResultWatcher,
    files: mpsc::UnboundedReceiver<FileEvent>,
    wakes_tx: mpsc::UnboundedSender<RelayInput>,
    wakes_rx: mpsc::UnboundedReceiver<RelayInput>,
    agents: HashMap<String, Agent>,
    next_agent_check: Instant,
    #[cfg(unix)]
    sigchld: Option<tokio::signal::unix::Signal>,
    sends: VecDeque<Outbound>,
    link_requests: VecDeque<LinkRequest>,
    wake_command: Option<String>,
    cancel_command: Option<String>,
    wake_timeout: Duration,
    results_dir: PathBuf,
    hub_url: String,
}

/// The machine's settings a config asks for.
pub fn relay_settings(config: &Config) -> RelaySettings {
    RelaySettings {
        wake_configured: config.wake_command.is_some(),
        cancel_configured: config.cancel_command.is_some(),
        max_pending: config.max_pending,
        wake_retry_delays: config.wake_retry_delays.clone(),
        confirmation_timeout: config.confirmation_timeout,
        progress_keepalive: config.progress_keepalive,
        readopt_window: config.readopt_window,
        task_timeout: config.task_timeout,
        agent_exit_grace: config.agent_exit_grace,
    }
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
    /// Load queue.json (a corrupt one is moved aside and logged), start watching results_dir.
    /// Fails only when queue.json can be neither read nor moved aside, or the folder cannot be watched.
    pub fn start(config: &Config, log: &mut EventLog) -> Result<RelayRuntime, String> {
        let store = TaskStore::new(&config.queue_file);
        let loaded = store.load()?;
        if let Some(moved) = loaded.moved_aside {
            log.record(&Event::QueueCorrupt {
                moved_to: moved.moved_to.display().to_string(),
                error: moved.error,
            });
        }
        // An agent that started (or even finished) while the sidecar was down must not be woken
        // again: look at its files before the machine decides what to resume.
        let mut tasks = loaded.tasks;
        for task in &mut tasks {
            let file = |ext: &str| config.results_dir.join(format!("{}.{ext}", task.task_id));
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
        let mut agents = HashMap::new();
        for task in &mut tasks {
            // Only groups recorded with a start time can be recognised (Linux); without one,
            // whether the agent still runs cannot be known, so it is not watched.
            let recognisable = task.agent_groups.iter().any(|g| g.start_ticks.is_some());
            task.agent_groups.retain(recorded_group_is_ours);
            if recognisable && cfg!(target_os = "linux") && task.outcome.is_none() {
                agents.insert(
                    task.task_id.clone(),
                    Agent {
                        groups: task.agent_groups.clone(),
                        outlived_wake: true,
                        ..Agent::default()
                    },
                );
            }
        }
        let (watcher, files) = ResultWatcher::start(WatchOptions::new(&config.results_dir))
            .map_err(|e| watch_error(&config.results_dir, &e))?;
        let (wakes_tx, wakes_rx) = mpsc::unbounded_channel();
        let mut runtime = RelayRuntime {
            relay: Relay::new(relay_settings(config), tasks),
            store,
            watcher,
            files,
            wakes_tx,
            wakes_rx,
            agents,
            next_agent_check: Instant::now(),
            #[cfg(unix)]
            sigchld: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok(),
            sends: VecDeque::new(),
            link_requests: VecDeque::new(),
            wake_command: config.wake_command.clone(),
            cancel_command: config.cancel_command.clone(),
            wake_timeout: config.wake_timeout,
            results_dir: config.results_dir.clone(),
            hub_url: config.hub_url.clone(),
        };
        runtime.run_actions(log);
        Ok(runtime)
    }

    /// Feed one input and carry out what follows.
    pub fn handle(&mut self, input: RelayInput, log: &mut EventLog) {
        let finished = match &input {
            RelayInput::WakeFinished { task_id, .. } => Some(task_id.clone()),
            _ => None,
        };
        self.relay.handle(input, now(), epoch_ms());
        self.run_actions(log);
        if let Some(task_id) = finished {
            if let Some(agent) = self.agents.get_mut(&task_id) {
                agent.wake_running = false;
            }
            self.check_agent(&task_id);
        }
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

    /// Each held task's id, status and generation, and the outbox depth, for `status`.
    pub fn snapshot(&self) -> (Vec<(String, &'static str, i64)>, usize) {
        (self.relay.snapshot(), self.relay.outbox_depth())
    }

    /// The next input from the agent's side: a file event or a wake command's end.
    pub async fn next_input(&mut self) -> RelayInput {
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
                Some(input) = self.wakes_rx.recv() => return input,
                event = self.files.recv() => match event {
                    Some(event) => return file_input(event, &self.results_dir),
                    // The watcher stopped: nothing more will come from it.
                    None => std::future::pending::<()>().await,
                },
                () = tokio::time::sleep_until(self.next_agent_check), if watching => {}
                _ = child_exited => {}
            }
            self.check_agents();
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
                RelayAction::Wake { task, attempt } => self.wake(task, attempt),
                RelayAction::Kill { task_id } => {
                    let groups = self.agents.remove(&task_id).map(|a| a.groups).unwrap_or_default();
                    tokio::spawn(async move { stop_agent(&task_id, &groups, KILL_GRACE).await });
                }
                RelayAction::RunCancelCommand { task } => self.run_cancel_command(task),
                RelayAction::Track { task_id } => self.watcher.track(&task_id),
                RelayAction::Untrack { task_id } => {
                    self.agents.remove(&task_id);
                    self.watcher.untrack(&task_id);
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

    fn spec(&self, template: &str, task: &TaskRecord, output: PathBuf) -> WakeSpec {
        let task_file = self.task_file(&task.task_id);
        let vars = WakeVars {
            task_id: task.task_id.clone(),
            description: task.description.clone(),
            task_json: task.to_task_json(),
            task_file: task_file.clone(),
            results_dir: self.results_dir.clone(),
            generation: task.generation,
        };
        let file = |ext: &str| {
            self.results_dir
                .join(format!("{}.{ext}", task.task_id))
                .display()
                .to_string()
        };
        let env = vec![
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
        WakeSpec {
            command: template.to_owned(),
            vars,
            env,
            cwd: None,
            timeout: self.wake_timeout,
            output_file: output,
        }
    }

    /// `results_dir/tasks/{task_id}.json`: the full task for the agent (`${TASK_FILE}`).
    fn task_file(&self, task_id: &str) -> PathBuf {
        self.results_dir.join("tasks").join(format!("{task_id}.json"))
    }

    fn wake(&mut self, task: TaskRecord, attempt: u32) {
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
            return;
        };
        if let Err(e) = write_task_file(&self.task_file(&task_id), &task.to_task_json()) {
            let error = format!("cannot write the task file: {e}");
            let _ = self.wakes_tx.send(finished(WakeEnd::Failed(error)));
            return;
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
                self.relay.handle(
                    RelayInput::AgentGroup {
                        task_id: task_id.clone(),
                        group,
                    },
                    now(),
                    epoch_ms(),
                );
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
            }
            Err(outcome) => {
                let error = match outcome {
                    WakeOutcome::CouldNotStart { error } | WakeOutcome::Failed { error } => error,
                    other => format!("{other:?}"),
                };
                let _ = self.wakes_tx.send(finished(WakeEnd::Failed(error)));
            }
        }
    }

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

    fn clear_files(&self, task_id: &str) {
        for ext in ["started", "json", "progress"] {
            remove_if_present(&self.results_dir.join(format!("{task_id}.{ext}")));
        }
        remove_if_present(&self.task_file(task_id));
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
        remove_if_present(&self.task_file(task_id));
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

fn write_task_file(path: &Path, json: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        crate::files::create_dir_all(dir)?;
    }
    crate::files::write(path, json.as_bytes())
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
