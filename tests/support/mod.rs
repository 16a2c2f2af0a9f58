//! Shared helpers for the integration tests: temp folders, config files, the real binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Wait for the first hub event that matches, up to `within` (real time).
pub async fn wait_hub<F>(
    events: &mut tokio::sync::broadcast::Receiver<agentcom_sidecar::hub::HubEvent>,
    within: Duration,
    what: &str,
    mut pred: F,
) -> agentcom_sidecar::hub::HubEvent
where
    F: FnMut(&agentcom_sidecar::hub::HubEvent) -> bool,
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
pub fn identified(agent: &str) -> impl Fn(&agentcom_sidecar::hub::HubEvent) -> bool + '_ {
    move |e| matches!(e, agentcom_sidecar::hub::HubEvent::Identified { agent_id, .. } if agent_id == agent)
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
