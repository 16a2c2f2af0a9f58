//! Reading the config file: a regular file only (a FIFO or a device is never opened), at most
//! [`MAX_CONFIG_BYTES`], refused when its group or others may read or write it (Unix); relative
//! paths in it resolve against its folder; and the files it names are regular files or absent.

use std::path::{Component, Path, PathBuf};

use super::check::Checker;
use super::error::shell_quote;
use super::{ConfigError, ConfigErrorKind, LoadOptions};

/// The largest config file read (a config is a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads the config file at `abs` (absolute) as text, checking its kind and, unless
/// `opts.allow_insecure_permissions`, its permissions first.
pub(super) fn read_config(abs: &Path, opts: &LoadOptions) -> Result<String, ConfigError> {
    let fail = |kind| ConfigError {
        path: abs.to_path_buf(),
        kind,
    };
    if abs.is_dir() {
        return Err(fail(ConfigErrorKind::Unreadable(std::io::Error::other(
            "it is a directory; give the path of the JSON file itself",
        ))));
    }
    // A FIFO would block the read until a writer comes, a device may never end: never open one.
    if let Some(kind) = crate::files::not_regular(abs) {
        return Err(fail(ConfigErrorKind::Unreadable(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {kind}, not a regular file; give the path of the JSON file itself"),
        ))));
    }
    // Before anything reads the token or connects: a file others can write is a way to run
    // commands as this user.
    if !opts.allow_insecure_permissions {
        if let Some(mode) = insecure_mode(abs) {
            return Err(fail(ConfigErrorKind::InsecurePermissions {
                file: abs.to_path_buf(),
                mode,
            }));
        }
    }
    match read_limited(abs, MAX_CONFIG_BYTES) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(fail(ConfigErrorKind::NotFound)),
        Err(e) => Err(fail(ConfigErrorKind::Unreadable(e))),
    }
}

/// Reads a UTF-8 text file of at most `limit` bytes. A larger one, or an endless one such as
/// `/dev/zero`, is refused (`ErrorKind::FileTooLarge`) after reading `limit + 1` bytes.
pub(super) fn read_limited(path: &Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    crate::files::open_read(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("it holds more than {limit} bytes"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// An optional path resolved against `dir`; absent, "" or blank is `None`.
pub(super) fn opt_path(value: Option<String>, dir: &Path) -> Option<PathBuf> {
    value.filter(|s| !s.trim().is_empty()).map(|s| resolve(dir, &s))
}

/// A path resolved against `dir`; absent or "" is `default` (as with Node's `||`).
pub(super) fn path_or(value: Option<String>, default: &str, dir: &Path) -> PathBuf {
    resolve(
        dir,
        &value
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| default.to_string()),
    )
}

/// Makes `p` absolute against `base`, dropping `.` components. `~` and `~/...` use `$HOME`.
pub(super) fn resolve(base: &Path, p: &str) -> PathBuf {
    let expanded = match (p.strip_prefix('~'), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            PathBuf::from(home).join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(p),
    };
    let joined = base.join(expanded);
    joined
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// Refuses a file that its group or others may read or write (`mode & 0o077 != 0`): it holds the
/// hub token (and, for the config file, the wake command). Returns the file's permission bits on
/// refusal. A file whose metadata cannot be read passes: reading it will report the problem.
#[cfg(unix)]
pub(super) fn insecure_mode(file: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file).ok()?.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then_some(mode)
}

/// On Windows nothing is checked: files there have ACLs, not mode bits, and a file in the user's
/// profile is private by default.
#[cfg(not(unix))]
pub(super) fn insecure_mode(_file: &Path) -> Option<u32> {
    None
}

/// Makes a path absolute (against the current directory) without touching the file system.
pub(super) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The files named by the config, for [`Checker::check_files`].
pub(super) struct Files<'a> {
    pub log_file: &'a Path,
    pub queue_file: &'a Path,
    pub ca_file: Option<&'a Path>,
    pub results_dir: &'a Path,
}

impl Checker<'_> {
    /// Every file the sidecar reads or appends to is a regular file or absent: a FIFO would
    /// block the sidecar before it could say anything, a device may never end. `results_dir`, if
    /// it exists, is a folder.
    pub(super) fn check_files(&self, files: &Files<'_>) -> Result<(), ConfigError> {
        let state_dir = files
            .queue_file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        self.regular_or_absent("log_file", files.log_file, "")?;
        self.regular_or_absent("queue_file", files.queue_file, "")?;
        if let Some(ca) = files.ca_file {
            self.regular_or_absent("ca_file", ca, "")?;
        }
        for (name, what) in [
            (crate::status::STATE_FILE, "the state file for `status`"),
            (crate::lock::LOCK_FILE, "the instance lock file"),
        ] {
            self.regular_or_absent("queue_file", &state_dir.join(name), what)?;
        }
        let results_dir = files.results_dir;
        if results_dir.exists() && !results_dir.is_dir() {
            let kind = std::fs::metadata(results_dir)
                .map(|m| crate::files::kind_name(&m.file_type()))
                .unwrap_or("not a folder");
            return Err(self.invalid(
                "results_dir",
                format!(
                    "names {}, which is {kind}, not a folder\n\
                     help: `results_dir` is the folder where the agent writes its files: name a folder \
                     (it is created if missing), or move that file away",
                    shell_quote(&results_dir.to_string_lossy())
                ),
            ));
        }
        Ok(())
    }

    /// Refuses `file` (the value of `field`, or `what` beside it) when it exists and is not a
    /// regular file (a FIFO, a socket, a device, a folder). It is never opened here.
    fn regular_or_absent(&self, field: &str, file: &Path, what: &str) -> Result<(), ConfigError> {
        let Some(kind) = crate::files::not_regular(file) else {
            return Ok(());
        };
        let shown = shell_quote(&file.to_string_lossy());
        let message = if what.is_empty() {
            format!(
                "names {shown}, which is {kind}, not a regular file\n\
                 help: name a regular file (or a path where the sidecar can create one); \
                 a FIFO or a device would block the sidecar or never end"
            )
        } else {
            format!(
                "names a folder that holds {shown}, {what}, which is {kind}, not a regular file\n\
                 help: remove it (the sidecar creates it), or choose another folder for `{field}`"
            )
        };
        Err(self.invalid(field, message))
    }
}
