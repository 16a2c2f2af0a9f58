//! `InstanceLock`: one sidecar per state folder.
//!
//! Two connections with one agent_id break the hub (the newer one loses its registration when the
//! older one closes: reference section 2.3), and two sidecars sharing a queue.json would each take
//! the other's tasks. So `run` takes an exclusive lock on `agentcom-sidecar.lock` in the folder that
//! holds queue.json, writes its PID there, and keeps it for its lifetime. The lock is an OS lock
//! (flock on Unix, an exclusive share mode on Windows): it goes away with the process, even on
//! SIGKILL, so there is never a stale lock to clean up.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name, in the state folder.
pub const LOCK_FILE: &str = "agentcom-sidecar.lock";

/// A held instance lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    path: PathBuf,
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it.
    Held {
        /// The lock file.
        path: PathBuf,
        /// The PID written by the holder, if readable.
        pid: Option<u32>,
    },
    /// The lock file could not be created or locked.
    Io {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        error: io::Error,
    },
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Held { path, pid } => {
                let who = pid.map_or("another agentcom-sidecar".to_owned(), |p| format!("another agentcom-sidecar (PID {p})"));
                write!(
                    f,
                    "{who} is already running with this state folder (lock file {}).\n\
                     help: two sidecars for one agent break the hub's registration and would share queue.json;\n\
                     help: stop the other one first (`agentcom-sidecar status` shows it), or give this one its own folder",
                    path.display()
                )
            }
            LockError::Io { path, error } => write!(
                f,
                "cannot create the lock file {}: {error}\nhelp: the folder holding queue.json must be writable by the sidecar's user",
                path.display()
            ),
        }
    }
}

fn open(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    // Never wait on a FIFO put in its place, and lock only a regular file.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    if let Some(kind) = crate::files::not_regular(path) {
        return Err(crate::files::not_regular_error(path, kind));
    }
    #[cfg(windows)]
    std::os::windows::fs::OpenOptionsExt::share_mode(&mut options, 1 /* FILE_SHARE_READ */);
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(crate::files::not_regular_error(
            path,
            crate::files::kind_name(&meta.file_type()),
        ));
    }
    Ok(file)
}

#[cfg(unix)]
fn try_lock(file: &File) -> io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a valid, owned file descriptor.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.kind() == io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(err)
    }
}

#[cfg(not(unix))]
fn try_lock(_file: &File) -> io::Result<bool> {
    // Windows: the exclusive share mode in `open` is the lock; opening succeeded.
    Ok(true)
}

fn read_pid(path: &Path) -> Option<u32> {
    let mut text = String::new();
    crate::files::open_read(path)
        .ok()?
        .take(64)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}

/// Windows reports a sharing violation (32) when another process has the file open.
fn held_error(e: &io::Error) -> bool {
    cfg!(windows) && e.raw_os_error() == Some(32)
}

impl InstanceLock {
    /// Take the lock in `dir` (created if missing) and record this process's PID in it.
    pub fn acquire(dir: &Path) -> Result<InstanceLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io_err = |error| LockError::Io {
            path: path.clone(),
            error,
        };
        crate::files::create_dir_all(dir).map_err(io_err)?;
        let mut file = match open(&path) {
            Ok(f) => f,
            Err(e) if held_error(&e) => {
                return Err(LockError::Held {
                    pid: read_pid(&path),
                    path,
                })
            }
            Err(e) => return Err(io_err(e)),
        };
        if !try_lock(&file).map_err(io_err)? {
            return Err(LockError::Held {
                pid: read_pid(&path),
                path,
            });
        }
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        Ok(InstanceLock { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Is a sidecar running with this state folder? Returns its PID (if it wrote one) when so.
    pub fn holder(dir: &Path) -> Option<Option<u32>> {
        let path = dir.join(LOCK_FILE);
        if !path.exists() {
            return None;
        }
        match InstanceLock::acquire(dir) {
            Ok(_probe) => None, // we got it: nobody holds it (released on drop)
            Err(LockError::Held { pid, .. }) => Some(pid),
            Err(LockError::Io { .. }) => None,
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_in_the_same_folder_is_refused_with_the_pid() {
        let tmp = tempfile::Builder::new()
            .prefix("agentcom-lock-")
            .tempdir()
            .unwrap();
        // Not made yet: acquiring the lock makes its folder.
        let dir = tmp.path().join("state");
        let first = InstanceLock::acquire(&dir).unwrap();
        match InstanceLock::acquire(&dir) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        assert_eq!(InstanceLock::holder(&dir), Some(Some(std::process::id())));
        drop(first);
        // Another test's child may hold a copy of a descriptor of the lock file between its
        // fork and its exec (a flock goes with the open file, not the process; `holder` opens
        // one too): released within moments, so both are polled with a deadline.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let again = loop {
            if InstanceLock::holder(&dir).is_none() {
                match InstanceLock::acquire(&dir) {
                    Ok(lock) => break lock,
                    Err(LockError::Held { .. }) => {}
                    Err(e) => panic!("{e:?}"),
                }
            }
            assert!(std::time::Instant::now() < deadline, "the lock was not released");
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert!(again.path().ends_with(LOCK_FILE));
    }
}
