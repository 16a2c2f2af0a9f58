//! `agentcom-sidecar try`: one task through the user's own wake_command and results contract,
//! against the embedded hub, with every step timed and, on failure, what the agent did not do.

use crate::config::{Config, Secret};
use crate::daemon::{self, Peers};
use crate::event_log::{Event, EventLog};
use crate::exec::Runners;
use crate::hub::{EmbeddedHub, HubOptions, TaskSpec};
use crate::link::connect::NetConnector;
use crate::link::policy::{LinkPolicy, LinkSettings};
use crate::lock::InstanceLock;
use crate::relay::runtime::RelayRuntime;
use std::process::ExitCode;
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// How `try` ended, as an exit code: 0 the task completed, 1 it did not.
pub async fn run(mut config: Config, description: String, timeout: Duration) -> ExitCode {
    let state_dir = config.state_dir();
    if let Some(pid) = InstanceLock::holder(&state_dir) {
        let who = pid.map_or("a sidecar".to_owned(), |p| format!("a sidecar (PID {p})"));
        crate::errln!(
            "error: {who} is running with this config: it watches the same results folder and would take the\n\
             try task's files as stray results.\nhelp: stop it first (e.g. `systemctl --user stop agentcom-sidecar`), then run `try` again"
        );
        return ExitCode::from(crate::exit_code::ALREADY_RUNNING);
    }
    let Some(wake_command) = config.wake_command.clone() else {
        crate::errln!("error: {} has no `wake_command`: there is no way to wake the agent.\nhelp: add one, for example:\n    \"wake_command\": \"my-agent --task-file ${{TASK_FILE}}\"", config.path.display());
        return ExitCode::from(crate::exit_code::CONFIG);
    };
    let scratch = std::env::temp_dir().join(format!("agentcom-sidecar-try-{}", std::process::id()));
    if let Err(e) = crate::files::create_dir_all(&scratch) {
        crate::errln!("error: cannot create {}: {e}", scratch.display());
        return ExitCode::FAILURE;
    }
    let hub = match EmbeddedHub::start(HubOptions::default()).await {
        Ok(hub) => hub,
        Err(e) => {
            crate::errln!("error: cannot start the embedded hub: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The user's agent, wake command and results folder; a private hub, queue and log.
    config.token = Secret::new(hub.add_token(&config.agent_id));
    config.hub_url = hub.url();
    config.queue_file = scratch.join("queue.json");
    config.log_file = scratch.join("try.log");
    crate::outln!("try: wake_command  {wake_command}");
    crate::outln!("try: results_dir   {}", config.results_dir.display());
    crate::outln!("try: embedded hub  {}", hub.url());

    let (mut log, captured) = EventLog::capture(&config.agent_id);
    let mut runners = Runners::new(&config);
    let mut relay = match RelayRuntime::start(&config, &mut log, |tasks| runners.recover(tasks)) {
        Ok(relay) => relay,
        Err(e) => {
            crate::errln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let policy = LinkPolicy::new(LinkSettings::from_config(&config), fastrand::u64(..));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<String>();
    let stop = async move { stop_rx.await.unwrap_or_default() };
    let connector = NetConnector::direct();
    let link = daemon::run(
        policy,
        connector,
        &config.hub_url,
        &mut log,
        stop,
        Peers {
            relay: Some(&mut relay),
            runners: Some(&mut runners),
            ..Peers::default()
        },
    );
    let watch = async {
        let verdict = watch(&hub, &captured, &config, description, timeout).await;
        let _ = stop_tx.send("try finished".into());
        verdict
    };
    let (verdict, _) = tokio::join!(watch, link);
    hub.stop().await;
    let _ = std::fs::remove_dir_all(&scratch);
    verdict
}

async fn watch(
    hub: &EmbeddedHub,
    captured: &crate::event_log::Captured,
    config: &Config,
    description: String,
    timeout: Duration,
) -> ExitCode {
    let start = Instant::now();
    let say = |line: String| crate::outln!("{:>8.3}s  {line}", start.elapsed().as_secs_f64());
    // Wait for the sidecar side to identify.
    while !captured
        .lock()
        .map(|e| e.iter().any(|e| matches!(e, Event::Identified { .. })))
        .unwrap_or(false)
    {
        if start.elapsed() > Duration::from_secs(10) {
            say(
                "the sidecar did not identify with the embedded hub (this is a bug: please report it)".into(),
            );
            return ExitCode::FAILURE;
        }
        sleep(Duration::from_millis(10)).await;
    }
    let task_id = hub.submit_task(TaskSpec {
        description: description.clone(),
        max_retries: 1,
        ..TaskSpec::default()
    });
    say(format!("task {task_id} assigned: {description:?}"));
    let mut seen = captured.lock().map(|e| e.len()).unwrap_or(0);
    let mut story = Story::default();
    loop {
        let new: Vec<Event> = captured.lock().map(|e| e[seen..].to_vec()).unwrap_or_default();
        seen += new.len();
        for event in &new {
            if let Some(line) = story.observe(event) {
                say(line);
            }
        }
        match hub.task(&task_id) {
            Some(t) if t.status == "completed" => {
                let result = t.result.map(|r| r.to_string()).unwrap_or_default();
                say(format!("the hub recorded the task as completed: {result}"));
                crate::outln!("\nok: your agent took the task, confirmed it, and reported a result.");
                return ExitCode::SUCCESS;
            }
            Some(t) if t.status == "dead_letter" => {
                let reason = t.last_error.unwrap_or_default();
                say(format!("the hub recorded the task as failed: {reason}"));
                crate::outln!("\n{}", story.diagnose(&reason, config, &task_id));
                return ExitCode::FAILURE;
            }
            _ => {}
        }
        if start.elapsed() > timeout {
            say(format!("no outcome within {} s", timeout.as_secs()));
            crate::outln!("\n{}", story.diagnose("timeout", config, &task_id));
            return ExitCode::FAILURE;
        }
        sleep(Duration::from_millis(10)).await;
    }
}

/// What happened so far, to explain a failure.
#[derive(Default)]
struct Story {
    woken: bool,
    wake_error: Option<String>,
    started: bool,
    result: bool,
    invalid: Option<String>,
}

impl Story {
    fn observe(&mut self, event: &Event) -> Option<String> {
        Some(match event {
            Event::TaskAccepted { .. } => "the sidecar saved the task to queue.json and accepted it".into(),
            Event::WakeAttempt { attempt, .. } => {
                self.woken = true;
                format!("running wake_command (attempt {attempt})")
            }
            Event::WakeFinished {
                attempt,
                status,
                error,
                ..
            } => {
                if let Some(e) = error {
                    self.wake_error = Some(e.clone());
                }
                match error {
                    Some(e) => format!("wake_command attempt {attempt}: {status}: {e}"),
                    None => format!("wake_command attempt {attempt} exited: {status}"),
                }
            }
            Event::WakeRetryScheduled {
                delay_ms, attempt, ..
            } => {
                format!("retrying the wake in {} s (attempt {attempt})", delay_ms / 1000)
            }
            Event::AgentStarted { task_id } => {
                self.started = true;
                format!("the agent confirmed: {task_id}.started appeared")
            }
            Event::ResultInvalid { error, .. } => {
                self.invalid = Some(error.clone());
                format!("the result file is unusable: {error}")
            }
            Event::TaskOutcome { outcome, .. } => {
                self.result = true;
                format!("outcome: {outcome}")
            }
            Event::ConfirmationTimeout { waited_ms, .. } => format!("no .started within {waited_ms} ms"),
            Event::OutcomeAcknowledged { .. } => "the hub acknowledged the outcome".into(),
            _ => return None,
        })
    }

    fn diagnose(&self, reason: &str, config: &Config, task_id: &str) -> String {
        let dir = config.results_dir.display();
        let log = config
            .results_dir
            .join("logs")
            .join(format!("{task_id}.wake.log"));
        let tail = std::fs::read_to_string(&log)
            .map(|t| {
                t.lines()
                    .rev()
                    .take(10)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n    ")
            })
            .unwrap_or_default();
        let output = if tail.is_empty() {
            String::new()
        } else {
            format!("\nits output ({}):\n    {tail}", log.display())
        };
        if !self.woken {
            return format!("failed: the wake command never ran ({reason}).");
        }
        if let (Some(error), false) = (&self.wake_error, self.started) {
            return format!(
                "failed: the wake command did not succeed: {error}\nhelp: run it by hand to see why; check the program is on the PATH of the sidecar's user{output}"
            );
        }
        if !self.started {
            return format!(
                "failed: the agent did not write {dir}/{task_id}.started within confirmation_timeout_ms ({} ms).\n\
                 help: the agent (or a wrapper) must create that file when it starts: it is in $AGENTCOM_STARTED_FILE;\n\
                 help: see \"The agent contract\" in the README{output}",
                config.confirmation_timeout.as_millis()
            );
        }
        if let Some(invalid) = &self.invalid {
            return format!(
                "failed: {dir}/{task_id}.json is not a usable result: {invalid}\nhelp: write one JSON object, e.g. {{\"status\":\"success\",\"output\":\"...\"}}, to a temp file and rename it into place"
            );
        }
        if !self.result {
            return format!(
                "failed: the agent started but wrote no result {dir}/{task_id}.json ($AGENTCOM_RESULT_FILE) in time ({reason}).{output}"
            );
        }
        format!("failed: the agent reported a failure: {reason}\n(the contract worked: this is the agent's own answer){output}")
    }
}
