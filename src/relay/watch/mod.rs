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

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use serde_json::Value;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

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

/// Progress files are tiny; anything larger than this is ignored.
const MAX_PROGRESS_BYTES: u64 = 1024 * 1024;
/// The most untracked results remembered (to report each once); past it the memory is cleared.
const MAX_UNTRACKED: usize = 4096;
/// The shortest fallback period accepted (protects against a zero `rescan_every`).
const MIN_RESCAN: Duration = Duration::from_millis(10);

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
    /// reported is reported twice). Ids that are not `[A-Za-z0-9._-]{1,128}` are ignored.
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

/// `[A-Za-z0-9._-]{1,128}`.
fn valid_task_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The three files of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum FileKind {
    Started,
    Result,
    Progress,
}

impl FileKind {
    const ALL: [FileKind; 3] = [FileKind::Started, FileKind::Result, FileKind::Progress];

    fn extension(self) -> &'static str {
        match self {
            FileKind::Started => "started",
            FileKind::Result => "json",
            FileKind::Progress => "progress",
        }
    }
}

/// `{id}.started|json|progress` -> (id, kind). Anything else (temp files, editor swap files,
/// sub-folders' names, bad ids) is `None`.
fn parse_file_name(name: &str) -> Option<(&str, FileKind)> {
    let (id, ext) = name.rsplit_once('.')?;
    let kind = match ext {
        "started" => FileKind::Started,
        "json" => FileKind::Result,
        "progress" => FileKind::Progress,
        _ => return None,
    };
    valid_task_id(id).then_some((id, kind))
}

/// What a result file's bytes amount to.
#[derive(Debug, Clone, PartialEq)]
enum Parsed {
    /// Blank, or a prefix of JSON: a write in progress.
    Incomplete,
    /// Report now.
    Complete(ResultContent),
    /// Report once unchanged for `settle` (a syntax error, or a bare number that may still grow).
    Settle(ResultContent),
}

/// Classifies a result file's bytes (a leading UTF-8 byte order mark is skipped).
fn classify_result(bytes: &[u8]) -> Parsed {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Parsed::Complete(ResultContent::Object(map)),
        Ok(Value::Number(_)) => {
            // `12` may be the first half of `123`: wait unless the writer already ended it.
            let kind = ResultContent::NotObject("number".into());
            if bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
                Parsed::Complete(kind)
            } else {
                Parsed::Settle(kind)
            }
        }
        Ok(other) => Parsed::Complete(ResultContent::NotObject(json_kind(&other).into())),
        Err(e) if e.is_eof() => Parsed::Incomplete,
        Err(e) => Parsed::Settle(ResultContent::Invalid(e.to_string())),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A valid progress report: an object with an integer `progress` and an optional string `message`.
fn parse_progress(bytes: &[u8]) -> Option<(i64, Option<String>)> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let Value::Object(mut map) = serde_json::from_slice::<Value>(bytes).ok()? else {
        return None;
    };
    let progress = map.get("progress")?.as_i64()?;
    let message = match map.remove("message") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    Some((progress, message))
}

/// Identifies one version of a file cheaply, so the fallback check skips unchanged files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct MetaKey {
    len: u64,
    modified: Option<SystemTime>,
    ino: u64,
    ctime_ns: i128,
}

impl MetaKey {
    fn of(meta: &std::fs::Metadata) -> MetaKey {
        #[cfg(unix)]
        let (ino, ctime_ns) = {
            use std::os::unix::fs::MetadataExt;
            (
                meta.ino(),
                meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
            )
        };
        #[cfg(not(unix))]
        let (ino, ctime_ns) = (0, 0);
        MetaKey {
            len: meta.len(),
            modified: meta.modified().ok(),
            ino,
            ctime_ns,
        }
    }
}

/// Identifies the folder being watched (to notice it was deleted and re-created).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirIdent {
    #[cfg(unix)]
    dev_ino: (u64, u64),
}

fn dir_ident(dir: &Path) -> Option<DirIdent> {
    let meta = std::fs::metadata(dir).ok().filter(|m| m.is_dir())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(DirIdent {
            dev_ino: (meta.dev(), meta.ino()),
        })
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Some(DirIdent {})
    }
}

fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// One file to look at, on the blocking pool.
struct Job {
    id: String,
    kind: FileKind,
    /// Skip reading if the file still has this metadata (the fallback check).
    skip_if: Option<MetaKey>,
}

/// What was found.
enum Observation {
    /// The metadata matched `skip_if`.
    Unchanged,
    /// No such file (or unreadable).
    Missing,
    /// Something that is not a regular file (what it is): never opened.
    NotRegular(&'static str),
    /// `.started` exists.
    Present,
    /// A result file, classified; `fp` identifies its content.
    Result { key: MetaKey, fp: u64, parsed: Parsed },
    /// A progress file: `None` if not (yet) a valid progress report.
    Progress {
        key: MetaKey,
        value: Option<(i64, Option<String>)>,
    },
}

fn observe(dir: &Path, job: &Job, max_result_bytes: u64) -> Observation {
    let path = dir.join(format!("{}.{}", job.id, job.kind.extension()));
    // Never open what is not a regular file: `metadata` does not open it.
    match std::fs::metadata(&path) {
        Ok(m) if !m.is_file() => return Observation::NotRegular(crate::files::kind_name(&m.file_type())),
        Ok(_) if job.kind == FileKind::Started => return Observation::Present,
        Ok(_) => {}
        Err(_) => return Observation::Missing,
    }
    // O_NONBLOCK, then fstat: a file swapped for a FIFO since `metadata` cannot block us.
    let mut file = match crate::files::open_read(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            return match std::fs::metadata(&path) {
                Ok(m) if !m.is_file() => Observation::NotRegular(crate::files::kind_name(&m.file_type())),
                _ => Observation::Missing,
            }
        }
        Err(_) => return Observation::Missing,
    };
    let Ok(meta) = file.metadata() else {
        return Observation::Missing;
    };
    let key = MetaKey::of(&meta);
    if job.skip_if == Some(key) {
        return Observation::Unchanged;
    }
    let limit = match job.kind {
        FileKind::Result => max_result_bytes,
        _ => MAX_PROGRESS_BYTES,
    };
    let too_large = |len: u64| {
        let mut h = std::hash::DefaultHasher::new();
        (len, key.modified, key.ino, key.ctime_ns).hash(&mut h);
        Observation::Result {
            key,
            fp: h.finish(),
            parsed: Parsed::Settle(ResultContent::TooLarge(len)),
        }
    };
    if meta.len() > limit {
        return match job.kind {
            FileKind::Result => too_large(meta.len()),
            _ => Observation::Progress { key, value: None },
        };
    }
    let mut bytes = Vec::with_capacity(meta.len().min(1 << 20) as usize + 1);
    if (&mut file)
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .is_err()
    {
        return Observation::Missing;
    }
    if bytes.len() as u64 > limit {
        // It grew while we read it.
        let len = file.metadata().map(|m| m.len()).unwrap_or(bytes.len() as u64);
        return match job.kind {
            FileKind::Result => too_large(len),
            _ => Observation::Progress { key, value: None },
        };
    }
    match job.kind {
        FileKind::Result => Observation::Result {
            key,
            fp: fingerprint(&bytes),
            parsed: classify_result(&bytes),
        },
        _ => Observation::Progress {
            key,
            value: parse_progress(&bytes),
        },
    }
}

/// A result waiting to be unchanged for `settle`.
struct Pending {
    fp: u64,
    since: Instant,
}

/// What we know about one `{id}.json`.
#[derive(Default)]
struct ResultState {
    /// The content last reported.
    reported: Option<u64>,
    /// Content waiting to settle.
    pending: Option<Pending>,
    /// The metadata of the version last read.
    seen: Option<MetaKey>,
}

impl ResultState {
    /// Applies an observation; returns what to report, if anything.
    fn apply(&mut self, obs: Observation, now: Instant, settle: Duration) -> Option<ResultContent> {
        match obs {
            Observation::Unchanged => None,
            Observation::Result { key, fp, parsed } => {
                self.seen = Some(key);
                match parsed {
                    Parsed::Incomplete => {
                        self.pending = None;
                        None
                    }
                    _ if self.reported == Some(fp) => {
                        self.pending = None;
                        None
                    }
                    Parsed::Complete(content) => {
                        self.pending = None;
                        self.reported = Some(fp);
                        Some(content)
                    }
                    Parsed::Settle(content) => match &self.pending {
                        Some(p) if p.fp == fp => {
                            if now.duration_since(p.since) >= settle {
                                self.pending = None;
                                self.reported = Some(fp);
                                Some(content)
                            } else {
                                None
                            }
                        }
                        _ => {
                            self.pending = Some(Pending { fp, since: now });
                            None
                        }
                    },
                }
            }
            _ => {
                self.pending = None;
                self.seen = None;
                None
            }
        }
    }

    fn deadline(&self, settle: Duration) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.since + settle)
    }
}

/// What we know about a tracked id.
#[derive(Default)]
struct Tracked {
    started_reported: bool,
    result: ResultState,
    progress_reported: Option<(i64, Option<String>)>,
    progress_seen: Option<MetaKey>,
}

/// The task that owns the state.
struct WatchTask {
    opts: WatchOptions,
    events: UnboundedSender<FileEvent>,
    fs_tx: UnboundedSender<notify::Result<notify::Event>>,
    watcher: Option<notify::RecommendedWatcher>,
    ident: Option<DirIdent>,
    /// The folder as canonicalized when watched (FSEvents reports canonical paths).
    canonical: Option<PathBuf>,
    tracked: HashMap<String, Tracked>,
    untracked: HashMap<String, ResultState>,
    next_tick: Option<Instant>,
    /// No file system watch: only the fallback check finds files (see [`FileEvent::Polling`]).
    polling: bool,
    /// Files reported as [`FileEvent::NotRegular`], not reported again until they change.
    not_regular: HashSet<(String, FileKind)>,
}

impl WatchTask {
    fn new(
        mut opts: WatchOptions,
        events: UnboundedSender<FileEvent>,
        fs_tx: UnboundedSender<notify::Result<notify::Event>>,
    ) -> WatchTask {
        opts.rescan_every = opts.rescan_every.max(MIN_RESCAN);
        WatchTask {
            opts,
            events,
            fs_tx,
            watcher: None,
            ident: None,
            canonical: None,
            tracked: HashMap::new(),
            untracked: HashMap::new(),
            next_tick: None,
            polling: false,
            not_regular: HashSet::new(),
        }
    }

    /// Creates the folder if needed and (re)starts the file system watch on it. When no watch
    /// can be set up (Linux: inotify instances or watches used up), falls back to polling: the
    /// fallback check alone, announced once with [`FileEvent::Polling`]. Fails only when the
    /// folder cannot be created.
    fn watch_dir(&mut self) -> io::Result<()> {
        self.watcher = None;
        self.ident = None;
        crate::files::create_dir_all(&self.opts.dir)?;
        if !self.polling {
            match self.start_watcher() {
                Ok(watcher) => self.watcher = Some(watcher),
                Err(e) => {
                    self.polling = true;
                    let help = watch_limit_help(&e);
                    let _ = self.events.send(FileEvent::Polling {
                        error: e.to_string(),
                        help,
                    });
                }
            }
        }
        self.ident = dir_ident(&self.opts.dir);
        self.canonical = std::fs::canonicalize(&self.opts.dir).ok();
        Ok(())
    }

    fn start_watcher(&self) -> Result<notify::RecommendedWatcher, notify::Error> {
        let fs_tx = self.fs_tx.clone();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.as_ref().map_or(true, is_relevant) {
                let _ = fs_tx.send(res);
            }
        })?;
        watcher.watch(&self.opts.dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    }

    /// Re-creates and re-watches the folder if it is gone, was replaced, or the watch failed.
    /// Returns true if it did (tracked ids must then be checked: events were missed).
    fn ensure_dir(&mut self) -> bool {
        let watching = self.polling || self.watcher.is_some();
        if watching && self.ident.is_some() && dir_ident(&self.opts.dir) == self.ident {
            return false;
        }
        let _ = self.watch_dir();
        true
    }

    fn is_dir_path(&self, path: &Path) -> bool {
        path == self.opts.dir || self.canonical.as_deref() == Some(path)
    }

    async fn run(
        mut self,
        mut commands: UnboundedReceiver<Command>,
        mut fs_events: UnboundedReceiver<notify::Result<notify::Event>>,
    ) {
        loop {
            if self.events.is_closed() {
                return;
            }
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    Some(cmd) => {
                        let mut cmds = vec![cmd];
                        while let Ok(c) = commands.try_recv() {
                            cmds.push(c);
                        }
                        self.handle_commands(cmds).await;
                    }
                    None => return,
                },
                Some(first) = fs_events.recv() => {
                    let mut batch = vec![first];
                    while let Ok(ev) = fs_events.try_recv() {
                        batch.push(ev);
                    }
                    // Commands sent before these files changed go first (a track() before the
                    // agent was woken must not see its result reported as untracked).
                    let mut cmds = Vec::new();
                    while let Ok(c) = commands.try_recv() {
                        cmds.push(c);
                    }
                    if !cmds.is_empty() {
                        self.handle_commands(cmds).await;
                    }
                    self.handle_fs(batch).await;
                }
                _ = sleep_until_opt(deadline), if deadline.is_some() => self.handle_timers().await,
            }
        }
    }

    /// The next fallback check or settle deadline; `None` when idle.
    fn next_deadline(&self) -> Option<Instant> {
        let settle = self.opts.settle;
        self.tracked
            .values()
            .filter_map(|t| t.result.deadline(settle))
            .chain(self.untracked.values().filter_map(|r| r.deadline(settle)))
            .chain(self.next_tick)
            .min()
    }

    async fn handle_commands(&mut self, cmds: Vec<Command>) {
        let mut jobs = Vec::new();
        let mut queued = HashSet::new();
        for cmd in cmds {
            match cmd {
                Command::Track(id) => {
                    if !self.tracked.contains_key(&id) {
                        let mut t = Tracked::default();
                        if let Some(r) = self.untracked.remove(&id) {
                            t.result.pending = r.pending;
                        }
                        self.tracked.insert(id.clone(), t);
                    }
                    self.push_all(&id, &mut jobs, &mut queued);
                }
                Command::Untrack(id) => {
                    if let Some(t) = self.tracked.remove(&id) {
                        // Remember what was reported, so an unchanged file is not reported again.
                        if t.result.reported.is_some() || t.result.pending.is_some() {
                            self.remember_untracked(id, t.result);
                        }
                    }
                }
                Command::Rescan(id) => {
                    if let Some(t) = self.tracked.get_mut(&id) {
                        t.started_reported = false;
                        t.result.reported = None;
                        t.result.seen = None;
                        t.progress_reported = None;
                        t.progress_seen = None;
                        self.push_all(&id, &mut jobs, &mut queued);
                    }
                }
            }
        }
        self.update_tick();
        self.run_jobs(jobs).await;
    }

    /// A FIFO, socket, device or folder under a task's file name: forget what was read there,
    /// and say so once (until something else is found under that name).
    fn skip_not_regular(&mut self, id: String, kind: FileKind, what: &'static str) {
        if let Some(t) = self.tracked.get_mut(&id) {
            match kind {
                FileKind::Result => t.result = ResultState::default(),
                FileKind::Progress => t.progress_seen = None,
                FileKind::Started => {}
            }
        } else if kind == FileKind::Result {
            self.untracked.remove(&id);
        }
        if self.not_regular.len() >= MAX_UNTRACKED {
            self.not_regular.clear();
        }
        // A folder cannot block a read and was always ignored: only what could hang a reader
        // (a FIFO, socket or device) is worth a log line.
        if what != "a folder" && self.not_regular.insert((id.clone(), kind)) {
            let file = self.opts.dir.join(format!("{id}.{}", kind.extension()));
            let _ = self.events.send(FileEvent::NotRegular {
                task_id: id,
                file,
                kind: what.to_owned(),
            });
        }
    }

    fn remember_untracked(&mut self, id: String, state: ResultState) {
        if self.untracked.len() >= MAX_UNTRACKED && !self.untracked.contains_key(&id) {
            self.untracked.clear();
        }
        self.untracked.insert(id, state);
    }

    fn push_all(&self, id: &str, jobs: &mut Vec<Job>, queued: &mut HashSet<(String, FileKind)>) {
        for kind in FileKind::ALL {
            if queued.insert((id.to_owned(), kind)) {
                jobs.push(Job {
                    id: id.to_owned(),
                    kind,
                    skip_if: None,
                });
            }
        }
    }

    /// Starts the fallback clock when something is tracked, stops it when nothing is.
    fn update_tick(&mut self) {
        if self.tracked.is_empty() {
            self.next_tick = None;
        } else if self.next_tick.is_none() {
            self.next_tick = Some(Instant::now() + self.opts.rescan_every);
        }
    }

    async fn handle_fs(&mut self, batch: Vec<notify::Result<notify::Event>>) {
        let mut check_dir = false;
        let mut check_all = false;
        let mut jobs = Vec::new();
        let mut queued = HashSet::new();
        for res in batch {
            let event = match res {
                Ok(event) => event,
                Err(_) => {
                    check_dir = true;
                    check_all = true;
                    continue;
                }
            };
            if event.need_rescan() {
                check_all = true;
            }
            for path in &event.paths {
                if self.is_dir_path(path) {
                    check_dir = true;
                    continue;
                }
                if !path.parent().is_some_and(|p| self.is_dir_path(p)) {
                    continue;
                }
                let Some((id, kind)) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(parse_file_name)
                else {
                    continue;
                };
                let wanted = match self.tracked.get(id) {
                    Some(t) => !(kind == FileKind::Started && t.started_reported),
                    None => kind == FileKind::Result,
                };
                if wanted && queued.insert((id.to_owned(), kind)) {
                    jobs.push(Job {
                        id: id.to_owned(),
                        kind,
                        skip_if: None,
                    });
                }
            }
        }
        if check_dir && self.ensure_dir() {
            check_all = true;
        }
        if check_all {
            let ids: Vec<String> = self.tracked.keys().cloned().collect();
            for id in ids {
                self.push_all(&id, &mut jobs, &mut queued);
            }
        }
        self.run_jobs(jobs).await;
    }

    async fn handle_timers(&mut self) {
        let now = Instant::now();
        let settle = self.opts.settle;
        let mut jobs = Vec::new();
        let mut queued = HashSet::new();
        let settled = self
            .tracked
            .iter()
            .map(|(id, t)| (id, &t.result))
            .chain(self.untracked.iter())
            .filter(|(_, r)| r.deadline(settle).is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone());
        for id in settled.collect::<Vec<_>>() {
            queued.insert((id.clone(), FileKind::Result));
            jobs.push(Job {
                id,
                kind: FileKind::Result,
                skip_if: None,
            });
        }
        if self.next_tick.is_some_and(|t| t <= now) {
            self.next_tick = None;
            if self.ensure_dir() {
                let ids: Vec<String> = self.tracked.keys().cloned().collect();
                for id in ids {
                    self.push_all(&id, &mut jobs, &mut queued);
                }
            } else {
                for (id, t) in &self.tracked {
                    for kind in FileKind::ALL {
                        let skip_if = match kind {
                            FileKind::Started if t.started_reported => continue,
                            FileKind::Started => None,
                            FileKind::Result => t.result.seen,
                            FileKind::Progress => t.progress_seen,
                        };
                        if queued.insert((id.clone(), kind)) {
                            jobs.push(Job {
                                id: id.clone(),
                                kind,
                                skip_if,
                            });
                        }
                    }
                }
            }
            self.update_tick();
        }
        self.run_jobs(jobs).await;
    }

    /// Reads the files on the blocking pool, then applies what was found.
    async fn run_jobs(&mut self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let dir = self.opts.dir.clone();
        let max = self.opts.max_result_bytes;
        let observed = tokio::task::spawn_blocking(move || {
            jobs.into_iter()
                .map(|job| {
                    let obs = observe(&dir, &job, max);
                    (job.id, job.kind, obs)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let Ok(observed) = observed else {
            return;
        };
        let now = Instant::now();
        for (id, kind, obs) in observed {
            self.apply(id, kind, obs, now);
        }
    }

    fn apply(&mut self, id: String, kind: FileKind, obs: Observation, now: Instant) {
        let settle = self.opts.settle;
        if let Observation::NotRegular(what) = obs {
            self.skip_not_regular(id, kind, what);
            return;
        }
        if !matches!(obs, Observation::Unchanged) && !self.not_regular.is_empty() {
            self.not_regular.remove(&(id.clone(), kind));
        }
        let event = if let Some(t) = self.tracked.get_mut(&id) {
            match (kind, obs) {
                (FileKind::Started, Observation::Present) if !t.started_reported => {
                    t.started_reported = true;
                    Some(FileEvent::Started { task_id: id })
                }
                (FileKind::Result, obs) => t
                    .result
                    .apply(obs, now, settle)
                    .map(|content| FileEvent::Result { task_id: id, content }),
                (FileKind::Progress, Observation::Progress { key, value }) => {
                    t.progress_seen = Some(key);
                    match value {
                        Some(v) if t.progress_reported.as_ref() != Some(&v) => {
                            t.progress_reported = Some(v.clone());
                            Some(FileEvent::Progress {
                                task_id: id,
                                progress: v.0,
                                message: v.1,
                            })
                        }
                        _ => None,
                    }
                }
                (FileKind::Progress, Observation::Missing) => {
                    t.progress_seen = None;
                    None
                }
                _ => None,
            }
        } else if kind == FileKind::Result {
            match obs {
                Observation::Result { .. } => {
                    if !self.untracked.contains_key(&id) {
                        self.remember_untracked(id.clone(), ResultState::default());
                    }
                    let state = self.untracked.get_mut(&id).expect("just inserted");
                    state
                        .apply(obs, now, settle)
                        .map(|content| FileEvent::Result { task_id: id, content })
                }
                // Gone (moved aside or deleted): forget it.
                _ => {
                    self.untracked.remove(&id);
                    None
                }
            }
        } else {
            None
        };
        if let Some(event) = event {
            let _ = self.events.send(event);
        }
    }
}

/// Drops the events our own reads cause (open, read, close without writing) and metadata-only
/// changes, on notify's thread.
fn is_relevant(event: &notify::Event) -> bool {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        _ => true,
    }
}

/// For a watch that failed on a kernel limit, the setting that would lift it (Linux).
fn watch_limit_help(e: &notify::Error) -> Option<String> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let sysctl = match &e.kind {
        // inotify_init1: EMFILE, the user's inotify instances (128 by default) are used up.
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc_errno::EMFILE) => {
            "fs.inotify.max_user_instances=1024"
        }
        // inotify_add_watch: ENOSPC, the user's watches are used up.
        notify::ErrorKind::MaxFilesWatch => "fs.inotify.max_user_watches=524288",
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc_errno::ENOSPC) => {
            "fs.inotify.max_user_watches=524288"
        }
        _ => return None,
    };
    Some(format!(
        "results are picked up within a second instead of at once; for instant pickup raise the \
         per-user limit (one inotify instance per sidecar and per file-watching program): \
         sudo sysctl {sysctl}"
    ))
}

/// The two errno values [`watch_limit_help`] recognises (the same on every Linux architecture).
mod libc_errno {
    pub const EMFILE: i32 = 24;
    pub const ENOSPC: i32 = 28;
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(parse_file_name("t-1.json"), Some(("t-1", FileKind::Result)));
        assert_eq!(
            parse_file_name("a.b_c.started"),
            Some(("a.b_c", FileKind::Started))
        );
        assert_eq!(parse_file_name("x.progress"), Some(("x", FileKind::Progress)));
        for odd in [
            "x.json.tmp",
            ".json",
            "x.JSON",
            "x y.json",
            "x.txt",
            "discarded",
            "é.json",
            "x/y.json",
        ] {
            assert_eq!(parse_file_name(odd), None, "{odd}");
        }
        // A swap file's name is a valid id with a leading dot, but the extension is wrong.
        assert_eq!(parse_file_name(".x.json.swp"), None);
        let long = "a".repeat(128);
        assert!(parse_file_name(&format!("{long}.json")).is_some());
        assert!(parse_file_name(&format!("a{long}.json")).is_none());
    }

    #[test]
    fn classify() {
        assert!(matches!(
            classify_result(br#"{"status":"success"}"#),
            Parsed::Complete(ResultContent::Object(_))
        ));
        assert!(matches!(
            classify_result(b"\xEF\xBB\xBF{}"),
            Parsed::Complete(ResultContent::Object(_))
        ));
        for prefix in [
            &b""[..],
            b"  \n",
            b"{",
            br#"{"status":"succ"#,
            br#"{"a":"#,
            b"[1,",
            b"nu",
            b"tr",
        ] {
            assert_eq!(
                classify_result(prefix),
                Parsed::Incomplete,
                "{:?}",
                String::from_utf8_lossy(prefix)
            );
        }
        // A multi-byte character cut in half at the end is a prefix too.
        let e_acute = "é".as_bytes();
        let mut cut = br#"{"a":""#.to_vec();
        cut.push(e_acute[0]);
        assert_eq!(classify_result(&cut), Parsed::Incomplete);
        for (text, kind) in [
            ("null", "null"),
            ("[1]", "array"),
            ("\"x\"", "string"),
            ("true", "boolean"),
        ] {
            assert_eq!(
                classify_result(text.as_bytes()),
                Parsed::Complete(ResultContent::NotObject(kind.into()))
            );
        }
        assert_eq!(
            classify_result(b"12"),
            Parsed::Settle(ResultContent::NotObject("number".into()))
        );
        assert_eq!(
            classify_result(b"12\n"),
            Parsed::Complete(ResultContent::NotObject("number".into()))
        );
        for garbage in [&b"garbage"[..], b"{\"a\":1}}", b"{'a':1}", b"{\"a\":1} x"] {
            assert!(
                matches!(
                    classify_result(garbage),
                    Parsed::Settle(ResultContent::Invalid(_))
                ),
                "{:?}",
                String::from_utf8_lossy(garbage)
            );
        }
    }

    #[test]
    fn progress() {
        assert_eq!(parse_progress(br#"{"progress":5}"#), Some((5, None)));
        assert_eq!(
            parse_progress(br#"{"progress":50,"message":"half"}"#),
            Some((50, Some("half".into())))
        );
        assert_eq!(
            parse_progress(br#"{"progress":50,"message":7}"#),
            Some((50, None))
        );
        assert_eq!(parse_progress(br#"{"progress":5.5}"#), None);
        assert_eq!(parse_progress(br#"{"progress":"5"}"#), None);
        assert_eq!(parse_progress(br#"{"progress":5"#), None);
        assert_eq!(parse_progress(b"[5]"), None);
    }

    #[test]
    fn settle_state() {
        let settle = Duration::from_secs(2);
        let t0 = Instant::now();
        let key = MetaKey {
            len: 1,
            modified: None,
            ino: 0,
            ctime_ns: 0,
        };
        let invalid = |fp| Observation::Result {
            key,
            fp,
            parsed: Parsed::Settle(ResultContent::Invalid("x".into())),
        };
        let mut s = ResultState::default();
        assert_eq!(s.apply(invalid(1), t0, settle), None);
        assert_eq!(s.deadline(settle), Some(t0 + settle));
        assert_eq!(s.apply(invalid(1), t0 + Duration::from_secs(1), settle), None);
        // Changed: the clock starts again.
        assert_eq!(s.apply(invalid(2), t0 + Duration::from_secs(1), settle), None);
        assert_eq!(s.apply(invalid(2), t0 + Duration::from_secs(2), settle), None);
        assert_eq!(
            s.apply(invalid(2), t0 + Duration::from_secs(3), settle),
            Some(ResultContent::Invalid("x".into()))
        );
        assert_eq!(s.deadline(settle), None);
        // Reported once.
        assert_eq!(s.apply(invalid(2), t0 + Duration::from_secs(9), settle), None);
        assert_eq!(s.deadline(settle), None);
        // A complete result replaces it.
        let done = Observation::Result {
            key,
            fp: 3,
            parsed: Parsed::Complete(ResultContent::NotObject("null".into())),
        };
        assert_eq!(
            s.apply(done, t0, settle),
            Some(ResultContent::NotObject("null".into()))
        );
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("agentcom-watch-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A task whose file system events all get lost: only the fallback check can see anything.
    fn deaf_task(
        opts: WatchOptions,
    ) -> (
        UnboundedSender<Command>,
        UnboundedReceiver<FileEvent>,
        UnboundedReceiver<notify::Result<notify::Event>>,
    ) {
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (fs_tx, lost) = mpsc::unbounded_channel();
        let mut task = WatchTask::new(opts, event_tx, fs_tx);
        task.watch_dir().unwrap();
        let (_, no_events) = mpsc::unbounded_channel();
        tokio::spawn(task.run(cmd_rx, no_events));
        (cmd_tx, event_rx, lost)
    }

    async fn wait(rx: &mut UnboundedReceiver<FileEvent>) -> FileEvent {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn fallback_check_finds_results_when_events_are_lost() {
        let dir = temp_dir("fallback");
        let opts = WatchOptions {
            rescan_every: Duration::from_millis(100),
            ..WatchOptions::new(&dir)
        };
        let (cmds, mut events, _lost) = deaf_task(opts);
        cmds.send(Command::Track("t".into())).unwrap();
        std::fs::write(dir.join("t.started"), "").unwrap();
        std::fs::write(dir.join("t.json"), "{}").unwrap();
        let mut got = vec![wait(&mut events).await, wait(&mut events).await];
        got.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(
            got,
            vec![
                FileEvent::Result {
                    task_id: "t".into(),
                    content: ResultContent::Object(Default::default())
                },
                FileEvent::Started { task_id: "t".into() },
            ]
        );
        // The folder replaced behind our back: re-watched, and still checked.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t.progress"), r#"{"progress":3}"#).unwrap();
        assert_eq!(
            wait(&mut events).await,
            FileEvent::Progress {
                task_id: "t".into(),
                progress: 3,
                message: None
            }
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn no_timer_when_nothing_is_tracked() {
        let dir = temp_dir("idle");
        let (event_tx, _events) = mpsc::unbounded_channel();
        let (fs_tx, _fs_rx) = mpsc::unbounded_channel();
        let mut task = WatchTask::new(WatchOptions::new(&dir), event_tx, fs_tx);
        task.watch_dir().unwrap();
        assert_eq!(task.next_deadline(), None);
        task.handle_commands(vec![Command::Track("a".into()), Command::Track("b".into())])
            .await;
        assert!(task.next_deadline().is_some());
        task.handle_commands(vec![Command::Untrack("a".into())]).await;
        assert!(task.next_deadline().is_some());
        task.handle_commands(vec![Command::Untrack("b".into())]).await;
        assert_eq!(task.next_deadline(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Without a file system watch (as when inotify instances are used up): nothing runs while
    /// nothing is tracked, and a tracked result is found by the periodic check alone.
    #[tokio::test]
    async fn polling_finds_results_and_sleeps_while_idle() {
        let dir = temp_dir("polling");
        let opts = WatchOptions {
            rescan_every: Duration::from_millis(100),
            ..WatchOptions::new(&dir)
        };
        let (event_tx, mut events) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (fs_tx, fs_rx) = mpsc::unbounded_channel();
        let mut task = WatchTask::new(opts, event_tx, fs_tx);
        task.polling = true;
        task.watch_dir().unwrap();
        assert!(task.watcher.is_none());
        assert_eq!(task.next_deadline(), None, "idle: no timer at all");
        tokio::spawn(task.run(cmd_rx, fs_rx));
        cmd_tx.send(Command::Track("p".into())).unwrap();
        std::fs::write(dir.join("p.json"), r#"{"status":"success"}"#).unwrap();
        let started = Instant::now();
        let mut map = serde_json::Map::new();
        map.insert("status".into(), "success".into());
        assert_eq!(
            wait(&mut events).await,
            FileEvent::Result {
                task_id: "p".into(),
                content: ResultContent::Object(map)
            }
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn task_ids() {
        assert!(valid_task_id("task-1_a.B"));
        assert!(!valid_task_id(""));
        assert!(!valid_task_id("a/b"));
        assert!(!valid_task_id(&"a".repeat(129)));
    }
}
