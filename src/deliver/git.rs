//! Git as an argument vector, never through a shell, each call with a timeout (protocol §11.9).
//!
//! Every call runs in a process group of its own ([`GroupChild`]: killed with its group on a
//! timeout or when the future is dropped), with stdin null, its output bounded, and an
//! environment that cannot prompt (`GIT_TERMINAL_PROMPT=0`, and no controlling terminal) nor run a transport other than
//! `file`, `git`, `http(s)` and `ssh` (`GIT_ALLOW_PROTOCOL`: a hub-sent `ext::sh -c …` URL runs
//! nothing). Hub text reaches git only as single argv elements.

use crate::exec::process::child_command;
use crate::exec::shell::{tail_chars, GroupChild, Waited};
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How long a `git clone` may take.
pub const CLONE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a `git fetch` or `git push` may take (and `gh pr create`).
pub const NETWORK_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a local git command (status, checkout, commit, diff, ...) may take.
pub const LOCAL_TIMEOUT: Duration = Duration::from_secs(60);

/// How much of a child's stdout is kept (the rest is read and dropped).
const STDOUT_LIMIT: usize = 8 * 1024 * 1024;
/// How much of a child's stderr is kept.
const STDERR_LIMIT: usize = 64 * 1024;

/// What git (or gh) may inherit from the sidecar's environment but must not: they would point
/// the command at another repository, index or object store than the folder it runs in.
const REMOVED_ENV: [&str; 7] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
];

/// A failed step of workspace setup or delivery: a code like Node's (`clone_failed`,
/// `fetch_failed`, `dirty_working_tree`, `checkout_failed`, `commit_failed`, `push_failed`,
/// `pr_create_failed`, `not_a_git_repo`, `git_not_found`, `gh_not_found`, `timeout`) and what
/// went wrong, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitError {
    /// The machine-readable reason (Node's error codes where Node has one).
    pub code: &'static str,
    /// What went wrong: git's own stderr (trimmed), or the sidecar's explanation.
    pub message: String,
}

impl GitError {
    /// An error with `code` and `message`.
    pub fn new(code: &'static str, message: impl Into<String>) -> GitError {
        GitError {
            code,
            message: message.into(),
        }
    }

    /// Names the failed step: a plain command failure (`git_failed`) takes `code`; a timeout,
    /// a missing git or a folder that is not a repository keep their own code.
    pub fn step(mut self, code: &'static str) -> GitError {
        if self.code == "git_failed" {
            self.code = code;
        }
        self
    }
}

impl std::fmt::Display for GitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for GitError {}

/// How a child process ended, with its (bounded) output.
pub(crate) struct Finished {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Why a child process gave no exit status.
pub(crate) enum RunFailure {
    /// The program could not be started (missing, not executable, bad folder).
    Spawn(std::io::Error),
    /// It ran past its timeout; its process group was killed.
    Timeout,
    /// Waiting for it failed.
    Wait(std::io::Error),
}

/// Runs `program args…` in `dir` with `env` added, in its own process group, stdin null, output
/// bounded, killed with its group after `timeout` (or when the future is dropped).
pub(crate) async fn run_program(
    program: &OsStr,
    dir: &Path,
    args: &[&OsStr],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<Finished, RunFailure> {
    let mut cmd = child_command(program);
    cmd.args(args).current_dir(dir);
    for name in REMOVED_ENV {
        cmd.env_remove(name);
    }
    for (name, value) in env {
        cmd.env(name, value);
    }
    let mut child = GroupChild::spawn(&mut cmd).map_err(RunFailure::Spawn)?;
    let (stdout, stderr) = child.take_pipes();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let waited = {
        let readers = async {
            tokio::join!(
                read_bounded(stdout, &mut out, STDOUT_LIMIT),
                read_bounded(stderr, &mut err, STDERR_LIMIT)
            );
        };
        child.wait_draining(readers, Some(timeout)).await
    };
    match waited {
        Waited::TimedOut => {
            child.kill().await;
            Err(RunFailure::Timeout)
        }
        Waited::Failed(e) => Err(RunFailure::Wait(e)),
        Waited::Exited(status) => Ok(Finished {
            code: status.code(),
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
        }),
    }
}

/// Reads `from` to its end, keeping the first `limit` bytes in `into`.
async fn read_bounded(from: Option<impl AsyncRead + Unpin>, into: &mut Vec<u8>, limit: usize) {
    let Some(mut from) = from else { return };
    let mut buf = vec![0u8; 8192];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit.saturating_sub(into.len());
                into.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// The environment every git call gets: no prompts, only plain transports, messages in English.
const GIT_ENV: [(&str, &str); 3] = [
    ("GIT_TERMINAL_PROMPT", "0"),
    ("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh"),
    ("LC_ALL", "C"),
];

/// Runs `git args…` in `dir` and returns how it ended, whatever its exit code (for commands
/// whose exit code is an answer: `diff --quiet`, `rev-parse --verify --quiet`).
pub(crate) async fn git_status<S: AsRef<OsStr>>(
    dir: &Path,
    args: &[S],
    timeout: Duration,
) -> Result<Finished, GitError> {
    let argv: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
    match run_program(OsStr::new("git"), dir, &argv, &GIT_ENV, timeout).await {
        Ok(done) => Ok(done),
        Err(RunFailure::Spawn(e)) if e.kind() == std::io::ErrorKind::NotFound && !dir.is_dir() => {
            Err(GitError::new(
                "not_a_git_repo",
                format!("the folder {} does not exist", dir.display()),
            ))
        }
        Err(RunFailure::Spawn(e)) if e.kind() == std::io::ErrorKind::NotFound => Err(GitError::new(
            "git_not_found",
            "git is not installed or not on PATH: install git (https://git-scm.com) or add it to \
             the PATH the sidecar runs with",
        )),
        Err(RunFailure::Spawn(e)) => Err(GitError::new(
            "git_failed",
            format!("cannot start git in {}: {e}", dir.display()),
        )),
        Err(RunFailure::Timeout) => Err(GitError::new(
            "timeout",
            format!(
                "git {} in {} took longer than {} and was killed with its process group",
                subcommand(&argv),
                dir.display(),
                human(timeout)
            ),
        )),
        Err(RunFailure::Wait(e)) => Err(GitError::new(
            "git_failed",
            format!("cannot wait for git {}: {e}", subcommand(&argv)),
        )),
    }
}

/// Runs `git args…` in `dir` (an argument vector, never a shell), killed with its process group
/// after `timeout`; returns its stdout. A non-zero exit is a `git_failed` error carrying git's
/// stderr (name the step with [`GitError::step`]); also `timeout`, `git_not_found`, and
/// `not_a_git_repo` when git says `dir` is not a repository.
pub async fn git<S: AsRef<OsStr>>(dir: &Path, args: &[S], timeout: Duration) -> Result<String, GitError> {
    let done = git_status(dir, args, timeout).await?;
    if done.code == Some(0) {
        return Ok(done.stdout);
    }
    let stderr = done.stderr.trim();
    let code = if stderr.contains("not a git repository") {
        "not_a_git_repo"
    } else {
        "git_failed"
    };
    let message = if stderr.is_empty() {
        let argv: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
        match done.code {
            Some(c) => format!("git {} exited with code {c}", subcommand(&argv)),
            None => format!("git {} was killed by a signal", subcommand(&argv)),
        }
    } else {
        tail_chars(stderr, 2000).to_owned()
    };
    Err(GitError::new(code, message))
}

/// The first argument that is not an option (`clone`, `fetch`, ...), for messages.
fn subcommand(argv: &[&OsStr]) -> String {
    let mut skip_next = false;
    for a in argv {
        let a = a.to_string_lossy();
        if skip_next {
            skip_next = false;
        } else if a == "-c" || a == "-C" {
            skip_next = true;
        } else if !a.starts_with('-') {
            return a.into_owned();
        }
    }
    String::new()
}

/// `d` for people: "300 s", "250 ms".
pub(crate) fn human(d: Duration) -> String {
    if d.as_millis() % 1000 == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// A file outside any repository (in the system temp folder), private to the user, deleted on
/// drop: how a commit message or a pull request body reaches git or gh.
pub(crate) struct TempFile(std::path::PathBuf);

impl TempFile {
    /// Writes `text` to a new file named `agentcom-<label>-<random>` in the temp folder.
    pub(crate) fn new(label: &str, text: &str) -> std::io::Result<TempFile> {
        use std::io::Write;
        let dir = std::env::temp_dir();
        let mut last = None;
        for _ in 0..8 {
            let path = dir.join(format!(
                "agentcom-{label}-{}-{:016x}",
                std::process::id(),
                fastrand::u64(..)
            ));
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            match opts.open(&path) {
                Ok(mut f) => {
                    let file = TempFile(path);
                    f.write_all(text.as_bytes())?;
                    return Ok(file);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free temp file name")))
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
