//! The sidecar's child processes: how one starts (without the token), its process group, and
//! how a task's agent is found and stopped.
//!
//! - [`child_command`] is the one way a child starts: without the token and the service
//!   manager's variables ([`SCRUBBED_ENV`]);
//! - [`stop_agent`] stops a task's agent by process group (which outlives the wake shell while
//!   any member lives), on Linux also the processes that left the group: the sidecar is a child
//!   subreaper ([`become_subreaper`]), so they become its children, and [`reap_adopted`] reaps
//!   them. A group recorded in queue.json is trusted after a restart only while its leader's
//!   start time proves it is the same ([`recorded_group_is_ours`]).

#[cfg(target_os = "linux")]
use super::procfs;
use std::sync::Mutex;
use std::time::Duration;

/// How long a process group being killed gets between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

pub use crate::relay::task::AgentGroup;

/// Environment variables no child of the sidecar inherits: the hub token, and the service
/// manager's handles meant for the sidecar alone (systemd's notify socket, its watchdog, and
/// socket activation's `LISTEN_*`; every other `LISTEN_` name is removed too).
pub const SCRUBBED_ENV: [&str; 7] = [
    crate::config::TOKEN_ENV,
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// Whether `name` is one of [`SCRUBBED_ENV`] or starts with `LISTEN_`.
pub fn is_scrubbed(name: &str) -> bool {
    SCRUBBED_ENV.contains(&name) || name.starts_with("LISTEN_")
}

/// The one way the sidecar starts a child process (wake commands, cancel commands, `taskkill`):
/// `program` with the sidecar's environment minus [`SCRUBBED_ENV`], so the token and the
/// service manager's sockets never reach an agent.
pub fn child_command(program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    for name in SCRUBBED_ENV {
        cmd.env_remove(name);
    }
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_scrubbed) {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Kill a process group started by [`spawn_wake`] (SIGTERM, then SIGKILL after `grace`); no
/// error if it is gone. Returns once the group is gone or SIGKILL was sent. A `pgid` of 0 or 1
/// is ignored (it would mean our own group or every process). Windows: `TerminateJobObject` on
/// its job, else (no job) `taskkill /T /F /PID`.
///
/// [`spawn_wake`]: super::wake::spawn_wake
pub async fn kill_process_group(pgid: u32, grace: Duration) {
    #[cfg(unix)]
    {
        let Ok(pg) = i32::try_from(pgid) else { return };
        if pg <= 1 {
            return;
        }
        // SAFETY: kill(2) with a negative pid signals the group; no memory is involved.
        let signal = |sig: i32| unsafe { libc::kill(-pg, sig) } == 0;
        if !signal(libc::SIGTERM) {
            return;
        }
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if !signal(0) {
                return;
            }
        }
        signal(libc::SIGKILL);
    }
    #[cfg(windows)]
    {
        let _ = grace;
        if super::job::terminate(pgid) {
            return;
        }
        let _ = child_command("taskkill")
            .args(["/T", "/F", "/PID", &pgid.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .creation_flags(0x0800_0000)
            .status()
            .await;
    }
}

// ---- process groups, adopted orphans and zombies ----

/// The PIDs of the commands [`spawn_wake`] started and tokio still waits for: the reaper leaves
/// them to tokio.
///
/// [`spawn_wake`]: super::wake::spawn_wake
static SPAWNED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Add (`add`) or remove a PID [`spawn_wake`] started and tokio waits for.
///
/// [`spawn_wake`]: super::wake::spawn_wake
pub(crate) fn spawned(pid: u32, add: bool) {
    let mut list = SPAWNED.lock().unwrap_or_else(|e| e.into_inner());
    if add {
        list.push(pid);
    } else {
        list.retain(|p| *p != pid);
    }
}

/// Process groups of commands that are not an agent (cancel commands): [`stop_agent`] leaves
/// their processes alone even though their environment names the task. The last 64 are kept.
static EXEMPT: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Say that the group `pgid` (a cancel command's) is not part of any agent, so that stopping the
/// task's agent does not stop what the cancel command started.
pub fn exempt_group(pgid: u32) {
    let mut list = EXEMPT.lock().unwrap_or_else(|e| e.into_inner());
    if list.len() >= 64 {
        list.remove(0);
    }
    list.push(pgid);
}

fn is_exempt(pgid: u32) -> bool {
    EXEMPT.lock().unwrap_or_else(|e| e.into_inner()).contains(&pgid)
}

fn is_spawned(pid: u32) -> bool {
    SPAWNED.lock().unwrap_or_else(|e| e.into_inner()).contains(&pid)
}

/// The group `pgid` with its leader's identity (Linux: start time and boot id; elsewhere none).
/// Call it right after the spawn, while the leader is alive or still an unreaped zombie.
pub fn group_identity(pgid: u32) -> AgentGroup {
    #[cfg(target_os = "linux")]
    {
        AgentGroup {
            pgid,
            start_ticks: procfs::stat(pgid as i32).map(|s| s.start),
            boot_id: procfs::boot_id(),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        AgentGroup {
            pgid,
            start_ticks: None,
            boot_id: None,
        }
    }
}

/// SIGKILL process group `pgid` at once, no grace: for what a crashed sidecar's execution left
/// running (the task is run again from the start). Nothing for a `pgid` of 0 or 1, nor off Unix
/// (where a recorded group is never trusted, see [`recorded_group_is_ours`]).
pub fn kill_group_now(pgid: u32) {
    #[cfg(unix)]
    if let Ok(pg) = i32::try_from(pgid) {
        if pg > 1 {
            // SAFETY: kill(2) with a negative pid signals the group; no memory is involved.
            unsafe { libc::kill(-pg, libc::SIGKILL) };
        }
    }
    #[cfg(not(unix))]
    let _ = pgid;
}

/// Whether the group still has a process (a zombie its parent has not reaped counts: call
/// [`reap_adopted`] first). Windows: whether a process of its job (see `job`) still runs.
pub fn group_alive(pgid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pg) = i32::try_from(pgid) else { return false };
        // SAFETY: kill(2) with signal 0 only checks; a negative pid names the group.
        pg > 1 && unsafe { libc::kill(-pg, 0) } == 0
    }
    #[cfg(windows)]
    {
        super::job::alive(pgid).unwrap_or(false)
    }
}

/// Whether a group recorded in an earlier run (queue.json) is still that group: alive, on the
/// same boot, and its leader either the recorded process (same start time) or gone with every
/// member started after it (a reused PID cannot lead a group while any old member lives).
/// Only Linux can tell; elsewhere (and without a start time) a recorded group is never trusted.
pub fn recorded_group_is_ours(g: &AgentGroup) -> bool {
    #[cfg(target_os = "linux")]
    {
        let Some(start) = g.start_ticks else { return false };
        if g.boot_id.is_some() && g.boot_id != procfs::boot_id() {
            return false;
        }
        if !group_alive(g.pgid) {
            return false;
        }
        match procfs::stat(g.pgid as i32) {
            Some(leader) => leader.start == start,
            None => {
                let members: Vec<procfs::Stat> = procfs::all()
                    .into_iter()
                    .filter(|s| s.pgrp == g.pgid as i32)
                    .collect();
                !members.is_empty() && members.iter().all(|m| m.start >= start)
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = g;
        false
    }
}

/// The leader of `g` is not the recorded process any more (Linux, with a start time): its PID
/// was reused, so the group is not ours to signal.
fn leader_replaced(g: &AgentGroup) -> bool {
    #[cfg(target_os = "linux")]
    {
        match (g.start_ticks, procfs::stat(g.pgid as i32)) {
            (Some(start), Some(leader)) => leader.start != start,
            _ => false,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = g;
        false
    }
}

/// Linux: make this process a child subreaper (`prctl(PR_SET_CHILD_SUBREAPER)`), so that an
/// agent whose wake shell exited, or that left its process group, becomes the sidecar's child
/// rather than init's, and can still be found and stopped. Returns whether it took effect
/// (always false elsewhere).
pub fn become_subreaper() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag; no memory is involved.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// A process the sidecar adopted (Linux, as a subreaper): its PID, its process group and the
/// task its environment names (`AGENTCOM_TASK_ID`), when readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    /// The process.
    pub pid: u32,
    /// Its process group.
    pub pgrp: u32,
    /// `AGENTCOM_TASK_ID` from its environment.
    pub task_id: Option<String>,
}

/// Reap every child that has exited and that no [`WakeHandle`] waits for (orphans the sidecar
/// adopted as a subreaper), so none stays a zombie; returns the adopted children still alive.
/// Never touches the children tokio waits for. Empty outside Linux.
///
/// [`WakeHandle`]: super::wake::WakeHandle
pub fn reap_adopted() -> Vec<Adopted> {
    #[cfg(target_os = "linux")]
    {
        let mut alive = Vec::new();
        // SAFETY: getpgrp has no arguments and cannot fail.
        let own_group = unsafe { libc::getpgrp() };
        for pid in procfs::children() {
            if is_spawned(pid as u32) {
                continue;
            }
            // A child in our own process group is one we started without a group of its own
            // (not an agent's orphan: those live in the agent's group or a session of their own);
            // whoever started it waits for it.
            if procfs::stat(pid).is_some_and(|st| st.pgrp == own_group) {
                continue;
            }
            let mut status = 0;
            // SAFETY: waitpid on one specific child, without blocking; `status` is a local.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                continue; // reaped
            }
            if let Some(st) = procfs::stat(pid) {
                alive.push(Adopted {
                    pid: pid as u32,
                    pgrp: st.pgrp as u32,
                    task_id: procfs::environ_var(pid, "AGENTCOM_TASK_ID"),
                });
            }
        }
        alive
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = is_spawned;
        Vec::new()
    }
}

/// Whether any of a task's agent processes is alive: a member of one of `groups`, or (Linux) an
/// adopted process whose environment names the task. Reaps adopted zombies first.
pub fn agent_alive(task_id: &str, groups: &[AgentGroup]) -> bool {
    let adopted = reap_adopted();
    groups.iter().any(|g| group_alive(g.pgid) && !leader_replaced(g))
        || adopted
            .iter()
            .any(|a| a.task_id.as_deref() == Some(task_id) && !is_exempt(a.pgrp))
}

/// Stop a task's agent: SIGTERM to each of its groups still alive (and still the recorded one)
/// and, on Linux, to every adopted process whose environment names the task (and that
/// process's own group when it leads one), again for processes adopted meanwhile, then SIGKILL
/// after `grace` to whatever is left. Returns how many groups or processes were signalled.
/// Windows: `taskkill /T /F` on each group's leader.
pub async fn stop_agent(task_id: &str, groups: &[AgentGroup], grace: Duration) -> usize {
    #[cfg(unix)]
    {
        // Targets as kill(2) pids: -pgid for a group, pid for a lone process.
        let targets = || -> Vec<i32> {
            let adopted = reap_adopted();
            let mut out: Vec<i32> = groups
                .iter()
                .filter(|g| g.pgid > 1 && group_alive(g.pgid) && !leader_replaced(g))
                .map(|g| -(g.pgid as i32))
                .collect();
            for a in adopted {
                if a.task_id.as_deref() != Some(task_id) || is_exempt(a.pgrp) {
                    continue;
                }
                let target = if a.pgrp == a.pid && a.pid > 1 {
                    -(a.pid as i32)
                } else {
                    a.pid as i32
                };
                if !out.contains(&target) && !out.contains(&-(a.pgrp as i32)) {
                    out.push(target);
                }
            }
            out
        };
        // SAFETY: kill(2) on a pid or a negative group id; no memory is involved.
        let signal = |target: i32, sig: i32| unsafe { libc::kill(target, sig) };
        let mut signalled: Vec<i32> = Vec::new();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let now = targets();
            if now.is_empty() {
                return signalled.len();
            }
            for t in now {
                if !signalled.contains(&t) {
                    signal(t, libc::SIGTERM);
                    signalled.push(t);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Past the grace: SIGKILL, again for processes adopted as their parents die.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = targets();
            if now.is_empty() || tokio::time::Instant::now() >= deadline {
                return signalled.len();
            }
            for t in now {
                signal(t, libc::SIGKILL);
                if !signalled.contains(&t) {
                    signalled.push(t);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    #[cfg(windows)]
    {
        let _ = task_id;
        for g in groups {
            kill_process_group(g.pgid, grace).await;
        }
        groups.len()
    }
}
