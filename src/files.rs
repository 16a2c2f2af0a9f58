//! The files and folders the sidecar reads, writes and creates.
//!
//! Two rules, kept here so every module follows them the same way:
//! - Only regular files are opened. Opening a FIFO blocks until a writer (or reader) comes, and a
//!   device may be endless, so a path is checked with `metadata` first (which never opens it), and
//!   then opened with `O_NONBLOCK` and checked again on the open handle (`fstat`), so a file
//!   swapped for a FIFO between the two cannot block either.
//! - What the sidecar creates holds task descriptions and its log: files are created `0600` and
//!   folders `0700` (owner only) on Unix. Windows keeps its default ACLs (private to the profile).

use std::fs::{File, FileType, OpenOptions};
use std::io;
use std::path::Path;

/// What a file system entry is, for a message: "a FIFO (named pipe)", "a folder", ...
pub fn kind_name(file_type: &FileType) -> &'static str {
    if file_type.is_file() {
        return "a regular file";
    }
    if file_type.is_dir() {
        return "a folder";
    }
    if file_type.is_symlink() {
        return "a symbolic link";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if file_type.is_socket() {
            return "a socket";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
    }
    "not a regular file"
}

/// When `path` exists (following symbolic links) and is not a regular file, what it is
/// ([`kind_name`]). `None` when it is a regular file, or absent (a dangling link counts as absent).
/// It never opens the path.
pub fn not_regular(path: &Path) -> Option<&'static str> {
    let meta = std::fs::metadata(path).ok()?;
    (!meta.is_file()).then(|| kind_name(&meta.file_type()))
}

/// The error for a path that is not a regular file: `InvalidInput`, "PATH is a FIFO (named pipe),
/// not a regular file".
pub fn not_regular_error(path: &Path, kind: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{} is {kind}, not a regular file", path.display()),
    )
}

/// Sets `O_NONBLOCK` (Unix): opening a FIFO then returns at once instead of waiting for the
/// other end. Reads and writes of a regular file are not affected by it.
fn nonblocking(options: &mut OpenOptions) {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(options, libc::O_NONBLOCK);
    #[cfg(not(unix))]
    let _ = options;
}

/// Opens `options` on `path` without blocking and refuses anything but a regular file (checked
/// on the open handle).
fn open_regular(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    // A folder cannot block an open: the system's own error ("Is a directory") says it best.
    if let Some(kind) = not_regular(path).filter(|_| !path.is_dir()) {
        return Err(not_regular_error(path, kind));
    }
    nonblocking(options);
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular_error(path, kind_name(&meta.file_type())));
    }
    Ok(file)
}

/// Opens a regular file for reading; never blocks on a FIFO (see the module docs). Anything but
/// a regular file is an `InvalidInput` error naming what it is.
pub fn open_read(path: &Path) -> io::Result<File> {
    open_regular(path, OpenOptions::new().read(true))
}

/// How a file made with [`private`] is protected, for messages: `mode 600` on Unix; on Windows
/// the folder's access rules apply (private under your user profile), so that is what is said.
#[cfg(unix)]
pub const PRIVATE_NOTE: &str = "mode 600";
/// How a file made with [`private`] is protected, for messages: `mode 600` on Unix; on Windows
/// the folder's access rules apply (private under your user profile), so that is what is said.
#[cfg(not(unix))]
pub const PRIVATE_NOTE: &str = "as private as its folder: keep it under your user profile";

/// `options` made to create files readable and writable by their owner only (0600, Unix).
pub fn private(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    options
}

/// Opens (creating it 0600 if missing) a regular file for appending; never blocks on a FIFO.
/// `windows_share` sets the Windows share mode (ignored elsewhere).
pub fn open_append(path: &Path, windows_share: Option<u32>) -> io::Result<File> {
    let mut options = OpenOptions::new();
    private(options.create(true).append(true));
    #[cfg(windows)]
    if let Some(mode) = windows_share {
        std::os::windows::fs::OpenOptionsExt::share_mode(&mut options, mode);
    }
    #[cfg(not(windows))]
    let _ = windows_share;
    open_regular(path, &mut options)
}

/// Creates (or truncates) a regular file for writing, 0600 when created; never blocks on a FIFO.
pub fn create(path: &Path) -> io::Result<File> {
    open_regular(
        path,
        private(OpenOptions::new().write(true).create(true).truncate(true)),
    )
}

/// Writes `bytes` to `path` like `std::fs::write`, creating the file 0600.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    create(path)?.write_all(bytes)
}

/// `create_dir_all`, with every folder it creates 0700 (Unix). Folders that exist keep their mode.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    fn temp(label: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("agentcom-files-{label}-"))
            .tempdir()
            .unwrap()
    }

    fn mkfifo(path: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn a_fifo_is_refused_at_once_and_named() {
        let tmp = temp("fifo");
        let dir = tmp.path();
        let fifo = dir.join("f");
        mkfifo(&fifo);
        let started = Instant::now();
        assert_eq!(not_regular(&fifo), Some("a FIFO (named pipe)"));
        for result in [open_read(&fifo), open_append(&fifo, None), create(&fifo)] {
            let e = result.expect_err("a FIFO is not a regular file");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert!(
                e.to_string()
                    .ends_with("is a FIFO (named pipe), not a regular file"),
                "{e}"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(not_regular(dir), Some("a folder"));
        assert_eq!(not_regular(Path::new("/dev/null")), Some("a character device"));
        assert_eq!(not_regular(&dir.join("absent")), None);
    }

    #[test]
    fn created_files_and_folders_are_private() {
        let tmp = temp("modes");
        let dir = tmp.path();
        let sub = dir.join("a/b");
        create_dir_all(&sub).unwrap();
        for d in [dir.join("a"), sub.clone()] {
            assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700);
        }
        write(&sub.join("x"), b"1").unwrap();
        drop(open_append(&sub.join("y"), None).unwrap());
        for f in ["x", "y"] {
            let mode = std::fs::metadata(sub.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        assert_eq!(std::fs::read(sub.join("x")).unwrap(), b"1");
    }
}
