//! `agentcom-sidecar demo`: a sidecar against the embedded hub, narrated.
//!
//! It writes a real config file (mode 0600) to a temporary folder, loads it as `run` would, and
//! drives the same link and relay code over real loopback TCP: connect, identify, heartbeat, a task
//! through a sample agent (this binary's hidden `sample-agent` command), a task the hub routes to a
//! local model (a fake Ollama, registered in the hub's LLM registry) that the sidecar runs itself,
//! the hub going away and coming back, reconnect with backoff, and a clean shutdown.

use crate::config::{Config, LoadOptions};
use crate::daemon::{self, Peers};
use crate::event_log::EventLog;
use crate::exec::fake_ollama::FakeOllama;
use crate::exec::Runners;
use crate::hub::{EmbeddedHub, HubEvent, HubOptions, TaskSpec};
use crate::link::connect::NetConnector;
use crate::link::policy::{LinkPolicy, LinkSettings};
use crate::relay::runtime::RelayRuntime;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{sleep, timeout_at, Instant};

const AGENT_ID: &str = "demo-agent";

fn say(line: &str) {
    crate::outln!("{:<12} {line}", "demo");
}

/// Run the demo; exits 0 when every step was seen.
pub async fn run() -> ExitCode {
    match script().await {
        Ok(log_file) => {
            say(&format!(
                "done: every step seen. The JSON-lines log is at {}",
                log_file.display()
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            crate::errln!("error: demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn script() -> Result<PathBuf, String> {
    // The token is in this folder's config: keep it private.
    let dir = std::env::temp_dir().join(format!("agentcom-sidecar-demo-{}", std::process::id()));
    crate::files::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let hub = EmbeddedHub::start(HubOptions::default())
        .await
        .map_err(|e| format!("cannot start the embedded hub: {e}"))?;
    say(&format!("embedded hub listening on {}", hub.url()));
    let token = hub.add_token(AGENT_ID);
    let config_path = write_config(&dir, &hub.url(), &token)?;
    // The demo's token is the embedded hub's: $AGENTCOM_TOKEN must not override it.
    let config = Config::load_with(&config_path, &LoadOptions::default()).map_err(|e| e.to_string())?;
    say(&format!(
        "config written to {} (heartbeat every {} ms for the demo; 30 s by default)",
        config.path.display(),
        config.heartbeat_interval.as_millis()
    ));
    let mut log = EventLog::open(&config.log_file, &config.agent_id, true)
        .map_err(|e| format!("cannot open {}: {e}", config.log_file.display()))?;
    let mut runners = Runners::new(&config, crate::deliver::pipeline(&config));
    let mut relay = RelayRuntime::start(&config, &mut log, |tasks| runners.recover(tasks))?;
    let policy = LinkPolicy::new(LinkSettings::from_config(&config), fastrand::u64(..));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<String>();
    let stop = async move { stop_rx.await.unwrap_or_else(|_| "demo ended".to_owned()) };

    let mut events = hub.events();
    let narrate = narrate_hub(hub.events());
    let steps = async {
        let result = steps(&hub, &mut events, &dir).await;
        let _ = stop_tx.send("the demo's stop signal".to_owned());
        result
    };
    let link = daemon::run(
        policy,
        NetConnector::direct(),
        &config.hub_url,
        &mut log,
        stop,
        Peers {
            relay: Some(&mut relay),
            runners: Some(&mut runners),
            ..Peers::default()
        },
    );
    // The narration runs until the sidecar and the steps are both done.
    let (result, _end) = tokio::select! {
        biased;
        done = async { tokio::join!(steps, link) } => done,
        never = narrate => match never {},
    };
    result?;
    // The sidecar has exited; the hub must have seen close code 1000.
    let closed_clean = hub.history().iter().any(|e| {
        matches!(
            e,
            HubEvent::Closed {
                code: Some(1000),
                by_hub: false,
                ..
            }
        )
    });
    if !closed_clean {
        return Err("the hub did not see the sidecar close with code 1000".into());
    }
    say("the hub saw the sidecar close the WebSocket with code 1000 (normal closure)");
    hub.stop().await;
    Ok(config.log_file)
}

/// The wake command for the sample agent: this very binary, `sample-agent`.
fn sample_agent_command() -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "agentcom-sidecar".into());
    if cfg!(windows) {
        format!("\"{exe}\" sample-agent")
    } else {
        format!("{} sample-agent", crate::exec::template::quote_sh(&exe))
    }
}

fn write_config(dir: &Path, hub_url: &str, token: &str) -> Result<PathBuf, String> {
    let path = dir.join("config.json");
    let config = serde_json::json!({
        "agent_id": AGENT_ID,
        "token": token,
        "hub_url": hub_url,
        "capabilities": ["code"],
        "log_file": "./sidecar.log",
        "results_dir": "./results",
        "heartbeat_interval_ms": 1500,
        "heartbeat_timeout_ms": 1000,
        "reconnect_initial_ms": 500,
        "reconnect_max_ms": 4000,
        "reconnect_jitter": 0.5,
        "wake_command": sample_agent_command(),
        "direct_execution": "auto",
        "confirmation_timeout_ms": 5000,
        // No real `gh` in the demo: delivery pushes the branch and says what gh would do.
        "gh_command": dir.join("gh-is-not-used-by-the-demo").display().to_string()
    });
    let text = serde_json::to_string_pretty(&config).expect("json");
    write_private(&path, text.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Write a file that only its owner can read (it holds the token).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

async fn steps(
    hub: &EmbeddedHub,
    events: &mut broadcast::Receiver<HubEvent>,
    dir: &Path,
) -> Result<(), String> {
    wait_for(
        events,
        Duration::from_secs(5),
        "identified",
        |e| matches!(e, HubEvent::Identified { agent_id, .. } if agent_id == AGENT_ID),
    )
    .await?;
    wait_for(events, Duration::from_secs(5), "a pong", is_pong).await?;
    let description = "Say hello to the team";
    let task_id = hub.submit_task(TaskSpec {
        description: description.into(),
        ..TaskSpec::default()
    });
    say(&format!(
        "submitting a task to the hub: {task_id} \"{description}\" (the sample agent will take it)"
    ));
    say(&format!(
        "the hub routed it: {}; no local model is registered yet, so the sidecar wakes the agent",
        routing(hub, &task_id)
    ));
    let done = completed(hub, &task_id).await?;
    say(&format!(
        "the hub recorded {task_id} as completed (generation {}): {}",
        done.generation,
        done.result.map(|r| r.to_string()).unwrap_or_default()
    ));
    local_model_step(hub).await?;
    delivery_step(hub, dir).await?;
    say("stopping the hub, as a hub restart or a network loss would");
    hub.stop().await;
    sleep(Duration::from_secs(3)).await;
    say("starting the hub again on the same port");
    hub.restart()
        .await
        .map_err(|e| format!("cannot restart the embedded hub: {e}"))?;
    wait_for(
        events,
        Duration::from_secs(10),
        "identified after the restart",
        |e| matches!(e, HubEvent::Identified { agent_id, .. } if agent_id == AGENT_ID),
    )
    .await?;
    wait_for(events, Duration::from_secs(5), "a pong", is_pong).await?;
    say("sending the sidecar a stop signal, as Ctrl+C or SIGTERM would");
    Ok(())
}

/// A task routed to a local model: a fake Ollama registered in the hub's LLM registry; the hub
/// routes a standard task to it, and the sidecar (`direct_execution: "auto"`) runs it itself.
async fn local_model_step(hub: &EmbeddedHub) -> Result<(), String> {
    let ollama = FakeOllama::start()
        .await
        .map_err(|e| format!("cannot start the fake Ollama: {e}"))?;
    let addr = ollama.host_port();
    let (host, port) = addr.rsplit_once(':').ok_or("the fake Ollama has no port")?;
    let port: u16 = port
        .parse()
        .map_err(|_| "the fake Ollama's port is not a number")?;
    hub.register_llm_endpoint(&serde_json::json!({"host": host, "port": port, "name": "demo-local"}))
        .map_err(|e| format!("the hub refused the endpoint: {e}"))?;
    hub.probe_llm_now().await;
    let endpoint = hub.llm_endpoint(&addr).unwrap_or_default();
    if endpoint["status"] != "healthy" {
        return Err(format!("the hub's health check of {addr} failed: {endpoint}"));
    }
    say(&format!(
        "a local model: a fake Ollama at {}, registered in the hub's LLM registry ({}, models {})",
        ollama.url(),
        endpoint["status"].as_str().unwrap_or_default(),
        endpoint["models"]
    ));
    let description = "Summarize this week's changes for the team";
    let task_id = hub.submit_task(TaskSpec {
        description: description.into(),
        complexity_tier: Some("standard".into()),
        ..TaskSpec::default()
    });
    say(&format!(
        "submitting a standard task: {task_id} \"{description}\"; the hub routed it: {}",
        routing(hub, &task_id)
    ));
    let done = completed(hub, &task_id).await?;
    let result = done.result.unwrap_or_default();
    let progress = hub.history().iter().any(|e| {
        matches!(e, HubEvent::Received { text, .. }
            if text.contains(r#""type":"task_progress""#) && text.contains(&task_id)
                && text.contains(r#""execution_event""#))
    });
    if result["model_used"].is_null() || !progress {
        return Err(format!(
            "task {task_id} completed but not by the local model (task_progress with execution_event seen: {progress}): {result}"
        ));
    }
    say(&format!(
        "a task routed to a local model: the sidecar ran {task_id} on {} at {} without waking the agent \
         ({} tokens in, {} out): {}",
        result["model_used"].as_str().unwrap_or_default(),
        ollama.url(),
        result["tokens_in"],
        result["tokens_out"],
        result["output"]
    ));
    // The fake model stops with this step: take it out of the hub's registry too.
    hub.delete_llm_endpoint(&addr);
    Ok(())
}

/// Runs git with `args` in `dir` (the demo's own commands: no hub text), with a fixed identity,
/// through the delivery's one git runner (own process group, timeout, no prompts).
async fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let identity = [
        "-c",
        "user.name=AgentCom demo",
        "-c",
        "user.email=demo@agentcom.invalid",
    ];
    let all: Vec<&str> = identity.iter().chain(args).copied().collect();
    crate::deliver::git::git(dir, &all, crate::deliver::git::LOCAL_TIMEOUT)
        .await
        .map_err(|e| format!("git {}: {e}", args.join(" ")))
}

/// A task with a `repo` (a bare repository in the demo's folder, standing in for GitHub): the
/// sidecar clones it into a workspace and starts a branch, the sample agent writes a file there,
/// the task's check runs, and the work is committed and pushed as a branch. Skipped (said so)
/// where git is not installed.
async fn delivery_step(hub: &EmbeddedHub, dir: &Path) -> Result<(), String> {
    if git(dir, &["--version"]).await.is_err() {
        say("git is not installed here: skipping the step that delivers a task as a verified branch");
        return Ok(());
    }
    let origin = dir.join("origin.git");
    let seed = dir.join("seed");
    git(dir, &["init", "--quiet", "--bare", &origin.display().to_string()]).await?;
    git(&origin, &["symbolic-ref", "HEAD", "refs/heads/main"]).await?;
    git(
        dir,
        &[
            "clone",
            "--quiet",
            &origin.display().to_string(),
            &seed.display().to_string(),
        ],
    )
    .await?;
    std::fs::write(seed.join("README.md"), "# The team's project\n")
        .map_err(|e| format!("cannot write the demo repository: {e}"))?;
    git(&seed, &["add", "README.md"]).await?;
    git(&seed, &["commit", "--quiet", "-m", "First commit"]).await?;
    git(&seed, &["push", "--quiet", "origin", "HEAD:refs/heads/main"]).await?;
    let description = "Write a hello note for the team";
    let task_id = hub.submit_task(TaskSpec {
        description: description.into(),
        repo: Some(origin.display().to_string()),
        verification_steps: vec![serde_json::json!({"type": "file_exists", "target": "HELLO.md"})],
        ..TaskSpec::default()
    });
    say(&format!(
        "a task with a repository: {task_id} \"{description}\", repo {} (a bare repository \
         standing in for GitHub), one check: file_exists HELLO.md",
        origin.display()
    ));
    let done = completed(hub, &task_id).await?;
    let result = done.result.unwrap_or_default();
    let report = done.verification_report.unwrap_or_default();
    let branch = result["branch"].as_str().unwrap_or_default().to_owned();
    if report["status"] != "pass" || branch.is_empty() {
        return Err(format!(
            "task {task_id} was not delivered as a verified branch: report {report}, result {result}"
        ));
    }
    let log = git(&origin, &["log", "-1", "--format=%h %s", &branch]).await?;
    let files = git(&origin, &["ls-tree", "--name-only", &branch]).await?;
    say(&format!(
        "the sidecar cloned it into {}, the agent wrote HELLO.md there, the check passed \
         ({}), and the work was committed and pushed: branch {branch} in origin.git holds {} \
         (commit {})",
        crate::deliver::workspace::workspace_path(&dir.join("workspaces"), &origin.display().to_string())
            .display(),
        crate::exec::pipeline::summary_text(&report),
        files.split_whitespace().collect::<Vec<_>>().join(", "),
        log.trim()
    ));
    say(&format!(
        "with the GitHub CLI installed and logged in (`gh_command`), it would now run `gh pr create \
         --base main --head {branch} --title \"{description}\" --label agent:{AGENT_ID} --label \
         priority:normal`, ask the hub to classify the change (POST /api/tasks/{task_id}/classify) \
         and label the pull request with the hub's risk tier (risk:tier-N); here: {}",
        result["delivery"]["error"].as_str().unwrap_or("no pull request")
    ));
    Ok(())
}

/// The hub's routing decision for a task, in a few words.
fn routing(hub: &EmbeddedHub, task_id: &str) -> String {
    let Some(d) = hub.task(task_id).and_then(|t| t.routing_decision) else {
        return "no routing decision yet".to_owned();
    };
    let target = d["target_type"].as_str().unwrap_or("none");
    let tier = d["effective_tier"].as_str().unwrap_or("?");
    match (d["selected_endpoint"].as_str(), d["fallback_reason"].as_str()) {
        (Some(ep), _) => format!(
            "{tier} -> {target} {ep} ({})",
            d["selected_model"].as_str().unwrap_or("no model")
        ),
        (None, Some(why)) => format!("{tier} -> {target}, fallback: {why}"),
        (None, None) => format!("{tier} -> {target}"),
    }
}

/// Waits (10 s at most) for the hub to record the task as completed.
async fn completed(hub: &EmbeddedHub, task_id: &str) -> Result<crate::hub::TaskRecord, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match hub.task(task_id) {
            Some(t) if t.status == "completed" => return Ok(t),
            Some(t) if t.status == "dead_letter" => {
                return Err(format!(
                    "task {task_id} failed: {}",
                    t.last_error.unwrap_or_default()
                ))
            }
            _ if Instant::now() > deadline => {
                return Err(format!("task {task_id} did not complete within 10 s"))
            }
            _ => sleep(Duration::from_millis(50)).await,
        }
    }
}

fn is_pong(event: &HubEvent) -> bool {
    matches!(event, HubEvent::Sent { text, .. } if frame_type(text).as_deref() == Some("pong"))
}

fn frame_type(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    v.get("type")?.as_str().map(str::to_owned)
}

async fn wait_for(
    events: &mut broadcast::Receiver<HubEvent>,
    within: Duration,
    what: &str,
    mut pred: impl FnMut(&HubEvent) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        match timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) if pred(&event) => return Ok(()),
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) => return Err(format!("the hub stopped before {what}")),
            Err(_) => return Err(format!("no {what} within {} s", within.as_secs())),
        }
    }
}

/// Print what the hub sees, without ever printing a frame that carries the token. Never returns.
async fn narrate_hub(mut events: broadcast::Receiver<HubEvent>) -> std::convert::Infallible {
    loop {
        let line = match events.recv().await {
            Ok(HubEvent::Connected { conn, .. }) => format!("connection #{conn} opened"),
            Ok(HubEvent::Received { text, .. }) => match frame_type(&text) {
                Some(kind) => format!("received {kind}"),
                None => "received a frame that is not JSON".to_owned(),
            },
            Ok(HubEvent::Sent { text, .. }) => format!("sent {}", frame_type(&text).unwrap_or_default()),
            Ok(HubEvent::Closed {
                conn, code, by_hub, ..
            }) => format!(
                "connection #{conn} closed by the {} (code {})",
                if by_hub { "hub" } else { "sidecar" },
                code.map_or("none".to_owned(), |c| c.to_string())
            ),
            Ok(_) | Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => std::future::pending().await,
        };
        crate::outln!("{:<12} {line}", "hub");
    }
}

/// The sample agent the demo wakes: reads the task from `$AGENTCOM_TASK_FILE`, writes `.started`,
/// a progress file, then the result (to a temp file, renamed into place), as a real agent should.
pub fn sample_agent() -> ExitCode {
    let var = |name: &str| {
        std::env::var(name).map_err(|_| format!("{name} is not set: run me from a wake_command"))
    };
    let run = || -> Result<(), String> {
        let task: Value = serde_json::from_str(
            &std::fs::read_to_string(var("AGENTCOM_TASK_FILE")?)
                .map_err(|e| format!("cannot read the task file: {e}"))?,
        )
        .map_err(|e| format!("the task file is not JSON: {e}"))?;
        let description = task["description"].as_str().unwrap_or_default();
        let write = |path: String, text: String| -> Result<(), String> {
            let tmp = format!("{path}.tmp");
            std::fs::write(&tmp, text)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| format!("{path}: {e}"))
        };
        write(var("AGENTCOM_STARTED_FILE")?, String::new())?;
        // A task with a repository: the sidecar cloned it, and the agent works in it.
        if let Ok(workspace) = std::env::var("AGENTCOM_WORKSPACE") {
            let note = format!("# Hello\n\nHello, team! ({description})\n");
            std::fs::write(Path::new(&workspace).join("HELLO.md"), note)
                .map_err(|e| format!("cannot write in the workspace {workspace}: {e}"))?;
        }
        std::thread::sleep(Duration::from_millis(300));
        write(
            var("AGENTCOM_PROGRESS_FILE")?,
            r#"{"progress":50,"message":"thinking"}"#.to_owned(),
        )?;
        std::thread::sleep(Duration::from_millis(300));
        let result = serde_json::json!({"status": "success", "output": format!("Hello! (done: {description})"), "tokens_used": 0});
        write(var("AGENTCOM_RESULT_FILE")?, result.to_string())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::errln!("sample-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
