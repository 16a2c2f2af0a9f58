//! Shared helpers for the integration tests: temp folders, config files, the real binary.

#![allow(dead_code)]

pub mod deliver;
pub mod hub_client;

use agentcom_sidecar::hub::{EmbeddedHub, HubEvent, HubOptions, TaskRecord, TaskSpec};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A finished command's exit code, stdout and stderr, for an assertion's message.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Whether the suite runs under CI: the `CI` variable is set to something other than empty,
/// `0` or `false` (CI services set `CI=true`; `.ci/run` sets it too).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// For a test that cannot run where it is (no user namespaces, no bash, ...): under CI this
/// fails the test, since a check skipped there is a hole nobody sees; elsewhere it says so on
/// stderr, and the caller returns. `test` names the test, `why` what is missing here.
pub fn cannot_run_here(test: &str, why: &str) {
    assert!(
        !under_ci(),
        "{test} cannot run on this machine: {why}. CI is set, so this fails instead of skipping: \
         give the CI machine what the test needs (or unset CI to skip it locally)"
    );
    eprintln!("SKIPPED {test}: {why}");
}

/// A fresh, private folder under the system temp dir (from `tempfile`), removed on drop. `label`
/// starts its name, so a folder left by a killed test run says which test made it.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let prefix = format!("agentcom-sidecar-test-{label}-");
        TempDir(tempfile::Builder::new().prefix(&prefix).tempdir().unwrap())
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.path().join(name)
    }
}

/// Write `text` to `path` readable by its owner only.
pub fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// A config for `agent_id` at `hub_url` with fast timers, plus `extra` keys merged in.
pub fn config_json(agent_id: &str, token: &str, hub_url: &str, extra: serde_json::Value) -> String {
    let mut config = serde_json::json!({
        "agent_id": agent_id,
        "token": token,
        "hub_url": hub_url,
        "capabilities": ["code"],
        "heartbeat_interval_ms": 1000,
        "heartbeat_timeout_ms": 800,
        "reconnect_initial_ms": 100,
        "reconnect_max_ms": 1000,
        "reconnect_jitter": 0.5
    });
    if let serde_json::Value::Object(extra) = extra {
        for (k, v) in extra {
            config[k] = v;
        }
    }
    serde_json::to_string_pretty(&config).unwrap()
}

/// Variables of the caller's environment the binary would act on: proxies (it would send the
/// tests' loopback connections through them) and a supervisor's (a test must not look
/// supervised unless it says so). Every `AGENTCOM_*` variable goes too (see [`scrub_env`]).
pub const SCRUBBED_VARS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "INVOCATION_ID",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// Removes from `command`'s environment what the caller's shell could have set that would change
/// what the binary does: [`SCRUBBED_VARS`] and every `AGENTCOM_*` variable (`AGENTCOM_TOKEN`
/// would override the token of every test config). Variables set on `command` afterwards stay.
/// For a command that starts the binary indirectly (`unshare ... agentcom-sidecar`).
pub fn scrub_env(command: &mut Command) -> &mut Command {
    for name in SCRUBBED_VARS {
        command.env_remove(name);
    }
    for (name, _) in std::env::vars_os() {
        if name
            .to_string_lossy()
            .to_ascii_uppercase()
            .starts_with("AGENTCOM_")
        {
            command.env_remove(name);
        }
    }
    command
}

/// The real binary with a scrubbed environment ([`scrub_env`]): every test and bench that
/// spawns the binary starts it from here, so a proxy or token in the caller's shell changes nothing.
pub fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agentcom-sidecar"));
    scrub_env(&mut command);
    command
}

/// The real binary running `run --config PATH`, its output going to files in `dir`.
pub struct Sidecar {
    pub child: Child,
    pub dir: PathBuf,
}

impl Sidecar {
    pub fn spawn(dir: &Path, config: &Path) -> Sidecar {
        Sidecar::spawn_with_env(dir, config, &[])
    }

    pub fn spawn_with_env(dir: &Path, config: &Path, env: &[(&str, &str)]) -> Sidecar {
        // (scrubbed: a test must not look supervised or use a proxy unless it says so)
        let mut command = binary();
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout.txt")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr.txt")).unwrap())
            .spawn()
            .unwrap();
        Sidecar {
            child,
            dir: dir.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal by name ("TERM", "INT") with the system's `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGKILL, then wait (up to 5 s) until the process is gone: a crash at this very point.
    pub async fn kill_hard(&mut self) {
        self.signal("KILL");
        self.wait_exit(Duration::from_secs(5)).await.expect("killed");
    }

    /// Wait for the process to exit, polling until `within` has passed.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.child.try_wait().unwrap()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout.txt")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.txt")).unwrap_or_default()
    }

    /// The JSON-lines log, parsed.
    pub fn log_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("sidecar.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad log line {l:?}: {e}")))
            .collect()
    }

    /// Poll the log until `n` events named `name` are in it; returns the whole log.
    pub async fn wait_log_count(&self, name: &str, n: usize, within: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log_events();
            if log.iter().filter(|e| e["event"] == name).count() >= n || Instant::now() >= deadline {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Poll the log until an event named `name` appears.
    pub async fn wait_log_event(&self, name: &str, within: Duration) -> Option<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = self.log_events().into_iter().find(|e| e["event"] == name) {
                return Some(e);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How often the poll-with-deadline helpers look again.
const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it gives a value; once `within` has passed, fails the test saying
/// `what()` (built only then). The suite's one poll-with-deadline loop over real time.
pub async fn poll<T>(
    within: Duration,
    what: impl FnOnce() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("{}", what());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits (up to `within`) for `path` to exist.
pub async fn wait_file(path: &Path, within: Duration) {
    poll(
        within,
        || format!("{} did not appear", path.display()),
        || path.exists().then_some(()),
    )
    .await
}

/// Every frame the sidecar sent to `hub`, parsed, in order.
pub fn frames_from_sidecar(hub: &EmbeddedHub) -> Vec<serde_json::Value> {
    hub.history()
        .iter()
        .filter_map(|e| match e {
            HubEvent::Received { text, .. } => serde_json::from_str(text).ok(),
            _ => None,
        })
        .collect()
}

/// An embedded hub that knows `agent`'s token, and a fresh folder holding `config.json` for it
/// (fast timers, see [`config_json`]) and, where the test has one, the agent script `agent.sh`:
/// the set-up of every test that runs the real binary against a hub.
pub struct HubSetup {
    pub hub: EmbeddedHub,
    pub token: String,
    pub agent: String,
    pub dir: TempDir,
    /// `dir/config.json`.
    pub config: PathBuf,
    /// The hub's events since before the binary started: nothing is missed.
    pub events: tokio::sync::broadcast::Receiver<HubEvent>,
}

impl HubSetup {
    /// A new hub, and a config for `agent` at it with `extra` keys merged in.
    pub async fn start(agent: &str, extra: serde_json::Value) -> HubSetup {
        let hub = EmbeddedHub::start(HubOptions::default()).await.unwrap();
        HubSetup::with_hub(hub, None, agent, extra)
    }

    /// Like [`HubSetup::start`] on a hub the test made; `url`: connect there instead of the
    /// hub (a proxy in front of it).
    pub fn with_hub(hub: EmbeddedHub, url: Option<&str>, agent: &str, extra: serde_json::Value) -> HubSetup {
        let token = hub.add_token(agent);
        let events = hub.events();
        let dir = TempDir::new(agent);
        let url = url.map_or_else(|| hub.url(), str::to_owned);
        let config = dir.join("config.json");
        write_private(&config, &config_json(agent, &token, &url, extra));
        HubSetup {
            hub,
            token,
            agent: agent.to_owned(),
            dir,
            config,
            events,
        }
    }

    /// Writes `script` to `agent.sh` and sets `wake_command` to `wake`, in which `AGENT` stands
    /// for the script's path; then merges `extra` in (it may override even `wake_command`).
    pub fn with_agent(self, script: &str, wake: &str, extra: serde_json::Value) -> HubSetup {
        let path = self.dir.join("agent.sh");
        std::fs::write(&path, script).unwrap();
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&self.config).unwrap()).unwrap();
        config["wake_command"] = wake.replace("AGENT", &path.display().to_string()).into();
        if let serde_json::Value::Object(extra) = extra {
            for (k, v) in extra {
                config[k] = v;
            }
        }
        write_private(&self.config, &config.to_string());
        self
    }

    /// The real binary running on this config, its output in this folder.
    pub fn spawn(&self) -> Sidecar {
        Sidecar::spawn(self.dir.path(), &self.config)
    }

    /// Waits (up to 10 s) for the hub's next `Identified` event of this agent.
    pub async fn identified(&mut self) {
        let agent = self.agent.clone();
        wait_hub(
            &mut self.events,
            Duration::from_secs(10),
            "identified",
            identified(&agent),
        )
        .await;
    }

    /// The results folder (the default `results_dir`).
    pub fn results(&self) -> PathBuf {
        self.dir.join("results")
    }

    /// Lets an agent that holds (waits for `release` in this folder) finish.
    pub fn release(&self) {
        std::fs::write(self.dir.join("release"), "").unwrap();
    }

    /// Waits (up to 10 s) for the agent to confirm it started on `task_id` (its `.started` file
    /// in the default results folder).
    pub async fn wait_started(&self, task_id: &str) {
        wait_file(
            &self.results().join(format!("{task_id}.started")),
            Duration::from_secs(10),
        )
        .await
    }

    /// Submits a task with `description` to the hub, with the hub's default retries.
    pub fn submit(&self, description: &str) -> String {
        self.hub.submit_task(TaskSpec {
            description: description.into(),
            ..TaskSpec::default()
        })
    }

    /// Submits a task that the hub dead-letters after `max_retries` failures.
    pub fn submit_with_retries(&self, description: &str, max_retries: u32) -> String {
        self.hub.submit_task(TaskSpec {
            description: description.into(),
            max_retries,
            ..TaskSpec::default()
        })
    }

    /// Submits a task that the hub dead-letters at its first failure (`max_retries` 1).
    pub fn submit_once(&self, description: &str) -> String {
        self.submit_with_retries(description, 1)
    }

    /// How often the agent recorded a wake for `task_id` (a line with the id in `wakes`).
    pub fn wakes(&self, task_id: &str) -> usize {
        std::fs::read_to_string(self.dir.join("wakes"))
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == task_id)
            .count()
    }

    /// Waits until queue.json holds no task (`{"active": null, "recovering": null}`).
    pub async fn wait_queue_empty(&self, within: Duration) {
        let queue = self.dir.join("queue.json");
        let read = || std::fs::read_to_string(&queue).unwrap_or_default();
        let empty = serde_json::json!({"active": null, "recovering": null});
        poll(
            within,
            || format!("queue.json still holds {}", read()),
            || (serde_json::from_str::<serde_json::Value>(&read()).ok()? == empty).then_some(()),
        )
        .await
    }

    /// Every frame the sidecar sent, parsed, in order.
    pub fn frames_from_sidecar(&self) -> Vec<serde_json::Value> {
        frames_from_sidecar(&self.hub)
    }

    /// The frames of type `kind` the sidecar sent, in order.
    pub fn sent_of_type(&self, kind: &str) -> Vec<serde_json::Value> {
        self.frames_from_sidecar()
            .into_iter()
            .filter(|f| f["type"] == kind)
            .collect()
    }

    /// Waits (up to 10 s) until the sidecar has sent a frame of `kind` that `pred` accepts.
    pub async fn wait_sent(
        &self,
        kind: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        poll(
            Duration::from_secs(10),
            || format!("no matching {kind}: {:#?}", self.frames_from_sidecar()),
            || self.sent_of_type(kind).into_iter().find(|f| pred(f)),
        )
        .await
    }

    /// Waits until the hub holds task `task_id` in `status`; returns its record.
    pub async fn wait_status(&self, task_id: &str, status: &str, within: Duration) -> TaskRecord {
        poll(
            within,
            || {
                format!(
                    "task {task_id} not {status} within {within:?}: {:?}\nframes: {:#?}",
                    self.hub.task(task_id),
                    self.frames_from_sidecar()
                )
            },
            || self.hub.task(task_id).filter(|r| r.status == status),
        )
        .await
    }
}

/// Wait for the first hub event that matches, up to `within` (real time).
pub async fn wait_hub<F>(
    events: &mut tokio::sync::broadcast::Receiver<HubEvent>,
    within: Duration,
    what: &str,
    mut pred: F,
) -> HubEvent
where
    F: FnMut(&HubEvent) -> bool,
{
    use tokio::sync::broadcast::error::RecvError;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) if pred(&event) => return event,
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) => panic!("hub stopped while waiting for {what}"),
            Err(_) => panic!("no {what} within {within:?}"),
        }
    }
}

/// True for the hub's `Identified` event of `agent`.
pub fn identified(agent: &str) -> impl Fn(&HubEvent) -> bool + '_ {
    move |e| matches!(e, HubEvent::Identified { agent_id, .. } if agent_id == agent)
}

/// True for the hub's event of the sidecar closing its socket politely (code 1000, by the sidecar).
pub fn closed_by_sidecar(e: &HubEvent) -> bool {
    matches!(
        e,
        HubEvent::Closed {
            code: Some(1000),
            by_hub: false,
            ..
        }
    )
}

/// A TCP proxy that, once `black_hole` is set, swallows every byte of the connections it holds
/// (no FIN, no RST), as a NAT that dropped the mapping would. New connections pass normally.
pub async fn proxy(target: std::net::SocketAddr, black_hole: Arc<AtomicBool>) -> String {
    use tokio::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (client, _) = listener.accept().await.unwrap();
            let Ok(server) = TcpStream::connect(target).await else {
                continue;
            };
            let hole = black_hole.clone();
            black_hole.store(false, Ordering::SeqCst);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, hole.clone()));
            tokio::spawn(pump(sr, cw, hole));
        }
    });
    url
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    hole: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    let mut swallowing = false;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        swallowing |= hole.load(Ordering::SeqCst);
        if !swallowing && to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    if !swallowing {
        let _ = to.shutdown().await;
    } else {
        std::future::pending::<()>().await;
    }
}

// ---- a fake `claude` (the Claude Code CLI) for the executor tests ----

/// What the fake `claude` does when run.
#[derive(Debug, Clone)]
pub enum FakeClaudeScenario {
    /// Prints a `system` init event with `model`, an `assistant` message with `text`, and a
    /// `result` event with `usage` and `total_cost_usd`; exits 0.
    Success {
        model: String,
        text: String,
        tokens_in: u64,
        tokens_out: u64,
        cost_usd: f64,
    },
    /// Prints a `result` event with `is_error: true` and `text` as its `result`; exits 1.
    IsError(String),
    /// Prints `stderr` on stderr and exits with `code`.
    Exit { code: i32, stderr: String },
    /// Starts a background `sleep 300` (its PID in `child_pid`) and waits for it: never ends.
    Hang,
}

/// A fake `claude`: a sh script in a temp folder that records each run (its argv, one numbered
/// file per argument so newlines and quotes survive; its folder; its PID) and then does what the
/// scenario file next to it says. Unix only.
pub struct FakeClaude(FakeProgram);

impl std::ops::Deref for FakeClaude {
    type Target = FakeProgram;
    fn deref(&self) -> &FakeProgram {
        &self.0
    }
}

impl FakeClaude {
    /// Writes the script (scenario: a plain success).
    pub fn new(label: &str) -> FakeClaude {
        let rest = r#"[ -f "$d/stdout" ] && cat "$d/stdout"
[ -f "$d/stderr" ] && cat "$d/stderr" >&2
exit $(cat "$d/exit" 2>/dev/null || echo 0)
"#;
        let program = FakeProgram::new(label, "claude", "", r#"echo $$ > "$d/pid""#, rest);
        let fake = FakeClaude(program);
        fake.set(FakeClaudeScenario::Success {
            model: "claude-sonnet-4-5-20250929".into(),
            text: "Done.".into(),
            tokens_in: 10,
            tokens_out: 20,
            cost_usd: 0.01,
        });
        fake
    }

    /// Chooses what the next runs do.
    pub fn set(&self, scenario: FakeClaudeScenario) {
        for f in ["stdout", "stderr", "exit", "hang"] {
            let _ = std::fs::remove_file(self.dir.join(f));
        }
        let write = |name: &str, text: &str| std::fs::write(self.dir.join(name), text).unwrap();
        match scenario {
            FakeClaudeScenario::Success {
                model,
                text,
                tokens_in,
                tokens_out,
                cost_usd,
            } => {
                let lines = [
                    serde_json::json!({"type": "system", "subtype": "init", "model": model,
                        "session_id": "s1", "tools": []}),
                    serde_json::json!({"type": "assistant", "message": {"model": model, "role": "assistant",
                        "content": [{"type": "text", "text": text}]}}),
                    serde_json::json!({"type": "result", "subtype": "success", "is_error": false,
                        "result": text, "total_cost_usd": cost_usd, "num_turns": 1,
                        "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out}}),
                ];
                let out: String = lines.iter().map(|l| format!("{l}\n")).collect();
                write("stdout", &out);
            }
            FakeClaudeScenario::IsError(text) => {
                let line = serde_json::json!({"type": "result", "subtype": "success", "is_error": true,
                    "result": text, "usage": {"input_tokens": 1, "output_tokens": 0}});
                write("stdout", &format!("{line}\n"));
                write("exit", "1");
            }
            FakeClaudeScenario::Exit { code, stderr } => {
                write("stderr", &stderr);
                write("exit", &code.to_string());
            }
            FakeClaudeScenario::Hang => write("hang", ""),
        }
    }

    /// The PID of the last run.
    pub fn pid(&self) -> Option<u32> {
        read_pid(&self.dir.join("pid"))
    }
}

/// A PID written to `path` (`None` until it is there).
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether process `pid` is gone (or a zombie: it ended, its parent has not reaped it yet).
pub fn process_gone(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        !Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

// ---- git delivery: a bare origin, a fake gh ----

/// Runs `git args…` in `dir` (the test's own commands), panicking with git's stderr on failure;
/// returns stdout.
pub fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap_or_else(|e| panic!("cannot run git {args:?}: {e}"));
    assert!(
        out.status.success(),
        "git {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A bare repository in a temp folder, seeded with one commit (`README.md`) on `main` (its
/// HEAD), standing in for `origin`; clones of it go in the same temp folder.
pub struct GitOrigin {
    dir: TempDir,
    /// The bare repository (a path is a valid clone URL).
    pub bare: PathBuf,
}

impl GitOrigin {
    /// Makes and seeds the bare repository.
    pub fn new(label: &str) -> GitOrigin {
        let dir = TempDir::new(label);
        let bare = dir.join("origin.git");
        git_in(
            dir.path(),
            &["init", "--quiet", "--bare", "--initial-branch=main", "origin.git"],
        );
        let seed = dir.join("seed");
        git_in(dir.path(), &["clone", "--quiet", "origin.git", "seed"]);
        std::fs::write(seed.join("README.md"), "seed\n").unwrap();
        Self::commit_all(&seed, "Seed");
        git_in(&seed, &["push", "--quiet", "origin", "HEAD:refs/heads/main"]);
        GitOrigin { dir, bare }
    }

    /// The URL to clone (the bare repository's path).
    pub fn url(&self) -> String {
        self.bare.display().to_string()
    }

    /// The temp folder holding the bare repository and the clones.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh clone named `name` beside the bare repository, with a commit identity of its own.
    pub fn clone_as(&self, name: &str) -> PathBuf {
        git_in(self.dir.path(), &["clone", "--quiet", "origin.git", name]);
        let clone = self.dir.join(name);
        git_in(&clone, &["config", "user.name", "Test"]);
        git_in(&clone, &["config", "user.email", "test@example.invalid"]);
        clone
    }

    /// `git add -A` and a commit with `message` in `repo`.
    pub fn commit_all(repo: &Path, message: &str) {
        git_in(repo, &["add", "-A"]);
        git_in(
            repo,
            &[
                "-c",
                "user.name=Test",
                "-c",
                "user.email=test@example.invalid",
                "commit",
                "--quiet",
                "-m",
                message,
            ],
        );
    }

    /// Adds `file` with `text` to origin's `branch` through a scratch clone (someone else's push).
    pub fn push_file(&self, branch: &str, file: &str, text: &str) {
        let name = format!("scratch-{}", fastrand::u32(..));
        let scratch = self.clone_as(&name);
        git_in(&scratch, &["checkout", "--quiet", "-B", branch]);
        std::fs::write(scratch.join(file), text).unwrap();
        Self::commit_all(&scratch, &format!("Add {file}"));
        git_in(
            &scratch,
            &["push", "--quiet", "origin", &format!("HEAD:refs/heads/{branch}")],
        );
        std::fs::remove_dir_all(scratch).unwrap();
    }

    /// `git args…` run on the bare repository.
    pub fn git(&self, args: &[&str]) -> String {
        git_in(&self.bare, args)
    }

    /// Whether origin has `refs/heads/<branch>`.
    pub fn has_branch(&self, branch: &str) -> bool {
        Command::new("git")
            .args([
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{branch}"),
            ])
            .current_dir(&self.bare)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
    }
}

/// What the next runs of a [`FakeGh`] do.
pub enum FakeGhScenario {
    /// `pr create` prints the URL; `pr view` prints it too.
    Success,
    /// `pr create` says a pull request for the branch already exists (without its URL) and
    /// exits 1; `pr view` prints the URL.
    AlreadyExists,
    /// Prints `stderr` on stderr and exits with `code`.
    Exit { code: i32, stderr: String },
    /// Starts a background `sleep 300` (its PID in `child_pid`) and waits for it: never ends.
    Hang,
    /// Labels exist only once `gh label create` made them: a `--label=`/`--add-label=` naming
    /// another fails as gh does ("could not add label: 'x' not found").
    LabelsMissing,
    /// As [`FakeGhScenario::LabelsMissing`], and `gh label create` is refused (HTTP 403).
    LabelsDenied,
}

/// A fake `gh`: a sh script in a temp folder that records each run (one numbered file per
/// argument, so quotes and newlines survive; a copy of the `--body-file`; its folder; the
/// `GH_PROMPT_DISABLED` it saw) and prints `https://github.com/example/repo/pull/1` for
/// `pr create`; `pr edit` and `label create` succeed (the labels made are listed). Unix only.
pub struct FakeGh(FakeProgram);

impl std::ops::Deref for FakeGh {
    type Target = FakeProgram;
    fn deref(&self) -> &FakeProgram {
        &self.0
    }
}

impl FakeGh {
    /// The URL the fake prints.
    pub const URL: &'static str = "https://github.com/example/repo/pull/1";

    /// Writes the script (scenario: success).
    pub fn new(label: &str) -> FakeGh {
        let per_arg = r#"  case "$a" in --body-file=*) cat -- "${a#--body-file=}" > "$d/call.$n/body" ;; esac
  [ "$prev" = "--body-file" ] && cat -- "$a" > "$d/call.$n/body"
"#;
        let after_args = r#"printf '%s' "$GH_PROMPT_DISABLED" > "$d/call.$n/gh_prompt_disabled""#;
        let rest = format!(
            r#"if [ "$1" = "label" ] && [ "$2" = "create" ]; then
  if [ -f "$d/labels_denied" ]; then
    echo "HTTP 403: Resource not accessible by integration" >&2
    exit 1
  fi
  echo "$3" >> "$d/labels"
  exit 0
fi
if [ -f "$d/labels_missing" ]; then
  for a in "$@"; do
    case "$a" in
      --label=*|--add-label=*)
        l="${{a#*=}}"
        grep -qxF -- "$l" "$d/labels" 2>/dev/null || {{ echo "could not add label: '$l' not found" >&2; exit 1; }}
        ;;
    esac
  done
fi
if [ "$1" = "pr" ] && [ "$2" = "edit" ]; then
  exit 0
fi
if [ "$1" = "pr" ] && [ "$2" = "view" ]; then
  echo "{url}"
  exit 0
fi
if [ -f "$d/exists" ]; then
  echo "a pull request for branch \"$6\" into branch \"$4\" already exists:" >&2
  exit 1
fi
if [ -f "$d/exit" ]; then
  cat "$d/stderr" >&2
  exit $(cat "$d/exit")
fi
echo "Creating pull request for $6 into $4"
echo
echo "{url}"
"#,
            url = Self::URL
        );
        FakeGh(FakeProgram::new(label, "gh", per_arg, after_args, &rest))
    }

    /// Chooses what the next runs do.
    pub fn set(&self, scenario: FakeGhScenario) {
        for f in [
            "exists",
            "exit",
            "stderr",
            "hang",
            "labels_missing",
            "labels_denied",
        ] {
            let _ = std::fs::remove_file(self.dir.join(f));
        }
        match scenario {
            FakeGhScenario::Success => {}
            FakeGhScenario::AlreadyExists => std::fs::write(self.dir.join("exists"), "").unwrap(),
            FakeGhScenario::Exit { code, stderr } => {
                std::fs::write(self.dir.join("stderr"), stderr).unwrap();
                std::fs::write(self.dir.join("exit"), code.to_string()).unwrap();
            }
            FakeGhScenario::Hang => std::fs::write(self.dir.join("hang"), "").unwrap(),
            FakeGhScenario::LabelsMissing => std::fs::write(self.dir.join("labels_missing"), "").unwrap(),
            FakeGhScenario::LabelsDenied => {
                std::fs::write(self.dir.join("labels_missing"), "").unwrap();
                std::fs::write(self.dir.join("labels_denied"), "").unwrap();
            }
        }
    }

    /// The labels `gh label create` made, in order.
    pub fn created_labels(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("labels"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The runs (1-based) whose first two arguments are `pr` and `sub` (`create`, `edit`, ...).
    pub fn pr_runs(&self, sub: &str) -> Vec<usize> {
        (1..=self.calls())
            .filter(|&n| self.args(n).get(..2) == Some(&["pr".to_owned(), sub.to_owned()][..]))
            .collect()
    }

    /// The body file run `call` was given, as it read it.
    pub fn body(&self, call: usize) -> Option<String> {
        std::fs::read_to_string(self.dir.join(format!("call.{call}/body"))).ok()
    }

    /// `GH_PROMPT_DISABLED` as run `call` saw it.
    pub fn prompt_disabled(&self, call: usize) -> Option<String> {
        std::fs::read_to_string(self.dir.join(format!("call.{call}/gh_prompt_disabled"))).ok()
    }
}

/// A fake program for the executor and delivery tests: a sh script in a temp folder that records
/// each run in `call.N/` (one file per argument, so quotes and newlines survive; the folder it ran
/// in), and can be told to hang (a background `sleep 300`, its PID in `child_pid`, waited for).
/// [`FakeClaude`] and [`FakeGh`] are two of them. Unix only.
pub struct FakeProgram {
    dir: TempDir,
    path: PathBuf,
}

impl FakeProgram {
    /// Writes the script `name` in a new folder: it records the run (`per_arg` runs for each
    /// argument `$a`, after it is recorded; `after_args` once they all are), hangs when told to,
    /// then runs `rest`. The scripts see their folder as `$d` and the run's number as `$n`.
    fn new(label: &str, name: &str, per_arg: &str, after_args: &str, rest: &str) -> FakeProgram {
        let dir = TempDir::new(label);
        let quoted = format!("'{}'", dir.path().display().to_string().replace('\'', "'\\''"));
        let script = format!(
            r#"#!/bin/sh
d={quoted}
n=$(( $(cat "$d/calls" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$d/calls"
mkdir -p "$d/call.$n"
i=0
prev=
for a in "$@"; do
  printf '%s' "$a" > "$d/call.$n/arg.$i"
{per_arg}  prev=$a
  i=$((i + 1))
done
pwd > "$d/call.$n/cwd"
{after_args}
if [ -f "$d/hang" ]; then
  sleep 300 &
  echo $! > "$d/child_pid.tmp" && mv "$d/child_pid.tmp" "$d/child_pid"
  wait
fi
{rest}"#
        );
        let path = dir.join(name);
        std::fs::write(&path, script).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        FakeProgram { dir, path }
    }

    /// The script's path, for `claude_command` or `gh_command`.
    pub fn command(&self) -> String {
        self.path.display().to_string()
    }

    /// The fake's folder (a place for canary files too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// How many times the fake ran.
    pub fn calls(&self) -> usize {
        std::fs::read_to_string(self.dir.join("calls"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The arguments of run `call` (1-based), byte for byte.
    pub fn args(&self, call: usize) -> Vec<String> {
        let folder = self.dir.join(format!("call.{call}"));
        (0..)
            .map(|i| folder.join(format!("arg.{i}")))
            .take_while(|p| p.exists())
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    /// The folder run `call` ran in.
    pub fn cwd(&self, call: usize) -> Option<PathBuf> {
        let text = std::fs::read_to_string(self.dir.join(format!("call.{call}/cwd"))).ok()?;
        Some(PathBuf::from(text.trim_end_matches('\n')))
    }

    /// The PID of the background child a hanging run started.
    pub fn child_pid(&self) -> Option<u32> {
        read_pid(&self.dir.join("child_pid"))
    }
}

/// A hub whose LLM registry holds a healthy fake Ollama, and the binary connected to it.
pub async fn with_ollama(
    agent: &str,
    extra: serde_json::Value,
) -> (HubSetup, agentcom_sidecar::exec::fake_ollama::FakeOllama, Sidecar) {
    use agentcom_sidecar::exec::fake_ollama::FakeOllama;
    let fake = FakeOllama::start().await.unwrap();
    let mut w = HubSetup::start(agent, extra).await;
    register_ollama(&w, &fake).await;
    let sidecar = w.spawn();
    w.identified().await;
    (w, fake, sidecar)
}

/// Registers `fake` in the hub's LLM registry and probes it: it is healthy, and standard tasks
/// are routed to it.
pub async fn register_ollama(w: &HubSetup, fake: &agentcom_sidecar::exec::fake_ollama::FakeOllama) {
    let port = fake
        .host_port()
        .rsplit_once(':')
        .unwrap()
        .1
        .parse::<u16>()
        .unwrap();
    w.hub
        .register_llm_endpoint(&serde_json::json!({"host": "127.0.0.1", "port": port}))
        .unwrap();
    w.hub.probe_llm_now().await;
}
