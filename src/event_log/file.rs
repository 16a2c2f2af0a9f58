//! The log file on disk: appending whole lines, size-based rotation, and moving a Node
//! sidecar's log aside at start.

use super::time::iso8601;
use serde_json::Value;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Size-based rotation settings of a log file.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rotation {
    /// The size a line may not take the file past (unless it is the file's first line).
    pub(super) max_bytes: u64,
    /// How many rotated files are kept (`path.1` .. `path.{keep}`).
    pub(super) keep: u32,
}

/// The open log file, its tracked size and its rotation state.
pub(super) struct LogFile {
    file: File,
    path: PathBuf,
    /// The file's length at open plus every byte written since (no stat per line).
    size: u64,
    rotation: Option<Rotation>,
    /// After a failed rotation, the size at which to try again (not on every line).
    retry_at: Option<u64>,
    /// A rotation failure was reported on stderr (once per run of failures).
    rotation_failure_reported: bool,
}

/// `path` with `.{n}` appended to its file name: `sidecar.log` -> `sidecar.log.3`.
pub(super) fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Opens the log for appending: created 0600, never blocking on a FIFO (refused as not a
/// regular file). On Windows FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE: the open log
/// can be renamed (rotated) and read by others, as on Unix.
fn open_append(path: &Path) -> io::Result<File> {
    crate::files::open_append(path, Some(0x1 | 0x2 | 0x4))
}

impl LogFile {
    /// Open (create or append) the file at `path`, creating its folder.
    pub(super) fn open(path: &Path, rotation: Option<Rotation>) -> io::Result<LogFile> {
        if let Some(dir) = path.parent() {
            crate::files::create_dir_all(dir)?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            file,
            path: path.to_owned(),
            size,
            rotation,
            retry_at: None,
            rotation_failure_reported: false,
        })
    }

    /// Whether a line of `len` bytes must go to a fresh file.
    fn must_rotate(&self, len: u64) -> bool {
        let Some(rotation) = self.rotation else {
            return false;
        };
        if self.size == 0 || self.size + len <= rotation.max_bytes {
            return false;
        }
        self.retry_at.is_none_or(|at| self.size >= at)
    }

    /// Shift `path.{keep-1}` -> `path.{keep}` ... `path` -> `path.1`, then open a fresh `path`.
    fn rotate(&mut self, keep: u32) -> io::Result<()> {
        let remove = |p: &Path| match std::fs::remove_file(p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        if keep == 0 {
            remove(&self.path)?;
        } else {
            remove(&numbered(&self.path, keep))?;
            for n in (1..keep).rev() {
                match std::fs::rename(numbered(&self.path, n), numbered(&self.path, n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, numbered(&self.path, 1))?;
        }
        // Until this succeeds the old handle stays in use: lines still land (in the renamed file).
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Append one whole line (with its newline), rotating first when it would pass `max_bytes`.
    pub(super) fn append(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if self.must_rotate(len) {
            let rotation = self.rotation.expect("must_rotate checked it");
            match self.rotate(rotation.keep) {
                Ok(()) => {
                    self.retry_at = None;
                    self.rotation_failure_reported = false;
                }
                Err(e) => {
                    self.retry_at = Some(self.size + rotation.max_bytes);
                    if !std::mem::replace(&mut self.rotation_failure_reported, true) {
                        crate::errln!(
                            "agentcom-sidecar: cannot rotate the log file {}: {e}; still appending to it",
                            self.path.display()
                        );
                    }
                }
            }
        }
        self.file.write_all(line)?;
        self.size += len;
        Ok(())
    }
}

/// If the file at `path` holds the Node sidecar's log, move it aside to
/// `path.node-<timestamp>` and say where; otherwise (absent, empty, not a regular file, already
/// this sidecar's format) leave it and return `None`.
///
/// The Node sidecar's lines have `time`, `severity` and `message` (its event name) and no
/// `event`; the last line that is a JSON object decides. Appending this sidecar's lines to it
/// would leave one file in two formats that no tool reads whole.
pub fn move_node_log_aside(path: &Path) -> io::Result<Option<PathBuf>> {
    use std::io::{Read, Seek, SeekFrom};
    // Never open anything but a regular file (a FIFO would block the read).
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() && meta.len() > 0 => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    const TAIL: u64 = 64 * 1024;
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL)))?;
    let mut tail = Vec::new();
    file.take(TAIL).read_to_end(&mut tail)?;
    let last = String::from_utf8_lossy(&tail).lines().rev().find_map(|line| {
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(fields)) => Some(fields),
            _ => None,
        }
    });
    let is_node = last.is_some_and(|fields| {
        ["time", "severity", "message"]
            .iter()
            .all(|k| fields.contains_key(*k))
            && !fields.contains_key("event")
    });
    if !is_node {
        return Ok(None);
    }
    let stamp = iso8601(SystemTime::now()).replace(':', "-");
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".node-{stamp}"));
    let moved_to = PathBuf::from(name);
    std::fs::rename(path, &moved_to)?;
    Ok(Some(moved_to))
}
