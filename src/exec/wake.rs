//! Waking the agent: render the configured `wake_command` with the task's values
//! ([`super::template`]) and run it.
//!
//! [`spawn_wake`] runs the command in its own process group, with stdout and stderr going to a
//! file (never a pipe, so a backgrounded agent that keeps them open cannot hold the wake
//! hostage, protocol C10), and kills the whole group on timeout. Stopping the agent it left
//! behind is [`super::process`]'s job.

use super::process::{
    child_command, group_identity, is_scrubbed, kill_process_group, spawned, AgentGroup, KILL_GRACE,
};
#[cfg(windows)]
use super::template::render_cmd;
#[cfg(unix)]
use super::template::{env_name, render, Mode, VAR_NAMES};
use super::template::{replace_nul, WakeVars};
use crate::protocol::cut_chars;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest argument or environment entry Linux accepts (`MAX_ARG_STRLEN`, 32 pages),
/// counting the terminating NUL.
#[cfg(unix)]
const MAX_ARG_BYTES: usize = 128 * 1024;

/// What to run.
#[derive(Debug, Clone)]
pub struct WakeSpec {
    /// The wake_command template.
    pub command: String,
    /// The values substituted into it (and passed as `AGENTCOM_V_*`).
    pub vars: WakeVars,
    /// Extra environment entries (`AGENTCOM_*`). Never the hub token.
    pub env: Vec<(String, String)>,
    /// The working directory; the sidecar's when `None`.
    pub cwd: Option<PathBuf>,
    /// How long the command may run before its process group is killed.
    pub timeout: Duration,
    /// stdout and stderr are appended here (created with its folder).
    pub output_file: PathBuf,
}

/// The result of one wake attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum WakeOutcome {
    /// The shell exited with code 0.
    Success,
    /// The shell exited non-zero or was killed by a signal: `exit code N` (or `killed by
    /// signal N`) and the tail of the output, at most 2000 chars.
    Failed {
        /// What happened, for `wake_result.error`.
        error: String,
    },
    /// The timeout passed first; the process group was killed.
    Timeout,
    /// The command could not be started (output file, spawn error, argument too long).
    CouldNotStart {
        /// Why.
        error: String,
    },
}

/// [`spawn_wake`]'s result: `Err` is always [`WakeOutcome::CouldNotStart`].
pub type WakeHandleResult = Result<WakeHandle, WakeOutcome>;

/// A started wake command: its process group id (Unix: the shell's pid; Windows: the pid) and a
/// future for its end.
#[derive(Debug)]
pub struct WakeHandle {
    /// The process group id, for [`kill_process_group`].
    pub pgid: u32,
    child: tokio::process::Child,
    timeout: Duration,
    output_file: PathBuf,
}

/// How much of the output file's end goes into a failure's error text.
const TAIL_BYTES: u64 = 500;
/// The longest error text (the hub's limit for `wake_result.error`, protocol C15).
const MAX_ERROR_CHARS: usize = 2000;

impl WakeHandle {
    /// Wait for the shell to exit, or for the timeout (then the whole group is killed:
    /// SIGTERM, SIGKILL 2 s later). Processes the command left running in the background are
    /// not waited for.
    pub async fn wait(self) -> WakeOutcome {
        let pid = self.pgid;
        let outcome = self.wait_inner().await;
        spawned(pid, false);
        outcome
    }

    /// The group this command leads, with what tells it apart from a later reuse of its PID.
    pub fn group(&self) -> AgentGroup {
        group_identity(self.pgid)
    }

    async fn wait_inner(mut self) -> WakeOutcome {
        match tokio::time::timeout(self.timeout, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => WakeOutcome::Success,
            Ok(Ok(status)) => {
                let what = match status.code() {
                    Some(code) => format!("exit code {code}"),
                    None => signal_text(&status),
                };
                let tail = output_tail(&self.output_file).await;
                let error = if tail.trim().is_empty() {
                    what
                } else {
                    format!("{what}; output: {}", tail.trim_end())
                };
                WakeOutcome::Failed {
                    error: cut_chars(&error, MAX_ERROR_CHARS),
                }
            }
            Ok(Err(e)) => WakeOutcome::Failed {
                error: cut_chars(&format!("wait failed: {e}"), MAX_ERROR_CHARS),
            },
            Err(_) => {
                // Reap the shell while the group is being killed, so that its zombie does not
                // count as a live member.
                let pgid = self.pgid;
                let child = &mut self.child;
                let reap = tokio::time::timeout(KILL_GRACE + Duration::from_secs(1), child.wait());
                let (_, reaped) = tokio::join!(kill_process_group(pgid, KILL_GRACE), reap);
                if !matches!(reaped, Ok(Ok(_))) {
                    // Not in its group any more (it called setpgid/setsid): the shell itself.
                    let _ = self.child.start_kill();
                    let _ = self.child.wait().await;
                }
                WakeOutcome::Timeout
            }
        }
    }
}

#[cfg(unix)]
fn signal_text(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(sig) => format!("killed by signal {sig}"),
        None => format!("{status}"),
    }
}

#[cfg(not(unix))]
fn signal_text(status: &std::process::ExitStatus) -> String {
    format!("{status}")
}

/// The last [`TAIL_BYTES`] of the file, from a char boundary, lossily decoded.
async fn output_tail(path: &Path) -> String {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return String::new();
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(TAIL_BYTES);
    if file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    if file.take(TAIL_BYTES).read_to_end(&mut buf).await.is_err() {
        return String::new();
    }
    let skip = if start > 0 {
        buf.iter().take(3).take_while(|b| (**b & 0xC0) == 0x80).count()
    } else {
        0
    };
    String::from_utf8_lossy(&buf[skip..]).into_owned()
}

fn could_not_start(error: String) -> WakeOutcome {
    WakeOutcome::CouldNotStart {
        error: cut_chars(&error, MAX_ERROR_CHARS),
    }
}

/// Open (append, create with its folder) the output file twice: for stdout and stderr.
fn open_output(path: &Path) -> std::io::Result<(std::fs::File, std::fs::File)> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            crate::files::create_dir_all(dir)?;
        }
    }
    let file = crate::files::open_append(path, None)?;
    let second = file.try_clone()?;
    Ok((file, second))
}

/// The environment entries for a spec: `spec.env` then the variables (which win), NUL bytes
/// replaced, entries whose key cannot be an environment name (or is scrubbed) dropped.
fn spec_env(spec: &WakeSpec) -> Vec<(String, String)> {
    spec.env
        .iter()
        .cloned()
        .chain(spec.vars.env_entries())
        .filter(|(k, _)| !k.is_empty() && !k.contains('=') && !k.contains('\0') && !is_scrubbed(k))
        .map(|(k, v)| (k, replace_nul(&v)))
        .collect()
}

/// Start the command in its own process group (Unix: `process_group(0)`; Windows:
/// `CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW`), stdin null, stdout and stderr appended to
/// `output_file` (created with its folder), env = the sidecar's env without [`SCRUBBED_ENV`] +
/// `spec.env` + the variables as `AGENTCOM_V_*` (see [`child_command`]). Must be called inside a
/// tokio runtime.
///
/// [`WakeHandle::wait`] resolves when the shell exits (exit 0 = Success; non-zero = Failed
/// with "exit code N" plus the last ~500 bytes of `output_file`, the whole error at most 2000
/// chars); if `timeout` passes first, it kills the whole process group (SIGTERM, then SIGKILL
/// after 2 s) and returns Timeout. A command that backgrounds a child with its stdio still open
/// does not keep `wait` waiting: only the shell's exit counts (stdio goes to a file, not a pipe).
///
/// Unix: the template is rendered with [`render_sh`] and run as `/bin/sh -c`. When the rendered
/// text is too long for one argument (Linux: 128 KiB), it is rendered again with every value
/// referenced as `${AGENTCOM_V_NAME}` instead. A value over 128 KiB cannot be passed at all (an
/// environment entry has the same limit): it is left out of the environment, and a template that
/// refers to it gives CouldNotStart (use `${TASK_FILE}` for big tasks).
/// Windows: [`render_cmd`], run as `cmd.exe /V:ON /D /S /C "..."`.
///
/// [`SCRUBBED_ENV`]: super::process::SCRUBBED_ENV
/// [`render_sh`]: super::template::render_sh
/// [`render_cmd`]: super::template::render_cmd
pub fn spawn_wake(spec: &WakeSpec) -> WakeHandleResult {
    let (stdout, stderr) = open_output(&spec.output_file).map_err(|e| {
        could_not_start(format!(
            "cannot open output file {}: {e}",
            spec.output_file.display()
        ))
    })?;
    let mut env = spec_env(spec);
    let mut cmd = platform_command(spec, &mut env)?;
    cmd.envs(env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(stdout))
        .stderr(std::process::Stdio::from(stderr))
        .kill_on_drop(false);
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    let child = cmd
        .spawn()
        .map_err(|e| could_not_start(format!("cannot start the wake command: {e}")))?;
    let pgid = child
        .id()
        .ok_or_else(|| could_not_start("the wake command exited before it could be tracked".into()))?;
    #[cfg(windows)]
    if let Some(handle) = child.raw_handle() {
        // SAFETY: the child's own handle; `child` is kept with the group.
        unsafe { super::job::track(pgid, handle) };
    }
    spawned(pgid, true);
    Ok(WakeHandle {
        pgid,
        child,
        timeout: spec.timeout,
        output_file: spec.output_file.clone(),
    })
}

#[cfg(unix)]
fn platform_command(
    spec: &WakeSpec,
    env: &mut Vec<(String, String)>,
) -> Result<tokio::process::Command, WakeOutcome> {
    let fits = |k: &str, v: &str| k.len() + 1 + v.len() < MAX_ARG_BYTES;
    // `used`: the variables the text refers to through the environment.
    let (mut text, mut used) = render(&spec.command, &spec.vars, Mode::Inline);
    if text.len() + 1 >= MAX_ARG_BYTES {
        (text, used) = render(&spec.command, &spec.vars, Mode::EnvRef);
    }
    for (index, name) in VAR_NAMES.iter().enumerate() {
        let key = env_name(name);
        let value = spec.vars.get(index);
        if !fits(&key, &value) {
            env.retain(|(k, _)| *k != key);
            if used[index] {
                return Err(could_not_start(format!(
                    "${{{name}}} is {} bytes, more than one argument or environment entry may hold \
                     (128 KiB); use ${{TASK_FILE}} instead",
                    value.len()
                )));
            }
        }
    }
    if text.len() + 1 >= MAX_ARG_BYTES {
        return Err(could_not_start(format!(
            "the wake command is {} bytes, more than one argument may hold (128 KiB)",
            text.len()
        )));
    }
    let mut cmd = child_command("/bin/sh");
    cmd.arg("-c").arg(text).process_group(0);
    Ok(cmd)
}

#[cfg(windows)]
fn platform_command(
    spec: &WakeSpec,
    env: &mut Vec<(String, String)>,
) -> Result<tokio::process::Command, WakeOutcome> {
    const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
    const CREATE_NO_WINDOW: u32 = 0x0800_0000;
    let (text, _) = render_cmd(&spec.command, &spec.vars);
    let _ = env;
    let mut cmd = child_command("cmd.exe");
    cmd.raw_arg("/V:ON /D /S /C")
        .raw_arg(format!("\"{text}\""))
        .creation_flags(CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW | super::job::CREATE_SUSPENDED);
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_is_cut_on_char_boundaries() {
        assert_eq!(cut_chars("ééé", 2), "éé");
        assert_eq!(cut_chars("ab", 5), "ab");
    }
}
