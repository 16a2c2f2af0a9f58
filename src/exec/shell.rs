//! The shell executor (`target_type: "sidecar"`, the trivial tier, protocol §11.5): runs the
//! task's `metadata.shell_command` through the platform shell (`/bin/sh -c`, Windows
//! `cmd.exe /D /S /C`), in the task's folder, in its own process group, bounded by
//! `metadata.timeout_ms` (default 60 s). Only when the operator set `allow_hub_commands`: the
//! runner checks it, and [`run`] refuses again when told it is not allowed.
//!
//! Unlike Node, a failing command runs once (not twice), a timeout kills the whole process group
//! (not only the shell), and a failure reaches the hub as an error, never as a "completed" task.
//! When the shell exits, anything it left running in its process group (a `cmd &`) is stopped
//! with the group; a command that must outlive the task has to leave the group itself.
//!
//! Also home of [`GroupChild`], the process guard the Claude executor shares: a child in its own
//! process group that is killed with its group when dropped.

use super::direct::{EventKind, ExecError, ExecEvent, ExecEvents, ExecOutput, Job};
use super::process::{spawned, KILL_GRACE};
use serde_json::{json, Value};
use std::process::ExitStatus;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How long a command may run when the task's `metadata.timeout_ms` does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How much of stdout and of stderr each goes into the result (the rest is counted, not kept).
pub const CAPTURE_LIMIT: usize = 64 * 1024;

/// How much of a stream becomes events; past it the stream is still read and captured, but
/// one status event says the rest is not streamed.
pub(crate) const EVENT_LIMIT: usize = 1024 * 1024;

/// After the process exits, how long its pipes may stay open (held by a background child)
/// before the rest of the output is given up.
pub(crate) const DRAIN: Duration = Duration::from_secs(1);

/// Run `job.metadata.shell_command` through the platform shell in `job.workdir`, when `allowed`
/// (the config's `allow_hub_commands`): stdout and stderr stream as [`EventKind::Stdout`] and
/// [`EventKind::Stderr`] events and are kept (up to [`CAPTURE_LIMIT`] each) as the output and
/// the extra `stderr`; `exit_code` is in the extra too. A non-zero exit, a timeout
/// (`metadata.timeout_ms`, else 60 s; the process group is killed) or a missing
/// `shell_command` is an [`ExecError`]. With `allowed` false nothing runs.
pub async fn run(job: &Job, events: &ExecEvents, allowed: bool) -> Result<ExecOutput, ExecError> {
    if !allowed {
        return Err(ExecError(
            "refused to run metadata.shell_command: allow_hub_commands is false in config.json, so no \
             command from the hub runs on this host (set \"allow_hub_commands\": true to allow it)"
                .to_owned(),
        ));
    }
    let command = job
        .metadata
        .get("shell_command")
        .and_then(Value::as_str)
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| {
            ExecError(
                "the task has no metadata.shell_command: the sidecar tier runs only a task's \
                 metadata.shell_command; give the task one or route it to a model"
                    .to_owned(),
            )
        })?;
    let timeout = job
        .metadata
        .get("timeout_ms")
        .and_then(Value::as_u64)
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_TIMEOUT);

    let mut cmd = shell_command(command);
    cmd.current_dir(&job.workdir);
    let mut child = GroupChild::spawn(&mut cmd).map_err(|e| {
        ExecError(format!(
            "cannot start the shell for metadata.shell_command in {}: {e}",
            job.workdir.display()
        ))
    })?;
    let _ = events.send(ExecEvent {
        kind: EventKind::Status,
        text: format!(
            "running metadata.shell_command (timeout {} ms)",
            timeout.as_millis()
        ),
        model: None,
    });

    let mut out = Capture::new(EventKind::Stdout, events);
    let mut err = Capture::new(EventKind::Stderr, events);
    let (stdout, stderr) = child.take_pipes();
    let waited = {
        let readers = async {
            tokio::join!(out.read_all(stdout), err.read_all(stderr));
        };
        child.wait_draining(readers, Some(timeout)).await
    };
    match waited {
        Waited::TimedOut => {
            child.kill().await;
            Err(ExecError(format!(
                "command timed out after {} ms (metadata.timeout_ms, default 60000); its process group \
                 was killed",
                timeout.as_millis()
            )))
        }
        Waited::Failed(e) => Err(ExecError(format!("cannot wait for metadata.shell_command: {e}"))),
        Waited::Exited(status) => {
            let stderr = err.text();
            match status.code() {
                Some(0) => {
                    let mut output = ExecOutput {
                        output: out.text(),
                        model_used: "none".to_owned(),
                        ..ExecOutput::default()
                    };
                    output.extra.insert("stderr".into(), json!(stderr));
                    output.extra.insert("exit_code".into(), json!(0));
                    Ok(output)
                }
                Some(code) => Err(ExecError(format!(
                    "command exited with code {code}: {}",
                    tail_chars(stderr.trim(), 500)
                ))),
                None => Err(ExecError(format!(
                    "command was killed by a signal{}: {}",
                    signal_of(&status).map(|s| format!(" ({s})")).unwrap_or_default(),
                    tail_chars(stderr.trim(), 500)
                ))),
            }
        }
    }
}

/// The platform shell running `text` (Unix `/bin/sh -c TEXT`; Windows `cmd.exe /D /S /C "TEXT"`).
pub(crate) fn shell_command(text: &str) -> tokio::process::Command {
    #[cfg(unix)]
    {
        let mut cmd = super::process::child_command("/bin/sh");
        cmd.arg("-c").arg(text);
        cmd
    }
    #[cfg(windows)]
    {
        let mut cmd = super::process::child_command("cmd.exe");
        cmd.raw_arg("/D /S /C").raw_arg(format!("\"{text}\""));
        cmd
    }
}

#[cfg(unix)]
fn signal_of(status: &ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

#[cfg(not(unix))]
fn signal_of(_status: &ExitStatus) -> Option<i32> {
    None
}

/// The last `n` characters of `text`.
pub(crate) fn tail_chars(text: &str, n: usize) -> &str {
    let count = text.chars().count();
    if count <= n {
        return text;
    }
    let skip = text.char_indices().nth(count - n).map_or(0, |(i, _)| i);
    &text[skip..]
}

/// One of a child's output streams: streamed as events (up to [`EVENT_LIMIT`]) and kept (up to
/// [`CAPTURE_LIMIT`]).
pub(crate) struct Capture<'a> {
    kind: EventKind,
    events: &'a ExecEvents,
    kept: Vec<u8>,
    total: usize,
    streamed: usize,
    pending: Vec<u8>,
    /// Keep the last [`CAPTURE_LIMIT`] bytes instead of the first ([`Capture::keeping_last`]).
    keep_last: bool,
}

impl<'a> Capture<'a> {
    /// A capture sending `kind` events to `events`.
    pub(crate) fn new(kind: EventKind, events: &'a ExecEvents) -> Capture<'a> {
        Capture {
            kind,
            events,
            kept: Vec::new(),
            total: 0,
            streamed: 0,
            pending: Vec::new(),
            keep_last: false,
        }
    }

    /// The same capture keeping the last [`CAPTURE_LIMIT`] bytes instead of the first (for
    /// output whose end matters most, such as a failing test run's).
    pub(crate) fn keeping_last(mut self) -> Capture<'a> {
        self.keep_last = true;
        self
    }

    /// Reads `from` to its end (no-op for `None`).
    pub(crate) async fn read_all(&mut self, from: Option<impl AsyncRead + Unpin>) {
        let Some(mut from) = from else { return };
        let mut buf = vec![0u8; 8192];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => self.chunk(&buf[..n]),
            }
        }
    }

    /// Takes one chunk: keeps it (bounded) and sends it as an event (whole characters only).
    pub(crate) fn chunk(&mut self, bytes: &[u8]) {
        self.total += bytes.len();
        if self.keep_last {
            self.kept.extend_from_slice(bytes);
            let excess = self.kept.len().saturating_sub(CAPTURE_LIMIT);
            self.kept.drain(..excess);
        } else {
            let room = CAPTURE_LIMIT.saturating_sub(self.kept.len());
            self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        if self.streamed >= EVENT_LIMIT {
            return;
        }
        self.streamed += bytes.len();
        self.pending.extend_from_slice(bytes);
        let text = take_utf8(&mut self.pending);
        if !text.is_empty() {
            let _ = self.events.send(ExecEvent {
                kind: self.kind,
                text,
                model: None,
            });
        }
        if self.streamed >= EVENT_LIMIT {
            let _ = self.events.send(ExecEvent {
                kind: EventKind::Status,
                text: format!(
                    "{} passed {} bytes: the rest is not streamed",
                    self.kind.as_str(),
                    EVENT_LIMIT
                ),
                model: None,
            });
        }
    }

    /// What was kept, as text, with a note when the stream was longer than [`CAPTURE_LIMIT`].
    pub(crate) fn text(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.kept).into_owned();
        if self.keep_last && self.total > self.kept.len() {
            return format!(
                "[cut: {} bytes in all, the last {} kept]\n{text}",
                self.total,
                self.kept.len()
            );
        }
        if self.total > self.kept.len() {
            text.push_str(&format!(
                "\n[cut: {} bytes in all, the first {} kept]",
                self.total,
                self.kept.len()
            ));
        }
        text
    }
}

/// Takes the longest prefix of `pending` that is whole UTF-8 characters (invalid bytes become
/// U+FFFD), leaving an incomplete character at its end for the next chunk.
fn take_utf8(pending: &mut Vec<u8>) -> String {
    let keep = match std::str::from_utf8(pending) {
        Ok(_) => 0,
        Err(e) if e.error_len().is_none() => pending.len() - e.valid_up_to(),
        Err(_) => 0,
    };
    let rest = pending.split_off(pending.len() - keep);
    let text = String::from_utf8_lossy(pending).into_owned();
    *pending = rest;
    text
}

/// How waiting for a [`GroupChild`] ended.
pub(crate) enum Waited {
    /// The process exited.
    Exited(ExitStatus),
    /// The timeout passed first (the process still runs: kill it).
    TimedOut,
    /// Waiting failed.
    Failed(std::io::Error),
}

/// A child process in its own process group (Unix: a session of its own, `setsid`, so without
/// a controlling terminal; Windows: `CREATE_NEW_PROCESS_GROUP`), stdin null, stdout and stderr piped. Dropping it kills the
/// group: SIGTERM at once, SIGKILL after [`KILL_GRACE`] to what is left, and the leader is
/// reaped (on a tokio runtime; without one, SIGKILL at once). That is how dropping an
/// executor's future stops its process for real.
pub struct GroupChild {
    child: Option<tokio::process::Child>,
    pgid: u32,
    exited: bool,
}

impl GroupChild {
    /// Spawns `cmd` (made with [`child_command`](super::process::child_command)) in a process
    /// group of its own, with stdin null and stdout/stderr piped.
    pub fn spawn(cmd: &mut tokio::process::Command) -> std::io::Result<GroupChild> {
        use std::process::Stdio;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        #[cfg(unix)]
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            // A session of its own, hence also a process group of its own, and no controlling
            // terminal: nothing it runs (ssh, gpg's pinentry, sudo) can prompt on the terminal
            // the sidecar was started from and hang there until its timeout.
            cmd.pre_exec(|| match libc::setsid() {
                -1 => Err(std::io::Error::last_os_error()),
                _ => Ok(()),
            });
        }
        #[cfg(windows)]
        cmd.creation_flags(0x0000_0200 | 0x0800_0000 | super::job::CREATE_SUSPENDED); // CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW, resumed by job::track
        let child = cmd.spawn()?;
        let pgid = child
            .id()
            .ok_or_else(|| std::io::Error::other("the process exited before it could be tracked"))?;
        #[cfg(windows)]
        if let Some(handle) = child.raw_handle() {
            // SAFETY: the child's own handle; `child` is kept with the group.
            unsafe { super::job::track(pgid, handle) };
        }
        spawned(pgid, true);
        super::executor::announce_group(pgid);
        Ok(GroupChild {
            child: Some(child),
            pgid,
            exited: false,
        })
    }

    /// The process id (also its process group id).
    pub fn id(&self) -> u32 {
        self.pgid
    }

    /// Takes the stdout and stderr pipes.
    pub(crate) fn take_pipes(
        &mut self,
    ) -> (
        Option<tokio::process::ChildStdout>,
        Option<tokio::process::ChildStderr>,
    ) {
        match self.child.as_mut() {
            Some(c) => (c.stdout.take(), c.stderr.take()),
            None => (None, None),
        }
    }

    /// Waits for the process to exit while `readers` (reading its pipes) run; once it exited,
    /// gives `readers` up to [`DRAIN`] to finish (a background child may hold the pipes open).
    /// With a `timeout`, gives up waiting when it passes ([`Waited::TimedOut`]).
    pub(crate) async fn wait_draining(
        &mut self,
        readers: impl std::future::Future<Output = ()>,
        timeout: Option<Duration>,
    ) -> Waited {
        let Some(child) = self.child.as_mut() else {
            return Waited::Failed(std::io::Error::other("the process was already waited for"));
        };
        let mut readers = std::pin::pin!(readers);
        let mut read_done = false;
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let mut sleep = std::pin::pin!(sleep);
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                () = &mut readers, if !read_done => read_done = true,
                () = &mut sleep => return Waited::TimedOut,
            }
        };
        match status {
            Ok(status) => {
                self.exited = true;
                spawned(self.pgid, false);
                if !read_done {
                    let _ = tokio::time::timeout(DRAIN, &mut readers).await;
                }
                Waited::Exited(status)
            }
            Err(e) => Waited::Failed(e),
        }
    }

    /// Kills the process group now (SIGTERM, SIGKILL after [`KILL_GRACE`]) and reaps the leader.
    pub async fn kill(&mut self) {
        super::process::kill_process_group(self.pgid, KILL_GRACE).await;
        #[cfg(unix)]
        signal_group(self.pgid, libc::SIGKILL);
        if let Some(child) = self.child.as_mut() {
            if !self.exited {
                let _ = child.start_kill();
                let _ = child.wait().await;
                self.exited = true;
                spawned(self.pgid, false);
            }
        }
    }
}

/// Sends `sig` to the group `pgid` (never to group 0 or 1); whether it was delivered.
#[cfg(unix)]
fn signal_group(pgid: u32, sig: i32) -> bool {
    let Ok(pg) = i32::try_from(pgid) else { return false };
    // SAFETY: kill(2) with a negative pid signals the group; no memory is involved.
    pg > 1 && unsafe { libc::kill(-pg, sig) } == 0
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = self.pgid;
        let exited = self.exited;
        #[cfg(unix)]
        {
            let alive = signal_group(pgid, libc::SIGTERM);
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn(async move {
                        let deadline = tokio::time::Instant::now() + KILL_GRACE;
                        while alive && tokio::time::Instant::now() < deadline && signal_group(pgid, 0) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        if alive && signal_group(pgid, 0) {
                            signal_group(pgid, libc::SIGKILL);
                        }
                        if !exited {
                            let _ = child.wait().await;
                            spawned(pgid, false);
                        }
                    });
                }
                Err(_) => {
                    signal_group(pgid, libc::SIGKILL);
                    spawned(pgid, false);
                }
            }
        }
        #[cfg(windows)]
        {
            let _ = exited;
            let _ = child.start_kill();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    super::process::kill_process_group(pgid, KILL_GRACE).await;
                    let _ = child.wait().await;
                });
            }
            spawned(pgid, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_streamed_in_whole_characters() {
        let mut pending = "é".as_bytes()[..1].to_vec();
        assert_eq!(take_utf8(&mut pending), "");
        pending.extend_from_slice(&"é".as_bytes()[1..]);
        pending.extend_from_slice(b"x");
        assert_eq!(take_utf8(&mut pending), "éx");
        assert!(pending.is_empty());
    }

    #[test]
    fn captures_are_bounded_and_say_so() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut cap = Capture::new(EventKind::Stdout, &tx);
        cap.chunk(&vec![b'a'; CAPTURE_LIMIT + 10]);
        let text = cap.text();
        assert!(text.starts_with(&"a".repeat(CAPTURE_LIMIT)));
        assert!(text.ends_with(&format!(
            "[cut: {} bytes in all, the first {CAPTURE_LIMIT} kept]",
            CAPTURE_LIMIT + 10
        )));
        assert_eq!(rx.try_recv().unwrap().kind, EventKind::Stdout);
        let mut last = Capture::new(EventKind::Stdout, &tx).keeping_last();
        last.chunk(&vec![b'a'; CAPTURE_LIMIT]);
        last.chunk(b"end");
        let text = last.text();
        assert!(text.starts_with(&format!(
            "[cut: {} bytes in all, the last {CAPTURE_LIMIT} kept]\n",
            CAPTURE_LIMIT + 3
        )));
        assert!(text.ends_with("aaend"));
        assert_eq!(tail_chars("abcdé", 2), "dé");
        assert_eq!(tail_chars("ab", 5), "ab");
    }

    /// A group child leads a session of its own (so it has no controlling terminal to prompt
    /// on): /proc/self/stat's session field is its own pid, not the test's session.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_group_child_leads_its_own_session_without_a_terminal() {
        use tokio::io::AsyncReadExt;
        let mut cmd = super::super::process::child_command(std::ffi::OsStr::new("cat"));
        cmd.arg("/proc/self/stat");
        let mut child = GroupChild::spawn(&mut cmd).unwrap();
        let pid = child.id();
        let (stdout, _) = child.take_pipes();
        let mut stat = String::new();
        stdout.unwrap().read_to_string(&mut stat).await.unwrap();
        // pid (comm) state ppid pgrp session tty_nr ...
        let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
        let (pgrp, session, tty) = (fields[2], fields[3], fields[4]);
        assert_eq!(pgrp, pid.to_string(), "{stat}");
        assert_eq!(session, pid.to_string(), "{stat}");
        assert_eq!(tty, "0", "no controlling terminal: {stat}");
        let ours = std::fs::read_to_string("/proc/self/stat").unwrap();
        let our_session = ours
            .rsplit_once(") ")
            .unwrap()
            .1
            .split(' ')
            .nth(3)
            .unwrap()
            .to_owned();
        assert_ne!(session, our_session);
    }
}
