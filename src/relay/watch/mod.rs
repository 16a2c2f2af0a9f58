//! Watches the agent's results folder and turns its files into [`FileEvent`]s.
//!
//! The agent reports through three files per task in one folder:
//! `{task_id}.started` (any content), `{task_id}.json` (the result, a JSON object) and
//! `{task_id}.progress` (`{"progress": <integer>, "message": <optional string>}`).
//!
//! How it works:
//! - `notify` (inotify on Linux, FSEvents / ReadDirectoryChangesW elsewhere) calls back on its own
//!   thread; the callback only filters and forwards the raw event into a channel.
//! - One tokio task owns all the state. It reads files on the blocking pool (`spawn_blocking`),
//!   several files per hop, always `fstat` first so an oversized file is never buffered.
//! - A result is reported once it parses as a complete JSON value. A file that is a prefix of JSON
//!   (serde_json's EOF category, or blank) is a write in progress: it waits for the next change,
//!   with no time limit. A syntax error, an oversized file and a bare top-level number (`1` may
//!   become `12`) are reported only once the file has been unchanged for `settle`.
//! - Events can be lost (inotify queue overflow, a folder deleted and re-created), so tracked ids
//!   are also checked every `rescan_every`. The fallback only runs while something is tracked:
//!   with nothing tracked the task sleeps until the file system or the caller wakes it.
//! - When no file system watch can be had (Linux: the user's inotify instances or watches are
//!   used up), that fallback check is all there is: results are picked up within `rescan_every`
//!   ([`FileEvent::Polling`] says so once), and nothing runs while nothing is tracked.
//! - Only regular files are read. A FIFO, socket or device under a result's name is never opened
//!   (opening a FIFO blocks until a writer comes): it is reported once as
//!   [`FileEvent::NotRegular`] and skipped. Files are opened with `O_NONBLOCK` and checked again
//!   on the open handle, so a file swapped for a FIFO in between cannot block a read either.
//!
//! `observe` reads one file and says what it holds (and when a result counts as complete);
//! `worker` is the tokio task that owns the state; this module is the handle the relay holds.

mod observe;
mod worker;

use super::task::check_task_id;
use std::io;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use worker::WatchTask;

/// What the agent's files say.
#[derive(Debug, Clone, PartialEq)]
pub enum FileEvent {
    /// `{task_id}.started` exists (reported once per tracking, and again after [`ResultWatcher::rescan`]).
    Started {
        /// The task id from the file name.
        task_id: String,
    },
    /// `{task_id}.json` holds a complete result (or a settled invalid or oversized one).
    Result {
        /// The task id from the file name.
        task_id: String,
        /// What the file holds.
        content: ResultContent,
    },
    /// `{task_id}.progress` holds a new, valid progress report.
    Progress {
        /// The task id from the file name.
        task_id: String,
        /// The `progress` field (an integer).
        progress: i64,
        /// The `message` field, if it is a string.
        message: Option<String>,
    },
    /// A file under one of a task's names is not a regular file (a FIFO, a socket, a device, a
    /// folder): it is skipped, never opened. Reported once until it changes.
    NotRegular {
        /// The task id from the file name.
        task_id: String,
        /// The file.
        file: PathBuf,
        /// What it is, e.g. "a FIFO (named pipe)".
        kind: String,
    },
    /// No file system watch could be set up: the folder is checked every `rescan_every` while
    /// a task is tracked. Sent once, when that starts.
    Polling {
        /// Why the watch failed.
        error: String,
        /// What would restore instant pickup (the Linux sysctl), if known.
        help: Option<String>,
    },
}

/// What a result file holds.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultContent {
    /// A complete JSON object.
    Object(serde_json::Map<String, serde_json::Value>),
    /// Complete JSON but not an object: says what it was (`null`, `boolean`, `number`, `string`, `array`).
    NotObject(String),
    /// Not JSON and not a prefix of JSON, unchanged for `settle`: the parser's message.
    Invalid(String),
    /// Over the size limit (the size in bytes, unchanged for `settle`): never read into memory.
    TooLarge(u64),
}

/// How to watch the results folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// The results folder (created if missing).
    pub dir: PathBuf,
    /// How long an invalid or oversized result must stay unchanged before it is reported.
    pub settle: Duration,
    /// Results larger than this are reported as [`ResultContent::TooLarge`] without being read.
    pub max_result_bytes: u64,
    /// The fallback check of tracked ids, in case file system events are lost.
    pub rescan_every: Duration,
}

impl WatchOptions {
    /// The defaults for `dir`: settle 2 s, results up to 16 MiB, fallback check every second.
    pub fn new(dir: impl Into<PathBuf>) -> WatchOptions {
        WatchOptions {
            dir: dir.into(),
            settle: Duration::from_secs(2),
            max_result_bytes: 16 * 1024 * 1024,
            rescan_every: Duration::from_secs(1),
        }
    }
}

/// Watches one results folder. Reports files only for tracked task ids, plus `Result` for
/// untracked ids (so the caller can move a late result aside).
///
/// Dropping it stops the watching task and closes the event channel.
pub struct ResultWatcher {
    commands: UnboundedSender<Command>,
}

enum Command {
    Track(String),
    Untrack(String),
    Rescan(String),
}

impl ResultWatcher {
    /// Create the folder if missing (create_dir_all) and start watching. Events arrive on the
    /// returned receiver.
    ///
    /// Must be called from within a tokio runtime (it spawns a task). Fails if the folder cannot
    /// be created or the file system watch cannot be set up.
    pub fn start(opts: WatchOptions) -> io::Result<(ResultWatcher, UnboundedReceiver<FileEvent>)> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| io::Error::other(format!("ResultWatcher::start needs a tokio runtime: {e}")))?;
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (fs_tx, fs_rx) = mpsc::unbounded_channel();
        let mut task = WatchTask::new(opts, event_tx, fs_tx);
        task.watch_dir()?;
        runtime.spawn(task.run(cmd_rx, fs_rx));
        Ok((ResultWatcher { commands: cmd_tx }, event_rx))
    }

    /// Report files of this task id from now on; also check its files now (they may already
    /// exist: written while the sidecar was down).
    ///
    /// Tracking an id that is already tracked only checks its files again (nothing already
    /// reported is reported twice). Ids [`check_task_id`] refuses are ignored.
    pub fn track(&mut self, task_id: &str) {
        if valid_task_id(task_id) {
            let _ = self.commands.send(Command::Track(task_id.to_owned()));
        }
    }

    /// Stop reporting this task id (its `.json` is then reported like any untracked result,
    /// but not again if unchanged since it was reported as tracked).
    pub fn untrack(&mut self, task_id: &str) {
        if valid_task_id(task_id) {
            let _ = self.commands.send(Command::Untrack(task_id.to_owned()));
        }
    }

    /// Check the files of a tracked task now and report what is there (Started, the Result if
    /// complete, the latest Progress), even if it was reported before. No-op for untracked ids.
    pub fn rescan(&mut self, task_id: &str) {
        if valid_task_id(task_id) {
            let _ = self.commands.send(Command::Rescan(task_id.to_owned()));
        }
    }
}

/// A task id [`check_task_id`] accepts (`[A-Za-z0-9._-]{1,128}`, not `.` or `..`): the relay
/// holds no other, so files under any other name are not a task's.
fn valid_task_id(id: &str) -> bool {
    check_task_id(id).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids() {
        assert!(valid_task_id("task-1_a.B"));
        assert!(!valid_task_id(""));
        assert!(!valid_task_id(".."));
        assert!(!valid_task_id("a/b"));
        assert!(!valid_task_id(&"a".repeat(129)));
    }
}
