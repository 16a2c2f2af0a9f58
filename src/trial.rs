//! `agentcom-sidecar try`: one task through the user's own wake_command and results contract,
//! against the embedded hub, with every step timed and, on failure, what the agent did not do.
//! With `--tier`, the task goes to the route the hub picks for that tier instead (Ollama, Claude
//! Code, a shell command), as `direct_execution` and the config allow.

use crate::config::{Config, DirectExecution, Secret};
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

/// The complexity tier `try --tier` submits the task with, to try the route the hub picks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tier {
    /// Routed to `sidecar`: the task's `metadata.shell_command` (`--shell-command`), run here
    /// when `allow_hub_commands` is true.
    Trivial,
    /// Routed to `ollama`: `ollama_url`, registered in the private hub's LLM registry.
    Standard,
    /// Routed to `claude`: `claude_command`.
    Complex,
}

impl Tier {
    /// The tier as `complexity_tier` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Trivial => "trivial",
            Tier::Standard => "standard",
            Tier::Complex => "complex",
        }
    }
}

/// What `try` submits besides the description.
#[derive(Debug, Clone, Default)]
pub struct TryOptions {
    /// `--tier`: try that route; `None`: the task goes to the wake_command, whatever
    /// `direct_execution` says.
    pub tier: Option<Tier>,
    /// `--shell-command`: the task's `metadata.shell_command` (for `--tier trivial`).
    pub shell_command: Option<String>,
}

/// How `try` ended, as an exit code: 0 the task completed, 1 it did not.
pub async fn run(
    mut config: Config,
    description: String,
    timeout: Duration,
    options: TryOptions,
) -> ExitCode {
    let state_dir = config.state_dir();
    if let Some(pid) = InstanceLock::holder(&state_dir) {
        let who = pid.map_or("a sidecar".to_owned(), |p| format!("a sidecar (PID {p})"));
        crate::errln!(
            "error: {who} is running with this config: it watches the same results folder and would take the\n\
             try task's files as stray results.\nhelp: stop it first (e.g. `systemctl --user stop agentcom-sidecar`), then run `try` again"
        );
        return ExitCode::from(crate::exit_code::ALREADY_RUNNING);
    }
    let wake_command = config.wake_command.clone();
    if options.tier.is_none() && wake_command.is_none() {
        crate::errln!("error: {} has no `wake_command`: there is no way to wake the agent.\nhelp: add one, for example:\n    \"wake_command\": \"my-agent --task-file ${{TASK_FILE}}\"", config.path.display());
        return ExitCode::from(crate::exit_code::CONFIG);
    }
    if options.tier.is_none() {
        // Without --tier, try is about the wake contract: no route may take the task elsewhere.
        config.direct_execution = DirectExecution::Off;
    }
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
    crate::outln!(
        "try: wake_command  {}",
        wake_command.as_deref().unwrap_or("(none)")
    );
    crate::outln!("try: results_dir   {}", config.results_dir.display());
    crate::outln!("try: embedded hub  {}", hub.url());

    let (mut log, captured) = EventLog::capture(&config.agent_id);
    let mut runners = Runners::new(&config, crate::deliver::pipeline(&config));
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
        let verdict = watch(&hub, &captured, &config, description, timeout, &options).await;
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
    options: &TryOptions,
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
    // After the identify: its ollama_url (re)registers the endpoint as unchecked.
    if let Some(tier) = options.tier {
        explain_route(hub, config, tier, options.shell_command.as_deref()).await;
    }
    let metadata = match &options.shell_command {
        Some(command) => serde_json::json!({ "shell_command": command }),
        None => serde_json::Value::default(),
    };
    let task_id = hub.submit_task(TaskSpec {
        description: description.clone(),
        max_retries: 1,
        complexity_tier: options.tier.map(|t| t.as_str().to_owned()),
        metadata,
        ..TaskSpec::default()
    });
    if let Some(d) = hub.task(&task_id).and_then(|t| t.routing_decision) {
        say(format!(
            "the hub routed it: {} -> {}{}",
            d["effective_tier"].as_str().unwrap_or("?"),
            d["target_type"].as_str().unwrap_or("?"),
            match (d["selected_endpoint"].as_str(), d["fallback_reason"].as_str()) {
                (Some(ep), _) => format!(" {ep}"),
                (None, Some(why)) => format!(" (fallback: {why})"),
                (None, None) => String::new(),
            }
        ));
    }
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
                match &story.executed {
                    Some(target) => crate::outln!(
                        "\nok: the sidecar ran the task with {target} and the hub recorded its result."
                    ),
                    None => {
                        crate::outln!("\nok: your agent took the task, confirmed it, and reported a result.")
                    }
                }
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
    /// The executor that ran the task here (`ollama`, `claude`, `sidecar`), if one did.
    executed: Option<String>,
    /// Why the task could be neither executed nor woken.
    unroutable: Option<String>,
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
            Event::ExecutionChosen { target, why, .. } => {
                match target.as_str() {
                    "wake" => {}
                    "fail" => self.unroutable = Some(why.clone()),
                    _ => self.executed = Some(target.clone()),
                }
                event.describe()
            }
            Event::ExecutionFailed { error, .. } => format!("the execution failed: {error}"),
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
        if let Some(why) = &self.unroutable {
            return format!("failed: the task could be neither executed here nor woken: {why}");
        }
        if let Some(target) = &self.executed {
            return format!(
                "failed: the sidecar ran the task with {target} and it failed: {reason}\n(see \"Direct execution\" in the README for the config keys of each route)"
            );
        }
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

/// Before a `--tier` task: what the route needs from the config, and whether it is there. For
/// `standard`, `ollama_url` is registered in the private hub's LLM registry and checked.
async fn explain_route(hub: &EmbeddedHub, config: &Config, tier: Tier, shell_command: Option<&str>) {
    let say = |line: String| crate::outln!("try: {line}");
    if config.direct_execution == DirectExecution::Off {
        say(format!(
            "direct_execution is \"off\" in {}: the sidecar wakes the agent whatever the route (set it to \"auto\" to try the route)",
            config.path.display()
        ));
    }
    match tier {
        Tier::Standard => match &config.ollama_url {
            Some(url) => match crate::exec::ollama::http::BaseUrl::parse(url) {
                Ok(base) => {
                    // The sidecar's identify registered it (unchecked); check it now, not in 30 s.
                    let id = format!("{}:{}", base.host, base.port);
                    if hub.llm_endpoint(&id).is_none() {
                        let body = serde_json::json!({"host": base.host, "port": base.port, "name": "ollama_url"});
                        let _ = hub.register_llm_endpoint(&body);
                    }
                    hub.probe_llm_now().await;
                    let ep = hub.llm_endpoint(&id).unwrap_or_default();
                    say(format!(
                        "route standard -> ollama: ollama_url {url} registered in the private hub ({}{})",
                        ep["status"].as_str().unwrap_or("unknown"),
                        match ep["models"].as_array() {
                            Some(m) if !m.is_empty() => format!(", models {}", ep["models"]),
                            _ => ", no models: the hub will not route to it".to_owned(),
                        }
                    ));
                }
                Err(e) => say(format!("route standard -> ollama: ollama_url is not usable: {e}")),
            },
            None => say(format!(
                "route standard -> ollama: {} has no `ollama_url`, so the private hub has no local model to route to \
                 (your real hub may have one in its LLM registry); set `ollama_url` to try yours",
                config.path.display()
            )),
        },
        Tier::Complex => say(format!(
            "route complex -> claude: claude_command `{}`{}",
            config.claude_command,
            config
                .claude_model
                .as_deref()
                .map(|m| format!(", claude_model {m}"))
                .unwrap_or_default()
        )),
        Tier::Trivial => say(match (shell_command, config.allow_hub_commands) {
            (Some(c), true) => format!("route trivial -> sidecar: runs the shell command {c:?} here (allow_hub_commands is true)"),
            (Some(_), false) => format!(
                "route trivial -> sidecar: allow_hub_commands is not true in {}, so the shell command does not run here",
                config.path.display()
            ),
            (None, _) => "route trivial -> sidecar: without --shell-command the task has no metadata.shell_command to run here".to_owned(),
        }),
    }
}
