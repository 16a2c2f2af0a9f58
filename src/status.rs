//! The daemon's state file and the `status` command.
//!
//! `run` keeps `agentcom-sidecar.state.json` (beside queue.json) up to date, written atomically
//! (temp file + rename) whenever what it says changes. `status` reads it, and asks the instance
//! lock whether the daemon is alive, so it works whether the daemon runs or not and says which.

use crate::event_log::{iso8601, parse_iso8601};
use crate::lock::InstanceLock;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The state file's name, in the state folder.
pub const STATE_FILE: &str = "agentcom-sidecar.state.json";

/// One held task, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    /// The hub's id.
    pub task_id: String,
    /// accepted, waking, waking_confirmation, working, done, or `executing (ollama)` (`claude`,
    /// `sidecar`) for a task the sidecar carries out itself.
    pub status: String,
    /// The generation the hub last gave.
    pub generation: i64,
}

/// What the daemon last wrote about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonState {
    /// The daemon's process id.
    pub pid: u32,
    /// The sidecar's version.
    pub version: String,
    /// The agent.
    pub agent_id: String,
    /// The hub.
    pub hub_url: String,
    /// When the daemon started (ISO 8601).
    pub started_at: String,
    /// When this was written (ISO 8601).
    pub updated_at: String,
    /// starting, connecting, identifying, identified, waiting, stopped.
    pub connection: String,
    /// The connection attempt since the last `identified` (1 = the first).
    pub reconnect_attempt: u32,
    /// When the next connection attempt is due, while waiting (ISO 8601).
    pub next_attempt_at: Option<String>,
    /// The last frame received from the hub (ISO 8601).
    pub last_hub_contact: Option<String>,
    /// Held tasks, current first.
    pub tasks: Vec<TaskState>,
    /// Outcomes waiting for the hub's acknowledgement.
    pub outbox_depth: usize,
}

/// Keeps the state file current.
#[derive(Debug)]
pub struct StatusBoard {
    path: PathBuf,
    state: DaemonState,
    written: Option<DaemonState>,
    last_write: Option<SystemTime>,
}

impl StatusBoard {
    /// A board writing to `dir/agentcom-sidecar.state.json`.
    pub fn new(dir: &Path, agent_id: &str, hub_url: &str) -> StatusBoard {
        let now = iso8601(SystemTime::now());
        StatusBoard {
            path: dir.join(STATE_FILE),
            state: DaemonState {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                agent_id: agent_id.to_owned(),
                hub_url: hub_url.to_owned(),
                started_at: now.clone(),
                updated_at: now,
                connection: "starting".into(),
                reconnect_attempt: 1,
                next_attempt_at: None,
                last_hub_contact: None,
                tasks: vec![],
                outbox_depth: 0,
            },
            written: None,
            last_write: None,
        }
    }

    /// A frame arrived from the hub now.
    pub fn hub_contact(&mut self) {
        self.state.last_hub_contact = Some(iso8601(SystemTime::now()));
    }

    /// Record the link's and the tasks' state; writes the file when something other than the
    /// time of the last hub contact changed, or when that is more than 10 s old on disk.
    pub fn update(
        &mut self,
        link: (&'static str, u32, Option<std::time::Instant>),
        tasks: Vec<(String, &'static str, i64)>,
        outbox_depth: usize,
    ) {
        let (connection, attempt, next) = link;
        self.state.connection = connection.to_owned();
        self.state.reconnect_attempt = attempt;
        self.state.next_attempt_at = next.map(|at| {
            let wait = at.saturating_duration_since(std::time::Instant::now());
            iso8601(SystemTime::now() + wait)
        });
        self.state.tasks = tasks
            .into_iter()
            .map(|(task_id, status, generation)| TaskState {
                task_id,
                status: status.to_owned(),
                generation,
            })
            .collect();
        self.state.outbox_depth = outbox_depth;
        let changed = match &self.written {
            None => true,
            Some(w) => {
                let mut a = w.clone();
                a.updated_at.clear();
                a.last_hub_contact = None;
                a.next_attempt_at = None;
                let mut b = self.state.clone();
                b.updated_at.clear();
                b.last_hub_contact = None;
                b.next_attempt_at = None;
                a != b
                    || (w.last_hub_contact != self.state.last_hub_contact
                        && self.stale(Duration::from_secs(10)))
            }
        };
        if changed {
            self.write();
        }
    }

    fn stale(&self, age: Duration) -> bool {
        self.last_write
            .is_none_or(|t| t.elapsed().unwrap_or_default() >= age)
    }

    fn write(&mut self) {
        self.state.updated_at = iso8601(SystemTime::now());
        let tmp = self
            .path
            .with_extension(format!("json.tmp-{}", std::process::id()));
        let text = serde_json::to_string_pretty(&self.state).expect("state serializes") + "\n";
        if crate::files::write(&tmp, text.as_bytes())
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .is_ok()
        {
            self.written = Some(self.state.clone());
            self.last_write = Some(SystemTime::now());
        } else {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

/// What `status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// Is the daemon's process alive (it holds the instance lock)?
    pub running: bool,
    /// `identified` while the daemon is connected and identified; `stopped` when it is not running.
    pub connection: String,
    /// The PID holding the lock, when running.
    pub pid: Option<u32>,
    /// How long the daemon has been up, in seconds, when running.
    pub uptime_secs: Option<u64>,
    /// The state file's path.
    pub state_file: String,
    /// What the daemon last wrote, if anything.
    pub last_state: Option<DaemonState>,
}

/// Build the report for the state folder `dir`.
pub fn report(dir: &Path) -> StatusReport {
    let path = dir.join(STATE_FILE);
    let last_state: Option<DaemonState> = crate::files::open_read(&path)
        .and_then(|f| std::io::read_to_string(std::io::Read::take(f, 1 << 20)))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let holder = InstanceLock::holder(dir);
    let running = holder.is_some();
    let connection = match (&last_state, running) {
        (Some(s), true) => s.connection.clone(),
        (None, true) => "starting".to_owned(),
        (_, false) => "stopped".to_owned(),
    };
    let uptime_secs = last_state.as_ref().filter(|_| running).and_then(|s| {
        let started = parse_iso8601(&s.started_at)?;
        SystemTime::now()
            .duration_since(started)
            .ok()
            .map(|d| d.as_secs())
    });
    StatusReport {
        running,
        connection,
        pid: holder.flatten(),
        uptime_secs,
        state_file: path.display().to_string(),
        last_state,
    }
}

/// The report as a person reads it.
pub fn render(r: &StatusReport) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<18} {v}\n"));
    match (r.running, r.pid) {
        (true, Some(pid)) => line(&mut out, "daemon", format!("running (PID {pid})")),
        (true, None) => line(&mut out, "daemon", "running".into()),
        (false, _) => line(&mut out, "daemon", "not running".into()),
    }
    line(&mut out, "connection", r.connection.clone());
    if let Some(s) = &r.last_state {
        line(&mut out, "agent", format!("{} at {}", s.agent_id, s.hub_url));
        line(&mut out, "version", s.version.clone());
        if let Some(up) = r.uptime_secs {
            line(
                &mut out,
                "uptime",
                format!("{}h {:02}m {:02}s", up / 3600, up / 60 % 60, up % 60),
            );
        }
        if r.running && s.connection == "waiting" {
            let next = s.next_attempt_at.clone().unwrap_or_default();
            line(
                &mut out,
                "reconnect",
                format!("attempt {} at {next}", s.reconnect_attempt),
            );
        }
        line(
            &mut out,
            "last hub contact",
            s.last_hub_contact.clone().unwrap_or_else(|| "never".into()),
        );
        match s.tasks.first() {
            Some(t) => line(
                &mut out,
                "current task",
                format!("{} ({}, generation {})", t.task_id, t.status, t.generation),
            ),
            None => line(&mut out, "current task", "none".into()),
        }
        if s.tasks.len() > 1 {
            line(&mut out, "held tasks", s.tasks.len().to_string());
        }
        line(
            &mut out,
            "outbox",
            format!("{} outcome(s) awaiting the hub's ack", s.outbox_depth),
        );
        if !r.running {
            line(&mut out, "last written", s.updated_at.clone());
        }
    } else {
        line(
            &mut out,
            "state file",
            format!("{} (not written yet: has `run` been started here?)", r.state_file),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_writes_on_change_and_status_reads_it() {
        let dir = std::env::temp_dir().join(format!("agentcom-status-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut board = StatusBoard::new(&dir, "a1", "ws://127.0.0.1:4000/ws");
        board.update(("identified", 1, None), vec![("t1".into(), "working", 3)], 0);
        let r = report(&dir);
        assert!(!r.running, "no lock held");
        assert_eq!(r.connection, "stopped");
        let s = r.last_state.unwrap();
        assert_eq!(s.connection, "identified");
        assert_eq!(
            s.tasks,
            vec![TaskState {
                task_id: "t1".into(),
                status: "working".into(),
                generation: 3
            }]
        );
        let _lock = InstanceLock::acquire(&dir).unwrap();
        let r = report(&dir);
        assert!(r.running);
        assert_eq!(r.connection, "identified");
        assert_eq!(r.pid, Some(std::process::id()));
        let text = render(&r);
        assert!(
            text.contains("current task       t1 (working, generation 3)"),
            "{text}"
        );
    }
}
